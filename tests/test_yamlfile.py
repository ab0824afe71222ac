"""The strict YAML loader both config files use, and what error messages may quote."""

from __future__ import annotations

import pytest
import yaml

from threads_exporter.redact import could_be_secret, shown, shown_path
from threads_exporter.yamlfile import YamlError, compose, key_path, load

SECRET = "EAAGm0PX4ZCpsBA" + "k3J9" * 30


def error(text: str, **kw: bool) -> YamlError:
    with pytest.raises(YamlError) as info:
        load(text) if not kw else compose(text, **kw)
    return info.value


def test_load_is_safe_load_for_good_yaml():
    text = "a: [1, 2.5, true, null, 'x']\nb: {c: d}\nm:\n  <<: {x: 1, y: 2}\n  y: 3\n"
    assert load(text) == yaml.safe_load(text)
    assert load("") is None and load("# only a comment\n") is None


@pytest.mark.parametrize(("text", "path", "line", "column"), [
    ("a: 1\nb: 2\na: 3\n", "a", 3, 1),
    ("a:\n  - x: 1\n  - x: 1\n    x: 2\n", "a[1].x", 4, 5),
    ("a: {b: {c: 1, c: 2}}\n", "a.b.c", 1, 15),
    ("1: a\n1: b\n", "1", 2, 1),
    ("'a': 1\n\"a\": 2\n", "a", 2, 1),  # same key, however quoted
    ("base: &b {x: 1, x: 2}\nuse: *b\n", "base.x", 1, 17),  # checked once, at the anchor
])
def test_duplicate_keys(text, path, line, column):
    e = error(text)
    assert (e.path, e.line, e.column, e.problem) == (path, line, column, "key set twice")
    assert str(e).startswith(f"{path}: key set twice (line {line}, column {column}; first")


def test_keys_equal_in_python_collide_only_where_python_builds_the_dict():
    assert error("1: a\ntrue: b\n").path == "true"  # load() would keep one of them
    node = compose("1: a\ntrue: b\n", first_document_only=True)  # Go reads "1" and "true"
    assert isinstance(node, yaml.MappingNode) and len(node.value) == 2
    assert error("'1': a\n\"1\": b\n", first_document_only=True).path == "1"


def test_merged_keys_may_be_overridden_but_not_repeated():
    assert load("m:\n  <<: [{a: 1}, {a: 2}]\n  a: 3\n") == {"m": {"a": 3}}
    assert error("m:\n  <<: {a: 1, a: 2}\n").path == "m.a"


def test_one_document_unless_asked_for_the_first():
    assert error("a: 1\n---\nb: 2\n").line == 2  # the second "---"
    node = compose("a: 1\n---\nb: [\n", first_document_only=True)
    assert isinstance(node, yaml.MappingNode)
    assert compose("", first_document_only=True) is None


@pytest.mark.parametrize("text", [
    f"a: *{SECRET}\n",
    f"a: &{SECRET} 1\nb: &{SECRET} 2\n",
    f"a: !!python/object:{SECRET} {{}}\n",
    f"a: !!int {SECRET}\n",
    f"a: !!float {SECRET}\n",
    f"a: !!timestamp {SECRET}\n",
    f"a: !!binary {SECRET}@\n",
    f"a: !{SECRET}! b\n",
    f"a: \"{SECRET}\\q\"\n",
    f"a: {SECRET}\x00\n",
    f"{SECRET}: 1\n{SECRET}: 2\n",
    f"a:\n\t{SECRET}: 1\n",
    f"a: [{SECRET}\n",
])
def test_errors_never_quote_the_file(text):
    e = error(text)
    message = str(e)
    assert SECRET[4:12] not in message and "k3J9k3J9" not in message, message
    assert f"line {e.line}, column {e.column}" in message
    assert e.line >= 1 and e.column >= 1


def test_errors_keep_harmless_details():
    assert str(error("a: \"x\\q\"\n")) == ("line 1, column 7: found unknown escape character "
                                           "'q' (while scanning a double-quoted scalar)")
    assert str(error("a: 1\x07\n")) == "line 1, column 5: character #x0007 is not allowed in YAML"
    assert str(error("a: !!int abc\n")) == "line 1, column 4: cannot read this value as !!int"


def test_deep_nesting_is_an_error_not_a_crash():
    assert "nested too deeply" in str(error("[" * 5000))


def test_key_path():
    assert key_path("", "a") == "a"
    assert key_path("a[0]", "b") == "a[0].b"
    assert key_path("a", 12) == "a.12"
    assert key_path("a", True) == "a.true"
    assert key_path("a", SECRET) == f"a.<a {len(SECRET)}-character key>"


@pytest.mark.parametrize("value", ["a b", "../me", "v1.0", "graph.threads.net", "likes",
                                   "café", "ops@example.com", "1/3x", "soon", "12345678"])
def test_harmless_values_are_quoted(value):
    assert not could_be_secret(value)
    assert shown(value) == repr(value)


@pytest.mark.parametrize("value", [
    SECRET, "0123456789abcdef", "abcdefghijklmnopq", "k3J9x2Q8", "a" * 41, "tab\there",
    "line\nbreak", "über" * 11, "pw=" + "Zm9vYmFyYmF6cXV4",
])
def test_secret_like_values_are_described(value):
    assert could_be_secret(value)
    assert shown(value) == f"a {len(value)}-character string (not shown: it may be a secret)"


def test_shown_for_other_types():
    assert shown(2.5) == "2.5" and shown(True) == "a boolean" and shown(None) == "nothing"
    assert shown({"k": SECRET}) == "a mapping" and shown([SECRET]) == "a list"
    assert shown(12345678901234567890).startswith("a 20-character number (not shown")


def test_shown_path():
    assert shown_path("/run/secrets/threads_support") == "/run/secrets/threads_support"
    assert shown_path("/tmp/pytest-of-x/pytest-3/tmpa8f3k2j1/web.yml").endswith("web.yml")
    assert "not shown" in shown_path(SECRET)
    assert "not shown" in shown_path("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n")


@pytest.mark.parametrize("text", [
    "a: [1, 2.5, true, null, 'x', ~, 0x1f, 0o17, .inf, 1_000]\nb: {c: d}\n",
    "- 1\n- x: &a {k: [v, w]}\n  y: *a\n  z: &s hello\n  w: *s\n",
    "t: 2001-12-14t21:59:43.10-05:00\nd: 2002-12-14\nb: !!binary aGVsbG8=\nk: !!str 123\n",
    "? x\n: y\n1: a\n2.5: b\nnull: c\n'': e\n",
    "x: |\n  multi\n  line\ny: >\n  folded\n  text\n",
    "s: !!set {a, b}\no: !!omap [{a: 1}]\n",  # explicit collection tags: the node path
    "m:\n  <<: [{a: 1}, {b: 2}]\n  a: 3\n",  # merge keys: the node path
    "---\n", "- ", "[" * 150 + "]" * 150,
])
def test_the_event_path_builds_what_safe_load_builds(text):
    assert load(text) == yaml.safe_load(text)


def test_an_alias_is_the_anchored_object_itself():
    data = load("a: &x {k: [1]}\nb: *x\n")
    assert data["a"] is data["b"]


def test_a_long_list_never_takes_the_node_path(monkeypatch):
    import threads_exporter.yamlfile as yamlfile

    def no_nodes(*args, **kwargs):
        raise AssertionError("the node path was taken")

    monkeypatch.setattr(yamlfile, "_parse", no_nodes)
    text = "track:\n" + "".join(f"  - {{account: a{n % 7}, id: '{n}'}}\n" for n in range(5000))
    data = load(text)
    assert len(data["track"]) == 5000 and data["track"][4999] == {"account": "a1", "id": "4999"}
    with pytest.raises(AssertionError, match="node path"):  # errors are the node path's
        load(text + "  - {account: a, id: '1', id: '2'}\n")

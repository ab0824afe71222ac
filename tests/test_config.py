"""Config validation: every error names the field path; nothing is silently ignored."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from threads_exporter.config import QUOTA_GROUPS, ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parent.parent


def minimal(**account: object) -> dict:
    return {"accounts": [{"name": "brand", "access_token": "tok", **account}]}


def error_of(data: object, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env or {})
    return str(info.value)


def test_defaults_follow_the_contract():
    config = parse_config(minimal(), {})
    assert config.api.base_url == "https://graph.threads.net"
    assert config.api.version == "v1.0"
    assert config.api.timeout_seconds == 5
    assert config.api.max_concurrency == 16
    assert config.cache_ttl_seconds == 60
    assert config.containers.poll_interval_seconds == 60
    assert config.containers.retention_seconds == 48 * 3600
    account = config.accounts[0]
    assert (account.name, account.user_id, account.quotas) == ("brand", "me", QUOTA_GROUPS)


def test_example_config_is_valid(tmp_path):
    env = {"THREADS_BRAND_TOKEN": "a", "THREADS_EXPORTER_API_TOKEN": "b"}
    text = (REPO / "config.example.yaml").read_text()
    secret = tmp_path / "support"
    secret.write_text("support-token\nignored second line\n")
    text = text.replace("/run/secrets/threads_support", str(secret))
    config = parse_config(yaml.safe_load(text), env)
    assert [a.name for a in config.accounts] == ["brand", "support"]
    assert config.accounts[1].access_token == "support-token"
    assert config.accounts[1].quotas == ("posts", "replies")


def test_environment_variables_are_expanded():
    config = parse_config(minimal(access_token="${TOKEN}"), {"TOKEN": "from-env"})
    assert config.accounts[0].access_token == "from-env"


def test_unset_variable_names_field_and_variable():
    message = error_of(minimal(access_token="${NOPE}"))
    assert message == "accounts[0].access_token: environment variable NOPE is not set"


def test_missing_token_file_names_field_and_path():
    data = {"accounts": [{"name": "a", "access_token": "t"},
                         {"name": "b", "access_token_file": "/run/secrets/x"}]}
    assert error_of(data) == "accounts[1].access_token_file: no such file: /run/secrets/x"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"acounts": []}, "acounts: unknown key"),
        (minimal(acess_token="x"), "accounts[0].acess_token: unknown key"),
        ({"api": {"timeout": 3}}, "api.timeout: unknown key"),
        ({"accounts": [{"name": "a", "access_token": "t"}, {"name": "a", "access_token": "u"}]},
         "accounts[1].name: duplicate account name 'a'"),
        ({"accounts": [{"name": "a"}]},
         "accounts[0]: one of access_token or access_token_file is required"),
        (minimal(access_token_file="/x"),
         "accounts[0]: set only one of access_token and access_token_file"),
        ({"accounts": [{"name": "a b", "access_token": "t"}]},
         "accounts[0].name: must match [a-zA-Z0-9_.-]+, got 'a b'"),
        ({"accounts": [{"access_token": "t"}]}, "accounts[0].name: required"),
        (minimal(quotas=["posts", "likes"]), "accounts[0].quotas[1]: unknown quota 'likes', "
         "expected one of posts, replies, deletes, location_searches"),
        (minimal(quotas="posts"), "accounts[0].quotas: expected a list, got str"),
        (minimal(user_id="../me"), "accounts[0].user_id: must be 'me' or a numeric id, "
         "got '../me'"),
        ({"api": {"max_concurrency": 0}}, "api.max_concurrency: must be at least 1, got 0"),
        ({"api": {"max_concurrency": 2.5}},
         "api.max_concurrency: expected a whole number, got 2.5"),
        ({"api": {"timeout_seconds": "soon"}}, "api.timeout_seconds: expected a number, "
         "got 'soon'"),
        ({"api": {"timeout_seconds": True}}, "api.timeout_seconds: expected a number, "
         "got a boolean"),
        ({"api": {"base_url": "graph.threads.net"}}, "api.base_url: expected an http(s) URL, "
         "got 'graph.threads.net'"),
        ({"api": []}, "api: expected a mapping, got a list"),
        ({"cache_ttl_seconds": 0}, "cache_ttl_seconds: must be at least 1, got 0"),
        ({"accounts": "brand"}, "accounts: expected a list, got str"),
        ({"containers": {"poll_interval_seconds": 0.5}},
         "containers.poll_interval_seconds: must be at least 1, got 0.5"),
        ({"containers": {"track": [{"account": "ghost", "id": "1"}]}},
         "containers.track[0].account: no configured account named 'ghost'"),
        ({**minimal(), "containers": {"track": [{"account": "brand", "id": "../me"}]}},
         "containers.track[0].id: a container id is digits only, got '../me'"),
        ({**minimal(), "containers": {"track": [{"account": "brand", "id": "1", "x": 1}]}},
         "containers.track[0].x: unknown key"),
        ([1, 2], "<top>: expected a mapping, got a list"),
    ],
)
def test_bad_config_names_the_field(data, expected):
    assert error_of(data) == expected


def test_numeric_user_id_is_kept_as_string():
    config = parse_config(minimal(user_id=17841400000000000), {})
    assert config.accounts[0].user_id == "17841400000000000"


def test_quotas_are_kept_in_canonical_order():
    config = parse_config(minimal(quotas=["replies", "posts"]), {})
    assert config.accounts[0].quotas == ("posts", "replies")


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("accounts:\n  - name: a\n   access_token: [\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+"):
        load_config(path)


def test_tokens_never_appear_in_repr():
    config = parse_config(minimal(access_token="SUPERSECRET"), {})
    assert "SUPERSECRET" not in repr(config)
    assert config.secrets() == ["SUPERSECRET"]


# --- one strict YAML loader --------------------------------------------------------------------


def load_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    return str(info.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("cache_ttl_seconds: 60\ncache_ttl_seconds: 30\n",
     "cache_ttl_seconds: key set twice (line 2, column 1; first set at line 1)"),
    ("accounts:\n  - name: a\n    access_token: t\n    access_token: u\n",
     "accounts[0].access_token: key set twice (line 4, column 5; first set at line 3)"),
    ("accounts:\n  - {name: a, access_token: t}\n  - {name: b, access_token: t, name: c}\n",
     "accounts[1].name: key set twice (line 3, column 32; first set at line 3)"),
    ("containers:\n  track:\n    - {account: a, id: '1', id: '2'}\n",
     "containers.track[0].id: key set twice (line 3, column 29; first set at line 3)"),
])
def test_duplicate_keys_are_errors_naming_field_line_and_column(tmp_path, text, expected):
    # yaml.safe_load keeps the last value silently; the web config always refused this.
    assert yaml.safe_load(text) is not None
    assert load_error(tmp_path, text) == expected


def test_merge_keys_may_be_overridden(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("accounts:\n  - <<: {name: a, access_token: t, user_id: me}\n"
                    "    user_id: '17'\n")
    assert load_config(path, env={}).accounts[0].user_id == "17"


TOKEN = "EAAGm0PX4ZCpsBA" + "Zx9" * 60 + "LONGTOKEN"  # shaped like a Meta access token


@pytest.mark.parametrize("text", [
    f"accounts:\n  - name: a\n    access_token: \"{TOKEN}\\q\"\n",  # unknown escape
    f"accounts:\n  - name: a\n\t    access_token: {TOKEN}\n",  # a tab
    f"accounts:\n  - name: a\n    access_token: [{TOKEN}\n",  # unclosed flow sequence
    f"accounts:\n  - name: a\n    access_token: *{TOKEN}\n",  # undefined alias
    f"accounts:\n  - name: a\n    access_token: !{TOKEN}! x\n",  # undefined tag handle
    f"accounts:\n  - name: !!int {TOKEN}\n    access_token: t\n",  # unreadable as its tag
    f"accounts:\n  - name: a\n    access_token: {TOKEN}\x07\n",  # a control character
    f"a: &{TOKEN} 1\nb: &{TOKEN} 2\n",  # duplicate anchor
    f"{TOKEN}: 1\n{TOKEN}: 2\n",  # duplicate key that is a token
    f"accounts:\n  - name: a\n    access_token: {TOKEN}\n---\nmore: 1\n",  # two documents
])
def test_yaml_errors_name_line_and_column_and_never_quote_the_file(tmp_path, text):
    message = load_error(tmp_path, text)
    assert re.search(r"line \d+, column \d+", message), message
    assert not _leaks(TOKEN, message), message


@pytest.mark.parametrize("text", [
    f"accounts:\n  - name: a\n    access_token: \"{TOKEN}\\q\"\n",
    f"accounts:\n  - name: a\n\t    access_token: {TOKEN}\n",
])
def test_pyyaml_itself_would_quote_the_token(tmp_path, text):
    # Why the loader formats its own messages: str() of PyYAML's error shows the line.
    with pytest.raises(yaml.YAMLError) as info:
        yaml.safe_load(text)
    assert _leaks(TOKEN, str(info.value))
    assert not _leaks(TOKEN, load_error(tmp_path, text))


def test_yaml_error_keeps_the_problem_and_its_position(tmp_path):
    message = load_error(tmp_path, "accounts:\n  - name: a\n\tbad: x\n")
    assert message.endswith("invalid YAML at line 3, column 1: found character '\\t' that "
                            "cannot start any token (while scanning for the next token)")


def test_an_empty_file_is_an_empty_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# nothing yet\n")
    assert load_config(path, env={}).accounts == ()


# --- rejected values are quoted only when they cannot be a secret -------------------------------

ODD_TOKENS = [
    TOKEN,
    'EAAGtok"en\\with"quotes\\and\\backslashes' + "Q7" * 40,
    "EAAG tök€n wïth spacés and nön-ASCII " + "ß9" * 40,
    "sk-" + "0123456789abcdef" * 2,  # only 35 characters, but a random-looking run
    "EAAG\ttab\r\nnewline" + "x1" * 30,
]


def _placements(token: str) -> list[tuple[dict, str]]:
    ok = {"name": "brand", "access_token": "tok"}
    return [
        ({"accounts": [{**ok, "user_id": token}]}, "accounts[0].user_id"),
        ({"accounts": [{**ok, "name": token}]}, "accounts[0].name"),
        ({"accounts": [{**ok, "quotas": [token]}]}, "accounts[0].quotas[0]"),
        ({"accounts": [ok], "containers": {"track": [{"account": token, "id": "1"}]}},
         "containers.track[0].account"),
        ({"accounts": [ok], "containers": {"track": [{"account": "brand", "id": token}]}},
         "containers.track[0].id"),
        ({"api": {"version": token}}, "api.version"),
        ({"api": {"base_url": token}}, "api.base_url"),
        ({"api": {"timeout_seconds": token}}, "api.timeout_seconds"),
        ({"accounts": [{**ok, "access_token_file": token, "access_token": None}]},
         "accounts[0].access_token_file"),
        ({"accounts": [{**ok, token: 1}]}, "accounts[0]."),
        ({"accounts": [{**ok, "access_token": "${" + token + "}"}]}, "accounts[0].access_token"),
    ]


def _leaks(token: str, message: str) -> bool:
    # Any 8-character piece of the token (minus the shared "EAAG" prefix) counts as a leak.
    return any(token[i:i + 8] in message for i in range(4, len(token) - 7))


@pytest.mark.parametrize("token", ODD_TOKENS, ids=["plain", "quotes", "non-ascii", "short",
                                                   "control"])
def test_a_token_in_the_wrong_field_is_described_not_quoted(tmp_path, token):
    for data, field in _placements(token):
        if "${" in str(data) and not re.fullmatch(r"[A-Za-z0-9_]+", token):
            continue  # not a variable reference at all: kept as the token itself
        if field == "accounts[0].name" and re.fullmatch(r"[a-zA-Z0-9_.-]+", token):
            continue  # a valid account name: accepted, so no error message to leak into
        message = error_of(data)
        assert message.startswith(field), (field, message)
        assert not _leaks(token, message), message
        # Through a YAML file too, where odd characters are quoted and escaped.
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            load_config(path, env={})
        assert not _leaks(token, str(info.value)), str(info.value)


def test_a_described_value_says_what_it_was():
    message = error_of(minimal(user_id=TOKEN))
    assert message == (f"accounts[0].user_id: must be 'me' or a numeric id, got a {len(TOKEN)}"
                       "-character string (not shown: it may be a secret)")
    message = error_of({"accounts": [{"name": "brand", "access_token": "tok", TOKEN: 1}]})
    assert message == f"accounts[0].<a {len(TOKEN)}-character key>: unknown key"


@pytest.mark.parametrize("value", ["a b", "../me", "graph.threads.net", "likes", "v1", "café",
                                   "ops@example.com", "/run/secrets/x"])
def test_short_harmless_values_are_still_quoted(value):
    assert f"got {value!r}" in error_of(minimal(user_id=value))


@pytest.mark.parametrize("name", [TOKEN, f"brand-{TOKEN}"], ids=["the token", "inside"])
@pytest.mark.parametrize("where", ["own token", "another account's", "registration token"])
def test_an_account_named_after_a_secret_is_refused_without_showing_it(name, where):
    other = {"name": "other", "access_token": TOKEN if where == "another account's" else "o"}
    data = {"accounts": [
        {"name": name, "access_token": TOKEN if where == "own token" else "t"}, other]}
    if where == "registration token":
        data["containers"] = {"api_token": TOKEN}
    message = error_of(data)
    assert message.startswith("accounts[0].name: holds one of the config's secrets")
    assert TOKEN[:12] not in message


def test_a_short_secret_inside_a_name_is_no_secret_in_it():
    # Test configs use tokens like "t"; real ones are long. Only a whole name is refused.
    assert parse_config({"accounts": [{"name": "support", "access_token": "t"}]}, {})
    assert error_of({"accounts": [{"name": "t", "access_token": "t"}]}).startswith(
        "accounts[0].name: holds")

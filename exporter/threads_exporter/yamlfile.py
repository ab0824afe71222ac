"""Strict YAML for both config files: duplicate keys are errors, errors never quote the file."""

from __future__ import annotations

import re
import sys
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.reader import Reader

from threads_exporter.redact import could_be_secret, shown

__all__ = ["YamlError", "compose", "key_path", "load"]

_MERGE = "tag:yaml.org,2002:merge"
_SEQ, _MAP = "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
# Scalar tags the event path leaves to the node path: keys with meaning in a mapping.
_SPECIAL = frozenset({_MERGE, "tag:yaml.org,2002:value"})
_MAX_DEPTH = 100  # deeper documents take the node path (and its "nested too deeply")


class YamlError(ValueError):
    """Unusable YAML. ``str()`` names the line and column (and the key path, when known) and the
    problem, and never the text around it: that line may hold a token or a password hash."""

    def __init__(self, problem: str, line: int, column: int, path: str = "",
                 note: str = "") -> None:
        super().__init__(problem, line, column, path)
        self.problem = problem
        self.line = line
        self.column = column
        self.path = path
        self.note = note

    @property
    def where(self) -> str:
        return f"line {self.line}, column {self.column}"

    def __str__(self) -> str:
        if self.path:
            note = f"; {self.note}" if self.note else ""
            return f"{self.path}: {self.problem} ({self.where}{note})"
        return f"{self.where}: {self.problem}"


def compose(text: str, *, first_document_only: bool = False) -> yaml.Node | None:
    """The node tree of text, None when it holds no document.

    A second document is an error, unless first_document_only (Go's yaml.v2 reads the first
    one only and never looks at the rest)."""
    node: yaml.Node | None = _parse(text, first_document_only=first_document_only,
                                    construct=False)
    return node


def load(text: str) -> Any:
    """The Python data of text's single document (None for an empty file), like yaml.safe_load
    but strict about duplicate keys and with errors that never quote the file.

    Built straight from the parser's events, so a config of 100,000 entries never holds a
    node tree (about 2 KB per entry with its marks). What that path leaves alone (an error of
    any kind, merge keys, explicit collection tags, complex keys, deep nesting) is loaded
    again through the node tree, which decides and words every error."""
    try:
        Reader(text)  # the reader checks every character here
    except yaml.YAMLError as e:
        raise _from_pyyaml(e, text) from None
    try:
        return _stream(text)
    except (_Fallback, yaml.YAMLError, RecursionError):
        pass
    return _parse(text, first_document_only=False, construct=True)


def _parse(text: str, *, first_document_only: bool, construct: bool) -> Any:
    try:
        loader = _Loader(text)  # the reader checks every character here
    except yaml.YAMLError as e:
        raise _from_pyyaml(e, text) from None
    try:
        if first_document_only:
            node = loader.get_node() if loader.check_node() else None
        else:
            node = loader.get_single_node()
        if node is None:
            return None
        _check_keys(node, loader, python_keys=construct)
        return loader.construct_document(node) if construct else node
    except yaml.YAMLError as e:
        raise _from_pyyaml(e, text) from None
    except RecursionError:
        raise YamlError("nested too deeply", 1, 1) from None
    finally:
        loader.dispose()


def key_path(parent: str, key: object) -> str:
    """parent.key as error messages name a field; a key that could be a secret is described."""
    if isinstance(key, bool) or key is None:
        name = {True: "true", False: "false", None: "null"}[key]
    elif isinstance(key, (str, int, float)) and not could_be_secret(str(key)):
        name = str(key)
    elif isinstance(key, str):
        name = f"<a {len(key)}-character key>"
    else:
        name = f"<{shown(key)}>"
    return f"{parent}.{name}" if parent else name


class _Constructing(SafeConstructor):
    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # SafeConstructor raises plain ValueError/TypeError for `!!int abc` and the like, with
        # no position and sometimes the value itself: give them the node's mark instead.
        try:
            return super().construct_object(node, deep)
        except (yaml.YAMLError, RecursionError):
            raise
        except Exception:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value as {_short_tag(node.tag)}",
                node.start_mark) from None


class _Loader(yaml.SafeLoader, _Constructing):
    """The node path: PyYAML's own composer."""


def _short_tag(tag: str) -> str:
    return "!!" + tag.rsplit(":", 1)[-1] if tag.startswith("tag:yaml.org,2002:") else "its tag"


def _check_keys(root: yaml.Node, loader: _Loader, *, python_keys: bool) -> None:
    """Every mapping's explicit keys are distinct (merged keys may be overridden: that is what
    merge keys are for). With python_keys, keys compare as the dict load() builds compares
    them (`1` and `true` collide); otherwise as typed values (`'1'` and `"1"` are one key, `1`
    and `true` two), for the web config's decoder, which adds yaml.v2's rules."""
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:  # an alias: checked where its anchor is
            continue
        seen_nodes.add(id(node))
        # Children go on the stack last-first, so the walk is in document order and an
        # anchored node is checked (and named) where it is written, not where it is used.
        if isinstance(node, yaml.SequenceNode):
            stack.extend(reversed([(item, f"{path}[{i}]") for i, item in enumerate(node.value)]))
        elif isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            children: list[tuple[yaml.Node, str]] = []
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE:
                    children.append((value_node, path))
                    continue
                key = _key(key_node, loader)
                sub = key_path(path, key)
                typed = key if python_keys else (type(key), key)
                if typed in first_line:
                    raise YamlError("key set twice", key_node.start_mark.line + 1,
                                    key_node.start_mark.column + 1, sub,
                                    f"first set at line {first_line[typed]}")
                if key is not _UNHASHABLE:
                    first_line[typed] = key_node.start_mark.line + 1
                children.append((value_node, sub))
            stack.extend(reversed(children))


_UNHASHABLE = object()  # a complex key (a list or mapping): yaml.v2 and PyYAML reject it later


def _key(node: yaml.Node, loader: _Loader) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        return _UNHASHABLE
    key = loader.construct_object(node)
    try:
        hash(key)
    except TypeError:
        return _UNHASHABLE
    return key


# PyYAML quotes source text in its problems (an alias or anchor name, a tag, one character).
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def _scrub(problem: str) -> str:
    def one(match: re.Match[str]) -> str:
        inner = match.group(0)[1:-1]
        return match.group(0) if not could_be_secret(inner) else f"<{shown(inner)}>"

    scrubbed = _QUOTED.sub(one, problem)
    # PyYAML quotes what it takes from the file; anything else token-like came from the file
    # some other way: say nothing specific rather than risk quoting it.
    if any(could_be_secret(word) for word in _QUOTED.sub(" ", scrubbed).split()):
        return "not valid YAML"
    return scrubbed


def _from_pyyaml(e: yaml.YAMLError, text: str) -> YamlError:
    if isinstance(e, yaml.reader.ReaderError):
        # A character YAML does not allow; ReaderError knows its offset, not its line.
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        return YamlError(f"character #x{e.character:04x} is not allowed in YAML", line, column)
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        problem = _scrub(e.problem or e.context or "not valid YAML")
        if e.context and e.problem:
            at = e.context_mark
            first = f" at line {at.line + 1}" if at and mark and at.line != mark.line else ""
            problem += f" ({_scrub(e.context)}{first})"
        if mark is not None:
            return YamlError(problem, mark.line + 1, mark.column + 1)
    return YamlError("not valid YAML", 1, 1)


# --- the event path ---------------------------------------------------------------------


class _Fallback(Exception):
    """Something the event path leaves to the node path."""


_BUILDING = object()  # an anchor whose collection is still being built


class _Events(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader,  # type: ignore[misc]
              _Constructing):
    """Events from libyaml where PyYAML has it; the same resolver and constructors."""


def _stream(text: str) -> Any:
    """The document of text built from events: each scalar is constructed as it comes, each
    mapping checked for duplicate keys as it fills; no node outlives its scalar."""
    loader: Any = _Events(text)  # type: ignore[call-arg]
    try:
        loader.get_event()  # stream start
        if loader.check_event(StreamEndEvent):
            return None
        loader.get_event()  # document start
        anchors: dict[str, Any] = {}
        # Open collections: [the list or dict, key awaiting its value (mappings), anchor].
        stack: list[list[Any]] = []
        done = False
        result: Any = None
        while not done:
            event = loader.get_event()
            if isinstance(event, (SequenceEndEvent, MappingEndEvent)):
                container, pending, anchor = stack.pop()
                if pending is not _NO_KEY:
                    raise _Fallback  # cannot happen with a well-formed event stream
                if anchor is not None:
                    anchors[anchor] = container
                value = container
            elif isinstance(event, AliasEvent):
                value = anchors.get(event.anchor or "", _BUILDING)
                if value is _BUILDING:
                    raise _Fallback  # undefined, or recursive
            else:
                anchor = event.anchor
                if anchor is not None and anchor in anchors:
                    raise _Fallback  # a duplicate anchor: an error, worded by the node path
                if isinstance(event, ScalarEvent):
                    value = _scalar(loader, event)
                    if anchor is not None:
                        anchors[anchor] = value
                else:
                    kind: Any = (SequenceNode if isinstance(event, SequenceStartEvent)
                                 else MappingNode)
                    tag = event.tag
                    if tag is None or tag == "!":
                        tag = loader.resolve(kind, None, event.implicit)
                    if tag != (_SEQ if kind is SequenceNode else _MAP) or \
                            len(stack) >= _MAX_DEPTH:
                        raise _Fallback
                    if anchor is not None:
                        anchors[anchor] = _BUILDING
                    stack.append([[] if kind is SequenceNode else {}, _NO_KEY, anchor])
                    continue
            if not stack:
                result, done = value, True
                continue
            top = stack[-1]
            container = top[0]
            if isinstance(container, list):
                container.append(value)
            elif top[1] is _NO_KEY:
                if isinstance(event, (SequenceEndEvent, MappingEndEvent)) or \
                        isinstance(value, (list, dict)):
                    raise _Fallback  # a complex key: the node path rejects it
                try:
                    if value in container:
                        raise _Fallback  # a duplicate key: the node path names it
                except TypeError:
                    raise _Fallback from None  # unhashable
                top[1] = sys.intern(value) if type(value) is str else value
            else:
                container[top[1]] = value
                top[1] = _NO_KEY
        loader.get_event()  # document end
        if not loader.check_event(StreamEndEvent):
            raise _Fallback  # a second document: an error, worded by the node path
        return result
    finally:
        loader.dispose()


_NO_KEY = object()


def _scalar(loader: Any, event: ScalarEvent) -> Any:
    tag = event.tag
    if tag is None or tag == "!":
        tag = loader.resolve(ScalarNode, event.value, event.implicit)
    if tag in _SPECIAL:
        raise _Fallback
    node = ScalarNode(tag, event.value, event.start_mark, event.end_mark,  # type: ignore[arg-type]
                      event.style)
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.constructed_objects.pop(node, None)

"""Loads and validates the exporter-toolkit web config file (``--web.config.file``)."""

# Format: https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md
#
# Validation follows ``promtool check web-config`` (exporter-toolkit as built into Prometheus
# 2.42), so a file promtool rejects is rejected here too, naming the field: the file is decoded
# like Go's yaml.v2 (unknown or duplicate keys are errors, plain ``y``/``n`` are booleans, any
# scalar is accepted where a string is expected), bcrypt hashes are checked as Go's
# ``bcrypt.Cost`` checks them, and relative paths are relative to the file's directory.
# Where this exporter is stricter than promtool, on purpose, deploy/README.md says so: the
# client-certificate modes that verify nothing, a TLS version OpenSSL here cannot serve, and
# header values that would break or inject header lines.

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

import yaml

from threads_exporter.redact import shown, shown_path
from threads_exporter.web.basicauth import BasicAuth, bcrypt_problem
from threads_exporter.web.tls import TLSConfigError, server_context
from threads_exporter.yamlfile import YamlError, compose, key_path

__all__ = ["WebConfig", "WebConfigError", "load_web_config"]


class WebConfigError(Exception):
    """A web config that cannot be used; ``str()`` starts with the field path."""


@dataclass(frozen=True)
class WebConfig:
    ssl_context: ssl.SSLContext | None
    headers: dict[str, str]
    basic_auth: BasicAuth | None = field(default=None, repr=False)
    http2: bool = True

    @property
    def auth_required(self) -> bool:
        return self.basic_auth is not None

    def authorized(self, authorization: str | None) -> bool:
        """Check an Authorization header against basic_auth_users (always True without users)."""
        return self.basic_auth is None or self.basic_auth.authorized(authorization)


def load_web_config(path: str) -> WebConfig:
    """Read and validate a web config file; raises WebConfigError naming the bad field."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise WebConfigError(f"web config: no such file: {shown_path(path)}") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise WebConfigError(f"web config: cannot read {shown_path(path)}: {reason}") from None
    raw = _decode(text)
    for section, defaults in _DEFAULTS.items():
        # Like yaml.v2 decoding into a pre-filled struct: absent fields keep their defaults
        # (a null section is all zero values, which _decode already filled in).
        raw[section] = {**defaults, **raw.get(section, {})}

    http = raw["http_server_config"]
    headers = dict(http.get("headers") or {})
    for name, value in headers.items():
        _check_header(name, value)

    users: dict[str, bytes] = {}
    for name, hashed in (raw.get("basic_auth_users") or {}).items():
        problem = bcrypt_problem(hashed)
        if problem:
            raise WebConfigError(f"{key_path('basic_auth_users', name)}: {problem}")
        users[name] = hashed.encode()

    try:
        ctx = server_context(raw["tls_server_config"], os.path.dirname(os.path.abspath(path)))
    except TLSConfigError as e:
        raise WebConfigError(str(e)) from None
    return WebConfig(ssl_context=ctx, headers=headers,
                     basic_auth=BasicAuth(users) if users else None,
                     http2=bool(http.get("http2", False)))


# ---------------------------------------------------------------------------------------------
# Headers: exporter-toolkit allows exactly these; None means any value.

_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
_LINE_BREAK = re.compile(r"[\r\n]")
# What a header value can carry (RFC 9110 field-value, without the obsolete 8-bit text):
# Python's HTTP server writes headers as Latin-1, and anything else fails every response.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e]*")


def _check_header(name: str, value: str) -> None:
    where = key_path("http_server_config.headers", name)
    for what, text in (("name", name), ("value", value)):
        if _LINE_BREAK.search(text):
            # Go's net/http would send it; a line break in a header starts a new header line.
            raise WebConfigError(f"{where}: a header {what} must not contain a line break "
                                 "(CR or LF): it would end the header and start another")
    if name not in _HEADERS:
        raise WebConfigError(f"{where}: this header can not be configured "
                             f"(allowed: {', '.join(_HEADERS)})")
    if not _FIELD_VALUE.fullmatch(value):
        raise WebConfigError(f"{where}: a header value may hold printable ASCII, spaces and "
                             "tabs only")
    allowed = _HEADERS[name]
    if allowed is not None and value not in allowed:
        raise WebConfigError(f"{where}: invalid value {shown(value)} "
                             f"(one of {', '.join(allowed)})")


# ---------------------------------------------------------------------------------------------
# Strict decoding of the YAML node tree, with yaml.v2's conversions.

_NULL = "tag:yaml.org,2002:null"
_V2_TRUE = {"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"}
_V2_FALSE = {"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"}

# field -> kind: "str", "bool", "list", "map", "version" (a string that may be null, which
# means the library default) or a nested schema
_TLS_SCHEMA: dict[str, Any] = {
    "cert_file": "str", "key_file": "str", "client_auth_type": "str", "client_ca_file": "str",
    "cipher_suites": "list", "curve_preferences": "list", "min_version": "version",
    "max_version": "version", "prefer_server_cipher_suites": "bool",
    "client_allowed_sans": "list",
}
_HTTP_SCHEMA: dict[str, Any] = {"http2": "bool", "headers": "map"}
_SCHEMA: dict[str, Any] = {
    "tls_server_config": _TLS_SCHEMA, "http_server_config": _HTTP_SCHEMA,
    "basic_auth_users": "map",
}
_DEFAULTS: dict[str, Any] = {
    "tls_server_config": {"min_version": "TLS12", "max_version": "TLS13",
                          "prefer_server_cipher_suites": True},
    "http_server_config": {"http2": True},
}
_ZERO = {"str": "", "bool": False, "list": None, "map": None, "version": None}


def _decode(text: str) -> dict[str, Any]:
    try:
        node = compose(text, first_document_only=True)  # yaml.v2 reads the first document only
    except YamlError as e:
        if e.path:  # a key set twice: a field problem, named like the others
            raise WebConfigError(str(e)) from None
        raise WebConfigError(f"(top level): not valid YAML: {e}") from None
    if node is None or _is_null(node):
        return {}
    decoded: dict[str, Any] = _dec(node, _SCHEMA, "")
    return decoded


def _short_tag(node: yaml.Node) -> str:
    return "!!" + node.tag.rsplit(":", 1)[-1]


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL


def _where(path: str, node: yaml.Node) -> str:
    return f"{path or '(top level)'} (line {node.start_mark.line + 1})"


def _dec_str(node: yaml.Node, path: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise WebConfigError(
            f"{_where(path, node)}: cannot unmarshal {_short_tag(node)} into string")
    return "" if node.tag == _NULL else str(node.value)


def _dec_bool(node: yaml.Node, path: str) -> bool:
    if _is_null(node):
        return False
    if isinstance(node, yaml.ScalarNode) and node.style is None:
        if node.value in _V2_TRUE:
            return True
        if node.value in _V2_FALSE:
            return False
    value = f" {shown(node.value)}" if isinstance(node, yaml.ScalarNode) else ""
    raise WebConfigError(
        f"{_where(path, node)}: cannot unmarshal {_short_tag(node)}{value} into bool")


def _mapping_pairs(node: yaml.MappingNode, path: str) -> list[tuple[str, yaml.Node]]:
    """Key/value pairs with merge keys (<<) expanded; keys are strings, as yaml.v2 reads them."""
    seen: set[str] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = _dec_str(key_node, path)
        # The loader caught keys equal as YAML values; yaml.v2 also merges `1` and `'1'`.
        if key in seen:
            raise WebConfigError(f"{_where(key_path(path, key), key_node)}: key set twice")
        seen.add(key)
    yaml.constructor.SafeConstructor().flatten_mapping(node)
    return [(_dec_str(k, path), v) for k, v in node.value]


def _dec(node: yaml.Node, kind: Any, path: str) -> Any:
    if kind == "str":
        return _dec_str(node, path)
    if kind == "bool":
        return _dec_bool(node, path)
    if kind == "version":
        return None if _is_null(node) else _dec_str(node, path)
    if _is_null(node):
        return {k: _ZERO.get(v, {}) for k, v in kind.items()} if isinstance(kind, dict) else None
    if kind == "list":
        if not isinstance(node, yaml.SequenceNode):
            raise WebConfigError(f"{_where(path, node)}: expected a list, got {_short_tag(node)}")
        return [_dec_str(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
    if not isinstance(node, yaml.MappingNode):
        raise WebConfigError(f"{_where(path, node)}: expected a mapping, got {_short_tag(node)}")
    pairs = _mapping_pairs(node, path)
    if kind == "map":
        return {key: _dec_str(value, key_path(path, key)) for key, value in pairs}
    out: dict[str, Any] = {}
    for key, value in pairs:
        sub = key_path(path, key)
        if key not in kind:
            known = ", ".join(kind)
            raise WebConfigError(f"{_where(sub, value)}: unknown field (known: {known})")
        out[key] = _dec(value, kind[key], sub)
    return out

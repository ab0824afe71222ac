"""The exporter-toolkit web configuration file (``--web.config.file``): TLS, basic auth, headers.

Format: https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md

Validation follows ``promtool check web-config`` (exporter-toolkit as built into Prometheus
2.42): the file is decoded strictly like Go's yaml.v2 (unknown or duplicate keys are errors,
plain ``y``/``n`` are booleans, any scalar is accepted where a string is expected), bcrypt
hashes are checked the way Go's ``bcrypt.Cost`` checks them, the certificate and key must
load, and relative paths are relative to the file's directory. Every error names the field.

Deliberate differences, all documented in deploy/README.md:
- ``client_allowed_sans`` (newer exporter-toolkit) is supported with the newer toolkit's rule
  that it needs ``RequireAnyClientCert`` or ``RequireAndVerifyClientCert``.
- ``http2`` is accepted but the Python server speaks HTTP/1.1 only.
- ``curve_preferences``: Python before 3.15 can restrict key exchange to one group only, so a
  single curve is enforced and a longer list falls back to OpenSSL's default groups.
- Certificates are read once, at load time (exporter-toolkit re-reads them per handshake):
  rotate them with a restart or ``POST /-/reload``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import hashlib
import hmac
import ipaddress
import os
import re
import ssl
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import bcrypt
import yaml

__all__ = ["WebConfig", "WebConfigError", "load_web_config"]


class WebConfigError(Exception):
    """A web config that cannot be used; ``str()`` starts with the field path."""


_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# Go's tls.CipherSuites() names (the ones exporter-toolkit accepts) -> OpenSSL names.
# None: a TLS 1.3 suite, which neither Go nor Python lets a server configure.
_CIPHERS: dict[str, str | None] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}

_CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1",
           "X25519": "X25519"}

_CLIENT_AUTH = {
    "": "NoClientCert",
    "NoClientCert": "NoClientCert",
    "RequestClientCert": "RequestClientCert",
    "RequireAnyClientCert": "RequireAnyClientCert",
    "RequireClientCert": "RequireAnyClientCert",  # exporter-toolkit's backwards-compatible alias
    "VerifyClientCertIfGiven": "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert": "RequireAndVerifyClientCert",
}

# exporter-toolkit allows exactly these headers; None means any value.
_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

# ---------------------------------------------------------------------------------------------
# Strict decoding of the YAML node tree, with yaml.v2's conversions.

_NULL = "tag:yaml.org,2002:null"
_V2_TRUE = {"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"}
_V2_FALSE = {"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"}

# field -> kind: "str", "bool", "list", "map" or a nested schema
_TLS_SCHEMA: dict[str, Any] = {
    "cert_file": "str", "key_file": "str", "client_auth_type": "str", "client_ca_file": "str",
    "cipher_suites": "list", "curve_preferences": "list", "min_version": "str",
    "max_version": "str", "prefer_server_cipher_suites": "bool", "client_allowed_sans": "list",
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
_ZERO = {"str": "", "bool": False, "list": None, "map": None}


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
    value = f" `{node.value}`" if isinstance(node, yaml.ScalarNode) else ""
    raise WebConfigError(
        f"{_where(path, node)}: cannot unmarshal {_short_tag(node)}{value} into bool")


def _mapping_pairs(node: yaml.MappingNode, path: str) -> list[tuple[str, yaml.Node]]:
    """Key/value pairs with merge keys (<<) expanded; explicit duplicate keys are errors."""
    seen: set[str] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = _dec_str(key_node, path)
        if key in seen:
            sub = f"{path}.{key}" if path else key
            raise WebConfigError(f"{_where(sub, key_node)}: key {key!r} is set twice")
        seen.add(key)
    yaml.constructor.SafeConstructor().flatten_mapping(node)
    return [(_dec_str(k, path), v) for k, v in node.value]


def _dec(node: yaml.Node, kind: Any, path: str) -> Any:
    if kind == "str":
        return _dec_str(node, path)
    if kind == "bool":
        return _dec_bool(node, path)
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
        return {key: _dec_str(value, f"{path}.{key}") for key, value in pairs}
    out: dict[str, Any] = {}
    for key, value in pairs:
        sub = f"{path}.{key}" if path else key
        if key not in kind:
            known = ", ".join(kind)
            raise WebConfigError(f"{_where(sub, value)}: unknown field (known: {known})")
        out[key] = _dec(value, kind[key], sub)
    return out


def _decode(text: str) -> dict[str, Any]:
    try:
        # yaml.v2 reads the first document only.
        node = next(iter(yaml.compose_all(text, Loader=yaml.SafeLoader)), None)
    except yaml.YAMLError as e:
        detail = " ".join(str(e).split())
        raise WebConfigError(f"(top level): not valid YAML: {detail}") from None
    if node is None or _is_null(node):
        return {}
    decoded: dict[str, Any] = _dec(node, _SCHEMA, "")
    return decoded


# ---------------------------------------------------------------------------------------------
# Checks.


def _bcrypt_problem(hashed: str) -> str | None:
    """What golang.org/x/crypto/bcrypt.Cost would reject in hashed, or None."""
    b = hashed.encode()
    if len(b) < 59:
        return "too short to be a bcrypt hash"
    if b[0:1] != b"$":
        return "a bcrypt hash starts with '$'"
    if b[1] > ord("2"):
        return f"bcrypt version {chr(b[1])!r} is newer than 2"
    n = 3 if b[2:3] == b"$" else 4
    if not re.fullmatch(rb"[+-]?[0-9]+", b[n:n + 2]):
        return "cannot read the bcrypt cost"
    cost = int(b[n:n + 2])
    if not 4 <= cost <= 31:
        return f"bcrypt cost {cost} is outside 4..31"
    return None


def _resolve(base_dir: str, path: str) -> str:
    return path if not path or os.path.isabs(path) else os.path.join(base_dir, path)


def _read_file(path: str, fld: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise WebConfigError(f"{fld}: no such file: {path}") from None
    except OSError as e:
        raise WebConfigError(f"{fld}: cannot read {path}: {e.strerror}") from None


_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n(.*?)-----END CERTIFICATE-----", re.DOTALL)


def _load_client_cas(ctx: ssl.SSLContext, data: bytes) -> None:
    # Like Go's AppendCertsFromPEM: take every certificate that parses, skip the rest.
    for block in _PEM_CERT.finditer(data):
        pem = b"-----BEGIN CERTIFICATE-----\n" + block.group(1) + b"-----END CERTIFICATE-----\n"
        with contextlib.suppress(ssl.SSLError, ValueError):
            ctx.load_verify_locations(cadata=pem.decode("ascii", "replace"))


def _no_key_password() -> bytes:
    raise WebConfigError("tls_server_config.key_file: encrypted private keys are not supported")


# ---------------------------------------------------------------------------------------------
# Client certificates: requested or required but not verified (RequestClientCert,
# RequireAnyClientCert) has no Python API; set OpenSSL's verify callback directly.

_SSL_VERIFY_PEER = 0x01
_SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 0x02
_VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_ACCEPT_ANY = _VERIFY_CB(lambda _preverify_ok, _store: 1)  # module-level: never collected


def _accept_any_client_cert(ctx: ssl.SSLContext, require: bool) -> bool:
    """Make ctx ask for (and, with require, insist on) a client certificate it does not verify."""
    try:
        lib = ctypes.CDLL(ssl._ssl.__file__)  # type: ignore[attr-defined]
        set_verify, get_mode = lib.SSL_CTX_set_verify, lib.SSL_CTX_get_verify_mode
    except (OSError, AttributeError):
        return False
    get_mode.argtypes, get_mode.restype = [ctypes.c_void_p], ctypes.c_int
    set_verify.argtypes, set_verify.restype = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CB], None
    # CPython's SSLContext object starts with its SSL_CTX pointer; prove it before using it.
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    ctx.verify_mode = ssl.CERT_REQUIRED
    if not ptr or get_mode(ptr) != _SSL_VERIFY_PEER | _SSL_VERIFY_FAIL_IF_NO_PEER_CERT:
        return False
    ctx.verify_mode = ssl.CERT_OPTIONAL
    if get_mode(ptr) != _SSL_VERIFY_PEER:
        return False
    mode = _SSL_VERIFY_PEER | (_SSL_VERIFY_FAIL_IF_NO_PEER_CERT if require else 0)
    set_verify(ptr, mode, _ACCEPT_ANY)
    return True


def _der_items(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """(tag, content start, content end) of each DER element in data[start:end]."""
    items = []
    pos = start
    while pos < end:
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:
            n = length & 0x7F
            length = int.from_bytes(data[pos:pos + n], "big")
            pos += n
        items.append((tag, pos, pos + length))
        pos += length
    return items


_SAN_OID = b"\x06\x03\x55\x1d\x11"  # 2.5.29.17 subjectAltName


def _cert_sans(der: bytes) -> list[str]:
    """DNS names, e-mails, IP addresses and URIs of a DER certificate (in Go's order)."""
    dns: list[str] = []
    email: list[str] = []
    ips: list[str] = []
    uris: list[str] = []
    try:
        (_, cs, ce), = _der_items(der, 0, len(der))[:1]
        _, ts, te = _der_items(der, cs, ce)[0]
        for tag, xs, xe in _der_items(der, ts, te):
            if tag != 0xA3:  # [3] extensions
                continue
            (_, ls, le), = _der_items(der, xs, xe)
            for _, es, ee in _der_items(der, ls, le):
                parts = _der_items(der, es, ee)
                if der[parts[0][1] - 2:parts[0][2]] != _SAN_OID:
                    continue
                _, os_, oe = parts[-1]
                (_, gs, ge), = _der_items(der, os_, oe)
                for gtag, vs, ve in _der_items(der, gs, ge):
                    value = der[vs:ve]
                    if gtag == 0x81:
                        email.append(value.decode("ascii", "replace"))
                    elif gtag == 0x82:
                        dns.append(value.decode("ascii", "replace"))
                    elif gtag == 0x86:
                        uris.append(value.decode("ascii", "replace"))
                    elif gtag == 0x87 and len(value) in (4, 16):
                        ips.append(str(ipaddress.ip_address(value)))
    except (IndexError, ValueError):
        return []
    return dns + email + ips + uris


def _check_sans(sock: ssl.SSLSocket | ssl.SSLObject) -> None:
    allowed: tuple[str, ...] = getattr(sock.context, "allowed_sans", ())
    der = sock.getpeercert(binary_form=True)
    if not der or not any(san in allowed for san in _cert_sans(der)):
        raise ssl.SSLError("client certificate has none of tls_server_config.client_allowed_sans")


class _SanCheckingSocket(ssl.SSLSocket):
    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        _check_sans(self)


class _SanCheckingObject(ssl.SSLObject):
    def do_handshake(self) -> None:
        super().do_handshake()
        _check_sans(self)


class _ServerContext(ssl.SSLContext):
    allowed_sans: tuple[str, ...] = ()


def _ssl_context(tls: dict[str, Any], base_dir: str) -> ssl.SSLContext | None:
    p = "tls_server_config"
    cert, key = tls.get("cert_file", ""), tls.get("key_file", "")
    client_ca, auth = tls.get("client_ca_file", ""), tls.get("client_auth_type", "")
    if not (cert or key or client_ca or auth):
        return None  # no TLS: plain HTTP (basic auth and headers may still apply)
    if not cert:
        raise WebConfigError(f"{p}.cert_file: missing (needed when {p} is set)")
    if not key:
        raise WebConfigError(f"{p}.key_file: missing (needed when {p} is set)")
    cert, key, client_ca = (_resolve(base_dir, x) for x in (cert, key, client_ca))
    _read_file(cert, f"{p}.cert_file")
    _read_file(key, f"{p}.key_file")

    ctx = _ServerContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key, password=_no_key_password)
    except ssl.SSLError as e:
        raise WebConfigError(
            f"{p}.cert_file/key_file: cannot load the certificate and key ({cert}, {key}): "
            f"{e.reason or e}") from None

    versions = {}
    for name in ("min_version", "max_version"):
        value = tls.get(name, "")
        if value == "":
            continue  # a null tls_server_config: Go's zero value, the library default
        if value not in _TLS_VERSIONS:
            raise WebConfigError(
                f"{p}.{name}: unknown TLS version {value!r} (one of {', '.join(_TLS_VERSIONS)})")
        versions[name] = _TLS_VERSIONS[value]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated
        if "min_version" in versions:
            ctx.minimum_version = versions["min_version"]
        if "max_version" in versions:
            ctx.maximum_version = versions["max_version"]

    suites = tls.get("cipher_suites") or []
    for i, name in enumerate(suites):
        if name not in _CIPHERS:
            raise WebConfigError(f"{p}.cipher_suites[{i}]: unknown cipher suite {name!r}")
    tls12 = [_CIPHERS[s] for s in suites if _CIPHERS[s]]
    if tls12:
        try:
            ctx.set_ciphers(":".join(c for c in tls12 if c))
        except ssl.SSLError as e:
            raise WebConfigError(f"{p}.cipher_suites: not usable here: {e}") from None

    curves = tls.get("curve_preferences") or []
    for i, name in enumerate(curves):
        if name not in _CURVES:
            raise WebConfigError(
                f"{p}.curve_preferences[{i}]: unknown curve {name!r} (one of {', '.join(_CURVES)})")
    if len(curves) == 1:
        ctx.set_ecdh_curve(_CURVES[curves[0]])

    if tls.get("prefer_server_cipher_suites", False):
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE

    if auth not in _CLIENT_AUTH:
        raise WebConfigError(
            f"{p}.client_auth_type: invalid value {auth!r} "
            f"(one of {', '.join(k for k in _CLIENT_AUTH if k)})")
    mode = _CLIENT_AUTH[auth]
    if client_ca and mode == "NoClientCert":
        raise WebConfigError(f"{p}.client_ca_file: set, but client_auth_type is NoClientCert "
                             "(client CAs configured without a client auth policy)")
    sans = tls.get("client_allowed_sans")
    if sans is not None and mode not in ("RequireAnyClientCert", "RequireAndVerifyClientCert"):
        raise WebConfigError(f"{p}.client_allowed_sans: needs client_auth_type "
                             "RequireAnyClientCert or RequireAndVerifyClientCert")

    if client_ca:
        _load_client_cas(ctx, _read_file(client_ca, f"{p}.client_ca_file"))
    elif mode in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
        ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)  # Go verifies against system roots

    if mode == "NoClientCert":
        ctx.verify_mode = ssl.CERT_NONE
    elif mode == "VerifyClientCertIfGiven":
        ctx.verify_mode = ssl.CERT_OPTIONAL
    elif mode == "RequireAndVerifyClientCert":
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif not _accept_any_client_cert(ctx, require=mode == "RequireAnyClientCert"):
        if mode == "RequireAnyClientCert":
            raise WebConfigError(f"{p}.client_auth_type: {auth} is not supported by this "
                                 "Python build; use RequireAndVerifyClientCert with client_ca_file")
        ctx.verify_mode = ssl.CERT_NONE  # an unverified optional cert is never used anyway

    if sans is not None:
        ctx.allowed_sans = tuple(sans)
        ctx.sslsocket_class = _SanCheckingSocket
        ctx.sslobject_class = _SanCheckingObject
    # We speak HTTP/1.1 only, whatever http2 says.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


# ---------------------------------------------------------------------------------------------
# The result.

# bcrypt work for unknown users, so response time does not tell which users exist.
_DECOY_HASH = bcrypt.hashpw(b"decoy password", bcrypt.gensalt(rounds=10))
_CACHE_SIZE = 1024


@dataclass(frozen=True)
class WebConfig:
    ssl_context: ssl.SSLContext | None
    headers: dict[str, str]
    users: dict[str, bytes] = field(default_factory=dict, repr=False)
    http2: bool = True
    _cache: OrderedDict[bytes, None] = field(default_factory=OrderedDict, repr=False,
                                             compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def auth_required(self) -> bool:
        return bool(self.users)

    def authorized(self, authorization: str | None) -> bool:
        """Check an Authorization header against basic_auth_users (always True without users)."""
        if not self.users:
            return True
        credentials = _parse_basic(authorization)
        if credentials is None:
            return False
        user, password = credentials
        hashed = _DECOY_HASH
        known = False
        for name, h in self.users.items():  # compare every name: no early exit on a match
            if hmac.compare_digest(name.encode(), user.encode()):
                hashed, known = h, True
        # Cache key: a digest of user, password and hash, so no password is held in memory
        # and a changed hash misses.
        key = hashlib.sha256(
            b"\0".join((user.encode(), password.encode(), hashed))).digest()
        with self._lock:  # one bcrypt at a time: it is CPU-bound by design
            if key in self._cache:
                self._cache.move_to_end(key)
                return known
            try:
                ok = bcrypt.checkpw(password.encode(), hashed)
            except ValueError:  # hash Go accepts but Python's bcrypt cannot use, >72 bytes
                ok = False
            if ok and known:
                self._cache[key] = None
                if len(self._cache) > _CACHE_SIZE:
                    self._cache.popitem(last=False)
        return ok and known


def _parse_basic(authorization: str | None) -> tuple[str, str] | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def load_web_config(path: str) -> WebConfig:
    """Read and validate a web config file; raises WebConfigError naming the bad field."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise WebConfigError(f"web config: no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise WebConfigError(f"web config: cannot read {path}: {e}") from None
    raw = _decode(text)
    for section, defaults in _DEFAULTS.items():
        # Like yaml.v2 decoding into a pre-filled struct: absent fields keep their defaults
        # (a null section is all zero values, which _decode already filled in).
        raw[section] = {**defaults, **raw.get(section, {})}

    http = raw["http_server_config"]
    headers = dict(http.get("headers") or {})
    for name, value in headers.items():
        if name not in _HEADERS:
            raise WebConfigError(f"http_server_config.headers.{name}: this header can not be "
                                 f"configured (allowed: {', '.join(_HEADERS)})")
        allowed = _HEADERS[name]
        if allowed is not None and value not in allowed:
            raise WebConfigError(f"http_server_config.headers.{name}: invalid value {value!r} "
                                 f"(one of {', '.join(allowed)})")

    users: dict[str, bytes] = {}
    for name, hashed in (raw.get("basic_auth_users") or {}).items():
        problem = _bcrypt_problem(hashed)
        if problem:
            raise WebConfigError(f"basic_auth_users.{name}: {problem}")
        users[name] = hashed.encode()

    ctx = _ssl_context(raw["tls_server_config"], os.path.dirname(os.path.abspath(path)))
    return WebConfig(ssl_context=ctx, headers=headers, users=users,
                     http2=bool(http.get("http2", False)))

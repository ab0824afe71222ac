"""The server's ssl.SSLContext from tls_server_config: built, tried, refused if unservable."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import ssl
import warnings
from typing import Any

from threads_exporter.redact import shown, shown_path

__all__ = ["TLSConfigError", "server_context"]

_P = "tls_server_config"


class TLSConfigError(ValueError):
    """A tls_server_config that cannot be used; ``str()`` starts with the field path."""


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

# Every client_auth_type exporter-toolkit knows -> ssl verify mode, or None when refused.
_CLIENT_AUTH: dict[str, ssl.VerifyMode | None] = {
    "": ssl.CERT_NONE,
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    # These ask for a certificate and then accept any, self-signed by anyone:
    # exporter-toolkit documents them as insecure, and Python has no API for them.
    "RequestClientCert": None,
    "RequireAnyClientCert": None,
    "RequireClientCert": None,  # exporter-toolkit's old alias of RequireAnyClientCert
}

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n(.*?)-----END CERTIFICATE-----", re.DOTALL)


def server_context(tls: dict[str, Any], base_dir: str) -> ssl.SSLContext | None:
    """The context for tls_server_config (paths relative to base_dir), None for plain HTTP."""
    cert, key = tls.get("cert_file", ""), tls.get("key_file", "")
    client_ca, auth = tls.get("client_ca_file", ""), tls.get("client_auth_type", "")
    if not (cert or key or client_ca or auth):
        return None  # no TLS: plain HTTP (basic auth and headers may still apply)
    if not cert:
        raise TLSConfigError(f"{_P}.cert_file: missing (needed when {_P} is set)")
    if not key:
        raise TLSConfigError(f"{_P}.key_file: missing (needed when {_P} is set)")
    cert, key, client_ca = (_resolve(base_dir, x) for x in (cert, key, client_ca))
    _read_file(cert, "cert_file")
    _read_file(key, "key_file")

    ctx = _ServerContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key, password=_no_key_password)
    except ssl.SSLError as e:
        raise TLSConfigError(
            f"{_P}.cert_file/key_file: cannot load the certificate and key ({shown_path(cert)}, "
            f"{shown_path(key)}): {e.reason or 'not a PEM certificate and matching key'}"
        ) from None

    versions = _versions(ctx, tls)
    _ciphers_and_curves(ctx, tls)
    mode = _client_auth(auth, client_ca, tls.get("client_allowed_sans"))
    # Tried before client certificates are required (the trial client has none) and before
    # the SAN check is installed.
    for name, (value, version) in versions.items():
        problem = _serves(ctx, version)
        if problem:
            hint = ("use TLS12 or later" if version < ssl.TLSVersion.TLSv1_2 else
                    "check cipher_suites and curve_preferences against the certificate's key")
            raise TLSConfigError(
                f"{_P}.{name}: {value} cannot be served here: a TLS {_dotted(version)} handshake "
                f"with this configuration fails ({ssl.OPENSSL_VERSION}: {problem}); {hint}")

    if client_ca:
        _load_client_cas(ctx, _read_file(client_ca, "client_ca_file"))
    elif mode != ssl.CERT_NONE:
        ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)  # Go verifies against system roots
    ctx.verify_mode = mode
    sans = tls.get("client_allowed_sans")
    if sans is not None:
        ctx.allowed_sans = frozenset(sans)
        ctx.sslsocket_class = _SanCheckingSocket
        ctx.sslobject_class = _SanCheckingObject
    # We speak HTTP/1.1 only, whatever http2 says.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _versions(ctx: ssl.SSLContext,
              tls: dict[str, Any]) -> dict[str, tuple[str, ssl.TLSVersion]]:
    """Set min/max_version; returns the configured ones, to be tried once the context is done."""
    versions: dict[str, tuple[str, ssl.TLSVersion]] = {}
    for name in ("min_version", "max_version"):
        value = tls.get(name)
        if value is None:
            continue  # null: Go's zero value, the library default
        if value not in _TLS_VERSIONS:
            raise TLSConfigError(f"{_P}.{name}: unknown TLS version {shown(value)} "
                                 f"(one of {', '.join(_TLS_VERSIONS)})")
        versions[name] = (value, _TLS_VERSIONS[value])
    low, high = versions.get("min_version"), versions.get("max_version")
    if low and high and low[1] > high[1]:
        raise TLSConfigError(f"{_P}.min_version: {low[0]} is above max_version {high[0]}: "
                             "no TLS version is left to serve")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated
        if low:
            ctx.minimum_version = low[1]
        if high:
            ctx.maximum_version = high[1]
    if low and high and low[1] == high[1]:
        del versions["max_version"]  # one handshake tells for both
    return versions


def _ciphers_and_curves(ctx: ssl.SSLContext, tls: dict[str, Any]) -> None:
    suites = tls.get("cipher_suites") or []
    for i, name in enumerate(suites):
        if name not in _CIPHERS:
            raise TLSConfigError(f"{_P}.cipher_suites[{i}]: unknown cipher suite {shown(name)}")
    tls12 = [c for c in (_CIPHERS[s] for s in suites) if c]
    if tls12:
        try:
            ctx.set_ciphers(":".join(tls12))
        except ssl.SSLError as e:
            raise TLSConfigError(f"{_P}.cipher_suites: not usable here: {e.reason}") from None

    curves = tls.get("curve_preferences") or []
    for i, name in enumerate(curves):
        if name not in _CURVES:
            raise TLSConfigError(f"{_P}.curve_preferences[{i}]: unknown curve {shown(name)} "
                                 f"(one of {', '.join(_CURVES)})")
    if len(curves) == 1:
        ctx.set_ecdh_curve(_CURVES[curves[0]])

    if tls.get("prefer_server_cipher_suites", False):
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE


def _client_auth(auth: str, client_ca: str, sans: list[str] | None) -> ssl.VerifyMode:
    if auth not in _CLIENT_AUTH:
        raise TLSConfigError(f"{_P}.client_auth_type: invalid value {shown(auth)} "
                             f"(one of {', '.join(k for k in _CLIENT_AUTH if k)})")
    mode = _CLIENT_AUTH[auth]
    if mode is None:
        raise TLSConfigError(
            f"{_P}.client_auth_type: {auth} is refused: it accepts any client certificate "
            "without verifying it, so anyone can make one (exporter-toolkit documents every "
            "value but RequireAndVerifyClientCert as insecure); use RequireAndVerifyClientCert "
            "with client_ca_file")
    if client_ca and mode == ssl.CERT_NONE:
        raise TLSConfigError(f"{_P}.client_ca_file: set, but client_auth_type is NoClientCert "
                             "(client CAs configured without a client auth policy)")
    if sans is not None and mode != ssl.CERT_REQUIRED:
        # exporter-toolkit also allows RequireAnyClientCert, refused above.
        raise TLSConfigError(f"{_P}.client_allowed_sans: needs client_auth_type "
                             "RequireAndVerifyClientCert (a client must send a certificate "
                             "to have its names checked)")
    return mode


def _serves(server: ssl.SSLContext, version: ssl.TLSVersion) -> str | None:
    """Why server cannot complete a handshake at version, or None when it can.

    Settings alone do not tell: OpenSSL's security level, the certificate's key type and the
    cipher list decide at handshake time. So try one, in memory, against a client that is
    pinned to version and allows everything else."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    with contextlib.suppress(ssl.SSLError):
        client.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            client.minimum_version = client.maximum_version = version
        except ValueError:
            return "this Python's ssl module does not offer the version"
    # Two buffers, one per direction: what one side writes, the other reads.
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(to_client, to_server, server_side=False)
    s = server.wrap_bio(to_server, to_client, server_side=True)
    pending = [c, s]
    for _ in range(8):  # a TLS 1.2 handshake takes 2 round trips, 1.3 fewer
        for side in list(pending):
            try:
                side.do_handshake()
                pending.remove(side)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as e:
                return (e.reason or str(e)).lower().replace("_", " ")
        if not pending:
            return None
    return "the handshake did not finish"


def _dotted(version: ssl.TLSVersion) -> str:
    return {ssl.TLSVersion.TLSv1: "1.0", ssl.TLSVersion.TLSv1_1: "1.1",
            ssl.TLSVersion.TLSv1_2: "1.2", ssl.TLSVersion.TLSv1_3: "1.3"}[version]


def _resolve(base_dir: str, path: str) -> str:
    return path if not path or os.path.isabs(path) else os.path.join(base_dir, path)


def _read_file(path: str, name: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise TLSConfigError(f"{_P}.{name}: no such file: {shown_path(path)}") from None
    except OSError as e:
        raise TLSConfigError(
            f"{_P}.{name}: cannot read {shown_path(path)}: {e.strerror}") from None


def _load_client_cas(ctx: ssl.SSLContext, data: bytes) -> None:
    # Like Go's AppendCertsFromPEM: take every certificate that parses, skip the rest.
    for block in _PEM_CERT.finditer(data):
        pem = b"-----BEGIN CERTIFICATE-----\n" + block.group(1) + b"-----END CERTIFICATE-----\n"
        with contextlib.suppress(ssl.SSLError, ValueError):
            ctx.load_verify_locations(cadata=pem.decode("ascii", "replace"))


def _no_key_password() -> bytes:
    raise TLSConfigError(f"{_P}.key_file: encrypted private keys are not supported")


# ---------------------------------------------------------------------------------------------
# client_allowed_sans: Python has no hook inside certificate verification, so the names are
# checked right after the handshake, on the certificate OpenSSL has verified, and a
# connection that fails the check is closed before a byte of HTTP is read.


class _ServerContext(ssl.SSLContext):
    allowed_sans: frozenset[str] = frozenset()


def peer_sans(cert: dict[str, Any]) -> list[str]:
    """A getpeercert() dict's DNS names, e-mails, IP addresses and URIs, written as Go's
    crypto/x509 writes them (what exporter-toolkit compares client_allowed_sans with)."""
    names = []
    for kind, value in cert.get("subjectAltName", ()):
        if kind in ("DNS", "email", "URI"):
            names.append(value)
        elif kind == "IP Address":
            # CPython writes IPv6 as eight uppercase groups; Go writes the short form, and an
            # IPv4-mapped address as plain IPv4.
            try:
                ip = ipaddress.ip_address(value.strip())
            except ValueError:
                continue
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                names.append(str(ip.ipv4_mapped))
            else:
                names.append(str(ip))
    return names


def _check_sans(conn: ssl.SSLSocket | ssl.SSLObject) -> None:
    allowed: frozenset[str] = getattr(conn.context, "allowed_sans", frozenset())
    cert = conn.getpeercert()  # {} unless verified: only RequireAndVerifyClientCert gets here
    if not cert or not allowed.intersection(peer_sans(cert)):
        raise ssl.SSLError("client certificate has none of tls_server_config.client_allowed_sans")


class _SanCheckingSocket(ssl.SSLSocket):
    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        _check_sans(self)


class _SanCheckingObject(ssl.SSLObject):
    def do_handshake(self) -> None:
        super().do_handshake()
        _check_sans(self)

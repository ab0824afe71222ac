"""--web.config.file: validation against promtool's verdict, real TLS handshakes, basic auth."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from procs import exporter, exporter_cmd, wait_http
from threads_exporter.app import Exporter
from threads_exporter.config import Config
from threads_exporter.demo.simulator import DEMO_API_TOKEN
from threads_exporter.web import basicauth, tls, webconfig
from threads_exporter.web.server import ExporterHTTPServer
from threads_exporter.web.webconfig import WebConfig, WebConfigError, load_web_config

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")

# ---------------------------------------------------------------------------------------------
# A throwaway PKI: a CA, a server certificate for localhost, a client certificate from the CA
# and a self-signed "rogue" client certificate.


@dataclass
class Pki:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    other_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: Any) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _cert(subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool = False,
          sans: list[x509.GeneralName] | None = None,
          usage: x509.ObjectIdentifier | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                          False), critical=True)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test CA", ca_key, "test CA", ca_key, ca=True)
    server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server = _cert("localhost", server_key, "test CA", ca_key,
                   sans=[x509.DNSName("localhost"),
                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                   usage=x509.oid.ExtendedKeyUsageOID.SERVER_AUTH)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert("prometheus", client_key, "test CA", ca_key,
                   sans=[x509.DNSName("prometheus.monitoring.svc"),
                         x509.RFC822Name("ops@example.com"),
                         x509.UniformResourceIdentifier("spiffe://cluster/prometheus"),
                         x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
                         x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
                         x509.IPAddress(ipaddress.ip_address("::ffff:10.9.8.7"))],
                   usage=x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = _cert("rogue", rogue_key, "rogue", rogue_key,
                  sans=[x509.DNSName("prometheus.monitoring.svc")],
                  usage=x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH)
    p = Pki(d, d / "ca.pem", d / "server.pem", d / "server.key", d / "other.key",
            d / "client.pem", d / "client.key", d / "rogue.pem", d / "rogue.key")
    p.ca.write_bytes(ca.public_bytes(pem))
    p.server_cert.write_bytes(server.public_bytes(pem))
    _write_key(p.server_key, server_key)
    _write_key(p.other_key, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    p.client_cert.write_bytes(client.public_bytes(pem))
    _write_key(p.client_key, client_key)
    p.rogue_cert.write_bytes(rogue.public_bytes(pem))
    _write_key(p.rogue_key, rogue_key)
    (d / "garbage.pem").write_text("not a certificate\n")
    return p


HASH_PW = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
FILLER = "a" * 53
TLS = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"

# (name, file body, field a rejection must name or None when promtool accepts).
# Paths are relative: the toolkit resolves them against the web config's directory.
CASES: list[tuple[str, str, str | None]] = [
    ("empty", "", None),
    ("comment only", "# nothing\n", None),
    ("null sections", "tls_server_config:\nhttp_server_config:\nbasic_auth_users:\n", None),
    ("tls", TLS, None),
    ("tls absolute paths", "tls_server_config:\n  cert_file: {dir}/server.pem\n"
                           "  key_file: {dir}/server.key\n", None),
    ("tls all options", TLS + "  min_version: TLS12\n  max_version: TLS13\n"
     "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n"
     "  curve_preferences: [X25519, CurveP256]\n  prefer_server_cipher_suites: false\n", None),
    ("tls one curve", TLS + "  curve_preferences: [CurveP384]\n", None),
    ("tls 1.2 only", TLS + "  min_version: TLS12\n  max_version: TLS12\n", None),
    ("tls 1.3 only", TLS + "  min_version: TLS13\n", None),
    ("null versions: library default", TLS + "  min_version:\n  max_version:\n", None),
    ("tls empty auth type", TLS + "  client_auth_type: ''\n", None),
    ("verify if given", TLS + "  client_auth_type: VerifyClientCertIfGiven\n"
                              "  client_ca_file: ca.pem\n", None),
    ("verify", TLS + "  client_auth_type: RequireAndVerifyClientCert\n"
                     "  client_ca_file: ca.pem\n", None),
    ("verify, system roots", TLS + "  client_auth_type: RequireAndVerifyClientCert\n", None),
    ("verify, CA file without certs", TLS + "  client_auth_type: RequireAndVerifyClientCert\n"
                                            "  client_ca_file: garbage.pem\n", None),
    ("users", f"basic_auth_users:\n  alice: '{HASH_PW}'\n  12: '{HASH_PW}'\n", None),
    ("odd but Go-valid hash", f"basic_auth_users:\n  a: '$1x$+5${FILLER}'\n", None),
    ("hash without minor", f"basic_auth_users:\n  a: '$2$04${FILLER}a'\n", None),
    ("headers", "http_server_config:\n  http2: false\n  headers:\n"
                "    X-Frame-Options: sameorigin\n    X-Content-Type-Options: nosniff\n"
                "    Strict-Transport-Security: max-age=31536000\n"
                "    Content-Security-Policy: default-src 'self'\n"
                "    X-XSS-Protection: '1; mode=block'\n", None),
    ("yaml 1.1 bool y", "http_server_config:\n  http2: y\n", None),
    ("merge key", "http_server_config:\n  <<: {http2: false}\n", None),
    ("first document only", "---\nbasic_auth_users: {}\n---\nnonsense: 1\n", None),
    ("int header value", "http_server_config:\n  headers:\n"
                         "    Strict-Transport-Security: 1\n", None),
    # rejected by promtool: we must reject and name the field
    ("unknown top-level key", "basic_auth: {}\n", "basic_auth"),
    ("unknown tls key", TLS + "  certfile: x\n", "tls_server_config.certfile"),
    ("inline cert (newer toolkit)", "tls_server_config:\n  cert: x\n  key: y\n",
     "tls_server_config.cert"),
    ("rate_limit (newer toolkit)", "rate_limit:\n  burst: 1\n", "rate_limit"),
    ("top level list", "- a\n", "top level"),
    ("bad yaml", "http_server_config:\n\thttp2: true\n", "YAML"),
    ("duplicate key", "http_server_config:\n  http2: true\n  http2: false\n",
     "http_server_config.http2"),
    ("duplicate user", f"basic_auth_users:\n  a: '{HASH_PW}'\n  a: '{HASH_PW}'\n",
     "basic_auth_users.a"),
    ("users as list", "basic_auth_users: [a]\n", "basic_auth_users"),
    ("http2 quoted", "http_server_config:\n  http2: 'yes'\n", "http_server_config.http2"),
    ("http2 int", "http_server_config:\n  http2: 1\n", "http_server_config.http2"),
    ("cert missing", "tls_server_config:\n  key_file: server.key\n",
     "tls_server_config.cert_file"),
    ("key missing", "tls_server_config:\n  cert_file: server.pem\n",
     "tls_server_config.key_file"),
    ("auth type only", "tls_server_config:\n  client_auth_type: NoClientCert\n",
     "tls_server_config.cert_file"),
    ("cert file absent", "tls_server_config:\n  cert_file: nope.pem\n  key_file: server.key\n",
     "tls_server_config.cert_file"),
    ("key file absent", "tls_server_config:\n  cert_file: server.pem\n  key_file: nope.key\n",
     "tls_server_config.key_file"),
    ("key does not match", "tls_server_config:\n  cert_file: server.pem\n"
                           "  key_file: other.key\n", "key_file"),
    ("cert and key swapped", "tls_server_config:\n  cert_file: server.key\n"
                             "  key_file: server.pem\n", "cert_file"),
    ("cert is garbage", "tls_server_config:\n  cert_file: garbage.pem\n"
                        "  key_file: server.key\n", "cert_file"),
    ("bad min version", TLS + "  min_version: TLS14\n", "tls_server_config.min_version"),
    ("empty min version", TLS + "  min_version: ''\n", "tls_server_config.min_version"),
    ("int max version", TLS + "  max_version: 13\n", "tls_server_config.max_version"),
    ("insecure cipher", TLS + "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
     "tls_server_config.cipher_suites[0]"),
    ("cipher alias without _SHA256",
     TLS + "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, "
           "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305]\n", "tls_server_config.cipher_suites[1]"),
    ("ciphers as string", TLS + "  cipher_suites: TLS_AES_128_GCM_SHA256\n",
     "tls_server_config.cipher_suites"),
    ("unknown curve", TLS + "  curve_preferences: [X448]\n",
     "tls_server_config.curve_preferences[0]"),
    ("bad auth type", TLS + "  client_auth_type: requireandverifyclientcert\n",
     "tls_server_config.client_auth_type"),
    ("CA without auth type", TLS + "  client_ca_file: ca.pem\n",
     "tls_server_config.client_ca_file"),
    ("CA file absent", TLS + "  client_auth_type: RequireAndVerifyClientCert\n"
                             "  client_ca_file: nope.pem\n", "tls_server_config.client_ca_file"),
    ("plain password", "basic_auth_users:\n  alice: s3cret\n", "basic_auth_users.alice"),
    ("null hash", "basic_auth_users:\n  alice:\n", "basic_auth_users.alice"),
    ("cost 3", f"basic_auth_users:\n  alice: '$2b$03${FILLER}'\n", "basic_auth_users.alice"),
    ("cost 32", f"basic_auth_users:\n  alice: '$2b$32${FILLER}'\n", "basic_auth_users.alice"),
    ("hash version 3", f"basic_auth_users:\n  alice: '$3b$10${FILLER}'\n",
     "basic_auth_users.alice"),
    ("hash without $", f"basic_auth_users:\n  alice: 'x2b$10${FILLER}'\n",
     "basic_auth_users.alice"),
    ("header not allowed", "http_server_config:\n  headers:\n    X-Powered-By: me\n",
     "http_server_config.headers.X-Powered-By"),
    ("header name is case-sensitive", "http_server_config:\n  headers:\n"
                                      "    x-frame-options: deny\n",
     "http_server_config.headers.x-frame-options"),
    ("header value not allowed", "http_server_config:\n  headers:\n    X-Frame-Options: DENY\n",
     "http_server_config.headers.X-Frame-Options"),
    ("allowed SANs without client certs", TLS + "  client_allowed_sans: [a]\n",
     "tls_server_config.client_allowed_sans"),
    ("allowed SANs with optional certs", TLS + "  client_auth_type: VerifyClientCertIfGiven\n"
     "  client_ca_file: ca.pem\n  client_allowed_sans: [a]\n",
     "tls_server_config.client_allowed_sans"),
    ("duplicate key through an anchor", "http_server_config: &h\n  http2: true\n  http2: no\n"
     "other: *h\n", "http_server_config.http2"),
    ("int and string user are one key", f"basic_auth_users:\n  1: '{HASH_PW}'\n"
     f"  '1': '{HASH_PW}'\n", "basic_auth_users.1"),
]

# Files promtool accepts and the exporter refuses on purpose, with the field the refusal names
# and a word of its reason. Each is listed in deploy/README.md under the differences.
DEVIATIONS: list[tuple[str, str, str, str]] = [
    # exporter-toolkit: "If you want to enable client authentication, you need to use
    # RequireAndVerifyClientCert. Other values are insecure." These two accept any certificate.
    ("request", TLS + "  client_auth_type: RequestClientCert\n",
     "tls_server_config.client_auth_type", "without verifying"),
    ("require any", TLS + "  client_auth_type: RequireAnyClientCert\n",
     "tls_server_config.client_auth_type", "without verifying"),
    ("require alias", TLS + "  client_auth_type: RequireClientCert\n",
     "tls_server_config.client_auth_type", "without verifying"),
    # Accepted by promtool; on OpenSSL 3 at the default security level no TLS 1.0 or 1.1
    # handshake works, so such a server would start and then fail every such client.
    ("tls old versions", TLS + "  min_version: TLS10\n  max_version: TLS11\n",
     "tls_server_config.min_version", "cannot be served"),
    ("tls 1.0 and up", TLS + "  min_version: TLS10\n", "tls_server_config.min_version",
     "cannot be served"),
    ("tls 1.1 only", TLS + "  min_version: TLS11\n  max_version: TLS11\n",
     "tls_server_config.min_version", "cannot be served"),
    ("min above max", TLS + "  min_version: TLS13\n  max_version: TLS12\n",
     "tls_server_config.min_version", "above max_version"),
    ("ECDSA suites only, RSA certificate", TLS + "  min_version: TLS12\n  cipher_suites: "
     "[TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n", "tls_server_config.min_version",
     "no shared cipher"),
    # Go's net/http would write these and let the value start a header line of its own.
    ("CRLF in a header value", "http_server_config:\n  headers:\n"
     "    Content-Security-Policy: \"default-src 'self'\\r\\nSet-Cookie: a=b\"\n",
     "http_server_config.headers.Content-Security-Policy", "line break"),
    ("LF in a header value", "http_server_config:\n  headers:\n"
     "    Strict-Transport-Security: \"max-age=1\\nX-Evil: 1\"\n",
     "http_server_config.headers.Strict-Transport-Security", "line break"),
    ("CR in a header value", "http_server_config:\n  headers:\n"
     "    X-XSS-Protection: \"0\\rX: 1\"\n",
     "http_server_config.headers.X-XSS-Protection", "line break"),
    ("non-ASCII header value", "http_server_config:\n  headers:\n"
     "    Content-Security-Policy: \"default-src \u2018self\u2019\"\n",
     "http_server_config.headers.Content-Security-Policy", "printable ASCII"),
]

# Newer exporter-toolkit than Prometheus 2.42's: promtool 2.42 rejects the field, we accept it.
NEWER_THAN_PROMTOOL = [
    ("allowed SANs", TLS + "  client_auth_type: RequireAndVerifyClientCert\n"
                           "  client_ca_file: ca.pem\n  client_allowed_sans: [a, b]\n"),
]


def _write(pki: Pki, name: str, body: str) -> Path:
    path = pki.dir / ("case-" + "".join(c if c.isalnum() else "_" for c in name) + ".yml")
    path.write_text(body.replace("{dir}", str(pki.dir)))
    return path


def _promtool_accepts(path: Path) -> tuple[bool, str]:
    assert PROMTOOL
    r = subprocess.run([PROMTOOL, "check", "web-config", str(path)], capture_output=True,
                       text=True, timeout=30)
    return r.returncode == 0, r.stdout + r.stderr


@needs_promtool
@pytest.mark.parametrize(("name", "body", "field"), CASES, ids=[c[0] for c in CASES])
def test_same_verdict_as_promtool(pki: Pki, name: str, body: str, field: str | None):
    path = _write(pki, name, body)
    accepted, output = _promtool_accepts(path)
    # The table states what promtool says; if this fails, promtool changed, not us.
    assert accepted == (field is None), f"promtool: {output}"
    if field is None:
        load_web_config(str(path))
    else:
        with pytest.raises(WebConfigError) as info:
            load_web_config(str(path))
        assert field in str(info.value)


@needs_promtool
@pytest.mark.parametrize(("name", "body", "field", "reason"), DEVIATIONS,
                         ids=[d[0] for d in DEVIATIONS])
def test_deliberate_deviations_from_promtool(pki: Pki, name: str, body: str, field: str,
                                             reason: str):
    path = _write(pki, name, body)
    accepted, output = _promtool_accepts(path)
    assert accepted, f"promtool now rejects it too; move it to CASES: {output}"
    with pytest.raises(WebConfigError) as info:
        load_web_config(str(path))
    message = str(info.value)
    assert message.startswith(field) and reason in message, message
    assert "\r" not in message and "\n" not in message


@needs_promtool
@pytest.mark.parametrize(("name", "body"), NEWER_THAN_PROMTOOL)
def test_newer_toolkit_fields(pki: Pki, name: str, body: str):
    path = _write(pki, name, body)
    assert not _promtool_accepts(path)[0]
    assert load_web_config(str(path)).ssl_context is not None


def test_relative_paths_resolve_against_the_config_directory(pki: Pki, monkeypatch):
    path = _write(pki, "relative", TLS)
    monkeypatch.chdir("/")
    assert load_web_config(str(path)).ssl_context is not None


def test_missing_file_is_an_error(tmp_path: Path):
    with pytest.raises(WebConfigError, match="no such file"):
        load_web_config(str(tmp_path / "absent.yml"))


def test_plain_http_config(tmp_path: Path):
    path = tmp_path / "web.yml"
    path.write_text("http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    web = load_web_config(str(path))
    assert web.ssl_context is None
    assert web.headers == {"X-Frame-Options": "deny"}
    assert not web.auth_required
    assert web.authorized(None)


# ---------------------------------------------------------------------------------------------
# Basic auth.


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def users_config(tmp_path: Path) -> WebConfig:
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: '{HASH_PW}'\n  bob: '$1x$+5${FILLER}'\n")
    return load_web_config(str(path))


def test_basic_auth(users_config: WebConfig):
    web = users_config
    assert web.auth_required
    assert web.authorized(basic("alice", "s3cret"))
    assert web.authorized("basic " + basic("alice", "s3cret").split()[1])  # scheme is case-free
    assert not web.authorized(None)
    assert not web.authorized("")
    assert not web.authorized(basic("alice", "wrong"))
    assert not web.authorized(basic("alice", "s3cret "))
    assert not web.authorized(basic("mallory", "s3cret"))
    assert not web.authorized(basic("bob", "anything"))  # a hash Go accepts but cannot match
    assert not web.authorized(basic("alice", "x" * 100))  # longer than bcrypt's 72 bytes
    assert not web.authorized("Bearer s3cret")
    assert not web.authorized("Basic !!!notbase64")
    assert not web.authorized("Basic " + base64.b64encode(b"no-colon").decode())
    assert "s3cret" not in repr(web) and HASH_PW not in repr(web)


class CountingBcrypt:
    """bcrypt.checkpw stand-in: counts calls and in-flight checks, can hold checks until
    released, and does the real work otherwise."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, hold: bool = False) -> None:
        self.calls: list[tuple[bytes, bytes]] = []
        self.in_flight = self.most_in_flight = 0
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self._lock = threading.Lock()
        self._real = bcrypt.checkpw
        monkeypatch.setattr(basicauth.bcrypt, "checkpw", self)

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        with self._lock:
            self.calls.append((password, hashed))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self.release.wait(10)
            return self._real(password, hashed)
        finally:
            with self._lock:
                self.in_flight -= 1


def test_checks_are_cached_both_ways(users_config: WebConfig, monkeypatch):
    counter = CountingBcrypt(monkeypatch)
    for _ in range(5):
        assert users_config.authorized(basic("alice", "s3cret"))
    assert len(counter.calls) == 1
    for _ in range(3):  # a failure is remembered too, as exporter-toolkit does
        assert not users_config.authorized(basic("alice", "nope"))
    assert len(counter.calls) == 2
    for _ in range(3):  # an unknown user: the decoy check runs once, then is remembered
        assert not users_config.authorized(basic("mallory", "s3cret"))
    assert len(counter.calls) == 3
    assert users_config.authorized(basic("alice", "s3cret"))
    assert len(counter.calls) == 3


def test_wrong_credentials_cannot_evict_right_ones(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(basicauth, "FAILURES_MAX", 50)
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: '{HASH_PW}'\n")
    web = load_web_config(str(path))
    assert web.authorized(basic("alice", "s3cret"))
    counter = CountingBcrypt(monkeypatch)
    for i in range(200):  # four times what the failure cache holds
        assert not web.authorized(basic("alice", f"guess {i}"))
    assert len(counter.calls) == 200
    assert web.basic_auth is not None and len(web.basic_auth._failures) == 50
    assert web.authorized(basic("alice", "s3cret"))
    assert len(counter.calls) == 200  # still cached: no bcrypt work for the right password
    assert not web.authorized(basic("alice", "guess 199"))  # the newest failures are kept
    assert len(counter.calls) == 200


def test_a_cached_check_never_waits_behind_bcrypt(users_config: WebConfig, monkeypatch):
    assert users_config.authorized(basic("alice", "s3cret"))  # cached from now on
    counter = CountingBcrypt(monkeypatch, hold=True)
    attackers = [threading.Thread(target=users_config.authorized,
                                  args=(basic("alice", f"guess {i}"),)) for i in range(16)]
    for t in attackers:
        t.start()
    try:
        deadline = time.monotonic() + 5
        while counter.in_flight < basicauth.BCRYPT_SLOTS and time.monotonic() < deadline:
            time.sleep(0.01)
        # Every bcrypt slot is busy and the rest of the attackers queue for one: the cached
        # check must still answer at once (it used to wait for the one lock they hold).
        assert counter.in_flight == basicauth.BCRYPT_SLOTS
        start = time.perf_counter()
        for _ in range(100):
            assert users_config.authorized(basic("alice", "s3cret"))
        assert time.perf_counter() - start < 0.5
        assert counter.in_flight == basicauth.BCRYPT_SLOTS  # nothing finished meanwhile
    finally:
        counter.release.set()
        for t in attackers:
            t.join(10)
    assert counter.most_in_flight == basicauth.BCRYPT_SLOTS
    assert len(counter.calls) == 16


def test_bcrypt_work_is_bounded_in_concurrency(tmp_path: Path, monkeypatch):
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: '{HASH_PW}'\n")
    web = load_web_config(str(path))
    counter = CountingBcrypt(monkeypatch, hold=True)
    threads = [threading.Thread(target=web.authorized, args=(basic("alice", f"p{i}"),))
               for i in range(12)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while counter.in_flight < basicauth.BCRYPT_SLOTS and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # time for any thread the semaphore failed to stop to get in
    assert counter.in_flight == basicauth.BCRYPT_SLOTS <= 4
    counter.release.set()
    for t in threads:
        t.join(10)
    assert len(counter.calls) == 12 and counter.most_in_flight == basicauth.BCRYPT_SLOTS


def _cost(hashed: bytes) -> int:
    return int(hashed.split(b"$")[2])


def test_a_missing_user_costs_the_same_bcrypt_work(users_config: WebConfig, monkeypatch):
    counter = CountingBcrypt(monkeypatch)
    assert not users_config.authorized(basic("mallory", "s3cret"))
    assert not users_config.authorized(basic("alice", "wrong"))
    (_, decoy), (_, real) = counter.calls
    assert decoy != real and _cost(decoy) == _cost(real) == 4  # the users' cost, not a fixed 10
    # A hash Go accepts but Python's bcrypt cannot use, and a password over 72 bytes: refused
    # after the same work (one real bcrypt run), not at once.
    assert not users_config.authorized(basic("bob", "anything"))
    assert not users_config.authorized(basic("alice", "x" * 100))
    # Each: the unusable check raises at once, then the decoy's cost-4 run.
    assert [h for _, h in counter.calls[2:]] == [f"$1x$+5${FILLER}".encode(), decoy, real, decoy]


def test_decoy_cost_follows_the_users():
    def hashed(cost: int) -> bytes:
        return b"$2b$%02d$" % cost + b"a" * 53

    assert _cost(basicauth.decoy_hash([hashed(12), hashed(12), hashed(5)])) == 12
    assert _cost(basicauth.decoy_hash([hashed(6), hashed(9)])) == 9  # a tie: the dearer one
    assert _cost(basicauth.decoy_hash([b"$1x$+5$" + b"a" * 53])) == 10  # none usable
    decoy = basicauth.decoy_hash([hashed(4)])
    assert not bcrypt.checkpw(b"", decoy) and not bcrypt.checkpw(b"decoy password", decoy)


def test_a_missing_user_takes_as_long_as_a_wrong_password(tmp_path: Path):
    cost8 = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=8)).decode()
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: '{cost8}'\n")
    web = load_web_config(str(path))

    def median_seconds(user: str) -> float:
        times = []
        for i in range(7):  # a new password each time: no cache hit
            start = time.perf_counter()
            assert not web.authorized(basic(user, f"wrong {i}"))
            times.append(time.perf_counter() - start)
        return sorted(times)[3]

    ratio = median_seconds("mallory") / median_seconds("alice")
    # Before: a fixed cost-10 decoy made a missing user 4x slower than a cost-8 user.
    assert 0.5 < ratio < 2, ratio


def test_cached_scrapes_stay_fast_while_64_clients_guess_passwords(tmp_path: Path):
    cost10 = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=10)).decode()
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  prometheus: '{cost10}'\n")
    server = _ExporterServer(load_web_config(str(path)))
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    stop = threading.Event()

    def guess(n: int) -> None:
        with httpx.Client(timeout=30) as c:
            i = 0
            while not stop.is_set():
                c.get(url, auth=("prometheus", f"guess {n} {i}"))
                i += 1

    attackers = [threading.Thread(target=guess, args=(n,), daemon=True) for n in range(64)]
    try:
        with httpx.Client(timeout=30) as c:
            assert c.get(url, auth=("prometheus", "s3cret")).status_code == 200  # now cached
            for t in attackers:
                t.start()
            time.sleep(0.5)
            times = []
            for _ in range(20):
                start = time.perf_counter()
                assert c.get(url, auth=("prometheus", "s3cret")).status_code == 200
                times.append(time.perf_counter() - start)
    finally:
        stop.set()
        for t in attackers:
            t.join(30)
        server.shutdown()
    times.sort()
    # Before: 1.2-1.9 s each, waiting for the lock held through every guess's bcrypt.
    assert times[len(times) // 2] < 0.1 and times[-1] < 0.5, times


# ---------------------------------------------------------------------------------------------
# Real TLS handshakes against a small server that uses WebConfig like the exporter does.


class _ExporterServer:
    """The exporter's own HTTP server (an exporter with no accounts) with a web config: TLS,
    basic auth and headers checked where they are served, not in a stand-in."""

    def __init__(self, web: WebConfig):
        self.exporter = Exporter(Config())
        self.http = ExporterHTTPServer(("127.0.0.1", 0), self.exporter, web)
        self.server_address = self.http.server_address

    def shutdown(self) -> None:
        self.http.shutdown()
        self.exporter.close()


@pytest.fixture
def serve(pki: Pki) -> Iterator[Any]:
    servers: list[_ExporterServer] = []

    def start(body: str) -> str:
        web = load_web_config(str(_write(pki, "served", body)))
        server = _ExporterServer(web)
        servers.append(server)
        return f"127.0.0.1:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()


def client_ctx(pki: Pki, cert: Path | None = None, key: Path | None = None,
               max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert and key:
        ctx.load_cert_chain(str(cert), str(key))
    if max_version:
        ctx.maximum_version = max_version
    return ctx


def get(url: str, verify: ssl.SSLContext | bool = True, **kw: Any) -> httpx.Response:
    return httpx.get(url, verify=verify, timeout=5, **kw)


def test_https_with_basic_auth_and_headers(pki: Pki, serve):
    addr = serve(TLS + f"basic_auth_users:\n  alice: '{HASH_PW}'\n"
                       "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
                       "    Strict-Transport-Security: max-age=60\n")
    ctx = client_ctx(pki)
    r = get(f"https://{addr}/-/healthy", ctx, auth=("alice", "s3cret"))
    assert r.status_code == 200 and r.text == "Healthy\n"
    assert r.headers["X-Frame-Options"] == "deny"
    assert r.headers["Strict-Transport-Security"] == "max-age=60"
    assert get(f"https://localhost:{addr.split(':')[1]}/", ctx,
               auth=("alice", "s3cret")).status_code == 200
    wrong = get(f"https://{addr}/-/healthy", ctx, auth=("alice", "wrong"))
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Basic")
    assert get(f"https://{addr}/-/healthy", ctx).status_code == 401
    assert get(f"https://{addr}/-/healthy", ctx, auth=("mallory", "s3cret")).status_code == 401


def test_plain_http_to_the_tls_port_fails(pki: Pki, serve):
    addr = serve(TLS)
    with pytest.raises(httpx.HTTPError):
        get(f"http://{addr}/-/healthy")
    assert get(f"https://{addr}/-/healthy", client_ctx(pki)).status_code == 200


def test_server_certificate_is_checked_by_clients(pki: Pki, serve):
    addr = serve(TLS)
    with pytest.raises(httpx.ConnectError):
        get(f"https://{addr}/-/healthy", ssl.create_default_context())  # CA unknown to the client


def test_min_version_is_enforced(pki: Pki, serve):
    addr = serve(TLS + "  min_version: TLS13\n")
    assert get(f"https://{addr}/-/healthy", client_ctx(pki)).status_code == 200
    with pytest.raises(httpx.ConnectError):
        get(f"https://{addr}/-/healthy", client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2))


def test_max_version_is_enforced(pki: Pki, serve):
    addr = serve(TLS + "  max_version: TLS12\n"
                       "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n")
    host, port = addr.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            client_ctx(pki).wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() == "TLSv1.2"
        assert tls.cipher()[0] == "ECDHE-RSA-AES256-GCM-SHA384"
    # A client that insists on another cipher finds none in common.
    ctx = client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    with pytest.raises(httpx.ConnectError):
        get(f"https://{addr}/-/healthy", ctx)


def test_require_and_verify_client_cert(pki: Pki, serve):
    addr = serve(TLS + "  client_auth_type: RequireAndVerifyClientCert\n"
                       "  client_ca_file: ca.pem\n")
    url = f"https://{addr}/-/healthy"
    assert get(url, client_ctx(pki, pki.client_cert, pki.client_key)).status_code == 200
    with pytest.raises(httpx.HTTPError):
        get(url, client_ctx(pki))  # no client certificate
    with pytest.raises(httpx.HTTPError):
        get(url, client_ctx(pki, pki.rogue_cert, pki.rogue_key))  # not from the CA


def test_verify_client_cert_if_given(pki: Pki, serve):
    addr = serve(TLS + "  client_auth_type: VerifyClientCertIfGiven\n"
                       "  client_ca_file: ca.pem\n")
    url = f"https://{addr}/-/healthy"
    assert get(url, client_ctx(pki)).status_code == 200
    assert get(url, client_ctx(pki, pki.client_cert, pki.client_key)).status_code == 200
    with pytest.raises(httpx.HTTPError):
        get(url, client_ctx(pki, pki.rogue_cert, pki.rogue_key))


@pytest.mark.parametrize("mode", ["RequestClientCert", "RequireAnyClientCert",
                                  "RequireClientCert"])
def test_client_cert_modes_that_verify_nothing_are_refused(pki: Pki, mode: str):
    path = _write(pki, mode, TLS + f"  client_auth_type: {mode}\n  client_ca_file: ca.pem\n")
    with pytest.raises(WebConfigError) as info:
        load_web_config(str(path))
    assert str(info.value) == (
        f"tls_server_config.client_auth_type: {mode} is refused: it accepts any client "
        "certificate without verifying it, so anyone can make one (exporter-toolkit documents "
        "every value but RequireAndVerifyClientCert as insecure); use "
        "RequireAndVerifyClientCert with client_ca_file")


def test_no_ctypes_and_no_hand_written_certificate_parser():
    web = Path(webconfig.__file__).parent
    source = "\n".join(p.read_text() for p in web.glob("*.py"))
    for banned in ("ctypes", "_der_items", "_cert_sans", "binary_form"):
        assert banned not in source, banned


def test_client_ca_without_certificates_rejects_every_client(pki: Pki, serve):
    addr = serve(TLS + "  client_auth_type: RequireAndVerifyClientCert\n"
                       "  client_ca_file: garbage.pem\n")
    with pytest.raises(httpx.HTTPError):
        get(f"https://{addr}/-/healthy", client_ctx(pki, pki.client_cert, pki.client_key))


@pytest.mark.parametrize("san", ["prometheus.monitoring.svc", "ops@example.com", "10.1.2.3",
                                 "spiffe://cluster/prometheus", "2001:db8::1", "10.9.8.7"])
def test_client_allowed_sans_match(pki: Pki, serve, san: str):
    addr = serve(TLS + "  client_auth_type: RequireAndVerifyClientCert\n"
                       f"  client_ca_file: ca.pem\n  client_allowed_sans: [other, '{san}']\n")
    assert get(f"https://{addr}/-/healthy",
               client_ctx(pki, pki.client_cert, pki.client_key)).status_code == 200


def test_client_allowed_sans_mismatch(pki: Pki, serve):
    addr = serve(TLS + "  client_auth_type: RequireAndVerifyClientCert\n"
                       "  client_ca_file: ca.pem\n  client_allowed_sans: [grafana.svc]\n")
    with pytest.raises(httpx.HTTPError):
        get(f"https://{addr}/-/healthy", client_ctx(pki, pki.client_cert, pki.client_key))


@pytest.mark.parametrize("san", ["2001:DB8:0:0:0:0:0:1", "::ffff:10.9.8.7", "prometheus"])
def test_client_allowed_sans_compare_as_go_writes_names(pki: Pki, serve, san: str):
    # Go writes IPv6 in its short form and IPv4-mapped addresses as IPv4; the subject CN is
    # not a SAN. OpenSSL's own spellings must not match where Go's would not.
    addr = serve(TLS + "  client_auth_type: RequireAndVerifyClientCert\n"
                       f"  client_ca_file: ca.pem\n  client_allowed_sans: ['{san}']\n")
    with pytest.raises(httpx.HTTPError):
        get(f"https://{addr}/-/healthy", client_ctx(pki, pki.client_cert, pki.client_key))


def test_client_allowed_sans_need_a_verified_certificate(pki: Pki, serve):
    # The rogue certificate carries an allowed name, but no CA we trust signed it.
    addr = serve(TLS + "  client_auth_type: RequireAndVerifyClientCert\n"
                       "  client_ca_file: ca.pem\n"
                       "  client_allowed_sans: [prometheus.monitoring.svc]\n")
    url = f"https://{addr}/-/healthy"
    with pytest.raises(httpx.HTTPError):
        get(url, client_ctx(pki, pki.rogue_cert, pki.rogue_key))
    with pytest.raises(httpx.HTTPError):
        get(url, client_ctx(pki))
    assert get(url, client_ctx(pki, pki.client_cert, pki.client_key)).status_code == 200
    # exporter-toolkit allows SANs with RequireAnyClientCert; we refuse that mode outright.
    path = _write(pki, "any-with-sans", TLS + "  client_auth_type: RequireAnyClientCert\n"
                  "  client_allowed_sans: [prometheus.monitoring.svc]\n")
    with pytest.raises(WebConfigError, match=r"^tls_server_config\.client_auth_type: "):
        load_web_config(str(path))


def test_a_failed_san_check_ends_the_connection_before_any_request(pki: Pki):
    web = load_web_config(str(_write(pki, "sans-raw", TLS + "  client_auth_type: "
                                     "RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
                                     "  client_allowed_sans: [grafana.svc]\n")))
    assert web.ssl_context is not None
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        result: list[BaseException | None] = []

        def accept() -> None:
            conn, _ = listener.accept()
            try:
                web.ssl_context.wrap_socket(conn, server_side=True).close()  # type: ignore[union-attr]
                result.append(None)
            except ssl.SSLError as e:
                result.append(e)
            finally:
                conn.close()

        t = threading.Thread(target=accept)
        t.start()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            ctx = client_ctx(pki, pki.client_cert, pki.client_key)
            try:
                with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    assert tls.recv(100) == b""
            except (ssl.SSLError, OSError):
                pass
        t.join(10)
    assert isinstance(result[0], ssl.SSLError)
    assert "client_allowed_sans" in str(result[0])


def test_peer_sans_as_go_writes_them():
    cert = {"subject": ((("commonName", "x"),),),
            "subjectAltName": (
                ("DNS", "a.svc"), ("email", "ops@example.com"), ("IP Address", "10.1.2.3"),
                ("IP Address", "2001:DB8:0:0:0:0:0:1\n"),  # as CPython writes IPv6
                ("IP Address", "0:0:0:0:0:FFFF:A09:807"),  # ::ffff:10.9.8.7
                ("URI", "spiffe://c/p"), ("DirName", ((("commonName", "d"),),)),
                ("othername", "<unsupported>"), ("IP Address", "<invalid>"))}
    assert tls.peer_sans(cert) == ["a.svc", "ops@example.com", "10.1.2.3", "2001:db8::1",
                                   "10.9.8.7", "spiffe://c/p"]
    assert tls.peer_sans({}) == []


# ---------------------------------------------------------------------------------------------
# TLS versions: a version OpenSSL here cannot serve is refused, decided by a handshake.


def _pinned_client(pki: Pki, version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = client_ctx(pki)
    ctx.set_ciphers("ALL:@SECLEVEL=0")  # the client is never what fails
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def _real_handshake(pki: Pki, server_ctx: ssl.SSLContext, version: ssl.TLSVersion) -> str | None:
    """The version a real socket handshake agrees on, or None when it fails."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def accept() -> None:
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), server_ctx.wrap_socket(conn, server_side=True):
                pass
            conn.close()

        t = threading.Thread(target=accept)
        t.start()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    _pinned_client(pki, version).wrap_socket(raw, server_hostname="localhost") as c:
                return c.version()
        except (ssl.SSLError, OSError):
            return None
        finally:
            t.join(10)


VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
            "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


@pytest.mark.parametrize("name", list(VERSIONS))
def test_a_version_is_accepted_exactly_when_a_real_handshake_works(pki: Pki, name: str):
    version = VERSIONS[name]
    # What the old loader built for this file: the same certificate, this version only.
    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    plain.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        plain.minimum_version = plain.maximum_version = version
    works = _real_handshake(pki, plain, version) is not None
    path = _write(pki, f"only-{name}", TLS + f"  min_version: {name}\n  max_version: {name}\n")
    if works:
        web = load_web_config(str(path))
        assert web.ssl_context is not None
        assert _real_handshake(pki, web.ssl_context, version) is not None
    else:
        with pytest.raises(WebConfigError) as info:
            load_web_config(str(path))
        assert str(info.value).startswith(f"tls_server_config.min_version: {name} cannot be "
                                          "served here: a TLS 1.")
        assert ssl.OPENSSL_VERSION in str(info.value)
        assert str(info.value).endswith("; use TLS12 or later")
    if name in ("TLS12", "TLS13"):
        assert works  # what every supported OpenSSL serves


def test_min_version_tls10_is_refused_unless_tls10_works(pki: Pki):
    # The case from the issue: `min_version: TLS10` used to start, and then no TLS 1.0 client
    # could connect (OpenSSL 3 at its default security level). Where OpenSSL does serve
    # TLS 1.0, the file is accepted.
    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    plain.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        plain.minimum_version = ssl.TLSVersion.TLSv1
    assert _real_handshake(pki, plain, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    path = _write(pki, "min-tls10", TLS + "  min_version: TLS10\n")
    if _real_handshake(pki, plain, ssl.TLSVersion.TLSv1) is not None:
        assert load_web_config(str(path)).ssl_context is not None
        return
    with pytest.raises(WebConfigError, match=r"^tls_server_config\.min_version: TLS10 cannot"):
        load_web_config(str(path))


def test_trying_versions_does_not_need_a_client_certificate(pki: Pki):
    web = load_web_config(str(_write(pki, "verify-tls12", TLS + "  min_version: TLS12\n"
                                     "  client_auth_type: RequireAndVerifyClientCert\n"
                                     "  client_ca_file: ca.pem\n")))
    assert web.ssl_context is not None and web.ssl_context.verify_mode == ssl.CERT_REQUIRED


# ---------------------------------------------------------------------------------------------
# Headers and secrets in error messages.


def test_header_with_a_line_break_in_its_name_is_refused(tmp_path: Path):
    path = tmp_path / "web.yml"
    path.write_text('http_server_config:\n  headers:\n    "X-Frame-Options\\r\\nSet-Cookie":'
                    " deny\n")
    with pytest.raises(WebConfigError) as info:
        load_web_config(str(path))
    message = str(info.value)
    assert message.startswith("http_server_config.headers.") and "line break" in message
    assert "\r" not in message and "\n" not in message and "Set-Cookie" not in message


def test_header_values_that_are_sent_are_clean(pki: Pki, serve):
    addr = serve("http_server_config:\n  headers:\n"
                 "    Content-Security-Policy: \"default-src 'self'; frame-ancestors\tnone\"\n")
    r = get(f"http://{addr}/-/healthy")
    assert r.headers["Content-Security-Policy"] == "default-src 'self'; frame-ancestors\tnone"


HASH_SECRET = bcrypt.hashpw(b"correct horse", bcrypt.gensalt(rounds=4)).decode()
PEM_KEY_TEXT = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"


@pytest.mark.parametrize("body", [
    f"basic_auth_users: {{alice:{HASH_SECRET}}}\n",  # no space after the colon: one long key
    f"basic_auth_users:\n  alice: '{HASH_SECRET}'\n  alice: '{HASH_SECRET}'\n",
    f"basic_auth_users:\n  alice: {HASH_SECRET}\n\tbob: x\n",  # a tab: not YAML
    f"basic_auth_users:\n  alice: \"{HASH_SECRET}\\q\"\n",  # a bad escape on the hash's line
    f"basic_auth_users:\n  alice: *{HASH_SECRET[7:]}\n",  # an undefined alias
    f"http_server_config:\n  http2: '{HASH_SECRET}'\n",  # a hash where a boolean belongs
    f"http_server_config:\n  headers:\n    X-Frame-Options: '{HASH_SECRET}'\n",
    f"{HASH_SECRET[7:]}: 1\n",  # an unknown top-level field
    f"tls_server_config:\n  cert_file: server.pem\n  key_file: {json.dumps(PEM_KEY_TEXT)}\n",
    f"tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
    f"  min_version: '{HASH_SECRET}'\n",
    f"tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
    f"  client_auth_type: '{HASH_SECRET}'\n",
], ids=["flow key", "duplicate", "tab", "escape", "alias", "http2", "header", "top key",
        "PEM as path", "min_version", "client_auth_type"])
def test_web_config_errors_never_print_secret_material(pki: Pki, body: str):
    with pytest.raises(WebConfigError) as info:
        load_web_config(str(_write(pki, "secret", body)))
    message = str(info.value)
    for secret in (HASH_SECRET[7:29], HASH_SECRET[29:], "MIIEvQIBADANBg", "correct horse"):
        assert secret not in message, message


def test_encrypted_key_is_refused_without_asking_for_a_password(pki: Pki, tmp_path: Path):
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"key password")))
    path = tmp_path / "web.yml"
    path.write_text(f"tls_server_config:\n  cert_file: {pki.server_cert}\n"
                    f"  key_file: {encrypted}\n")
    with pytest.raises(WebConfigError, match="encrypted private keys are not supported") as info:
        load_web_config(str(path))
    assert "key password" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# The real exporter.


def test_exporter_serves_https_with_basic_auth(pki: Pki):
    path = _write(pki, "exporter", TLS + f"basic_auth_users:\n  prometheus: '{HASH_PW}'\n"
                                         "http_server_config:\n  headers:\n"
                                         "    X-Content-Type-Options: nosniff\n")
    with exporter("--demo", "--web.config.file", str(path), ready=False,
                  cwd=pki.dir) as (proc, base):
        https = base.replace("http://", "https://")
        ctx = client_ctx(pki)
        try:
            wait_http(https + "/-/healthy", timeout=30, verify=ctx, auth=("prometheus", "s3cret"))
        except TimeoutError:
            pytest.fail(f"exporter did not serve HTTPS:\n{proc.output()}")
        r = get(https + "/metrics", ctx, auth=("prometheus", "s3cret"))
        assert r.status_code == 200
        assert "threads_exporter_build_info" in r.text
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert get(https + "/metrics", ctx).status_code == 401
        assert get(https + "/metrics", ctx, auth=("prometheus", "wrong")).status_code == 401
        with pytest.raises(httpx.HTTPError):
            get(base + "/metrics", auth=("prometheus", "s3cret"))
        # The registration API answers its own bearer token; basic auth cannot ride along.
        bearer = {"Authorization": f"Bearer {DEMO_API_TOKEN}"}
        listing = httpx.get(https + "/api/v1/containers", headers=bearer, verify=ctx)
        assert listing.status_code == 200, listing.text
        wrong = httpx.get(https + "/api/v1/containers", verify=ctx,
                          headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert get(https + "/api/v1/containers", ctx).status_code == 401


@needs_promtool
@pytest.mark.parametrize(("name", "body", "field"), [
    c for c in CASES if c[0] in ("cost 3", "key does not match", "unknown tls key",
                                 "CA without auth type", "header not allowed")
])
def test_exporter_refuses_a_promtool_rejected_config(pki: Pki, name: str, body: str, field: str):
    path = _write(pki, name, body)
    assert not _promtool_accepts(path)[0]
    r = subprocess.run([*exporter_cmd("--demo", "--web.listen-address", "127.0.0.1:0",
                                      "--web.config.file", str(path))],
                       capture_output=True, text=True, timeout=60, cwd=pki.dir)
    assert r.returncode == 1, r.stdout + r.stderr
    assert field in r.stderr and str(path) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(("name", "body", "field", "reason"), [
    d for d in DEVIATIONS if d[0] in ("require any", "tls 1.0 and up", "CRLF in a header value")
])
def test_exporter_refuses_a_deliberately_refused_config(pki: Pki, name: str, body: str,
                                                        field: str, reason: str):
    path = _write(pki, name, body)
    r = subprocess.run([*exporter_cmd("--demo", "--web.listen-address", "127.0.0.1:0",
                                      "--web.config.file", str(path))],
                       capture_output=True, text=True, timeout=60, cwd=pki.dir)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{path}: {field}" in r.stderr and reason in r.stderr, r.stderr
    assert "Traceback" not in r.stderr

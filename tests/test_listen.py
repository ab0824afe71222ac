"""`--web.listen-address` binds as the Go exporters do: `:port` on IPv4 and IPv6 alike."""

from __future__ import annotations

import socket

import httpx
import pytest

from procs import Proc, exporter_cmd, free_port, wait_http
from threads_exporter.web.server import parse_listen_address


@pytest.mark.parametrize(("value", "expected"), [
    (":10330", ("", 10330)),
    ("127.0.0.1:9", ("127.0.0.1", 9)),
    ("[::1]:8080", ("::1", 8080)),
    ("localhost:0", ("localhost", 0)),
])
def test_listen_addresses_parse(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(value) == expected


@pytest.mark.parametrize("value", ["10330", "host:", ":99999", "host:port", ""])
def test_bad_listen_addresses_name_the_flag(value: str) -> None:
    with pytest.raises(ValueError, match=r"--web\.listen-address"):
        parse_listen_address(value)


def _loopback_v6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not socket.has_dualstack_ipv6() or not _loopback_v6(),
                    reason="this host has no IPv6")
def test_port_only_listens_on_ipv4_and_ipv6() -> None:
    port = free_port()
    proc = Proc(exporter_cmd("--demo", "--web.listen-address", f":{port}"))
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=30)
        for host in ("127.0.0.1", "[::1]"):
            r = httpx.get(f"http://{host}:{port}/-/healthy", timeout=5)
            assert r.status_code == 200, host
    finally:
        assert proc.stop() == 0, proc.output()

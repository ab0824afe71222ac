"""The simulator over HTTP: a real server on loopback that `--demo`, the tests and the
benchmark call. Run on its own: ``python -m threads_exporter.demo.server --listen HOST:PORT``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from threads_exporter.demo.simulator import (
    SimAccount,
    Simulator,
    demo_accounts,
    demo_simulator,
    error_body,
)


class _Handler(BaseHTTPRequestHandler):
    server: SimulatorServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle on, a keep-alive client's delayed ACK
    # would add ~40 ms to every answer after the first few.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # request lines carry tokens; the simulator keeps quiet

    def do_GET(self) -> None:
        sim = self.server.sim
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        account = sim.accounts.get(query.get("access_token", ""))
        if sim.latency:
            time.sleep(sim.latency)
        fault = account.fault if account is not None else None
        if account is not None and fault is not None and "threads_publishing_limit" in url.path:
            self._fault(account, url.path, query)
            return
        status, payload = sim.handle(url.path, query)
        self._send(status, json.dumps(payload).encode())

    def do_POST(self) -> None:
        sim = self.server.sim
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        # Parameters may come in the query (as in Meta's examples) or as a form body.
        params = {k: v[-1] for k, v in parse_qs(form).items()}
        params.update({k: v[-1] for k, v in parse_qs(url.query).items()})
        if sim.latency:
            time.sleep(sim.latency)
        status, payload = sim.handle_post(url.path, params)
        self._send(status, json.dumps(payload).encode())

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _fault(self, account: SimAccount, path: str, query: dict[str, str]) -> None:
        self.server.sim.count("publishing_limit")
        fault = account.fault
        if fault == "throttled":
            self._send(400, json.dumps(error_body(
                "(#4) Application request limit reached", 4, transient=True)).encode())
        elif fault == "permission":
            self._send(500, json.dumps(error_body(
                "(#10) Application does not have permission for this action", 10)).encode())
        elif fault == "server_error":
            self._send(500, json.dumps(error_body(
                "An unexpected error has occurred. Please retry your request later.", 2,
                transient=True)).encode())
        elif fault in ("html_502", "html_503"):
            code = int(fault[-3:])
            self._send(code, f"<html><body><h1>{code} {HTTPStatus(code).phrase}</h1>"
                             "</body></html>".encode(), "text/html")
        elif fault == "truncated":
            self._send(200, b'{"data":[{"quota_usage":12,"config":{"quota_to')
        elif fault == "not_json":
            self._send(200, b"OK", "text/plain")
        elif fault == "empty_data":
            self._send(200, b'{"data":[]}')
        elif fault == "wrong_shape":
            self._send(200, json.dumps({"data": [{
                "quota_usage": "12", "config": None, "reply_quota_usage": -4,
                "reply_config": {"quota_total": 10**30, "quota_duration": 86400},
                "unexpected": True}]}).encode())
        elif fault == "slow":
            time.sleep(account.slow_seconds)
            status, payload = self.server.sim.handle(path, query)
            self._send(status, json.dumps(payload).encode())
        elif fault == "huge":
            chunk = b'{"data":[{"quota_usage":1,"padding":"' + b"x" * (8 << 20) + b'"}]}'
            self._send(200, chunk)
        elif fault == "reset":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"data":[{"quota_us')
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)


class SimulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, sim: Simulator, address: tuple[str, int] = ("127.0.0.1", 0)):
        self.sim = sim
        super().__init__(address, _Handler)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SimulatorServer:
        threading.Thread(target=self.serve_forever, name="simulator", daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def serve(sim: Simulator, listen: str, *notes: str) -> int:
    """Run a simulator in the foreground until interrupted (the simulator's own command)."""
    host, _, port = listen.rpartition(":")
    server = SimulatorServer(sim, (host or "127.0.0.1", int(port)))
    print(f"Threads API simulator on {server.base_url}", *notes, sep="\n", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Threads API simulator with demo accounts")
    parser.add_argument("--listen", default="127.0.0.1:10331", help="host:port to listen on")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds added to every answer")
    args = parser.parse_args(argv)
    return serve(demo_simulator(args.latency), args.listen, "demo tokens:",
                 *(f"  {name}: {account.token}" for name, account in demo_accounts()))


if __name__ == "__main__":
    raise SystemExit(main())

"""A Threads API double for container tests, independent of threads_exporter.simulator.

Each container id answers a script: the n-th poll gets the n-th answer, the last one repeats.
Every request is logged with its arrival time, so tests can check pacing and that nothing
reached the upstream at all. Also helpers to write configs and read metrics.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from prometheus_client.parser import text_string_to_metric_families

TOKEN = "double-token-1"
API_TOKEN = "api-token-for-tests"


def answer(status: str, error_message: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status}
    if error_message is not None:
        body["error_message"] = error_message
    return body


class _Handler(BaseHTTPRequestHandler):
    server: ContainerDouble
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        double = self.server
        with double.lock:
            double.requests.append((time.time(), url.path))
        if double.latency:
            time.sleep(double.latency)
        if query.get("access_token") != [TOKEN]:
            self.reply(400, {"error": {"message": "Invalid OAuth access token", "code": 190}})
        elif url.path.endswith("/threads_publishing_limit"):
            self.reply(200, {"data": [{"quota_usage": 7, "config": {
                "quota_total": 250, "quota_duration": 86400}}]})
        elif url.path.endswith("/debug_token"):
            self.reply(200, {"data": {"expires_at": 0, "is_valid": True}})
        else:
            cid = url.path.rsplit("/", 1)[-1]
            script = double.scripts.get(cid)
            if script is None:
                self.reply(400, {"error": {"message": "Unsupported get request", "code": 100,
                                           "error_subcode": 33}})
                return
            with double.lock:
                n = double.served[cid] = double.served.get(cid, 0) + 1
            self.reply(200, {**script[min(n, len(script)) - 1], "id": cid})

    def reply(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class ContainerDouble(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, scripts: dict[str, list[dict[str, Any]]], latency: float = 0.0):
        self.scripts = scripts
        self.latency = latency
        self.lock = threading.Lock()
        self.requests: list[tuple[float, str]] = []
        self.served: dict[str, int] = {}
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def polls(self, cid: str) -> list[float]:
        """Arrival times of the polls of one container."""
        with self.lock:
            return [t for t, path in self.requests if path.rsplit("/", 1)[-1] == cid]

    def container_requests(self) -> list[str]:
        with self.lock:
            return [p for _, p in self.requests
                    if not p.endswith(("/threads_publishing_limit", "/debug_token"))]

    def __enter__(self) -> ContainerDouble:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def write_config(path: Path, base_url: str, state_path: Path, **containers: Any) -> Path:
    config = {
        "api": {"base_url": base_url, "timeout_seconds": 2},
        "accounts": [{"name": "brand", "access_token": TOKEN, "quotas": ["posts"]}],
        "containers": {"state_path": str(state_path), "api_token": API_TOKEN,
                       "poll_interval_seconds": 1, "finished_poll_interval_seconds": 1,
                       "stuck_poll_interval_seconds": 1, **containers},
    }
    path.write_text(yaml.safe_dump(config))
    return path


Labels = tuple[tuple[str, str], ...]


def samples(text: str) -> dict[tuple[str, Labels], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(found: dict[tuple[str, Labels], float], name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def container_series(found: dict[tuple[str, Labels], float]) -> dict[tuple[str, Labels], float]:
    """The container counters and gauges that must survive a restart."""
    return {k: v for k, v in found.items()
            if k[0].startswith(("threads_container", "threads_exporter_container"))
            and k[0] != "threads_containers_poll_backlog"}

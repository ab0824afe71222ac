"""A scripted Threads Graph API double, independent of threads_exporter.simulator, plus the
helpers the fault, abuse, lifecycle and secrets tests share (config files, metric and log
parsing).

Each access token is given a behaviour for `threads_publishing_limit`; `debug_token` always
answers. The double counts the calls it sees per token, so a test can check the exporter's own
accounting against what the upstream actually received.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from prometheus_client.parser import text_string_to_metric_families

DAY = 86400
TOTALS = {"quota": 250, "reply_quota": 1000, "delete_quota": 100, "location_search_quota": 500}
# usage field -> (config field, contract quota label)
GROUPS = {
    "quota_usage": ("config", "posts"),
    "reply_quota_usage": ("reply_config", "replies"),
    "delete_quota_usage": ("delete_config", "deletes"),
    "location_search_quota_usage": ("location_search_config", "location_searches"),
}

Behaviour = Callable[["GraphHandler", list[str]], None]


@dataclass
class Stats:
    calls: int = 0
    bytes_sent: int = 0


def healthy_row(base: int) -> dict[str, Any]:
    """A full publishing-limit row whose usages are base+1..base+4, distinct per account."""
    row: dict[str, Any] = {}
    for i, (usage, (config, _)) in enumerate(GROUPS.items(), start=1):
        row[usage] = base + i
        row[config] = {"quota_total": TOTALS[usage.removesuffix("_usage")],
                       "quota_duration": DAY}
    return row


def expected_quotas(base: int) -> dict[str, float]:
    return {label: float(base + i) for i, (_, label) in enumerate(GROUPS.values(), start=1)}


class GraphHandler(BaseHTTPRequestHandler):
    server: GraphDouble
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        token = self.token = query.get("access_token", "")
        if url.path.endswith("/debug_token"):
            self.json(200, {"data": {"expires_at": int(time.time()) + 30 * DAY,
                                     "is_valid": True}})
            return
        behaviour = self.server.behaviours.get(token)
        if behaviour is None or not url.path.endswith("/threads_publishing_limit"):
            self.json(400, graph_error_body(190, "Invalid OAuth access token"))
            return
        self.server.stats_for(token).calls += 1
        behaviour(self, query.get("fields", "").split(","))

    # --- answers, for behaviours ---

    def raw(self, status: int, body: bytes, content_type: str = "application/json",
            length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)
        self.server.stats_for(self.token).bytes_sent += len(body)

    def json(self, status: int, payload: Any) -> None:
        self.raw(status, json.dumps(payload).encode())


class GraphDouble(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, behaviours: dict[str, Behaviour]):
        self.behaviours = behaviours
        self.stats: dict[str, Stats] = {}
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), GraphHandler)

    def stats_for(self, token: str) -> Stats:
        with self._lock:
            return self.stats.setdefault(token, Stats())

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> GraphDouble:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()  # releases hanging handlers
        self.shutdown()
        self.server_close()


# --- behaviours ----------------------------------------------------------------------------


def graph_error_body(code: int, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"message": message, "type": "THApiException", "code": code,
                      "fbtrace_id": "Ab12", **extra}}


def healthy(base: int, **extra: Any) -> Behaviour:
    """Answers the requested fields; `extra` keys are added to the row (unknown fields)."""
    def answer(h: GraphHandler, fields: list[str]) -> None:
        row = {k: v for k, v in healthy_row(base).items() if k in fields}
        h.json(200, {"data": [{**row, **extra}], "paging": {"cursors": {}}})
    return answer


def graph_error(status: int, code: int, message: str, *, deny: str | None = None,
                base: int = 0, **extra: Any) -> Behaviour:
    """A Graph error envelope; with `deny`, only requests naming that field fail and the
    rest are answered healthily (a token lacking one permission)."""
    def answer(h: GraphHandler, fields: list[str]) -> None:
        if deny is not None and deny not in fields:
            healthy(base)(h, fields)
        else:
            h.json(status, graph_error_body(code, message, **extra))
    return answer


def body(status: int, payload: bytes, content_type: str = "application/json") -> Behaviour:
    return lambda h, fields: h.raw(status, payload, content_type)


def row(data: Any) -> Behaviour:
    return lambda h, fields: h.json(200, {"data": data})


def huge(megabytes: int) -> Behaviour:
    """A valid-looking JSON body of many megabytes, streamed until the client hangs up."""
    def answer(h: GraphHandler, fields: list[str]) -> None:
        chunk = b"x" * 65536
        head = b'{"data":[{"quota_usage":1,"padding":"'
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(head) + megabytes * 16 * len(chunk) + 4))
        h.end_headers()
        stats = h.server.stats_for(h.token)
        try:
            h.wfile.write(head)
            for _ in range(megabytes * 16):
                h.wfile.write(chunk)
                stats.bytes_sent += len(chunk)
            h.wfile.write(b'"}]}')
        except OSError:
            h.close_connection = True
    return answer


def hang(h: GraphHandler, fields: list[str]) -> None:
    h.server.stopping.wait(60)
    h.close_connection = True


def delay(seconds: float, then: Behaviour) -> Behaviour:
    def answer(h: GraphHandler, fields: list[str]) -> None:
        time.sleep(seconds)
        then(h, fields)
    return answer


def reset_mid_body(h: GraphHandler, fields: list[str]) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", "1000")
    h.end_headers()
    h.wfile.write(b'{"data":[{"quota_us')
    h.wfile.flush()
    h.close_connection = True
    h.connection.shutdown(2)


# --- config, metrics, logs -----------------------------------------------------------------


def write_config(path: Path, base_url: str, accounts: dict[str, str], *,
                 timeout: float = 2.0, **top: Any) -> Path:
    """A config file with one account per (name -> token)."""
    config = {
        "api": {"base_url": base_url, "timeout_seconds": timeout, "max_concurrency": 16},
        "accounts": [{"name": n, "access_token": t} for n, t in accounts.items()],
        **top,
    }
    path.write_text(yaml.safe_dump(config))
    return path


Labels = frozenset[tuple[str, str]]


def samples(text: str) -> dict[tuple[str, Labels], float]:
    """Exposition text -> {(sample name, labels): value}."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict[tuple[str, Labels], float], name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def series(found: dict[tuple[str, Labels], float], name: str,
           **labels: str) -> dict[Labels, float]:
    """Every series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return {lbl: v for (n, lbl), v in found.items() if n == name and want <= lbl}


def json_logs(output: str) -> Iterator[dict[str, Any]]:
    """The JSON log lines of a process's output (other lines are skipped)."""
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                yield json.loads(line)
            except ValueError:
                continue

"""A Threads Graph API double for the benchmark: its own process, raw asyncio, no imports from
threads_exporter, so what the exporter is measured against is not something it wrote.

    python bench/double.py --latency 0.05          # prints "READY port=N", serves until killed
    python bench/double.py --load URL --seconds 2  # a load generator, for capacity probes

HTTP/1.1 with keep-alive on a plain asyncio.Protocol (no framework: the double must cost far
less CPU per request than the exporter it serves). Every Graph answer waits `latency` seconds
(loop.call_later, as asyncio.sleep would, without a task per request), then goes out in one
write with TCP_NODELAY. Answers are shaped as the documented Graph API gives them:

* ``GET /v1.0/{user}/threads_publishing_limit?fields=...``: ``{"data": [{field: ...}]}``
  with exactly the requested fields;
* ``GET /v1.0/debug_token?input_token=...``: ``{"data": {"expires_at": ..., ...}}``;
* ``GET /v1.0/{container-id}?fields=status,error_message``: ``{"status": "IN_PROGRESS",
  "id": ...}`` (never final, so a tracked container stays due);
* ``GET /v1.0/me?fields=id``: ``{"id": ...}``;
* tokens other than ``bench-token-<i>``: Graph's code 190 error (HTTP 400).

Control (no latency, not counted as Graph calls), all GET:

* ``/_double/stats``: calls per endpoint, in flight now and at peak, requests served, CPU;
* ``/_double/fail?accounts=N&mode=error|hang|none``: tokens 0..N-1 fail at once, with Graph's
  code 2 (HTTP 500, is_transient) or by never answering (until the client gives up);
* ``/_double/config?latency=S``: change the injected latency;
* ``/_double/reset``: zero the counters and the peak.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import time
from collections import deque
from urllib.parse import parse_qsl

TOKEN_PREFIX = "bench-token-"
HANG_SECONDS = 600.0  # a hanging answer is dropped after this, if its client is still there
DAY = 86400

# threads_publishing_limit's documented fields: usage field -> (config field, quota_total).
QUOTAS = {
    "quota_usage": ("config", 250),
    "reply_quota_usage": ("reply_config", 1000),
    "delete_quota_usage": ("delete_config", 100),
    "location_search_quota_usage": ("location_search_config", 500),
}


def token(i: int) -> str:
    return f"{TOKEN_PREFIX}{i}"


def container_id(n: int) -> str:
    return str(17_900_000_000_000_000 + n)


def _error(code: int, message: str, kind: str = "OAuthException",
           transient: bool | None = None) -> bytes:
    err: dict[str, object] = {"message": message, "type": kind, "code": code}
    if transient is not None:
        err["is_transient"] = transient
    err["fbtrace_id"] = "AbCdEfGh012"
    return json.dumps({"error": err}).encode()


BAD_TOKEN = _error(190, "Invalid OAuth access token - Cannot parse access token")
NO_TOKEN = _error(104, "An access token is required to request this resource.")
UNKNOWN_PATH = _error(2500, "Unknown path components")
UNEXPECTED = _error(2, "An unexpected error has occurred. Please retry your request later.",
                    transient=True)
STATUS_TEXT = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 500: b"Internal Server Error"}


class State:
    def __init__(self, latency: float):
        self.latency = latency
        self.calls: dict[str, int] = {}
        self.in_flight = 0
        self.peak = 0
        self.served = 0
        self.fail_below = 0
        self.fail_mode = "none"
        self.expires_at = int(time.time()) + 60 * DAY
        self._quota_rows: dict[str, bytes] = {}

    def count(self, endpoint: str) -> None:
        self.calls[endpoint] = self.calls.get(endpoint, 0) + 1

    def stats(self) -> dict[str, object]:
        return {"calls": dict(self.calls), "in_flight": self.in_flight, "peak_in_flight":
                self.peak, "served": self.served, "cpu_seconds": time.process_time(),
                "latency": self.latency, "fail_below": self.fail_below,
                "fail_mode": self.fail_mode}

    def publishing_limit(self, fields: str) -> bytes:
        row = self._quota_rows.get(fields)
        if row is None:
            asked = set(fields.split(",")) if fields else {"quota_usage", "config"}
            data: dict[str, object] = {}
            for i, (usage, (config, total)) in enumerate(QUOTAS.items(), start=1):
                if usage in asked:
                    data[usage] = i
                if config in asked:
                    data[config] = {"quota_total": total, "quota_duration": DAY}
            row = json.dumps({"data": [data]}).encode()
            self._quota_rows[fields] = row
        return row


class GraphProtocol(asyncio.Protocol):
    def __init__(self, state: State):
        self.state = state
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        # Answers in request order (pipelining); an entry is None until its answer is ready.
        self.queue: deque[list[bytes | None]] = deque()
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for slot in self.queue:  # answers the client no longer waits for: not in flight
            if slot[0] is None:
                slot[0] = b""
                self.state.in_flight -= 1
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536 and self.transport is not None:
                    self.transport.close()
                return
            head = self.buffer[:end].decode("latin-1")
            lines = head.split("\r\n")
            length = 0
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip() or 0)
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            try:
                method, target, _ = lines[0].split(" ", 2)
            except ValueError:
                if self.transport is not None:
                    self.transport.close()
                return
            self.close_after = self.close_after or close
            self.request(method, target)

    def request(self, method: str, target: str) -> None:
        slot: list[bytes | None] = [None]
        self.queue.append(slot)
        path, _, query = target.partition("?")
        if path.startswith("/_double/"):
            slot[0] = self.control(path, dict(parse_qsl(query)))
            self.flush()
            return
        state = self.state
        params = dict(parse_qsl(query))
        endpoint, status, body = self.answer(path, params)
        state.count(endpoint)
        state.in_flight += 1
        state.peak = max(state.peak, state.in_flight)
        delay = state.latency
        if status == 0:  # hang: no answer for as long as the client waits
            delay, status, body = HANG_SECONDS, 500, UNEXPECTED
        loop = asyncio.get_running_loop()
        if delay > 0:
            loop.call_later(delay, self.ready, slot, status, body)
        else:
            self.ready(slot, status, body)

    def answer(self, path: str, params: dict[str, str]) -> tuple[str, int, bytes]:
        """(endpoint, HTTP status, body); status 0 means never answer."""
        state = self.state
        parts = path.strip("/").split("/")
        if len(parts) < 2 or not parts[0].startswith("v"):
            return "unknown", 400, UNKNOWN_PATH
        rest = parts[1:]
        if rest == ["debug_token"]:
            endpoint, who = "debug_token", params.get("input_token", "")
        elif len(rest) == 2 and rest[1] == "threads_publishing_limit":
            endpoint, who = "publishing_limit", params.get("access_token", "")
        elif rest == ["me"]:
            endpoint, who = "me", params.get("access_token", "")
        elif len(rest) == 1 and rest[0].isdigit():
            endpoint, who = "container", params.get("access_token", "")
        else:
            return "unknown", 400, UNKNOWN_PATH
        if not params.get("access_token"):
            return endpoint, 400, NO_TOKEN
        if not who.startswith(TOKEN_PREFIX) or not who[len(TOKEN_PREFIX):].isdigit():
            return endpoint, 400, BAD_TOKEN
        if int(who[len(TOKEN_PREFIX):]) < state.fail_below:
            if state.fail_mode == "hang":
                return endpoint, 0, b""
            return endpoint, 500, UNEXPECTED
        if endpoint == "publishing_limit":
            return endpoint, 200, state.publishing_limit(params.get("fields", ""))
        if endpoint == "container":
            return endpoint, 200, b'{"status":"IN_PROGRESS","id":"%s"}' % rest[0].encode()
        if endpoint == "me":
            return endpoint, 200, b'{"id":"%s"}' % who[len(TOKEN_PREFIX):].encode()
        return endpoint, 200, json.dumps({"data": {
            "app_id": "1000000000000001", "type": "USER", "application": "bench-double",
            "data_access_expires_at": state.expires_at, "expires_at": state.expires_at,
            "is_valid": True, "issued_at": state.expires_at - 60 * DAY,
            "scopes": ["threads_basic", "threads_content_publish"],
            "user_id": who[len(TOKEN_PREFIX):]}}).encode()

    def control(self, path: str, params: dict[str, str]) -> bytes:
        state = self.state
        if path == "/_double/fail":
            state.fail_below = int(params.get("accounts", "0"))
            state.fail_mode = params.get("mode", "error")
            if state.fail_mode == "none":
                state.fail_below = 0
        elif path == "/_double/config":
            state.latency = float(params.get("latency", state.latency))
        elif path == "/_double/reset":
            state.calls.clear()
            state.peak = state.in_flight
        elif path != "/_double/stats":
            return _response(404, b'{"error": "no such control"}')
        return _response(200, json.dumps(state.stats()).encode())

    def ready(self, slot: list[bytes | None], status: int, body: bytes) -> None:
        if slot[0] is not None:  # its connection is gone
            return
        self.state.in_flight -= 1
        self.state.served += 1
        slot[0] = _response(status, body)
        self.flush()

    def flush(self) -> None:
        if self.transport is None:
            self.queue.clear()
            return
        out = []
        while self.queue and self.queue[0][0] is not None:
            out.append(self.queue.popleft()[0])
        if out:
            self.transport.write(b"".join(out))  # type: ignore[arg-type]
            if self.close_after and not self.queue:
                self.transport.close()


def _response(status: int, body: bytes) -> bytes:
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=UTF-8\r\n"
            b"Content-Length: %d\r\nfacebook-api-version: v1.0\r\n\r\n"
            % (status, STATUS_TEXT.get(status, b"Error"), len(body))) + body


async def serve(host: str, port: int, latency: float) -> None:
    state = State(latency)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: GraphProtocol(state), host, port, backlog=1024,
                                      reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"READY port={bound}", flush=True)
    async with server:
        await server.serve_forever()


# --- a load generator, for the capacity probe ----------------------------------------------


async def _hammer(host: str, port: int, request: bytes, end: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while time.monotonic() < end:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)
            counts[0] += 1
    finally:
        writer.close()


async def load(url: str, connections: int, seconds: float) -> dict[str, float]:
    """Requests per second one process's raw-socket clients get out of the double."""
    hostport = url.split("://", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    request = (f"GET /v1.0/{container_id(1)}?fields=status%2Cerror_message&access_token="
               f"{token(1)} HTTP/1.1\r\nHost: {hostport}\r\n\r\n").encode()
    counts = [0]
    start = time.monotonic()
    cpu = time.process_time()
    await asyncio.gather(*(_hammer(host, int(port), request, start + seconds, counts)
                           for _ in range(connections)))
    took = time.monotonic() - start
    return {"requests": counts[0], "seconds": took, "rate": counts[0] / took,
            "client_cpu_seconds": time.process_time() - cpu}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0: any free one)")
    p.add_argument("--latency", type=float, default=0.05, help="seconds added to every answer")
    p.add_argument("--load", metavar="URL", help="run as a load generator against URL")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args()
    if args.load:
        print(json.dumps(asyncio.run(load(args.load, args.connections, args.seconds))))
        return 0
    host, _, port = args.listen.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host or "127.0.0.1", int(port), args.latency))
    return 0


if __name__ == "__main__":
    sys.exit(main())

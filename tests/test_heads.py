"""The head bound (web/heads.py) on its own, in process: what it holds back from aiohttp's
parser, and when it holds nothing."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

from aiohttp import web

from threads_exporter.web.heads import HeadLimitedHandler
from waiting import wait_for


class _Watched(HeadLimitedHandler):
    peak_held = 0

    def head_limit(self) -> int:
        return 64 * 1024

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        _Watched.peak_held = max(_Watched.peak_held, len(self._held))


class _Server(web.Server):
    def __call__(self) -> _Watched:
        return _Watched(self, loop=self._loop, **self._kwargs)


def test_a_client_sending_on_while_the_server_shuts_down_is_not_buffered() -> None:
    """aiohttp waits for a request in flight when it shuts down; what the client sends
    meanwhile is dropped, not held (it was held: 21 MB in half a second)."""
    blasting = threading.Event()

    async def slow(_: web.BaseRequest) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    def blast(port: int, sent: threading.Event) -> None:
        with socket.create_connection(("127.0.0.1", port)) as s, \
                contextlib.suppress(OSError):
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            sent.set()
            blasting.wait(10)
            while True:
                s.sendall(b"x" * (1 << 20))

    async def main() -> None:
        server = _Server(slow, handler_cancellation=True)
        listener = await asyncio.get_running_loop().create_server(server, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        sent = threading.Event()
        threading.Thread(target=blast, args=(port, sent), daemon=True).start()
        await asyncio.to_thread(wait_for, sent.is_set, timeout=10, what="request sent")
        await asyncio.to_thread(wait_for, lambda: server.requests_count, timeout=10,
                                what="request in flight")
        listener.close()
        shutdown = asyncio.ensure_future(server.shutdown(0.25))
        await asyncio.sleep(0)
        blasting.set()
        await shutdown

    asyncio.run(main())
    assert _Watched.peak_held == 0

"""A bound on the bytes of a request head, for aiohttp's request handler.

aiohttp limits a head by its lines only (their count and length), and its parser keeps each
header as bytes and as str until the head is answered: 64 lines of 8 KB held ~1.5 MB per
connection. Here the parser is fed in slices, and the bytes fed outside a body since the last
head completed are counted; past the limit the head is answered 431 and no more is read.

Slicing is what makes the count hold: a head that begins in the same read as the end of the
request or body before it is counted from the next slice, at most SLICE bytes late, and
requests held back while aiohttp's queue of parsed requests is full are fed when it asks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

log = logging.getLogger(__name__)

SLICE = 8192
LINGER = 0.5  # seconds, Go's rstAvoidanceDelay
ANSWER = (b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
          b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 32\r\n\r\n"
          b"Request Header Fields Too Large\n")


class HeadTooLarge(BadHttpMessage):
    """A request head past the limit; answered 431."""


class HeadLimitedHandler(RequestHandler):
    """RequestHandler whose parser never holds more than head_limit() bytes of one head
    (plus at most SLICE)."""

    _refused = False  # answered 431: what the client still sends is dropped unread
    _held = b""  # received, not yet fed: aiohttp's queue of parsed requests is full
    _head_bytes = 0  # fed outside a body since the last head completed
    _heads = 0  # heads parsed so far (aiohttp's _request_count when last looked)
    _answered = 0  # responses finished
    _body: Any = None  # the payload of the last head parsed

    def head_limit(self) -> int:
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        if self._refused or self._force_close or self._close:
            self._held = b""  # closing (or refused): dropped unread, as aiohttp drops it
            return
        if not data:
            # aiohttp's cue, once its queue drains, to parse the requests its parser holds.
            super().data_received(data)
            self._saw_heads()
        else:
            self._held = self._held + data if self._held else data
        self._feed()

    def _feed(self) -> None:
        data, pos, limit = self._held, 0, self.head_limit()
        while pos < len(data) and not (self._refused or self._force_close or self._close):
            if self._upgraded:
                # Behind an Upgrade request aiohttp keeps what follows until it answers, and
                # bounds it itself (it pauses reading past read_bufsize).
                super().data_received(data[pos:])
                pos = len(data)
                break
            if len(self._messages) >= self._max_msg_queue_size:
                break  # aiohttp has paused reading; it asks for the rest with an empty feed
            part = data[pos:pos + SLICE]
            if self._body is None or self._body.is_eof():  # not in a body: a head
                room = limit - self._head_bytes
                if room <= 0:
                    self._refuse()
                    break
                part = part[:room]
                self._head_bytes += len(part)
            pos += len(part)
            super().data_received(part)
            self._saw_heads()
        stopped = self._refused or self._force_close or self._close
        self._held = data[pos:] if pos < len(data) and not stopped else b""

    def _saw_heads(self) -> None:
        if self._request_count != self._heads and self._messages:
            self._heads = self._request_count
            self._head_bytes = 0
            self._body = self._messages[-1][1]

    def connection_lost(self, exc: BaseException | None) -> None:
        self._held = b""
        super().connection_lost(exc)

    async def finish_response(self, request: BaseRequest, resp: StreamResponse,
                              start_time: float | None) -> tuple[StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._answered += 1
            if self._refused and self._answered == self._request_count:
                # The queued refusal is answered: linger, and keep aiohttp from closing at
                # once (it closes only when _force_close is unset).
                self._force_close = True
                self._linger()

    def _refuse(self) -> None:
        self._refused = True
        self._held = b""
        transport = self.transport
        if transport is None:
            return
        if self._request_count != self._answered:
            # Answers are still owed for requests before this one: the refusal goes in the
            # queue behind them, answered by handle_error in its turn.
            self._request_count += 1
            self._messages.append((_ErrInfo(431, HeadTooLarge("request head too large"),
                                            "Request Header Fields Too Large"), EMPTY_PAYLOAD))
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)
            return
        log.debug("bad request", extra={
            "client": peer(transport), "status": 431, "error": "request head too large"})
        transport.write(ANSWER)
        self._linger()

    def _linger(self) -> None:
        # As Go does: shut our side and close a moment later, so that a client still sending
        # can read the answer before the close resets the connection.
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER, self.force_close)
        else:
            self.force_close()


def peer(transport: asyncio.BaseTransport | None) -> str | None:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if peer else None

"""Pooled HTTP transports to the API: one GET in, (status, bounded body, usage) out."""

from __future__ import annotations

import asyncio
import zlib
from urllib.parse import urlencode, urlsplit
from urllib.request import getproxies, proxy_bypass

import httpx

from threads_exporter.graph.errors import BAD_RESPONSE, ApiError
from threads_exporter.graph.parse import parse_usage_headers

POOL_SIZE = 8  # connections per httpx pool (see Transport)
HEADERS = {"User-Agent": "threads-exporter", "Accept-Encoding": "gzip, deflate"}
MAX_BODY_BYTES = 1 << 20  # documented answers are tiny; anything bigger is not the API

Answer = tuple[int, bytes, dict[tuple[str, str], float]]


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for a URL (HTTPS_PROXY, ALL_PROXY, NO_PROXY), which
    httpx clients honour and bare transports do not."""
    parts = urlsplit(url)
    proxies = getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or proxy_bypass(parts.hostname or ""):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


class Transport:
    """max_concurrency connections to one API base URL.

    httpcore 1.0's pool does O(connections^2) bookkeeping on every request and response
    (encode/httpcore#1035): milliseconds of CPU per call at 64 connections. So the budget is
    split into pools of at most POOL_SIZE, and each call takes the one with most room.
    Transports, not clients: an httpx client's per-request work (request merging, redirect
    and auth flows, cookie jar) cost ~0.1 ms of CPU per call, none of it needed.
    """

    def __init__(self, base_url: str, max_concurrency: int, timeout: float,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.base_url = base_url
        count = 1 if transport is not None else -(-max_concurrency // POOL_SIZE)
        sizes = [max_concurrency // count + (i < max_concurrency % count) for i in range(count)]
        proxy = env_proxy(base_url)
        self._pools: list[httpx.AsyncBaseTransport] = [transport] if transport is not None else [
            httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=size,
                                                         max_keepalive_connections=size),
                                     proxy=proxy)
            for size in sizes]
        self._extensions = {"timeout": httpx.Timeout(timeout).as_dict()}
        self._room = sizes  # free connections per pool; the gate keeps one free somewhere

    async def aclose(self) -> None:
        await asyncio.gather(*(pool.aclose() for pool in self._pools))

    async def get(self, path: str, params: dict[str, str]) -> Answer:
        """One GET; the body is read whole, up to MAX_BODY_BYTES (else BAD_RESPONSE)."""
        request = httpx.Request("GET", f"{self.base_url}{path}?{urlencode(params)}",
                                headers=HEADERS, extensions=self._extensions)
        pool = max(range(len(self._pools)), key=self._room.__getitem__)
        self._room[pool] -= 1
        try:
            response = await self._pools[pool].handle_async_request(request)
            try:
                body = await _read_bounded(response)
                return response.status_code, body, parse_usage_headers(response.headers)
            finally:
                await response.aclose()
        finally:
            self._room[pool] += 1


def _decompressor(encoding: str) -> zlib._Decompress | None:
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib or gzip header, detected
    raise ApiError(BAD_RESPONSE, "response in an unsupported content-encoding")


async def _read_bounded(response: httpx.Response) -> bytes:
    """The body, decoded, never more than MAX_BODY_BYTES of it in memory: the decompressor is
    asked for at most what is left of the budget, so a gzip bomb stops at the cap instead of
    inflating a whole chunk (httpx's own decoder has no such bound)."""
    decoder = _decompressor(response.headers.get("content-encoding", "").strip().lower())
    chunks: list[bytes] = []
    size = 0
    try:
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        async for raw in stream:  # the raw bytes, as aiter_raw() gives them
            data = raw if decoder is None else decoder.decompress(raw, MAX_BODY_BYTES + 1 - size)
            size += len(data)
            if size > MAX_BODY_BYTES or (decoder is not None and decoder.unconsumed_tail):
                raise ApiError(BAD_RESPONSE, f"response larger than {MAX_BODY_BYTES} bytes")
            chunks.append(data)
        if decoder is not None:
            tail = decoder.flush(MAX_BODY_BYTES + 1 - size)
            if size + len(tail) > MAX_BODY_BYTES:
                raise ApiError(BAD_RESPONSE, f"response larger than {MAX_BODY_BYTES} bytes")
            chunks.append(tail)
    except zlib.error:
        raise ApiError(BAD_RESPONSE, "response body does not decompress") from None
    return b"".join(chunks)

"""Pooled HTTP transports to the API: one GET in, (status, bounded body, usage) out."""

from __future__ import annotations

import asyncio
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
                chunks = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise ApiError(BAD_RESPONSE,
                                       f"response larger than {MAX_BODY_BYTES} bytes")
                    chunks.append(chunk)
                return (response.status_code, b"".join(chunks),
                        parse_usage_headers(response.headers))
            finally:
                await response.aclose()
        finally:
            self._room[pool] += 1

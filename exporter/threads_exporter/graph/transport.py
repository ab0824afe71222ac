"""The HTTP engine to the API: one GET in, (status, bounded body, usage) out."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from urllib.parse import urlencode, urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from threads_exporter.graph.errors import BAD_RESPONSE, ApiError
from threads_exporter.graph.parse import parse_usage_headers

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
    """max_concurrency connections to one API base URL, over aiohttp behind httpx's API.

    aiohttp, not httpcore: httpcore 1.0's pool does O(connections^2) bookkeeping on every
    request and response (encode/httpcore#1035), and even split into pools of 8 it cost
    twice aiohttp's CPU per call (bench/engines.py). aiohttp's pool is flat, so one pool
    holds the whole budget. A transport, not an httpx client: the client's per-request work
    (request merging, redirect and auth flows, cookie jar) costs ~0.17 ms of CPU per call,
    and none of it is needed here.
    """

    def __init__(self, base_url: str, max_concurrency: int, timeout: float,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.base_url = base_url
        self._pool = transport if transport is not None else Engine(
            max_concurrency, env_proxy(base_url))
        self._extensions = {"timeout": httpx.Timeout(timeout).as_dict()}
        self._active = 0
        self._closing = False

    async def aclose(self) -> None:
        """Close the connections once no call is using them: a reload swaps the transport
        while calls are in flight or waiting at the gate, and those finish here first."""
        self._closing = True
        if not self._active:
            await self._pool.aclose()

    async def get(self, path: str, params: dict[str, str]) -> Answer:
        """One GET; the body is read whole, up to MAX_BODY_BYTES (else BAD_RESPONSE)."""
        request = httpx.Request("GET", f"{self.base_url}{path}?{urlencode(params)}",
                                headers=HEADERS, extensions=self._extensions)
        self._active += 1
        try:
            response = await self._pool.handle_async_request(request)
            try:
                body = await _read_bounded(response)
                return response.status_code, body, parse_usage_headers(response.headers)
            finally:
                await response.aclose()
        finally:
            self._active -= 1
            if self._closing and not self._active:
                await self._pool.aclose()


class Engine(AiohttpTransport):
    """httpx-aiohttp's transport over a session of our own, its exceptions told apart.

    The session is made on the first request, so on the loop that runs the calls. It never
    decompresses (auto_decompress=False): _read_bounded does, within MAX_BODY_BYTES. No
    cookie jar and no environment (trust_env=False): the proxy is env_proxy's, per request.
    httpx-aiohttp maps every aiohttp.ClientConnectionError, a refused connection included,
    to httpx.ConnectTimeout; _httpx_error maps the aiohttp exception itself instead, so a
    refusal counts as `connection` and only a timeout as `timeout`.
    """

    def __init__(self, max_concurrency: int, proxy: str | None):
        super().__init__(proxy=httpx.Proxy(proxy) if proxy else None, client=self._session)
        self._limit = max_concurrency

    def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=max(1, self._limit), limit_per_host=0,
                                         ssl=self.ssl_context)
        session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                        trust_env=False, cookie_jar=aiohttp.DummyCookieJar())
        # aiohttp resends an idempotent request once when the connection drops before the
        # answer; the client retries on its own terms, and counts every request it sends.
        session._retry_connection = False
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except Exception as e:
            raise _httpx_error(e) from None
        response.stream = _Body(response.stream)
        return response

    async def aclose(self) -> None:
        if isinstance(self.client, aiohttp.ClientSession):
            await self.client.close()
        self.client = self._session  # used again (a late call), it opens a new session


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.SyncByteStream | httpx.AsyncByteStream):
        assert isinstance(stream, httpx.AsyncByteStream)
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except Exception as e:
            raise _httpx_error(e) from None

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        except Exception as e:
            raise _httpx_error(e) from None


def _httpx_error(exc: Exception) -> Exception:
    """The httpx exception for what aiohttp raised (found as the cause of httpx-aiohttp's
    mapping, or raised unmapped). Its text is the aiohttp exception's type alone: aiohttp's
    own texts may name the URL, and the URL carries the token."""
    cause = exc.__cause__ if isinstance(exc, httpx.HTTPError) else exc
    if not isinstance(cause, aiohttp.ClientError | TimeoutError):
        return exc
    name = type(cause).__name__
    kind: type[httpx.HTTPError]
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        kind = httpx.ConnectTimeout
    elif isinstance(cause, TimeoutError):
        kind = httpx.ReadTimeout
    elif isinstance(cause, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        kind = httpx.ProxyError
    elif isinstance(cause, aiohttp.ClientConnectorError):
        kind = httpx.ConnectError  # refused, unreachable, DNS, TLS handshake
    elif isinstance(cause, aiohttp.ClientPayloadError):
        kind = httpx.ReadError  # the body cut short or malformed
    elif isinstance(cause, aiohttp.ServerDisconnectedError | aiohttp.ClientResponseError):
        kind = httpx.RemoteProtocolError  # no answer, or not HTTP (status line, headers)
    elif isinstance(cause, aiohttp.ClientConnectionError):
        kind = httpx.NetworkError
    else:
        return exc  # an invalid URL and the like: httpx-aiohttp's mapping stands
    return kind(name)


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

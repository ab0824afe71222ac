"""Encoded scrapes from cached per-account fragments.

A warm scrape's readings are mostly the ones the previous scrape had (quota readings are
cached for the TTL), so encoding every sample again is wasted work: at 10,000 accounts it is
most of the scrape. Each account's share of the per-account families is encoded once, by
prometheus_client's own encoder (whatever format and escaping the scraper negotiated), and
kept while the account's input is unchanged, packed with its neighbours' into one buffer per
family and chunk of accounts; a scrape writes each family's header and then its chunks, and
re-packs only the chunks that hold a changed account. The result is byte for byte what the
encoder gives for the same families (tests/test_exposition.py checks it).
"""

from __future__ import annotations

import threading
import time
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

# Level 1: at 10,000 accounts (35 MB of text) a third of level 5's CPU for a body 10% larger,
# and CPU is what runs short at that size.
GZIP_LEVEL = 1
I = TypeVar("I")  # noqa: E741 - an account's input
Encoder = Callable[[Collector], bytes]


def gzipped(pieces: Iterable[bytes]) -> bytes:
    """One gzip stream of the pieces, compressed as they come."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [compressor.compress(piece) for piece in pieces]
    out.append(compressor.flush())
    return b"".join(out)


class Families(Collector):
    """An already-built list of families, as prometheus_client's encoders take them."""

    def __init__(self, families: Iterable[Metric]):
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


@dataclass(frozen=True)
class Part(Generic[I]):
    """Families with one share per account (for example the quota families): `build` makes
    the families of the given (account, input) pairs; with none, the families are empty.
    `values[i]` is the input of `accounts[i]`; equal inputs must give equal families."""

    name: str
    build: Callable[[Sequence[tuple[str, I]]], list[Metric]]
    accounts: Sequence[str]  # in exposition order
    values: Sequence[I]


def _key(encoder: Encoder) -> Any:
    if isinstance(encoder, partial):
        return (encoder.func, encoder.args, tuple(sorted(encoder.keywords.items())))
    return encoder


def _probe() -> list[Metric]:
    """Samples of every kind the exporter writes, with names and label values that the
    escaping schemes treat differently."""
    value = 'q"uote back\\slash two\nlines café'
    gauge = GaugeMetricFamily("probe_a_b", "h", labels=["account", "error_message"])
    gauge.add_metric([value, "x"], 1.5)
    counter = CounterMetricFamily("probe_c", "h", labels=["account"])
    counter.add_metric([value], 2)
    histogram = HistogramMetricFamily("probe_d", "h", labels=["account"])
    histogram.add_metric([value], [("0.5", 1), ("+Inf", 2)], 0.75)
    return [gauge, counter, histogram]


class _Dialect:
    """What one encoder writes around the samples: its end-of-exposition trailer, each
    part's family headers, and how it writes samples (`samples`: encoders that write the
    probe's samples alike share their fragments, as the text and OpenMetrics encoders do
    for these metric kinds, which halves the cache when both formats are scraped)."""

    def __init__(self, encoder: Encoder):
        self.encoder = encoder
        self.trailer = encoder(Families([]))
        self.headers: dict[str, tuple[bytes, ...]] = {}
        self.samples = b"".join(line for line in self.body(_probe()).splitlines(keepends=True)
                                if not line.startswith(b"#"))

    def body(self, families: list[Metric]) -> bytes:
        out = self.encoder(Families(families))
        if not out.endswith(self.trailer):  # pragma: no cover - an encoder we do not know
            raise ValueError("the encoder's output does not end with its trailer")
        return out[:len(out) - len(self.trailer)]

    def headers_of(self, part: Part[Any]) -> tuple[bytes, ...]:
        headers = self.headers.get(part.name)
        if headers is None:
            headers = tuple(self.body([f]) for f in part.build([]))
            self.headers[part.name] = headers
        return headers

    def split(self, part: Part[Any], encoded: bytes) -> tuple[bytes, ...]:
        """The samples of each family in an encoding of a part's families: the text between
        consecutive headers. A header holds a line break followed by '# TYPE', which no
        sample line can hold (the encoders escape line breaks in label values)."""
        headers = self.headers_of(part)
        if not encoded.startswith(headers[0]):
            raise ValueError(f"unexpected encoding of {part.name}")
        out = []
        pos = len(headers[0])
        for header in headers[1:]:
            at = encoded.index(header, pos)
            out.append(encoded[pos:at])
            pos = at + len(header)
        out.append(encoded[pos:])
        return tuple(out)


# Accounts per chunk: a scrape re-packs only the chunks holding a changed account, so the
# copying is a chunk's, not a whole family's.
CHUNK = 256


class _Chunk:
    """The samples of up to CHUNK consecutive accounts, packed: for each family one bytes
    object, with where each account's samples start in it. Packing keeps 10,000 accounts'
    fragments in a few hundred objects instead of 170,000, and an unchanged chunk goes out
    as it is."""

    __slots__ = ("accounts", "bodies", "offsets", "values")

    def __init__(self, accounts: list[str], values: list[Any],
                 fragments: Sequence[Sequence[bytes | memoryview]]):
        self.accounts = accounts
        self.values = values
        bodies, offsets = [], []
        for family in zip(*fragments, strict=True) if fragments else ():
            ends = array("L", [0])
            pos = 0
            for piece in family:
                pos += len(piece)
                ends.append(pos)
            bodies.append(b"".join(family))
            offsets.append(ends)
        self.bodies: tuple[bytes, ...] = tuple(bodies)
        self.offsets: tuple[array[int], ...] = tuple(offsets)

    def fragment(self, i: int) -> tuple[memoryview, ...]:
        """The i-th account's samples of each family (views: nothing copied)."""
        return tuple(memoryview(body)[ends[i]:ends[i + 1]]
                     for body, ends in zip(self.bodies, self.offsets, strict=True))


@dataclass(frozen=True)
class _Packed:
    accounts: list[str]
    chunks: list[_Chunk]


class Exposition:
    """Every account's samples, per part and per encoder, from the latest scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # scrapes from two Prometheus servers take turns
        self._dialects: dict[Any, _Dialect] = {}
        self.shares = 0  # (account, part) shares in the latest scrape
        self.misses = 0  # of those, encoded afresh
        self.miss_seconds = 0.0  # and the time that took
        self._packed: dict[tuple[bytes, str], _Packed] = {}  # (dialect's samples, part)

    def encode(self, encoder: Encoder, parts: Sequence[Part[Any]], tail: Iterable[Metric],
               *, gzip: bool = False) -> bytes:
        """The encoder's exposition of every part's families, then the tail families;
        gzip-compressed piece by piece if asked, so that the whole uncompressed body (40 MB
        at 10,000 accounts with containers) never sits in memory at once."""
        with self._lock:
            pieces = self._encode(encoder, parts, tail)
            return gzipped(pieces) if gzip else b"".join(pieces)

    def _encode(self, encoder: Encoder, parts: Sequence[Part[Any]],
                tail: Iterable[Metric]) -> Iterator[bytes]:
        """The exposition in pieces: each family's header, then its chunks' samples."""
        self.misses, self.miss_seconds = 0, 0.0
        self.shares = sum(len(part.accounts) for part in parts)
        key = _key(encoder)
        dialect = self._dialects.get(key)
        if dialect is None:
            dialect = self._dialects[key] = _Dialect(encoder)
            # Prometheus negotiates one format; others (a person's curl) must not grow the
            # cache for ever: the newest two are kept.
            for old in list(self._dialects)[:-2]:
                del self._dialects[old]
            kept = {d.samples for d in self._dialects.values()}
            for pk in [pk for pk in self._packed if pk[0] not in kept]:
                del self._packed[pk]
        for part in parts:
            chunks = self._part(dialect, part)
            for i, header in enumerate(dialect.headers_of(part)):
                yield header
                yield from (c.bodies[i] for c in chunks)
        yield encoder(Families(tail))

    def _part(self, dialect: _Dialect, part: Part[Any]) -> list[_Chunk]:
        key = (dialect.samples, part.name)
        accounts, values = list(part.accounts), list(part.values)
        if len(accounts) != len(values):
            raise ValueError(f"{part.name}: {len(accounts)} accounts, {len(values)} values")
        old = self._packed.get(key)
        aligned = old is not None and old.accounts == accounts
        where: dict[str, tuple[_Chunk | None, int]] = {}
        if old is not None and not aligned:  # accounts came or went: look each one up
            where = {a: (c, i) for c in old.chunks for i, a in enumerate(c.accounts)}
        chunks = []
        for n, start in enumerate(range(0, len(accounts), CHUNK)):
            names, inputs = accounts[start:start + CHUNK], values[start:start + CHUNK]
            if aligned:
                kept = old.chunks[n]  # type: ignore[union-attr]
                if kept.values == inputs:
                    chunks.append(kept)
                    continue
                found: list[tuple[_Chunk | None, int]] = [(kept, i) for i in range(len(names))]
            else:
                found = [where.get(a, (None, 0)) for a in names]
            fragments: list[tuple[bytes | memoryview, ...]] = []
            for account, value, (chunk, i) in zip(names, inputs, found, strict=True):
                if chunk is not None and (chunk.values[i] is value or chunk.values[i] == value):
                    fragments.append(chunk.fragment(i))
                else:
                    fragments.append(self._miss(dialect, part, account, value))
            chunks.append(_Chunk(names, inputs, fragments))
        # The part's replaced chunks go now, before the next part is packed.
        self._packed[key] = _Packed(accounts, chunks)
        return chunks

    def _miss(self, dialect: _Dialect, part: Part[Any], account: str, value: Any,
              ) -> tuple[bytes, ...]:
        start = time.perf_counter()
        fragment = dialect.split(part, dialect.body(part.build([(account, value)])))
        self.miss_seconds += time.perf_counter() - start
        self.misses += 1
        return fragment

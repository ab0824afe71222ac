"""A scrape joined from cached per-account fragments is byte for byte what
prometheus_client's encoders write for the same families, in every format and escaping a
scraper can negotiate, before and after accounts change, appear and go."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from prometheus_client.exposition import choose_encoder

from threads_exporter import exposition as exposition_module
from threads_exporter.calls import call_families, latency_family
from threads_exporter.containers.families import (
    account_families,
    pressure_families,
    pressure_inputs,
    status_families,
    status_inputs,
)
from threads_exporter.containers.policy import ERRORS, PROCESSING, PROCESSING_SUM, STATUS_CHANGES
from threads_exporter.containers.store import Tallies
from threads_exporter.exposition import Exposition, Families, Part
from threads_exporter.graph.parse import Quota
from threads_exporter.graph.stats import ApiStats
from threads_exporter.quotas.families import quota_families
from threads_exporter.quotas.reader import Reading

ACCEPTS = {
    "text 0.0.4": "text/plain;version=0.0.4",
    "text 1.0.0 allow-utf-8": "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text 1.0.0 dots": "text/plain;version=1.0.0;escaping=dots",
    "openmetrics": "application/openmetrics-text;version=1.0.0",
    "openmetrics values": "application/openmetrics-text;version=1.0.0;escaping=values",
    "Prometheus 3": "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
                    "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;"
                    "version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;"
                    "q=0.3,*/*;q=0.2",
    "curl": "",
}
# Account names a config may hold: quotes, backslashes, a line break, non-ASCII.
ACCOUNTS = ["brand", 'q"uote', "back\\slash", "two\nlines", "café ☕", "a" * 200]
QUOTAS = {"posts": Quota(3, 250, 86400), "replies": Quota(0, 1000, 86400)}


def readings(accounts: list[str], *, down: set[str] = frozenset()) -> list[Reading]:  # type: ignore[assignment]
    return [Reading(a, None, "timeout", "slow", last_success=1.7e9) if a in down
            else Reading(a, QUOTAS, last_success=1.7e9 + i, token_expiry=1.8e9)
            for i, a in enumerate(accounts)]


def tallies(accounts: list[str], errors: int = 1) -> Tallies:
    first = accounts[0]
    return Tallies(
        counts={(first, "IN_PROGRESS"): 2, (first, "ERROR"): errors},
        stuck={first: 1}, backlog={accounts[-1]: 4}, unanswered={first: 1},
        counters={(STATUS_CHANGES, first, "ERROR"): errors,
                  (ERRORS, first, "FAILED_PROCESSING_VIDEO"): errors,
                  (PROCESSING, first, "2.5"): 1, (PROCESSING, first, PROCESSING_SUM): 1.5})


def scrape(accounts: list[str], stats: ApiStats, t: Tallies, rs: list[Reading]
           ) -> tuple[list[Part[Any]], list[Any], list[Any]]:
    """The parts of a scrape, and the same families built whole (the reference)."""
    status, pressure = status_inputs(t), pressure_inputs(t)
    parts: list[Part[Any]] = [
        Part("quotas", lambda pairs: quota_families(r for _, r in pairs),
             [r.account for r in rs], rs),
        Part("calls", call_families, accounts, [stats.of(a) for a in accounts]),
        Part("container statuses", lambda pairs: status_families(t, [a for a, _ in pairs]),
             accounts, [status.get(a, ()) for a in accounts]),
        Part("container pressure", lambda pairs: pressure_families(t, [a for a, _ in pairs]),
             accounts, [pressure.get(a, ()) for a in accounts]),
    ]
    tail = [latency_family(stats)]
    whole = (quota_families(rs) + call_families((a, stats.of(a)) for a in accounts)
             + account_families(t, accounts) + tail)
    return parts, tail, whole


def stats_of(accounts: list[str]) -> ApiStats:
    stats = ApiStats()
    for a in accounts:
        stats.record(a, "publishing_limit", 0.2, None)
    stats.record(accounts[1], "container", 3.0, "timeout")
    stats.record_usage(accounts[2], {("app", "call_count"): 0.25})
    return stats


@pytest.fixture(params=[2, exposition_module.CHUNK], ids=["chunks of 2", "default chunks"])
def chunk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Accounts per packed chunk: small, so that six accounts span three chunks."""
    monkeypatch.setattr(exposition_module, "CHUNK", request.param)
    return int(request.param)


@pytest.mark.parametrize("accept", ACCEPTS.values(), ids=ACCEPTS.keys())
def test_joined_fragments_equal_the_library_encoding(accept: str, chunk: int) -> None:
    encoder, _ = choose_encoder(accept)
    exposition = Exposition()
    stats = stats_of(ACCOUNTS)
    t = tallies(ACCOUNTS)
    rs = readings(ACCOUNTS)

    parts, tail, whole = scrape(ACCOUNTS, stats, t, rs)
    assert exposition.encode(encoder, parts, tail) == encoder(Families(whole))

    # Unchanged inputs come from the cache; changed ones are encoded again.
    stats.record(ACCOUNTS[0], "publishing_limit", 0.1, "server_error")
    rs = readings(ACCOUNTS, down={ACCOUNTS[3]})
    t = tallies(ACCOUNTS, errors=2)
    parts, tail, whole = scrape(ACCOUNTS, stats, t, rs)
    assert exposition.encode(encoder, parts, tail) == encoder(Families(whole))

    # An account removed from the config is gone; a new one appears.
    fewer = [*ACCOUNTS[2:], "new"]
    parts, tail, whole = scrape(fewer, stats_of(fewer), tallies(fewer), readings(fewer))
    assert exposition.encode(encoder, parts, tail) == encoder(Families(whole))
    # Compressed family by family, it is one gzip stream of the same bytes.
    assert gzip.decompress(exposition.encode(encoder, parts, tail, gzip=True)) == \
        encoder(Families(whole))


def test_a_change_repacks_only_its_chunk(chunk: int) -> None:
    encoder, _ = choose_encoder("")
    built: list[str] = []

    def build(pairs: list[tuple[str, Reading]]) -> list[Any]:
        built.extend(a for a, _ in pairs)
        return quota_families(r for _, r in pairs)

    names = [f"acct{i}" for i in range(7)]
    exposition = Exposition()
    rs = readings(names)
    first = exposition.encode(encoder, [Part("quotas", build, names, rs)], [])
    assert built == names
    # Unchanged: the very same packed bytes go out again, nothing is encoded.
    built.clear()
    assert exposition.encode(encoder, [Part("quotas", build, names, list(rs))], []) == first
    assert built == [] and exposition.misses == 0
    # One account in the middle changes: only it is encoded, the result is still exact.
    rs[3] = readings([names[3]], down={names[3]})[0]
    assert exposition.encode(encoder, [Part("quotas", build, names, rs)], []) == \
        encoder(Families(quota_families(rs)))
    assert built == [names[3]]
    # An account inserted in front shifts every chunk: the others come from the cache.
    built.clear()
    more, more_rs = ["first", *names], [*readings(["first"]), *rs]
    assert exposition.encode(encoder, [Part("quotas", build, more, more_rs)], []) == \
        encoder(Families(quota_families(more_rs)))
    assert built == ["first"]


def test_accounts_and_values_must_pair_up() -> None:
    rs = readings(["a", "b"])
    with pytest.raises(ValueError, match="2 accounts, 1 values"):
        Exposition().encode(choose_encoder("")[0],
                            [Part("quotas", quota_families, ["a", "b"], rs[:1])], [])


def test_an_unchanged_account_is_not_encoded_again() -> None:
    encoder, _ = choose_encoder("")
    built: list[str] = []

    def build(pairs: list[tuple[str, Reading]]) -> list[Any]:
        built.extend(a for a, _ in pairs)
        return quota_families(r for _, r in pairs)

    exposition = Exposition()
    rs = readings(["a", "b", "c"])
    exposition.encode(encoder, [Part("quotas", build, [r.account for r in rs], rs)], [])
    assert built == ["a", "b", "c"]
    built.clear()
    rs[1] = readings(["b"], down={"b"})[0]
    exposition.encode(encoder, [Part("quotas", build, [r.account for r in rs], rs)], [])
    assert built == ["b"]


def test_two_formats_alternating_both_stay_exact() -> None:
    exposition = Exposition()
    stats, t, rs = stats_of(ACCOUNTS), tallies(ACCOUNTS), readings(ACCOUNTS)
    for accept in ["", ACCEPTS["openmetrics"], "", ACCEPTS["text 1.0.0 dots"], ""]:
        encoder, _ = choose_encoder(accept)
        parts, tail, whole = scrape(ACCOUNTS, stats, t, rs)
        assert exposition.encode(encoder, parts, tail) == encoder(Families(whole))


def test_text_and_openmetrics_share_fragments_other_escapings_do_not() -> None:
    built: list[str] = []

    def build(pairs: list[tuple[str, Reading]]) -> list[Any]:
        built.extend(a for a, _ in pairs)
        return quota_families(r for _, r in pairs)

    exposition = Exposition()
    rs = readings(["a", "b"])
    part = Part("quotas", build, [r.account for r in rs], rs)
    exposition.encode(choose_encoder("")[0], [part], [])
    exposition.encode(choose_encoder(ACCEPTS["Prometheus 3"])[0], [part], [])
    assert built == ["a", "b"]
    exposition.encode(choose_encoder(ACCEPTS["text 1.0.0 dots"])[0], [part], [])
    assert built == ["a", "b", "a", "b"]

"""The fault matrix: the real exporter process against the scripted Graph API fake
(tests/fake_graph.py, not our simulator), one account per failure kind beside healthy ones.

For every kind the test checks what a user sees: `threads_up`, `threads_last_error_reason`,
`threads_api_errors_total{reason}`, a warning log line naming the account and the reason,
and that healthy accounts report exactly what the upstream served. "Nothing is lost": the
exporter's `threads_api_requests_total` matches the calls the upstream received, and every
failed call is counted as an error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from exposition import samples, series, value
from fake_graph import (
    Behaviour,
    FakeGraph,
    body,
    delay,
    expected_quotas,
    graph_error,
    hang,
    healthy,
    huge,
    reset_mid_body,
    row,
)
from procs import RunningExporter, free_port

HTML_500 = b"<html><body><h1>500 Internal Server Error</h1></body></html>"
CFG = {"quota_total": 250, "quota_duration": 86400}
API_TIMEOUT = 2.0
SLOW_SECONDS = 1.5  # longer than the first scrape's budget, shorter than API_TIMEOUT


@dataclass(frozen=True)
class Case:
    behaviour: Behaviour
    reason: str | None  # expected threads_last_error_reason; None: the account is up
    quotas: dict[str, float] | None = None  # expected threads_quota_usage when up


CASES: dict[str, Case] = {
    "healthy-a": Case(healthy(10), None, expected_quotas(10)),
    "healthy-b": Case(healthy(20), None, expected_quotas(20)),
    # Unknown fields anywhere are ignored, not an error.
    "extra-keys": Case(healthy(30, surprise={"nested": [1, 2]}, note="new"), None,
                       expected_quotas(30)),
    "expired": Case(graph_error(400, 190, "Error validating access token: Session has "
                                "expired.", subcode=463), "token_invalid"),
    **{f"throttled-{code}": Case(graph_error(400, code, f"({code}) request limit reached"),
                                 "rate_limited") for code in (4, 17, 32, 613)},
    "permission": Case(graph_error(500, 10, "(#10) Application does not have permission"),
                       "permission"),
    # A token without threads_delete: the combined call fails with 10/HTTP 500, the exporter
    # asks group by group and reports the three groups it can read.
    "no-delete": Case(graph_error(500, 10, "(#10) no permission", deny="delete_quota_usage",
                                  base=40), None,
                      {k: v for k, v in expected_quotas(40).items() if k != "deletes"}),
    "html-500": Case(body(500, HTML_500, "text/html"), "server_error"),
    "html-502": Case(body(502, b"<html><h1>502 Bad Gateway</h1></html>", "text/html"),
                     "server_error"),
    "html-503": Case(body(503, b"<html>Service Unavailable</html>", "text/html"),
                     "server_error"),
    "truncated": Case(body(200, b'{"data":[{"quota_usage":12,"config":{"quota_to'),
                      "bad_response"),
    "not-json": Case(body(200, b"<html>OK</html>", "text/html"), "bad_response"),
    "nulls": Case(row([{"quota_usage": None, "config": None}]), "bad_response"),
    "strings": Case(row([{"quota_usage": "12", "config": {"quota_total": "250",
                                                           "quota_duration": "86400"}}]),
                    "bad_response"),
    "negative": Case(row([{"quota_usage": -3, "config": CFG}]), "bad_response"),
    "huge-number": Case(row([{"quota_usage": 10**30, "config": CFG}]), "bad_response"),
    "missing-keys": Case(row([{"config": CFG}]), "bad_response"),
    "data-not-list": Case(row({"quota_usage": 1, "config": CFG}), "bad_response"),
    "data-null-row": Case(row([None]), "bad_response"),
    # One good group among broken ones: that group is reported, the others are absent
    # (unknown), never 0.
    "partial": Case(row([{"quota_usage": 7, "config": CFG, "reply_quota_usage": None,
                          "reply_config": {"quota_total": 1000, "quota_duration": 86400},
                          "delete_quota_usage": -1, "delete_config": {"quota_total": 100},
                          "location_search_config": "500"}]), None, {"posts": 7.0}),
    "empty-data": Case(row([]), "bad_response"),
    "huge-body": Case(huge(64), "bad_response"),
    "reset": Case(reset_mid_body, "connection"),
    "hang": Case(hang, "timeout"),
    "slow": Case(delay(SLOW_SECONDS, healthy(50)), None, expected_quotas(50)),
}


def token(name: str) -> str:
    return f"tok-{name}"


def scrape(base: str, path: str, timeout_header: float) -> tuple[float, httpx.Response]:
    start = time.monotonic()
    r = httpx.get(base + path, timeout=timeout_header + 10,
                  headers={"X-Prometheus-Scrape-Timeout-Seconds": str(timeout_header)})
    return time.monotonic() - start, r


def test_fault_matrix(fake_graph: FakeGraph, config_file: Callable[..., Path],
                     run_exporter: Callable[..., RunningExporter]) -> None:
    for name, case in CASES.items():
        fake_graph.token(token(name), case.behaviour)
    config = config_file(fake_graph.base_url, {n: token(n) for n in CASES}, timeout=API_TIMEOUT)
    exporter = run_exporter("--config.file", str(config), "--log.format", "json")
    # Prometheus gives up after 1.5 s, the upstream needs SLOW_SECONDS: the exporter must
    # answer in time and report the account as timed out, not hang.
    took, r = scrape(exporter.base, "/probe?account=slow", 1.5)
    assert r.status_code == 200
    assert took < 1.5, f"/probe answered after {took:.2f}s, past the scrape timeout"
    first = samples(r.text)
    assert value(first, "threads_up", account="slow") == 0
    assert value(first, "threads_last_error_reason", account="slow", reason="timeout") == 1
    assert not series(first, "threads_quota_usage", account="slow")

    # A generous scrape lets every kind settle, the hanging one included (two attempts of
    # API_TIMEOUT each).
    took, r = scrape(exporter.base, "/metrics", 6)
    assert r.status_code == 200 and took < 6
    found = samples(r.text)
    # Cached readings and backoff: a repeat scrape is fast and asks nothing new.
    took, again = scrape(exporter.base, "/metrics", 6)
    assert again.status_code == 200 and took < 2
    logs = exporter.logs()
    exporter.stop()
    calls = {n: fake_graph.calls(token(n), "publishing_limit") for n in CASES}

    for name, case in CASES.items():
        up = value(found, "threads_up", account=name)
        reasons = series(found, "threads_last_error_reason", account=name)
        usage = {dict(lbl)["quota"]: v
                 for lbl, v in series(found, "threads_quota_usage", account=name).items()}
        requests = value(found, "threads_api_requests_total", account=name,
                         endpoint="publishing_limit")
        errors = {dict(lbl)["reason"]: v for lbl, v in
                  series(found, "threads_api_errors_total", account=name,
                         endpoint="publishing_limit").items()}
        warnings = [line for line in logs if line.get("msg") == "quota reading failed"
                    and line.get("account") == name]
        where = f"account {name}"
        assert requests == calls[name] > 0, where
        if case.reason is None:
            assert up == 1, where
            assert usage == case.quotas, where
            assert not reasons, where
            assert not warnings, where
            continue
        assert up == 0, where
        assert usage == {}, f"{where}: a failed reading must not turn into numbers"
        assert reasons == {frozenset({("account", name), ("reason", case.reason)}): 1}, where
        assert sum(errors.values()) == requests, f"{where}: every failed call is counted"
        assert case.reason in errors, where
        assert [w["reason"] for w in warnings] == [case.reason], where
    # The slow answer that missed the first scrape was not thrown away.
    assert calls["slow"] == 1
    # The many-megabyte answer was abandoned after the 1 MiB bound, not read to the end
    # (what was sent beyond that sits in socket buffers).
    assert fake_graph.bytes_sent(token("huge-body")) < 24 << 20
    # Throttled accounts are not hammered.
    assert all(calls[f"throttled-{c}"] <= 2 for c in (4, 17, 32, 613))
    # Every threads_* series the same (the process_* ones move with the process).
    def own(found: dict) -> dict:
        return {k: v for k, v in found.items() if k[0].startswith("threads_")}

    assert own(samples(again.text)) == own(found)


@pytest.mark.parametrize("upstream", ["refused", "unresolvable"])
def test_unreachable_upstream(upstream: str, config_file: Callable[..., Path],
                              run_exporter: Callable[..., RunningExporter]) -> None:
    base_url = (f"http://127.0.0.1:{free_port()}" if upstream == "refused"
                else "http://threads-api.invalid")
    config = config_file(base_url, {"a": "tok-a", "b": "tok-b"})
    exporter = run_exporter("--config.file", str(config), "--log.format", "json")
    took, r = scrape(exporter.base, "/metrics", 5)
    assert r.status_code == 200 and took < 5
    found = samples(r.text)
    logs = exporter.logs()
    for name in ("a", "b"):
        assert value(found, "threads_up", account=name) == 0
        assert not series(found, "threads_quota_usage", account=name)
        reasons = {dict(lbl)["reason"] for lbl in
                   series(found, "threads_last_error_reason", account=name)}
        # A resolver that cannot answer at all would make it a timeout; both are honest.
        assert reasons == {"connection"} or (upstream == "unresolvable"
                                             and reasons == {"timeout"}), reasons
        assert any(line.get("msg") == "quota reading failed" and line.get("account") == name
                   for line in logs)
    # The exporter's own metrics are still served.
    assert value(found, "threads_exporter_config_last_reload_successful") == 1
    assert json.dumps(logs).count("tok-") == 0

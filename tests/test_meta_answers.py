"""What Meta really sends, replayed by the fake from recorded answers (issue 12): throttling
with is_transient, containers Meta will not answer for, dev-mode apps refusing debug_token,
and a user_id that is not the token's user. Against the real exporter process."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from exposition import value
from fake_graph import (
    MEDIA_NOT_FOUND,
    NONEXISTING_STATUS,
    THROTTLED,
    FakeGraph,
    healthy,
    recorded,
)
from procs import BRAND_TOKEN, REGISTRATION, RunningExporter, json_logs
from waiting import eventually

APP_TOKEN = "TH|1000000000000001|fake-app-secret-value"
TOKEN_USER = "17841400000000001"


def test_a_throttled_reading_costs_exactly_one_call(
        fake_graph: FakeGraph, config_file: Callable[..., Path],
        run_exporter: Callable[..., RunningExporter]) -> None:
    fake_graph.token("tok-throttled", recorded(400, THROTTLED))
    exporter = run_exporter("--config.file", str(config_file(
        fake_graph.base_url, {"brand": "tok-throttled"}, quotas=["posts"])))
    found = exporter.metrics(timeout_header=5)
    assert value(found, "threads_last_error_reason", account="brand",
                 reason="rate_limited") == 1
    for _ in range(3):  # backing off: later scrapes inside the backoff cost nothing
        exporter.metrics(timeout_header=5)
    assert fake_graph.calls("tok-throttled", "publishing_limit") == 1


def test_containers_meta_will_not_answer_for_back_off_and_are_counted(
        fake_graph: FakeGraph, container_config: Callable[..., Path],
        run_exporter: Callable[..., RunningExporter]) -> None:
    """A media id registered by mistake (code 100) and a container Meta lost after FINISHED
    (code 24/4279009) are polled at a doubling pace and counted as unanswered; a stuck one
    backs off the same way and stays in threads_containers_stuck."""
    fake_graph.token(BRAND_TOKEN, healthy(1))
    fake_graph.container("101", recorded(400, NONEXISTING_STATUS))
    fake_graph.container("102", {"status": "FINISHED"}, recorded(400, MEDIA_NOT_FOUND))
    fake_graph.container("103", {"status": "IN_PROGRESS"})
    exporter = run_exporter("--config.file", str(container_config(
        fake_graph.base_url, poll_interval_seconds=1, stuck_poll_interval_seconds=1,
        finished_poll_interval_seconds=1, stuck_after_seconds=1,
        max_poll_interval_seconds=8)))
    for cid in ("101", "102", "103"):
        r = httpx.post(exporter.url("/api/v1/containers"), headers=REGISTRATION, timeout=10,
                       json={"account": "brand", "id": cid})
        assert r.status_code == 201
    began = time.monotonic()
    while time.monotonic() - began < 13:  # scraped far more often than anything is due
        exporter.metrics(timeout_header=2)
        time.sleep(0.25)
    polls = {cid: len(fake_graph.polls(cid)) for cid in ("101", "102", "103")}
    # At a fixed one-second pace each would have had ~13 polls. Backing off: the refused
    # one at 0, 1, 3, 7 s; the lost one after its FINISHED answer; the stuck one at 0, 1, 2,
    # 4, 8 s (a poll or two either way for scrape timing).
    assert 3 <= polls["101"] <= 5, polls
    assert 3 <= polls["102"] <= 6, polls
    assert 4 <= polls["103"] <= 6, polls
    found = exporter.metrics(timeout_header=2)
    assert value(found, "threads_containers_unanswered", account="brand") == 2
    assert value(found, "threads_containers_stuck", account="brand") == 1
    assert value(found, "threads_containers", account="brand", status="FINISHED") == 1
    listing = {c["id"]: c for c in httpx.get(exporter.url("/api/v1/containers"),
                                             headers=REGISTRATION, timeout=10).json()
               ["containers"]}
    lost = listing["102"]
    assert lost["status"] == "FINISHED" and lost["unanswered"]
    assert (lost["last_error_reason"], lost["last_error_code"],
            lost["last_error_subcode"]) == ("invalid_request", 24, 4279009)
    assert listing["101"]["last_error_code"] == 100 and listing["101"]["status"] is None
    assert listing["101"]["next_poll_at"] is not None
    assert not listing["103"]["unanswered"] and listing["103"]["stuck"]


@pytest.mark.parametrize("where", ["api", "account", "file"])
def test_dev_mode_apps_give_the_expiry_with_an_app_access_token(
        fake_graph: FakeGraph, config_file: Callable[..., Path], tmp_path: Path,
        run_exporter: Callable[..., RunningExporter], where: str) -> None:
    fake_graph.token("tok-dev", healthy(1), expires_at=1_900_000_000)
    fake_graph.dev_mode.add("tok-dev")
    fake_graph.app_tokens.add(APP_TOKEN)
    path = config_file(fake_graph.base_url, {"brand": "tok-dev"}, quotas=["posts"])
    text = path.read_text()
    if where == "api":
        text = text.replace("api:\n", f"api:\n  app_access_token: '{APP_TOKEN}'\n")
    elif where == "account":
        text = text.replace("  name: brand\n",
                            f"  name: brand\n  app_access_token: '{APP_TOKEN}'\n")
    else:
        (tmp_path / "app-token").write_text(APP_TOKEN + "\n")
        text = text.replace("api:\n", f"api:\n  app_access_token_file: {tmp_path / 'app-token'}\n")
    path.write_text(text)
    exporter = run_exporter("--config.file", str(path), "--log.level", "debug")
    found = exporter.metrics(timeout_header=5)
    assert value(found, "threads_token_expiry_timestamp_seconds", account="brand") == 1.9e9
    [asked] = [r for r in fake_graph.requests() if r.endpoint == "debug_token"]
    assert (asked.token, asked.query["input_token"]) == (APP_TOKEN, "tok-dev")
    exporter.stop()
    seen = exporter.proc.output() + repr(found)
    assert APP_TOKEN not in seen and "fake-app-secret-value" not in seen and "tok-dev" not in seen


def test_without_an_app_token_a_dev_mode_app_leaves_the_expiry_unknown(
        fake_graph: FakeGraph, config_file: Callable[..., Path],
        run_exporter: Callable[..., RunningExporter]) -> None:
    fake_graph.token("tok-dev", healthy(1))
    fake_graph.dev_mode.add("tok-dev")
    exporter = run_exporter("--config.file", str(config_file(
        fake_graph.base_url, {"brand": "tok-dev"}, quotas=["posts"])))
    found = exporter.metrics(timeout_header=5)
    assert value(found, "threads_up", account="brand") == 1  # untouched
    assert value(found, "threads_token_expiry_timestamp_seconds", account="brand") is None
    assert value(found, "threads_api_errors_total", account="brand", endpoint="debug_token",
                 reason="invalid_request") == 1


def test_a_wrong_user_id_is_a_config_error_not_an_outage(
        fake_graph: FakeGraph, config_file: Callable[..., Path],
        run_exporter: Callable[..., RunningExporter]) -> None:
    fake_graph.token("tok-brand", healthy(1))
    fake_graph.users["tok-brand"] = TOKEN_USER
    path = config_file(fake_graph.base_url, {"brand": "tok-brand"}, quotas=["posts"])
    path.write_text(path.read_text().replace("  name: brand\n",
                                             "  name: brand\n  user_id: '17841499999999999'\n"))
    exporter = run_exporter("--config.file", str(path), "--log.format", "json",
                            "--web.enable-lifecycle")
    for _ in range(3):
        found = exporter.metrics(timeout_header=5)
    assert value(found, "threads_up", account="brand") == 0
    assert value(found, "threads_last_error_reason", account="brand",
                 reason="invalid_request") == 1
    assert value(found, "threads_api_requests_total", account="brand", endpoint="me") == 1
    assert fake_graph.calls("tok-brand", "publishing_limit") == 0  # never with the wrong id
    [line] = [entry for entry in json_logs(exporter.proc.output())
              if entry.get("msg", "").startswith("user_id does not belong")]
    assert (line["account"], line["user_id"], line["token_user_id"]) == (
        "brand", "17841499999999999", TOKEN_USER)
    # Fixed by a reload: verified again (one more /me), then read.
    path.write_text(path.read_text().replace("17841499999999999", TOKEN_USER))
    assert httpx.post(exporter.url("/-/reload"), timeout=10).status_code == 200

    def up() -> None:
        assert value(exporter.metrics(timeout_header=5), "threads_up", account="brand") == 1

    eventually(up, timeout=10)
    assert fake_graph.calls("tok-brand", "me") == 2
    assert "tok-brand" not in exporter.proc.output()

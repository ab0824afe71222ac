"""The container polling policy and metric families, as pure functions."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace

import pytest
from prometheus_client.exposition import generate_latest

from threads_exporter.containers.families import ContainerSnapshot, container_families
from threads_exporter.containers.policy import (
    ERRORS,
    PROCESSING,
    PROCESSING_SUM,
    STATUS_CHANGES,
    Policy,
    expired,
    failed,
    is_expired,
    is_stuck,
    next_poll_at,
    observed,
    poll_interval,
)
from threads_exporter.containers.scheduler import IDLE_STEP, MIN_IDLE_STEP, idle_wait
from threads_exporter.containers.store import Row, Tallies
from threads_exporter.fields import ERROR_MESSAGES, error_label
from threads_exporter.graph.errors import ApiError
from threads_exporter.graph.parse import ContainerStatus

P = Policy(poll_interval=60, stuck_poll_interval=300, finished_poll_interval=900,
           stuck_after=300, expire_after=86400)


def row(status: str | None = None, reached: frozenset[str] = frozenset(), polls: int = 0,
        registered_at: float = 1000.0) -> Row:
    return Row("brand", "123", status, None, reached, registered_at, None, None, None, polls, 0,
               None, registered_at, None)


@pytest.mark.parametrize(("status", "age", "expected"), [
    (None, 0, 60),  # never answered: at the normal pace
    ("IN_PROGRESS", 0, 60),
    ("IN_PROGRESS", 299, 60),  # Meta: once a minute for five minutes
    ("IN_PROGRESS", 300, 300),  # then stuck: slower
    ("FINISHED", 10, 900),  # waiting for its publisher
    ("PUBLISHED", 10, None),
    ("ERROR", 10, None),
    ("EXPIRED", 10, None),
])
def test_poll_interval(status: str | None, age: float, expected: float | None) -> None:
    assert poll_interval(status, age, P) == expected


def test_never_more_often_than_poll_interval() -> None:
    fast = Policy(poll_interval=120, stuck_poll_interval=5, finished_poll_interval=1)
    for status in (None, "IN_PROGRESS", "FINISHED"):
        for age in (0, 100, 10_000):
            for refusals in (0, 1, 5):
                assert poll_interval(status, age, fast, refusals) >= 120
    assert poll_interval("IN_PROGRESS", 100, fast) == 120
    assert poll_interval("FINISHED", 10_000, fast) == 120


def test_next_poll_at_counts_from_the_poll() -> None:
    assert next_poll_at("IN_PROGRESS", 1000, 1100, P) == 1160
    assert next_poll_at("IN_PROGRESS", 1000, 1300, P) == 1600  # just stuck: the stuck pace
    assert next_poll_at("IN_PROGRESS", 1000, 1400, P) == 1800  # then doubling (see below)
    assert next_poll_at("PUBLISHED", 1000, 1100, P) is None


def test_stuck_and_expired() -> None:
    assert not is_stuck("IN_PROGRESS", 1000, 1299, P)
    assert is_stuck("IN_PROGRESS", 1000, 1300, P)
    assert not is_stuck("FINISHED", 1000, 5000, P)
    assert not is_stuck(None, 1000, 5000, P)
    assert not is_expired(row("FINISHED"), 1000 + 86399, P)
    assert is_expired(row("FINISHED"), 1000 + 86400, P)
    assert is_expired(row(None), 1000 + 86400, P)
    assert not is_expired(row("PUBLISHED"), 1000 + 10**6, P)


def test_error_labels_are_bounded() -> None:
    for message in ERROR_MESSAGES:
        assert error_label(message) == message
    assert len(ERROR_MESSAGES) == 10
    assert error_label("SOMETHING_NEW") == "OTHER"
    assert error_label(None) == "OTHER"
    assert error_label("unknown") == "OTHER"  # case matters: the API's values are upper case


def counters(change) -> dict[tuple[str, str], float]:
    return {(f, label): v for f, _, label, v in change.counters}


def test_in_progress_to_finished_counts_once_with_processing_time() -> None:
    first = observed(row(None), ContainerStatus("IN_PROGRESS"), 1010, 1010, P)
    assert counters(first) == {(STATUS_CHANGES, "IN_PROGRESS"): 1}
    assert first.fields["next_poll_at"] == 1070
    assert first.fields["first_seen"] == 1010
    r = row("IN_PROGRESS", frozenset({"IN_PROGRESS"}), polls=1)
    done = observed(r, ContainerStatus("FINISHED"), 1040, 1042, P)
    assert counters(done) == {(STATUS_CHANGES, "FINISHED"): 1, (PROCESSING, "60.0"): 1,
                              (PROCESSING, PROCESSING_SUM): 42}
    assert done.fields["next_poll_at"] == 1040 + 900
    assert done.fields["polls"] == 2
    assert (done.expect_status, done.expect_polls) == ("IN_PROGRESS", 1)
    again = observed(row("FINISHED", frozenset({"IN_PROGRESS", "FINISHED"})),
                     ContainerStatus("FINISHED"), 2000, 2000, P)
    assert again.counters == ()


def test_published_between_polls_still_counts_as_processed() -> None:
    r = row("IN_PROGRESS", frozenset({"IN_PROGRESS"}))
    c = observed(r, ContainerStatus("PUBLISHED"), 1100, 1100, P)
    assert counters(c) == {(STATUS_CHANGES, "FINISHED"): 1, (STATUS_CHANGES, "PUBLISHED"): 1,
                           (PROCESSING, "120.0"): 1, (PROCESSING, PROCESSING_SUM): 100}
    assert c.fields["next_poll_at"] is None
    assert c.fields["finished_at"] == 1100


def test_error_counts_its_reason_once() -> None:
    r = row("IN_PROGRESS", frozenset({"IN_PROGRESS"}))
    c = observed(r, ContainerStatus("ERROR", "INVALID_BIT_RATE"), 1003, 1003, P)
    assert counters(c) == {(STATUS_CHANGES, "ERROR"): 1, (ERRORS, "INVALID_BIT_RATE"): 1,
                           (PROCESSING, "5.0"): 1, (PROCESSING, PROCESSING_SUM): 3}
    again = observed(row("ERROR", frozenset({"IN_PROGRESS", "ERROR"})),
                     ContainerStatus("ERROR", "INVALID_BIT_RATE"), 1100, 1100, P)
    assert again.counters == ()
    odd = observed(row(None), ContainerStatus("ERROR", "NEW_REASON"), 1001, 1001, P)
    assert counters(odd)[(ERRORS, "OTHER")] == 1


def test_failed_poll_keeps_status_and_pace() -> None:
    r = row("IN_PROGRESS", frozenset({"IN_PROGRESS"}), polls=3)
    c = failed(r, ApiError("timeout", "no answer"), 1100, P)
    assert "status" not in c.fields and c.counters == ()
    assert c.fields["polls"] == 4 and c.fields["poll_errors"] == 1
    assert c.fields["next_poll_at"] == 1160
    assert c.fields["last_error"].startswith("timeout")


def test_expired_without_a_call() -> None:
    c = expired(row("FINISHED", frozenset({"IN_PROGRESS", "FINISHED"})), 90000)
    assert c.fields["status"] == "EXPIRED" and c.fields["next_poll_at"] is None
    assert counters(c) == {(STATUS_CHANGES, "EXPIRED"): 1}
    stuck = expired(row("IN_PROGRESS", frozenset({"IN_PROGRESS"})), 90000)
    assert (PROCESSING, PROCESSING_SUM) not in counters(stuck)  # never finished processing


def test_families_have_every_series_from_the_start_and_pass_promtool() -> None:
    tallies = Tallies(
        counts={("brand", "ERROR"): 2, ("brand", "IN_PROGRESS"): 1},
        stuck={"brand": 1}, backlog={},
        counters={(STATUS_CHANGES, "brand", "ERROR"): 2.0,
                  (ERRORS, "brand", "UNKNOWN"): 2.0,
                  (PROCESSING, "brand", "5.0"): 1.0, (PROCESSING, "brand", "60.0"): 1.0,
                  (PROCESSING, "brand", PROCESSING_SUM): 44.0,
                  (STATUS_CHANGES, "other", "ERROR"): 9.0})
    families = {f.name: f for f in container_families(ContainerSnapshot(True, tallies),
                                                      ["brand", "support"])}
    gauges = {tuple(s.labels.values()): s.value for s in families["threads_containers"].samples}
    assert gauges[("brand", "ERROR")] == 2 and gauges[("support", "PUBLISHED")] == 0
    assert len(gauges) == 10
    errors = families["threads_container_errors"].samples
    assert len(errors) == 2 * 11
    changes = {tuple(s.labels.values()) for s in
               families["threads_container_status_changes"].samples}
    assert ("other", "ERROR") not in changes  # only the requested accounts
    hist = {(s.name, s.labels.get("le")): s.value for s in
            families["threads_container_processing_seconds"].samples
            if s.labels["account"] == "brand"}
    assert hist[("threads_container_processing_seconds_bucket", "2.5")] == 0
    assert hist[("threads_container_processing_seconds_bucket", "5.0")] == 1
    assert hist[("threads_container_processing_seconds_bucket", "60.0")] == 2
    assert hist[("threads_container_processing_seconds_bucket", "+Inf")] == 2
    assert hist[("threads_container_processing_seconds_count", None)] == 2
    assert hist[("threads_container_processing_seconds_sum", None)] == 44

    class Registry:
        def collect(self):
            return families.values()

    text = generate_latest(Registry())  # type: ignore[arg-type]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_disabled_tracking_has_no_families_and_a_failing_store_says_so() -> None:
    assert container_families(ContainerSnapshot(False, enabled=False), ["brand"]) == []
    [health] = container_families(ContainerSnapshot(False), ["brand"])
    assert health.name == "threads_exporter_container_store_up" and health.samples[0].value == 0


def polls_in_a_day(policy: Policy, *, status: str | None, refused: bool) -> int:
    """Calls one container costs over 24 h when every answer is the same."""
    t, polls, refusals = 0.0, 0, 0
    while t < 86400:
        polls += 1
        refusals = refusals + 1 if refused else 0
        interval = poll_interval(status, t, policy, refusals)
        assert interval is not None
        t += interval
    return polls


DEFAULTS = Policy(poll_interval=60, stuck_poll_interval=300, finished_poll_interval=900,
                  stuck_after=300, expire_after=86400, max_poll_interval=3600)


def test_stuck_containers_back_off_doubling_to_the_ceiling() -> None:
    ages = [300.0]
    while ages[-1] < 20_000:
        interval = poll_interval("IN_PROGRESS", ages[-1], DEFAULTS)
        assert interval is not None
        ages.append(ages[-1] + interval)
    assert ages[:6] == [300, 600, 1200, 2400, 4800, 8400]  # 300, 600, 1200, 2400, then 3600
    # At most 40 calls over 24 h at the defaults (it was ~292 at a fixed 5-minute pace).
    assert polls_in_a_day(DEFAULTS, status="IN_PROGRESS", refused=False) <= 40


def test_refused_containers_back_off_and_transient_failures_keep_the_pace() -> None:
    assert [poll_interval(None, 0, DEFAULTS, n) for n in (1, 2, 3, 4, 5, 9)] == \
        [300, 600, 1200, 2400, 3600, 3600]
    assert polls_in_a_day(DEFAULTS, status=None, refused=True) <= 40  # was ~1,440
    # FINISHED, then Meta lost it ("Media Not Found"): the same backoff, not the 15-min pace.
    assert poll_interval("FINISHED", 5000, DEFAULTS, 4) == 2400
    row = Row("brand", "1", "FINISHED", None, frozenset({"FINISHED"}), 0.0, 10.0, 10.0, 10.0,
              3, 0, None, 910.0, None)
    lost = failed(row, ApiError("invalid_request", "Media Not Found", 24, 4279009), 1000.0,
                  DEFAULTS)
    assert lost.fields["refusals"] == 1 and lost.fields["next_poll_at"] == 1300
    assert (lost.fields["error_code"], lost.fields["error_subcode"]) == (24, 4279009)
    assert "status" not in lost.fields  # FINISHED stays the last known status
    again = failed(replace(row, refusals=1), ApiError("invalid_request", "lost", 24), 1300.0,
                   DEFAULTS)
    assert again.fields["refusals"] == 2 and again.fields["next_poll_at"] == 1900
    for reason in ("server_error", "timeout", "connection", "bad_response", "rate_limited"):
        change = failed(replace(row, refusals=3), ApiError(reason, "x"), 1000.0, DEFAULTS)
        assert change.fields["refusals"] == 0
        assert change.fields["next_poll_at"] == 1900  # the FINISHED pace
    answered = observed(replace(row, refusals=3), ContainerStatus("PUBLISHED"), 1000.0, 1000.0,
                        DEFAULTS)
    assert answered.fields["refusals"] == 0 and answered.fields["error_reason"] is None


def test_an_idle_round_looks_again_when_the_next_container_is_due() -> None:
    assert idle_wait(soonest=100.3, now=100.0) == pytest.approx(0.3)
    # Never later than a step (a registration may come meanwhile) nor sooner than the
    # results in flight take to commit; with nothing tracked, a step.
    assert idle_wait(soonest=500.0, now=100.0) == IDLE_STEP
    assert idle_wait(soonest=99.0, now=100.0) == MIN_IDLE_STEP
    assert idle_wait(soonest=None, now=100.0) == IDLE_STEP


"""Container metric families from the store's tallies (pure), built fresh for every scrape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client.core import Metric

from threads_exporter.containers.policy import (
    ERRORS,
    PROCESSING,
    PROCESSING_SUM,
    STATUS_CHANGES,
)
from threads_exporter.containers.store import Tallies
from threads_exporter.metrics import (
    LABEL_VALUES,
    PROCESSING_BUCKETS,
    counter,
    gauge,
    histogram,
    histogram_buckets,
)

_PROCESSING_LABELS = [le for le, _ in histogram_buckets(PROCESSING_BUCKETS,
                                                        [0] * (len(PROCESSING_BUCKETS) + 1))]


@dataclass(frozen=True)
class ContainerSnapshot:
    store_ok: bool
    tallies: Tallies | None = None
    enabled: bool = True


def container_families(snapshot: ContainerSnapshot, accounts: Sequence[str]) -> list[Metric]:
    """Container metrics of the given accounts; every series exists from the start (zeros),
    so rate() and alerts work from the first error on."""
    if not snapshot.enabled:
        return []
    health = gauge("threads_exporter_container_store_up")
    health.add_metric([], 1 if snapshot.store_ok else 0)
    if snapshot.tallies is None:
        return [health]
    return [health, *account_families(snapshot.tallies, accounts)]


def account_families(t: Tallies, accounts: Sequence[str]) -> list[Metric]:
    """The per-account container families (all but the store's health)."""
    return status_families(t, accounts) + pressure_families(t, accounts)


def status_families(t: Tallies, accounts: Sequence[str]) -> list[Metric]:
    """What changes only when a container changes status: counts, counters, processing."""
    containers = gauge("threads_containers")
    changes = counter("threads_container_status_changes_total")
    errors = counter("threads_container_errors_total")
    processing = histogram("threads_container_processing_seconds")
    statuses = LABEL_VALUES["status"]
    c = t.counters
    for a in accounts:
        for s in statuses:
            containers.add_metric([a, s], t.counts.get((a, s), 0))
            changes.add_metric([a, s], c.get((STATUS_CHANGES, a, s), 0))
        for m in LABEL_VALUES["error_message"]:
            errors.add_metric([a, m], c.get((ERRORS, a, m), 0))
        counts = [int(c.get((PROCESSING, a, le), 0)) for le in _PROCESSING_LABELS]
        processing.add_metric([a], histogram_buckets(PROCESSING_BUCKETS, counts),
                              c.get((PROCESSING, a, PROCESSING_SUM), 0.0))
    return [containers, changes, errors, processing]


def pressure_families(t: Tallies, accounts: Sequence[str]) -> list[Metric]:
    """What moves with every poll round: stuck, backlog, unanswered."""
    stuck = gauge("threads_containers_stuck")
    backlog = gauge("threads_containers_poll_backlog")
    unanswered = gauge("threads_containers_unanswered")
    for a in accounts:
        stuck.add_metric([a], t.stuck.get(a, 0))
        backlog.add_metric([a], t.backlog.get(a, 0))
        unanswered.add_metric([a], t.unanswered.get(a, 0))
    return [stuck, backlog, unanswered]


Inputs = dict[str, list[tuple[object, ...]]]


def status_inputs(t: Tallies) -> Inputs:
    """What status_families reads, grouped by account (accounts with no containers and no
    history are absent): equal inputs give an equal exposition. Likewise pressure_inputs."""
    status: Inputs = {}
    for (a, s), n in t.counts.items():
        status.setdefault(a, []).append((s, n))
    for (f, a, label), v in t.counters.items():
        status.setdefault(a, []).append((f, label, v))
    return status


def pressure_inputs(t: Tallies) -> Inputs:
    pressure: Inputs = {}
    for kind, d in (("stuck", t.stuck), ("backlog", t.backlog), ("unanswered", t.unanswered)):
        for a, n in d.items():
            pressure.setdefault(a, []).append((kind, n))
    return pressure

"""The metric contract: one declarative table of every metric the exporter exposes.

The family builders, the README's metric table (generated, checked by a test), the tests'
exposition checks and the dashboard and rule lints all read this table; nothing else
spells a metric's name, type, help or labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.utils import floatToGoString

from threads_exporter.fields import (
    CONTAINER_STATUSES,
    ENDPOINTS,
    ERROR_MESSAGES,
    OTHER_ERROR,
    QUOTA_GROUPS,
    USAGE_HEADERS,
    USAGE_KINDS,
)
from threads_exporter.graph.errors import REASONS
from threads_exporter.graph.stats import DURATION_BUCKETS

Kind = Literal["gauge", "counter", "histogram"]
PROCESSING_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

# Label values that are bounded; a label not listed here (account, version) is free text.
LABEL_VALUES: dict[str, tuple[str, ...]] = {
    "quota": QUOTA_GROUPS,
    "reason": REASONS,
    "endpoint": ENDPOINTS,
    "status": CONTAINER_STATUSES,
    "error_message": (*ERROR_MESSAGES, OTHER_ERROR),
    "scope": tuple(USAGE_HEADERS.values()),
    "kind": USAGE_KINDS,
}


@dataclass(frozen=True)
class Spec:
    name: str  # as exposed in the text format: counters end in _total
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    section: str = "quotas"  # the README groups the table by this
    buckets: tuple[float, ...] = ()

    @property
    def family_name(self) -> str:
        """The name prometheus_client's families take (without a counter's _total)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


SPECS: tuple[Spec, ...] = (
    # --- quotas: one reading per account per cache TTL ---
    Spec("threads_up", "gauge", "1 if the latest quota reading of the account succeeded, "
         "else 0", ("account",)),
    Spec("threads_last_error_reason", "gauge", "1 for the reason the latest quota reading "
         "failed; absent while the account is up", ("account", "reason")),
    Spec("threads_quota_usage", "gauge", "Actions used in the current rolling window",
         ("account", "quota")),
    Spec("threads_quota_limit", "gauge", "Actions allowed in the rolling window "
         "(quota_total)", ("account", "quota")),
    Spec("threads_quota_window_seconds", "gauge", "Length of the rolling quota window "
         "(quota_duration)", ("account", "quota")),
    Spec("threads_last_success_timestamp_seconds", "gauge", "Unix time of the last "
         "successful quota reading", ("account",)),
    Spec("threads_token_expiry_timestamp_seconds", "gauge", "Unix time the access token "
         "expires (debug_token expires_at), where the API gives it", ("account",)),
    # --- the exporter's calls to the Threads API ---
    Spec("threads_api_requests_total", "counter", "Calls made to the Threads API",
         ("account", "endpoint"), "api"),
    Spec("threads_api_errors_total", "counter", "Failed calls to the Threads API, by reason",
         ("account", "endpoint", "reason"), "api"),
    Spec("threads_api_request_duration_seconds", "histogram", "Latency of calls to the "
         "Threads API", ("endpoint",), "api", DURATION_BUCKETS),
    Spec("threads_api_usage_ratio", "gauge", "Call-volume usage Meta reports in the "
         "X-App-Usage (scope app) and X-Business-Use-Case-Usage (scope business) headers, "
         "where it sends them", ("account", "scope", "kind"), "api"),
    # --- media containers ---
    Spec("threads_containers", "gauge", "Tracked containers now in each status (final ones "
         "until pruned)", ("account", "status"), "containers"),
    Spec("threads_container_status_changes_total", "counter", "Tracked containers that "
         "reached a status (each container counted once per status)", ("account", "status"),
         "containers"),
    Spec("threads_container_errors_total", "counter", "Containers that ended in ERROR, by "
         "error_message (undocumented messages as OTHER)", ("account", "error_message"),
         "containers"),
    Spec("threads_containers_stuck", "gauge", "Containers IN_PROGRESS for longer than the "
         "stuck threshold (containers.stuck_after_seconds)", ("account",), "containers"),
    Spec("threads_container_processing_seconds", "histogram", "Time from registration to "
         "the first poll that saw processing over (FINISHED, ERROR or PUBLISHED)",
         ("account",), "containers", PROCESSING_BUCKETS),
    Spec("threads_containers_poll_backlog", "gauge", "Containers whose poll is due but has "
         "not been made yet", ("account",), "containers"),
    Spec("threads_containers_unanswered", "gauge", "Tracked containers not final whose "
         "latest poll Meta refused (an id that is no container, or a container Meta lost); "
         "polled at a backing-off pace", ("account",), "containers"),
    # --- the exporter itself ---
    Spec("threads_exporter_build_info", "gauge", "Version of the exporter; always 1",
         ("version", "python_version"), "exporter"),
    Spec("threads_exporter_config_last_reload_successful", "gauge", "1 if the last config "
         "(re)load succeeded, else 0", (), "exporter"),
    Spec("threads_exporter_config_last_reload_success_timestamp_seconds", "gauge",
         "Unix time of the last successful config (re)load", (), "exporter"),
    Spec("threads_exporter_container_store_up", "gauge", "1 if the container state file is "
         "usable (its last write succeeded), else 0; absent when container tracking is off",
         (), "exporter"),
)
BY_NAME: dict[str, Spec] = {s.name: s for s in SPECS}
SECTIONS = {
    "quotas": "Publishing quotas (one reading per account per `cache_ttl_seconds`)",
    "api": "The exporter's calls to the Threads API",
    "containers": "Media containers (from the state file; every series exists from the "
                  "start with 0)",
    "exporter": "The exporter itself (plus the standard `process_*` and `python_*` "
                "metrics of prometheus_client)",
}


def _of(name: str, kind: Kind) -> Spec:
    s = BY_NAME[name]
    if s.kind != kind:
        raise TypeError(f"{name} is a {s.kind}, not a {kind}")
    return s


def gauge(name: str) -> GaugeMetricFamily:
    s = _of(name, "gauge")
    return GaugeMetricFamily(s.name, s.help, labels=list(s.labels))


def counter(name: str) -> CounterMetricFamily:
    s = _of(name, "counter")
    return CounterMetricFamily(s.family_name, s.help, labels=list(s.labels))


def histogram(name: str) -> HistogramMetricFamily:
    s = _of(name, "histogram")
    return HistogramMetricFamily(s.name, s.help, labels=list(s.labels))


def histogram_buckets(bounds: Sequence[float], counts: Sequence[int | float],
                      ) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs from per-bucket counts (the last one is +Inf)."""
    out = []
    running: float = 0
    les = [str(floatToGoString(b)) for b in bounds]  # type: ignore[no-untyped-call]
    for bound, n in zip((*les, "+Inf"), counts, strict=True):
        running += n
        out.append((bound, running))
    return out


def bucket_label(bounds: Sequence[float], value: float) -> str:
    """The `le` of the smallest bucket a value falls in."""
    for bound in bounds:
        if value <= bound:
            return str(floatToGoString(bound))  # type: ignore[no-untyped-call]
    return "+Inf"


def markdown() -> str:
    """The README's metric table."""
    lines = []
    for section, title in SECTIONS.items():
        lines += [f"**{title}**", "", "| metric | type | labels | meaning |", "|---|---|---|---|"]
        for s in SPECS:
            if s.section == section:
                labels = ", ".join(f"`{lbl}`" for lbl in s.labels) or ""
                lines.append(f"| `{s.name}` | {s.kind} | {labels} | {s.help} |")
        lines.append("")
    values = "; ".join(f"`{lbl}`: " + ", ".join(f"`{v}`" for v in vals)
                       for lbl, vals in LABEL_VALUES.items())
    lines.append(f"Bounded label values: {values}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")

"""The one config of the monitoring bundle: the mixin's ``_config``.

Every selector, threshold, ``for`` duration, severity and URL of the rules and dashboards is
here, and nowhere else. ``python monitoring/generate.py`` renders the rules, the dashboards
and the Kubernetes PrometheusRule from it, and writes it as ``mixin/config.libsonnet``, so a
jsonnet user overrides the same keys::

    (import 'threads-mixin/mixin.libsonnet') + {
      _config+:: {
        threadsSelector: 'job="threads"',
        grafanaUrl: 'https://grafana.example.com',
        alertSeverity+: {ThreadsAccountFailing: 'critical'},
      },
    }

Numbers used inside PromQL are small (days, hours, ratios) so that ``%g`` prints them
the same way in Python and jsonnet.
"""

from __future__ import annotations

from typing import Any

CONFIG: dict[str, Any] = {
    # --- selectors --------------------------------------------------------------------
    # Selects the exporter's series (and Prometheus' `up` of its targets) in every rule and
    # dashboard variable. The default covers the two scrape jobs the README shows (all
    # accounts on /metrics, and one target per account on /probe).
    "threadsSelector": 'job=~"threads-exporter|threads-probe"',
    # Per-account alerts aggregate by these labels, so that an account scraped by two jobs
    # or two exporter replicas alerts once. Add e.g. `cluster` when account names repeat
    # across clusters.
    "accountLabels": "account",
    # --- links ------------------------------------------------------------------------
    # Alerts carry runbook_url = runbookUrl#<alert name in lower case> and a dashboard_url
    # on grafanaUrl with the account (or exporter instance) selected.
    "runbookUrl": "https://github.com/example/threads-exporter/blob/main/docs/runbook.md",
    "grafanaUrl": "http://localhost:3000",
    # --- dashboards -------------------------------------------------------------------
    "overviewUid": "threads-exporter-overview",
    "containersUid": "threads-exporter-containers",
    "accountUid": "threads-exporter-account",
    "dashboardTags": ["threads-exporter", "threads"],
    "dashboardRefresh": "1m",
    "dashboardTimeFrom": "now-24h",
    # Rows of the Overview's "Worst accounts" table.
    "worstAccounts": 20,
    # --- quota thresholds -------------------------------------------------------------
    "quotaWarningRatio": 0.8,  # ThreadsQuotaHigh
    "quotaCriticalRatio": 0.95,  # ThreadsQuotaCritical
    # ThreadsQuotaExhaustionPredicted: at the pace of the last hour the quota runs out
    # within this many hours, and it is already this full (node-mixin pairs predict_linear
    # with a level condition the same way).
    "quotaExhaustionHours": 4,
    "quotaExhaustionMinRatio": 0.5,
    # --- tokens -----------------------------------------------------------------------
    "tokenExpiryWarningDays": 7,  # ThreadsTokenExpiringSoon
    "tokenExpiryCriticalDays": 1,  # ThreadsTokenExpiresWithinOneDay
    # The expiry series disappears once debug_token fails (as it does for an expired
    # token); the expiry alerts keep using the last value seen this long.
    "tokenExpiryLookback": "2d",
    # ThreadsTokenExpiryUnknown: no expiry seen for this long for an account tracked as long.
    "tokenExpiryUnknownAfter": "1d",
    # --- Threads API call volume (X-App-Usage) -----------------------------------------
    "appUsageRatio": 0.9,  # ThreadsAppUsageHigh
    # --- media containers -------------------------------------------------------------
    # Failures are judged over this window as a share of the containers processed in it,
    # and only from this many failures on (one failure of one container is no trend).
    "containerFailureWindow": "1h",
    "containerFailureMinCount": 3,
    # Meta-side failures (FAILED_*, UNKNOWN, OTHER): ThreadsContainerProcessingFailures.
    "containerMetaFailureRatio": 0.2,
    # The customer's media rejected (INVALID_*): ThreadsContainerMediaRejected.
    "containerMediaFailureRatio": 0.1,
    # Containers that EXPIRED unpublished within this window: ThreadsContainersExpired.
    "containerExpiredWindow": "1h",
    # ThreadsContainerPollBacklog: at every evaluation for its `for`, more containers due
    # and not polled than this many, and than this share of the unfinished ones (a scrape
    # always leaves the few that fell due while it ran).
    "containerPollBacklogMin": 10,
    "containerPollBacklogRatio": 0.1,
    # --- alert `for` durations and severities -----------------------------------------
    "alertFor": {
        "ThreadsQuotaHigh": "5m",
        "ThreadsQuotaCritical": "1m",
        "ThreadsQuotaExhaustionPredicted": "15m",
        "ThreadsAccountFailing": "10m",
        "ThreadsTokenInvalid": "5m",
        "ThreadsTokenExpiringSoon": "1h",
        "ThreadsTokenExpiresWithinOneDay": "5m",
        "ThreadsTokenExpiryUnknown": "30m",
        "ThreadsAppUsageHigh": "5m",
        "ThreadsExporterDown": "5m",
        "ThreadsExporterAbsent": "15m",
        "ThreadsConfigReloadFailed": "5m",
        "ThreadsContainerStoreDown": "5m",
        "ThreadsContainerPollBacklog": "15m",
        "ThreadsContainersStuck": "10m",
        "ThreadsContainersUnanswered": "15m",
        "ThreadsContainersExpired": "0m",
        "ThreadsContainerProcessingFailures": "0m",
        "ThreadsContainerMediaRejected": "0m",
    },
    "alertSeverity": {
        "ThreadsQuotaHigh": "warning",
        "ThreadsQuotaCritical": "critical",
        "ThreadsQuotaExhaustionPredicted": "warning",
        "ThreadsAccountFailing": "warning",
        "ThreadsTokenInvalid": "critical",
        "ThreadsTokenExpiringSoon": "warning",
        "ThreadsTokenExpiresWithinOneDay": "critical",
        "ThreadsTokenExpiryUnknown": "warning",
        "ThreadsAppUsageHigh": "critical",
        "ThreadsExporterDown": "critical",
        "ThreadsExporterAbsent": "critical",
        "ThreadsConfigReloadFailed": "warning",
        "ThreadsContainerStoreDown": "critical",
        "ThreadsContainerPollBacklog": "warning",
        "ThreadsContainersStuck": "warning",
        "ThreadsContainersUnanswered": "warning",
        "ThreadsContainersExpired": "warning",
        "ThreadsContainerProcessingFailures": "warning",
        "ThreadsContainerMediaRejected": "info",
    },
}

# Values computed from others (in jsonnet too: `self.quotaWarningRatio * 100`), so that an
# override of the source changes them as well.
DERIVED: dict[str, tuple[str, float]] = {
    "quotaWarningPercent": ("quotaWarningRatio", 100),
    "quotaCriticalPercent": ("quotaCriticalRatio", 100),
}


def resolve(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config with `overrides` merged in (one level deep, as jsonnet's `+:` would) and the
    derived values computed."""
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in CONFIG.items()}
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    for key, (source, factor) in DERIVED.items():
        config[key] = config[source] * factor
    return config

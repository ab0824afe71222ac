"""Recording and alerting rules, built from the config (see config.py).

Conventions every alert keeps (tests/test_rules.py checks them):
- per-account alerts aggregate ``by (accountLabels)``, so an account scraped by two jobs or
  two exporter replicas alerts once, and nothing that changes while the condition holds
  (an error reason, say) is a label: a changed label restarts ``for``;
- counts in annotations are rounded; every alert has summary, description, runbook_url
  and dashboard_url (the dashboard that shows the problem, the account selected).
"""

from __future__ import annotations

from typing import Any

from monitoring.template import Ref, T

S = "%(threadsSelector)s"
BY = "%(accountLabels)s"

# Dashboard links, the account (or the exporter instance) selected.
ACCOUNT_URL = T("%(grafanaUrl)s/d/%(accountUid)s?var-account={{ $labels.account }}")
CONTAINERS_URL = T("%(grafanaUrl)s/d/%(containersUid)s?var-account={{ $labels.account }}")
INSTANCE_URL = T("%(grafanaUrl)s/d/%(overviewUid)s?var-instance={{ $labels.instance }}")
OVERVIEW_URL = T("%(grafanaUrl)s/d/%(overviewUid)s")

# "expires in 2d 22h 0m 0s" while ahead, "expired 3h 0m 0s ago" once past (the last expiry
# seen keeps the alert alive after the series is gone).
EXPIRES = ('{{ if lt $value 0.0 }}expired {{ $value | humanizeDuration | reReplaceAll "^-" "" }}'
           ' ago{{ else }}expires in {{ $value | humanizeDuration }}{{ end }}')
COUNT = '{{ $value | printf "%%.0f" }}'


def alert(name: str, expr: str, summary: str, description: str,
          dashboard: T) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": T(expr),
        "for": Ref(f"alertFor.{name}"),
        "labels": {"severity": Ref(f"alertSeverity.{name}")},
        "annotations": {
            "summary": T(summary),
            "description": T(description),
            "runbook_url": T(f"%(runbookUrl)s#{name.lower()}"),
            "dashboard_url": dashboard,
        },
    }


def _failures(matcher: str) -> str:
    """Container failures of an account in the window, rounded, one exporter's view."""
    return (f"round(max by ({BY}) (sum without (error_message) (increase("
            f"threads_container_errors_total{{{S}, {matcher}}}[%(containerFailureWindow)s]))))")


def _failure_ratio(matcher: str) -> str:
    return (f"max by ({BY}) (sum without (error_message) (increase("
            f"threads_container_errors_total{{{S}, {matcher}}}[%(containerFailureWindow)s])))\n"
            f"  / max by ({BY}) (increase("
            f"threads_container_processing_seconds_count{{{S}}}[%(containerFailureWindow)s]))")


def _token_left() -> str:
    return (f"min by ({BY}) (last_over_time(threads_token_expiry_timestamp_seconds{{{S}}}"
            f"[%(tokenExpiryLookback)s]) > 0) - time()")


def _reason() -> str:
    """The current error reasons of the alert's account, from threads_last_error_reason."""
    query = (f"max by (reason) (threads_last_error_reason{{{S}, account=\"%%s\"}} == 1)")
    return (f"{{{{ with printf `{query}` $labels.account | query }}}}"
            "{{ range $i, $r := . }}{{ if $i }}, {{ end }}{{ $r.Labels.reason }}{{ end }}"
            "{{ else }}unknown{{ end }}")


def quota_alerts() -> list[dict[str, Any]]:
    ratio = f"threads:quota_usage:ratio{{{S}}}"
    return [
        alert("ThreadsQuotaHigh",
              f"max by ({BY}, quota) ({ratio}) >= %(quotaWarningRatio)g",
              "Threads {{ $labels.quota }} quota of account {{ $labels.account }} is above "
              "{{ %(quotaWarningRatio)g | humanizePercentage }}",
              "Account {{ $labels.account }} has used {{ $value | humanizePercentage }} of its "
              "{{ $labels.quota }} quota in the current rolling window. Publishing calls "
              "start failing when it reaches 100%%.",
              ACCOUNT_URL),
        alert("ThreadsQuotaCritical",
              f"max by ({BY}, quota) ({ratio}) >= %(quotaCriticalRatio)g",
              "Threads {{ $labels.quota }} quota of account {{ $labels.account }} is above "
              "{{ %(quotaCriticalRatio)g | humanizePercentage }}",
              "Account {{ $labels.account }} has used {{ $value | humanizePercentage }} of its "
              "{{ $labels.quota }} quota. Pause non-essential publishing until old actions "
              "age out of the rolling window.",
              ACCOUNT_URL),
        alert("ThreadsQuotaExhaustionPredicted",
              f"max by ({BY}, quota) (\n"
              f"  (threads_quota_usage{{{S}}} / (threads_quota_limit{{{S}}} > 0)\n"
              f"    >= %(quotaExhaustionMinRatio)g < 1)\n"
              f"  and predict_linear(threads_quota_usage{{{S}}}[1h], "
              f"%(quotaExhaustionHours)g * 3600)\n"
              f"    >= threads_quota_limit{{{S}}}\n"
              f")",
              "Threads {{ $labels.quota }} quota of account {{ $labels.account }} runs out "
              "within %(quotaExhaustionHours)g hours",
              "Account {{ $labels.account }} has used {{ $value | humanizePercentage }} of its "
              "{{ $labels.quota }} quota; at the pace of the last hour it reaches the limit "
              "within %(quotaExhaustionHours)g hours.",
              ACCOUNT_URL),
    ]


def account_alerts() -> list[dict[str, Any]]:
    return [
        alert("ThreadsAccountFailing",
              f"max by ({BY}) (threads_up{{{S}}}) == 0",
              "Threads account {{ $labels.account }} is failing",
              "No exporter can read the publishing quota of account {{ $labels.account }} "
              f"(latest reason: {_reason()}); its quota series are absent.",
              ACCOUNT_URL),
        alert("ThreadsTokenInvalid",
              f"max by ({BY}) (threads_last_error_reason{{{S}, reason=\"token_invalid\"}}) "
              "== 1",
              "Threads token of account {{ $labels.account }} is invalid",
              "Meta rejects the access token of account {{ $labels.account }} (Graph code "
              "190: expired, revoked, or the password changed). Nothing is read for the "
              "account until a new token is in the exporter's config.",
              ACCOUNT_URL),
        alert("ThreadsTokenExpiringSoon",
              f"(\n  {_token_left()}\n  < %(tokenExpiryWarningDays)g * 86400\n)\n"
              f"and on ({BY}) max by ({BY}) (threads_up{{{S}}})",
              "Threads token of account {{ $labels.account }} expires within "
              "%(tokenExpiryWarningDays)g days",
              f"The access token of account {{{{ $labels.account }}}} {EXPIRES}. Refresh it "
              "(GET /refresh_access_token) and update the exporter's config.",
              ACCOUNT_URL),
        alert("ThreadsTokenExpiresWithinOneDay",
              f"(\n  {_token_left()}\n  < %(tokenExpiryCriticalDays)g * 86400\n)\n"
              f"and on ({BY}) max by ({BY}) (threads_up{{{S}}})",
              "Threads token of account {{ $labels.account }} expires within "
              "%(tokenExpiryCriticalDays)g day(s)",
              f"The access token of account {{{{ $labels.account }}}} {EXPIRES}; after that "
              "every reading for the account fails with token_invalid. Refresh it now.",
              ACCOUNT_URL),
        alert("ThreadsTokenExpiryUnknown",
              f"max by ({BY}) (threads_up{{{S}}})\n"
              f"and on ({BY}) max by ({BY}) (threads_up{{{S}}} "
              "offset %(tokenExpiryUnknownAfter)s)\n"
              f"unless on ({BY}) max by ({BY}) (last_over_time("
              f"threads_token_expiry_timestamp_seconds{{{S}}}[%(tokenExpiryUnknownAfter)s]))",
              "Token expiry of Threads account {{ $labels.account }} unknown for "
              "%(tokenExpiryUnknownAfter)s",
              "debug_token has not told the expiry of the access token of account "
              "{{ $labels.account }} for %(tokenExpiryUnknownAfter)s (its failures are "
              "counted in threads_api_errors_total{endpoint=\"debug_token\"}), so the token "
              "expiry alerts cannot see this token.",
              ACCOUNT_URL),
        alert("ThreadsAppUsageHigh",
              f"max by (kind) (threads_api_usage_ratio{{{S}, scope=\"app\"}}) "
              ">= %(appUsageRatio)g",
              "Threads app call volume ({{ $labels.kind }}) is at "
              "{{ $value | humanizePercentage }} of Meta's limit",
              "Meta reports the app's {{ $labels.kind }} at {{ $value | humanizePercentage }} "
              "of its limit (X-App-Usage, a rolling hour). At 100%% Meta throttles every "
              "call of the app (code 4): the publishing pipeline's, not only the exporter's.",
              OVERVIEW_URL),
    ]


def exporter_alerts() -> list[dict[str, Any]]:
    return [
        alert("ThreadsExporterDown",
              f"up{{{S}}} == 0",
              "threads-exporter target {{ $labels.instance }} is down",
              "Prometheus has failed to scrape {{ $labels.instance }} (job {{ $labels.job }}): "
              "no Threads quota or container data is collected from it.",
              INSTANCE_URL),
        alert("ThreadsExporterAbsent",
              f"absent(up{{{S}}})",
              "No threads-exporter target is scraped",
              "Prometheus has no scrape target matching {%(threadsSelector)s}. Check the "
              "scrape configuration and service discovery.",
              OVERVIEW_URL),
        alert("ThreadsConfigReloadFailed",
              f"threads_exporter_config_last_reload_successful{{{S}}} == 0",
              "threads-exporter {{ $labels.instance }} rejected its new config",
              "The last configuration reload of {{ $labels.instance }} failed; the exporter "
              "keeps running with the previous config. Run threads-exporter --config.check.",
              INSTANCE_URL),
    ]


def container_alerts() -> list[dict[str, Any]]:
    backlog = f"sum without (account) (threads_containers_poll_backlog{{{S}}})"
    return [
        alert("ThreadsContainerStoreDown",
              f"threads_exporter_container_store_up{{{S}}} == 0",
              "threads-exporter {{ $labels.instance }} cannot write its container store",
              "The state file of {{ $labels.instance }} is not writable (disk full, read-only "
              "mount): container registrations are answered 503 and container polling has "
              "stopped. Quota metrics are unaffected.",
              INSTANCE_URL),
        alert("ThreadsContainerPollBacklog",
              f"{backlog} > %(containerPollBacklogMin)g\n"
              f"and {backlog}\n"
              f"  > %(containerPollBacklogRatio)g * sum without (account, status) "
              f"(threads_containers{{{S}, status=~\"IN_PROGRESS|FINISHED\"}})",
              "threads-exporter {{ $labels.instance }} falls behind polling containers",
              f"{COUNT} containers on {{{{ $labels.instance }}}} are due for a poll and not "
              "polled, at every evaluation: the polls do not fit into the scrapes "
              "(api.max_concurrency, scrape timeout, upstream latency).",
              INSTANCE_URL),
        alert("ThreadsContainersStuck",
              f"max by ({BY}) (threads_containers_stuck{{{S}}}) > 0",
              "Threads media containers of account {{ $labels.account }} are stuck "
              "IN_PROGRESS",
              f"{COUNT} containers of account {{{{ $labels.account }}}} have been IN_PROGRESS "
              "for longer than containers.stuck_after_seconds (Meta advises polling for at "
              "most 5 minutes). GET /api/v1/containers?account={{ $labels.account }} lists "
              "them.",
              CONTAINERS_URL),
        alert("ThreadsContainersUnanswered",
              f"max by ({BY}) (threads_containers_unanswered{{{S}}}) > 0",
              "Meta does not answer for media containers of account {{ $labels.account }}",
              f"Meta refuses the latest poll of {COUNT} tracked containers of account "
              "{{ $labels.account }} (an id that is no container, or a container Meta lost). "
              "They will not publish: create them again.",
              CONTAINERS_URL),
        alert("ThreadsContainersExpired",
              f"max by ({BY}) (increase(threads_container_status_changes_total{{{S}, "
              "status=\"EXPIRED\"}[%(containerExpiredWindow)s])) > 0",
              "Media containers of account {{ $labels.account }} expired unpublished",
              f"{COUNT} media containers of account {{{{ $labels.account }}}} reached EXPIRED "
              "in the last %(containerExpiredWindow)s: posts that never went out.",
              CONTAINERS_URL),
        alert("ThreadsContainerProcessingFailures",
              f"{_failures(META)} >= %(containerFailureMinCount)g\n"
              f"and on ({BY})\n{_failure_ratio(META)}\n"
              "  >= %(containerMetaFailureRatio)g",
              "Meta fails to process media containers of account {{ $labels.account }}",
              f"{COUNT} media containers of account {{{{ $labels.account }}}} failed on Meta's "
              "side (FAILED_*, UNKNOWN, OTHER) in the last %(containerFailureWindow)s, at "
              "least {{ %(containerMetaFailureRatio)g | humanizePercentage }} of those "
              "processed.",
              CONTAINERS_URL),
        alert("ThreadsContainerMediaRejected",
              f"{_failures(MEDIA)} >= %(containerFailureMinCount)g\n"
              f"and on ({BY})\n{_failure_ratio(MEDIA)}\n"
              "  >= %(containerMediaFailureRatio)g",
              "Meta rejects the media of account {{ $labels.account }}",
              f"{COUNT} media containers of account {{{{ $labels.account }}}} were rejected "
              "for their media (INVALID_*: aspect ratio, duration, bit rate, frame rate, "
              "audio) in the last %(containerFailureWindow)s, at least "
              "{{ %(containerMediaFailureRatio)g | humanizePercentage }} of those processed.",
              CONTAINERS_URL),
    ]


MEDIA = 'error_message=~"INVALID_.*"'
META = 'error_message!~"INVALID_.*"'


def groups() -> list[dict[str, Any]]:
    return [
        {"name": "threads-exporter.recording", "rules": [
            {"record": "threads:quota_usage:ratio",
             "expr": T(f"threads_quota_usage{{{S}}} / (threads_quota_limit{{{S}}} > 0)")},
        ]},
        {"name": "threads-exporter.quotas", "rules": quota_alerts()},
        {"name": "threads-exporter.accounts", "rules": account_alerts()},
        {"name": "threads-exporter.exporter", "rules": exporter_alerts()},
        {"name": "threads-exporter.containers", "rules": container_alerts()},
    ]


def alert_names() -> list[str]:
    return [r["alert"] for g in groups() for r in g["rules"] if "alert" in r]

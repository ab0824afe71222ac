"""The Grafana dashboards, built from the config (see config.py).

- Threads / Overview: built for hundreds of accounts. First a headline row of counts (what
  is wrong across the fleet), then the worst accounts as a table linking to the per-account
  dashboard, then the top-N views, and per-account detail only in collapsed rows.
- Threads / Media containers: stuck, failed, expired and unanswered first.
- Threads / Account: one account, everything about it; the alerts' dashboard_url.

Conventions (tests/test_dashboards.py checks them): every query carries the config's
selector and the job/instance/account variables; per-account series are deduplicated with
`max by (account, ...)` (two jobs or replicas scraping one account count once); a counter is
only ever shown through rate(), increase() or the difference to `offset $__interval`, never
summed raw; totals "in the range" use $__range.
"""

from __future__ import annotations

from typing import Any

from monitoring.grafana import (
    SEL,
    SEL_TARGET,
    UP_MAPPINGS,
    account_link,
    bargauge,
    dashboard,
    label_table,
    ranked_table,
    row,
    stat,
    steps,
    target,
    timeseries,
)
from monitoring.template import Ref, T

RATE = "$__rate_interval"
HORIZON = Ref("quotaExhaustionHours", scale=3600)
QUOTA_STEPS = steps(("green", None), ("orange", Ref("quotaWarningRatio")),
                    ("red", Ref("quotaCriticalRatio")))
TOKEN_STEPS = steps(("red", None), ("orange", Ref("tokenExpiryCriticalDays", scale=86400)),
                    ("green", Ref("tokenExpiryWarningDays", scale=86400)))
EXHAUSTION_STEPS = steps(("red", None), ("green", HORIZON))
COUNT_RED = steps(("green", None), ("red", 1))
COUNT_ORANGE = steps(("green", None), ("orange", 1))
STORE_MAPPINGS = [{"options": {"0": {"color": "red", "index": 0, "text": "NOT WRITABLE"},
                               "1": {"color": "green", "index": 1, "text": "OK"}},
                   "type": "value"}]


def ratio(at: str = "") -> str:
    return (f"threads_quota_usage{{{SEL}}}{at} / (threads_quota_limit{{{SEL}}}{at} > 0)")


REMAINING = f"clamp_min(threads_quota_limit{{{SEL}}} - threads_quota_usage{{{SEL}}}, 0)"
WINDOW = f"threads_quota_window_seconds{{{SEL}}}"
EXHAUSTION = (f"{REMAINING} / (deriv(threads_quota_usage{{{SEL}}}[1h]) > 0) < {WINDOW}"
              f" or {WINDOW}")
TOKEN_LEFT = (f"(last_over_time(threads_token_expiry_timestamp_seconds{{{SEL}}}"
              f"[%(tokenExpiryLookback)s]) > 0) - time()")
TOKEN_INVALID = f'threads_last_error_reason{{{SEL}, reason="token_invalid"}} == 1'
ERRORS = "threads_container_errors_total"
META = 'error_message!~"INVALID_.*"'
MEDIA = 'error_message=~"INVALID_.*"'
EXPIRED = 'status="EXPIRED"'


def in_range(counter: str, matchers: str = "", by: str = "account") -> str:
    """How much a counter grew over the dashboard's range, per `by`, one exporter's view."""
    extra = f", {matchers}" if matchers else ""
    return f"max by ({by}) (increase({counter}{{{SEL}{extra}}}[$__range]))"


def per_interval(counter: str, by: str) -> str:
    """Growth of a counter in each interval of the graph: the value minus the value one
    interval earlier. The intervals tile the range exactly, so the bars add up to the
    growth over the range (increase() over $__rate_interval at a shorter step counts every
    event in several overlapping windows)."""
    sel = f"{counter}{{{SEL}}}"
    return (f"sum by ({by}) (max by (account, {by}) (clamp_min({sel} - {sel} offset "
            f"$__interval, 0)))")


# --- Overview ---------------------------------------------------------------------------


def headline(y: int) -> list[dict[str, Any]]:
    def count(title: str, description: str | T, expr: str, x: int, *,
              thresholds: dict[str, Any], unit: str = "none") -> dict[str, Any]:
        return stat(title, description, unit, [target(expr, instant=True)], (x, y, 3, 4),
                    thresholds=thresholds, text_mode="value", decimals=0)

    by_account_up = f"max by (account) (threads_up{{{SEL}}})"
    ratio_max = f"max by (account, quota) ({ratio()})"
    return [
        count("Accounts", "Accounts the selected exporters read (threads_up series, one per "
              "account however many jobs or replicas scrape it).",
              f"count({by_account_up}) or vector(0)", 0,
              thresholds=steps(("blue", None))),
        count("Accounts failing", "Accounts whose latest publishing-quota reading failed "
              "(threads_up 0). The table below names them with the reason. Alert: "
              "ThreadsAccountFailing.",
              f"count({by_account_up} == 0) or vector(0)", 3, thresholds=COUNT_RED),
        count(T("Quotas ≥ %(quotaWarningPercent)g %%"),
              "Account quotas (posts, replies, deletes, location_searches) used at or above "
              "the ThreadsQuotaHigh threshold in the current rolling window.",
              f"count({ratio_max} >= %(quotaWarningRatio)g) or vector(0)", 6,
              thresholds=COUNT_ORANGE),
        count(T("Quotas ≥ %(quotaCriticalPercent)g %%"),
              "Account quotas used at or above the ThreadsQuotaCritical threshold: "
              "publishing stops at 100 %.",
              f"count({ratio_max} >= %(quotaCriticalRatio)g) or vector(0)", 9,
              thresholds=COUNT_RED),
        count("Shortest time to exhaustion",
              "The soonest any selected quota runs out at the pace of the last hour (its "
              "remaining actions divided by deriv over 1 h), capped at the quota window: "
              "the window length means nothing runs out. Red below the "
              "ThreadsQuotaExhaustionPredicted horizon.",
              f"min({EXHAUSTION})", 12, thresholds=EXHAUSTION_STEPS, unit="s"),
        count(T("Tokens ≤ %(tokenExpiryWarningDays)g d or invalid"),
              "Accounts whose access token expires within the ThreadsTokenExpiringSoon "
              "horizon (or has expired: the last expiry seen is kept for the lookback), or "
              "is rejected by Meta right now (reason token_invalid). Alerts: "
              "ThreadsTokenExpiringSoon, ThreadsTokenExpiresWithinOneDay, "
              "ThreadsTokenInvalid.",
              f"count(\n  max by (account) ({TOKEN_LEFT} < %(tokenExpiryWarningDays)g * "
              f"86400)\n  or max by (account) ({TOKEN_INVALID})\n) or vector(0)", 15,
              thresholds=COUNT_RED),
        count("Stuck containers now",
              "Media containers IN_PROGRESS for longer than the stuck threshold, all "
              "selected accounts together. Alert: ThreadsContainersStuck.",
              f"sum(max by (account) (threads_containers_stuck{{{SEL}}})) or vector(0)",
              18, thresholds=COUNT_RED),
        count("Failed containers in range",
              "Media containers that ended in ERROR within the dashboard's time range, all "
              "selected accounts together (increase over $__range, rounded). Alerts: "
              "ThreadsContainerProcessingFailures, ThreadsContainerMediaRejected.",
              f"round(sum({in_range(ERRORS, by='account, error_message')})) or vector(0)",
              21, thresholds=COUNT_ORANGE),
    ]


def worst_accounts(grid: tuple[int, int, int, int]) -> dict[str, Any]:
    rank = (f"max by (account) (\n"
            f"  label_replace(2 * (threads_up{{{SEL}}} == bool 0), \"part\", \"up\", \"\", \"\")\n"
            f"  or label_replace({ratio()}, \"part\", \"quota\", \"\", \"\")\n"
            f"  or label_replace(\n"
            f"    ({TOKEN_LEFT} < bool %(tokenExpiryWarningDays)g * 86400)\n"
            f"    + 0.5 * ({TOKEN_LEFT} < bool %(tokenExpiryCriticalDays)g * 86400),\n"
            f"    \"part\", \"token\", \"\", \"\")\n"
            f"  or label_replace(clamp_max(threads_containers_stuck{{{SEL}}}, 1), "
            f"\"part\", \"stuck\", \"\", \"\")\n"
            f")")
    bg = "color-background"
    columns = [
        ("Status", f"max by (account) (threads_up{{{SEL}}})",
         {"unit": "none", "mappings": UP_MAPPINGS, "cell": bg,
          "thresholds": steps(("red", None), ("green", 1))}),
        ("Worst quota", f"max by (account) ({ratio()})",
         {"unit": "percentunit", "thresholds": QUOTA_STEPS, "cell": bg, "decimals": 0}),
        ("Runs out in", f"min by (account) ({EXHAUSTION})",
         {"unit": "s", "thresholds": EXHAUSTION_STEPS, "cell": bg}),
        ("Token expires in", f"min by (account) ({TOKEN_LEFT})",
         {"unit": "s", "thresholds": TOKEN_STEPS, "cell": bg}),
        ("Stuck now", f"max by (account) (threads_containers_stuck{{{SEL}}})",
         {"unit": "none", "thresholds": COUNT_RED, "cell": bg}),
        ("Failed in range", f"round({in_range(ERRORS)})",
         {"unit": "none", "thresholds": COUNT_ORANGE, "cell": bg}),
        ("reason value", f"max by (account, reason) (threads_last_error_reason{{{SEL}}} == 1)",
         {"unit": "none", "hide": True}),
    ]
    return ranked_table(
        "Worst accounts",
        T("The %(worstAccounts)g accounts most in trouble, worst first: failing accounts, "
          "then tokens expiring within %(tokenExpiryCriticalDays)g day(s), then by the "
          "highest share of any quota (a token within %(tokenExpiryWarningDays)g days or "
          "stuck containers rank like a full quota). Every column sorts on a click; the "
          "account name opens the account's dashboard."),
        grid, rank=rank, columns=columns, labels=["reason"],
        no_value="No account data")


def overview() -> dict[str, Any]:
    y = 0
    panels: list[dict[str, Any]] = [row("Fleet at a glance", y), *headline(y + 1)]
    y += 5
    panels += [row("Accounts most in trouble", y), worst_accounts((0, y + 1, 24, 12))]
    y += 13
    panels += [
        row("Quotas", y),
        timeseries("Quota used over time: the 10 highest now",
                   "Share of each quota used, over time, for the 10 account quotas fullest at "
                   "the end of the range (topk at end()). The window is rolling (24 h by "
                   "default): usage falls again as old actions age out. Dashed lines: the "
                   "ThreadsQuotaHigh and ThreadsQuotaCritical thresholds.",
                   "percentunit",
                   [target(f"{ratio()}\nand on (job, instance, account, quota) "
                           f"topk(10, {ratio(' @ end()')})", "{{account}} / {{quota}}")],
                   (0, y + 1, 12, 8), thresholds=QUOTA_STEPS, defaults={"min": 0, "max": 1}),
        bargauge("Time until exhaustion: the 10 soonest",
                 "Remaining actions divided by the growth of usage over the last hour "
                 "(deriv), for the 10 account quotas that run out soonest. Capped at the "
                 "quota window (24 h by default): a bar at the window length means the quota "
                 "does not run out at the current pace. Red below the "
                 "ThreadsQuotaExhaustionPredicted horizon.",
                 "s", [target(f"bottomk(10, {EXHAUSTION})", "{{account}} / {{quota}}",
                              instant=True)],
                 (12, y + 1, 12, 8), thresholds=EXHAUSTION_STEPS, defaults={"min": 0}),
    ]
    y += 9
    panels += [
        row("Failing accounts and tokens", y),
        label_table("Failing accounts and why",
                    "Accounts whose latest quota reading failed, with the error reason "
                    "(threads_last_error_reason: token_invalid, rate_limited, permission, "
                    "invalid_request, server_error, timeout, connection, bad_response). Empty "
                    "while every account is healthy. Alerts: ThreadsAccountFailing, "
                    "ThreadsTokenInvalid.",
                    [target(f"max by (account, reason) (threads_last_error_reason{{{SEL}}} "
                            "== 1)", instant=True, fmt="table")],
                    (0, y + 1, 12, 8), columns=["account", "reason"],
                    no_value="No account failing"),
        bargauge("Tokens expiring soonest",
                 "Time left until the access tokens of the 10 accounts that expire soonest "
                 "(debug_token expires_at; negative once expired, the last expiry seen kept "
                 "for the lookback). Orange within ThreadsTokenExpiringSoon's days, red "
                 "within ThreadsTokenExpiresWithinOneDay's. Long-lived tokens last 60 days "
                 "and can be refreshed once they are 24 h old.",
                 "s", [target(f"bottomk(10, min by (account) ({TOKEN_LEFT}))", "{{account}}",
                              instant=True)],
                 (12, y + 1, 12, 8), thresholds=TOKEN_STEPS),
    ]
    panels[-2]["fieldConfig"]["overrides"] = [{
        "matcher": {"id": "byName", "options": "account"},
        "properties": [{"id": "links", "value": [account_link()]}]}]
    y += 9
    panels += [row("Threads API", y), *api_panels(y + 1, per_account=False)]
    y += 17
    panels += [row("Exporter", y), *exporter_panels(y + 1)]
    y += 14
    panels.append(row("Per account detail (select accounts first)", y, per_account_detail(y + 1)))
    return dashboard(
        "overviewUid", "Threads / Overview",
        "Publishing-quota headroom, failing accounts, token expiry and the exporter's own "
        "calls to the Threads API, for fleets of hundreds of accounts (threads-exporter).",
        panels)


def api_panels(y: int, *, per_account: bool) -> list[dict[str, Any]]:
    by = "endpoint"
    legend = "{{endpoint}}"
    w = 12 if per_account else 8
    panels = [
        timeseries("Threads API calls by endpoint",
                   "Calls the exporter makes to the Threads API per second, by endpoint "
                   "(publishing_limit, container, debug_token, me), all selected accounts "
                   "together. Every call counts against the app's call-volume limit.",
                   "reqps",
                   [target(f"sum by ({by}) (rate(threads_api_requests_total{{{SEL}}}"
                           f"[{RATE}]))", legend)],
                   (0, y, w, 8)),
        timeseries("Threads API errors by reason",
                   "Failed calls to the Threads API per second, by endpoint and reason "
                   "(token_invalid, rate_limited, permission, invalid_request, server_error, "
                   "timeout, connection, bad_response).",
                   "reqps",
                   [target(f"sum by ({by}, reason) (rate(threads_api_errors_total{{{SEL}}}"
                           f"[{RATE}]))", f"{legend} {{{{reason}}}}")],
                   (w, y, w, 8)),
    ]
    if per_account:
        return panels
    return [
        *panels,
        timeseries("Threads API latency",
                   "Latency of the exporter's calls to the Threads API by endpoint "
                   "(threads_api_request_duration_seconds): median and 99th percentile. "
                   "Not per account: the histogram has only the endpoint label.",
                   "s",
                   [target(f"histogram_quantile({q}, sum by (le, endpoint) (rate("
                           f"threads_api_request_duration_seconds_bucket{{{SEL_TARGET}}}"
                           f"[{RATE}])))", f"p{round(q * 100)} {{{{endpoint}}}}", ref=ref)
                    for q, ref in ((0.5, "A"), (0.99, "B"))],
                   (16, y, 8, 8)),
        timeseries("Threads API error ratio: the 10 highest",
                   "Share of the exporter's calls to the Threads API that failed, for the 10 "
                   "accounts with the highest share at each point (0 when there were calls "
                   "and none failed).",
                   "percentunit",
                   [target(f"topk(10, (sum by (account) (rate(threads_api_errors_total{{{SEL}}}"
                           f"[{RATE}])) or 0 * sum by (account) (rate("
                           f"threads_api_requests_total{{{SEL}}}[{RATE}]))) / sum by (account) "
                           f"(rate(threads_api_requests_total{{{SEL}}}[{RATE}])))",
                           "{{account}}")],
                   (0, y + 8, 12, 8), defaults={"min": 0}),
        timeseries("Meta call-volume usage (X-App-Usage)",
                   "The app's call volume as Meta reports it in X-App-Usage (scope app) and "
                   "X-Business-Use-Case-Usage (scope business), the highest over the selected "
                   "accounts, as a share of the limit. At 100 % Meta throttles every call of "
                   "the app. Dashed line: the ThreadsAppUsageHigh threshold. Empty where Meta "
                   "sends no such header.",
                   "percentunit",
                   [target(f"max by (scope, kind) (threads_api_usage_ratio{{{SEL}}})",
                           "{{scope}} {{kind}}")],
                   (12, y + 8, 12, 8),
                   thresholds=steps(("green", None), ("red", Ref("appUsageRatio"))),
                   defaults={"min": 0}),
    ]


def exporter_panels(y: int) -> list[dict[str, Any]]:
    return [
        stat("Exporter scrape",
             "Prometheus' up for each threads-exporter target in the selected jobs (targets "
             "that exposed threads_up in the last day). Alerts: ThreadsExporterDown, "
             "ThreadsExporterAbsent.",
             "none",
             [target(f"up{{{SEL_TARGET}}} and on (job, instance) "
                     f"last_over_time(threads_up{{{SEL}}}[1d])", "{{instance}}", instant=True)],
             (0, y, 6, 8), thresholds=steps(("red", None), ("green", 1)),
             mappings=[{"options": {"0": {"color": "red", "index": 0, "text": "DOWN"},
                                    "1": {"color": "green", "index": 1, "text": "UP"}},
                        "type": "value"}]),
        stat("Config reload",
             "threads_exporter_config_last_reload_successful: OK when the last config "
             "(re)load succeeded; FAILING means a reload was rejected and the old config is "
             "still in use. Alert: ThreadsConfigReloadFailed.",
             "none",
             [target(f"threads_exporter_config_last_reload_successful{{{SEL_TARGET}}}",
                     "{{instance}}", instant=True)],
             (6, y, 6, 8), thresholds=steps(("red", None), ("green", 1)),
             mappings=UP_MAPPINGS),
        stat("Container store",
             "threads_exporter_container_store_up: whether each exporter can write its "
             "container state file. NOT WRITABLE means registrations get 503 and container "
             "polling has stopped. Alert: ThreadsContainerStoreDown.",
             "none",
             [target(f"threads_exporter_container_store_up{{{SEL_TARGET}}}", "{{instance}}",
                     instant=True)],
             (12, y, 6, 8), thresholds=steps(("red", None), ("green", 1)),
             mappings=STORE_MAPPINGS),
        bargauge("Oldest successful readings",
                 "Seconds since the last successful quota reading, for the 10 accounts "
                 "read longest ago (threads_last_success_timestamp_seconds). With the default "
                 "60 s cache this stays near a minute; more means readings are failing.",
                 "s",
                 [target(f"topk(10, time() - max by (account) "
                         f"(threads_last_success_timestamp_seconds{{{SEL}}}))", "{{account}}",
                         instant=True)],
                 (18, y, 6, 8), defaults={"min": 0}),
        label_table("Exporter versions",
                    "threads_exporter_build_info: exporter and Python version of each target.",
                    [target(f"threads_exporter_build_info{{{SEL_TARGET}}}", instant=True,
                            fmt="table")],
                    (0, y + 8, 24, 5), columns=["job", "instance", "version", "python_version"]),
    ]


def per_account_detail(y: int) -> list[dict[str, Any]]:
    return [
        stat("Account status",
             "threads_up per selected account: OK when the latest publishing-quota reading "
             "succeeded, FAILING when it did not (its quota series are then absent, never "
             "zero). Pick a few accounts in the Account variable first: one tile each.",
             "none",
             [target(f"max by (account) (threads_up{{{SEL}}})", "{{account}}", instant=True)],
             (0, y, 8, 6), thresholds=steps(("red", None), ("green", 1)),
             mappings=UP_MAPPINGS),
        stat("Token expires in",
             "Time left until each selected account's access token expires (expires_at "
             "from debug_token; negative once expired; accounts whose token never expires "
             "are not shown). Orange within the ThreadsTokenExpiringSoon horizon, red within "
             "ThreadsTokenExpiresWithinOneDay's.",
             "s", [target(f"min by (account) ({TOKEN_LEFT})", "{{account}}", instant=True)],
             (8, y, 16, 6), thresholds=TOKEN_STEPS),
        bargauge("Quota used (share of limit)",
                 "Actions used in the current rolling window divided by the limit, per "
                 "selected account and quota (posts, replies, deletes, location_searches). "
                 "Orange from the ThreadsQuotaHigh threshold, red from ThreadsQuotaCritical's.",
                 "percentunit",
                 [target(f"max by (account, quota) ({ratio()})", "{{account}} / {{quota}}",
                         instant=True)],
                 (0, y + 6, 12, 9), thresholds=QUOTA_STEPS, defaults={"min": 0, "max": 1}),
        bargauge("Remaining actions",
                 "Actions still available in the current rolling window "
                 "(threads_quota_limit - threads_quota_usage, never below 0), per selected "
                 "account and quota.",
                 "short",
                 [target(f"min by (account, quota) ({REMAINING})", "{{account}} / {{quota}}",
                         instant=True)],
                 (12, y + 6, 12, 9), defaults={"min": 0}),
        timeseries("Quota used over time",
                   "Share of each quota used over time, per selected account and quota. The "
                   "window is rolling: usage falls again as old actions age out.",
                   "percentunit",
                   [target(f"max by (account, quota) ({ratio()})", "{{account}} / {{quota}}")],
                   (0, y + 15, 24, 8), thresholds=QUOTA_STEPS, defaults={"min": 0, "max": 1}),
    ]


# --- Media containers -------------------------------------------------------------------


def container_counts(y: int) -> list[dict[str, Any]]:
    status = "threads_container_status_changes_total"

    def count(title: str, description: str, expr: str, x: int,
              thresholds: dict[str, Any]) -> dict[str, Any]:
        return stat(title, description, "none", [target(expr, instant=True)], (x, y, 4, 4),
                    thresholds=thresholds, text_mode="value", decimals=0)

    def now(metric: str) -> str:
        return f"sum(max by (account) ({metric}{{{SEL}}})) or vector(0)"

    return [
        count("Stuck now", "Containers IN_PROGRESS for longer than the stuck threshold "
              "(threads_containers_stuck). Alert: ThreadsContainersStuck.",
              now("threads_containers_stuck"), 0, COUNT_RED),
        count("Failed on Meta's side in range",
              "Containers that ended in ERROR with FAILED_*, UNKNOWN or OTHER within the "
              "time range: Meta could not process them. Alert: "
              "ThreadsContainerProcessingFailures.",
              f"round(sum({in_range(ERRORS, META, 'account, error_message')})) or vector(0)",
              4, COUNT_RED),
        count("Media rejected in range",
              "Containers that ended in ERROR with INVALID_* within the time range: the "
              "media itself (aspect ratio, duration, bit rate, frame rate, audio) was "
              "refused. Alert: ThreadsContainerMediaRejected.",
              f"round(sum({in_range(ERRORS, MEDIA, 'account, error_message')})) or vector(0)",
              8, COUNT_ORANGE),
        count("Expired unpublished in range",
              "Containers that reached EXPIRED within the time range: posts that never went "
              "out. Alert: ThreadsContainersExpired.",
              f"round(sum({in_range(status, EXPIRED)})) or vector(0)", 12,
              COUNT_RED),
        count("Unanswered now",
              "Tracked containers whose latest poll Meta refused (an id that is no "
              "container, or a container Meta lost). Alert: ThreadsContainersUnanswered.",
              now("threads_containers_unanswered"), 16, COUNT_ORANGE),
        count("Poll backlog now",
              "Containers due for a poll and not polled yet. A few right after a scrape "
              "are normal; a lasting backlog is ThreadsContainerPollBacklog.",
              now("threads_containers_poll_backlog"), 20, steps(("green", None))),
    ]


def container_problem_table(grid: tuple[int, int, int, int]) -> dict[str, Any]:
    status = "threads_container_status_changes_total"
    stuck = f"max by (account) (threads_containers_stuck{{{SEL}}})"
    unanswered = f"max by (account) (threads_containers_unanswered{{{SEL}}})"
    failed = (f"max by (account) (sum without (error_message) "
              f"(increase({ERRORS}{{{SEL}}}[$__range])))")
    expired = in_range(status, EXPIRED)
    rank = f"({stuck} + {unanswered} + {failed} + {expired}) > 0"
    bg = "color-background"
    return ranked_table(
        "Accounts with container problems",
        T("The %(worstAccounts)g accounts with the most stuck, unanswered, failed or expired "
          "containers (now, or within the time range). The account name opens the "
          "account's dashboard; GET /api/v1/containers?account=NAME lists the ids."),
        grid, rank=rank, labels=[], no_value="No container problems",
        columns=[
            ("Stuck now", stuck, {"unit": "none", "thresholds": COUNT_RED, "cell": bg}),
            ("Unanswered now", unanswered,
             {"unit": "none", "thresholds": COUNT_ORANGE, "cell": bg}),
            ("Failed (Meta)", f"round({in_range(ERRORS, META)})",
             {"unit": "none", "thresholds": COUNT_RED, "cell": bg}),
            ("Rejected media", f"round({in_range(ERRORS, MEDIA)})",
             {"unit": "none", "thresholds": COUNT_ORANGE, "cell": bg}),
            ("Expired", f"round({expired})",
             {"unit": "none", "thresholds": COUNT_RED, "cell": bg}),
            ("Processed", f"round({in_range('threads_container_processing_seconds_count')})",
             {"unit": "none"}),
        ])


def failure_panels(y: int) -> list[dict[str, Any]]:
    return [
        timeseries("Container failures per interval by error_message",
                   "Containers that ended in ERROR in each interval of the graph, by "
                   "error_message (the documented values, anything else as OTHER): the "
                   "counter's value minus its value one interval earlier, so the bars add up "
                   "to the failures in the range. INVALID_* is the media, the rest Meta's "
                   "side.",
                   "short", [target(per_interval(ERRORS, "error_message"), "{{error_message}}")],
                   (0, y, 12, 8), stack=True, bars=True, interval="1m",
                   calcs=("sum", "max")),
        bargauge("Failures in the range by error_message",
                 "Containers of the selected accounts that ended in ERROR within the "
                 "dashboard's time range, by error_message (increase over $__range, "
                 "rounded; the counters live in the state file and survive restarts).",
                 "short",
                 [target(f"round(sum by (error_message) "
                         f"({in_range(ERRORS, by='account, error_message')}))",
                         "{{error_message}}", instant=True)],
                 (12, y, 12, 8), defaults={"min": 0}),
    ]


def status_panels(y: int, w_over_time: int = 16) -> list[dict[str, Any]]:
    return [
        timeseries("Containers by status",
                   "Tracked media containers in each status (IN_PROGRESS, FINISHED, "
                   "PUBLISHED, ERROR, EXPIRED), stacked, summed over the selected accounts.",
                   "short",
                   [target(f"sum by (status) (max by (account, status) "
                           f"(threads_containers{{{SEL}}}))", "{{status}}")],
                   (0, y, w_over_time, 8), stack=True),
        timeseries("Status changes",
                   "Containers reaching each status per second "
                   "(threads_container_status_changes_total; each container is counted once "
                   "per status).",
                   "ops",
                   [target(f"sum by (status) (max by (account, status) (rate("
                           f"threads_container_status_changes_total{{{SEL}}}[{RATE}])))",
                           "{{status}}")],
                   (w_over_time, y, 24 - w_over_time, 8)),
    ]


def processing_panels(y: int, *, per_account: bool) -> list[dict[str, Any]]:
    hist = f"threads_container_processing_seconds_bucket{{{SEL}}}"
    panels = [
        timeseries("Processing time percentiles",
                   "Time from registration to FINISHED or ERROR "
                   "(threads_container_processing_seconds): 50th, 90th and 99th percentile "
                   "over the selected accounts. Gaps mean no container finished in that "
                   "interval.",
                   "s",
                   [target(f"histogram_quantile({q}, sum by (le) (rate({hist}[{RATE}])))",
                           f"p{round(q * 100)}", ref=ref)
                    for q, ref in ((0.5, "A"), (0.9, "B"), (0.99, "C"))],
                   (0, y, 12, 8)),
    ]
    if not per_account:
        panels.append(timeseries(
            "Average processing time: the 10 slowest accounts",
            "Mean time from registration to FINISHED or ERROR, for the 10 accounts with the "
            "longest mean at each point.",
            "s",
            [target(f"topk(10, sum by (account) (rate(threads_container_processing_seconds_sum"
                    f"{{{SEL}}}[{RATE}])) / sum by (account) (rate("
                    f"threads_container_processing_seconds_count{{{SEL}}}[{RATE}])))",
                    "{{account}}")],
            (12, y, 12, 8)))
    return panels


def containers() -> dict[str, Any]:
    y = 0
    panels: list[dict[str, Any]] = [row("Problems", y), *container_counts(y + 1)]
    y += 5
    panels.append(container_problem_table((0, y, 24, 10)))
    y += 10
    panels += [row("Failures", y), *failure_panels(y + 1)]
    y += 9
    panels += [row("Status", y), *status_panels(y + 1)]
    y += 9
    panels += [row("Processing time", y), *processing_panels(y + 1, per_account=False)]
    return dashboard(
        "containersUid", "Threads / Media containers",
        "Media containers tracked by threads-exporter: stuck, failed, expired and unanswered "
        "containers first, then failures by error_message, status and processing time.",
        panels)


# --- Account ----------------------------------------------------------------------------


def account() -> dict[str, Any]:
    y = 0
    panels: list[dict[str, Any]] = [
        row("Account", y),
        stat("Status",
             "OK when the latest publishing-quota reading of the account succeeded, FAILING "
             "when it did not (the reason is next to it). Alert: ThreadsAccountFailing.",
             "none", [target(f"max by (account) (threads_up{{{SEL}}})", "{{account}}",
                             instant=True)],
             (0, y + 1, 5, 4), thresholds=steps(("red", None), ("green", 1)),
             mappings=UP_MAPPINGS, text_mode="value"),
        label_table("Failing because",
                    "The reason the latest reading failed (token_invalid, rate_limited, "
                    "permission, invalid_request, server_error, timeout, connection, "
                    "bad_response); empty while the account is healthy. token_invalid: see "
                    "ThreadsTokenInvalid in the runbook.",
                    [target(f"max by (account, reason) (threads_last_error_reason{{{SEL}}} "
                            "== 1)", instant=True, fmt="table")],
                    (5, y + 1, 7, 4), columns=["account", "reason"], no_value="Not failing"),
        stat("Token expires in",
             "Time left until the account's access token expires (debug_token expires_at; "
             "negative once expired). Orange within the warning horizon, red within the "
             "critical one. No value: never expires, or debug_token fails "
             "(ThreadsTokenExpiryUnknown).",
             "s", [target(f"min by (account) ({TOKEN_LEFT})", "{{account}}", instant=True)],
             (12, y + 1, 6, 4), thresholds=TOKEN_STEPS, text_mode="value"),
        stat("Last successful reading",
             "Seconds since the account's last successful quota reading; near the cache TTL "
             "(60 s by default) while healthy.",
             "s",
             [target(f"time() - max by (account) (threads_last_success_timestamp_seconds"
                     f"{{{SEL}}})", "{{account}}", instant=True)],
             (18, y + 1, 6, 4), thresholds=steps(("green", None), ("orange", 600)),
             text_mode="value"),
    ]
    y += 5
    panels += [
        row("Quotas", y),
        bargauge("Quota used (share of limit)",
                 "Actions used in the current rolling window divided by the limit, per "
                 "quota. Orange from the ThreadsQuotaHigh threshold, red from "
                 "ThreadsQuotaCritical's.",
                 "percentunit",
                 [target(f"max by (quota) ({ratio()})", "{{quota}}", instant=True)],
                 (0, y + 1, 8, 7), thresholds=QUOTA_STEPS, defaults={"min": 0, "max": 1}),
        bargauge("Remaining actions",
                 "Actions still available in the current rolling window, per quota "
                 "(threads_quota_limit - threads_quota_usage, never below 0).",
                 "short",
                 [target(f"min by (quota) ({REMAINING})", "{{quota}}", instant=True)],
                 (8, y + 1, 8, 7), defaults={"min": 0}),
        bargauge("Time until exhaustion",
                 "Remaining actions divided by the growth of usage over the last hour, per "
                 "quota, capped at the quota window (a full bar: does not run out at this "
                 "pace). Red below the ThreadsQuotaExhaustionPredicted horizon.",
                 "s",
                 [target(f"min by (quota) ({EXHAUSTION})", "{{quota}}", instant=True)],
                 (16, y + 1, 8, 7), thresholds=EXHAUSTION_STEPS, defaults={"min": 0}),
        timeseries("Quota used over time",
                   "Share of each quota used over time. The window is rolling: usage falls "
                   "again as old actions age out. Dashed lines: the alert thresholds.",
                   "percentunit",
                   [target(f"max by (quota) ({ratio()})", "{{quota}}")],
                   (0, y + 8, 24, 8), thresholds=QUOTA_STEPS, defaults={"min": 0, "max": 1}),
    ]
    y += 16
    panels += [row("Media containers", y), *container_counts(y + 1)]
    y += 5
    panels += [*failure_panels(y)]
    y += 8
    panels += [*status_panels(y, w_over_time=12)]
    y += 8
    panels += [*processing_panels(y, per_account=True)]
    panels += [timeseries(
        "Poll backlog and unanswered containers",
        "Containers of the account due for a poll and not polled yet, and containers whose "
        "latest poll Meta refused.",
        "short",
        [target(f"max by (account) (threads_containers_poll_backlog{{{SEL}}})", "backlog",
                ref="A"),
         target(f"max by (account) (threads_containers_unanswered{{{SEL}}})", "unanswered",
                ref="B")],
        (12, y, 12, 8))]
    y += 8
    panels += [row("Threads API", y), *api_panels(y + 1, per_account=True)]
    return dashboard(
        "accountUid", "Threads / Account",
        "One Threads account: quota headroom, token, failures and its media containers "
        "(threads-exporter). Alerts link here with the account selected.",
        panels, single_account=True)


DASHBOARDS = {"overview.json": overview, "containers.json": containers, "account.json": account}

#!/usr/bin/env python3
"""Generate the bundled Grafana dashboards (``overview.json``, ``containers.json``).

The committed JSON files are the output of this script; ``tests/test_dashboards.py``
fails when they drift from it. Regenerate after editing::

    python dashboards/generate.py          # write the JSON files next to this script
    python dashboards/generate.py --check  # exit 1 if the committed files are stale

Conventions (checked by the tests): fixed uid, a ``datasource`` variable of type
prometheus used by every panel and query, ``job``/``instance``/``account`` variables
(multi-select, All = ``.+``), a description and unit on every panel, ``$__rate_interval``
in every rate/irate/increase, 24 h default range, and thresholds equal to the alert rules
in ``prometheus/rules.yml``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job=~"$job", instance=~"$instance", account=~"$account"'
SEL_TARGET = 'job=~"$job", instance=~"$instance"'

# Alert thresholds; they must equal the ones in prometheus/rules.yml (a test checks).
QUOTA_WARNING = 0.8  # ThreadsQuotaHigh
QUOTA_CRITICAL = 0.95  # ThreadsQuotaCritical
EXHAUSTION_HORIZON_SECONDS = 4 * 3600  # ThreadsQuotaExhaustionPredicted
TOKEN_WARNING_SECONDS = 7 * 86400  # ThreadsTokenExpiringSoon
TOKEN_CRITICAL_SECONDS = 86400  # ThreadsTokenExpiresWithinOneDay
STUCK_THRESHOLD = 1  # ThreadsContainersStuck: > 0

RATIO = f"threads_quota_usage{{{SEL}}} / (threads_quota_limit{{{SEL}}} > 0)"
REMAINING = f"clamp_min(threads_quota_limit{{{SEL}}} - threads_quota_usage{{{SEL}}}, 0)"


def steps(*pairs: tuple[str, float | None]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in pairs],
    }


QUOTA_STEPS = steps(("green", None), ("orange", QUOTA_WARNING), ("red", QUOTA_CRITICAL))


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False,
           fmt: str = "time_series") -> dict[str, Any]:
    return {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "format": fmt,
        "instant": instant,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "refId": ref,
    }


def panel(kind: str, title: str, description: str, unit: str, targets: list[dict[str, Any]],
          grid: tuple[int, int, int, int], *, thresholds: dict[str, Any] | None = None,
          options: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None,
          custom: dict[str, Any] | None = None,
          transformations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    x, y, w, h = grid
    field_defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "thresholds" if kind in ("stat", "bargauge") else "palette-classic"},
        "thresholds": thresholds or steps(("green", None)),
        "mappings": [],
    }
    if custom is not None:
        field_defaults["custom"] = custom
    field_defaults.update(defaults or {})
    result: dict[str, Any] = {
        "datasource": DS,
        "description": description,
        "fieldConfig": {"defaults": field_defaults, "overrides": []},
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "options": options or {},
        "targets": targets,
        "title": title,
        "type": kind,
    }
    if transformations:
        result["transformations"] = transformations
    return result


def timeseries(title: str, description: str, unit: str, targets: list[dict[str, Any]],
               grid: tuple[int, int, int, int], *, thresholds: dict[str, Any] | None = None,
               stack: bool = False, bars: bool = False,
               defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    custom = {
        "drawStyle": "bars" if bars else "line",
        "fillOpacity": 60 if (stack or bars) else 10,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        "thresholdsStyle": {"mode": "dashed" if thresholds else "off"},
    }
    options = {
        "legend": {"calcs": ["lastNotNull", "max"], "displayMode": "table",
                   "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel("timeseries", title, description, unit, targets, grid, thresholds=thresholds,
                 options=options, defaults=defaults, custom=custom)


def stat(title: str, description: str, unit: str, targets: list[dict[str, Any]],
         grid: tuple[int, int, int, int], *, thresholds: dict[str, Any] | None = None,
         mappings: list[dict[str, Any]] | None = None, no_value: str | None = None,
         text_mode: str = "value_and_name") -> dict[str, Any]:
    defaults: dict[str, Any] = {"mappings": mappings or []}
    if no_value is not None:
        defaults["noValue"] = no_value
    options = {
        "colorMode": "background",
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "textMode": text_mode,
    }
    return panel("stat", title, description, unit, targets, grid, thresholds=thresholds,
                 options=options, defaults=defaults)


def bargauge(title: str, description: str, unit: str, targets: list[dict[str, Any]],
             grid: tuple[int, int, int, int], *, thresholds: dict[str, Any] | None = None,
             defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    options = {
        "displayMode": "gradient",
        "minVizHeight": 16,
        "orientation": "horizontal",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showUnfilled": True,
        "valueMode": "color",
    }
    return panel("bargauge", title, description, unit, targets, grid, thresholds=thresholds,
                 options=options, defaults=defaults)


def table(title: str, description: str, unit: str, targets: list[dict[str, Any]],
          grid: tuple[int, int, int, int], *, columns: list[str],
          no_value: str | None = None) -> dict[str, Any]:
    """An instant-query table of label columns (the value is always 1 and hidden)."""
    defaults: dict[str, Any] = {}
    if no_value is not None:
        defaults["noValue"] = no_value
    organize = {
        "id": "organize",
        "options": {
            "excludeByName": {"Time": True, "Value": True, "__name__": True},
            "includeByName": {},
            "indexByName": {name: i for i, name in enumerate(columns)},
            "renameByName": {},
        },
    }
    options = {"cellHeight": "sm", "footer": {"show": False}, "showHeader": True}
    return panel("table", title, description, unit, targets, grid, options=options,
                 defaults=defaults, transformations=[organize])


def variables(with_account: bool = True) -> list[dict[str, Any]]:
    def query_var(name: str, label: str, query: str) -> dict[str, Any]:
        return {
            "allValue": ".+",
            "current": {},
            "datasource": DS,
            "definition": query,
            "hide": 0,
            "includeAll": True,
            "label": label,
            "multi": True,
            "name": name,
            "options": [],
            "query": query,
            "refresh": 2,
            "regex": "",
            "skipUrlSync": False,
            "sort": 1,
            "type": "query",
        }

    result = [
        {
            "current": {},
            "hide": 0,
            "includeAll": False,
            "label": "Data source",
            "multi": False,
            "name": "datasource",
            "options": [],
            "query": "prometheus",
            "refresh": 1,
            "regex": "",
            "skipUrlSync": False,
            "type": "datasource",
        },
        query_var("job", "Job", "label_values(threads_up, job)"),
        query_var("instance", "Instance", 'label_values(threads_up{job=~"$job"}, instance)'),
    ]
    if with_account:
        result.append(query_var(
            "account", "Account",
            'label_values(threads_up{job=~"$job", instance=~"$instance"}, account)'))
    return result


def dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]],
              tags: list[str]) -> dict[str, Any]:
    for i, p in enumerate(panels, start=1):
        p["id"] = i
    return {
        "annotations": {"list": [{
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }]},
        "description": description,
        "editable": False,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "links": [{
            "asDropdown": False,
            "icon": "external link",
            "includeVars": True,
            "keepTime": True,
            "tags": ["threads-exporter"],
            "targetBlank": False,
            "title": "Threads dashboards",
            "type": "dashboards",
        }],
        "panels": panels,
        "refresh": "1m",
        "schemaVersion": 39,
        "tags": tags,
        "templating": {"list": variables()},
        "time": {"from": "now-24h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


UP_MAPPINGS = [{
    "options": {
        "0": {"color": "red", "index": 0, "text": "FAILING"},
        "1": {"color": "green", "index": 1, "text": "OK"},
    },
    "type": "value",
}]


def overview() -> dict[str, Any]:
    rate = "$__rate_interval"
    panels = [
        stat("Account status",
             "threads_up per account: OK when the latest publishing-quota reading succeeded, "
             "FAILING when it did not (its quota series are then absent, never zero). "
             "See 'Failing accounts and why' for the reason.",
             "none", [target(f"threads_up{{{SEL}}}", "{{account}}", instant=True)],
             (0, 0, 8, 5), thresholds=steps(("red", None), ("green", 1)),
             mappings=UP_MAPPINGS),
        table("Failing accounts and why",
              "Accounts whose latest quota reading failed, with the error reason "
              "(threads_last_error_reason: token_invalid, rate_limited, permission, "
              "invalid_request, server_error, timeout, connection, bad_response). "
              "Empty while every account is healthy. Alert: ThreadsAccountFailing.",
              "none",
              [target(f"threads_last_error_reason{{{SEL}}} == 1", instant=True, fmt="table")],
              (8, 0, 8, 5), columns=["account", "reason", "instance", "job"],
              no_value="No account failing"),
        stat("Token expires in",
             "Time left until each account's access token expires (expires_at from "
             "debug_token; accounts whose token never expires or whose expiry the API does "
             "not give are not shown). Orange below 7 days (ThreadsTokenExpiringSoon), red "
             "below 1 day (ThreadsTokenExpiresWithinOneDay). Long-lived tokens last 60 days "
             "and can be refreshed once they are 24 h old.",
             "s",
             [target(f"(threads_token_expiry_timestamp_seconds{{{SEL}}} > 0) - time()",
                     "{{account}}", instant=True)],
             (16, 0, 8, 5),
             thresholds=steps(("red", None), ("orange", TOKEN_CRITICAL_SECONDS),
                              ("green", TOKEN_WARNING_SECONDS))),
        bargauge("Quota used (share of limit)",
                 "Actions used in the current rolling window divided by the limit, per "
                 "account and quota (posts, replies, deletes, location_searches). Orange from "
                 "80 % (ThreadsQuotaHigh), red from 95 % (ThreadsQuotaCritical).",
                 "percentunit", [target(RATIO, "{{account}} / {{quota}}", instant=True)],
                 (0, 5, 12, 9), thresholds=QUOTA_STEPS, defaults={"min": 0, "max": 1}),
        bargauge("Remaining actions",
                 "Actions still available in the current rolling window "
                 "(threads_quota_limit - threads_quota_usage, never below 0), per account "
                 "and quota.",
                 "short", [target(REMAINING, "{{account}} / {{quota}}", instant=True)],
                 (12, 5, 12, 9), thresholds=steps(("green", None)), defaults={"min": 0}),
        timeseries("Quota used over time",
                   "Share of each quota used, over time. The window is rolling (24 h by "
                   "default): usage falls again as old actions age out. Dashed lines: the "
                   "80 % and 95 % alert thresholds.",
                   "percentunit", [target(RATIO, "{{account}} / {{quota}}")], (0, 14, 12, 8),
                   thresholds=QUOTA_STEPS, defaults={"min": 0, "max": 1}),
        bargauge("Time until exhaustion at the current pace",
                 "Remaining actions divided by the growth of usage over the last hour "
                 "(deriv). Capped at the quota window (24 h by default): a bar at the window "
                 "length means the quota does not run out at the current pace. Red below "
                 "4 h, the horizon of ThreadsQuotaExhaustionPredicted.",
                 "s",
                 [target(f"{REMAINING} / (deriv(threads_quota_usage{{{SEL}}}[1h]) > 0)"
                         f" < threads_quota_window_seconds{{{SEL}}}"
                         f" or threads_quota_window_seconds{{{SEL}}}",
                         "{{account}} / {{quota}}", instant=True)],
                 (12, 14, 12, 8),
                 thresholds=steps(("red", None), ("green", EXHAUSTION_HORIZON_SECONDS)),
                 defaults={"min": 0}),
        timeseries("Threads API calls by endpoint",
                   "Calls the exporter makes to the Threads API per second, by account and "
                   "endpoint (publishing_limit, container, debug_token). Every call counts "
                   "against the app's call-volume limit.",
                   "reqps",
                   [target(f"sum by (account, endpoint) (rate(threads_api_requests_total"
                           f"{{{SEL}}}[{rate}]))", "{{account}} {{endpoint}}")],
                   (0, 22, 8, 8)),
        timeseries("Threads API errors by reason",
                   "Failed calls to the Threads API per second, by account, endpoint and "
                   "reason (token_invalid, rate_limited, permission, invalid_request, "
                   "server_error, timeout, connection, bad_response).",
                   "reqps",
                   [target(f"sum by (account, endpoint, reason) (rate(threads_api_errors_total"
                           f"{{{SEL}}}[{rate}]))", "{{account}} {{endpoint}} {{reason}}")],
                   (8, 22, 8, 8)),
        timeseries("Threads API latency",
                   "Latency of the exporter's calls to the Threads API by endpoint "
                   "(threads_api_request_duration_seconds): median and 99th percentile. "
                   "Not per account: the histogram has only the endpoint label.",
                   "s",
                   [target(f"histogram_quantile({q}, sum by (le, endpoint) (rate("
                           f"threads_api_request_duration_seconds_bucket{{{SEL_TARGET}}}"
                           f"[{rate}])))", f"p{round(q * 100)} {{{{endpoint}}}}", ref=ref)
                    for q, ref in ((0.5, "A"), (0.99, "B"))],
                   (16, 22, 8, 8)),
        timeseries("Threads API error ratio",
                   "Share of the exporter's calls to the Threads API that failed, per "
                   "account (0 when there were calls and none failed).",
                   "percentunit",
                   [target(f"(sum by (job, instance, account) (rate(threads_api_errors_total"
                           f"{{{SEL}}}[{rate}])) or 0 * sum by (job, instance, account) ("
                           f"rate(threads_api_requests_total{{{SEL}}}[{rate}]))) / sum by "
                           f"(job, instance, account) (rate(threads_api_requests_total"
                           f"{{{SEL}}}[{rate}]))", "{{account}}")],
                   (0, 30, 8, 8), defaults={"min": 0}),
        timeseries("Age of the last successful reading",
                   "Seconds since the last successful quota reading per account "
                   "(threads_last_success_timestamp_seconds). With the default 60 s cache "
                   "this stays near a minute; a rising line means readings are failing.",
                   "s",
                   [target(f"time() - threads_last_success_timestamp_seconds{{{SEL}}}",
                           "{{account}}")],
                   (8, 30, 8, 8), defaults={"min": 0}),
        stat("Exporter scrape",
             "Prometheus' up for each threads-exporter target in the selected jobs "
             "(targets that exposed threads_up for the selected accounts in the last day). "
             "Alerts: ThreadsExporterDown, "
             "ThreadsExporterAbsent.",
             "none",
             [target(f"up{{{SEL_TARGET}}} and on (job, instance) "
                     f"last_over_time(threads_up{{{SEL}}}[1d])", "{{instance}}",
                     instant=True)],
             (16, 30, 4, 8), thresholds=steps(("red", None), ("green", 1)),
             mappings=[{"options": {"0": {"color": "red", "index": 0, "text": "DOWN"},
                                    "1": {"color": "green", "index": 1, "text": "UP"}},
                        "type": "value"}]),
        stat("Config reload",
             "threads_exporter_config_last_reload_successful: OK when the last config (re)load "
             "succeeded; FAILING means a reload was rejected and the old config is still in "
             "use. Alert: ThreadsConfigReloadFailed.",
             "none",
             [target(f"threads_exporter_config_last_reload_successful{{{SEL_TARGET}}}",
                     "{{instance}}", instant=True)],
             (20, 30, 4, 8), thresholds=steps(("red", None), ("green", 1)),
             mappings=UP_MAPPINGS),
        table("Exporter versions",
              "threads_exporter_build_info: exporter and Python version of each target.",
              "none",
              [target(f"threads_exporter_build_info{{{SEL_TARGET}}}", instant=True,
                      fmt="table")],
              (0, 38, 24, 5), columns=["job", "instance", "version", "python_version"]),
    ]
    return dashboard(
        "threads-exporter-overview", "Threads / Overview",
        "Publishing-quota headroom, failing accounts, token expiry and the exporter's own "
        "calls to the Threads API (threads-exporter).",
        panels, ["threads-exporter", "threads"])


def containers() -> dict[str, Any]:
    rate = "$__rate_interval"
    hist = f"threads_container_processing_seconds_bucket{{{SEL}}}"
    panels = [
        timeseries("Containers by status",
                   "Tracked media containers in each status (IN_PROGRESS, FINISHED, "
                   "PUBLISHED, ERROR, EXPIRED), stacked, summed over the selected accounts.",
                   "short",
                   [target(f"sum by (status) (threads_containers{{{SEL}}})", "{{status}}")],
                   (0, 0, 16, 8), stack=True),
        bargauge("Containers now",
                 "Tracked containers per account and status at the end of the range.",
                 "short",
                 [target(f"sum by (account, status) (threads_containers{{{SEL}}})",
                         "{{account}} {{status}}", instant=True)],
                 (16, 0, 8, 8), defaults={"min": 0}),
        stat("Stuck containers",
             "Containers IN_PROGRESS for longer than 5 minutes (threads_containers_stuck), "
             "per account. Red from 1 (ThreadsContainersStuck fires when this stays above 0). "
             "The ids are listed by GET /api/v1/containers on the exporter.",
             "short",
             [target(f"sum by (account) (threads_containers_stuck{{{SEL}}})", "{{account}}",
                     instant=True)],
             (0, 8, 6, 8), thresholds=steps(("green", None), ("red", STUCK_THRESHOLD))),
        timeseries("Status changes",
                   "Containers reaching each status per second "
                   "(threads_container_status_changes_total; each container is counted once "
                   "per status).",
                   "ops",
                   [target(f"sum by (status) (rate(threads_container_status_changes_total"
                           f"{{{SEL}}}[{rate}]))", "{{status}}")],
                   (6, 8, 18, 8)),
        timeseries("Container failures by error_message",
                   "Containers that ended in ERROR, by error_message (the documented values, "
                   "anything else as OTHER), per interval. Alert: ThreadsContainerFailures.",
                   "short",
                   [target(f"sum by (error_message) (increase(threads_container_errors_total"
                           f"{{{SEL}}}[{rate}]))", "{{error_message}}")],
                   (0, 16, 12, 8), stack=True, bars=True),
        bargauge("Failures since exporter start by error_message",
                 "Containers of the selected accounts that ended in ERROR since the exporter "
                 "started, by error_message (the counters' current value; every documented "
                 "message is listed, at 0 until it occurs).",
                 "short",
                 [target(f"sum by (error_message) (threads_container_errors_total"
                         f"{{{SEL}}})", "{{error_message}}", instant=True)],
                 (12, 16, 12, 8), defaults={"min": 0}),
        timeseries("Processing time percentiles",
                   "Time from registration to FINISHED or ERROR "
                   "(threads_container_processing_seconds): 50th, 90th and 99th percentile "
                   "over the selected accounts. Gaps mean no container finished in that "
                   "interval.",
                   "s",
                   [target(f"histogram_quantile({q}, sum by (le) (rate({hist}[{rate}])))",
                           f"p{round(q * 100)}", ref=ref)
                    for q, ref in ((0.5, "A"), (0.9, "B"), (0.99, "C"))],
                   (0, 24, 12, 8)),
        timeseries("Average processing time by account",
                   "Mean time from registration to FINISHED or ERROR per account.",
                   "s",
                   [target(f"sum by (account) (rate(threads_container_processing_seconds_sum"
                           f"{{{SEL}}}[{rate}])) / sum by (account) (rate("
                           f"threads_container_processing_seconds_count{{{SEL}}}[{rate}]))",
                           "{{account}}")],
                   (12, 24, 12, 8)),
    ]
    return dashboard(
        "threads-exporter-containers", "Threads / Media containers",
        "Media containers tracked by threads-exporter: status, failures by error_message, "
        "stuck containers and processing time.",
        panels, ["threads-exporter", "threads"])


DASHBOARDS = {"overview.json": overview, "containers.json": containers}


def render(builder: Any) -> str:
    return json.dumps(builder(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a committed dashboard differs from the generator")
    parser.add_argument("--out", type=Path, default=HERE, help="output directory")
    args = parser.parse_args(argv)
    stale = []
    for name, builder in DASHBOARDS.items():
        path = args.out / name
        text = render(builder)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale: {', '.join(stale)}; run python dashboards/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

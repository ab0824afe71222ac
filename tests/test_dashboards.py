"""Lint the bundled Grafana dashboards.

The committed JSON is checked on its own (not through the generator that wrote it):
Grafana's dashboard-linter conventions (templated datasource, job/instance variables,
panel datasource, units, $__rate_interval, job/instance matchers), the project's own
(uid, 24 h range, descriptions, thresholds equal to the alert rules), PromQL validity
with an independent parser (promql-parser), and the dashboard schema through Grafana's
foundation SDK models (a misspelt key does not survive a round trip).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from contract import CONTRACT, HISTOGRAMS, KINDS
from monitoring import generate
from monitoring.config import CONFIG
from procs import REPO

DASHBOARD_DIR = REPO / "dashboards"
FILES = sorted(DASHBOARD_DIR.glob("*.json"))
RULES = REPO / "prometheus" / "rules.yml"
DS = {"type": "prometheus", "uid": "${datasource}"}


# Grafana's unit ids for the units these dashboards may sensibly use (a subset of
# packages/grafana-data/src/valueFormats/categories.ts).
UNITS = {"none", "short", "percent", "percentunit", "s", "ms", "dtdurations", "reqps", "ops",
         "cps", "dateTimeAsIso", "dateTimeFromNow", "bool"}

RATE_SENTINEL = "7777s"  # what $__rate_interval becomes for parsing
RANGE_SENTINEL = "8888s"  # $__range
INTERVAL_SENTINEL = "9999s"  # $__interval
RATE_FUNCS = {"rate", "irate", "increase"}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def content(dash: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel but the rows."""
    return [p for p in panels(dash) if p["type"] != "row"]


def targets(dash: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(p, t) for p in panels(dash) for t in p.get("targets", [])]


def family(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and base in HISTOGRAMS:
            return base
    return name


def parse(expr: str) -> promql_parser.Expr:
    """Parse a dashboard expression with the template variables filled in."""
    text = expr.replace("$__rate_interval", RATE_SENTINEL)
    text = text.replace("$__interval", INTERVAL_SENTINEL).replace("$__range", RANGE_SENTINEL)
    text = re.sub(r"\$\{?(job|instance|account)\}?", r"VAR_\1", text)
    assert "$" not in text, f"unknown variable in {expr!r}"
    return promql_parser.parse(text)


def walk(node: promql_parser.Expr) -> list[Any]:
    nodes: list[Any] = []
    promql_parser.walk(node, lambda n: nodes.append(n))
    return nodes


@pytest.fixture(params=FILES, ids=[f.name for f in FILES])
def dash(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load(request.param)


def test_all_dashboards_exist() -> None:
    assert {f.name for f in FILES} == {"overview.json", "containers.json", "account.json"}


def test_generated_files_match_the_config() -> None:
    for name in generate.dashboards.DASHBOARDS:
        committed = (DASHBOARD_DIR / name).read_text()
        assert committed == generate.dashboard_json(name), (
            f"dashboards/{name} drifted from monitoring/; run python monitoring/generate.py")


def test_uid_fixed_unique_and_short() -> None:
    uids = [load(f).get("uid") for f in FILES]
    for uid in uids:
        assert isinstance(uid, str) and re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", uid), uid
    assert len(set(uids)) == len(uids)
    titles = [load(f)["title"] for f in FILES]
    assert len(set(titles)) == len(titles)


def test_no_import_placeholders(dash: dict[str, Any]) -> None:
    assert "__inputs" not in dash and "__requires" not in dash
    text = json.dumps(dash)
    assert "${DS_" not in text, "import placeholders break file provisioning"
    assert dash.get("id") is None, "a fixed numeric id clashes between Grafana instances"


def test_default_range_is_the_quota_window(dash: dict[str, Any]) -> None:
    assert dash["time"] == {"from": "now-24h", "to": "now"}


def test_datasource_variable(dash: dict[str, Any]) -> None:
    ds = [v for v in dash["templating"]["list"] if v["type"] == "datasource"]
    assert len(ds) == 1
    assert ds[0]["name"] == "datasource"
    assert ds[0]["query"] == "prometheus"
    assert ds[0]["label"] == "Data source"


@pytest.mark.parametrize("name", ["job", "instance", "account"])
def test_filter_variables(dash: dict[str, Any], name: str) -> None:
    found = [v for v in dash["templating"]["list"] if v["name"] == name]
    assert len(found) == 1, f"missing ${name}"
    v = found[0]
    assert v["type"] == "query"
    assert v["datasource"] == DS
    if name == "account" and dash["uid"] == CONFIG["accountUid"]:
        # The per-account dashboard shows one account (alerts link to it with one).
        assert v["multi"] is False and v["includeAll"] is False
    else:
        assert v["multi"] is True and v["includeAll"] is True
        assert v["allValue"] == ".+"
    assert v["label"] == name.capitalize()
    assert v["refresh"] == 2, "refresh on time range change, so new targets appear"
    m = re.fullmatch(r"label_values\((.+), *(\w+)\)", v["query"])
    assert m and m.group(2) == name, v["query"]
    assert CONFIG["threadsSelector"] in m.group(1), "variables list only the exporter's jobs"
    for sel in walk(parse(m.group(1))):
        if isinstance(sel, promql_parser.VectorSelector):
            assert family(sel.name) in CONTRACT


def test_variables_are_ordered_for_chaining(dash: dict[str, Any]) -> None:
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names[:4] == ["datasource", "job", "instance", "account"]
    assert 'job=~"$job"' in dash["templating"]["list"][2]["query"]


def test_panel_ids_unique_and_layout_fits(dash: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels(dash):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine


def test_every_panel_has_title_description_unit_and_datasource(dash: dict[str, Any]) -> None:
    for p in panels(dash):
        where = f"{dash['title']} / {p.get('title')}"
        assert p.get("title"), where
        if p["type"] == "row":
            assert set(p) == {"collapsed", "gridPos", "id", "panels", "title", "type"}, where
            assert p["gridPos"]["h"] == 1 and p["gridPos"]["w"] == 24, where
            assert p["collapsed"] == bool(p["panels"]), where
            continue
        assert len(p.get("description", "")) >= 30, f"{where}: no real description"
        assert p["fieldConfig"]["defaults"].get("unit") in UNITS, where
        assert p.get("datasource") == DS, where
        assert p.get("targets"), f"{where}: no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), where
        for t in p["targets"]:
            assert t.get("datasource") == DS, where


def test_dashboards_are_organised_in_rows(dash: dict[str, Any]) -> None:
    assert dash["panels"][0]["type"] == "row"
    top = [p for p in dash["panels"] if p["type"] != "row"]
    rows = [p for p in dash["panels"] if p["type"] == "row"]
    assert len(rows) >= 3
    # Panels of an open row follow it; a collapsed row holds its own.
    for p in top:
        above = [r for r in rows if r["gridPos"]["y"] < p["gridPos"]["y"]]
        assert above and not above[-1]["collapsed"], p["title"]


def test_titles_unique(dash: dict[str, Any]) -> None:
    titles = [p["title"] for p in panels(dash)]
    assert len(titles) == len(set(titles))


def test_queries_parse_and_use_contract_metrics(dash: dict[str, Any]) -> None:
    for p, t in targets(dash):
        for node in walk(parse(t["expr"])):
            if isinstance(node, promql_parser.VectorSelector):
                assert family(node.name) in CONTRACT, f"{p['title']}: unknown {node.name}"


def test_rates_use_rate_interval(dash: dict[str, Any]) -> None:
    """rate()/increase() over $__rate_interval in graphs; a total "in the range" (a stat or
    a table, an instant query) over $__range."""
    seen = 0
    for p, t in targets(dash):
        for node in walk(parse(t["expr"])):
            if isinstance(node, promql_parser.Call) and node.func.name in RATE_FUNCS:
                seen += 1
                (arg,) = [a for a in node.args if isinstance(a, promql_parser.MatrixSelector)]
                allowed = {promql_parser.parse_duration(RATE_SENTINEL)}
                if t["instant"]:
                    allowed.add(promql_parser.parse_duration(RANGE_SENTINEL))
                assert arg.range in allowed, (
                    f"{p['title']}: {node.func.name} over {arg.range}")
    assert seen, "no rate() at all: this check would be vacuous"


def test_selectors_filter_by_job_instance_and_account(dash: dict[str, Any]) -> None:
    """Every selector: the config's selector, then the job/instance(/account) variables."""
    config_job = CONFIG["threadsSelector"].partition("=~")[2].strip('"')
    for p, t in targets(dash):
        for node in walk(parse(t["expr"])):
            if not isinstance(node, promql_parser.VectorSelector):
                continue
            matchers: dict[str, list[tuple[str, str]]] = {}
            for m in node.matchers.matchers:
                matchers.setdefault(m.name, []).append((str(m.op), m.value))
            where = f"{p['title']}: {node.name}"
            assert matchers.get("job") == [("MatchOp.Re", config_job),
                                           ("MatchOp.Re", "VAR_job")], where
            assert matchers.get("instance") == [("MatchOp.Re", "VAR_instance")], where
            if "account" in CONTRACT[family(node.name)]:
                assert matchers.get("account") == [("MatchOp.Re", "VAR_account")], where


def _raw_counters(node: Any, rated: bool = False) -> list[str]:
    """Counter selectors not used properly: inside rate()/increase(), or as
    `counter - counter offset $__interval` (the growth in one interval)."""
    P = promql_parser
    if isinstance(node, P.VectorSelector):
        counter = KINDS.get(family(node.name)) in ("counter", "histogram") \
            and not node.name.endswith("_sum")
        return [node.name] if counter and not rated else []
    if isinstance(node, P.MatrixSelector):
        return _raw_counters(node.vector_selector, rated)
    if isinstance(node, P.Call):
        inner = rated or node.func.name in RATE_FUNCS
        return [n for a in node.args for n in _raw_counters(a, inner)]
    if isinstance(node, P.BinaryExpr):
        lhs, rhs = node.lhs, node.rhs
        if (str(node.op) == "-" and isinstance(lhs, P.VectorSelector)
                and isinstance(rhs, P.VectorSelector) and lhs.name == rhs.name
                and lhs.offset is None
                and rhs.offset == P.parse_duration(INTERVAL_SENTINEL)):
            return []
        return _raw_counters(lhs, rated) + _raw_counters(rhs, rated)
    if isinstance(node, (P.AggregateExpr, P.ParenExpr, P.UnaryExpr, P.SubqueryExpr)):
        return _raw_counters(node.expr, rated)
    return []


def test_no_raw_counter_in_any_panel(dash: dict[str, Any]) -> None:
    """A counter's value depends on when the exporter's state file began: a panel shows its
    rate, its increase, or its growth per interval, never the counter itself."""
    for p, t in targets(dash):
        raw = _raw_counters(parse(t["expr"]))
        assert not raw, f"{p['title']}: raw counter {raw}"


def test_raw_counter_check_can_fail() -> None:
    for expr in ['sum by (error_message) (threads_container_errors_total{job=~"VAR_job"})',
                 "threads_api_requests_total - threads_api_requests_total offset 1d",
                 "rate(threads_api_requests_total[5m]) / threads_api_requests_total"]:
        assert _raw_counters(promql_parser.parse(expr)), expr


# --- thresholds equal the alert rules -----------------------------------------------------


def _alerts() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"] if "alert" in r}


def _number(text: str) -> float:
    assert re.fullmatch(r"[\d.\s*]+", text), text
    value = 1.0
    for part in text.split("*"):
        value *= float(part)
    return value


def _threshold(alert: str, pattern: str) -> float:
    expr = _alerts()[alert]
    m = re.search(pattern, expr)
    assert m, f"{alert}: {pattern!r} not in {expr!r}"
    return _number(m.group(1))


def rule_thresholds() -> dict[str, float]:
    """The thresholds as the committed rules.yml has them (not as the config says)."""
    cmp = r"(?:>=|<|>)\s*([\d.]+(?:\s*\*\s*[\d.]+)*)\s*$"
    token = r"<\s*([\d.]+\s*\*\s*86400)"
    return {
        "warning_ratio": _threshold("ThreadsQuotaHigh", cmp),
        "critical_ratio": _threshold("ThreadsQuotaCritical", cmp),
        "horizon": _threshold("ThreadsQuotaExhaustionPredicted",
                              r"predict_linear\([^,]+,\s*([\d.\s*]+)\)"),
        "token_warning": _threshold("ThreadsTokenExpiringSoon", token),
        "token_critical": _threshold("ThreadsTokenExpiresWithinOneDay", token),
        "app_usage": _threshold("ThreadsAppUsageHigh", cmp),
    }


def _steps(p: dict[str, Any]) -> list[tuple[str, float | None]]:
    return [(s["color"], s["value"])
            for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def test_rule_thresholds_are_the_documented_ones() -> None:
    assert rule_thresholds() == {"warning_ratio": 0.8, "critical_ratio": 0.95,
                                 "horizon": 4 * 3600, "token_warning": 7 * 86400,
                                 "token_critical": 86400, "app_usage": 0.9}


def _colour_steps(dash: dict[str, Any]) -> list[tuple[str, list[tuple[str, float | None]]]]:
    """(the query behind a panel or a table column, its threshold steps)."""
    out = []
    for p in content(dash):
        rename = p.get("transformations", [{}])[-1].get("options", {}).get("renameByName")
        if not rename:
            out.append((" ".join(t["expr"] for t in p["targets"]), _steps(p)))
            continue
        for o in p["fieldConfig"]["overrides"]:
            props = {x["id"]: x["value"] for x in o["properties"]}
            if "thresholds" in props:
                (expr,) = [t["expr"] for t in p["targets"]
                           if rename.get(f"Value #{t['refId']}") == o["matcher"]["options"]]
                out.append((expr.lstrip("("), [(s["color"], s["value"])
                                               for s in props["thresholds"]["steps"]]))
    return out


def test_dashboard_thresholds_match_alert_rules() -> None:
    th = rule_thresholds()
    expected = {
        "ratio": [("green", None), ("orange", th["warning_ratio"]),
                  ("red", th["critical_ratio"])],
        "exhaustion": [("red", None), ("green", th["horizon"])],
        "token": [("red", None), ("orange", th["token_critical"]),
                  ("green", th["token_warning"])],
        "app_usage": [("green", None), ("red", th["app_usage"])],
    }
    kinds: dict[str, int] = {}
    for f in FILES:
        for expr, got in _colour_steps(load(f)):
            if "deriv(threads_quota_usage" in expr and "count(" not in expr.split("(")[0]:
                kind = "exhaustion"
            elif expr.startswith(("threads_quota_usage", "max by (account) (threads_quota_usage",
                                  "max by (account, quota) (threads_quota_usage",
                                  "max by (quota) (threads_quota_usage")):
                kind = "ratio"
            elif expr.startswith(("min by (account) ((last_over_time(threads_token_expiry",
                                  "bottomk(10, min by (account) ((last_over_time")):
                kind = "token"
            elif "threads_api_usage_ratio" in expr:
                kind = "app_usage"
            else:
                continue
            assert got == expected[kind], expr
            kinds[kind] = kinds.get(kind, 0) + 1
    assert set(kinds) == set(expected), kinds


# --- required content ---------------------------------------------------------------------


def _exprs(name: str) -> str:
    return "\n".join(t["expr"] for _, t in targets(load(DASHBOARD_DIR / name)))


def test_overview_covers_the_issue() -> None:
    text = _exprs("overview.json")
    for needle in ["threads_quota_usage", "threads_quota_limit",  # ratio, remaining
                   "deriv(threads_quota_usage",  # time until exhaustion
                   "threads_last_error_reason", "threads_up",  # failing and why
                   "threads_api_requests_total", "threads_api_errors_total",
                   "threads_api_request_duration_seconds_bucket", "threads_api_usage_ratio",
                   "threads_token_expiry_timestamp_seconds", "threads_containers_stuck",
                   "threads_container_errors_total", "threads_exporter_container_store_up"]:
        assert needle in text, needle


def test_overview_leads_with_the_fleet_headline_then_the_worst_accounts() -> None:
    """Opened on 300 accounts, the first screen is counts and the worst accounts: the
    headline row is single numbers (one instant query, no per-account legend), then a
    topk table linking to the per-account dashboard; per-account panels come last."""
    dash = load(DASHBOARD_DIR / "overview.json")
    first, *rest = dash["panels"]
    assert first["type"] == "row" and not first["collapsed"]
    headline = [p for p in rest if p["gridPos"]["y"] == 1]
    titles = [p["title"] for p in headline]
    assert titles == ["Accounts", "Accounts failing", "Quotas ≥ 80 %", "Quotas ≥ 95 %",
                      "Shortest time to exhaustion", "Tokens ≤ 7 d or invalid",
                      "Stuck containers now", "Failed containers in range"]
    for p in headline:
        assert p["type"] == "stat" and p["options"]["textMode"] == "value", p["title"]
        (t,) = p["targets"]
        assert t["instant"] and "legendFormat" in t, p["title"]
        # One number, whatever the number of accounts: an aggregation at the top.
        assert re.match(r"(count|sum|min|round)\(", t["expr"]), p["title"]
    table = next(p for p in rest if p["type"] == "table")
    assert table["title"] == "Worst accounts"
    assert table["gridPos"]["y"] < min(p["gridPos"]["y"] for p in rest
                                       if p["type"] not in ("stat", "row", "table"))
    assert all(f"topk({CONFIG['worstAccounts']}" in t["expr"] for t in table["targets"])
    links = [x for o in table["fieldConfig"]["overrides"] for x in o["properties"]
             if x["id"] == "links"]
    assert links and links[0]["value"][0]["url"].startswith(
        f"/d/{CONFIG['accountUid']}?var-account=${{__value.raw}}")
    last = dash["panels"][-1]
    assert last["type"] == "row" and last["collapsed"] and last["panels"], \
        "per-account detail last, collapsed (its queries run only when opened)"
    # Nothing above the collapsed detail draws one series per account and quota.
    for p in content(dash):
        if p in last["panels"]:
            continue
        for t in p["targets"]:
            if not t["instant"]:
                assert re.search(r"topk\(|sum by \(|max by \((?:quota|scope)|"
                                 r"histogram_quantile", t["expr"]), (p["title"], t["expr"])


def test_containers_leads_with_stuck_and_failed() -> None:
    dash = load(DASHBOARD_DIR / "containers.json")
    first = content(dash)[:6]
    assert [p["title"] for p in first[:2]] == ["Stuck now", "Failed on Meta's side in range"]
    assert all(p["type"] == "stat" and p["gridPos"]["y"] == 1 for p in first)
    text = _exprs("containers.json")
    for needle in ["threads_containers{", "threads_container_errors_total",
                   "sum by (error_message)", "threads_containers_stuck",
                   "threads_containers_unanswered", "threads_containers_poll_backlog",
                   'status="EXPIRED"', "histogram_quantile(0.5", "histogram_quantile(0.99",
                   "threads_container_processing_seconds_bucket"]:
        assert needle in text, needle


def test_failures_bar_chart_tiles_the_range() -> None:
    """Each bar is the counter's growth within its own interval ($__interval, the step),
    so the bars add up to the failures in the range; increase() over $__rate_interval at
    a shorter step counted every failure in 3 or 4 overlapping windows."""
    for name in ("containers.json", "account.json"):
        (p,) = [p for p in content(load(DASHBOARD_DIR / name))
                if p["title"] == "Container failures per interval by error_message"]
        assert p["fieldConfig"]["defaults"]["custom"]["drawStyle"] == "bars"
        (t,) = p["targets"]
        assert "offset $__interval" in t["expr"] and "rate_interval" not in t["expr"]
        assert p["interval"] == "1m"


def test_no_since_start_panel() -> None:
    for f in FILES:
        for p in content(load(f)):
            assert "since" not in p["title"].lower(), p["title"]


def test_tables_link_accounts_to_the_account_dashboard() -> None:
    for f in FILES:
        for p in content(load(f)):
            if p["type"] != "table" or "account" not in json.dumps(p["targets"]):
                continue
            if f.name == "account.json":
                continue
            links = [x["value"] for o in p["fieldConfig"]["overrides"]
                     if o["matcher"]["options"] == "account" for x in o["properties"]
                     if x["id"] == "links"]
            assert links, f"{f.name} / {p['title']}: the account column links nowhere"
            assert f"/d/{CONFIG['accountUid']}?" in links[0][0]["url"]


# --- schema: Grafana's foundation SDK models ----------------------------------------------

# Fields Grafana reads that the SDK's dashboard model does not describe.
SDK_UNMODELLED = {("annotations", "list", "builtIn"), ("templating", "list", "definition")}


def _dropped(orig: Any, back: Any, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    if isinstance(orig, dict):
        for k, v in orig.items():
            if not isinstance(back, dict) or k not in back:
                out.add((*path, k))
            else:
                out |= _dropped(v, back[k], (*path, k))
    elif isinstance(orig, list) and isinstance(back, list):
        for a, b in zip(orig, back, strict=False):
            out |= _dropped(a, b, path)
    return out


def test_schema_round_trip_through_grafana_models(dash: dict[str, Any]) -> None:
    sdk = pytest.importorskip("grafana_foundation_sdk")
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    assert sdk
    back = json.loads(json.dumps(Dashboard.from_json(dash), cls=JSONEncoder))
    assert _dropped(dash, back) - SDK_UNMODELLED == set()


def test_schema_check_catches_a_misspelt_key(dash: dict[str, Any]) -> None:
    pytest.importorskip("grafana_foundation_sdk")
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    broken = json.loads(json.dumps(dash))
    broken["panels"][0]["gridpos"] = broken["panels"][0].pop("gridPos")
    back = json.loads(json.dumps(Dashboard.from_json(broken), cls=JSONEncoder))
    assert ("panels", "gridpos") in _dropped(broken, back)


# --- Grafana provisioning -------------------------------------------------------------------

PROVISIONING = REPO / "grafana" / "provisioning"


def test_datasource_provisioning_points_at_the_compose_prometheus() -> None:
    doc = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert doc["apiVersion"] == 1
    (ds,) = doc["datasources"]
    assert ds["type"] == "prometheus"
    assert ds["url"] == "http://prometheus:9090"
    assert ds["isDefault"] is True, "the $datasource variable defaults to the default one"


def test_dashboard_provider_loads_the_dashboards_directory() -> None:
    doc = yaml.safe_load((PROVISIONING / "dashboards" / "threads.yml").read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"

"""Lint the bundled Grafana dashboards.

The committed JSON is checked on its own (not through the generator that wrote it):
Grafana's dashboard-linter conventions (templated datasource, job/instance variables,
panel datasource, units, $__rate_interval, job/instance matchers), the project's own
(uid, 24 h range, descriptions, thresholds equal to the alert rules), PromQL validity
with an independent parser (promql-parser), and the dashboard schema through Grafana's
foundation SDK models (a misspelt key does not survive a round trip).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from contract import CONTRACT, HISTOGRAMS
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
RATE_FUNCS = {"rate", "irate", "increase"}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


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
    text = expr.replace("$__rate_interval", RATE_SENTINEL).replace("$__interval", "1m")
    text = text.replace("$__range", "1d")
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


def test_both_dashboards_exist() -> None:
    assert {f.name for f in FILES} >= {"overview.json", "containers.json"}


def test_generated_files_match_generator() -> None:
    spec = importlib.util.spec_from_file_location("generate", DASHBOARD_DIR / "generate.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for name, builder in gen.DASHBOARDS.items():
        committed = (DASHBOARD_DIR / name).read_text()
        assert committed == gen.render(builder), (
            f"dashboards/{name} drifted from dashboards/generate.py; "
            "run python dashboards/generate.py")


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
    assert v["multi"] is True and v["includeAll"] is True
    assert v["allValue"] == ".+"
    assert v["label"] == name.capitalize()
    assert v["refresh"] == 2, "refresh on time range change, so new targets appear"
    m = re.fullmatch(r"label_values\((.+), *(\w+)\)", v["query"])
    assert m and m.group(2) == name, v["query"]
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
        assert len(p.get("description", "")) >= 30, f"{where}: no real description"
        assert p["fieldConfig"]["defaults"].get("unit") in UNITS, where
        assert p.get("datasource") == DS, where
        assert p.get("targets"), f"{where}: no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), where
        for t in p["targets"]:
            assert t.get("datasource") == DS, where


def test_titles_unique(dash: dict[str, Any]) -> None:
    titles = [p["title"] for p in panels(dash)]
    assert len(titles) == len(set(titles))


def test_queries_parse_and_use_contract_metrics(dash: dict[str, Any]) -> None:
    for p, t in targets(dash):
        for node in walk(parse(t["expr"])):
            if isinstance(node, promql_parser.VectorSelector):
                assert family(node.name) in CONTRACT, f"{p['title']}: unknown {node.name}"


def test_rates_use_rate_interval(dash: dict[str, Any]) -> None:
    seen = 0
    for p, t in targets(dash):
        for node in walk(parse(t["expr"])):
            if isinstance(node, promql_parser.Call) and node.func.name in RATE_FUNCS:
                seen += 1
                (arg,) = [a for a in node.args if isinstance(a, promql_parser.MatrixSelector)]
                assert arg.range == promql_parser.parse_duration(RATE_SENTINEL), (
                    f"{p['title']}: {node.func.name} over {arg.range}, not $__rate_interval")
    assert seen, "no rate() at all: this check would be vacuous"


def test_selectors_filter_by_job_instance_and_account(dash: dict[str, Any]) -> None:
    for p, t in targets(dash):
        for node in walk(parse(t["expr"])):
            if not isinstance(node, promql_parser.VectorSelector):
                continue
            matchers = {m.name: (str(m.op), m.value) for m in node.matchers.matchers}
            where = f"{p['title']}: {node.name}"
            assert matchers.get("job") == ("MatchOp.Re", "VAR_job"), where
            assert matchers.get("instance") == ("MatchOp.Re", "VAR_instance"), where
            if "account" in CONTRACT[family(node.name)]:
                assert matchers.get("account") == ("MatchOp.Re", "VAR_account"), where


def test_panels_for_counters_never_show_raw_counters_as_rates(dash: dict[str, Any]) -> None:
    """A counter is either wrapped in rate()/increase() or shown as 'since start'."""
    for p, t in targets(dash):
        tree = walk(parse(t["expr"]))
        counters = [n for n in tree if isinstance(n, promql_parser.VectorSelector)
                    and (n.name.endswith("_total") or n.name.endswith("_bucket"))]
        rated = any(isinstance(n, promql_parser.Call) and n.func.name in RATE_FUNCS
                    for n in tree)
        if counters and not rated:
            assert "since" in p["title"].lower(), p["title"]


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
    cmp = r"(?:>=|<|>)\s*([\d.]+(?:\s*\*\s*[\d.]+)*)\s*$"
    return {
        "warning_ratio": _threshold("ThreadsQuotaHigh", cmp),
        "critical_ratio": _threshold("ThreadsQuotaCritical", cmp),
        "horizon": _threshold("ThreadsQuotaExhaustionPredicted",
                              r"predict_linear\([^,]+,\s*([\d.\s*]+)\)"),
        "token_warning": _threshold("ThreadsTokenExpiringSoon", cmp),
        "token_critical": _threshold("ThreadsTokenExpiresWithinOneDay", cmp),
        "stuck": _threshold("ThreadsContainersStuck", cmp),
    }


def _steps(p: dict[str, Any]) -> list[tuple[str, float | None]]:
    return [(s["color"], s["value"])
            for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def test_rule_thresholds_are_the_documented_ones() -> None:
    assert rule_thresholds() == {"warning_ratio": 0.8, "critical_ratio": 0.95,
                                 "horizon": 4 * 3600, "token_warning": 7 * 86400,
                                 "token_critical": 86400, "stuck": 0}


def test_dashboard_thresholds_match_alert_rules() -> None:
    th = rule_thresholds()
    kinds: dict[str, int] = {}
    for f in FILES:
        for p, t in targets(load(f)):
            expr = t["expr"]
            if "deriv(threads_quota_usage" in expr:
                kind = "exhaustion"
                assert _steps(p) == [("red", None), ("green", th["horizon"])], p["title"]
            elif re.search(r"threads_quota_usage\{[^}]*\} / \(threads_quota_limit", expr):
                kind = "ratio"
                assert _steps(p) == [("green", None), ("orange", th["warning_ratio"]),
                                     ("red", th["critical_ratio"])], p["title"]
            elif "threads_token_expiry_timestamp_seconds" in expr:
                kind = "token"
                assert _steps(p) == [("red", None), ("orange", th["token_critical"]),
                                     ("green", th["token_warning"])], p["title"]
            elif "threads_containers_stuck" in expr:
                kind = "stuck"
                # The alert fires on > 0 stuck containers: red from the first one.
                assert _steps(p) == [("green", None), ("red", th["stuck"] + 1)], p["title"]
            else:
                continue
            kinds[kind] = kinds.get(kind, 0) + 1
    # Two ratio panels (gauge and time series), one of each other kind.
    assert kinds == {"ratio": 2, "exhaustion": 1, "token": 1, "stuck": 1}, kinds


# --- required content ---------------------------------------------------------------------


def _exprs(name: str) -> str:
    return "\n".join(t["expr"] for _, t in targets(load(DASHBOARD_DIR / name)))


def test_overview_covers_the_issue() -> None:
    text = _exprs("overview.json")
    for needle in ["threads_quota_usage", "threads_quota_limit",  # ratio, remaining
                   "deriv(threads_quota_usage",  # time until exhaustion
                   "threads_last_error_reason", "threads_up",  # failing and why
                   "threads_api_requests_total", "threads_api_errors_total",
                   "threads_api_request_duration_seconds_bucket",
                   "threads_token_expiry_timestamp_seconds"]:
        assert needle in text, needle


def test_containers_covers_the_issue() -> None:
    text = _exprs("containers.json")
    for needle in ["threads_containers{", "threads_container_errors_total",
                   "sum by (error_message)", "threads_containers_stuck",
                   "histogram_quantile(0.5", "histogram_quantile(0.99",
                   "threads_container_processing_seconds_bucket"]:
        assert needle in text, needle


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

"""Prometheus in the loop: a real Prometheus scrapes the real exporter in --demo mode with
the bundled rules loaded; every dashboard variable and panel query must return data and
every rule must be healthy."""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from contract import OPTIONAL
from procs import REPO, exporter, prometheus
from waiting import wait_for

_spec = importlib.util.spec_from_file_location("render_dashboards",
                                               REPO / "scripts" / "render_dashboards.py")
assert _spec and _spec.loader
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)

DASHBOARD_FILES = sorted((REPO / "dashboards").glob("*.json"))
RULES = REPO / "prometheus" / "rules.yml"
JOB = "threads-exporter"  # one of the jobs the bundle's threadsSelector names

# Grafana computes $__rate_interval as max(4 x scrape interval, $__interval + scrape
# interval); with the 1 s scrape interval used here 10 s holds several samples.
RATE_INTERVAL = "10s"
SAMPLES_NEEDED = 15  # seconds of scrapes before the queries run
# Prometheus' scrape timeout is its 1 s interval here: on a loaded machine a scrape can miss
# it, and the exporter's series are stale until the next one succeeds. Whatever a test reads
# at "now" it waits for, this long at most.
SETTLE_SECONDS = 30.0


def _queries() -> list[tuple[str, str, str, bool]]:
    """(test id, dashboard file, expression, instant) for every panel target, rows' panels
    included."""
    out = []
    for path in DASHBOARD_FILES:
        dash = json.loads(path.read_text())
        for p in render.panels(dash):
            for t in p.get("targets", []):
                test_id = f"{path.stem}:{p['title']}:{t['refId']}"
                out.append((test_id, path.name, t["expr"], bool(t.get("instant"))))
    return out


def optional_only(expr: str) -> bool:
    """A query of metrics the demo's simulator never produces (Meta's usage headers): it
    must run without error, but may well be empty."""
    return any(name in expr for name in OPTIONAL)


def _variables() -> list[tuple[str, str, str]]:
    out = []
    for path in DASHBOARD_FILES:
        dash = json.loads(path.read_text())
        for v in dash["templating"]["list"]:
            if v["type"] == "query":
                out.append((f"{path.stem}:${v['name']}", path.name, v["query"]))
    return out


QUERIES = _queries()
VARIABLES = _variables()


class Loop:
    def __init__(self, url: str, exporter_target: str):
        self.url = url
        self.prom = render.Prometheus(url)
        self.target = exporter_target

    def selections(self) -> list[dict[str, str]]:
        """Variables set to All, and to concrete values as a user would pick them: a
        multi-value selection is formatted by Grafana as a regex alternation. The demo's
        "brand" account is healthy, "expired" fails and "support" has failed and lost
        containers, so every panel has something."""
        everything = {"job": ".+", "instance": ".+", "account": ".+",
                      "datasource": "prometheus"}
        concrete = {"job": JOB, "instance": self.target.replace(".", "\\\\."),
                    "account": "(brand|support|expired)", "datasource": "prometheus"}
        return [everything, concrete]


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    cwd = tmp_path_factory.mktemp("prom-loop")
    with exporter("--demo", cwd=cwd) as (_proc, base):
        target = base.removeprefix("http://")
        with prometheus([target], rule_files=[RULES], job=JOB) as url:
            loop = Loop(url, target)
            _wait_for_samples(loop)
            yield loop


def _wait_for_samples(loop: Loop, timeout: float = 45.0) -> None:
    """Until Prometheus holds SAMPLES_NEEDED scrapes of the exporter and has evaluated every
    rule."""
    def progress() -> tuple[float, bool]:
        try:
            got = loop.prom.instant(f'count_over_time(up{{job="{JOB}"}}[1m])')
            rules = _rules(loop.url)
        except (RuntimeError, httpx.HTTPError):
            got, rules = [], []
        evaluated = bool(rules) and all(
            not r.get("lastEvaluation", "0001").startswith("0001") for r in rules)
        return (float(got[0]["value"][1]) if got else 0.0), evaluated

    wait_for(progress, until=lambda p: p[0] >= SAMPLES_NEEDED and p[1], timeout=timeout,
             interval=0.5, what="samples of the exporter and rule evaluations")


def _rules(url: str) -> list[dict[str, Any]]:
    body = httpx.get(url + "/api/v1/rules", timeout=5).json()
    return [r for g in body["data"]["groups"] for r in g["rules"]]


def test_exporter_target_is_up(loop: Loop) -> None:
    def health() -> list[str]:
        targets = httpx.get(loop.url + "/api/v1/targets", timeout=5).json()["data"]
        return [t["health"] for t in targets["activeTargets"]]

    wait_for(health, until=lambda h: h == ["up"], timeout=SETTLE_SECONDS, interval=0.5)


@pytest.mark.parametrize(("name", "dashboard", "query"), VARIABLES,
                         ids=[v[0] for v in VARIABLES])
def test_variable_query_returns_values(loop: Loop, name: str, dashboard: str,
                                       query: str) -> None:
    selector, label = render.label_values_query(query)
    for values in loop.selections():
        sel = render.substitute(selector, values) if selector else None
        got = loop.prom.label_values(label, sel)
        assert got, f"{dashboard} {name}: label_values({sel}, {label}) returned nothing"


@pytest.mark.parametrize(("name", "dashboard", "expr", "instant"), QUERIES,
                         ids=[q[0] for q in QUERIES])
def test_panel_query_returns_data(loop: Loop, name: str, dashboard: str, expr: str,
                                  instant: bool) -> None:
    for values in loop.selections():
        query = render.substitute(expr, values, rate_interval=RATE_INTERVAL,
                                  interval="1s", range_="1m")

        def result(query: str = query) -> list[dict[str, Any]]:
            now = time.time()  # the panel as it would be drawn now: a fresh "now" each time
            if instant:
                return loop.prom.instant(query, at=now)
            return loop.prom.range(query, now - 10, now, 1)

        if optional_only(expr):
            result()  # runs: no error from Prometheus
            continue
        wait_for(result, timeout=SETTLE_SECONDS, interval=0.5,
                 what=f"{dashboard} {name}: data for {query!r} (variables {values})")


def test_every_rule_is_healthy(loop: Loop) -> None:
    rules = _rules(loop.url)
    names = {r["name"] for r in rules}
    assert "threads:quota_usage:ratio" in names
    assert len(rules) >= 10, names
    bad = {r["name"]: (r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"}
    assert not bad, bad


def test_recording_rule_produces_ratios(loop: Loop) -> None:
    got = wait_for(lambda: loop.prom.instant(f'threads:quota_usage:ratio{{job="{JOB}"}}'),
                   timeout=SETTLE_SECONDS, interval=0.5)
    for s in got:
        assert 0 <= float(s["value"][1]) <= 1.5, s


def test_failing_account_alerts_name_the_reason(loop: Loop) -> None:
    # The demo's "expired" account fails with token_invalid: ThreadsAccountFailing and
    # ThreadsTokenInvalid are pending within seconds of the first evaluation, one each,
    # the reason in the annotation (a label would restart `for` whenever it changed).
    def failing() -> dict[str, list[dict[str, Any]]]:
        alerts = httpx.get(loop.url + "/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        out: dict[str, list[dict[str, Any]]] = {}
        for a in alerts:
            if a["labels"]["alertname"] in ("ThreadsAccountFailing", "ThreadsTokenInvalid"):
                out.setdefault(a["labels"]["alertname"], []).append(a)
        return out

    got = wait_for(failing, until=lambda f: len(f) == 2, timeout=SETTLE_SECONDS, interval=0.5)
    for name, alerts in got.items():
        assert [a["labels"] for a in alerts] == [
            {"alertname": name, "account": "expired",
             "severity": "warning" if name == "ThreadsAccountFailing" else "critical"}]
    (failing_alert,) = got["ThreadsAccountFailing"]
    assert "(latest reason: token_invalid)" in failing_alert["annotations"]["description"]
    assert failing_alert["annotations"]["dashboard_url"].endswith(
        "/d/threads-exporter-account?var-account=expired")


def test_render_script_draws_every_dashboard(loop: Loop, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "png"
    assert render.main(["--prometheus", loop.url, "--out", str(out), "--range", "60"]) == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["account.png", "containers.png", "overview.png"]
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert p.stat().st_size > 20_000

"""The jsonnet mixin (mixin/mixin.libsonnet), built with the jsonnet package: it makes exactly
the committed rules and dashboards, and a user's `_config` override changes them as the same
override of monitoring/config.py does."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring import generate
from monitoring.config import resolve
from procs import REPO, promtool_bin

_jsonnet = pytest.importorskip("_jsonnet")
MIXIN = REPO / "mixin"


def build(override: str = "{}") -> dict[str, Any]:
    snippet = (f"local m = (import 'mixin.libsonnet') + {override};\n"
               "{rules: m.prometheusRules, alerts: m.prometheusAlerts,\n"
               " dashboards: m.grafanaDashboards, config: m._config}")
    result: dict[str, Any] = json.loads(
        _jsonnet.evaluate_snippet("test.jsonnet", snippet, jpathdir=[str(MIXIN)]))
    return result


@pytest.fixture(scope="module")
def built() -> dict[str, Any]:
    return build()


def test_mixin_files_are_generated_from_the_config() -> None:
    for path, make in generate.outputs().items():
        if path.is_relative_to(MIXIN):
            assert path.read_text() == make(), f"{path.name}: run python monitoring/generate.py"


def test_rules_equal_the_committed_rules_file(built: dict[str, Any]) -> None:
    groups = built["rules"]["groups"] + built["alerts"]["groups"]
    committed = yaml.safe_load((REPO / "prometheus" / "rules.yml").read_text())["groups"]
    assert groups == committed
    assert all("record" in r for g in built["rules"]["groups"] for r in g["rules"])
    assert all("alert" in r for g in built["alerts"]["groups"] for r in g["rules"])


def test_rules_equal_the_prometheus_rule(built: dict[str, Any]) -> None:
    resource = yaml.safe_load(
        (REPO / "deploy" / "kubernetes" / "base" / "prometheusrule.yaml").read_text())
    assert resource["spec"]["groups"] == built["rules"]["groups"] + built["alerts"]["groups"]


def test_dashboards_equal_the_committed_json(built: dict[str, Any]) -> None:
    assert set(built["dashboards"]) == {p.name for p in (REPO / "dashboards").glob("*.json")}
    for name, board in built["dashboards"].items():
        assert board == json.loads((REPO / "dashboards" / name).read_text()), name


def test_config_equals_the_python_config(built: dict[str, Any]) -> None:
    assert built["config"] == json.loads(json.dumps(resolve()))


OVERRIDE = {
    "threadsSelector": 'job="threads", cluster="eu1"',
    "grafanaUrl": "https://grafana.example.com",
    "quotaWarningRatio": 0.7,
    "tokenExpiryWarningDays": 14,
    "worstAccounts": 50,
    "alertSeverity": {"ThreadsAccountFailing": "critical"},
    "alertFor": {"ThreadsQuotaHigh": "30m"},
}


def test_an_override_changes_rules_and_dashboards_as_in_python(tmp_path: Path) -> None:
    """What makes it a mixin: `_config+::` reaches every rule and panel, and gives what the
    Python generator gives for the same config."""
    plain = {k: v for k, v in OVERRIDE.items() if not isinstance(v, dict)}
    nested = ", ".join(f"{k}+: {json.dumps(v)}" for k, v in OVERRIDE.items()
                       if isinstance(v, dict))
    got = build("{_config+:: " + json.dumps(plain)[:-1] + ", " + nested + "}}")
    config = resolve(OVERRIDE)
    assert got["rules"]["groups"] + got["alerts"]["groups"] == generate.rule_groups(config)
    for name in generate.dashboards.DASHBOARDS:
        assert got["dashboards"][name] == generate.dashboard(name, config), name
    text = json.dumps(got)
    assert 'job=\\"threads\\", cluster=\\"eu1\\"' in text
    assert "threads-exporter|threads-probe" not in text
    rules = {r["alert"]: r for g in got["alerts"]["groups"] for r in g["rules"]}
    assert rules["ThreadsQuotaHigh"]["expr"].endswith(">= 0.7")
    assert rules["ThreadsQuotaHigh"]["for"] == "30m"
    assert rules["ThreadsAccountFailing"]["labels"]["severity"] == "critical"
    assert rules["ThreadsQuotaHigh"]["annotations"]["dashboard_url"].startswith(
        "https://grafana.example.com/d/")
    overview = got["dashboards"]["overview.json"]
    titles = [p["title"] for p in overview["panels"]]
    assert "Quotas ≥ 70 %" in titles and "Tokens ≤ 14 d or invalid" in titles
    promtool = promtool_bin()
    if promtool is None:
        pytest.skip("promtool not installed")
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": got["rules"]["groups"] + got["alerts"]["groups"]}))
    r = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mixin_is_importable_from_another_directory(tmp_path: Path) -> None:
    """As jsonnet-bundler vendors it: vendor/threads-mixin/mixin.libsonnet."""
    vendor = tmp_path / "vendor" / "threads-mixin"
    shutil.copytree(MIXIN, vendor)
    out = json.loads(_jsonnet.evaluate_snippet(
        "main.jsonnet",
        "local t = import 'threads-mixin/mixin.libsonnet';"
        "{n: std.length(t.prometheusAlerts.groups), d: std.objectFields(t.grafanaDashboards)}",
        jpathdir=[str(tmp_path / "vendor")]))
    assert out["n"] >= 4 and out["d"] == ["account.json", "containers.json", "overview.json"]

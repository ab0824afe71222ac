"""The bundled Prometheus rules: promtool checks and unit tests, plus conventions."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from contract import SERIES
from procs import REPO, promtool_bin

RULES = REPO / "prometheus" / "rules.yml"
RULES_TEST = REPO / "prometheus" / "rules_test.yml"

REQUIRED_ALERTS = {
    "ThreadsQuotaHigh", "ThreadsQuotaCritical", "ThreadsQuotaExhaustionPredicted",
    "ThreadsAccountFailing", "ThreadsExporterDown", "ThreadsExporterAbsent",
    "ThreadsTokenExpiringSoon", "ThreadsTokenExpiresWithinOneDay",
    "ThreadsContainerFailures", "ThreadsContainersStuck",
}


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r for g in groups for r in g["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = promtool_bin()
    if binary is None:
        pytest.skip("promtool not installed (Debian package 'prometheus')")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)


def test_promtool_check_rules() -> None:
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules())} rules found" in r.stdout


def test_promtool_unit_tests_pass() -> None:
    r = promtool("test", "rules", str(RULES_TEST))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def _mutated(tmp_path: Path, old: str, new: str) -> subprocess.CompletedProcess[str]:
    text = RULES.read_text()
    assert old in text, old
    (tmp_path / "rules.yml").write_text(text.replace(old, new, 1))
    shutil.copy(RULES_TEST, tmp_path / "rules_test.yml")
    return promtool("test", "rules", str(tmp_path / "rules_test.yml"))


@pytest.mark.parametrize(("old", "new"), [
    ("threads:quota_usage:ratio >= 0.8", "threads:quota_usage:ratio >= 0.85"),
    ("threads:quota_usage:ratio >= 0.95", "threads:quota_usage:ratio >= 0.9"),
    ("4 * 3600) >= threads_quota_limit", "1 * 3600) >= threads_quota_limit"),
    ('label_replace(threads_up == 0, "reason", "unknown", "", "")', "threads_up == 0"),
    ('up{job=~".*threads.*"} == 0', "up == 0"),
    ("- time() < 7 * 86400", "- time() < 2 * 86400"),
    ("- time() < 86400", "- time() < 86400 * 0.25"),
    ("(threads_container_errors_total[15m])", "(threads_container_errors_total[40m])"),
    ("threads_containers_stuck > 0", "threads_containers_stuck > 2"),
    ("threads_exporter_config_last_reload_successful == 0",
     "threads_exporter_config_last_reload_successful < 2"),
], ids=["high", "critical", "exhaustion", "failing-unknown", "down-job", "token-7d",
        "token-1d", "container-window", "stuck", "reload"])
def test_unit_tests_catch_a_broken_rule(tmp_path: Path, old: str, new: str) -> None:
    """The unit tests are not tautologies: each changed rule makes them fail."""
    r = _mutated(tmp_path, old, new)
    assert r.returncode != 0, f"rules_test.yml still passes with {new!r}:\n{r.stdout}"


def test_required_alerts_present() -> None:
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)), names
    assert set(names) >= REQUIRED_ALERTS


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names <= firing, names - firing
    assert names <= quiet, names - quiet


def test_alert_conventions() -> None:
    for a in alerts():
        assert re.fullmatch(r"Threads(?:[A-Z][a-z0-9]+)+", a["alert"]), a["alert"]
        assert a["labels"]["severity"] in {"warning", "critical"}, a["alert"]
        ann = a["annotations"]
        assert ann.get("summary") and ann.get("description"), a["alert"]
        assert "\n" not in ann["summary"], a["alert"]


def test_recording_rule_names_follow_level_metric_operation() -> None:
    recorded = [r["record"] for r in rules() if "record" in r]
    assert "threads:quota_usage:ratio" in recorded
    for name in recorded:
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", name), name


def test_rules_use_only_contract_metrics() -> None:
    recorded = {r["record"] for r in rules() if "record" in r}
    for r in rules():
        nodes: list[Any] = []
        promql_parser.walk(promql_parser.parse(r["expr"]), nodes.append)
        for n in nodes:
            if isinstance(n, promql_parser.VectorSelector):
                assert n.name in SERIES | recorded, (r.get("alert") or r["record"],
                                                            n.name)


def test_account_failing_alert_carries_the_reason() -> None:
    (rule,) = [a for a in alerts() if a["alert"] == "ThreadsAccountFailing"]
    assert "threads_last_error_reason" in rule["expr"]
    assert "$labels.reason" in rule["annotations"]["summary"]

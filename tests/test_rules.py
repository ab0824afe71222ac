"""The bundled Prometheus rules: promtool checks and unit tests, plus conventions."""

from __future__ import annotations

import re
import subprocess
import sys
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
    "ThreadsAccountFailing", "ThreadsTokenInvalid", "ThreadsExporterDown",
    "ThreadsExporterAbsent", "ThreadsTokenExpiringSoon", "ThreadsTokenExpiresWithinOneDay",
    "ThreadsTokenExpiryUnknown", "ThreadsAppUsageHigh", "ThreadsConfigReloadFailed",
    "ThreadsContainerStoreDown", "ThreadsContainerPollBacklog", "ThreadsContainersStuck",
    "ThreadsContainersUnanswered", "ThreadsContainersExpired",
    "ThreadsContainerProcessingFailures", "ThreadsContainerMediaRejected",
}
# Alerts about one exporter target, not about an account.
TARGET_ALERTS = {"ThreadsExporterDown", "ThreadsExporterAbsent", "ThreadsConfigReloadFailed",
                 "ThreadsContainerStoreDown", "ThreadsContainerPollBacklog",
                 "ThreadsAppUsageHigh"}
RUNBOOK = REPO / "docs" / "runbook.md"
SEL = 'job=~"threads-exporter|threads-probe"'


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
    """promtool's unit tests against a copy of the rules with `old` replaced by `new`, run
    for the test groups that check a changed rule (the others cannot notice, and the whole
    file takes seconds)."""
    text = RULES.read_text()
    assert old in text, old
    mutated = text.replace(old, new)
    (tmp_path / "rules.yml").write_text(mutated)
    before = {r.get("alert") or r["record"]: r for g in yaml.safe_load(text)["groups"]
              for r in g["rules"]}
    after = {r.get("alert") or r["record"]: r for g in yaml.safe_load(mutated)["groups"]
             for r in g["rules"]}
    changed = {name for name in before if before[name] != after[name]}
    assert changed, f"{old!r} changes no rule"
    doc = yaml.safe_load(RULES_TEST.read_text())
    doc["tests"] = [t for t in doc["tests"]
                    if {c["alertname"] for c in t.get("alert_rule_test", [])} & changed
                    or any(c["expr"].split("{")[0] in changed
                           for c in t.get("promql_expr_test", []))]
    assert doc["tests"], f"no unit test checks {changed}"
    (tmp_path / "rules_test.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return promtool("test", "rules", str(tmp_path / "rules_test.yml"))


MUTATIONS = {
    "high": (f"ratio{{{SEL}}}) >= 0.8", f"ratio{{{SEL}}}) >= 0.85"),
    "critical": (f"ratio{{{SEL}}}) >= 0.95", f"ratio{{{SEL}}}) >= 0.9"),
    "exhaustion-horizon": ("4 * 3600)", "1 * 3600)"),
    "exhaustion-floor": (">= 0.5 < 1)", ">= 0.2 < 1)"),
    "failing-per-account": (f"max by (account) (threads_up{{{SEL}}}) == 0",
                            f"threads_up{{{SEL}}} == 0"),
    "token-invalid": ('reason="token_invalid"}) == 1',
                      'reason=~"token_invalid|rate_limited"}) == 1'),
    "token-lookback": (f"last_over_time(threads_token_expiry_timestamp_seconds{{{SEL}}}[2d])",
                       f"threads_token_expiry_timestamp_seconds{{{SEL}}}"),
    "token-7d": ("< 7 * 86400", "< 2 * 86400"),
    "token-1d": ("< 1 * 86400", "< 0.25 * 86400"),
    "token-account-gone": (f"and on (account) max by (account) (threads_up{{{SEL}}})\n", "\n"),
    "expiry-unknown-age": ("offset 1d", "offset 1h"),
    "app-usage-scope": ('scope="app"', 'scope=~"app|business"'),
    "down-job": (f"up{{{SEL}}} == 0", "up == 0"),
    "absent-job": (f"absent(up{{{SEL}}})", 'absent(up{job=~".*threads.*"})'),
    "store": (f"threads_exporter_container_store_up{{{SEL}}} == 0",
              f"threads_exporter_container_store_up{{{SEL}}} < 2"),
    "backlog-share": ("> 0.1 * sum without", "> 0.01 * sum without"),
    "backlog-floor": ("> 10\n", "> 2\n"),
    "stuck": (f"threads_containers_stuck{{{SEL}}}) > 0", f"threads_containers_stuck{{{SEL}}}) > 2"),
    "unanswered-for": (f"threads_containers_unanswered{{{SEL}}}) > 0\n    for: 15m",
                       f"threads_containers_unanswered{{{SEL}}}) > 0\n    for: 3m"),
    "expired-window": ('status="EXPIRED"}[1h]', 'status="EXPIRED"}[2h]'),
    "failure-floor": (">= 3\n", ">= 1\n"),
    "meta-share": (">= 0.2\n", ">= 0.04\n"),
    "meta-split": ('error_message!~"INVALID_.*"', 'error_message=~".+"'),
    "media-share": (">= 0.1\n    for", ">= 0.6\n    for"),
    "reload": (f"threads_exporter_config_last_reload_successful{{{SEL}}} == 0",
               f"threads_exporter_config_last_reload_successful{{{SEL}}} < 2"),
}


@pytest.mark.parametrize(("old", "new"), MUTATIONS.values(), ids=MUTATIONS.keys())
def test_unit_tests_catch_a_broken_rule(tmp_path: Path, old: str, new: str) -> None:
    """The unit tests are not tautologies: each changed rule makes them fail."""
    r = _mutated(tmp_path, old, new)
    assert r.returncode != 0, f"rules_test.yml still passes with {new!r}:\n{r.stdout}"


def test_rules_are_generated_from_the_config() -> None:
    r = subprocess.run([sys.executable, str(REPO / "monitoring" / "generate.py"), "--check"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


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
    anchors = {a.lower() for a in re.findall(r"^## (Threads\w+)$", RUNBOOK.read_text(), re.M)}
    for a in alerts():
        name = a["alert"]
        assert re.fullmatch(r"Threads(?:[A-Z][a-z0-9]+)+", name), name
        assert a["labels"] == {"severity": a["labels"]["severity"]}, name
        assert a["labels"]["severity"] in {"info", "warning", "critical"}, name
        ann = a["annotations"]
        assert set(ann) == {"summary", "description", "runbook_url", "dashboard_url"}, name
        assert "\n" not in ann["summary"], name
        url, _, anchor = ann["runbook_url"].partition("#")
        assert url.endswith("/docs/runbook.md") and anchor == name.lower(), name
        assert anchor in anchors, f"docs/runbook.md has no section for {name}"
        board = ann["dashboard_url"]
        if name in TARGET_ALERTS:
            assert "/d/threads-exporter-overview" in board, name
        else:
            # The dashboard that shows the problem, with the alert's account selected.
            assert board.endswith("?var-account={{ $labels.account }}"), name
            uid = "containers" if "Container" in name else "account"
            assert f"/d/threads-exporter-{uid}?" in board, name


def test_per_account_alerts_are_one_per_account() -> None:
    """Two jobs or replicas scraping one account: the alert aggregates job and instance
    away, and nothing that changes while the condition holds (a reason) is a label."""
    for a in alerts():
        if a["alert"] in TARGET_ALERTS:
            continue
        expr = a["expr"]
        assert "by (account" in expr, a["alert"]
        for grouping in re.findall(r"by \(([^)]*)\)", expr):
            assert not {"job", "instance", "reason"} & {g.strip() for g in grouping.split(",")}


def test_no_catch_all_job_selector() -> None:
    assert ".*threads.*" not in RULES.read_text()
    for r in rules():
        nodes: list[Any] = []
        promql_parser.walk(promql_parser.parse(r["expr"]), nodes.append)
        for n in nodes:
            if isinstance(n, promql_parser.VectorSelector):
                jobs = [m.value for m in n.matchers.matchers if m.name == "job"]
                assert jobs == ["threads-exporter|threads-probe"], (r.get("alert"), n)


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


def test_account_failing_alert_names_the_reason_in_its_annotation() -> None:
    (rule,) = [a for a in alerts() if a["alert"] == "ThreadsAccountFailing"]
    assert "reason" not in rule["expr"], "a reason label restarts `for` when it changes"
    assert "threads_last_error_reason" in rule["annotations"]["description"]


def test_counts_in_annotations_are_rounded() -> None:
    for a in alerts():
        text = a["annotations"]["description"] + a["annotations"]["summary"]
        for use in re.findall(r"\{\{[^}]*\$value[^}]*\}\}", text):
            assert re.search(r"humanizePercentage|humanizeDuration|printf \"%\.0f\"|if lt",
                             use), \
                (a["alert"], use)

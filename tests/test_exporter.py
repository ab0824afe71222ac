"""The real exporter process, over HTTP, against the simulator and with bad input."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from contract import BOUNDED, CONTRACT, HELP, KINDS, OPTIONAL
from procs import Proc, exporter, exporter_cmd, free_port, promtool_bin
from threads_exporter.demo.server import SimulatorServer
from threads_exporter.demo.simulator import demo_accounts, demo_simulator


def samples(text: str, name: str) -> dict[str, float]:
    """{label string: value} of one metric in an exposition."""
    out = {}
    for line in text.splitlines():
        m = re.match(rf"^{name}(\{{.*\}})? (\S+)$", line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


@pytest.fixture(scope="module")
def demo():
    with exporter("--demo", "--log.level", "debug") as (proc, base):
        yield proc, base


def test_demo_serves_quotas_for_healthy_accounts(demo):
    _, base = demo
    text = httpx.get(base + "/metrics", timeout=10).text
    up = samples(text, "threads_up")
    assert up == {'{account="brand"}': 1, '{account="agency"}': 1, '{account="support"}': 1,
                  '{account="no-delete"}': 1, '{account="expired"}': 0}
    usage = samples(text, "threads_quota_usage")
    for quota in ("posts", "replies", "deletes", "location_searches"):
        assert f'{{account="brand",quota="{quota}"}}' in usage
    assert not any('account="expired"' in k for k in usage)
    assert samples(text, "threads_last_error_reason") == {
        '{account="expired",reason="token_invalid"}': 1}


def test_token_without_delete_permission_reports_posts_and_replies_only(demo):
    _, base = demo
    usage = samples(httpx.get(base + "/metrics", timeout=10).text, "threads_quota_usage")
    groups = {re.search(r'quota="(\w+)"', k).group(1) for k in usage if "no-delete" in k}
    assert {"posts", "replies"} <= groups
    assert "deletes" not in groups


def test_token_expiry_is_exported_where_debug_token_answers(demo):
    _, base = demo
    expiry = samples(httpx.get(base + "/metrics", timeout=10).text,
                     "threads_token_expiry_timestamp_seconds")
    assert '{account="agency"}' in expiry
    assert '{account="expired"}' not in expiry


def test_demo_exposes_every_contract_family_with_its_labels(demo):
    """Every metric of the table appears with its type, help and labels; every threads_*
    family exposed is in the table; every bounded label stays within its values."""
    _, base = demo
    deadline = time.monotonic() + 30
    while True:  # container families need the demo's first containers polled
        text = httpx.get(base + "/metrics", timeout=10).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        labels: dict[str, set[str]] = {}
        for family in families.values():
            name = family.name + ("_total" if family.type == "counter" else "")
            for sample in family.samples:
                labels.setdefault(name, set()).update(set(sample.labels) - {"le"})
        missing = {m for m in CONTRACT if m != "up" and m not in labels} - OPTIONAL
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not missing
    for family in families.values():
        name = family.name + ("_total" if family.type == "counter" else "")
        if not name.startswith("threads_"):
            assert name.startswith(("process_", "python_")), name  # client_python's own
            continue
        assert name in CONTRACT, f"{name} is exposed but not in threads_exporter.metrics"
        assert (family.type, family.documentation) == (KINDS[name], HELP[name]), name
        assert labels.get(name, CONTRACT[name]) == CONTRACT[name], name  # unless no samples
        for sample in family.samples:
            for label, value in sample.labels.items():
                assert label not in BOUNDED or value in BOUNDED[label], (name, label, value)
    assert {"process_resident_memory_bytes", "python_info"} <= set(families)


@pytest.mark.skipif(promtool_bin() is None, reason="promtool not installed")
def test_metrics_pass_promtool_check(demo):
    _, base = demo
    body = httpx.get(base + "/metrics", timeout=10).content
    result = subprocess.run([promtool_bin(), "check", "metrics"], input=body,
                            capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == b"" and result.stderr.strip() == b""


def test_openmetrics_and_gzip_are_negotiated(demo):
    _, base = demo
    r = httpx.get(base + "/metrics", headers={"Accept": "application/openmetrics-text"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")
    r = httpx.get(base + "/metrics", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    assert "threads_up" in r.text


def test_probe_reports_one_account(demo):
    _, base = demo
    text = httpx.get(base + "/probe", params={"account": "brand"}).text
    assert set(samples(text, "threads_up")) == {'{account="brand"}'}
    assert "threads_exporter_build_info" not in text
    assert httpx.get(base + "/probe", params={"account": "nobody"}).status_code == 400
    assert httpx.get(base + "/probe").status_code == 400


def test_landing_page_health_and_unknown_paths(demo):
    _, base = demo
    page = httpx.get(base + "/").text
    assert "/metrics" in page and "agency" in page
    assert "demo-token" not in page
    assert httpx.get(base + "/-/healthy").text == "Healthy\n"
    assert httpx.get(base + "/-/ready").status_code == 200
    assert httpx.get(base + "/nope").status_code == 404
    assert httpx.post(base + "/metrics").status_code == 405


def test_no_demo_token_in_any_response_or_debug_log(demo):
    proc, base = demo
    tokens = [account.token for _, account in demo_accounts()]
    bodies = [httpx.get(base + p).text for p in ("/", "/metrics", "/probe?account=expired",
                                                 "/probe?account=x", "/nope")]
    bodies.append(httpx.post(base + "/-/reload").text)
    log = proc.output()
    assert "level=debug" in log
    for token in tokens:
        assert all(token not in body for body in bodies)
        assert token not in log


# --- against a simulator we can count calls on ---------------------------------------------


@pytest.fixture
def simulator():
    server = SimulatorServer(demo_simulator(latency=0.05)).start()
    yield server
    server.stop()


def write_config(path: Path, base_url: str, names: list[str] | None = None, **extra) -> Path:
    accounts = [{"name": name, "access_token": sim.token}
                for name, sim in demo_accounts() if names is None or name in names]
    path.write_text(yaml.safe_dump({"api": {"base_url": base_url}, "accounts": accounts,
                                    "containers": {"state_path": str(path.parent / "s.db")},
                                    **extra}))
    return path


def test_ten_concurrent_scrapes_make_at_most_one_call_per_account(tmp_path, simulator):
    config = write_config(tmp_path / "c.yaml", simulator.base_url, ["brand", "agency"])
    with exporter("--config.file", str(config)) as (_, base):
        baseline = simulator.sim.calls.get("publishing_limit", 0)
        results: list[int] = []

        def scrape() -> None:
            results.append(httpx.get(base + "/metrics", timeout=10).status_code)

        threads = [threading.Thread(target=scrape) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [200] * 10
        assert simulator.sim.calls["publishing_limit"] - baseline <= 2


def test_reload_adopts_a_good_config_and_keeps_the_old_one_on_a_bad_one(tmp_path, simulator):
    config = write_config(tmp_path / "c.yaml", simulator.base_url, ["brand"])
    with exporter("--config.file", str(config)) as (_, base):
        write_config(config, simulator.base_url, ["brand", "support"])
        assert httpx.post(base + "/-/reload").status_code == 200
        text = httpx.get(base + "/metrics").text
        assert '{account="support"}' in samples(text, "threads_up")
        assert samples(text, "threads_exporter_config_last_reload_successful") == {"": 1}
        config.write_text("accounts: [{name: x}]\n")
        r = httpx.post(base + "/-/reload")
        assert r.status_code == 400
        assert "accounts[0]: one of access_token or access_token_file is required" in r.text
        text = httpx.get(base + "/metrics").text
        assert samples(text, "threads_exporter_config_last_reload_successful") == {"": 0}
        assert '{account="support"}' in samples(text, "threads_up")


# --- bad input at start-up -----------------------------------------------------------------


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(exporter_cmd(*args), capture_output=True, text=True, timeout=30,
                          cwd=cwd)


def test_bad_config_exits_1_and_names_the_field(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("accounts:\n  - name: a\n    access_token_file: /run/secrets/x\n")
    result = run_cli("--config.file", str(config))
    assert result.returncode == 1
    assert "accounts[0].access_token_file: no such file: /run/secrets/x" in result.stderr
    check = run_cli("--config.file", str(config), "--config.check")
    assert check.returncode == 1
    assert "accounts[0].access_token_file" in check.stderr


def test_config_check_accepts_a_good_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("accounts:\n  - name: a\n    access_token: t\n")
    result = run_cli("--config.file", str(config), "--config.check")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_missing_default_config_is_a_clear_error(tmp_path):
    result = run_cli(cwd=tmp_path)
    assert result.returncode == 1
    assert "--config.file: no such file: config.yaml" in result.stderr


def test_bad_flag_exits_1():
    result = run_cli("--log.level", "loud")
    assert result.returncode == 1
    assert "--log.level" in result.stderr


def test_port_in_use_exits_2():
    port = free_port()
    blocker = Proc([sys.executable, "-c", "import socket,time\n"
                    f"s=socket.socket();s.bind(('127.0.0.1',{port}));s.listen();time.sleep(30)"])
    try:
        wait_for_listen(port)
        result = run_cli("--demo", "--web.listen-address", f"127.0.0.1:{port}")
        assert result.returncode == 2
        assert "cannot listen" in result.stderr
    finally:
        blocker.stop()


def wait_for_listen(port: int) -> None:
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(port)


def test_version_flag():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("threads-exporter ")


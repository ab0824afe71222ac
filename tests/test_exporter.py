"""The real exporter process, over HTTP: in --demo mode, against the Graph API fake, and with
bad input."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contract import BOUNDED, CONTRACT, HELP, KINDS, OPTIONAL
from exposition import by_label, label_names, labels, samples, series, value
from fake_graph import FakeGraph, healthy
from procs import Proc, RunningExporter, exporter, exporter_cmd, free_port, promtool_bin
from threads_exporter.demo.simulator import demo_accounts
from waiting import eventually, wait_for


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningExporter]:
    cwd = tmp_path_factory.mktemp("demo")
    with exporter("--demo", "--log.level", "debug", cwd=cwd) as (proc, base):
        yield RunningExporter(proc, base)


def test_demo_serves_quotas_for_healthy_accounts(demo: RunningExporter):
    found = demo.metrics()
    assert by_label(found, "threads_up", "account") == {
        "brand": 1, "agency": 1, "support": 1, "no-delete": 1, "expired": 0}
    for quota in ("posts", "replies", "deletes", "location_searches"):
        assert value(found, "threads_quota_usage", account="brand", quota=quota) is not None
    assert not series(found, "threads_quota_usage", account="expired")
    assert series(found, "threads_last_error_reason") == {
        labels(account="expired", reason="token_invalid"): 1}


def test_token_without_delete_permission_reports_posts_and_replies_only(demo: RunningExporter):
    groups = set(by_label(demo.metrics(), "threads_quota_usage", "quota", account="no-delete"))
    assert {"posts", "replies"} <= groups
    assert "deletes" not in groups


def test_token_expiry_is_exported_where_debug_token_answers(demo: RunningExporter):
    expiry = by_label(demo.metrics(), "threads_token_expiry_timestamp_seconds", "account")
    assert "agency" in expiry
    assert "expired" not in expiry


def test_demo_exposes_every_contract_family_with_its_labels(demo: RunningExporter):
    """Every metric of the table appears with its type, help and labels; every threads_*
    family exposed is in the table; every bounded label stays within its values."""
    def every_family() -> str:
        # Container families need the demo's first containers polled.
        text = httpx.get(demo.url(), timeout=10).text
        found = label_names(text)
        assert not {m for m in CONTRACT if m != "up" and m not in found} - OPTIONAL
        return text

    text = eventually(every_family, timeout=30, interval=1)
    found = label_names(text)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for family in families.values():
        name = family.name + ("_total" if family.type == "counter" else "")
        if not name.startswith("threads_"):
            assert name.startswith(("process_", "python_")), name  # client_python's own
            continue
        assert name in CONTRACT, f"{name} is exposed but not in threads_exporter.metrics"
        assert (family.type, family.documentation) == (KINDS[name], HELP[name]), name
        if family.samples:
            assert found[name] == CONTRACT[name], name
        for sample in family.samples:
            for label, value_ in sample.labels.items():
                assert label not in BOUNDED or value_ in BOUNDED[label], (name, label, value_)
    assert {"process_resident_memory_bytes", "python_info"} <= set(families)


@pytest.mark.skipif(promtool_bin() is None, reason="promtool not installed")
def test_metrics_pass_promtool_check(demo: RunningExporter):
    body = httpx.get(demo.url(), timeout=10).content
    result = subprocess.run([promtool_bin(), "check", "metrics"], input=body,
                            capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == b"" and result.stderr.strip() == b""


def test_openmetrics_and_gzip_are_negotiated(demo: RunningExporter):
    base = demo.base
    r = httpx.get(base + "/metrics", headers={"Accept": "application/openmetrics-text"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")
    r = httpx.get(base + "/metrics", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    assert "threads_up" in r.text


def test_probe_reports_one_account(demo: RunningExporter):
    base = demo.base
    text = httpx.get(base + "/probe", params={"account": "brand"}).text
    assert set(series(samples(text), "threads_up")) == {labels(account="brand")}
    assert "threads_exporter_build_info" not in text
    assert httpx.get(base + "/probe", params={"account": "nobody"}).status_code == 400
    assert httpx.get(base + "/probe").status_code == 400


def test_landing_page_health_and_unknown_paths(demo: RunningExporter):
    base = demo.base
    page = httpx.get(base + "/").text
    assert "/metrics" in page and "agency" in page
    assert "demo-token" not in page
    assert httpx.get(base + "/-/healthy").text == "Healthy\n"
    assert httpx.get(base + "/-/ready").status_code == 200
    assert httpx.get(base + "/nope").status_code == 404
    assert httpx.post(base + "/metrics").status_code == 405


def test_no_demo_token_in_any_response_or_debug_log(demo: RunningExporter):
    base = demo.base
    tokens = [account.token for _, account in demo_accounts()]
    bodies = [httpx.get(base + p).text for p in ("/", "/metrics", "/probe?account=expired",
                                                 "/probe?account=x", "/nope")]
    bodies.append(httpx.post(base + "/-/reload").text)
    log = demo.output()
    assert "level=debug" in log
    for token in tokens:
        assert all(token not in body for body in bodies)
        assert token not in log


# --- against the fake, which counts the calls ------------------------------------------------


@pytest.fixture
def upstream(fake_graph: FakeGraph) -> FakeGraph:
    fake_graph.latency = 0.05
    for i, name in enumerate(("brand", "agency", "support"), start=1):
        fake_graph.token(f"tok-{name}", healthy(i))
    return fake_graph


def test_ten_concurrent_scrapes_make_at_most_one_call_per_account(
        upstream: FakeGraph, config_file: Callable[..., Path],
        run_exporter: Callable[..., RunningExporter]):
    config = config_file(upstream.base_url, {"brand": "tok-brand", "agency": "tok-agency"})
    running = run_exporter("--config.file", str(config))
    baseline = upstream.calls(endpoint="publishing_limit")
    results: list[int] = []

    def scrape() -> None:
        results.append(httpx.get(running.url(), timeout=10).status_code)

    threads = [threading.Thread(target=scrape) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 10
    assert upstream.calls(endpoint="publishing_limit") - baseline <= 2


def test_reload_adopts_a_good_config_and_keeps_the_old_one_on_a_bad_one(
        upstream: FakeGraph, config_file: Callable[..., Path],
        run_exporter: Callable[..., RunningExporter]):
    config = config_file(upstream.base_url, {"brand": "tok-brand"})
    running = run_exporter("--config.file", str(config), "--web.enable-lifecycle")
    config_file(upstream.base_url, {"brand": "tok-brand", "support": "tok-support"})
    assert httpx.post(running.url("/-/reload")).status_code == 200
    found = running.metrics()
    assert value(found, "threads_up", account="support") is not None
    assert series(found, "threads_exporter_config_last_reload_successful") == {labels(): 1}
    config.write_text("accounts: [{name: x}]\n")
    r = httpx.post(running.url("/-/reload"))
    assert r.status_code == 400
    assert "accounts[0]: one of access_token or access_token_file is required" in r.text
    found = running.metrics()
    assert series(found, "threads_exporter_config_last_reload_successful") == {labels(): 0}
    assert value(found, "threads_up", account="support") is not None


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
        wait_for(lambda: listening(port), timeout=5, what=f"port {port} listening")
        result = run_cli("--demo", "--web.listen-address", f"127.0.0.1:{port}")
        assert result.returncode == 2
        assert "cannot listen" in result.stderr
    finally:
        blocker.stop()


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_version_flag():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("threads-exporter ")



def test_reload_over_http_needs_the_lifecycle_flag_as_in_prometheus(
        upstream: FakeGraph, config_file: Callable[..., Path],
        run_exporter: Callable[..., RunningExporter]):
    config = config_file(upstream.base_url, {"brand": "tok-brand"})
    running = run_exporter("--config.file", str(config))
    config_file(upstream.base_url, {"brand": "tok-brand", "support": "tok-support"})
    r = httpx.post(running.url("/-/reload"))
    assert (r.status_code, r.text) == (403, "Lifecycle API is not enabled.\n")
    assert "support" not in httpx.get(running.url("/")).text  # nothing was reloaded
    running.proc.popen.send_signal(signal.SIGHUP)  # SIGHUP always reloads

    def reloaded() -> None:
        assert "support" in httpx.get(running.url("/")).text

    eventually(reloaded, timeout=10)

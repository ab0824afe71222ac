"""Lifecycle of the real exporter process: SIGTERM with work in flight, SIGHUP and
POST /-/reload with bad and good configs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from exposition import Samples, scrape, value
from fake_graph import FakeGraph, hang, healthy
from procs import Proc, RunningExporter, free_port, json_logs, wait_http
from threads_exporter.cli import fix_mmap_threshold
from waiting import eventually, wait_for

# Runs the exporter with a file size limit: every write past it fails with EFBIG, as writes
# to a full disk fail with ENOSPC. SIGXFSZ is ignored so the write fails instead of killing.
FULL_DISK = ("import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
             "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]),) * 2); "
             "os.execv(sys.executable, [sys.executable, '-m', 'threads_exporter', "
             "*sys.argv[2:]])")


def metrics(base: str) -> Samples:
    return scrape(base + "/metrics")


def test_sigterm_with_a_request_in_flight_exits_0_promptly(
        fake_graph: FakeGraph, config_file: Callable[..., Path],
        run_exporter: Callable[..., RunningExporter]) -> None:
    fake_graph.token("tok-ok", healthy(1)).token("tok-hang", hang)
    # The hanging call would take 20 s to time out: shutdown must not wait for it.
    config = config_file(fake_graph.base_url, {"ok": "tok-ok", "stuck": "tok-hang"},
                         timeout=20)
    exporter = run_exporter("--config.file", str(config), "--log.format", "json")
    answers: list[int | None] = []
    scraper = threading.Thread(target=_scrape, args=(exporter.base, answers))
    scraper.start()
    wait_for(lambda: fake_graph.calls("tok-hang", "publishing_limit"), until=lambda n: n == 1)
    start = time.monotonic()
    exporter.send_signal(signal.SIGTERM)
    code = exporter.wait(15)
    took = time.monotonic() - start
    scraper.join(10)
    output = exporter.output()
    assert code == 0, output
    assert took < 5, f"shutdown took {took:.1f}s"
    logs = list(json_logs(output))
    assert any(line.get("msg") == "shutting down" for line in logs)
    # The hanging call was cancelled, not cut off and reported as a failure.
    assert not [line for line in logs if line.get("level") in ("warn", "error")], output
    assert "Traceback" not in output, output
    # The scrape in flight is told the exporter is going away (or loses the connection).
    assert answers in ([503], [None])


def _scrape(base: str, answers: list[int | None]) -> None:
    try:
        answers.append(httpx.get(base + "/metrics", timeout=30).status_code)
    except httpx.HTTPError:
        answers.append(None)


def test_reload_keeps_the_old_config_when_the_new_one_is_bad(
        fake_graph: FakeGraph, config_file: Callable[..., Path],
        run_exporter: Callable[..., RunningExporter]) -> None:
    for i, name in enumerate("abc", start=1):
        fake_graph.token(f"tok-{name}", healthy(i))

    def good(*names: str) -> Path:
        return config_file(fake_graph.base_url, {n: f"tok-{n}" for n in names})

    path = good("a")
    exporter = run_exporter("--config.file", str(path), "--log.format", "json",
                            "--web.enable-lifecycle")
    found = exporter.metrics()
    assert value(found, "threads_exporter_config_last_reload_successful") == 1
    assert value(found, "threads_up", account="a") == 1

    # SIGHUP with a typo in a key: rejected, the running config stays.
    path.write_text(path.read_text().replace("accounts:", "acounts:"))
    exporter.send_signal(signal.SIGHUP)
    wait_for(lambda: value(exporter.metrics(), "threads_exporter_config_last_reload_successful"),
             until=lambda v: v == 0)
    assert value(exporter.metrics(), "threads_up", account="a") == 1
    failures = [line for line in exporter.logs()
                if line.get("msg") == "config reload failed; keeping the running config"]
    assert failures and "acounts" in failures[0]["error"]

    # POST /-/reload with broken YAML: 400 naming the problem, old config kept.
    path.write_text("accounts: [\n")
    r = httpx.post(exporter.url("/-/reload"), timeout=10)
    assert r.status_code == 400 and "invalid YAML" in r.text
    found = exporter.metrics()
    assert value(found, "threads_exporter_config_last_reload_successful") == 0
    assert value(found, "threads_up", account="a") == 1

    # A good config is adopted, with its new account.
    good("a", "b")
    r = httpx.post(exporter.url("/-/reload"), timeout=10)
    assert r.status_code == 200
    found = exporter.metrics()
    assert value(found, "threads_exporter_config_last_reload_successful") == 1
    assert value(found, "threads_up", account="b") == 1
    assert value(found, "threads_quota_usage", account="b", quota="posts") == 3

    # And by SIGHUP too; a dropped account's series go away.
    good("b", "c")
    exporter.send_signal(signal.SIGHUP)
    wait_for(lambda: value(exporter.metrics(), "threads_up", account="c"),
             until=lambda v: v == 1)
    found = exporter.metrics()
    assert value(found, "threads_up", account="a") is None
    assert value(found, "threads_exporter_config_last_reload_successful") == 1


def test_full_disk_for_the_store_keeps_quota_metrics(
        tmp_path: Path, fake_graph: FakeGraph, config_file: Callable[..., Path]) -> None:
    fake_graph.token("tok-a", healthy(1))
    config = config_file(fake_graph.base_url, {"a": "tok-a"},
                         containers={"api_token": "reg-token",
                                     "state_path": str(tmp_path / "state.db")})
    port = free_port()
    proc = Proc([sys.executable, "-c", FULL_DISK, str(256 * 1024), "--config.file",
                 str(config), "--web.listen-address", f"127.0.0.1:{port}",
                 "--log.format", "json"], cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/-/ready", 30, proc=proc)
        auth = {"Authorization": "Bearer reg-token"}
        answers = []
        for i in range(2000):
            r = httpx.post(base + "/api/v1/containers", headers=auth, timeout=10,
                           json={"account": "a", "id": str(10**15 + i)})
            answers.append(r)
            if r.status_code != 201:
                break
        refused = answers[-1]
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]  # says what is wrong with the disk
        assert len(answers) > 1  # it worked until the disk filled up
        found = metrics(base)
        assert value(found, "threads_up", account="a") == 1
        assert value(found, "threads_quota_usage", account="a", quota="posts") == 2
        assert value(found, "threads_exporter_container_store_up") == 0
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(15) == 0
        logs = proc.logs()
    finally:
        proc.stop()
    assert any(line.get("level") in ("warn", "error") and "error" in line for line in logs)


def test_a_burst_of_sighups_is_never_lost_and_the_newest_config_wins(
        fake_graph: FakeGraph, config_file: Callable[..., Path],
        run_exporter: Callable[..., RunningExporter]) -> None:
    """SIGHUPs arriving while a reload runs coalesce into one more reload: whatever the
    timing, the config on disk after the last signal is the one applied."""
    for name in ("a", "b", "c", "d", "e"):
        fake_graph.token(f"tok-{name}", healthy(1))
    path = config_file(fake_graph.base_url, {"a": "tok-a"})
    exporter = run_exporter("--config.file", str(path))
    names = ["a"]
    for name in ("b", "c", "d", "e"):
        names.append(name)
        config_file(fake_graph.base_url, {n: f"tok-{n}" for n in names})
        for _ in range(5):
            exporter.send_signal(signal.SIGHUP)

    def newest() -> None:
        page = httpx.get(exporter.url("/"), timeout=5).text
        assert all(f">{n} (" in page for n in names), page

    eventually(newest, timeout=15)
    assert exporter.stop() == 0


# In a fresh interpreter: free a 4 MiB block (glibc serves it from its own mapping), then
# say where a 512 KiB block comes from: the heap (glibc raised its mmap threshold past it on
# that free) or a mapping of its own (given back to the system when freed).
MMAP_PROBE = """
import sys
from threads_exporter.cli import fix_mmap_threshold
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold({})
heap = next(line.split()[0] for line in open("/proc/self/maps")
            if line.rstrip().endswith("[heap]"))
big = bytes(4 << 20)
del big
block = bytes(512 << 10)
lo, hi = (int(x, 16) for x in heap.split("-"))
print("heap" if lo <= id(block) < hi else "mapping")
"""


@pytest.mark.skipif(not hasattr(os, "confstr") or not os.confstr("CS_GNU_LIBC_VERSION"),
                    reason="glibc's allocator only")
def test_large_blocks_keep_their_own_mappings_after_a_larger_one_is_freed() -> None:
    def where(mode: str) -> str:
        out = subprocess.run([sys.executable, "-c", MMAP_PROBE, mode], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "GLIBC_TUNABLES": ""})
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert where("glibc's default") == "heap"  # what fix_mmap_threshold is there for
    assert where("fixed") == "mapping"


def test_an_operators_malloc_tunable_is_left_alone() -> None:
    assert not fix_mmap_threshold({"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert not fix_mmap_threshold({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"})

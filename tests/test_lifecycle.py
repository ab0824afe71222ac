"""Lifecycle of the real exporter process: SIGTERM with work in flight, SIGHUP and
POST /-/reload with bad and good configs."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from graph_double import GraphDouble, hang, healthy, json_logs, samples, value, write_config
from procs import Proc, exporter, free_port, wait_http

# Runs the exporter with a file size limit: every write past it fails with EFBIG, as writes
# to a full disk fail with ENOSPC. SIGXFSZ is ignored so the write fails instead of killing.
FULL_DISK = ("import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
             "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]),) * 2); "
             "os.execv(sys.executable, [sys.executable, '-m', 'threads_exporter', "
             "*sys.argv[2:]])")


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.05)


def metrics(base: str) -> dict:
    r = httpx.get(base + "/metrics", timeout=15)
    assert r.status_code == 200
    return samples(r.text)


def test_sigterm_with_a_request_in_flight_exits_0_promptly(tmp_path: Path) -> None:
    with GraphDouble({"tok-ok": healthy(1), "tok-hang": hang}) as double:
        # The hanging call would take 20 s to time out: shutdown must not wait for it.
        config = write_config(tmp_path / "config.yaml", double.base_url,
                              {"ok": "tok-ok", "stuck": "tok-hang"}, timeout=20)
        with exporter("--config.file", str(config), "--log.format", "json") as (proc, base):
            answers: list[int | None] = []
            scraper = threading.Thread(target=_scrape, args=(base, answers))
            scraper.start()
            wait_for(lambda: double.stats_for("tok-hang").calls == 1)
            start = time.monotonic()
            proc.popen.send_signal(signal.SIGTERM)
            code = proc.popen.wait(15)
            took = time.monotonic() - start
            scraper.join(10)
            output = proc.output()
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


def test_reload_keeps_the_old_config_when_the_new_one_is_bad(tmp_path: Path) -> None:
    with GraphDouble({"tok-a": healthy(1), "tok-b": healthy(2), "tok-c": healthy(3)}) as double:
        path = tmp_path / "config.yaml"

        def good(*names: str) -> None:
            write_config(path, double.base_url, {n: f"tok-{n}" for n in names})

        good("a")
        with exporter("--config.file", str(path), "--log.format", "json") as (proc, base):
            found = metrics(base)
            assert value(found, "threads_exporter_config_last_reload_successful") == 1
            assert value(found, "threads_up", account="a") == 1

            # SIGHUP with a typo in a key: rejected, the running config stays.
            path.write_text(path.read_text().replace("accounts:", "acounts:"))
            proc.popen.send_signal(signal.SIGHUP)
            wait_for(lambda: value(metrics(base), "threads_exporter_config_last_reload_successful")
                     == 0)
            assert value(metrics(base), "threads_up", account="a") == 1
            failures = [line for line in json_logs(proc.output())
                        if line.get("msg") == "config reload failed; keeping the running config"]
            assert failures and "acounts" in failures[0]["error"]

            # POST /-/reload with broken YAML: 400 naming the problem, old config kept.
            path.write_text("accounts: [\n")
            r = httpx.post(base + "/-/reload", timeout=10)
            assert r.status_code == 400 and "invalid YAML" in r.text
            found = metrics(base)
            assert value(found, "threads_exporter_config_last_reload_successful") == 0
            assert value(found, "threads_up", account="a") == 1

            # A good config is adopted, with its new account.
            good("a", "b")
            r = httpx.post(base + "/-/reload", timeout=10)
            assert r.status_code == 200
            found = metrics(base)
            assert value(found, "threads_exporter_config_last_reload_successful") == 1
            assert value(found, "threads_up", account="b") == 1
            assert value(found, "threads_quota_usage", account="b", quota="posts") == 3

            # And by SIGHUP too; a dropped account's series go away.
            good("b", "c")
            proc.popen.send_signal(signal.SIGHUP)
            wait_for(lambda: value(metrics(base), "threads_up", account="c") == 1)
            found = metrics(base)
            assert value(found, "threads_up", account="a") is None
            assert value(found, "threads_exporter_config_last_reload_successful") == 1


def test_full_disk_for_the_store_keeps_quota_metrics(tmp_path: Path) -> None:
    with GraphDouble({"tok-a": healthy(1)}) as double:
        config = write_config(tmp_path / "config.yaml", double.base_url, {"a": "tok-a"},
                              containers={"api_token": "reg-token",
                                          "state_path": str(tmp_path / "state.db")})
        port = free_port()
        proc = Proc([sys.executable, "-c", FULL_DISK, str(256 * 1024), "--config.file",
                     str(config), "--web.listen-address", f"127.0.0.1:{port}",
                     "--log.format", "json"], cwd=tmp_path)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(base + "/-/ready", 30)
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
            logs = list(json_logs(proc.output()))
        finally:
            proc.stop()
    assert any(line.get("level") in ("warn", "error") and "error" in line for line in logs)

"""Start real processes (exporter, simulator, Prometheus) for integration tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, **kwargs) -> httpx.Response:
    """Poll url until it answers 200, or fail with the last error."""
    end = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < end:
        try:
            r = httpx.get(url, timeout=2.0, **kwargs)
            if r.status_code == 200:
                return r
            last = r.status_code
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s: {last!r}")


class Proc:
    """A child process whose combined output goes to a log file we can read back."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None):
        self.log_path = Path(tempfile.mkstemp(prefix="proc-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode


def exporter_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "threads_exporter", *args]


@contextlib.contextmanager
def exporter(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
             ready: bool = True) -> Iterator[tuple[Proc, str]]:
    """Run the real exporter on a free loopback port; yields (process, base_url)."""
    port = free_port()
    proc = Proc(exporter_cmd("--web.listen-address", f"127.0.0.1:{port}", *args), env=env, cwd=cwd)
    base = f"http://127.0.0.1:{port}"
    try:
        if ready:
            try:
                wait_http(base + "/-/ready", timeout=30)
            except TimeoutError:
                raise RuntimeError(f"exporter did not start:\n{proc.output()}") from None
        yield proc, base
    finally:
        proc.stop()


def prometheus_bin() -> str | None:
    return shutil.which("prometheus")


def promtool_bin() -> str | None:
    return shutil.which("promtool")


@contextlib.contextmanager
def prometheus(targets: list[str], *, rule_files: list[Path] = (), job: str = "threads-exporter",
               interval: str = "1s", extra_scrape: str = "") -> Iterator[str]:
    """A real Prometheus server scraping targets; yields its base URL."""
    binary = prometheus_bin()
    if binary is None:
        import pytest

        pytest.skip("prometheus binary not installed (Debian package 'prometheus')")
    tmp = Path(tempfile.mkdtemp(prefix="prom-"))
    rules = []
    for i, path in enumerate(rule_files):
        shutil.copy(path, tmp / f"rules{i}.yml")
        rules.append(f"rules{i}.yml")
    (tmp / "prometheus.yml").write_text(
        f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n"
        f"rule_files: {rules!r}\n"
        f"scrape_configs:\n  - job_name: {job}\n"
        f"    static_configs: [{{targets: {targets!r}}}]\n{extra_scrape}")
    port = free_port()
    proc = Proc([binary, f"--config.file={tmp / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"])
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(url + "/-/ready", timeout=30)
        except TimeoutError:
            raise RuntimeError(f"prometheus did not start:\n{proc.output()}") from None
        yield url
    finally:
        proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def prom_query(url: str, expr: str) -> list[dict]:
    r = httpx.get(url + "/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body.get('error')}")
    return body["data"]["result"]

"""Real processes for integration tests: the exporter, Prometheus; and the config files the
exporter reads. tests/conftest.py offers them as fixtures (run_exporter, run_prometheus,
config_file)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from exposition import Samples, scrape

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, proc: Proc | None = None,
              **kwargs) -> httpx.Response:
    """Poll url until it answers 200, or fail with the last error (at once when `proc`, the
    process that should answer, has exited)."""
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
        if proc is not None and proc.popen.poll() is not None:
            raise TimeoutError(f"{url}: the process exited ({proc.popen.returncode}): {last!r}")
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s: {last!r}")


# What a process says when the free port it was given was taken meanwhile (by another test
# run on the machine): it is started again on another port.
PORT_TAKEN = ("cannot listen", "address already in use")


def start_listening(command: Callable[[int], list[str]], ready_path: str, what: str, *,
                    env: dict[str, str] | None = None, cwd: Path | None = None,
                    attempts: int = 3) -> tuple[Proc, str]:
    """Start a server process on a free loopback port and wait until ready_path answers;
    (process, base URL)."""
    for attempt in range(1, attempts + 1):
        port = free_port()
        proc = Proc(command(port), env=env, cwd=cwd)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(base + ready_path, timeout=30, proc=proc)
            return proc, base
        except TimeoutError:
            proc.stop()
            output = proc.output()
            proc.discard()
            if attempt < attempts and any(t in output.lower() for t in PORT_TAKEN):
                continue
            raise RuntimeError(f"{what} did not start:\n{output}") from None
    raise AssertionError("unreachable")


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
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log lines of the output (--log.format json); other lines are skipped."""
        return list(json_logs(self.output()))

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

    def discard(self) -> None:
        """Stop, and delete the log file."""
        self.stop()
        self.log_path.unlink(missing_ok=True)


def json_logs(output: str) -> Iterator[dict[str, Any]]:
    """The JSON log lines of a process's output (other lines are skipped)."""
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                yield json.loads(line)
            except ValueError:
                continue


def exporter_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "threads_exporter", *args]


@contextlib.contextmanager
def exporter(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
             ready: bool = True) -> Iterator[tuple[Proc, str]]:
    """Run the real exporter on a free loopback port; yields (process, base_url)."""
    def command(port: int) -> list[str]:
        return exporter_cmd("--web.listen-address", f"127.0.0.1:{port}", *args)

    if ready:
        proc, base = start_listening(command, "/-/ready", "exporter", env=env, cwd=cwd)
    else:
        port = free_port()
        proc, base = Proc(command(port), env=env, cwd=cwd), f"http://127.0.0.1:{port}"
    try:
        yield proc, base
    finally:
        proc.stop()


@dataclass
class RunningExporter:
    """A real exporter process and its base URL."""

    proc: Proc
    base: str

    def url(self, path: str = "/metrics") -> str:
        return self.base + path

    def metrics(self, path: str = "/metrics", *, timeout_header: float | None = None,
                **params: str) -> Samples:
        """A scrape, parsed (see exposition.py); anything but a 200 fails the test."""
        return scrape(self.base + path, timeout_header=timeout_header, **params)

    def send_signal(self, sig: int) -> None:
        self.proc.popen.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        return self.proc.popen.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, and wait until it is gone."""
        self.send_signal(signal.SIGKILL)
        self.wait(10)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return self.proc.stop(sig)

    def output(self) -> str:
        return self.proc.output()

    def logs(self) -> list[dict[str, Any]]:
        return self.proc.logs()


def write_config(path: Path, base_url: str, accounts: Mapping[str, str], *,
                 timeout: float = 2.0, max_concurrency: int = 16,
                 quotas: list[str] | None = None, **top: Any) -> Path:
    """An exporter config file with one account per (name -> token) against `base_url`;
    `quotas` limits every account's quota groups, `top` adds top-level sections
    (containers=..., cache_ttl_seconds=...)."""
    extra = {} if quotas is None else {"quotas": quotas}
    config = {
        "api": {"base_url": base_url, "timeout_seconds": timeout,
                "max_concurrency": max_concurrency},
        "accounts": [{"name": n, "access_token": t, **extra} for n, t in accounts.items()],
        **top,
    }
    path.write_text(yaml.safe_dump(config))
    return path


# The account and registration API of the container tests' configs (container_config).
BRAND_TOKEN = "brand-upstream-token"
REGISTRATION_TOKEN = "registration-token-for-tests"
REGISTRATION = {"Authorization": f"Bearer {REGISTRATION_TOKEN}"}


def write_container_config(path: Path, base_url: str, state_path: Path,
                           **settings: Any) -> Path:
    """A config with one account, "brand" (BRAND_TOKEN, posts only), whose containers are
    tracked in state_path and registered with REGISTRATION_TOKEN; every poll interval is
    1 s unless `settings` say otherwise."""
    return write_config(path, base_url, {"brand": BRAND_TOKEN}, quotas=["posts"], containers={
        "state_path": str(state_path), "api_token": REGISTRATION_TOKEN,
        "poll_interval_seconds": 1, "finished_poll_interval_seconds": 1,
        "stuck_poll_interval_seconds": 1, **settings})


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
    proc, url = start_listening(
        lambda port: [binary, f"--config.file={tmp / 'prometheus.yml'}",
                      f"--storage.tsdb.path={tmp / 'data'}",
                      f"--web.listen-address=127.0.0.1:{port}"],
        "/-/ready", "prometheus")
    try:
        yield url
    finally:
        proc.discard()
        shutil.rmtree(tmp, ignore_errors=True)


def prom_query(url: str, expr: str) -> list[dict]:
    """An instant query at the server's "now"."""
    r = httpx.get(url + "/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body.get('error')}")
    return body["data"]["result"]


@dataclass
class PrometheusServer:
    url: str

    def query(self, expr: str) -> list[dict]:
        return prom_query(self.url, expr)

"""Shared fixtures: the fake Graph API, the real exporter (as a process and in-process), a real
Prometheus, and config files. The helpers behind them live in fake_graph.py, procs.py,
exposition.py and waiting.py."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from fake_graph import FakeGraph
from procs import (
    REPO,
    PrometheusServer,
    RunningExporter,
    exporter,
    prometheus,
    write_config,
    write_container_config,
)
from threads_exporter.app import Exporter
from threads_exporter.config import Config
from threads_exporter.web.server import ExporterHTTPServer

# The monitoring bundle's generator (monitoring/) is imported by the rule, dashboard, mixin
# and deploy tests.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture
def fake_graph() -> Iterator[FakeGraph]:
    """The Threads Graph API fake, serving on loopback for this test; script it with
    fake_graph.token(...) / .container(...), connect by .base_url or .transport()."""
    with FakeGraph() as fake:
        yield fake


@pytest.fixture
def config_file(tmp_path: Path) -> Callable[..., Path]:
    """config_file(base_url, {name: token}, name="config.yaml", **options) -> the path of an
    exporter config in the test's directory (options: see procs.write_config)."""
    def write(base_url: str, accounts: dict[str, str], *, name: str = "config.yaml",
              **options: Any) -> Path:
        return write_config(tmp_path / name, base_url, accounts, **options)
    return write


@pytest.fixture
def container_config(tmp_path: Path) -> Callable[..., Path]:
    """container_config(base_url, **settings) -> the path of a config whose account "brand"
    (procs.BRAND_TOKEN) has its containers tracked in the test's directory, registered with
    procs.REGISTRATION_TOKEN, polled every second unless `settings` say otherwise."""
    def write(base_url: str, **settings: Any) -> Path:
        return write_container_config(tmp_path / "config.yaml", base_url,
                                      tmp_path / "state.db", **settings)
    return write


@pytest.fixture
def run_exporter(tmp_path: Path) -> Iterator[Callable[..., RunningExporter]]:
    """run_exporter(*args, env=None, cwd=tmp_path, ready=True) starts the real exporter
    process on a free port (waiting until /-/ready answers); every one still running is
    stopped when the test ends."""
    with ExitStack() as stack:
        def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                ready: bool = True) -> RunningExporter:
            proc, base = stack.enter_context(
                exporter(*args, env=env, cwd=cwd or tmp_path, ready=ready))
            stack.callback(proc.discard)  # stopped, its log deleted, when the test ends
            return RunningExporter(proc, base)
        yield run


@pytest.fixture
def run_prometheus() -> Iterator[Callable[..., PrometheusServer]]:
    """run_prometheus(targets, rule_files=(), job=..., interval="1s", extra_scrape="") starts
    a real Prometheus scraping the targets; stopped when the test ends."""
    with ExitStack() as stack:
        def run(targets: list[str], **options: Any) -> PrometheusServer:
            return PrometheusServer(stack.enter_context(prometheus(targets, **options)))
        yield run


@pytest.fixture
def serve_exporter() -> Iterator[Callable[..., tuple[Exporter, str]]]:
    """serve_exporter(config, config_path=None, transport=None) -> (Exporter, base URL): the
    exporter in this process, its HTTP server on a free port; both closed when the test ends.
    Pass fake_graph.transport() as the transport to answer from the fake without a socket."""
    with ExitStack() as stack:
        def serve(config: Config, config_path: str | None = None,
                  transport: httpx.AsyncBaseTransport | None = None) -> tuple[Exporter, str]:
            app = Exporter(config, config_path, transport=transport)
            stack.callback(app.close)
            server = ExporterHTTPServer(("127.0.0.1", 0), app, None)
            stack.callback(server.shutdown)
            return app, f"http://127.0.0.1:{server.server_address[1]}"
        yield serve

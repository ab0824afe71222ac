"""Command line: flags in exporter-toolkit style, start-up, signals, shutdown."""

from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
from typing import TYPE_CHECKING, NoReturn

from threads_exporter import __version__
from threads_exporter.app import Exporter
from threads_exporter.config import ConfigError, load_config, parse_shard
from threads_exporter.containers.store import StoreLocked
from threads_exporter.logs import LEVELS, setup_logging
from threads_exporter.web.server import ExporterHTTPServer, parse_listen_address

if TYPE_CHECKING:
    from threads_exporter.demo.server import SimulatorServer

log = logging.getLogger("threads_exporter")

EXIT_CONFIG = 1
EXIT_BIND = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # Bad flags are a config error (exit 1), as the contract says; argparse would use 2.
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="threads-exporter",
                description="Prometheus exporter for Meta's Threads API publishing quotas "
                            "and media containers.")
    p.add_argument("--config.file", dest="config_file", default="config.yaml",
                   help="YAML config file (default: %(default)s)")
    p.add_argument("--config.check", dest="config_check", action="store_true",
                   help="validate the config file, print what is wrong, exit 0 or 1")
    p.add_argument("--web.listen-address", dest="listen", default=":10330",
                   help="host:port to listen on; :port for all interfaces (default: %(default)s)")
    p.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics",
                   help="path under which to expose metrics (default: %(default)s)")
    p.add_argument("--web.config.file", dest="web_config", default=None,
                   help="exporter-toolkit web config file for TLS and basic auth")
    p.add_argument("--web.enable-lifecycle", dest="enable_lifecycle", action="store_true",
                   help="enable config reload over HTTP (POST /-/reload), as Prometheus does; "
                        "SIGHUP always reloads")
    p.add_argument("--scrape.timeout-offset", dest="timeout_offset", type=float, default=0.5,
                   help="seconds kept in reserve from Prometheus' scrape timeout "
                        "(default: %(default)s)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="serve only the accounts whose stable hash falls in shard I of N "
                        "(0 <= I < N); every shard reads the same config")
    p.add_argument("--log.level", dest="log_level", default="info", choices=list(LEVELS))
    p.add_argument("--log.format", dest="log_format", default="logfmt",
                   choices=["logfmt", "json"])
    p.add_argument("--demo", action="store_true",
                   help="run against the built-in Threads API simulator; needs no token")
    p.add_argument("--version", action="version",
                   version=f"threads-exporter {__version__} (python {sys.version.split()[0]})")
    return p


# glibc's mallopt() parameter (malloc.h), and the value it starts with.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024


def fix_mmap_threshold(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Keep glibc serving blocks over 128 KiB from their own mappings, which go back to the
    system when freed. By default glibc raises that threshold to the largest block freed so
    far (up to 32 MiB); after a scrape's multi-megabyte buffers, the next ones are carved from
    the heap, where they leave holes it cannot give back: at 10,000 accounts and 100,000
    containers the benchmark's peak RSS was 205 MB with the moving threshold, 147 MB without.
    Nothing is changed where the operator set a malloc tunable, or off glibc. True if set."""
    if "MALLOC_MMAP_THRESHOLD_" in environ or "glibc.malloc" in environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (ValueError, OSError, AttributeError):  # not glibc (musl, macOS)
        return False


# Taken with sigwait() by the main thread alone: blocked before any thread starts (threads
# inherit the mask), so no signal is lost to a busy thread or run in a handler at a bad time.
SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.telemetry_path.startswith("/") or args.telemetry_path in ("/", "/probe"):
        print("--web.telemetry-path: must start with / and not clash with other paths",
              file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(args.log_level, args.log_format)
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    # As Go programs do: every connection a client may hold costs a descriptor.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # A full garbage collection walks every live object (container rows, readings, metric
    # families), and polling's churn triggered them often: ~10% of the event loop's CPU.
    # Most garbage here is freed by reference counting: full collections at most 1/100 as often.
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 1000)
    fix_mmap_threshold()
    simulator = None
    if args.demo:  # the simulator is imported only here: a real run never loads it
        from threads_exporter.demo.server import SimulatorServer
        from threads_exporter.demo.simulator import demo_simulator
        simulator = SimulatorServer(demo_simulator()).start()
    demo_dir = tempfile.mkdtemp(prefix="threads-exporter-demo-") if args.demo else None
    try:
        return run(args, simulator, demo_dir)
    finally:
        if simulator is not None:
            simulator.stop()
        if demo_dir is not None:
            shutil.rmtree(demo_dir, ignore_errors=True)


def run(args: argparse.Namespace, simulator: SimulatorServer | None,
        demo_dir: str | None) -> int:
    config_path: str | None = None
    try:
        address = parse_listen_address(args.listen)
        if simulator is not None:
            from threads_exporter.demo.config import demo_config
            config = demo_config(simulator.base_url, f"{demo_dir}/containers.db")
        else:
            config_path = args.config_file
            config = load_config(config_path)
        if args.shard is not None:
            config = config.for_shard(parse_shard(args.shard))
        web = None
        if args.web_config:
            from threads_exporter.web.webconfig import WebConfigError, load_web_config
            try:
                web = load_web_config(args.web_config)
            except WebConfigError as e:
                raise ConfigError(f"{args.web_config}: {e}") from None
    except (ConfigError, ValueError) as e:
        print(f"threads-exporter: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.config_check:
        shard = f" in shard {config.shard}" if config.shard else ""
        source = "demo config" if simulator is not None else args.config_file
        print(f"{source}: OK ({len(config.accounts)} accounts{shard})")
        return 0

    try:
        exporter = Exporter(config, config_path)
    except StoreLocked as e:
        print(f"threads-exporter: containers.state_path: {e}", file=sys.stderr)
        return EXIT_CONFIG
    # The exporter keeps the config without its `track` list, which is in the store now:
    # nothing here holds on to that list either (a config may track 100,000 containers).
    del config
    try:
        server = ExporterHTTPServer(address, exporter, web, args.telemetry_path,
                                    timeout_offset=args.timeout_offset,
                                    enable_lifecycle=args.enable_lifecycle)
    except OSError as e:
        log.error("cannot listen", extra={"address": args.listen, "error": e.strerror})
        exporter.close()
        return EXIT_BIND

    host, port = str(server.server_address[0]), server.server_address[1]
    scheme = "https" if web is not None and web.ssl_context is not None else "http"
    shown_host = f"[{host}]" if ":" in host else host  # an IPv6 address, as in a URL
    log.info("listening", extra={"address": f"{scheme}://{shown_host}:{port}",
                                 "accounts": len(exporter.config.accounts),
                                 "version": __version__})
    publisher = None
    if simulator is not None:
        from threads_exporter.demo.publisher import DemoPublisher
        from threads_exporter.demo.simulator import DEMO_API_TOKEN
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        print(f"Demo mode: Threads API simulator at {simulator.base_url}.\n"
              f"Scrape {scheme}://{shown}:{port}{args.telemetry_path} "
              f"(landing page {scheme}://{shown}:{port}/).\n"
              f"Container API: {scheme}://{shown}:{port}/api/v1/containers with "
              f"'Authorization: Bearer {DEMO_API_TOKEN}'.", file=sys.stderr, flush=True)
        publisher = DemoPublisher(simulator.base_url, exporter.register).start()
    reloader = Reloader(exporter)
    while (received := signal.sigwait(SIGNALS)) == signal.SIGHUP:
        reloader.request()
    log.info("shutting down", extra={"signal": signal.Signals(received).name})
    if publisher is not None:
        publisher.stop()
    server.shutdown()
    exporter.close()
    return 0


class Reloader:
    """SIGHUP: reload in the background; SIGHUPs during a reload coalesce into one more, so
    the newest config is always applied, and SIGTERM never waits for a reload."""

    def __init__(self, exporter: Exporter):
        self.exporter = exporter
        self._lock = threading.Lock()
        self._pending = False
        self._running = False

    def request(self) -> None:
        with self._lock:
            self._pending = True
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._run, name="reload", daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._running = False
                    return
                self._pending = False
            try:
                self.exporter.reload()
            except Exception:  # a reload must never take the signal loop down
                log.exception("config reload crashed")

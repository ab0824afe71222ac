"""Benchmark: the real exporter process against the simulator (its own process) with injected
upstream latency, measured against the physical floor and a naive sequential baseline.

    python bench/run.py                  # the full run (about 6 minutes)
    python bench/run.py --quick          # a smoke version (< 30 s)
    python bench/run.py --results bench/RESULTS.md   # also write the table there

Phases: (1) accounts only: cold /metrics against ceil(calls / max_concurrency) x latency,
fully cached /metrics, concurrent scrapers for --duration; (2) the same accounts plus tracked
containers: container polls per second against max_concurrency / latency, scrape deadlines,
peak RSS; (3) a naive baseline: the same calls one after another with a synchronous client.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))
sys.path.insert(0, str(BENCH))

from sim import container_id, token  # noqa: E402

from procs import Proc, exporter_cmd, free_port, wait_http  # noqa: E402
from threads_exporter.fields import QUOTA_FIELDS, quota_fields  # noqa: E402

SCRAPE_TIMEOUT = 10.0  # Prometheus' default, announced in the scrape header
ALL_FIELDS = quota_fields(QUOTA_FIELDS)


@dataclass
class Row:
    what: str
    result: str
    goal: str = ""
    ok: bool | None = None  # None: no goal


@dataclass
class Scrape:
    seconds: float
    status: int
    text: str


# --- processes -----------------------------------------------------------------------------


@contextmanager
def simulator(args: argparse.Namespace) -> Iterator[str]:
    port = free_port()
    proc = Proc([sys.executable, str(BENCH / "sim.py"), "--listen", f"127.0.0.1:{port}",
                 "--accounts", str(args.accounts), "--containers", str(args.containers),
                 "--latency", str(args.latency)])
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/v1.0/me/threads_publishing_limit?access_token={token(0)}", 30)
        yield base
    finally:
        proc.stop()


@contextmanager
def exporter(config: dict, workdir: Path) -> Iterator[tuple[Proc, str]]:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    proc = Proc(exporter_cmd("--config.file", str(path), "--web.listen-address",
                             f"127.0.0.1:{port}", "--log.level", "warn"), cwd=workdir)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/-/ready", 60)
        yield proc, base
    finally:
        proc.stop()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def scrape(client: httpx.Client, base: str, timeout: float = SCRAPE_TIMEOUT) -> Scrape:
    start = time.perf_counter()
    r = client.get(base + "/metrics", timeout=timeout + 30,
                   headers={"X-Prometheus-Scrape-Timeout-Seconds": str(timeout)})
    return Scrape(time.perf_counter() - start, r.status_code, r.text)


def requests_by(text: str, endpoint: str | None = None) -> dict[str, float]:
    """threads_api_requests_total per account (for one endpoint, or all)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "threads_api_requests_total" and endpoint in (None,
                                                                     s.labels["endpoint"]):
                out[s.labels["account"]] = out.get(s.labels["account"], 0) + s.value
    return out


def config_for(base: str, args: argparse.Namespace, state: Path | None = None) -> dict:
    config: dict = {
        "api": {"base_url": base, "timeout_seconds": SCRAPE_TIMEOUT,
                "max_concurrency": args.concurrency},
        "cache_ttl_seconds": args.ttl,
        "accounts": [{"name": f"a{i:05d}", "access_token": token(i)}
                     for i in range(args.accounts)],
    }
    if state is not None:
        config["containers"] = {
            "poll_interval_seconds": 1, "state_path": str(state),
            "track": [{"account": f"a{n % args.accounts:05d}", "id": container_id(n)}
                      for n in range(args.containers)],
        }
    return config


# --- phases --------------------------------------------------------------------------------


def accounts_phase(base: str, args: argparse.Namespace, work: Path) -> tuple[list[Row], float]:
    rows = []
    with exporter(config_for(base, args), work) as (proc, url), httpx.Client() as client:
        cpu0 = cpu_seconds(proc.popen.pid)
        cold = scrape(client, url, 60)
        cpu_cold = cpu_seconds(proc.popen.pid) - cpu0
        calls = sum(requests_by(cold.text).values())
        floor = math.ceil(calls / args.concurrency) * args.latency
        ratio = cold.seconds / floor
        rows.append(Row(f"cold /metrics, {args.accounts} accounts ({calls:.0f} calls)",
                        f"{cold.seconds:.2f} s = {ratio:.2f}x the floor {floor:.2f} s",
                        "<= 1.3x floor", ratio <= 1.3 and cold.status == 200))
        rows.append(Row("exporter CPU per 1,000 API calls (cold scrape)",
                        f"{cpu_cold / calls * 1000:.2f} s"))

        cached = [scrape(client, url) for _ in range(7)]
        median = statistics.median(s.seconds for s in cached)
        rows.append(Row("cached /metrics (median of 7)", f"{median * 1000:.0f} ms "
                        f"({len(cached[0].text) // 1024} KiB)", "< 150 ms", median < 0.150))

        start = time.monotonic()
        before = requests_by(scrape(client, url).text, "publishing_limit")
        times, late = concurrent_scrapers(url, args.scrapers, args.duration)
        after = requests_by(scrape(client, url).text, "publishing_limit")
        window = time.monotonic() - start
        worst = max(after[a] - before.get(a, 0) for a in after)
        allowed = math.ceil(window / args.ttl)  # one per TTL interval the window touches
        rows.append(Row(f"{args.scrapers} scrapers x {args.duration:.0f} s, TTL {args.ttl:.0f} s: "
                        "publishing-limit calls of the busiest account",
                        f"{worst:.0f} in {window:.0f} s ({len(times)} scrapes, p50 "
                        f"{statistics.median(times) * 1000:.0f} ms, max {max(times):.2f} s, "
                        f"{late} past deadline)",
                        f"<= {allowed} (1 per TTL), none late", worst <= allowed and late == 0))
    return rows, cold.seconds


def concurrent_scrapers(url: str, n: int, duration: float) -> tuple[list[float], int]:
    times: list[float] = []
    late = 0
    end = time.monotonic() + duration

    def run() -> None:
        nonlocal late
        with httpx.Client() as client:
            while time.monotonic() < end:
                s = scrape(client, url)
                times.append(s.seconds)
                late += s.status != 200 or s.seconds > SCRAPE_TIMEOUT

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times, late


def containers_phase(base: str, args: argparse.Namespace, work: Path) -> list[Row]:
    config = config_for(base, args, work / "state.db")
    # Polling is scrape-driven: a scrape polls what is due until its deadline, and with a
    # 1 s poll interval every container is due again by then, so polling never pauses.
    timeout = min(SCRAPE_TIMEOUT, args.container_seconds)
    with exporter(config, work) as (proc, url), httpx.Client() as client:
        first = scrape(client, url, timeout)  # includes the accounts' cold reading
        cpu0 = cpu_seconds(proc.popen.pid)
        polls0 = sum(requests_by(first.text, "container").values())
        start = time.monotonic()
        scrapes = []
        while time.monotonic() - start < args.container_seconds:
            scrapes.append(scrape(client, url, timeout))
        elapsed = time.monotonic() - start
        polls = sum(requests_by(scrapes[-1].text, "container").values()) - polls0
        cpu = cpu_seconds(proc.popen.pid) - cpu0
        rss = peak_rss_mb(proc.popen.pid)
    rate = polls / elapsed
    ceiling = args.concurrency / args.latency
    late = sum(s.status != 200 or s.seconds > timeout for s in scrapes)
    return [
        Row(f"container polls per second, {args.containers} tracked",
            f"{rate:.0f}/s = {rate / ceiling:.2f}x of {ceiling:.0f}/s", ">= 0.8x",
            rate / ceiling >= 0.8),
        Row(f"scrapes past their deadline ({timeout:.0f} s) while polling",
            f"{late} of {len(scrapes)} (longest {max(s.seconds for s in scrapes):.2f} s)", "0",
            late == 0),
        Row("exporter CPU per 1,000 API calls (container polling)",
            f"{cpu / max(polls, 1) * 1000:.2f} s"),
        Row(f"exporter peak RSS, {args.accounts} accounts + {args.containers} containers",
            f"{rss:.0f} MB", "< 150 MB", rss < 150),
    ]


def baseline_phase(base: str, args: argparse.Namespace, cold_seconds: float) -> list[Row]:
    """The same readings as the cold scrape, one call after another."""
    n = min(args.accounts, args.baseline_accounts)
    with httpx.Client(base_url=f"{base}/v1.0", timeout=SCRAPE_TIMEOUT) as client:
        start = time.perf_counter()
        for i in range(n):
            client.get("/me/threads_publishing_limit",
                       params={"fields": ALL_FIELDS, "access_token": token(i)}).json()
            client.get("/debug_token", params={"input_token": token(i),
                                               "access_token": token(i)}).json()
        took = (time.perf_counter() - start) * args.accounts / n
    scaled = "" if n == args.accounts else f", scaled from {n} accounts"
    return [Row("naive baseline: same calls, sequential, synchronous httpx.Client",
                f"{took:.1f} s{scaled}; the exporter is {took / cold_seconds:.0f}x faster")]


# --- report --------------------------------------------------------------------------------


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    return (f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def table(rows: list[Row]) -> str:
    mark = {True: "met", False: "MISSED", None: ""}
    lines = ["| measurement | result | goal | |", "|---|---|---|---|"]
    lines += [f"| {r.what} | {r.result} | {r.goal} | {mark[r.ok]} |" for r in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run in well under 30 s")
    p.add_argument("--accounts", type=int, default=1000)
    p.add_argument("--containers", type=int, default=10000)
    p.add_argument("--latency", type=float, default=0.05, help="upstream latency, seconds")
    p.add_argument("--concurrency", type=int, default=64, help="api.max_concurrency")
    p.add_argument("--ttl", type=float, default=30.0, help="cache_ttl_seconds")
    p.add_argument("--scrapers", type=int, default=10)
    p.add_argument("--duration", type=float, default=120.0,
                   help="seconds the concurrent scrapers run")
    p.add_argument("--container-seconds", type=float, default=30.0,
                   help="seconds of container polling measured")
    p.add_argument("--baseline-accounts", type=int, default=1000,
                   help="accounts the sequential baseline reads (scaled up to --accounts)")
    p.add_argument("--results", type=Path, help="also write the table to this Markdown file")
    args = p.parse_args(argv)
    if args.quick:
        args.accounts, args.containers, args.ttl = 100, 1000, 2.0
        args.duration, args.container_seconds, args.baseline_accounts = 4.0, 3.0, 20
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    with simulator(args) as base, \
            tempfile.TemporaryDirectory(prefix="threads-bench-") as tmp:
        work = Path(tmp)
        rows, cold = accounts_phase(base, args, work)
        rows += containers_phase(base, args, work)
        rows += baseline_phase(base, args, cold)
    report = (f"Machine: {machine()}\n"
              f"Upstream latency {args.latency * 1000:.0f} ms, max_concurrency "
              f"{args.concurrency}, {args.accounts} accounts, {args.containers} containers"
              f"{' (--quick)' if args.quick else ''}; run took "
              f"{time.monotonic() - started:.0f} s.\n\n{table(rows)}\n")
    print(report)
    if args.results:
        args.results.write_text("# Benchmark results\n\n`python bench/run.py`\n\n" + report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

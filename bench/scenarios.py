"""The benchmark's scenarios: the real exporter process against the Graph API double
(bench/double.py), each number against its physical floor or its baseline.

Imported by bench/run.py inside the venv it measures (httpx, PyYAML and prometheus_client
are the exporter's own dependencies); nothing here imports threads_exporter.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.exposition import choose_encoder
from prometheus_client.parser import text_string_to_metric_families

from common import BENCH, Proc, cpu_seconds, status_mb
from double import container_id, token

# What Prometheus 2.x sends: OpenMetrics first, gzip.
PROMETHEUS = {"Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-"
              "text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
              "Accept-Encoding": "gzip"}
TEXT = {"Accept": "text/plain;version=0.0.4", "Accept-Encoding": "identity"}
FORMATS = {"text": TEXT, "OpenMetrics+gzip": PROMETHEUS}
REGISTRATION_TOKEN = "bench-registration-token-0123456789"
REGISTRATION = {"Authorization": f"Bearer {REGISTRATION_TOKEN}"}
CONTAINERS_API = "/api/v1/containers"
MAX_SCRAPE_TIMEOUT = 300.0  # the exporter caps Prometheus' announced timeout there
BATCH = 1000  # containers per batch registration (the API's maximum)
PAGE = 1000  # containers per listing page
UP = re.compile(r'^threads_up\{[^}]*\} 1(?:\.0)?$', re.MULTILINE)


@dataclass(frozen=True)
class Scale:
    name: str
    accounts: int
    containers: int
    scrape_timeout: float = 10.0  # Prometheus' default scrape_timeout
    api_timeout: float = 5.0  # api.timeout_seconds where calls fail (the default)
    warm_scrapes: int = 5
    fail_seconds: float = 30.0  # scrapes measured while every account fails
    poll_seconds: float = 30.0  # container polling measured
    scrape_interval: float = 15.0  # Prometheus' cadence, for polls between scrapes
    register_seconds: float = 5.0  # single registrations measured (at most)
    batch_seconds: float = 20.0  # batch registrations measured (at most)
    list_seconds: float = 30.0  # listing pages followed (at most)

    @property
    def label(self) -> str:
        return f"{self.accounts:,} accounts / {self.containers:,} containers"


SCALES = {
    "quick": Scale("quick", 50, 500, scrape_timeout=2.0, api_timeout=1.0, warm_scrapes=3,
                   fail_seconds=3.0, poll_seconds=3.0, scrape_interval=1.5, register_seconds=1.0,
                   batch_seconds=2.0, list_seconds=2.0),
    "small": Scale("small", 100, 1_000, fail_seconds=15.0, poll_seconds=15.0),
    "medium": Scale("medium", 1_000, 10_000),
    "large": Scale("large", 10_000, 100_000, warm_scrapes=5, poll_seconds=45.0),
}


@dataclass
class Row:
    scale: str
    what: str
    result: str
    reference: str = ""  # the floor or baseline
    ratio: float | None = None
    goal: str = ""
    ok: bool | None = None  # None: no goal at this scale
    verdict: str = ""  # overrides met / MISSED (e.g. "not supported by this build")
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def mark(self) -> str:
        if self.verdict:
            return self.verdict
        return {True: "met", False: "MISSED", None: ""}[self.ok]


@dataclass
class Context:
    python: str  # the interpreter the exporter runs with
    base: str  # the double's base URL
    double: Proc
    latency: float
    concurrency: int
    work: Path
    log: Callable[[str], None]
    double_busy: list[float] = field(default_factory=list)  # its CPU share per window

    @property
    def ceiling(self) -> float:
        """Calls per second max_concurrency connections can make: the physical limit."""
        return self.concurrency / self.latency

    def floor(self, calls: float) -> float:
        return math.ceil(calls / self.concurrency) * self.latency

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.base}/_double/stats", timeout=10).json()

    def control(self, path: str, **params: Any) -> None:
        httpx.get(f"{self.base}/_double/{path}", params=params, timeout=10).raise_for_status()

    @contextmanager
    def window(self) -> Iterator[dict[str, Any]]:
        """Graph calls per endpoint and the double's CPU over a block; the double's busy share
        is remembered, to show it never was the bottleneck."""
        before, start = self.stats(), time.monotonic()
        out: dict[str, Any] = {}
        yield out
        after, took = self.stats(), time.monotonic() - start
        out["calls"] = {k: v - before["calls"].get(k, 0) for k, v in after["calls"].items()}
        out["graph_calls"] = sum(out["calls"].get(k, 0) for k in
                                 ("publishing_limit", "debug_token", "me", "container"))
        out["double_cpu"] = after["cpu_seconds"] - before["cpu_seconds"]
        out["seconds"] = took
        self.double_busy.append(out["double_cpu"] / max(took, 1e-9))


# --- the exporter process ------------------------------------------------------------------


class Exporter:
    def __init__(self, ctx: Context, config: dict[str, Any], name: str,
                 ready_timeout: float = 120.0):
        self.dir = ctx.work / name
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        start = time.monotonic()
        for _ in range(3):  # a free port can be taken meanwhile by another process
            port = _free_port()
            self.proc = Proc([ctx.python, "-m", "threads_exporter", "--config.file", str(path),
                              "--web.listen-address", f"127.0.0.1:{port}",
                              "--log.level", "warn"], cwd=self.dir)
            self.url = f"http://127.0.0.1:{port}"
            if self._ready(ready_timeout):
                break
            out = self.proc.output()
            self.proc.stop()
            if "address already in use" not in out.lower():
                raise RuntimeError(f"the exporter did not start:\n{out[-3000:]}")
        else:
            raise RuntimeError("the exporter found no free port")
        self.startup = time.monotonic() - start
        self.client = httpx.Client(timeout=MAX_SCRAPE_TIMEOUT + 60)

    def _ready(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.popen.poll() is not None:
                return False
            try:
                if httpx.get(self.url + "/-/ready", timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        return False

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def peak_rss(self) -> float:
        return status_mb(self.proc.pid, "VmHWM")

    def scrape(self, timeout: float, headers: dict[str, str] = PROMETHEUS,
               client: httpx.Client | None = None) -> Scrape:
        """One /metrics with Prometheus' timeout header; timed to its last byte."""
        client = client or self.client
        start = time.perf_counter()
        with client.stream("GET", self.url + "/metrics", headers={
                **headers, "X-Prometheus-Scrape-Timeout-Seconds": f"{timeout:g}"}) as r:
            raw = b"".join(r.iter_raw())
        took = time.perf_counter() - start
        return Scrape(took, r.status_code, raw, r.headers.get("content-encoding", ""),
                      r.headers.get("content-type", ""))

    def close(self) -> None:
        self.client.close()
        self.proc.stop()

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Scrape:
    seconds: float
    status: int
    raw: bytes
    encoding: str
    content_type: str

    @property
    def text(self) -> str:
        body = gzip.decompress(self.raw) if self.encoding == "gzip" else self.raw
        return body.decode()

    def up(self) -> int:
        return len(UP.findall(self.text))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accounts_config(ctx: Context, accounts: int, *, ttl: float, timeout: float) -> dict[str, Any]:
    return {
        "api": {"base_url": ctx.base, "timeout_seconds": timeout,
                "max_concurrency": ctx.concurrency},
        "cache_ttl_seconds": ttl,
        "accounts": [{"name": f"a{i:05d}", "access_token": token(i)} for i in range(accounts)],
    }


def containers_config(ctx: Context, scale: Scale, state: Path) -> dict[str, Any]:
    config = accounts_config(ctx, scale.accounts, ttl=3600, timeout=10)
    config["containers"] = {
        "poll_interval_seconds": 1, "state_path": str(state),
        "api_token": REGISTRATION_TOKEN,
        "track": [{"account": f"a{n % scale.accounts:05d}", "id": container_id(n)}
                  for n in range(scale.containers)],
    }
    return config


# --- scenarios -----------------------------------------------------------------------------


def capacity(ctx: Context) -> list[Row]:
    """How much the double can serve, so that it is never what a number measures."""
    ctx.control("config", latency=0)
    before = ctx.stats()
    run = subprocess.run([sys.executable, str(BENCH / "double.py"), "--load", ctx.base,
                          "--connections", "32", "--seconds", "1.5"],
                         capture_output=True, text=True, timeout=60, check=True)
    after = ctx.stats()
    ctx.control("config", latency=ctx.latency)
    ctx.control("reset")
    load = json.loads(run.stdout)
    served = after["served"] - before["served"]
    per_request = (after["cpu_seconds"] - before["cpu_seconds"]) / max(served, 1)
    per_core = 1 / per_request
    return [Row("all", "Graph API double: capacity (no latency, 32 connections, one "
                "load-generator process)",
                f"{load['rate']:,.0f} req/s measured; {per_request * 1e6:.0f} us CPU per "
                f"request = {per_core:,.0f} req/s per core",
                f"demand ceiling {ctx.ceiling:,.0f} req/s", per_core / ctx.ceiling,
                data={"rate": load["rate"], "cpu_per_request": per_request})]


def accounts_scenarios(ctx: Context, scale: Scale) -> list[Row]:
    """Cold fill, CPU per call, warm scrapes in both formats against prometheus_client's
    own encoders on the same samples, peak RSS."""
    rows: list[Row] = []
    label, a = scale.label, scale.accounts
    config = accounts_config(ctx, a, ttl=3600, timeout=10)
    with Exporter(ctx, config, f"{scale.name}-accounts") as ex:
        ctx.log(f"  cold scrape of {a:,} accounts")
        with ctx.window() as w:
            cpu0 = ex.cpu()
            cold = ex.scrape(MAX_SCRAPE_TIMEOUT, TEXT)
            cpu = ex.cpu() - cpu0
        calls = w["graph_calls"]
        floor = ctx.floor(calls)
        up = cold.up()
        ratio = cold.seconds / floor if floor else float("nan")
        goal = a in (1_000, 10_000)
        rows.append(Row(label, f"cold /metrics, {a:,} accounts ({calls:,} calls)",
                        f"{cold.seconds:.2f} s, {up:,} of {a:,} up",
                        f"floor ceil(calls/{ctx.concurrency}) x {ctx.latency * 1000:.0f} ms = "
                        f"{floor:.2f} s", ratio, "<= 1.3x, all up" if goal else "",
                        (ratio <= 1.3 and up == a and cold.status == 200) if goal else None,
                        data={"seconds": cold.seconds, "floor": floor, "calls": calls,
                              "up": up}))
        rows.append(cpu_row(ctx, label, "exporter CPU per 1,000 API calls (cold scrape)",
                            cpu, calls))

        ctx.log("  warm scrapes")
        warm: dict[str, float] = {}
        with ctx.window() as w:
            for fmt, headers in FORMATS.items():
                times = []
                for _ in range(scale.warm_scrapes):
                    s = ex.scrape(scale.scrape_timeout, headers)
                    times.append(s.seconds)
                warm[fmt] = statistics.median(times)
                if fmt == "text":
                    exposition = s.text
                    size = len(s.raw)
        rows.append(Row(label, "API calls made by the warm scrapes (every reading cached)",
                        f"{w['graph_calls']} calls in {2 * scale.warm_scrapes} scrapes",
                        "0", None, "0", w["graph_calls"] == 0))
        ctx.log("  prometheus_client's encoders on the same samples")
        baseline, samples = library_encoding(exposition)
        for fmt, seconds in warm.items():
            ratio = seconds / baseline[fmt]
            if a == 10_000:
                goal, ok = "<= 0.2x", ratio <= 0.2
            elif a == 1_000:
                goal, ok = "< 100 ms", seconds < 0.100
            else:
                goal, ok = "", None
            rows.append(Row(label, f"warm /metrics, {fmt} (median of {scale.warm_scrapes}; "
                            f"{samples:,} samples, {size / 1024:,.0f} KiB as text)",
                            f"{seconds * 1000:,.0f} ms",
                            f"prometheus_client {_encoder_name(fmt)} alone: "
                            f"{baseline[fmt] * 1000:,.0f} ms", ratio, goal, ok,
                            data={"seconds": seconds, "baseline": baseline[fmt],
                                  "samples": samples}))
        rss = ex.peak_rss()
        rows.append(Row(label, f"exporter peak RSS (VmHWM), {a:,} accounts", f"{rss:.0f} MB",
                        "goal 200 MB", rss / 200, data={"mb": rss}))
    return rows


def _encoder_name(fmt: str) -> str:
    return "generate_latest" if fmt == "text" else \
        "openmetrics generate_latest (no gzip)"


class _Families:
    def __init__(self, families: list[Any]):
        self.families = families

    def collect(self) -> list[Any]:
        return self.families


def library_encoding(exposition: str) -> tuple[dict[str, float], int]:
    """Seconds prometheus_client's own encoders need for the samples of an exposition (the
    best of three), per format as negotiated with the same Accept header; and the samples."""
    families = list(text_string_to_metric_families(exposition))
    samples = sum(len(f.samples) for f in families)
    collector = _Families(families)
    out = {}
    for fmt, headers in FORMATS.items():
        encoder, _ = choose_encoder(headers["Accept"])
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            encoder(collector)  # type: ignore[arg-type]
            best = min(best, time.perf_counter() - start)
        out[fmt] = best
    return out, samples


def cpu_row(ctx: Context, label: str, what: str, cpu: float, calls: int) -> Row:
    """CPU per 1,000 calls against one core's budget at the ceiling: 1,000 calls at
    max_concurrency/latency take 1000 x latency / max_concurrency seconds, so a ratio
    above 1 means the event loop's single core cannot reach the ceiling."""
    per = cpu / max(calls, 1) * 1000
    budget = 1000 / ctx.ceiling
    return Row(label, what, f"{per:.2f} s", f"one core at {ctx.ceiling:,.0f} calls/s: "
               f"{budget:.2f} s", per / budget, data={"cpu_per_1000": per})


def failing_scenarios(ctx: Context, scale: Scale) -> list[Row]:
    """Every account fails at once, by Graph's code 2 (HTTP 500) and by never answering:
    every scrape must still answer before its deadline."""
    rows = []
    a = scale.accounts
    for mode, how in (("error", "code 2 / HTTP 500"), ("hang", "no answer (timeouts)")):
        ctx.log(f"  {a:,} accounts failing at once: {how}")
        ctx.control("fail", accounts=a, mode=mode)
        try:
            config = accounts_config(ctx, a, ttl=60, timeout=scale.api_timeout)
            with Exporter(ctx, config, f"{scale.name}-failing-{mode}") as ex, \
                    ctx.window() as w:
                cpu0 = ex.cpu()
                scrapes = []
                end = time.monotonic() + scale.fail_seconds
                while time.monotonic() < end or not scrapes:
                    scrapes.append(ex.scrape(scale.scrape_timeout))
                cpu = ex.cpu() - cpu0
                up = scrapes[-1].up() if scrapes[-1].status == 200 else -1
        finally:
            ctx.control("fail", mode="none")
        late = sum(s.status != 200 or s.seconds > scale.scrape_timeout for s in scrapes)
        worst = max(s.seconds for s in scrapes)
        rows.append(Row(scale.label, f"{a:,} accounts failing at once ({how}): scrapes past "
                        f"their {scale.scrape_timeout:g} s deadline",
                        f"{late} of {len(scrapes)} late (first {scrapes[0].seconds:.2f} s, "
                        f"longest {worst:.2f} s, "
                        f"{w['graph_calls']:,} calls, exporter CPU {cpu:.1f} s = "
                        f"{cpu / w['seconds']:.0%} of a core, {up} up)",
                        f"deadline {scale.scrape_timeout:g} s", worst / scale.scrape_timeout,
                        "none late", late == 0,
                        data={"late": late, "scrapes": len(scrapes), "longest": worst,
                              "cpu": cpu}))
    return rows


def containers_scenarios(ctx: Context, scale: Scale) -> list[Row]:
    """Polling throughput, scrape deadlines while polling, CPU per poll, peak RSS, then
    registration (one by one and in batches) and the listing."""
    rows: list[Row] = []
    label, a, c = scale.label, scale.accounts, scale.containers
    config = containers_config(ctx, scale, ctx.work / f"{scale.name}-state.db")
    ctx.log(f"  exporter with {c:,} tracked containers starting")
    with Exporter(ctx, config, f"{scale.name}-containers", ready_timeout=900) as ex:
        rows.append(Row(label, f"start-up to ready with {c:,} containers in `track`",
                        f"{ex.startup:.1f} s", data={"seconds": ex.startup}))
        ctx.log("  waiting for every account's quotas (polling meanwhile)")
        deadline = time.monotonic() + 600
        while ex.scrape(scale.scrape_timeout).up() < a and time.monotonic() < deadline:
            pass
        ctx.log(f"  polling for {scale.poll_seconds:.0f} s, scraped back to back")
        with ctx.window() as w:
            cpu0 = ex.cpu()
            scrapes = []
            end = time.monotonic() + scale.poll_seconds
            while time.monotonic() < end:
                scrapes.append(ex.scrape(scale.scrape_timeout))
            cpu = ex.cpu() - cpu0
        rows.append(poll_row(ctx, scale, w, "scraped back to back (the most render work)"))
        late = sum(s.status != 200 or s.seconds > scale.scrape_timeout for s in scrapes)
        worst = max(s.seconds for s in scrapes)
        rows.append(Row(label, "scrapes past their deadline while polling",
                        f"{late} of {len(scrapes)} late (longest {worst:.2f} s)",
                        f"deadline {scale.scrape_timeout:g} s", worst / scale.scrape_timeout,
                        "none late", late == 0))
        rows.append(cpu_row(ctx, label, "exporter CPU per 1,000 API calls (container "
                            "polling, scrapes included)", cpu, w["graph_calls"]))
        # Polling goes on between scrapes for about one scrape interval: after one interval
        # at Prometheus' cadence, measure a window of it.
        ctx.log(f"  polling for {scale.poll_seconds:.0f} s, scraped every "
                f"{scale.scrape_interval:g} s")
        ex.scrape(scale.scrape_timeout)
        time.sleep(scale.scrape_interval)
        with ctx.window() as w:
            end = time.monotonic() + scale.poll_seconds
            while time.monotonic() < end:
                started = time.monotonic()
                ex.scrape(scale.scrape_timeout)
                time.sleep(max(0.0, min(end, started + scale.scrape_interval)
                               - time.monotonic()))
        rows.append(poll_row(ctx, scale, w, f"scraped every {scale.scrape_interval:g} s"))
        rss = ex.peak_rss()
        big = a == 10_000 and c == 100_000
        rows.append(Row(label, f"exporter peak RSS (VmHWM), {a:,} accounts + {c:,} tracked, "
                        "after polling", f"{rss:.0f} MB", "goal 200 MB", rss / 200,
                        "<= 200 MB" if big else "", rss <= 200 if big else None,
                        data={"mb": rss}))
        rows += registration(ctx, scale, ex)
        rows += listing(ctx, scale, ex)
        rss_after = ex.peak_rss()
        if rss_after > rss + 1:
            rows.append(Row(label, "exporter peak RSS after registration and listing",
                            f"{rss_after:.0f} MB", "goal 200 MB", rss_after / 200,
                            data={"mb": rss_after}))
    return rows


def poll_row(ctx: Context, scale: Scale, w: dict[str, Any], how: str) -> Row:
    c = scale.containers
    polls = w["calls"].get("container", 0)
    rate = polls / w["seconds"]
    ceiling = min(ctx.ceiling, c / 1.0)  # nor more often than every poll interval (1 s)
    goal = c in (10_000, 100_000)
    return Row(scale.label, f"container polls per second, {c:,} tracked, {how}",
               f"{rate:,.0f}/s ({polls:,} in {w['seconds']:.0f} s)",
               f"min(max_concurrency/latency, containers/poll interval) = {ceiling:,.0f}/s",
               rate / ceiling, ">= 0.8x" if goal else "", rate / ceiling >= 0.8 if goal else None,
               data={"rate": rate})


def registration(ctx: Context, scale: Scale, ex: Exporter) -> list[Row]:
    label, c = scale.label, scale.containers
    rows = []
    ctx.log("  registration, one container per request")
    next_id = [c + 1_000_000]
    lock = threading.Lock()
    done = [0]
    errors: list[str] = []
    end = time.monotonic() + scale.register_seconds

    def worker() -> None:
        with httpx.Client(timeout=60, headers=REGISTRATION) as client:
            while time.monotonic() < end and not errors:
                with lock:
                    n = next_id[0]
                    next_id[0] += 1
                r = client.post(ex.url + CONTAINERS_API, json={
                    "account": f"a{n % scale.accounts:05d}", "id": container_id(n)})
                if r.status_code in (200, 201):
                    with lock:
                        done[0] += 1
                else:
                    errors.append(f"{r.status_code} {r.text[:200]}")

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - start
    rate = done[0] / took
    rows.append(Row(label, f"registration, one per request (8 clients), {c:,} tracked",
                    f"{rate:,.0f} containers/s ({done[0]:,} in {took:.1f} s)"
                    + (f"; failed: {errors[0]}" if errors else ""),
                    "batch goal 2,000/s", rate / 2000, data={"rate": rate}))

    ctx.log("  batch registration")
    batches = 0
    registered = 0
    took = 0.0
    unsupported = ""
    end = time.monotonic() + scale.batch_seconds
    with httpx.Client(timeout=120, headers=REGISTRATION) as client:
        while time.monotonic() < end and batches < max(2, c // BATCH // 10):
            ids = range(next_id[0], next_id[0] + BATCH)
            next_id[0] += BATCH
            body = [{"account": f"a{n % scale.accounts:05d}", "id": container_id(n)}
                    for n in ids]
            start = time.monotonic()
            r = client.post(ex.url + CONTAINERS_API, json=body)
            took += time.monotonic() - start
            results = _json(r).get("results") if r.status_code in (200, 201) else None
            if not isinstance(results, list):
                unsupported = f"HTTP {r.status_code}: {r.text.strip()[:120]}"
                break
            batches += 1
            registered += len(body)
    if unsupported:
        rows.append(Row(label, f"batch registration ({BATCH:,} per request)",
                        f"answered {unsupported}", "goal 2,000/s", None, ">= 2,000/s", False,
                        verdict="not supported by this build"))
    else:
        rate = registered / took
        rows.append(Row(label, f"batch registration ({BATCH:,} per request), {c:,} tracked",
                        f"{rate:,.0f} containers/s ({registered:,} in {took:.2f} s)",
                        "goal 2,000/s", rate / 2000, ">= 2,000/s", rate >= 2000,
                        data={"rate": rate}))
    return rows


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        payload = r.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def listing(ctx: Context, scale: Scale, ex: Exporter) -> list[Row]:
    label, c = scale.label, scale.containers
    goal = c == 100_000
    ctx.log("  listing")
    with httpx.Client(timeout=300, headers=REGISTRATION) as client:
        start = time.monotonic()
        r = client.get(ex.url + CONTAINERS_API, params={"limit": PAGE})
        first = time.monotonic() - start
        payload = _json(r)
        if r.status_code != 200 or "next" not in payload:
            listed = payload.get("containers")
            shown = (f"no pagination (no `next`): all {len(listed):,} containers in one "
                     f"answer, {first:.2f} s, {len(r.content) / 1e6:.1f} MB"
                     if r.status_code == 200 and isinstance(listed, list)
                     else f"HTTP {r.status_code}")
            return [Row(label, f"listing page of {PAGE:,} (GET {CONTAINERS_API}?limit=N)",
                        shown, "goal 100 ms", None, "<= 100 ms" if goal else "",
                        False if goal else None, verdict="not supported by this build",
                        data={"full_seconds": first, "bytes": len(r.content)})]
        times = [first]
        seen = len(payload.get("containers") or [])
        cursor = payload.get("next")
        end = time.monotonic() + scale.list_seconds
        while cursor and time.monotonic() < end:
            start = time.monotonic()
            r = client.get(ex.url + CONTAINERS_API, params={"limit": PAGE, "after": cursor})
            times.append(time.monotonic() - start)
            payload = _json(r)
            seen += len(payload.get("containers") or [])
            cursor = payload.get("next")
    median = statistics.median(times)
    return [Row(label, f"listing page of {PAGE:,}, {c:,}+ tracked (median of {len(times)} pages"
                f" followed by cursor, {seen:,} containers)",
                f"{median * 1000:.0f} ms (first {times[0] * 1000:.0f} ms, max "
                f"{max(times) * 1000:.0f} ms)", "goal 100 ms", median / 0.1,
                "<= 100 ms" if goal else "", median <= 0.1 if goal else None,
                data={"median": median, "max": max(times), "pages": len(times)})]

"""HTTP engines compared (issue 11, item 2): CPU per 1,000 calls and achieved concurrency of
each way to make the exporter's calls, against the Graph API double (bench/double.py) at
50 ms latency and 64 calls in flight.

    python bench/engines.py              # fresh venv with the bench extra (~5.5 min)
    python bench/engines.py --no-venv    # this interpreter, with what it has installed
    python bench/engines.py --quick --no-venv   # a smoke run (the test suite's)
    python bench/engines.py --results    # also into bench/RESULTS.md

Engines (httpx stays the client API wherever the exporter is concerned):

* ``exporter``: the package's own graph.transport.Transport as it is (httpx-aiohttp's
  AiohttpTransport over one aiohttp pool of 64);
* ``exporter-httpcore``: the same Transport over the engine it had before (httpx transports
  directly, the budget split into pools of 8, as HttpcorePools below);
* ``client`` / ``client-httpcore``: the package's whole ThreadsClient (gate, stats, retry,
  error classification, parsing) over its own engine / over the pools of 8;
* ``httpx-pool64``: one httpx.AsyncHTTPTransport of 64 connections (httpcore's pool is
  quadratic in its connections, encode/httpcore#1035);
* ``httpx-client``: httpx.AsyncClient as documented (limits 64);
* ``httpx-client+aiohttp``: httpx.AsyncClient(transport=AiohttpTransport(...));
* ``aiohttp``: aiohttp.ClientSession alone, for reference (not httpx).

Each with the default asyncio loop and with uvloop, and with sniffio installed and not
(the fresh venv runs the second half after `pip uninstall sniffio`): without it httpcore
retries a failing import on every lock (encode/httpcore#1103). Each combination runs in its
own process; CPU is that process's (time.process_time), after a warm-up that opens the
connections.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    Venv,
    as_list,
    current_freeze,
    dump,
    key_versions,
    load_average,
    machine,
    shown_command,
    start_double,
    versions_line,
    write_section,
)

ENGINES = {
    "exporter": "exporter's Transport (httpx-aiohttp, one pool of 64): today",
    "exporter-httpcore": "exporter's Transport over httpx transports, pools of 8: before",
    "client": "exporter's ThreadsClient (gate, stats, parse) over its Transport: today",
    "client-httpcore": "exporter's ThreadsClient over httpx transports, pools of 8: before",
    "httpx-pool64": "httpx.AsyncHTTPTransport, one pool of 64",
    "httpx-client": "httpx.AsyncClient (limits 64)",
    "httpx-client+aiohttp": "httpx.AsyncClient + httpx-aiohttp transport",
    "aiohttp": "aiohttp.ClientSession alone (reference, not httpx)",
}
NEEDS = {"httpx-client+aiohttp": ("httpx_aiohttp",), "aiohttp": ("aiohttp",)}
SLOW = ("httpx-pool64", "httpx-client")
FIELDS = ("quota_usage,config,reply_quota_usage,reply_config,delete_quota_usage,delete_config,"
          "location_search_quota_usage,location_search_config")


# --- one engine, in its own process ---------------------------------------------------------


class HttpcorePools:
    """The exporter's engine before httpx-aiohttp: httpx.AsyncHTTPTransport pools of at most
    8 connections (httpcore's pool is quadratic in its connections, encode/httpcore#1035),
    each call on the pool with most room."""

    SIZE = 8

    def __init__(self, concurrency: int):
        import httpx

        count = -(-concurrency // self.SIZE)
        self.room = [concurrency // count + (i < concurrency % count) for i in range(count)]
        self.pools = [httpx.AsyncHTTPTransport(limits=httpx.Limits(
            max_connections=size, max_keepalive_connections=size)) for size in self.room]
        self.body = _room_back()

    async def handle_async_request(self, request: Any) -> Any:
        pool = max(range(len(self.pools)), key=self.room.__getitem__)
        self.room[pool] -= 1
        try:
            response = await self.pools[pool].handle_async_request(request)
        except BaseException:
            self.room[pool] += 1
            raise
        response.stream = self.body(response.stream, self.room, pool)
        return response

    async def aclose(self) -> None:
        await asyncio.gather(*(pool.aclose() for pool in self.pools))


@functools.cache
def _room_back() -> Any:
    """The response body that gives its pool's room back when closed, as the connection goes
    back: an httpx.AsyncByteStream (made once, httpx imported late like everywhere here)."""
    import httpx

    class RoomBack(httpx.AsyncByteStream):
        def __init__(self, stream: Any, room: list[int], pool: int):
            self.stream, self.room, self.pool = stream, room, pool

        def __aiter__(self) -> Any:
            return self.stream.__aiter__()

        async def aclose(self) -> None:
            try:
                await self.stream.aclose()
            finally:
                self.room[self.pool] += 1

    return RoomBack


def _aiohttp_transport(concurrency: int) -> Any:
    import httpx
    from httpx_aiohttp import AiohttpTransport

    return AiohttpTransport(limits=httpx.Limits(max_connections=concurrency,
                                                max_keepalive_connections=concurrency))


async def _engine(name: str, base: str, concurrency: int,
                  ) -> tuple[Callable[[int], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """(one call for account i, close) for an engine."""
    from double import token

    params = lambda i: {"fields": FIELDS, "access_token": token(i % 1000)}  # noqa: E731
    path = "/me/threads_publishing_limit"
    if name in ("exporter", "exporter-httpcore"):
        from threads_exporter.graph.transport import Transport

        transport = Transport(f"{base}/v1.0", concurrency, 10.0, HttpcorePools(
            concurrency) if name.endswith("httpcore") else None)

        async def call(i: int) -> None:
            status, _, _ = await transport.get(path, params(i))
            assert status == 200, status
        return call, transport.aclose
    if name in ("client", "client-httpcore"):
        from threads_exporter.config import Account, ApiConfig
        from threads_exporter.graph.client import ThreadsClient

        client = ThreadsClient(ApiConfig(base_url=base, max_concurrency=concurrency,
                                         timeout_seconds=10.0),
                               transport=HttpcorePools(concurrency)
                               if name.endswith("httpcore") else None)
        accounts = [Account(f"a{i}", "me", token(i)) for i in range(1000)]

        async def call(i: int) -> None:
            await client.read_quotas(accounts[i % 1000], time.monotonic() + 10)
        return call, client.aclose
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    if name == "httpx-pool64":
        pool = httpx.AsyncHTTPTransport(limits=limits)
        timeout = {"timeout": httpx.Timeout(10.0).as_dict()}

        async def call(i: int) -> None:
            request = httpx.Request("GET", f"{base}/v1.0{path}", params=params(i),
                                    extensions=timeout)
            response = await pool.handle_async_request(request)
            await response.aread()
            await response.aclose()
            assert response.status_code == 200
        return call, pool.aclose
    if name in ("httpx-client", "httpx-client+aiohttp"):
        client = httpx.AsyncClient(
            base_url=f"{base}/v1.0", timeout=10.0, limits=limits,
            transport=_aiohttp_transport(concurrency) if name.endswith("aiohttp") else None)

        async def call(i: int) -> None:
            r = await client.get(path, params=params(i))
            r.json()
            assert r.status_code == 200
        return call, client.aclose
    if name == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                        timeout=aiohttp.ClientTimeout(total=10))

        async def call(i: int) -> None:
            async with session.get(f"{base}/v1.0{path}", params=params(i)) as r:
                await r.json()
                assert r.status == 200
        return call, session.close
    raise SystemExit(f"unknown engine {name}")


async def _measure(name: str, base: str, concurrency: int, calls: int,
                   seconds: float) -> dict[str, float]:
    """`calls` calls from `concurrency` workers, or as many as `seconds` allow (a slow engine
    is measured on fewer calls, not for longer)."""
    call, close = await _engine(name, base, concurrency)
    try:
        async def run(n: int, limit: float) -> tuple[float, float, int]:
            counter = iter(range(n))
            done = [0]
            end = time.perf_counter() + limit

            async def worker() -> None:
                for i in counter:
                    await call(i)
                    done[0] += 1
                    if time.perf_counter() > end:
                        break

            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.process_time() - cpu, time.perf_counter() - wall, done[0]

        await run(concurrency * 2, seconds)  # warm-up: every connection opened
        cpu, wall, done = await run(calls, seconds)
    finally:
        await close()
    return {"cpu": cpu, "wall": wall, "calls": done}


def one(args: argparse.Namespace) -> int:
    """Measure one engine on one loop; print the result as JSON."""
    if args.loop == "uvloop":
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    else:
        runner = asyncio.Runner()
    with runner:
        result = runner.run(_measure(args.one, args.url, args.concurrency, args.calls,
                                     args.seconds))
    result["sniffio"] = importlib.util.find_spec("sniffio") is not None
    print(json.dumps(result))
    return 0


# --- the comparison --------------------------------------------------------------------------


def _available(python: str, modules: tuple[str, ...]) -> bool:
    code = "import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) is None " \
           f"for m in {list(modules)!r}))"
    return subprocess.run([python, "-c", code]).returncode == 0


def compare(installs: list[tuple[str, str]], base: str, args: argparse.Namespace,
            log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every engine x loop x install ((sniffio label, python) pairs), each run in a process
    of its own. Repeats are interleaved (every combination once, then again), so a change in
    the machine's load shifts all combinations alike instead of some."""
    loops = ["asyncio"] if args.quick else ["asyncio", "uvloop"]
    engines = (["exporter", "exporter-httpcore", "client", "httpx-client"] if args.quick
               else list(ENGINES))
    combos = []
    for engine in engines:
        # One pool of 64 costs ~15x: measured on asyncio only, it needs no second loop.
        for loop in (["asyncio"] if engine in SLOW else loops):
            for sniffio, python in installs:
                combos.append({"engine": engine, "loop": loop, "sniffio": sniffio,
                               "python": python, "results": []})
    for combo in combos:
        needs = NEEDS.get(combo["engine"], ()) + (
            ("uvloop",) if combo["loop"] == "uvloop" else ())
        if needs and not _available(combo["python"], needs):
            combo["error"] = f"not installed: {', '.join(needs)}"
    for rep in range(args.repeat):
        for combo in combos:
            if "error" in combo:
                continue
            run = subprocess.run(
                [combo["python"], str(BENCH / "engines.py"), "--one", combo["engine"],
                 "--loop", combo["loop"], "--url", base, "--calls", str(args.calls),
                 "--seconds", str(args.seconds), "--concurrency", str(args.concurrency)],
                capture_output=True, text=True, timeout=600)
            if run.returncode != 0:
                combo["error"] = (run.stderr.strip().splitlines() or ["failed"])[-1][:200]
                continue
            result = json.loads(run.stdout)
            combo["results"].append(result)
            log(f"  run {rep + 1}/{args.repeat}: {combo['engine']:22} {combo['loop']:8} "
                f"sniffio {combo['sniffio']:9} {result['cpu'] / result['calls'] * 1000:.3f} s "
                "CPU / 1,000 calls")
    rows = []
    for combo in combos:
        row = {k: combo[k] for k in ("engine", "loop", "sniffio")}
        results = combo["results"]
        if "error" in combo:
            row["error"] = combo["error"]
        elif results:
            row["cpu_per_1000"] = statistics.median(
                r["cpu"] / r["calls"] * 1000 for r in results)
            row["rate"] = statistics.median(r["calls"] / r["wall"] for r in results)
            row["concurrency"] = row["rate"] * args.latency  # Little's law at the upstream
            row["runs"] = len(results)
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], ceiling: float, concurrency: int) -> str:
    today = _today(rows)
    lines = ["| engine | loop | sniffio | CPU per 1,000 calls | vs today's exporter | "
             f"achieved concurrency (of {concurrency}) | calls/s vs ceiling {ceiling:,.0f}/s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {ENGINES[r['engine']]} | {r['loop']} | {r['sniffio']} |"
        if "cpu_per_1000" not in r:
            lines.append(f"{head} {r.get('error', '')} | | | |")
            continue
        vs = f"{r['cpu_per_1000'] / today['cpu_per_1000']:.2f}x" if today else ""
        lines.append(f"{head} {r['cpu_per_1000']:.3f} s | {vs} | {r['concurrency']:.1f} | "
                     f"{r['rate']:,.0f}/s = {r['rate'] / ceiling:.2f}x |")
    return "\n".join(lines)


def _today(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Today's exporter as a fresh install has it: its Transport on asyncio, and sniffio
    absent (the lock resolves no sniffio) where both were measured."""
    measured = [r for r in rows if r["engine"] == "exporter" and r["loop"] == "asyncio"
                and "cpu_per_1000" in r]
    return next((r for r in measured if r["sniffio"] == "absent"),
                measured[0] if measured else None)


def recommendation(rows: list[dict[str, Any]]) -> str:
    measured = [r for r in rows if "cpu_per_1000" in r]
    if not measured:
        return "Nothing measured."

    def best(pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        found = [r for r in measured if pred(r)]
        return min(found, key=lambda r: r["cpu_per_1000"]) if found else None

    today = _today(rows)
    httpx_api = best(lambda r: r["engine"] not in ("aiohttp", "client", "client-httpcore"))
    out = []
    if today and httpx_api:
        out.append(
            f"Cheapest way with httpx as the client API: {ENGINES[httpx_api['engine']]} on "
            f"{httpx_api['loop']} (sniffio {httpx_api['sniffio']}), "
            f"{httpx_api['cpu_per_1000']:.3f} s per 1,000 calls against "
            f"{today['cpu_per_1000']:.3f} s for today's transport as installed "
            f"({httpx_api['cpu_per_1000'] / today['cpu_per_1000']:.2f}x).")
    for now, before in (("exporter", "exporter-httpcore"), ("client", "client-httpcore")):
        cpu = {(r["engine"], r["sniffio"]): r["cpu_per_1000"] for r in measured
               if r["loop"] == "asyncio"}
        for sn in ("absent", "installed"):  # as a fresh install has it, where both were run
            if (now, sn) in cpu and (before, sn) in cpu:
                out.append(f"{ENGINES[now]}: {cpu[(now, sn)]:.3f} s per 1,000 calls against "
                           f"{cpu[(before, sn)]:.3f} s before "
                           f"({cpu[(now, sn)] / cpu[(before, sn)]:.2f}x; asyncio, sniffio {sn}).")
                break
    for engine in ("exporter", "exporter-httpcore", "client", "client-httpcore"):
        pairs = {(r["loop"], r["sniffio"]): r["cpu_per_1000"] for r in measured
                 if r["engine"] == engine}
        for sn in ("absent", "installed"):
            if ("asyncio", sn) in pairs and ("uvloop", sn) in pairs:
                out.append(f"uvloop for {engine} (sniffio {sn}): "
                           f"{pairs[('uvloop', sn)] / pairs[('asyncio', sn)]:.2f}x the CPU.")
                break
        for loop in ("asyncio", "uvloop"):
            if (loop, "installed") in pairs and (loop, "absent") in pairs:
                out.append(f"sniffio installed for {engine} on {loop}: "
                           f"{pairs[(loop, 'installed')] / pairs[(loop, 'absent')]:.2f}x the "
                           "CPU of without.")
    return "\n".join(f"- {line}" for line in out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--no-venv", action="store_true",
                   help="this interpreter and what it has installed, not a fresh venv")
    p.add_argument("--quick", action="store_true", help="four engines, asyncio only, few calls")
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--calls", type=int, default=None, help="calls measured per run")
    p.add_argument("--seconds", type=float, default=None,
                   help="at most this long per run (a slow engine makes fewer calls)")
    p.add_argument("--repeat", type=int, default=None, help="runs per combination (median)")
    p.add_argument("--keep-venv", action="store_true")
    p.add_argument("--results", type=Path, nargs="?", const=BENCH / "RESULTS.md")
    p.add_argument("--json", type=Path, help="also write every row as JSON here")
    # One measurement (run by the comparison in a process of its own):
    p.add_argument("--one", choices=list(ENGINES), help=argparse.SUPPRESS)
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio",
                   help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.calls is None:
        args.calls = 640 if args.quick else 3000
    if args.seconds is None:
        args.seconds = 2.0 if args.quick else 5.0
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        return one(args)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    started = time.monotonic()
    venv = None if args.no_venv else Venv("bench", keep=args.keep_venv)
    try:
        if venv is not None:
            venv.create()
            python, freeze = str(venv.python), venv.freeze()
            how = "a fresh venv (`pip install -c requirements.lock '.[bench]'`)"
        else:
            python, freeze = sys.executable, current_freeze()
            how = f"this interpreter ({sys.executable}, --no-venv)"
        py = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                            capture_output=True, text=True, check=True).stdout.strip()
        header = (f"Machine: {machine()}\nInstalled: {how}\n"
                  f"Versions: {versions_line(key_versions(freeze), py)}\n"
                  f"Upstream latency {args.latency * 1000:.0f} ms (the Graph API double), "
                  f"{args.concurrency} in flight, {args.calls:,} calls (or {args.seconds:g} s) "
                  f"per run, median of {args.repeat} runs\n"
                  f"Load average (1/5/15 min) at start: {load_average()}")
        print(header, flush=True)
        double, base = start_double(sys.executable, args.latency)
        try:
            if venv is not None and _available(python, ("sniffio",)):
                # A copy of the venv without sniffio, as a resolver without it installs.
                bare = venv.root / "venv-without-sniffio"
                shutil.copytree(venv.path, bare, symlinks=True)
                subprocess.run([str(bare / "bin" / "python"), "-m", "pip", "uninstall", "-y",
                                "-q", "sniffio"], check=True, capture_output=True)
                installs = [("installed", python), ("absent", str(bare / "bin" / "python"))]
            else:
                installs = [("installed" if _available(python, ("sniffio",)) else "absent",
                             python)]
            rows = compare(installs, base, args, log)
        finally:
            double.stop()
    finally:
        if venv is not None:
            venv.remove()
    ceiling = args.concurrency / args.latency
    text = (f"{as_list(header)}\n\n{table(rows, ceiling, args.concurrency)}\n\n"
            f"{recommendation(rows)}\n\nRun took {time.monotonic() - started:.0f} s; load "
            f"average at end: {load_average()}.\n")
    print(f"\n{text.split(chr(10) * 2, 1)[1]}")  # the header came first
    dump(args.json, {"header": header, "rows": rows})
    if args.results:
        command = shown_command("engines.py", argv if argv is not None else sys.argv[1:])
        write_section(args.results, "engines.py", f"`{command}`\n\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: the real exporter process, installed fresh, against an independent Graph API
double (bench/double.py) with injected latency; every number against its physical floor or
a baseline measured in the same run.

    python bench/run.py                    # fresh venv; 100 and 1,000 accounts (~3.5 min)
    python bench/run.py --full             # also 10,000 accounts / 100,000 containers (~8 min)
    python bench/run.py --quick --no-venv  # a smoke run with this interpreter (< 30 s)
    python bench/run.py --full --results   # also write the table into bench/RESULTS.md
    python bench/run.py --no-venv --scales large --only containers  # one scenario, one scale

By default it creates a venv in a temporary directory, installs this checkout into it as a
user would (`pip install -c requirements.lock .`), prints what pip resolved, and runs
everything from that venv: the exporter, the double and this driver. --no-venv uses the
running interpreter instead (quick development runs; the test suite's smoke run).

Scales (--scales): small = 100 accounts / 1,000 containers, medium = 1,000 / 10,000,
large = 10,000 / 100,000; quick = 50 / 500 with short windows. At each: cold /metrics
against ceil(calls / max_concurrency) x latency; CPU per 1,000 calls from /proc; warm
/metrics in text and OpenMetrics+gzip against prometheus_client's own encoders on the same
samples; every account failing at once (HTTP 500, then timeouts) against the scrape deadline;
container polls per second against max_concurrency / latency; registration one by one and in
batches; a listing page; peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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

DEFAULT_SCALES = "small,medium"
SCENARIOS = ("accounts", "failing", "containers")  # scenarios.<name>_scenarios, in this order
FULL_SCALES = "small,medium,large"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--quick", action="store_true",
                   help="one small scale with short windows (the test suite's smoke run)")
    p.add_argument("--full", action="store_true", help=f"scales {FULL_SCALES}")
    p.add_argument("--scales", default=None,
                   help=f"comma-separated, of quick, small, medium, large (default "
                        f"{DEFAULT_SCALES})")
    p.add_argument("--no-venv", action="store_true",
                   help="run with this interpreter instead of a fresh venv")
    p.add_argument("--keep-venv", action="store_true", help="leave the fresh venv on disk")
    p.add_argument("--latency", type=float, default=0.05, help="upstream latency, seconds")
    p.add_argument("--concurrency", type=int, default=64, help="api.max_concurrency")
    p.add_argument("--results", type=Path, nargs="?", const=BENCH / "RESULTS.md",
                   help="write the report into this Markdown file's generated section "
                        "(default bench/RESULTS.md)")
    p.add_argument("--json", type=Path, help="also write every row as JSON here")
    p.add_argument("--only", default=None,
                   help=f"comma-separated, of {', '.join(SCENARIOS)}: run only these "
                        "scenarios at each scale (default all)")
    p.add_argument("--venv-info", type=Path, help=argparse.SUPPRESS)  # from the outer run
    args = p.parse_args(argv)
    if args.scales is None:
        args.scales = "quick" if args.quick else FULL_SCALES if args.full else DEFAULT_SCALES
    args.scale_names = [s.strip() for s in args.scales.split(",") if s.strip()]
    unknown = set(args.scale_names) - {"quick", "small", "medium", "large"}
    if unknown or not args.scale_names:
        p.error(f"--scales: unknown {', '.join(sorted(unknown)) or 'none given'}")
    args.only_names = [s.strip() for s in (args.only or ",".join(SCENARIOS)).split(",")
                       if s.strip()]
    unknown = set(args.only_names) - set(SCENARIOS)
    if unknown or not args.only_names:
        p.error(f"--only: unknown {', '.join(sorted(unknown)) or 'none given'}")
    return args


def in_fresh_venv(argv: list[str], args: argparse.Namespace) -> int:
    """Create the venv, then run this script again inside it with --no-venv."""
    venv = Venv(keep=args.keep_venv).create()
    try:
        freeze = venv.freeze()
        print(f"resolved: {versions_line(key_versions(freeze), _venv_python(venv))}\n",
              flush=True)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"freeze": freeze, "install_seconds": venv.install_seconds,
                       "python": _venv_python(venv)}, f)
        inner = [str(venv.python), str(BENCH / "run.py"), *argv, "--no-venv",
                 "--venv-info", f.name]
        try:
            return subprocess.run(inner, cwd=BENCH.parent).returncode
        finally:
            os.unlink(f.name)
    finally:
        venv.remove()


def _venv_python(venv: Venv) -> str:
    return subprocess.run([str(venv.python), "-c", "import platform; "
                           "print(platform.python_version())"], capture_output=True,
                          text=True, check=True).stdout.strip()


def table(rows: list) -> str:
    lines = ["| scale | measurement | result | floor or baseline | ratio | goal | |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}x"
        cells = [r.scale, r.what, r.result, r.reference, ratio, r.goal, r.mark]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _cell(text: str) -> str:
    """One line, no column breaks: error texts quoted in a result may hold both."""
    return " ".join(text.split()).replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if not args.no_venv:
        return in_fresh_venv(argv, args)

    import scenarios  # httpx, PyYAML, prometheus_client: the venv's own

    scales = [scenarios.SCALES[name] for name in args.scale_names]

    if args.venv_info:
        info = json.loads(args.venv_info.read_text())
        freeze, how = info["freeze"], (f"a fresh venv (`pip install -c requirements.lock .`, "
                                       f"{info['install_seconds']:.0f} s)")
    else:
        freeze, how = current_freeze(), f"this interpreter ({sys.executable}, --no-venv)"
    versions = versions_line(key_versions(freeze), platform.python_version())
    load_before = load_average()
    header = (f"Machine: {machine()}\n"
              f"Installed: {how}\n"
              f"Versions: {versions}\n"
              f"Upstream latency {args.latency * 1000:.0f} ms, max_concurrency "
              f"{args.concurrency}; scales: {', '.join(s.label for s in scales)}\n"
              f"Load average (1/5/15 min) at start: {load_before}")
    print(header, flush=True)

    started = time.monotonic()
    rows = []
    timings = []
    double, base = start_double(sys.executable, args.latency)
    try:
        with tempfile.TemporaryDirectory(prefix="threads-bench-") as tmp:
            ctx = scenarios.Context(sys.executable, base, double, args.latency,
                                    args.concurrency, Path(tmp),
                                    log=lambda m: print(m, file=sys.stderr, flush=True))
            rows += scenarios.capacity(ctx)
            for scale in scales:
                t0 = time.monotonic()
                ctx.log(f"{scale.label}:")
                for name in SCENARIOS:
                    if name in args.only_names:
                        rows += getattr(scenarios, f"{name}_scenarios")(ctx, scale)
                timings.append(f"{scale.name} {time.monotonic() - t0:.0f} s")
            busiest = max(ctx.double_busy, default=0.0)
            rows.insert(1, scenarios.Row(
                "all", "Graph API double: its busiest measured window",
                f"{busiest:.0%} of one core", "one core", busiest))
    finally:
        double.stop()
    took = time.monotonic() - started
    footer = (f"Run took {took:.0f} s ({', '.join(timings)}); load average at end: "
              f"{load_average()}.")
    report = f"{as_list(header)}\n\n{table(rows)}\n\n{footer}\n"
    print(f"\n{table(rows)}\n\n{footer}")
    if args.results:
        write_section(args.results, "run.py", f"`{shown_command('run.py', argv)}`\n\n{report}"
                      f"\nResolved versions (pip freeze):\n\n```\n{chr(10).join(freeze)}\n```")
    dump(args.json, {"header": header, "footer": footer, "rows": [r.__dict__ for r in rows]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

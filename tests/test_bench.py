"""The benchmark runs with one command: a --quick smoke run prints the whole table. Its
verdicts are timing on a shared machine, so only the counting ones are asserted here."""

from __future__ import annotations

import subprocess
import sys

from procs import REPO


def test_bench_quick_prints_the_table() -> None:
    run = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in run.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| measurement")}
    assert len(rows) == 9, run.stdout
    assert any(k.startswith("cold /metrics") for k in rows)
    assert any(k.startswith("naive baseline") for k in rows)
    # One publishing-limit call per account per TTL, however many scrapers: a count.
    busiest = next(v for k, v in rows.items() if "publishing-limit calls" in k)
    assert busiest.rstrip(" |").endswith("met"), busiest

"""The Threads API simulator with N generated accounts and injected latency, as its own
process so its CPU does not count against the exporter's.

    python bench/sim.py --listen 127.0.0.1:10331 --accounts 1000 --containers 10000

Tokens are `bench-token-<i>`; container n belongs to account n % accounts, has the id
container_id(n) and stays IN_PROGRESS, so a tracked container stays due for polling.
"""

from __future__ import annotations

import argparse

from threads_exporter.demo.server import serve
from threads_exporter.demo.simulator import SimAccount, Simulator


def token(i: int) -> str:
    return f"bench-token-{i}"


def container_id(n: int) -> str:
    return str(17889615691900000 + n)  # as Simulator.create_container numbers them


def build(accounts: int, containers: int, latency: float) -> Simulator:
    sim = Simulator(latency=latency)
    made = [sim.add(SimAccount(token(i), "me", phase=i / max(1, accounts)))
            for i in range(accounts)]
    for n in range(containers):
        assert sim.create_container(made[n % accounts], "stuck").id == container_id(n)
    return sim


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="127.0.0.1:10331")
    p.add_argument("--accounts", type=int, default=1000)
    p.add_argument("--containers", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.05, help="seconds added to every answer")
    args = p.parse_args()
    return serve(build(args.accounts, args.containers, args.latency), args.listen)

if __name__ == "__main__":
    raise SystemExit(main())

"""A fleet of 300 accounts: the demo at agency size, for the dashboards and alerts.

The package's simulator (threads_exporter.demo.simulator) serves 300 generated accounts in a
helper process of its own, with Meta's X-App-Usage header added; the real exporter reads them
from a generated config; a publishing pipeline creates media containers on the simulator and
registers them with the exporter; a real Prometheus scrapes it all with the bundled rules.

    python tests/fleet.py --minutes 16 --render docs/   # docs/overview-300.png
    python tests/fleet.py --serve-simulator PORT_FILE   # the helper process alone

tests/test_fleet.py runs the same fleet for about a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import random
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from threads_exporter.demo import server as sim_server
from threads_exporter.demo.simulator import (
    DAY,
    DEMO_CONTAINER_SCALE,
    DEMO_CONTAINER_TTL,
    SimAccount,
    Simulator,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
API_TOKEN = "fleet-registration-token"
ACCOUNTS = 300


@dataclass(frozen=True)
class FleetAccount:
    name: str
    sim: SimAccount

    @property
    def failing(self) -> bool:
        return self.sim.expired or self.sim.fault is not None

    @property
    def token_trouble(self) -> bool:
        """Expired, or expiring within 7 days."""
        return self.sim.expired or (self.sim.expires_in is not None
                                    and self.sim.expires_in < 7 * DAY)


def fleet(n: int = ACCOUNTS) -> list[FleetAccount]:
    """n accounts, the same every time: most healthy at varied load, a few near their
    quotas, a few failing (dead tokens, a flaky upstream, throttling), tokens expiring."""
    rng = random.Random(20250601)
    out = []
    for i in range(n):
        load, swing = rng.uniform(0.1, 0.65), rng.uniform(0.05, 0.25)
        if i % 37 == 5:  # hot accounts: high in the 80-95 % band, sometimes over
            load, swing = rng.uniform(0.84, 0.9), 0.08
        expires_in: float | None = rng.uniform(10, 60) * DAY
        if i % 41 == 3:
            expires_in = rng.uniform(0.2, 0.9) * DAY
        elif i % 23 == 9:
            expires_in = rng.uniform(2, 6) * DAY
        elif i % 30 == 0:
            expires_in = None
        sim = SimAccount(f"fleet-token-{i:03d}", str(17841400000100000 + i), load=load,
                         swing=swing, period=rng.uniform(900, 1800), phase=rng.random(),
                         expires_in=expires_in, expired=i % 53 == 7,
                         fault={17: "server_error", 29: "throttled"}.get(i % 71))
        out.append(FleetAccount(f"acct-{i:03d}", sim))
    return out


def simulator(accounts: list[FleetAccount]) -> Simulator:
    sim = Simulator(container_scale=DEMO_CONTAINER_SCALE, container_ttl=DEMO_CONTAINER_TTL)
    for a in accounts:
        sim.add(a.sim)
    return sim


class _UsageHandler(sim_server._Handler):
    """The simulator's handler, plus the X-App-Usage header Meta sends with app usage."""

    def end_headers(self) -> None:
        t = time.time()
        usage = {kind: round(60 + 35 * math.sin(t / period), 1)
                 for kind, period in (("call_count", 300), ("total_time", 500),
                                      ("total_cputime", 700))}
        self.send_header("X-App-Usage", json.dumps(usage))
        super().end_headers()


class UsageSimulatorServer(sim_server.SimulatorServer):
    def __init__(self, sim: Simulator, address: tuple[str, int] = ("127.0.0.1", 0)):
        self.sim = sim
        sim_server.ThreadingHTTPServer.__init__(self, address, _UsageHandler)


def serve_simulator(port_file: Path, n: int) -> int:
    """The helper process: serve the fleet's simulator, write the URL once listening."""
    server = UsageSimulatorServer(simulator(fleet(n)))
    port_file.write_text(server.base_url)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


def write_config(path: Path, base_url: str, state_path: Path, n: int = ACCOUNTS) -> Path:
    config = {
        "api": {"base_url": base_url, "timeout_seconds": 5, "max_concurrency": 32},
        "cache_ttl_seconds": 15,
        "token_check_interval_seconds": 60,
        "accounts": [{"name": a.name, "user_id": a.sim.user_id, "access_token": a.sim.token}
                     for a in fleet(n)],
        # Container times compressed as the demo's (threads_exporter.demo.config).
        "containers": {
            "poll_interval_seconds": 2, "stuck_poll_interval_seconds": 10,
            "finished_poll_interval_seconds": 4, "stuck_after_seconds": 20,
            "expire_after_hours": DEMO_CONTAINER_TTL / 3600, "retention_hours": 0.5,
            "max_poll_interval_seconds": 60, "state_path": str(state_path),
            "api_token": API_TOKEN,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


class Publisher:
    """A publishing pipeline for the fleet: creates a video container on the simulator for
    the next live account every `interval` seconds and registers it with the exporter (the
    simulator cycles each container through published, failed, expired, stuck, lost...)."""

    def __init__(self, sim_url: str, exporter_url: str, interval: float, n: int = ACCOUNTS):
        self.sim_url, self.exporter_url, self.interval = sim_url, exporter_url, interval
        self.created = 0
        self._stop = threading.Event()
        live = [a for a in fleet(n) if not a.sim.expired]
        self._accounts = itertools.cycle(random.Random(1).sample(live, len(live)))
        self._thread = threading.Thread(target=self._run, name="fleet-publisher", daemon=True)

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        with httpx.Client(timeout=5.0) as http:
            for n in itertools.count():
                if self._stop.wait(self.interval):
                    return
                account = next(self._accounts)
                try:
                    r = http.post(f"{self.sim_url}/v1.0/{account.sim.user_id}/threads", params={
                        "media_type": "VIDEO", "video_url": f"https://example.com/v{n}.mp4",
                        "access_token": account.sim.token})
                    cid = r.raise_for_status().json()["id"]
                    http.post(f"{self.exporter_url}/api/v1/containers", headers=headers,
                              json={"account": account.name, "id": cid}).raise_for_status()
                    self.created += 1
                except httpx.HTTPError:
                    continue  # a real pipeline would retry; the fleet goes on


@dataclass
class Fleet:
    simulator_url: str
    exporter_url: str
    prometheus_url: str
    publisher: Publisher


@contextlib.contextmanager
def running(workdir: Path, *, n: int = ACCOUNTS, interval: str = "2s",
            publish_every: float = 0.5) -> Iterator[Fleet]:
    """The whole fleet: simulator helper process, exporter, Prometheus (bundled rules),
    publisher; everything stopped on exit."""
    sys.path.insert(0, str(HERE))
    from procs import Proc, exporter, prometheus
    from waiting import wait_for

    port_file = workdir / "simulator.url"
    helper = Proc([sys.executable, str(Path(__file__).resolve()), "--serve-simulator",
                   str(port_file), "--accounts", str(n)], cwd=workdir)
    try:
        sim_url = wait_for(lambda: port_file.exists() and port_file.read_text(),
                           timeout=30, interval=0.1, what="the fleet simulator's URL")
        config = write_config(workdir / "config.yaml", sim_url, workdir / "state.db", n)
        with exporter("--config.file", str(config), cwd=workdir) as (_proc, base), \
                prometheus([base.removeprefix("http://")], interval=interval,
                           rule_files=[REPO / "prometheus" / "rules.yml"]) as prom_url, \
                Publisher(sim_url, base, publish_every, n) as publisher:
            yield Fleet(sim_url, base, prom_url, publisher)
    finally:
        helper.discard()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve-simulator", type=Path, metavar="PORT_FILE")
    p.add_argument("--accounts", type=int, default=ACCOUNTS)
    p.add_argument("--minutes", type=float, default=16.0)
    p.add_argument("--render", type=Path, metavar="DIR", help="draw the dashboards there")
    p.add_argument("--hold", action="store_true", help="keep running after rendering")
    args = p.parse_args(argv)
    if args.serve_simulator:
        return serve_simulator(args.serve_simulator, args.accounts)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fleet-") as tmp, \
            running(Path(tmp), n=args.accounts, interval="5s", publish_every=1.0) as f:
        print(f"exporter {f.exporter_url}  prometheus {f.prometheus_url}", flush=True)
        time.sleep(args.minutes * 60)
        if args.render:
            sys.path.insert(0, str(REPO / "scripts"))
            import render_dashboards

            prom = render_dashboards.Prometheus(f.prometheus_url)
            for name, out in (("overview", f"overview-{args.accounts}.png"),
                              ("containers", f"containers-{args.accounts}.png")):
                dash = render_dashboards.load(REPO / "dashboards" / f"{name}.json")
                path = render_dashboards.render(dash, prom, args.render, args.minutes * 60)
                path.rename(args.render / out)
                print(args.render / out, flush=True)
        if args.hold:  # keep Prometheus up for another render, until interrupted
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

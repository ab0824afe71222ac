"""The exporter config `--demo` runs with: the simulator's accounts, demo-paced containers."""

from __future__ import annotations

from threads_exporter.config import Account, ApiConfig, Config, ContainersConfig
from threads_exporter.demo.simulator import (
    DEMO_API_TOKEN,
    DEMO_APP_TOKEN,
    DEMO_CONTAINER_TTL,
    demo_accounts,
)


def demo_config(base_url: str, state_path: str) -> Config:
    # Container times shrink with the simulator's, so a demo shows stuck containers (and
    # every other outcome) within a minute instead of after five.
    return Config(
        api=ApiConfig(base_url=base_url, timeout_seconds=2.0),
        cache_ttl_seconds=15.0,
        accounts=tuple(Account(name, sim.user_id, sim.token,
                               app_access_token=DEMO_APP_TOKEN if sim.dev_mode else None)
                       for name, sim in demo_accounts()),
        containers=ContainersConfig(
            poll_interval_seconds=2.0, stuck_poll_interval_seconds=10.0,
            finished_poll_interval_seconds=4.0, stuck_after_seconds=20.0,
            expire_after_seconds=DEMO_CONTAINER_TTL, retention_seconds=1800.0,
            state_path=state_path, api_token=DEMO_API_TOKEN),
    )

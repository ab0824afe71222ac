"""--shard I/N: a stable split of the accounts; other shards' accounts are named, not served."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import yaml

from procs import RunningExporter
from threads_exporter.config import (
    Account,
    Config,
    ConfigError,
    ContainersConfig,
    Shard,
    TrackedContainer,
    parse_shard,
)

NAMES = [f"account-{i}" for i in range(300)]


def config_of(names: list[str]) -> Config:
    return Config(
        accounts=tuple(Account(n, "me", f"token-{n}") for n in names),
        containers=ContainersConfig(track=tuple(TrackedContainer(n, "1") for n in names)),
    )


def test_shards_partition_the_accounts_evenly():
    full = config_of(NAMES)
    parts = [full.for_shard(Shard(i, 3)) for i in range(3)]
    served = [a.name for p in parts for a in p.accounts]
    assert sorted(served) == sorted(NAMES)
    assert all(70 <= len(p.accounts) <= 130 for p in parts)
    for p in parts:
        assert {t.account for t in p.containers.track} == {a.name for a in p.accounts}
        assert set(p.elsewhere) == set(NAMES) - {a.name for a in p.accounts}
        assert all(owner != p.shard.index for owner in p.elsewhere.values())


def test_assignment_is_stable_across_runs_and_versions():
    # Pinned values: changing the hash would move every account to another shard.
    assert [Shard(0, 3).owner(n) for n in ("brand", "agency", "support", "a")] == [2, 0, 2, 1]


def test_no_shard_keeps_everything():
    full = config_of(NAMES[:5])
    assert full.for_shard(None) is full


@pytest.mark.parametrize("value", ["3/3", "-1/2", "1", "a/b", "0/0", "1/2/3"])
def test_bad_shard_is_refused(value):
    with pytest.raises(ConfigError, match="--shard: expected I/N"):
        parse_shard(value)


def test_each_shard_serves_its_accounts_and_redirects_registration(
        tmp_path, run_exporter: Callable[..., RunningExporter]):
    names = ["brand", "agency"]  # owners 0 and 1 of 2
    assert [Shard(0, 2).owner(n) for n in names] == [0, 1]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "api": {"base_url": "http://127.0.0.1:9", "timeout_seconds": 0.5},
        "accounts": [{"name": n, "access_token": f"t-{n}"} for n in names],
        "containers": {"api_token": "reg-token", "state_path": str(tmp_path / "s0.db")},
    }))
    auth = {"Authorization": "Bearer reg-token"}
    shard = run_exporter("--config.file", str(path), "--shard", "0/2")
    text = httpx.get(shard.url(), timeout=10).text
    assert 'threads_up{account="brand"}' in text
    assert 'account="agency"' not in text
    r = httpx.post(shard.url("/api/v1/containers"), headers=auth,
                   json={"account": "agency", "id": "17889615691921648"})
    assert r.status_code == 421
    assert "belongs to shard 1/2" in r.json()["error"]
    probe = httpx.get(shard.url("/probe"), params={"account": "agency"})
    assert probe.status_code == 400 and "belongs to shard 1/2" in probe.text
    assert "of shard 0/2" in httpx.get(shard.url("/")).text

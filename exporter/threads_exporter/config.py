"""Config loading and validation: YAML in, frozen dataclasses out.

Every error names the field path (``accounts[1].access_token_file: ...``) so a user can fix a
config without reading code. Unknown and duplicate keys are errors: a typo must not be silently
ignored. Errors quote a rejected value only when it cannot be a secret (redact.shown): a token
pasted into the wrong field must not end up in a log line or a reload response.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from threads_exporter.fields import QUOTA_GROUPS
from threads_exporter.redact import could_be_secret, shown, shown_path
from threads_exporter.yamlfile import YamlError, key_path
from threads_exporter.yamlfile import load as load_yaml

ACCOUNT_NAME = re.compile(r"^[a-zA-Z0-9_.-]+$")
CONTAINER_ID = re.compile(r"^[0-9]{1,64}$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """A config problem; the message starts with the field path."""


@dataclass(frozen=True)
class ApiConfig:
    base_url: str = "https://graph.threads.net"
    version: str = "v1.0"
    timeout_seconds: float = 5.0
    max_concurrency: int = 16


@dataclass(frozen=True)
class Account:
    name: str
    user_id: str
    access_token: str = field(repr=False)
    quotas: tuple[str, ...] = QUOTA_GROUPS
    # An app access token (TH|app-id|app-secret) for debug_token: apps in development mode
    # refuse debug_token asked with the user's own token. The account's own, or api's.
    app_access_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)  # slots: a config may track 100,000
class TrackedContainer:
    account: str
    id: str


@dataclass(frozen=True)
class ContainersConfig:
    poll_interval_seconds: float = 60.0
    stuck_poll_interval_seconds: float = 300.0
    finished_poll_interval_seconds: float = 900.0
    retention_seconds: float = 48 * 3600.0
    # Meta: poll IN_PROGRESS for at most 5 minutes; a container unpublished for 24 h expires.
    stuck_after_seconds: float = 300.0
    expire_after_seconds: float = 24 * 3600.0
    # The slowest pace of the backoff for stuck and refused containers.
    max_poll_interval_seconds: float = 3600.0
    # Containers still polled per account: a runaway pipeline must not spend the account's
    # whole call budget on polls.
    max_tracked_per_account: int = 10_000
    state_path: str = "threads-exporter.db"
    api_token: str | None = field(default=None, repr=False)
    track: tuple[TrackedContainer, ...] = ()


@dataclass(frozen=True)
class Shard:
    """This instance's part of the accounts: `--shard I/N`, 0 <= I < N."""

    index: int
    total: int

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"

    def owner(self, account: str) -> int:
        # A stable hash (not Python's salted hash()): the same account lands on the same
        # shard on every host, run and Python version.
        digest = hashlib.sha256(account.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.total


def parse_shard(value: str) -> Shard:
    match = re.fullmatch(r"(\d+)/(\d+)", value.strip())
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise ConfigError(f"--shard: expected I/N with 0 <= I < N, got {shown(value)}")
    return Shard(int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True)
class Config:
    api: ApiConfig = ApiConfig()
    cache_ttl_seconds: float = 60.0
    token_check_interval_seconds: float = 3600.0
    accounts: tuple[Account, ...] = ()
    containers: ContainersConfig = ContainersConfig()
    shard: Shard | None = None
    # Accounts of the config that other shards own: name -> owning shard index.
    elsewhere: dict[str, int] = field(default_factory=dict)

    def for_shard(self, shard: Shard | None) -> Config:
        """The part of this config that one shard serves."""
        if shard is None:
            return self
        mine = tuple(a for a in self.accounts if shard.owner(a.name) == shard.index)
        names = {a.name for a in mine}
        track = tuple(t for t in self.containers.track if t.account in names)
        return replace(self, accounts=mine, shard=shard,
                       containers=replace(self.containers, track=track),
                       elsewhere={a.name: shard.owner(a.name) for a in self.accounts
                                  if a.name not in names})

    def without_track(self) -> Config:
        """The config as the running exporter keeps it: its `track` entries go into the
        store, which holds them from then on (a config may list 100,000)."""
        return replace(self, containers=replace(self.containers, track=()))

    @cached_property
    def _by_name(self) -> dict[str, Account]:
        return {a.name: a for a in self.accounts}

    def account(self, name: str) -> Account | None:
        # A dict: the tracker looks an account up for every container poll.
        return self._by_name.get(name)

    def misdirected(self, account: str) -> str | None:
        """Where to go instead, for an account another shard serves."""
        if (owner := self.elsewhere.get(account)) is None or self.shard is None:
            return None
        return (f"that account belongs to shard {owner}/{self.shard.total}; this is shard "
                f"{self.shard}")

    def secrets(self) -> list[str]:
        """Every secret string in this config, for redaction."""
        found = [a.access_token for a in self.accounts]
        found += [a.app_access_token for a in self.accounts if a.app_access_token]
        return [*found, self.containers.api_token] if self.containers.api_token else found


def valid_container_id(value: object) -> bool:
    return isinstance(value, str) and CONTAINER_ID.fullmatch(value) is not None


# --- reading ---------------------------------------------------------------------------


class _Fields:
    """Typed access to one mapping in the YAML, tracking which keys were consumed."""

    def __init__(self, data: Any, path: str, env: dict[str, str]):
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path or '<top>'}: expected a mapping, got {_kind(data)}")
        self.data = data
        self.path = path
        self.env = env
        self.used: set[str] = set()

    def at(self, key: object) -> str:
        return key_path(self.path, key)

    def raw(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> Any:
        value = self.raw(key)
        if value is None:
            if required:
                raise ConfigError(f"{self.at(key)}: required")
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ConfigError(f"{self.at(key)}: expected a string, got {_kind(value)}")
        return _expand(str(value), self.at(key), self.env)

    def number(self, key: str, default: float, *, minimum: float, integer: bool = False) -> Any:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, str):
            value = _expand(value, self.at(key), self.env)
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(
                    f"{self.at(key)}: expected a number, got {shown(value)}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{self.at(key)}: expected a number, got {_kind(value)}")
        if integer and value != int(value):
            raise ConfigError(f"{self.at(key)}: expected a whole number, got {value}")
        if value < minimum:
            raise ConfigError(f"{self.at(key)}: must be at least {minimum:g}, got {value:g}")
        return int(value) if integer else float(value)

    def items(self, key: str) -> list[Any]:
        value = self.raw(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ConfigError(f"{self.at(key)}: expected a list, got {_kind(value)}")
        return value

    def sub(self, key: str) -> _Fields:
        return _Fields(self.raw(key), self.at(key), self.env)

    def done(self) -> None:
        unknown = sorted((k for k in self.data if k not in self.used), key=str)
        if unknown:
            raise ConfigError(f"{self.at(unknown[0])}: unknown key")


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", bool: "a boolean", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def _expand(value: str, path: str, env: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            shown_name = name if not could_be_secret(name) else shown(name)
            raise ConfigError(f"{path}: environment variable {shown_name} is not set")
        return env[name]

    return _VAR.sub(sub, value)


def _read_file(path: str | Path, where: str) -> str:
    """A file's text; errors start with `where`, the field naming the file or the file."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file: {shown_path(str(path))}") from None
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {shown_path(str(path))}: {e.strerror}") from None


def _read_secret_file(path: str, where: str) -> str:
    text = _read_file(path, where)
    first = text.splitlines()[0].strip() if text.strip() else ""
    if not first:
        raise ConfigError(f"{where}: file is empty: {shown_path(path)}")
    return first


def _secret(f: _Fields, key: str) -> str | None:
    """A secret given inline (`key`) or as the first line of a file (`key_file`), not both."""
    inline, file = f.has(key), f.has(f"{key}_file")
    if inline and file:
        raise ConfigError(f"{f.path or '<top>'}: set only one of {key} and {key}_file")
    value = None
    if inline:
        value = f.string(key)
        if not value:
            raise ConfigError(f"{f.at(key)}: is empty")
    elif file:
        value = _read_secret_file(f.string(f"{key}_file"), f.at(f"{key}_file"))
    f.raw(key)
    f.raw(f"{key}_file")
    return value


def _account(data: Any, path: str, env: dict[str, str],
             app_access_token: str | None = None) -> Account:
    f = _Fields(data, path, env)
    name = f.string("name", required=True)
    if not ACCOUNT_NAME.fullmatch(name):
        raise ConfigError(f"{f.at('name')}: must match [a-zA-Z0-9_.-]+, got {shown(name)}")
    user_id = f.string("user_id", "me")
    if user_id != "me" and not CONTAINER_ID.fullmatch(user_id):
        raise ConfigError(
            f"{f.at('user_id')}: must be 'me' or a numeric id, got {shown(user_id)}")
    token = _secret(f, "access_token")
    if token is None:
        raise ConfigError(f"{path}: one of access_token or access_token_file is required")
    app_token = _secret(f, "app_access_token") or app_access_token
    quotas = QUOTA_GROUPS
    if f.has("quotas"):
        listed = f.items("quotas")
        for i, q in enumerate(listed):
            if q not in QUOTA_GROUPS:
                raise ConfigError(
                    f"{f.at('quotas')}[{i}]: unknown quota {shown(q)}, expected one of "
                    + ", ".join(QUOTA_GROUPS)
                )
        if not listed:
            raise ConfigError(f"{f.at('quotas')}: must not be empty")
        quotas = tuple(q for q in QUOTA_GROUPS if q in listed)
    f.raw("quotas")
    f.done()
    return Account(name=name, user_id=user_id, access_token=token, quotas=quotas,
                   app_access_token=app_token)


def _containers(f: _Fields, accounts: dict[str, Account]) -> ContainersConfig:
    d = ContainersConfig()
    api_token = None
    if f.has("api_token") and f.has("api_token_file"):
        raise ConfigError(f"{f.path}: set only one of api_token and api_token_file")
    if f.has("api_token"):
        api_token = f.string("api_token") or None
    elif f.has("api_token_file"):
        api_token = _read_secret_file(f.string("api_token_file"), f.at("api_token_file"))
    f.raw("api_token")
    f.raw("api_token_file")
    # Insertion-ordered and deduplicated in one; each entry's account is the Account's own
    # string, not a copy per entry.
    track: dict[TrackedContainer, None] = {}
    for i, item in enumerate(f.items("track")):
        t = _Fields(item, f"{f.at('track')}[{i}]", f.env)
        account = t.string("account", required=True)
        if account not in accounts:
            raise ConfigError(
                f"{t.at('account')}: no configured account named {shown(account)}")
        cid = t.string("id", required=True)
        if not valid_container_id(cid):
            raise ConfigError(f"{t.at('id')}: a container id is digits only, got {shown(cid)}")
        t.done()
        track.setdefault(TrackedContainer(account=accounts[account].name, id=cid))
    config = ContainersConfig(
        poll_interval_seconds=f.number("poll_interval_seconds", d.poll_interval_seconds, minimum=1),
        stuck_poll_interval_seconds=f.number(
            "stuck_poll_interval_seconds", d.stuck_poll_interval_seconds, minimum=1
        ),
        finished_poll_interval_seconds=f.number(
            "finished_poll_interval_seconds", d.finished_poll_interval_seconds, minimum=1
        ),
        retention_seconds=f.number("retention_hours", d.retention_seconds / 3600, minimum=0)
        * 3600,
        stuck_after_seconds=f.number("stuck_after_seconds", d.stuck_after_seconds, minimum=1),
        expire_after_seconds=f.number(
            "expire_after_hours", d.expire_after_seconds / 3600, minimum=0.01
        )
        * 3600,
        max_poll_interval_seconds=f.number(
            "max_poll_interval_seconds", d.max_poll_interval_seconds, minimum=1
        ),
        max_tracked_per_account=f.number(
            "max_tracked_per_account", d.max_tracked_per_account, minimum=1, integer=True
        ),
        state_path=f.string("state_path", d.state_path),
        api_token=api_token,
        track=tuple(track),
    )
    f.done()
    return config


def parse_config(data: Any, env: dict[str, str] | None = None) -> Config:
    """Validate parsed YAML into a Config; raises ConfigError naming the field."""
    env = dict(os.environ) if env is None else env
    top = _Fields(data, "", env)
    a = top.sub("api")
    d = ApiConfig()
    base_url = a.string("base_url", d.base_url).rstrip("/")
    if not re.match(r"^https?://[^/\s]+", base_url):
        raise ConfigError(f"api.base_url: expected an http(s) URL, got {shown(base_url)}")
    version = a.string("version", d.version)
    if not re.fullmatch(r"v\d+(\.\d+)?", version):
        raise ConfigError(f"api.version: expected a version like v1.0, got {shown(version)}")
    api = ApiConfig(
        base_url=base_url,
        version=version,
        timeout_seconds=a.number("timeout_seconds", d.timeout_seconds, minimum=0.1),
        max_concurrency=a.number("max_concurrency", d.max_concurrency, minimum=1, integer=True),
    )
    app_access_token = _secret(a, "app_access_token")
    a.done()

    accounts: dict[str, Account] = {}
    for i, item in enumerate(top.items("accounts")):
        account = _account(item, f"accounts[{i}]", env, app_access_token)
        if account.name in accounts:
            raise ConfigError(
                f"accounts[{i}].name: duplicate account name {shown(account.name)}")
        accounts[account.name] = account

    config = Config(
        api=api,
        cache_ttl_seconds=top.number("cache_ttl_seconds", 60.0, minimum=1),
        token_check_interval_seconds=top.number("token_check_interval_seconds", 3600.0, minimum=60),
        accounts=tuple(accounts.values()),
        containers=_containers(top.sub("containers"), accounts),
    )
    top.done()
    secrets = config.secrets()
    for i, account in enumerate(config.accounts):  # names are in every label and log line
        if any(account.name == t or (len(t) >= 16 and t in account.name) for t in secrets):
            raise ConfigError(f"accounts[{i}].name: holds one of the config's secrets (an "
                              "access token?); it would be shown in labels and logs")
    return config


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    text = _read_file(path, "--config.file")
    try:
        data = load_yaml(text)
    except YamlError as e:
        if e.path:  # a duplicate key: a field problem, named like the others
            raise ConfigError(str(e)) from None
        raise ConfigError(f"{shown_path(str(path))}: invalid YAML at {e.where}: "
                          f"{e.problem}") from None
    return parse_config(data, env)

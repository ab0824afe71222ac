"""Durable container state: one SQLite file per exporter, guarded by an exclusive lock.

Durability: WAL with ``synchronous=FULL``, so a commit has reached the disk before the caller
acknowledges anything (a registration answered 201, a status counted in a metric); a kill -9
or a power cut loses nothing acknowledged. The price is one fsync per commit, which the
tracker keeps small by committing poll results in batches. A status change and the counter
increments it causes are one transaction, so a crash can neither lose nor double-count them.

Only one process may use a state file: two exporters polling and counting the same containers
would double every counter. The lock is ``flock`` on ``<state_path>.lock``, released by the
kernel when the process dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 2
_SCHEMA = ("""
CREATE TABLE IF NOT EXISTS containers (
    account       TEXT NOT NULL,
    id            TEXT NOT NULL,
    status        TEXT,              -- NULL until the API first answers
    error_message TEXT,
    reached       TEXT NOT NULL DEFAULT '',  -- statuses already counted, comma-separated
    registered_at REAL NOT NULL,     -- Unix times from here on
    first_seen    REAL,
    last_seen     REAL,
    last_polled   REAL,
    polls         INTEGER NOT NULL DEFAULT 0,
    poll_errors   INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    next_poll_at  REAL,              -- NULL once final: never polled again
    finished_at   REAL,              -- when it became final: retention counts from here
    error_reason  TEXT,              -- the latest failed poll's reason (NULL after an answer)
    error_code    INTEGER,           -- and its Graph error code and subcode, where sent
    error_subcode INTEGER,
    refusals      INTEGER NOT NULL DEFAULT 0,  -- polls Meta refused in a row: the backoff
    PRIMARY KEY (account, id)
) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS containers_due ON containers (next_poll_at)",
    "CREATE INDEX IF NOT EXISTS containers_registered ON containers (registered_at)",
    "CREATE INDEX IF NOT EXISTS containers_finished ON containers (finished_at)",
    """CREATE TABLE IF NOT EXISTS counters (
    family  TEXT NOT NULL,
    account TEXT NOT NULL,
    label   TEXT NOT NULL,
    value   REAL NOT NULL,
    PRIMARY KEY (family, account, label)
) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID",
)
_COLUMNS = ("account", "id", "status", "error_message", "reached", "registered_at",
            "first_seen", "last_seen", "last_polled", "polls", "poll_errors", "last_error",
            "next_poll_at", "finished_at", "error_reason", "error_code", "error_subcode",
            "refusals")
# Columns added since schema 1, added in place to a file an older exporter wrote.
_MIGRATIONS = {2: ("ALTER TABLE containers ADD COLUMN error_reason TEXT",
                   "ALTER TABLE containers ADD COLUMN error_code INTEGER",
                   "ALTER TABLE containers ADD COLUMN error_subcode INTEGER",
                   "ALTER TABLE containers ADD COLUMN refusals INTEGER NOT NULL DEFAULT 0")}
_SETTABLE = frozenset(_COLUMNS) - {"account", "id", "registered_at"}


def _of_accounts(where: str, args: list[object], accounts: Sequence[str] | None,
                 ) -> tuple[str, list[object]]:
    """A WHERE clause and its parameters, narrowed to some accounts (None: all)."""
    if accounts is None:
        return where, args
    return (f"{where} AND account IN ({','.join('?' * len(accounts))})", [*args, *accounts])


class StoreError(Exception):
    """The state file cannot be used; the message names the file and the cause."""


class StoreLocked(StoreError):
    """Another process holds the state file."""


@dataclass(frozen=True, slots=True)  # slots: a poll round reads thousands
class Row:
    account: str
    id: str
    status: str | None
    error_message: str | None
    reached: frozenset[str]
    registered_at: float
    first_seen: float | None
    last_seen: float | None
    last_polled: float | None
    polls: int
    poll_errors: int
    last_error: str | None
    next_poll_at: float | None
    finished_at: float | None
    error_reason: str | None = None
    error_code: int | None = None
    error_subcode: int | None = None
    refusals: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return self.account, self.id


@dataclass(frozen=True, slots=True)
class Change:
    """An update of one container, applied only if the row is still as it was read (same
    status and poll count), together with the counter increments it causes."""

    account: str
    id: str
    expect_status: str | None
    expect_polls: int
    fields: dict[str, Any]
    counters: tuple[tuple[str, str, str, float], ...] = ()  # (family, account, label, delta)


@dataclass(frozen=True)
class Tallies:
    """Aggregates for the metrics; no per-container data."""

    counts: dict[tuple[str, str], int]  # (account, status) -> containers
    stuck: dict[str, int]
    backlog: dict[str, int]
    counters: dict[tuple[str, str, str], float]  # (family, account, label) -> value
    unanswered: dict[str, int] = field(default_factory=dict)  # refused at their latest poll


_REACHED = _COLUMNS.index("reached")


def _row(values: Sequence[Any]) -> Row:
    # Positional (Row's fields are _COLUMNS in order): a poll round reads thousands of rows.
    reached = frozenset(s for s in values[_REACHED].split(",") if s)
    return Row(*values[:_REACHED], reached, *values[_REACHED + 1:])  # type: ignore[call-arg]


@functools.cache
def _update(columns: tuple[str, ...]) -> str:
    """The compare-and-set UPDATE of some columns (a handful of sets: built once each)."""
    bad = set(columns) - _SETTABLE
    if bad:
        raise ValueError(f"not settable: {sorted(bad)}")
    return (f"UPDATE containers SET {', '.join(f'{k} = ?' for k in columns)} "
            "WHERE account = ? AND id = ? AND status IS ? AND polls = ?")


def _encode(column: str, value: Any) -> Any:
    return ",".join(sorted(value)) if column == "reached" else value


class Store:
    def __init__(self, path: str):
        self.path = path
        self._mutex = threading.Lock()
        lock_path = f"{path}.lock"
        try:
            self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise StoreError(f"{lock_path}: cannot open the state lock file: {e.strerror}") \
                from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StoreLocked(
                f"{path}: the container state file is in use by another threads-exporter "
                f"process (lock {lock_path} is held); give each exporter its own "
                "containers.state_path") from None
        try:
            # Owner-only, like the lock: listings and errors are nobody else's business.
            # SQLite gives the -wal and -shm files the database file's permissions.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(path, 0o600)
        except OSError as e:
            self.close()
            raise StoreError(f"{path}: cannot open the container state file: {e.strerror}") \
                from None
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                       timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{path}: written by a newer threads-exporter "
                                 f"(schema {version}, this one knows {SCHEMA_VERSION})")
            with self._tx() as db:
                for upgrade in range(version + 1, SCHEMA_VERSION + 1):
                    if version and upgrade in _MIGRATIONS:
                        for statement in _MIGRATIONS[upgrade]:
                            db.execute(statement)
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as e:
            self.close()
            raise StoreError(f"{path}: cannot open the container state file: {e}") from None
        except StoreError:
            self.close()
            raise

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
            self._db = None  # type: ignore[assignment]
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; COMMIT returns once the data is on disk."""
        with self._mutex:
            if self._db is None:
                raise StoreError(f"{self.path}: the container state file is closed")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise StoreError(f"{self.path}: cannot write the container state file: "
                                 f"{e}") from None

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._mutex:
            if self._db is None:
                raise StoreError(f"{self.path}: the container state file is closed")
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: cannot read the container state file: "
                                 f"{e}") from None

    # --- writes ---

    def register(self, account: str, ids: Iterable[str], now: float) -> list[bool]:
        """Start tracking containers (due at once); True for each one that was new."""
        new = []
        with self._tx() as db:
            for cid in ids:
                cur = db.execute(
                    "INSERT INTO containers (account, id, registered_at, next_poll_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", (account, cid, now, now))
                new.append(cur.rowcount == 1)
        return new

    def register_many(self, entries: Sequence[tuple[str, str]], now: float,
                      max_active: int) -> list[str]:
        """Track (account, id) pairs in one transaction, each "new", "known" or "full": an
        account may have at most max_active containers still polled."""
        results = []
        with self._tx() as db:
            active: dict[str, int] = {}
            for account, cid in entries:
                if account not in active:
                    active[account] = db.execute(
                        "SELECT COUNT(*) FROM containers WHERE account = ? AND "
                        "next_poll_at IS NOT NULL", (account,)).fetchone()[0]
                if db.execute("SELECT 1 FROM containers WHERE account = ? AND id = ?",
                              (account, cid)).fetchone():
                    results.append("known")
                elif active[account] >= max_active:
                    results.append("full")
                else:
                    db.execute("INSERT INTO containers (account, id, registered_at, "
                               "next_poll_at) VALUES (?, ?, ?, ?)", (account, cid, now, now))
                    active[account] += 1
                    results.append("new")
        return results

    def apply(self, changes: Iterable[Change]) -> int:
        """Apply changes whose row is unchanged since it was read; returns how many applied."""
        applied = 0
        with self._tx() as db:
            for c in changes:
                cur = db.execute(_update(tuple(c.fields)),
                                 [*(_encode(k, v) for k, v in c.fields.items()),
                                  c.account, c.id, c.expect_status, c.expect_polls])
                if cur.rowcount != 1:
                    continue  # changed meanwhile (or pruned): its counters must not count
                applied += 1
                for family, account, label, delta in c.counters:
                    db.execute(
                        "INSERT INTO counters VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE "
                        "SET value = value + excluded.value", (family, account, label, delta))
        return applied

    def prune(self, final_before: float) -> int:
        """Forget final containers that became final before a time; counters stay."""
        with self._tx() as db:
            return db.execute("DELETE FROM containers WHERE finished_at < ?",
                              (final_before,)).rowcount

    def heartbeat(self, now: float) -> None:
        """A tiny write, so a full or read-only disk shows up even when nothing changed."""
        with self._tx() as db:
            db.execute("INSERT INTO meta VALUES ('heartbeat', ?) ON CONFLICT DO UPDATE "
                       "SET value = excluded.value", (repr(now),))

    # --- reads ---

    def due(self, now: float, limit: int, accounts: Sequence[str] | None = None) -> list[Row]:
        """Containers whose poll is due, the longest-waiting first."""
        where, args = _of_accounts("next_poll_at <= ?", [now], accounts)
        rows = self._read(f"SELECT {', '.join(_COLUMNS)} FROM containers WHERE {where} "
                          "ORDER BY next_poll_at LIMIT ?", [*args, limit])
        return [_row(r) for r in rows]

    def next_due(self, accounts: Sequence[str] | None = None) -> float | None:
        """When the soonest container still polled is due (None: there is none)."""
        where, args = _of_accounts("next_poll_at IS NOT NULL", [], accounts)
        rows = self._read(f"SELECT next_poll_at FROM containers WHERE {where} "
                          "ORDER BY next_poll_at LIMIT 1", args)
        return rows[0][0] if rows else None

    def unfinished_since(self, registered_before: float) -> list[Row]:
        """Containers not final yet that were registered before a time."""
        rows = self._read(f"SELECT {', '.join(_COLUMNS)} FROM containers "
                          "WHERE registered_at < ? AND next_poll_at IS NOT NULL",
                          [registered_before])
        return [_row(r) for r in rows]

    def get(self, account: str, cid: str) -> Row | None:
        rows = self._read(f"SELECT {', '.join(_COLUMNS)} FROM containers "
                          "WHERE account = ? AND id = ?", [account, cid])
        return _row(rows[0]) if rows else None

    def listing(self, account: str | None = None, limit: int = -1,
                after: tuple[float, str, str] | None = None) -> list[Row]:
        """Containers oldest first, at most `limit` (-1: all), after a (registered_at,
        account, id) key: a keyset page, as fast at the 100th page as at the first."""
        conditions: list[str] = []
        args: list[object] = []
        if account is not None:
            conditions.append("account = ?")
            args.append(account)
        if after is not None:
            conditions.append("(registered_at, account, id) > (?, ?, ?)")
            args.extend(after)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = self._read(f"SELECT {', '.join(_COLUMNS)} FROM containers {where} "
                          "ORDER BY registered_at, account, id LIMIT ?", [*args, limit])
        return [_row(r) for r in rows]

    def tallies(self, now: float, stuck_before: float) -> Tallies:
        counts = self._read("SELECT account, status, COUNT(*) FROM containers "
                            "WHERE status IS NOT NULL GROUP BY account, status")
        stuck = self._read("SELECT account, COUNT(*) FROM containers WHERE status = "
                           "'IN_PROGRESS' AND registered_at <= ? GROUP BY account",
                           [stuck_before])
        backlog = self._read("SELECT account, COUNT(*) FROM containers "
                             "WHERE next_poll_at <= ? GROUP BY account", [now])
        unanswered = self._read("SELECT account, COUNT(*) FROM containers WHERE refusals > 0 "
                                "AND next_poll_at IS NOT NULL GROUP BY account")
        counters = self._read("SELECT family, account, label, value FROM counters")
        return Tallies(
            counts={(a, s): n for a, s, n in counts},
            stuck=dict(stuck),
            backlog=dict(backlog),
            unanswered=dict(unanswered),
            counters={(f, a, lbl): v for f, a, lbl, v in counters},
        )

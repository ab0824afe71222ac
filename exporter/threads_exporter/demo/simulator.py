"""The Threads API simulator's model: accounts, containers and the answers to each request
(pure: path and query in, status and JSON body out), in the documented shapes and errors.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from threads_exporter.fields import ERROR_MESSAGES, QUOTA_FIELDS

log = logging.getLogger(__name__)

DAY = 86400
QUOTA_TOTALS = {"posts": 250, "replies": 1000, "deletes": 100, "location_searches": 500}
FIELD_GROUP = {f: g for g, fields in QUOTA_FIELDS.items() for f in fields}
SCOPES = {
    "posts": ("threads_basic", "threads_content_publish"),
    "replies": ("threads_basic", "threads_content_publish", "threads_manage_replies"),
    "deletes": ("threads_basic", "threads_delete"),
    "location_searches": ("threads_basic", "threads_location_tagging"),
}
ALL_SCOPES = ("threads_basic", "threads_content_publish", "threads_manage_replies",
              "threads_delete", "threads_location_tagging")

# Media container lifecycles; the demo cycles through this pattern, so every few minutes it
# shows each outcome: published, failed (each error_message in turn), expired, stuck.
LIFECYCLES = ("publish", "publish", "error", "publish", "expire", "publish", "error", "stuck",
              "publish", "error", "lost", "not_a_container")
# Pseudo statuses of a lifecycle step: the answer is a Graph error, as recorded in production.
LOST = "LOST"  # code 24, subcode 4279009 "Media Not Found" (also seen right after FINISHED)
MEDIA_ID = "MEDIA_ID"  # a published media id registered by mistake: code 100 on `status`
DEMO_APP_TOKEN = "TH|1000000000000|demo-app-secret"  # the demo's app access token
DEMO_API_TOKEN = "demo-api-token"  # the demo's container API token, shown in the banner
DEMO_CONTAINER_SCALE = 0.1  # demo containers process and publish ten times faster
DEMO_CONTAINER_TTL = 600.0  # and expire after 10 minutes instead of 24 hours

# Faults an account can be given, for tests and the benchmark.
FAULTS = ("throttled", "server_error", "html_502", "html_503", "truncated", "empty_data",
          "not_json", "wrong_shape", "slow", "huge", "reset", "permission")


@dataclass
class SimAccount:
    token: str
    user_id: str
    scopes: tuple[str, ...] = ALL_SCOPES
    expired: bool = False
    expires_in: float | None = 60 * DAY  # None: never expires
    load: float = 0.5  # mean share of each quota in use
    swing: float = 0.25  # how far usage rises and falls around the mean
    period: float = 600.0  # seconds for one rise and fall
    phase: float = 0.0
    fault: str | None = None
    slow_seconds: float = 0.0
    dev_mode: bool = False  # its app refuses debug_token asked with the user's own token


@dataclass(frozen=True)
class SimContainer:
    """A media container: IN_PROGRESS at creation, then each step from its time on."""

    id: str
    token: str
    created_at: float
    steps: tuple[tuple[float, str, str | None], ...]  # (seconds after creation, status, msg)

    def status_at(self, now: float) -> tuple[str, str | None]:
        current: tuple[str, str | None] = ("IN_PROGRESS", None)
        for offset, status, message in self.steps:
            if now - self.created_at >= offset:
                current = (status, message)
        return current


def lifecycle(kind: str, n: int, scale: float, ttl: float,
              ) -> tuple[tuple[float, str, str | None], ...]:
    """The steps of the n-th container of a kind; processing and publishing times vary with
    n and shrink with scale. The 24 h expiry (ttl) is not scaled."""
    if kind == "publish":
        processed = (20 + 15 * (n % 5)) * scale
        return ((processed, "FINISHED", None),
                (processed + (30 + 60 * (n % 4)) * scale, "PUBLISHED", None))
    if kind == "error":
        return (((10 + 10 * (n % 4)) * scale, "ERROR", ERROR_MESSAGES[n % len(ERROR_MESSAGES)]),)
    if kind == "expire":
        return ((30 * scale, "FINISHED", None), (ttl, "EXPIRED", None))
    if kind == "stuck":
        return ()
    if kind == "lost":
        processed = (20 + 15 * (n % 5)) * scale
        return ((processed, "FINISHED", None), (processed + 30 * scale, LOST, None))
    if kind == "not_a_container":
        return ((0.0, MEDIA_ID, None),)
    raise ValueError(f"unknown lifecycle {kind!r}")


def error_body(message: str, code: int, *, type_: str = "THApiException",
               subcode: int | None = None, transient: bool | None = None,
               user: tuple[str, str] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"message": message, "type": type_, "code": code}
    if subcode is not None:
        err["error_subcode"] = subcode
    if transient is not None:
        err["is_transient"] = transient
    if user is not None:  # localized texts for the end user, as Meta sends them
        err["error_user_title"], err["error_user_msg"] = user
    err["fbtrace_id"] = "AbCdEfGhIjK"
    return {"error": err}


def usage_at(account: SimAccount, total: int, now: float) -> int:
    share = account.load + account.swing * math.sin(2 * math.pi * (now / account.period
                                                                    + account.phase))
    return max(0, min(total, round(total * share)))


@dataclass
class Simulator:
    accounts: dict[str, SimAccount] = field(default_factory=dict)  # by token
    latency: float = 0.0
    clock: Callable[[], float] = time.time
    calls: dict[str, int] = field(default_factory=dict)  # endpoint -> count
    containers: dict[str, SimContainer] = field(default_factory=dict)
    container_scale: float = 1.0
    container_ttl: float = DAY
    app_tokens: set[str] = field(default_factory=lambda: {DEMO_APP_TOKEN})
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _kinds: dict[str, int] = field(default_factory=dict)  # lifecycle -> containers made

    def add(self, account: SimAccount) -> SimAccount:
        self.accounts[account.token] = account
        return account

    def count(self, endpoint: str) -> None:
        with self._lock:
            self.calls[endpoint] = self.calls.get(endpoint, 0) + 1

    # --- request handling (pure: path and query in, status and body out) ---

    def _authenticate(self, path: str, query: dict[str, str],
                      ) -> tuple[list[str], SimAccount] | tuple[int, Any]:
        """(path parts after the version, account), or the error answer."""
        parts = [p for p in path.split("/") if p]
        if len(parts) < 2 or not re.fullmatch(r"v\d+\.\d+", parts[0]):
            return 400, error_body("Unknown path components: " + path, 2500,
                                   type_="OAuthException")
        token = query.get("access_token")
        if not token:
            return 400, error_body("An access token is required to request this resource.",
                                   104, type_="OAuthException")
        account = self.accounts.get(token)
        if account is None:
            return 400, error_body("Invalid OAuth access token - Cannot parse access token",
                                   190, type_="OAuthException")
        if account.expired:
            return 400, error_body("Error validating access token: Session has expired.",
                                   190, type_="OAuthException", subcode=463)
        return parts[1:], account

    def handle(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        if path.rstrip("/").endswith("/debug_token") and query.get("access_token") in \
                self.app_tokens:
            self.count("debug_token")
            return self.debug_token(query.get("input_token", ""), app=True)
        auth = self._authenticate(path, query)
        if isinstance(auth[0], int):
            return auth
        rest, account = auth
        if rest == ["debug_token"]:
            self.count("debug_token")
            return self.debug_token(query.get("input_token", ""), app=False)
        if rest == ["me"]:
            self.count("me")
            return 200, {"id": account.user_id}
        if len(rest) == 2 and rest[1] == "threads_publishing_limit":
            self.count("publishing_limit")
            if rest[0] not in ("me", account.user_id):
                # Recorded: a token reading another user's object gets code 2, which reads
                # like an outage.
                return 500, error_body("An unexpected error has occurred. Please retry your "
                                       "request later.", 2, type_="OAuthException",
                                       transient=True)
            return self.publishing_limit(account, query.get("fields"))
        container = self.containers.get(rest[0]) if len(rest) == 1 else None
        if container is not None and container.token == account.token:
            self.count("container")
            status, message = container.status_at(self.clock())
            if status == LOST:
                return 400, error_body("Media Not Found", 24, subcode=4279009, user=(
                    "Medien nicht gefunden", "Die Medien wurden nicht gefunden."))
            if status == MEDIA_ID:
                return 400, error_body("(#100) Tried accessing nonexisting field (status)", 100)
            body: dict[str, str | None] = {"status": status, "id": container.id}
            if status == "ERROR":
                body["error_message"] = message
            return 200, body
        return 400, error_body(
            f"Unsupported get request. Object with ID '{rest[0]}' does not exist, cannot be "
            "loaded due to missing permissions, or does not support this operation.",
            100, subcode=33)

    def handle_post(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        """POST /{user-id}/threads: create a media container, as publishing pipelines do."""
        auth = self._authenticate(path, query)
        if isinstance(auth[0], int):
            return auth
        rest, account = auth
        if len(rest) != 2 or rest[1] != "threads" or rest[0] not in ("me", account.user_id):
            return 400, error_body(f"Unsupported post request: {path}", 100, subcode=33)
        media_type = query.get("media_type")
        needs = {"VIDEO": "video_url", "IMAGE": "image_url", "TEXT": "text"}.get(media_type or "")
        if needs is None or not query.get(needs):
            return 400, error_body("(#100) The parameter media_type with a matching "
                                   "video_url, image_url or text is required", 100)
        self.count("create_container")
        return 200, {"id": self.create_container(account).id}

    def create_container(self, account: SimAccount, kind: str | None = None) -> SimContainer:
        """A new container of the account; its lifecycle cycles through LIFECYCLES."""
        with self._lock:
            n = len(self.containers)
            kind = kind or LIFECYCLES[n % len(LIFECYCLES)]
            k = self._kinds[kind] = self._kinds.get(kind, 0) + 1
            container = SimContainer(
                id=str(17889615691900000 + n), token=account.token, created_at=self.clock(),
                steps=lifecycle(kind, k - 1, self.container_scale, self.container_ttl))
            self.containers[container.id] = container
        return container

    def publishing_limit(self, account: SimAccount, fields: str | None) -> tuple[int, Any]:
        names = [f for f in (fields or "quota_usage").split(",") if f]
        for name in names:
            if name not in FIELD_GROUP:
                return 400, error_body(f"(#100) Tried accessing nonexisting field ({name})", 100)
        for name in names:
            if any(s not in account.scopes for s in SCOPES[FIELD_GROUP[name]]):
                return 500, error_body("(#10) Application does not have permission for this "
                                       "action", 10)
        now = self.clock()
        row: dict[str, Any] = {}
        for name in names:
            group = FIELD_GROUP[name]
            total = QUOTA_TOTALS[group]
            if name.endswith("config"):
                row[name] = {"quota_total": total, "quota_duration": DAY}
            else:
                row[name] = usage_at(account, total, now)
        return 200, {"data": [row]}

    def debug_token(self, input_token: str, app: bool) -> tuple[int, Any]:
        """debug_token asked with an app token (app) or with a user token."""
        target = self.accounts.get(input_token)
        if target is None:
            return 400, error_body("Invalid OAuth access token - Cannot parse access token",
                                   190, type_="OAuthException")
        if target.dev_mode and not app:
            return 400, error_body("(#100) The App must be in live mode to debug tokens "
                                   "with a user access token", 100, type_="OAuthException")
        now = self.clock()
        expires = 0 if target.expires_in is None else int(now + target.expires_in)
        return 200, {"data": {
            "type": "USER", "application": "threads-exporter-demo",
            "data_access_expires_at": int(now + 90 * DAY), "expires_at": expires,
            "is_valid": not target.expired, "issued_at": int(now - DAY),
            "scopes": list(target.scopes), "user_id": target.user_id,
        }}


def demo_accounts() -> list[tuple[str, SimAccount]]:
    """The demo's accounts: (exporter account name, simulated account)."""
    return [
        # An app in development mode: debug_token answers only with the app access token.
        ("brand", SimAccount("demo-token-brand", "17841400000000001", load=0.45, swing=0.2,
                             expires_in=45 * DAY, dev_mode=True)),
        ("agency", SimAccount("demo-token-agency", "17841400000000002", load=0.86, swing=0.1,
                              period=900, expires_in=3 * DAY)),
        ("support", SimAccount("demo-token-support", "17841400000000003", load=0.2, swing=0.15,
                               phase=0.3, expires_in=None)),
        ("no-delete", SimAccount("demo-token-no-delete", "17841400000000004",
                                 scopes=tuple(s for s in ALL_SCOPES if s != "threads_delete"),
                                 load=0.6, phase=0.6, expires_in=20 * DAY)),
        ("expired", SimAccount("demo-token-expired", "17841400000000005", expired=True)),
    ]


def demo_simulator(latency: float = 0.0) -> Simulator:
    sim = Simulator(latency=latency, container_scale=DEMO_CONTAINER_SCALE,
                    container_ttl=DEMO_CONTAINER_TTL)
    for _, account in demo_accounts():
        sim.add(account)
    return sim

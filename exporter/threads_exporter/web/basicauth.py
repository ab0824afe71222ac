"""HTTP basic auth against bcrypt hashes: cached, bounded in CPU and even in timing."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import threading
from collections import Counter
from collections.abc import Iterable

import bcrypt

__all__ = ["BasicAuth", "bcrypt_problem"]

# Checks remembered, each way. Only right credentials reach the successes, so those hold about
# one entry per user; wrong ones fill the failures, which never push a success out.
SUCCESSES_MAX = 1024
FAILURES_MAX = 4096

# bcrypt releases the GIL. This many checks run at once: enough to use the cores, while a
# flood of wrong passwords queues here (without CPU) and leaves a core for cached checks.
BCRYPT_SLOTS = max(1, min(4, (os.cpu_count() or 2) // 2))

_USABLE_HASH = re.compile(rb"\$2[abxy]\$([0-9]{2})\$[./A-Za-z0-9]{53}")
_BCRYPT_B64 = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def bcrypt_problem(hashed: str) -> str | None:
    """What golang.org/x/crypto/bcrypt.Cost would reject in hashed, or None."""
    b = hashed.encode()
    if len(b) < 59:
        return "too short to be a bcrypt hash"
    if b[0:1] != b"$":
        return "a bcrypt hash starts with '$'"
    if b[1] > ord("2"):
        return f"bcrypt version {chr(b[1])!r} is newer than 2"
    n = 3 if b[2:3] == b"$" else 4
    if not re.fullmatch(rb"[+-]?[0-9]+", b[n:n + 2]):
        return "cannot read the bcrypt cost"
    cost = int(b[n:n + 2])
    if not 4 <= cost <= 31:
        return f"bcrypt cost {cost} is outside 4..31"
    return None


class _Remembered:
    """A bounded set of digests. Lookups take no lock (a dict lookup is atomic), so a cached
    check never waits for anything; adds take a short one and drop the oldest when full."""

    def __init__(self, limit: int) -> None:
        self._keys: dict[bytes, None] = {}
        self._limit = limit
        self._lock = threading.Lock()

    def __contains__(self, key: bytes) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: bytes) -> None:
        with self._lock:
            self._keys[key] = None
            while len(self._keys) > self._limit:
                del self._keys[next(iter(self._keys))]


class BasicAuth:
    """Checks Authorization headers against basic_auth_users (name -> bcrypt hash)."""

    def __init__(self, users: dict[str, bytes], *, bcrypt_slots: int = BCRYPT_SLOTS) -> None:
        self._users = dict(users)
        self._decoy = decoy_hash(self._users.values())
        # Cache keys are keyed digests: no password (nor a plain hash of one) is kept.
        self._key = secrets.token_bytes(32)
        self._successes = _Remembered(SUCCESSES_MAX)
        self._failures = _Remembered(FAILURES_MAX)
        self._bcrypt = threading.BoundedSemaphore(bcrypt_slots)

    def __repr__(self) -> str:
        return f"BasicAuth({len(self._users)} users)"

    def cached(self, authorization: str | None) -> bool | None:
        """The verdict without any bcrypt work: from the caches, or for a header that is no
        basic credential at all; None when only bcrypt can tell (call authorized())."""
        credentials = _parse_basic(authorization)
        if credentials is None:
            return False
        user, password = credentials
        key = self._digest(user, password, self._hash_of(user)[0])
        if key in self._successes:
            return True
        if key in self._failures:
            return False
        return None

    def authorized(self, authorization: str | None) -> bool:
        credentials = _parse_basic(authorization)
        if credentials is None:
            return False
        user, password = credentials
        hashed, known = self._hash_of(user)
        key = self._digest(user, password, hashed)
        # Both caches are read before any lock or semaphore: a scrape with cached credentials
        # costs two dict lookups however much bcrypt work other clients have queued.
        if key in self._successes:
            return True
        if key in self._failures:
            return False
        with self._bcrypt:
            ok = self._checkpw(password.encode(), hashed) and known
        (self._successes if ok else self._failures).add(key)
        return ok

    def _hash_of(self, user: str) -> tuple[bytes, bool]:
        """user's hash, or the decoy for an unknown user, which costs the same bcrypt work."""
        hashed, known = self._decoy, False
        for name, h in self._users.items():  # every name compared: no early exit on a match
            if hmac.compare_digest(name.encode(), user.encode()):
                hashed, known = h, True
        return hashed, known

    def _digest(self, user: str, password: str, hashed: bytes) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (user.encode(), password.encode(), hashed):
            mac.update(len(part).to_bytes(8, "big") + part)  # lengths: no two splits collide
        return mac.digest()

    def _checkpw(self, password: bytes, hashed: bytes) -> bool:
        try:
            return bcrypt.checkpw(password, hashed)
        except ValueError:
            # A hash Go accepts but this bcrypt cannot use, or a password longer than
            # bcrypt's 72 bytes: refused, after the usual work, so timing does not say which.
            bcrypt.checkpw(password[:72], self._decoy)
            return False


def decoy_hash(hashes: Iterable[bytes]) -> bytes:
    """A hash that matches no password, at the users' most common cost: checking a password
    against it takes as long as checking a wrong password of a real user."""
    costs = Counter(int(m.group(1)) for h in hashes if (m := _USABLE_HASH.fullmatch(h)))
    usable = {c: n for c, n in costs.items() if 4 <= c <= 31}
    cost = max(usable, key=lambda c: (usable[c], c)) if usable else 10
    # A random 31-character digest after a real salt: well-formed, no password can match it,
    # and building it costs no bcrypt work.
    digest = "".join(secrets.choice(_BCRYPT_B64) for _ in range(31))
    return bcrypt.gensalt(rounds=cost) + digest.encode()


def _parse_basic(authorization: str | None) -> tuple[str, str] | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None

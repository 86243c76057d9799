"""Rate limits: token buckets per connection (frames), per user (frames, shared by all of the
user's sessions) and per client address (new connections); and the limits on anonymous
authentication work (``LoginLimits``: password attempts, failed logins per account, encrypted
LOGINs). The clock is passed in.

The connection's frame budget is applied by the adapter (``tcp.py``): frames over it are held
and reading pauses; what cannot be served within ``rate_limit_grace`` is refused RATE_LIMITED.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from ..config import Settings

__all__ = ["TokenBucket", "UserBucket", "RateLimits", "LoginLimits", "address_key"]

K = TypeVar("K")
V = TypeVar("V")


class TokenBucket:
    """A token bucket: ``tokens`` as of ``at``; the rate and size are the caller's settings.

    ``tokens`` may go below 0: tokens reserved ahead (``tcp.TcpConnection._limit``).
    """

    __slots__ = ("tokens", "at")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.at = now

    def refill(self, now: float, rate: float, burst: float) -> float:
        """Add what ``rate`` gave since the last refill, up to ``burst``; the tokens now."""
        tokens = self.tokens + (now - self.at) * rate
        self.at = now
        self.tokens = tokens = tokens if tokens < burst else burst
        return tokens

    def full(self, now: float, rate: float, burst: float) -> bool:
        """Whether it would be full by ``now`` (nothing left to remember)."""
        return self.tokens + (now - self.at) * rate >= burst


class UserBucket(TokenBucket):
    """The frame token bucket that all online sessions of one user share."""

    __slots__ = ("sessions",)

    def __init__(self, tokens: float, now: float) -> None:
        super().__init__(tokens, now)
        self.sessions = 0


class RateLimits:
    """The server's buckets: per client address and per user; the settings as floats."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # hot-path copies of settings
        self.rate = float(settings.rate_per_connection)
        self.burst = float(settings.burst_per_connection)
        self.user_rate = float(settings.rate_per_user)
        self.user_burst = float(settings.burst_per_user)
        self._ip_buckets: dict[str, TokenBucket] = {}
        self._user_buckets: dict[int, UserBucket] = {}
        self._offline_buckets: dict[int, None] = {}  # users whose last session ended
        #: password attempts and encrypted LOGINs (``LoginLimits``), swept with the rest
        self.login = LoginLimits(settings)

    def allow_new_connection(self, ip: str, now: float) -> bool:
        """Per-address token bucket on new connections (``conn_rate_per_ip``)."""
        rate = self.settings.conn_rate_per_ip
        if not rate:
            return True
        burst = float(self.settings.conn_burst_per_ip)
        bucket = self._ip_buckets.get(ip)
        if bucket is None:
            bucket = self._ip_buckets[ip] = TokenBucket(burst, now)
        if bucket.refill(now, rate, burst) < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def user_bucket(self, user_id: int, now: float) -> UserBucket:
        """The rate bucket of a user's online sessions, made full for the first of them."""
        bucket = self._user_buckets.get(user_id)
        if bucket is None:
            bucket = self._user_buckets[user_id] = UserBucket(self.user_burst, now)
        bucket.sessions += 1
        self._offline_buckets.pop(user_id, None)
        return bucket

    def release_user_bucket(self, user_id: int) -> None:
        """A session of the user ended. The bucket stays until the sweep finds it unused and
        full again, so that reconnecting does not refill it."""
        bucket = self._user_buckets.get(user_id)
        if bucket is not None:
            bucket.sessions -= 1
            if bucket.sessions <= 0:
                self._offline_buckets[user_id] = None

    def user_bucket_count(self) -> int:
        return len(self._user_buckets)

    def sweep(self, now: float) -> None:
        """Forget addresses and offline users whose bucket is full again."""
        s = self.settings
        self.login.sweep(now)
        if self._ip_buckets:
            rate, burst = s.conn_rate_per_ip, s.conn_burst_per_ip
            for ip, bucket in list(self._ip_buckets.items()):
                if not rate or bucket.full(now, rate, burst):
                    del self._ip_buckets[ip]
        if self._offline_buckets:
            urate, uburst = self.user_rate, self.user_burst
            for uid in list(self._offline_buckets):
                ub = self._user_buckets.get(uid)
                if ub is None or (ub.sessions <= 0 and ub.full(now, urate, uburst)):
                    self._user_buckets.pop(uid, None)
                    del self._offline_buckets[uid]


# ---- authentication (issue 10) -----------------------------------------------------------------

#: entries each table of ``LoginLimits`` keeps at most (the oldest is forgotten first)
MAX_TRACKED = 100_000
#: entries ``LoginLimits.sweep`` looks at per table per call (a one-second sweep)
SWEEP_STEP = 500
#: addresses and devices remembered per account as having logged in to it
KNOWN_PER_ACCOUNT = 16
#: how long such a success keeps an address or device known, seconds
KNOWN_TTL = 30 * 86400.0
#: how long consecutive failures of one (account, address) pair are remembered, seconds
FAILURE_MEMORY = 900.0


def address_key(address: str) -> str:
    """The key of a client address for the per-address limits: an IPv4 address as is (also
    when IPv4-mapped), an IPv6 address by its /64 (one subscriber's allocation), anything
    else verbatim."""
    try:
        addr = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def _digest(text: str) -> bytes:
    """16 bytes for a key of any length (login names are up to 320 characters)."""
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class _Table(OrderedDict[K, V]):
    """A bounded map: inserting past ``MAX_TRACKED`` forgets the oldest entry; ``sweep``
    looks at ``SWEEP_STEP`` entries from the front, dropping stale ones and moving the rest
    to the back, so one call costs the same at any size."""

    def put(self, key: K, value: V) -> V:
        if len(self) >= MAX_TRACKED:
            self.popitem(last=False)
        self[key] = value
        return value

    def sweep(self, stale: Callable[[V], bool]) -> None:
        for _ in range(min(SWEEP_STEP, len(self))):
            key, value = self.popitem(last=False)
            if not stale(value):
                self[key] = value


class _Failures:
    """Consecutive failed logins of one (account, address) pair and when it may try again."""

    __slots__ = ("count", "last", "until")

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0
        self.until = 0.0


class _Account:
    """One account's bucket of failures (all addresses) and the clients known to it."""

    __slots__ = ("bucket", "known")

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket
        #: "a:<address key>" / "d:<device id>" -> when it last logged in, oldest first (made
        #: at the first success: most accounts in the table only ever failed)
        self.known: OrderedDict[str, float] | None = None


class LoginLimits:
    """Limits on anonymous authentication work (docs/operations.md, "Password logins"):

    - per client address, a token bucket on password attempts (login and register:
      ``login_rate_per_ip``) and one on encrypted LOGINs (``encrypted_login_rate_per_ip``);
    - per (account, address), after ``login_free_failures`` consecutive failures each
      further attempt waits 1 s, doubling up to ``login_backoff_max``; a success resets it;
    - per account, a bucket of failures from all addresses (``account_fail_rate``): while it
      is empty, only addresses and devices that have logged in to the account before may try
      its password. An attacker can therefore not lock a victim out of the places she logs in
      from, and a new place is refused only while the failures keep coming: one token refills
      1 / ``account_fail_rate`` seconds after they stop.

    The routes key an account by its user id when the login name exists (its username and
    email share one budget) and by the name as typed otherwise: names that do not exist are
    limited alike, so the answers do not tell which exist. Every table is bounded
    (``MAX_TRACKED``) and swept a step per second. The clock (``now``) is the loop's.
    """

    def __init__(self, settings: Settings) -> None:
        s = settings
        self.rate = float(s.login_rate_per_ip)
        self.burst = float(s.login_burst_per_ip)
        self.rsa_rate = float(s.encrypted_login_rate_per_ip)
        self.rsa_burst = float(s.encrypted_login_burst_per_ip)
        self.free_failures = s.login_free_failures
        self.backoff_max = float(s.login_backoff_max)
        self.account_rate = float(s.account_fail_rate)
        self.account_burst = float(s.account_fail_burst)
        self._ips: _Table[str, TokenBucket] = _Table()
        self._rsa: _Table[str, TokenBucket] = _Table()
        # keyed by digests: (account, address key) and account
        self._pairs: _Table[bytes, _Failures] = _Table()
        self._accounts: _Table[bytes, _Account] = _Table()
        #: what was refused, by reason ("address", "backoff", "account", "encrypted")
        self.refused: dict[str, int] = dict.fromkeys(
            ("address", "backoff", "account", "encrypted"), 0
        )

    @staticmethod
    def _take(
        table: _Table[str, TokenBucket], key: str, now: float, rate: float, burst: float
    ) -> bool:
        bucket = table.get(key)
        if bucket is None:
            bucket = table.put(key, TokenBucket(burst, now))
        if bucket.refill(now, rate, burst) < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def allow_encrypted_login(self, address: str, now: float) -> bool:
        """Take a token for one encrypted LOGIN from ``address`` (False: refuse it)."""
        if not self.rsa_rate:
            return True
        if self._take(self._rsa, address_key(address), now, self.rsa_rate, self.rsa_burst):
            return True
        self.refused["encrypted"] += 1
        return False

    def admit(
        self, address: str, account: str | None, device_id: str, now: float
    ) -> tuple[str, bool]:
        """Whether a password attempt may run now: ("", known) if so (it took its address
        token; ``known``: the address or device has logged in to the account), or which
        limit refuses it ("address", "backoff", "account")."""
        key = address_key(address)
        known = False
        if account is not None:
            pair = self._pairs.get(_digest(account + "\n" + key))
            if pair is not None and pair.until > now:
                return self._refuse("backoff")
            state = self._accounts.get(_digest(account))
            if state is not None:
                known = self._known(state, key, device_id, now)
                if (
                    not known
                    and self.account_rate
                    and state.bucket.refill(now, self.account_rate, self.account_burst) < 1.0
                ):
                    return self._refuse("account")
        if self.rate and not self._take(self._ips, key, now, self.rate, self.burst):
            return self._refuse("address")
        return "", known

    def _refuse(self, reason: str) -> tuple[str, bool]:
        self.refused[reason] += 1
        return reason, False

    @staticmethod
    def _known(state: _Account, key: str, device_id: str, now: float) -> bool:
        known = state.known
        if not known:
            return False
        for client in ("a:" + key, "d:" + device_id):
            at = known.get(client)
            if at is not None and now - at < KNOWN_TTL:
                return True
        return False

    def failed(self, address: str, account: str, now: float) -> None:
        """A password login of ``account`` from ``address`` failed."""
        pair_key = _digest(account + "\n" + address_key(address))
        pair = self._pairs.get(pair_key)
        if pair is None:
            pair = self._pairs.put(pair_key, _Failures())
        pair.count += 1
        pair.last = now
        over = pair.count - self.free_failures
        if over > 0:
            pair.until = now + min(self.backoff_max, 2.0 ** min(over - 1, 30))
        if self.account_rate:
            state = self._account(account, now)
            state.bucket.refill(now, self.account_rate, self.account_burst)
            state.bucket.tokens = max(0.0, state.bucket.tokens - 1.0)

    def succeeded(self, address: str, account: str, device_id: str, now: float) -> None:
        """A password login of ``account`` from ``address`` and ``device_id`` succeeded."""
        key = address_key(address)
        self._pairs.pop(_digest(account + "\n" + key), None)
        state = self._account(account, now)
        known = state.known
        if known is None:
            known = state.known = OrderedDict()
        for client in ("a:" + key, "d:" + device_id):
            known.pop(client, None)
            if len(known) >= KNOWN_PER_ACCOUNT:
                known.popitem(last=False)
            known[client] = now

    def _account(self, account: str, now: float) -> _Account:
        digest = _digest(account)
        state = self._accounts.get(digest)
        if state is None:
            state = self._accounts.put(digest, _Account(TokenBucket(self.account_burst, now)))
        return state

    def sizes(self) -> dict[str, int]:
        return {
            "addresses": len(self._ips),
            "encrypted_addresses": len(self._rsa),
            "pairs": len(self._pairs),
            "accounts": len(self._accounts),
        }

    def sweep(self, now: float) -> None:
        """Forget, a step at a time, what no longer limits anything."""
        rate, burst = self.rate, self.burst
        self._ips.sweep(lambda b: not rate or b.full(now, rate, burst))
        rsa_rate, rsa_burst = self.rsa_rate, self.rsa_burst
        self._rsa.sweep(lambda b: not rsa_rate or b.full(now, rsa_rate, rsa_burst))
        self._pairs.sweep(lambda p: p.until <= now and now - p.last > FAILURE_MEMORY)
        account_rate, account_burst = self.account_rate, self.account_burst

        def stale(state: _Account) -> bool:
            known = state.known
            while known and now - next(iter(known.values())) >= KNOWN_TTL:
                known.popitem(last=False)
            if known is not None and not known:
                state.known = known = None
            return not known and (
                not account_rate or state.bucket.full(now, account_rate, account_burst)
            )

        self._accounts.sweep(stale)

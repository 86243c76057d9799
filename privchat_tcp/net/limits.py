"""Rate limits: token buckets per connection (frames), per user (frames, shared by all of the
user's sessions) and per client address (new connections). The clock is passed in.

The connection's frame budget is applied by the adapter (``tcp.py``): frames over it are held
and reading pauses; what cannot be served within ``rate_limit_grace`` is refused RATE_LIMITED.
"""

from __future__ import annotations

from ..config import Settings

__all__ = ["TokenBucket", "UserBucket", "RateLimits"]


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

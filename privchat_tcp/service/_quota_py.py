"""Per-user send quotas, pure Python (the spec of ``ext/_quota_c.pyx``; ``quotas.py`` picks
the twin and says what the rules are)."""

from __future__ import annotations

from collections.abc import Callable

from ..config import Settings
from ..errors import ErrorCode, ServiceError, Status
from .ports import MessageLog

__all__ = ["SendQuota", "SWEEP_INTERVAL"]

SWEEP_INTERVAL = 1.0


class SendQuota:
    def __init__(self, settings: Settings, log: MessageLog, monotonic: Callable[[], float]) -> None:
        self.rate = float(settings.rate_bytes_per_user)
        self.burst = float(settings.burst_bytes_per_user)
        self.stored_limit = settings.max_stored_bytes_per_user
        self._log = log
        self._monotonic = monotonic
        #: user id -> [tokens, as of]; only users whose bucket is not full (swept)
        self._buckets: dict[int, list[float]] = {}
        self._swept = monotonic()
        self._sweep_at = self._swept + SWEEP_INTERVAL  # the next ``_sweep``
        self._user_bytes = log.user_bytes

    def take(self, user_id: int, nbytes: int) -> None:
        """Admit a message of ``nbytes`` from ``user_id`` (taking its bytes from the bucket),
        or raise ServiceError: TOO_LARGE past the stored quota, RATE_LIMITED past the rate."""
        limit = self.stored_limit
        if limit and self._user_bytes(user_id) + nbytes > limit:
            raise ServiceError(
                ErrorCode.STORAGE_QUOTA_EXCEEDED, "storage quota exceeded", Status.TOO_LARGE
            )
        rate = self.rate
        if not rate:
            return
        now = self._monotonic()
        bucket = self._buckets.get(user_id)
        if bucket is None:  # a full bucket admits any message (it may go into debt)
            self._buckets[user_id] = [self.burst - nbytes, now]
        else:
            burst = self.burst
            tokens = bucket[0] + (now - bucket[1]) * rate
            if tokens > burst:
                tokens = burst
            bucket[1] = now
            if tokens < nbytes and tokens < burst:
                bucket[0] = tokens
                raise ServiceError(ErrorCode.SEND_MESSAGE_TOO_FAST, "sending too fast, retry later")
            bucket[0] = tokens - nbytes
        if now > self._sweep_at:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Forget the buckets that are full again (nothing left to remember)."""
        self._swept = now
        self._sweep_at = now + SWEEP_INTERVAL
        rate, burst = self.rate, self.burst
        for user_id, (tokens, at) in list(self._buckets.items()):
            if tokens + (now - at) * rate >= burst:
                del self._buckets[user_id]

    def bucket_count(self) -> int:
        return len(self._buckets)

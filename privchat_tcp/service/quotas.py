"""Per-user limits on what a user commits with MS and ``sync/submit``.

- A token bucket in message bytes (payload + content), one per user across the user's sessions
  (``rate_bytes_per_user`` per second, ``burst_bytes_per_user`` deep): a message the bucket
  cannot pay for is refused RATE_LIMITED (20009 SendMessageTooFast). A full bucket admits a
  message larger than the whole bucket (the bucket goes into debt and refills), so a burst
  smaller than ``max_body`` does not forbid large messages.
- The bytes the store holds for the user's messages (``MessageLog.user_bytes``) against
  ``max_stored_bytes_per_user``: past it, TOO_LARGE (20606 StorageQuotaExceeded).

The rules only: the clock is passed in (``monotonic``). Per process: several processes behind
a balancer each keep their own buckets (the stored bytes are the store's).

``SendQuota`` is taken once per MS: it has a compiled twin (``ext/_quota_c.pyx``) picked by
``_ext``, the pure one (``_quota_py.py``) its spec; tests drive both with the same clock.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from .._ext import twins
from ._quota_py import SWEEP_INTERVAL

__all__ = ["SendQuota", "SWEEP_INTERVAL", "IMPL", "impl_py", "impl_c"]

_twins = twins("privchat_tcp.service", "quota")
impl_py: ModuleType = _twins.impl_py
impl_c: ModuleType | None = _twins.impl_c
IMPL = _twins.name

if TYPE_CHECKING:
    from ._quota_py import SendQuota
else:
    SendQuota = _twins.impl.SendQuota

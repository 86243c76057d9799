# cython: language_level=3
"""Compiled twin of privchat_tcp/service/_quota_py.py: the same ``SendQuota``, taken once per MS.

The same arithmetic in C doubles (the pure twin's floats are doubles too); the stored-bytes
count is still the store's ``user_bytes`` and the clock the one passed in.
"""

cimport cython

from privchat_tcp.errors import ErrorCode, ServiceError, Status

__all__ = ["SendQuota", "SWEEP_INTERVAL"]

SWEEP_INTERVAL = 1.0
cdef double _SWEEP_INTERVAL = 1.0


@cython.final
cdef class SendQuota:
    cdef public double rate
    cdef public double burst
    cdef public object stored_limit
    cdef object _log
    cdef object _monotonic
    cdef object _user_bytes
    cdef dict _buckets
    cdef double _swept
    cdef double _sweep_at

    def __init__(self, settings, log, monotonic):
        self.rate = float(settings.rate_bytes_per_user)
        self.burst = float(settings.burst_bytes_per_user)
        self.stored_limit = settings.max_stored_bytes_per_user
        self._log = log
        self._monotonic = monotonic
        #: user id -> [tokens, as of]; only users whose bucket is not full (swept)
        self._buckets = {}
        self._swept = monotonic()
        self._sweep_at = self._swept + _SWEEP_INTERVAL
        self._user_bytes = log.user_bytes

    def take(self, user_id, nbytes):
        """Admit a message of ``nbytes`` from ``user_id`` (taking its bytes from the bucket),
        or raise ServiceError: TOO_LARGE past the stored quota, RATE_LIMITED past the rate."""
        cdef double rate, now, tokens, burst, n
        cdef list bucket
        limit = self.stored_limit
        if limit and self._user_bytes(user_id) + nbytes > limit:
            raise ServiceError(
                ErrorCode.STORAGE_QUOTA_EXCEEDED, "storage quota exceeded", Status.TOO_LARGE
            )
        rate = self.rate
        if not rate:
            return
        now = self._monotonic()
        n = nbytes
        found = self._buckets.get(user_id)
        if found is None:  # a full bucket admits any message (it may go into debt)
            self._buckets[user_id] = [self.burst - n, now]
        else:
            bucket = <list>found
            burst = self.burst
            tokens = <double>bucket[0] + (now - <double>bucket[1]) * rate
            if tokens > burst:
                tokens = burst
            bucket[1] = now
            if tokens < n and tokens < burst:
                bucket[0] = tokens
                raise ServiceError(ErrorCode.SEND_MESSAGE_TOO_FAST, "sending too fast, retry later")
            bucket[0] = tokens - n
        if now > self._sweep_at:
            self._sweep(now)

    cdef _sweep(self, double now):
        """Forget the buckets that are full again (nothing left to remember)."""
        cdef double rate = self.rate, burst = self.burst
        self._swept = now
        self._sweep_at = now + _SWEEP_INTERVAL
        for user_id, (tokens, at) in list(self._buckets.items()):
            if tokens + (now - at) * rate >= burst:
                del self._buckets[user_id]

    def bucket_count(self):
        return len(self._buckets)

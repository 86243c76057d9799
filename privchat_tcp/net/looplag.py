"""The event-loop lag probe: how late a timer callback runs, as a histogram on /metrics.

Every ``loop_lag_interval`` seconds a timer is set on the loop (``loop.call_later``) and, when
it runs, the probe records how long after its due time (``time.monotonic()`` when it was set,
plus the interval) it ran: what any callback (a read, a durability release) waits behind
whatever holds the loop (a long turn, a thread holding the GIL, the CPU taken by another thread
or process). The due time is read on the monotonic clock itself, not on the loop's: uvloop's
clock is libuv's, in whole milliseconds of a coarse clock that trails the real one by up to a
tick, which would read as lag. libuv may fire a timer up to a millisecond early; an early
tick counts as no lag. One timer per interval: nothing on the hot path.
"""

from __future__ import annotations

import asyncio
import bisect
import time

from .metrics import LOOP_LAG_BUCKETS, ServerStats

__all__ = ["LoopLagProbe"]


class LoopLagProbe:
    """Counts each tick's lag into ``stats.loop_lag_buckets`` (bounds ``LOOP_LAG_BUCKETS``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float, stats: ServerStats):
        self.loop = loop
        self.interval = interval
        self.stats = stats
        self._when = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self.interval > 0 and self._handle is None:
            self._schedule()

    def _schedule(self) -> None:
        self._when = time.monotonic() + self.interval
        self._handle = self.loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        lag = time.monotonic() - self._when
        if lag < 0.0:
            lag = 0.0
        stats = self.stats
        stats.loop_lag_buckets[bisect.bisect_left(LOOP_LAG_BUCKETS, lag)] += 1
        stats.loop_lag_sum += lag
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

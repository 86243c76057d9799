"""Message ids, pure Python (the spec of ``ext/_ids_c.pyx``; ``ids.py`` picks the twin)."""

from __future__ import annotations

__all__ = ["Snowflake"]


class Snowflake:
    """41-bit ms since 2024-01-01, 5-bit datacenter, 5-bit machine, 12-bit sequence."""

    EPOCH_MS = 1_704_067_200_000

    def __init__(self, datacenter: int, machine: int) -> None:
        self._node = (datacenter << 17) | (machine << 12)
        self._last = 0
        self._seq = 0

    def next(self, now: int) -> int:
        """The next id; ``now`` is the current unix ms.

        Not thread-safe: ids are drawn on the event loop's thread, like every store write."""
        ms = now - self.EPOCH_MS
        if ms <= self._last:
            ms = self._last
            self._seq = (self._seq + 1) & 0xFFF
            if self._seq == 0:  # 4096 ids in one ms: borrow the next ms
                ms += 1
        else:
            self._seq = 0
        self._last = ms
        return (ms << 22) | self._node | self._seq

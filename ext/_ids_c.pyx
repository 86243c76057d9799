# cython: language_level=3
"""Compiled twin of privchat_tcp/service/_ids_py.py: the same snowflakes, in C integers.

An id is 41 bits of ms since 2024-01-01 above 22 bits of node and sequence: it fits a signed
64-bit integer until 2093. A time outside that range (before the epoch, or after 2093) takes
the pure twin's arithmetic on Python integers, so both give the same ids for any time.
"""

cimport cython

__all__ = ["Snowflake"]

cdef long long _EPOCH_MS = 1_704_067_200_000
cdef long long _MS_LIMIT = 1 << 41


@cython.final
cdef class Snowflake:
    """41-bit ms since 2024-01-01, 5-bit datacenter, 5-bit machine, 12-bit sequence."""

    EPOCH_MS = 1_704_067_200_000

    cdef object _node_obj
    cdef long long _node
    cdef object _last
    cdef long long _seq

    def __init__(self, datacenter, machine):
        self._node_obj = (datacenter << 17) | (machine << 12)
        self._node = self._node_obj if 0 <= self._node_obj < (1 << 22) else 0
        self._last = 0
        self._seq = 0

    def next(self, now):
        """The next id; ``now`` is the current unix ms.

        Not thread-safe: ids are drawn on the event loop's thread, like every store write."""
        ms = now - _EPOCH_MS
        if ms <= self._last:
            ms = self._last
            self._seq = (self._seq + 1) & 0xFFF
            if self._seq == 0:  # 4096 ids in one ms: borrow the next ms
                ms += 1
        else:
            self._seq = 0
        self._last = ms
        cdef long long m
        if type(ms) is int and 0 <= ms < _MS_LIMIT and 0 <= self._node_obj < (1 << 22):
            m = ms
            return (m << 22) | self._node | self._seq
        return (ms << 22) | self._node_obj | self._seq

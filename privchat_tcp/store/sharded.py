"""A dict split into many small dicts, so that no single resize stalls the event loop.

A Python dict grows by rebuilding its whole table: at a million entries that one insert takes
about 100 ms on the benchmark machine, at three million about 400 ms, and every session of the
process waits for it. The store's per-message indexes (message id -> record, idempotency keys)
grow by tens of thousands of entries a second under load, so they are kept as ``SHARDS`` dicts
chosen by a mixed hash of the key: each rebuild then touches 1/1024 of the entries.

Each shard keeps insertion order, so a time-ordered index can be swept one shard at a time
(``sweep_shard``) instead of in one pass over everything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["ShardedMap", "SHARDS"]

K = TypeVar("K")
V = TypeVar("V")

SHARD_BITS = 10
SHARDS = 1 << SHARD_BITS
_MIX = 0x9E3779B97F4A7C15  # 2**64 / golden ratio: the high bits of hash * _MIX are well spread
_SHIFT = 64 - SHARD_BITS
_MASK = SHARDS - 1


class ShardedMap(Generic[K, V]):
    """The subset of dict the store uses, over ``SHARDS`` dicts."""

    __slots__ = ("_shards", "_next_sweep")

    def __init__(self) -> None:
        self._shards: list[dict[K, V]] = [{} for _ in range(SHARDS)]
        self._next_sweep = 0

    def _shard(self, key: K) -> dict[K, V]:
        # hash() of an int is the int itself (snowflake ids share their low bits within a
        # millisecond), so mix it; str hashes inside tuple keys are randomized per process
        return self._shards[((hash(key) * _MIX) >> _SHIFT) & _MASK]

    def get(self, key: K) -> V | None:
        return self._shards[((hash(key) * _MIX) >> _SHIFT) & _MASK].get(key)

    def __setitem__(self, key: K, value: V) -> None:
        self._shards[((hash(key) * _MIX) >> _SHIFT) & _MASK][key] = value

    def __getitem__(self, key: K) -> V:
        return self._shard(key)[key]

    def __delitem__(self, key: K) -> None:
        del self._shard(key)[key]

    def __contains__(self, key: object) -> bool:
        return key in self._shards[((hash(key) * _MIX) >> _SHIFT) & _MASK]

    def pop(self, key: K, default: V | None = None) -> V | None:
        return self._shard(key).pop(key, default)

    def __len__(self) -> int:
        return sum(map(len, self._shards))

    def items(self) -> Iterator[tuple[K, V]]:
        for shard in self._shards:
            yield from shard.items()

    def values(self) -> Iterator[V]:
        for shard in self._shards:
            yield from shard.values()

    def sweep_shard(self, stale: Callable[[V], bool]) -> int:
        """Drop the leading entries of the next shard (round robin) while ``stale(value)``:
        for values inserted in time order, that is every expired entry of that shard."""
        shard = self._shards[self._next_sweep]
        self._next_sweep = (self._next_sweep + 1) & _MASK
        drop = []
        for key, value in shard.items():
            if not stale(value):
                break
            drop.append(key)
        for key in drop:
            del shard[key]
        return len(drop)

"""A dict split into many small dicts, so that no single resize stalls the event loop.

A Python dict grows by rebuilding its whole table: at a million entries that one insert takes
about 100 ms on the benchmark machine, at three million about 400 ms, and every session of the
process waits for it. The store's per-message indexes (message id -> record, idempotency keys)
grow by tens of thousands of entries a second under load, so they are kept as ``SHARDS`` dicts
chosen by ``hash(key) % SHARDS``: each rebuild then touches about 1/1000 of the entries. The
count is prime, so snowflake ids (whose low bits repeat from one millisecond to the next)
spread evenly; str hashes inside tuple keys are randomized per process. Hot paths may index
``shards`` themselves (``shards[hash(key) % SHARDS]``) to save the method call.

Each shard keeps insertion order, so a time-ordered index can be swept one shard at a time
(``sweep_shard``) instead of in one pass over everything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["ShardedMap", "SHARDS"]

K = TypeVar("K")
V = TypeVar("V")

SHARDS = 1021  # prime


class ShardedMap(Generic[K, V]):
    """The subset of dict the store uses, over ``SHARDS`` dicts."""

    __slots__ = ("shards", "_next_sweep")

    def __init__(self) -> None:
        self.shards: list[dict[K, V]] = [{} for _ in range(SHARDS)]
        self._next_sweep = 0

    def _shard(self, key: K) -> dict[K, V]:
        return self.shards[hash(key) % SHARDS]

    def get(self, key: K) -> V | None:
        return self.shards[hash(key) % SHARDS].get(key)

    def __setitem__(self, key: K, value: V) -> None:
        self.shards[hash(key) % SHARDS][key] = value

    def __getitem__(self, key: K) -> V:
        return self._shard(key)[key]

    def __delitem__(self, key: K) -> None:
        del self._shard(key)[key]

    def __contains__(self, key: object) -> bool:
        return key in self.shards[hash(key) % SHARDS]

    def pop(self, key: K, default: V | None = None) -> V | None:
        return self._shard(key).pop(key, default)

    def __len__(self) -> int:
        return sum(map(len, self.shards))

    def items(self) -> Iterator[tuple[K, V]]:
        for shard in self.shards:
            yield from shard.items()

    def values(self) -> Iterator[V]:
        for shard in self.shards:
            yield from shard.values()

    def sweep_shard(self, stale: Callable[[V], bool]) -> int:
        """Drop the leading entries of the next shard (round robin) while ``stale(value)``:
        for values inserted in time order, that is every expired entry of that shard."""
        shard = self.shards[self._next_sweep]
        self._next_sweep = (self._next_sweep + 1) % SHARDS
        drop = []
        for key, value in shard.items():
            if not stale(value):
                break
            drop.append(key)
        for key in drop:
            del shard[key]
        return len(drop)

"""The in-memory store's sharded indexes: no single dict resize may stall the loop."""

from __future__ import annotations

from collections import Counter

from privchat_tcp.service import Snowflake
from privchat_tcp.store.base import DedupEntry
from privchat_tcp.store.memory import MemoryStore
from privchat_tcp.store.sharded import SHARDS, ShardedMap


def test_sharded_map_behaves_like_a_dict() -> None:
    m: ShardedMap[int, str] = ShardedMap()
    ref: dict[int, str] = {}
    for i in range(5000):
        m[i * 7] = ref[i * 7] = str(i)
    for i in range(0, 5000, 3):
        del m[i * 7]
        del ref[i * 7]
    assert len(m) == len(ref)
    assert dict(m.items()) == ref
    assert sorted(m.values()) == sorted(ref.values())
    assert m.get(7) == "1" and m[7] == "1" and 7 in m
    assert m.get(0) is None and 0 not in m
    assert m.pop(7) == "1" and m.pop(7) is None


def test_snowflake_ids_spread_over_the_shards() -> None:
    # ids minted in the same millisecond differ only in their low bits: they must not pile up
    ids = Snowflake(1, 1)
    m: ShardedMap[int, None] = ShardedMap()
    n = SHARDS * 50
    for _ in range(n):
        m[ids.next(1_700_000_000_000)] = None
    sizes = [len(s) for s in m._shards]
    assert sum(sizes) == n
    assert max(sizes) < 50 * 3, max(sizes)


def test_tuple_keys_spread_over_the_shards() -> None:
    m: ShardedMap[tuple[int, str, int], int] = ShardedMap()
    for i in range(SHARDS * 20):
        m[(100_000_001, "device", i)] = i
    counts = Counter(len(s) for s in m._shards)
    assert max(len(s) for s in m._shards) < 20 * 3, counts


def test_dedup_sweep_drops_expired_keys_one_shard_per_call() -> None:
    store = MemoryStore()
    for i in range(4000):
        # the first half is old, the second fresh; inserted in time order as the service does
        ts = 1_000 + i if i < 2000 else 10_000_000 + i
        store.dedup_put(7, "dev", i, DedupEntry(i, i + 1, 1, ts))
    dropped = store.dedup_sweep(5_000_000)
    assert 0 <= dropped < 2000  # one shard's share, not everything at once
    for _ in range(SHARDS - 1):
        dropped += store.dedup_sweep(5_000_000)
    assert dropped == 2000
    assert store.dedup_get(7, "dev", 0) is None
    assert store.dedup_get(7, "dev", 1999) is None
    entry = store.dedup_get(7, "dev", 2000)
    assert entry is not None and entry.message_id == 2000
    assert store.stats()["dedup_keys"] == 2000

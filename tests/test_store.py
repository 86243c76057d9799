"""The in-memory store: sharded indexes (no single dict resize may stall the loop) and records
the cyclic GC never walks."""

from __future__ import annotations

import gc
import os
from collections import Counter
from types import ModuleType
from typing import Any

import pytest

from privchat_tcp.harness import Harness
from privchat_tcp.service import _record_py
from privchat_tcp.service import model as base
from privchat_tcp.service.ids import Snowflake
from privchat_tcp.service.model import DedupEntry
from privchat_tcp.session.delivery import push_body
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
    sizes = [len(s) for s in m.shards]
    assert sum(sizes) == n
    assert max(sizes) < 50 * 3, max(sizes)


def test_dedup_keys_spread_over_the_shards() -> None:
    m: ShardedMap[tuple[int, str, int], int] = ShardedMap()
    for i in range(SHARDS * 20):
        m[(100_000_001, "device", i)] = i
    counts = Counter(len(s) for s in m.shards)
    assert max(len(s) for s in m.shards) < 20 * 3, counts


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


REQUIRE_EXT = bool(os.environ.get("PRIVCHAT_REQUIRE_EXT"))
try:
    from privchat_tcp.service import _record_c
except ImportError:
    _record_c = None  # type: ignore[assignment]
RECORD_IMPLS = [
    pytest.param(_record_py, id="py"),
    pytest.param(
        _record_c,
        id="c",
        marks=pytest.mark.skipif(
            _record_c is None and not REQUIRE_EXT,
            reason="_record_c is not built",
        ),
    ),
]
FIELDS: dict[str, Any] = dict(
    pts=3,
    message_id=(1 << 62) + 5,
    channel_id=1001,
    channel_type=2,
    sender_id=100_000_001,
    sender_device="d-1",
    local_message_id=(1 << 64) - 1,
    message_type=4,
    timestamp=1_700_000_000_123,
    payload=b"p",
    content=b"c",
    e2e=True,
    kind=0,
)


@pytest.mark.parametrize("impl", RECORD_IMPLS)
def test_record_twins_behave_alike(impl: ModuleType) -> None:
    assert impl is not None, "PRIVCHAT_REQUIRE_EXT=1 but _record_c did not import"
    r = impl.Record(**FIELDS)
    py = _record_py.Record(**FIELDS)
    for name in (*FIELDS, "revoked", "revoked_by", "revoked_at", "target_message_id"):
        assert getattr(r, name) == getattr(py, name), name
    assert repr(r) == repr(py)
    assert r == impl.Record(*FIELDS.values()) and r != impl.Record(**{**FIELDS, "pts": 4})
    r.pts, r.revoked, r.revoked_by = 9, True, 7
    assert (r.pts, r.revoked, r.revoked_by) == (9, True, 7)
    assert not hasattr(r, "push")  # a record is a value: its push bytes are not kept on it
    with pytest.raises(TypeError):
        hash(r)
    d = impl.DedupEntry(1, 2, 3, 4)
    assert (d.message_id, d.pts, d.channel_id, d.timestamp) == (1, 2, 3, 4)
    assert d == impl.DedupEntry(1, 2, 3, 4) and d != impl.DedupEntry(1, 2, 3, 5)
    assert repr(d) == repr(_record_py.DedupEntry(1, 2, 3, 4))
    big = (1 << 62) + 5
    s = impl.SendResult(big, 2, 3, 4, True)
    assert (s.message_id, s.pts, s.channel_id, s.timestamp, s.duplicate) == (big, 2, 3, 4, True)
    assert s.duplicate is True and impl.SendResult(1, 2, 3, 4, False).duplicate is False
    assert s == impl.SendResult(big, 2, 3, 4, True) and s != impl.SendResult(big, 2, 3, 4, False)
    assert repr(s) == repr(_record_py.SendResult(big, 2, 3, 4, True))
    with pytest.raises(TypeError):
        hash(s)


@pytest.mark.parametrize("impl", RECORD_IMPLS)
def test_the_twins_tell_a_records_own_key_alike(impl: ModuleType) -> None:
    """``own_key``: whether a key and entry are the record's own (the SQLite store keeps such
    a key compact, its message row holding the rest)."""
    assert impl is not None, "PRIVCHAT_REQUIRE_EXT=1 but _record_c did not import"
    r = impl.Record(**FIELDS)
    entry = impl.DedupEntry(r.message_id, r.pts, r.channel_id, r.timestamp)
    key = (r.sender_id, r.sender_device, r.local_message_id)
    assert impl.own_key(r, *key, entry)
    for bad_key in ((r.sender_id + 1, *key[1:]), (key[0], "other", key[2]), (*key[:2], 5)):
        assert not impl.own_key(r, *bad_key, entry)
    for field in range(4):
        values = [entry.message_id, entry.pts, entry.channel_id, entry.timestamp]
        values[field] += 1
        assert not impl.own_key(r, *key, impl.DedupEntry(*values))
    assert not impl.own_key(impl.Record(**{**FIELDS, "kind": 1}), *key, entry)


@pytest.mark.parametrize("impl", RECORD_IMPLS)
def test_the_twins_unindex_messages_alike(impl: ModuleType) -> None:
    """``unindex``: a window's records leave the sharded map of message id to record (the
    messages only; an id not there is skipped)."""
    assert impl is not None, "PRIVCHAT_REQUIRE_EXT=1 but _record_c did not import"
    records = [
        impl.Record(**{**FIELDS, "message_id": (1 << 62) + i, "kind": i % 3 == 2})
        for i in range(30)
    ]
    shards: list[dict[int, Any]] = [{} for _ in range(7)]
    for r in records:
        shards[hash(r.message_id) % 7][r.message_id] = r
    extra = impl.Record(**{**FIELDS, "message_id": 5})
    shards[5 % 7][5] = extra
    impl.unindex(records[:20] + [impl.Record(**{**FIELDS, "message_id": 99})], shards)
    left = {mid for shard in shards for mid in shard}
    assert left == {r.message_id for r in records[20:]} | {
        r.message_id for r in records[:20] if r.kind
    } | {5}


def test_the_compiled_records_stay_out_of_the_gc() -> None:
    if base.Record is _record_py.Record:
        pytest.skip("the pure-Python records are ordinary GC objects")
    assert not gc.is_tracked(base.Record(**FIELDS))
    assert not gc.is_tracked(base.DedupEntry(1, 2, 3, 4))
    assert not gc.is_tracked(base.SendResult(1, 2, 3, 4, False))


def test_committed_messages_leave_nothing_for_the_gc_to_walk() -> None:
    """Each message the store keeps must add no object the cyclic GC tracks (compiled)."""
    if base.Record is _record_py.Record:
        pytest.skip("the pure-Python records are ordinary GC objects")
    h = Harness()
    store = h.store
    service = h.core.services.messages
    a, b = (h.user(f"u{i}") for i in range(2))
    channel, _ = h.core.services.channels.direct(a.user_id, b.user_id)

    def send(local_id: int) -> None:
        service.send(a.user_id, "dev", channel, local_id, 0, b"hi", b"", False, None)

    send(1)  # first-use allocations
    first = store.read_log(channel.channel_id, 0, 1)[0]
    assert push_body(first)  # built from the record when delivered, not stored on it
    gc.collect()
    before = len(gc.get_objects())
    for i in range(5000):
        send(i + 2)
    gc.collect()
    grown = len(gc.get_objects()) - before
    assert store.stats()["messages"] == 5001 and store.stats()["dedup_keys"] == 5001
    assert grown < 100, grown  # not one per message

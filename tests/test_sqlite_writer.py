"""The SQLite writer's batches: one kick per event-loop turn, the hot statements grouped per
table, and every other statement a barrier, so a batch that mixes them leaves each row as the
changes made in order would (checked by a new store on the same directory)."""

from __future__ import annotations

import errno
import os
import pathlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from store_contract import NOW, record

from privchat_tcp.errors import StorageUnavailable
from privchat_tcp.service.model import KIND_REVOKE, DedupEntry
from privchat_tcp.store import sqlite as sqlite_store
from privchat_tcp.store.sharded import SHARDS
from privchat_tcp.store.sqlite import DB_NAME, SQLiteStore


class Turn:
    """Stands in for the event loop: kicks wait until ``end()``; the writer's reports (from its
    thread) wait until ``reports()`` runs them on the test's thread."""

    def __init__(self) -> None:
        self.due: list[Callable[[], None]] = []
        self.reported: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )

    def notify(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.reported.put((fn, args))

    def reports(self) -> None:
        while not self.reported.empty():
            fn, args = self.reported.get()
            fn(*args)

    def schedule(self, fn: Callable[[], None]) -> None:
        self.due.append(fn)

    def end(self) -> int:
        due, self.due = self.due, []
        for fn in due:
            fn()
        return len(due)


def test_one_kick_per_turn_and_one_batch_for_it(tmp_path: pathlib.Path) -> None:
    store = SQLiteStore(tmp_path, window=4)
    turn = Turn()
    store.attach(turn.notify, turn.schedule)
    try:
        g = store.create_group(1, "g", None, [2], NOW, 50).channel_id
        for i in range(50):
            store.commit(record(g, 100 + i))
        assert len(turn.due) == 1  # 50+ writes (a message row each), one kick
        assert store.write_seq > 50
        assert turn.end() == 1
        store.flush()
        turn.reports()
        stats = store.durability_stats()
        assert stats["largest_batch_writes"] == stats["committed_writes_total"] == store.write_seq
        assert sum(store.batch_buckets) == 1  # one transaction for the turn
        store.commit(record(g, 200))
        assert turn.end() == 1  # the next turn's writes kick again
        store.flush()
        turn.reports()
        assert sum(store.batch_buckets) == 2
    finally:
        store.close()


def test_a_mixed_batch_keeps_the_order_of_its_changes(tmp_path: pathlib.Path) -> None:
    store = SQLiteStore(tmp_path, window=4)
    turn = Turn()
    store.attach(turn.notify, turn.schedule)
    g = store.create_group(1, "g", None, [2], NOW, 50).channel_id
    h = store.create_group(1, "h", None, [2], NOW, 50).channel_id
    old, new = NOW * 10, NOW * 20
    for i in range(6):  # messages, their keys and pts, in both channels, interleaved
        store.commit(record(g, 100 + i))
        store.dedup_put(1, "d", 10 + i, DedupEntry(100 + i, i + 1, g, old))
        store.commit(record(h, 300 + i))
    # a revoke of a message of this very batch (an UPDATE after its INSERT), and its event
    store.mark_revoked(g, 102, 1, NOW + 5)
    store.commit(record(g, 400, KIND_REVOKE))
    # a key replaced, the old keys swept, then a key put after the sweep: it must stay
    store.dedup_put(1, "d", 10, DedupEntry(999, 1, g, old))
    for _ in range(SHARDS):  # a shard per call: every shard once
        store.dedup_sweep(old + 1)
    store.dedup_put(1, "d", 77, DedupEntry(105, 6, g, new))
    store.commit(record(g, 106))
    assert turn.end() == 1
    store.flush()
    turn.reports()
    assert sum(store.batch_buckets) == 1
    store.close()

    db = sqlite3.connect(tmp_path / DB_NAME)
    try:
        pts = dict(db.execute("SELECT channel_id, pts FROM channels").fetchall())
        assert pts == {g: 8, h: 6}  # the last pts of each channel, not an earlier one
        keys = db.execute("SELECT local_id, message_id FROM dedup").fetchall()
        assert keys == [("77", 105)]  # the sweep ran after the puts before it, not after 77
    finally:
        db.close()

    again = SQLiteStore(tmp_path, window=4)
    try:
        log_g = again.read_log(g, 0, 100)
        assert [r.pts for r in log_g] == list(range(1, 9))
        assert [r.revoked for r in log_g][:4] == [False, False, True, False]
        assert log_g[6].kind == KIND_REVOKE
        assert [r.pts for r in again.read_log(h, 0, 100)] == list(range(1, 7))
        kept = again.dedup_get(1, "d", 77)
        assert kept is not None and kept.message_id == 105
        assert again.commit(record(g, 500)).pts == 9
    finally:
        again.close()


def test_poll_runs_the_writers_reports_before_the_loop_would(tmp_path: pathlib.Path) -> None:
    """The writer's reports queue for the loop: ``poll`` (before each read) runs them at once,
    in order, and the wake-up the writer scheduled then finds nothing left to run."""
    store = SQLiteStore(tmp_path, window=4)
    turn = Turn()
    store.attach(turn.notify, turn.schedule)
    try:
        g = store.create_group(1, "g", None, [2], NOW, 50).channel_id
        store.commit(record(g, 100))
        released: list[int] = []
        store.when_durable(store.write_seq, lambda: released.append(store.durable_seq))
        assert turn.end() == 1
        assert store._writer.wait_committed(store.write_seq, timeout=30.0)
        while turn.reported.empty():  # (the writer reports just after it marks the commit)
            time.sleep(0.001)
        assert released == [] and store.durable_seq == 0
        assert store.poll is not None
        store.poll()
        assert released == [store.write_seq] == [store.durable_seq]
        commits = store.commits
        turn.reports()  # the loop's own turn: already run
        assert store.commits == commits == 1
        store.poll()  # nothing reported since: nothing runs
        assert store.commits == 1 and released == [store.write_seq]
    finally:
        store.close()


def test_checkpoints_run_off_the_writer_and_the_wal_restarts(
    tmp_path: pathlib.Path, monkeypatch: Any
) -> None:
    """No checkpoint inside a commit (``wal_autocheckpoint=0`` on every connection): the
    checkpointer thread copies the WAL in PASSIVE mode, and once the WAL has grown past
    ``WAL_RESET_FRAMES`` the writer copies the rest between two batches, so the next commit
    starts the WAL from its beginning."""
    monkeypatch.setattr(sqlite_store, "WAL_RESET_FRAMES", 8)
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_INTERVAL", 0.01)
    store = SQLiteStore(tmp_path, window=4)
    try:
        for db in (store._reader, store._checkpointer.db):  # (the writer's: test_batch.py)
            assert db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        g = store.create_group(1, "g", None, [2], NOW, 50).channel_id
        deadline = time.monotonic() + 20
        i = 0
        while store._writer.wal_resets == 0:  # a batch at a time, until the WAL restarted
            assert time.monotonic() < deadline, store.durability_stats()
            for _ in range(20):
                store.commit(record(g, 1000 + i))
                i += 1
            store.flush()
            time.sleep(0.005)
        stats = store.durability_stats()
        assert stats["checkpoints_total"] >= 1 and stats["wal_resets_total"] >= 1
        store.commit(record(g, 1000 + i))
        store.flush()
        # the WAL holds only what came after the restart: a commit or two, not all of them
        store._checkpointer.stop()
        store._checkpointer.join(10)
        busy, frames, done = store._wdb.checkpoint()
        assert busy == 0 and frames < 8 * 4
    finally:
        store.close()
    again = SQLiteStore(tmp_path, window=4)
    try:
        assert [r.pts for r in again.read_log(g, 0, 10_000)] == list(range(1, i + 2))
    finally:
        again.close()


def _until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.002)


def test_full_acknowledges_a_commit_only_after_a_sync_of_the_wal_begun_after_it(
    tmp_path: pathlib.Path, monkeypatch: Any
) -> None:
    """FULL, pipelined: the writer commits without a sync (NORMAL), the syncer fdatasyncs the
    WAL file and only then reports the batches committed before the sync began durable; the
    writer goes on committing meanwhile."""
    real = os.fdatasync
    gate = threading.Event()
    synced: list[tuple[int, int]] = []  # (the synced file's inode, writes committed then)
    store = SQLiteStore(tmp_path, window=4)  # (FULL, the default)
    turn = Turn()
    store.attach(turn.notify, turn.schedule)

    def fdatasync(fd: int) -> None:
        synced.append((os.fstat(fd).st_ino, store._writer.written))
        gate.wait(10)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    try:
        g = store.create_group(1, "g", None, [2], NOW, 50).channel_id
        store.commit(record(g, 100))
        first = store.write_seq
        turn.end()
        _until(lambda: bool(synced), "no sync began")
        # committed to SQLite, the sync under way: not durable, nothing released
        turn.reports()
        assert store._writer.written == first and store.durable_seq == 0
        store.commit(record(g, 101))  # the next batch commits while the sync waits
        turn.end()
        _until(lambda: store._writer.written == store.write_seq, "the writer waited")
        turn.reports()
        assert store.durable_seq == 0
        gate.set()
        store.flush()
        turn.reports()
        assert store.durable_seq == store.write_seq
        wal = (tmp_path / (DB_NAME + "-wal")).stat().st_ino
        assert synced[0] == (wal, first) and all(ino == wal for ino, _ in synced)
        assert store.durability_stats()["wal_syncs_total"] == len(synced) >= 2
    finally:
        gate.set()
        store.close()


def test_a_failed_wal_sync_acknowledges_nothing_and_refuses_writes_until_a_restart(
    tmp_path: pathlib.Path, monkeypatch: Any
) -> None:
    store = SQLiteStore(tmp_path, window=4)
    turn = Turn()
    store.attach(turn.notify, turn.schedule)
    try:
        g = store.create_group(1, "g", None, [2], NOW, 50).channel_id
        store.flush()
        turn.reports()
        durable = store.durable_seq

        def fdatasync(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "fdatasync", fdatasync)
        store.commit(record(g, 100))
        turn.end()
        _until(lambda: store._syncer is not None and store._syncer.dead is not None, "no sync")
        turn.reports()
        assert store.failing and store.durable_seq == durable
        with pytest.raises(StorageUnavailable):
            store.commit(record(g, 101))
        monkeypatch.setattr(os, "fdatasync", os.fsync)  # (the disk is back: still refused)
        with pytest.raises(StorageUnavailable):
            store.create_group(1, "h", None, [2], NOW, 50)
    finally:
        store.close()
    again = SQLiteStore(tmp_path, window=4)  # a restart: what reached the disk, writable
    try:
        assert not again.failing
        again.commit(record(g, 102))
        again.flush()
    finally:
        again.close()


def test_normal_commits_without_a_syncer(tmp_path: pathlib.Path) -> None:
    store = SQLiteStore(tmp_path, synchronous="NORMAL", window=4)
    try:
        g = store.create_group(1, "g", None, [2], NOW, 50).channel_id
        store.commit(record(g, 100))
        store.flush()
        assert store._syncer is None and store.durability_stats()["wal_syncs_total"] == 0
        assert store.durable_seq == store.write_seq
    finally:
        store.close()

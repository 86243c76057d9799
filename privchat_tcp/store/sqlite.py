"""The embedded store: SQLite in WAL mode under a working set in memory (the default).

Everything the in-memory store keeps is applied to the same in-memory structures at once (the
event loop never waits on SQLite) and queued as a statement for the writer thread, which
commits everything queued so far in one transaction (group commit: one fsync per batch, however
many writes the loop's turns queued meanwhile; with FULL, the syncer thread's fdatasync of the
WAL makes each batch durable while the writer commits the next, ``_Syncer``). Writes are
numbered (``write_seq``); ``durable_seq`` is reported back to the loop, which then releases
the output held on it (``Durability.when_durable``): acknowledged means durable.

Memory stays bounded as history grows: each channel keeps its last ``window`` records in
memory; ``read_log`` of older history reads the database (``load_log`` does it off the loop, on
a reader thread with its own connection). Start-up loads accounts, channels, members, cursors,
unexpired revocations and dedup keys, and each channel's window.

Faults: a failing commit (disk full, I/O error) is rolled back and retried with backoff, never
dropped; while it fails, new writes are refused with ``StorageUnavailable`` (BUSY) and nothing
held on the failed writes is released, so nothing is acknowledged that is not durable; reads and
PING keep working. The data directory is locked (one server per directory); a database of a
newer schema, or one that is corrupt or unreadable, is refused with ``StoreOpenError``.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import dataclasses
import fcntl
import heapq
import json
import logging
import os
import pathlib
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import PrivchatError, StorageUnavailable
from ..service.model import (
    KIND_MESSAGE,
    KIND_REVOKE,
    Broadcast,
    BroadcastPost,
    Channel,
    ChannelPrefs,
    DedupEntry,
    DeviceRecord,
    FileRecord,
    FriendRequest,
    GroupQR,
    JoinRequest,
    Member,
    QRCode,
    Record,
    User,
    own_key,
    unindex,
)
from ._sql import INSERT_DEDUP, INSERT_MESSAGE, committed_row, connect
from .batch import WriterDB
from .memory import RECORD_BYTES, MemoryStore
from .sharded import SHARDS, ShardedMap

__all__ = ["SQLiteStore", "StoreOpenError", "SCHEMA_VERSION", "DB_NAME", "backup"]

log = logging.getLogger("privchat_tcp.store")

DB_NAME = "privchat.db"
LOCK_NAME = "privchat.lock"
#: 1: a dedup row per idempotency key. 2: a message's key is its own row's (sender_id,
#: sender_device, local_message_id), rebuilt from ``messages`` at start; ``dedup`` holds only
#: the keys no message row implies (``dedup_put`` of an entry that is not the record's own).
#: 3: ``messages`` is a rowid table (rows appended in commit order, a unique index on
#: (channel_id, pts)) instead of one clustered on (channel_id, pts): a commit writes its new
#: rows into the last pages, not into a page per channel it touches (about a third fewer
#: bytes on disk, and of WAL written per commit)
SCHEMA_VERSION = 3

#: the columns of ``messages`` (schema 3) and its one constraint
_MESSAGES_TABLE = """(
    channel_id INTEGER NOT NULL, pts INTEGER NOT NULL, message_id INTEGER NOT NULL,
    channel_type INTEGER NOT NULL, sender_id INTEGER NOT NULL, sender_device TEXT NOT NULL,
    local_message_id TEXT NOT NULL, message_type INTEGER NOT NULL, timestamp INTEGER NOT NULL,
    payload BLOB NOT NULL, content BLOB NOT NULL, e2e INTEGER NOT NULL, kind INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0, revoked_by INTEGER NOT NULL DEFAULT 0,
    revoked_at INTEGER NOT NULL DEFAULT 0, target_message_id INTEGER NOT NULL DEFAULT 0,
    UNIQUE (channel_id, pts))"""

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    user_id INTEGER PRIMARY KEY, username TEXT NOT NULL, password_hash TEXT NOT NULL,
    nickname TEXT NOT NULL, phone TEXT, email TEXT, avatar_url TEXT,
    user_type INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS logins (login TEXT PRIMARY KEY, user_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS revoked (jti TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS channels (
    channel_id INTEGER PRIMARY KEY, channel_type INTEGER NOT NULL, created_at INTEGER NOT NULL,
    name TEXT NOT NULL, description TEXT, avatar_url TEXT, owner_id INTEGER NOT NULL,
    updated_at INTEGER NOT NULL, all_muted INTEGER NOT NULL, max_members INTEGER NOT NULL,
    pts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS directs (
    a INTEGER NOT NULL, b INTEGER NOT NULL, channel_id INTEGER NOT NULL, PRIMARY KEY (a, b));
CREATE TABLE IF NOT EXISTS members (
    channel_id INTEGER NOT NULL, user_id INTEGER NOT NULL, role INTEGER NOT NULL,
    joined_at INTEGER NOT NULL, mute_until INTEGER NOT NULL DEFAULT 0, seq INTEGER NOT NULL,
    PRIMARY KEY (channel_id, user_id));
CREATE TABLE IF NOT EXISTS messages """
    + _MESSAGES_TABLE
    + """;
CREATE INDEX IF NOT EXISTS messages_by_id ON messages (message_id);
CREATE TABLE IF NOT EXISTS dedup (
    sender INTEGER NOT NULL, device TEXT NOT NULL, local_id TEXT NOT NULL,
    message_id INTEGER NOT NULL, pts INTEGER NOT NULL, channel_id INTEGER NOT NULL,
    timestamp INTEGER NOT NULL, PRIMARY KEY (sender, device, local_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_by_time ON dedup (timestamp);
CREATE TABLE IF NOT EXISTS entities (
    family TEXT NOT NULL, entity_id TEXT NOT NULL, version INTEGER NOT NULL,
    deleted INTEGER NOT NULL, PRIMARY KEY (family, entity_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS acks (
    user_id INTEGER NOT NULL, device_id TEXT NOT NULL, channel_id INTEGER NOT NULL,
    pts INTEGER NOT NULL, PRIMARY KEY (user_id, device_id, channel_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_docs (
    user_id INTEGER NOT NULL, kind TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (user_id, kind)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS friend_requests (
    from_id INTEGER NOT NULL, to_id INTEGER NOT NULL, message TEXT, source TEXT, source_id TEXT,
    created_at INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (from_id, to_id));
CREATE TABLE IF NOT EXISTS friends (
    a INTEGER NOT NULL, b INTEGER NOT NULL, since INTEGER NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (a, b));
CREATE TABLE IF NOT EXISTS blacklist (
    user_id INTEGER NOT NULL, target_id INTEGER NOT NULL, blocked_at INTEGER NOT NULL,
    seq INTEGER NOT NULL, PRIMARY KEY (user_id, target_id));
CREATE TABLE IF NOT EXISTS qrcodes (
    qr_key TEXT PRIMARY KEY, qr_type TEXT NOT NULL, target_id INTEGER NOT NULL,
    creator_id INTEGER NOT NULL, token TEXT NOT NULL, created_at INTEGER NOT NULL,
    expire_at INTEGER NOT NULL, max_usage INTEGER NOT NULL, used_count INTEGER NOT NULL,
    revoked_at INTEGER NOT NULL, metadata TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS search_sessions (
    session_id INTEGER PRIMARY KEY, searcher_id INTEGER NOT NULL, target_id INTEGER NOT NULL,
    expires_at INTEGER NOT NULL);
-- groups and messages (issue 12): group settings beyond the channels row, join pts,
-- join requests, QR codes, read positions, reactions, revoke counts
CREATE TABLE IF NOT EXISTS group_settings (
    channel_id INTEGER PRIMARY KEY, join_need_approval INTEGER NOT NULL,
    member_can_invite INTEGER NOT NULL, announcement TEXT, dissolved INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS member_join (
    channel_id INTEGER NOT NULL, user_id INTEGER NOT NULL, join_pts INTEGER NOT NULL,
    PRIMARY KEY (channel_id, user_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS join_requests (
    request_id INTEGER PRIMARY KEY, group_id INTEGER NOT NULL, user_id INTEGER NOT NULL,
    inviter_id INTEGER NOT NULL, qr_key TEXT NOT NULL, message TEXT,
    created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, status INTEGER NOT NULL,
    handled_by INTEGER NOT NULL, handled_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS group_qr (
    qr_key TEXT PRIMARY KEY, group_id INTEGER NOT NULL, token TEXT NOT NULL,
    creator_id INTEGER NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reads (
    user_id INTEGER NOT NULL, channel_id INTEGER NOT NULL, pts INTEGER NOT NULL,
    read_at INTEGER NOT NULL, PRIMARY KEY (user_id, channel_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reactions (
    message_id INTEGER NOT NULL, emoji TEXT NOT NULL, user_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL, UNIQUE (message_id, emoji, user_id));
CREATE TABLE IF NOT EXISTS revoke_counts (channel_id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
"""
)

#: the tables added after the first release of the schema, created on opening an older store
_FILES_DEVICES_SCHEMA = """
-- files and devices (issue 12): file metadata (the bytes are DATA_DIR/files/<id>), devices,
-- when each user was last seen online
CREATE TABLE IF NOT EXISTS files (
    file_id INTEGER PRIMARY KEY, owner_id INTEGER NOT NULL, filename TEXT NOT NULL,
    mime_type TEXT NOT NULL, file_type TEXT NOT NULL, business_type TEXT NOT NULL,
    max_size INTEGER NOT NULL, token_hash TEXT NOT NULL, expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL, status INTEGER NOT NULL, size INTEGER NOT NULL,
    sha256 TEXT NOT NULL, access_hash TEXT NOT NULL, uploaded_at INTEGER NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    user_id INTEGER NOT NULL, device_id TEXT NOT NULL, doc TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS last_seen (user_id INTEGER PRIMARY KEY, at INTEGER NOT NULL);
"""

# channels (issue 12): per-user preferences, direct channels' sources, broadcast channels. Also
# run on opening a store made before these tables (CREATE ... IF NOT EXISTS)
_CHANNEL_SCHEMA = """
CREATE TABLE IF NOT EXISTS channel_prefs (
    user_id INTEGER NOT NULL, channel_id INTEGER NOT NULL, pinned_at INTEGER NOT NULL,
    muted INTEGER NOT NULL, hidden_pts INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, channel_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS direct_sources (
    channel_id INTEGER PRIMARY KEY, source TEXT NOT NULL, source_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS broadcasts (
    channel_id INTEGER PRIMARY KEY, owner_id INTEGER NOT NULL, name TEXT NOT NULL,
    description TEXT, avatar_url TEXT, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS broadcast_subs (
    channel_id INTEGER NOT NULL, user_id INTEGER NOT NULL, subscribed_at INTEGER NOT NULL,
    PRIMARY KEY (channel_id, user_id));
CREATE TABLE IF NOT EXISTS broadcast_posts (
    content_id INTEGER PRIMARY KEY, channel_id INTEGER NOT NULL, author_id INTEGER NOT NULL,
    content TEXT NOT NULL, title TEXT, content_type TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS broadcast_posts_by_channel ON broadcast_posts (channel_id, content_id);
"""
_SCHEMA += _FILES_DEVICES_SCHEMA + _CHANNEL_SCHEMA

_MESSAGE_COLUMNS_V3 = (
    "channel_id, pts, message_id, channel_type, sender_id, sender_device, local_message_id,"
    " message_type, timestamp, payload, content, e2e, kind, revoked, revoked_by, revoked_at,"
    " target_message_id"
)

# older schema version -> the statements that bring it to the next one
_MIGRATIONS: dict[int, str] = {
    # 1 -> 2: drop the dedup rows that their message row now implies (``_IMPLIED_KEYS``)
    1: """
DELETE FROM dedup WHERE EXISTS (
    SELECT 1 FROM messages m WHERE m.channel_id = dedup.channel_id AND m.pts = dedup.pts
    AND m.kind = 0 AND m.message_id = dedup.message_id AND m.sender_id = dedup.sender
    AND m.sender_device = dedup.device AND m.local_message_id = dedup.local_id
    AND m.timestamp = dedup.timestamp);
""",
    # 2 -> 3: ``messages`` rebuilt as a rowid table, its rows in commit (message id) order
    2: f"""
CREATE TABLE messages_v3 {_MESSAGES_TABLE};
INSERT INTO messages_v3 ({_MESSAGE_COLUMNS_V3}) SELECT {_MESSAGE_COLUMNS_V3} FROM messages
    ORDER BY message_id;
DROP TABLE messages;
ALTER TABLE messages_v3 RENAME TO messages;
CREATE INDEX messages_by_id ON messages (message_id);
""",
}

#: the idempotency keys the message rows imply (schema 2); the dedup rows' own, in time order
_IMPLIED_KEYS = (
    "SELECT sender_id, sender_device, local_message_id, message_id, timestamp FROM messages"
    " WHERE kind = 0 AND local_message_id != '0' AND timestamp >= ?"
)
_DEDUP_KEYS = (
    "SELECT sender, device, local_id, message_id, pts, channel_id, timestamp FROM dedup"
    " WHERE timestamp >= ? ORDER BY timestamp"
)
_MID_BITS = 64  # a compact key's value: timestamp << 64 | message_id
_MID_MASK = (1 << _MID_BITS) - 1

_INSERT_MESSAGE = INSERT_MESSAGE
_INSERT_DEDUP = INSERT_DEDUP


_MESSAGE_COLUMNS = (
    "pts, message_id, channel_id, channel_type, sender_id, sender_device, local_message_id,"
    " message_type, timestamp, payload, content, e2e, kind, revoked, revoked_by, revoked_at,"
    " target_message_id"
)

#: a statement and its params (for INSERT_MESSAGE, the Record itself: ``_sql.committed_row``)
Op = tuple[str, Any]
_INT64_MAX = (1 << 63) - 1

#: the DeviceRecord fields kept in a devices row's JSON document (all but user_id)
_DEVICE_DOC = tuple(f.name for f in dataclasses.fields(DeviceRecord) if f.name != "user_id")

#: upper bounds of the commit latency histogram (seconds: a batch's start to its durability, its
#: transaction and, with FULL, the syncer's fdatasync that covered it)
COMMIT_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
#: upper bounds of the batch size histogram (writes per transaction)
BATCH_BUCKETS: tuple[float, ...] = (1, 4, 16, 64, 256, 1024, 4096, 16384)


class StoreOpenError(PrivchatError):
    """The data directory's store cannot be used (newer schema, corrupt, locked by another
    server): the server refuses to start instead of replacing it."""


def _record(row: tuple[Any, ...]) -> Record:
    return Record(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        int(row[6]),
        row[7],
        row[8],
        bytes(row[9]),
        bytes(row[10]),
        bool(row[11]),
        row[12],
        bool(row[13]),
        row[14],
        row[15],
        row[16],
    )


_connect = connect


#: how often the checkpointer copies the WAL's committed pages to the database (seconds, while
#: there are commits), in PASSIVE mode: it never takes the write lock, so commits go on meanwhile
CHECKPOINT_INTERVAL = 0.25
#: WAL frames (pages) after which the writer resets the WAL itself, between two batches: under
#: sustained load a background checkpoint rarely ends with no commit after it, and SQLite only
#: restarts the WAL from its beginning when every frame in it has been copied
WAL_RESET_FRAMES = 8192


def _batch_policy() -> None:
    """Run the calling thread under SCHED_BATCH (Linux): the same share of the CPU, but its
    wake-ups do not preempt the event loop's thread. The writer wakes once per commit (its
    fsync returns); preempting the loop each time costs the loop its caches and splits its
    turns, where without preemption it runs the writer when it waits for input or its slice
    ends. (Measured on the 2-core VM, one core for the server: involuntary context switches
    of the loop's thread 700-850/s -> about 80/s, and 6-16 % less CPU per direct message;
    benchmarks/README.md.)"""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        return
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, policy, os.sched_param(0))


class _Checkpointer(threading.Thread):
    """Checkpoints the WAL on its own connection (PASSIVE: concurrent with the writer's
    commits, never blocking them), every ``CHECKPOINT_INTERVAL`` while the writer commits.
    When the WAL has grown past ``WAL_RESET_FRAMES`` without being restarted, it asks the
    writer to finish the job between two batches (``_Writer.reset_wal``), where no commit can
    land during the checkpoint, so the next transaction starts the WAL from its beginning."""

    def __init__(self, path: pathlib.Path, synchronous: str) -> None:
        super().__init__(name="privchat-sqlite-checkpointer", daemon=True)
        self.db = _connect(path, synchronous)
        self.cond = threading.Condition(threading.Lock())
        self.dirty = False
        self.stopping = False
        self.checkpoints = 0
        self.wal_frames = 0  # the WAL's frames at the last checkpoint
        self.reset_due = False  # read by the writer after each batch

    def note_commit(self) -> None:
        """On the writer's thread, after each commit."""
        if not self.dirty:
            with self.cond:
                self.dirty = True
                self.cond.notify()

    def run(self) -> None:
        _batch_policy()
        try:
            while True:
                with self.cond:
                    while not self.dirty and not self.stopping:
                        self.cond.wait()
                    if self.stopping:
                        return
                    self.dirty = False
                self.checkpoint()
                with self.cond:  # at most one checkpoint per interval
                    if not self.stopping:
                        self.cond.wait(CHECKPOINT_INTERVAL)
        finally:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()

    def checkpoint(self) -> None:
        try:
            busy, frames, done = self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # the writer's own commits report a failing disk
            log.debug("background checkpoint failed: %s", exc)
            return
        self.checkpoints += 1
        self.wal_frames = frames
        if frames >= WAL_RESET_FRAMES and not self.reset_due:
            self.reset_due = True

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()


_SURROGATE = re.compile("[\ud800-\udfff]")


def _encodable(params: Any) -> Any:
    """``params`` with every str that UTF-8 cannot encode repaired (lone surrogates replaced)."""
    if isinstance(params, Record):
        params = committed_row(params)
    if isinstance(params, str):
        return _SURROGATE.sub("\ufffd", params)
    if isinstance(params, tuple | list):
        return type(params)(_encodable(p) for p in params)
    if isinstance(params, dict):
        return {k: _encodable(v) for k, v in params.items()}
    return params


class _Syncer(threading.Thread):
    """``synchronous=FULL``, pipelined with the writer's next batch.

    The writer's connection commits with ``synchronous=NORMAL`` (no sync inside COMMIT), and
    hands each committed batch here; this thread ``fdatasync``s the WAL file and only then
    reports the batches durable to the loop (``_Writer.durable``), the ones committed before
    the sync began. Meanwhile the writer commits the next batch: the sync's latency overlaps
    the next batch's work instead of idling the loop behind it. What an acknowledgement
    promises is FULL's: the commit's WAL frames are on the disk before it goes out. (SQLite's
    NORMAL syncs the WAL before each checkpoint and its header when the WAL is reused, so
    nothing a checkpoint copies or a WAL restart overwrites was ever acknowledged undurable.)

    A failed ``fdatasync`` is final: the kernel may have dropped the pages it could not write
    and would not report it again, so no later sync can vouch for them. The store then refuses
    writes until it is restarted (SQLite recovers what is on the disk), and nothing that sync
    covered is acknowledged."""

    def __init__(self, writer: _Writer, wal: pathlib.Path) -> None:
        super().__init__(name="privchat-sqlite-syncer", daemon=True)
        self.writer = writer
        self.wal = wal
        self.cond = threading.Condition(threading.Lock())
        self.queue: collections.deque[tuple[int, int, float]] = collections.deque()
        self.stopping = False
        self.fd = -1
        self.ino = -1
        self.syncs = 0
        self.dead: str | None = None

    def put(self, upto: int, batch: int, t0: float) -> None:
        """On the writer's thread, once the batch ending at write ``upto`` is committed."""
        with self.cond:
            self.queue.append((upto, batch, t0))
            self.cond.notify()

    def run(self) -> None:
        _batch_policy()
        try:
            while True:
                with self.cond:
                    while not self.queue and not self.stopping:
                        self.cond.wait()
                    if not self.queue:
                        return
                    batches = list(self.queue)
                    self.queue.clear()
                try:
                    self.sync()
                except OSError as exc:
                    self.dead = f"fdatasync of {self.wal.name} failed: {exc}"
                    self.writer.store._report(self.writer.store._on_sync_failure, self.dead)
                    return
                self.syncs += 1
                for upto, batch, t0 in batches:
                    self.writer.durable(upto, batch, t0)
        finally:
            if self.fd >= 0:
                os.close(self.fd)

    def sync(self) -> None:
        """fdatasync the WAL file (the one at ``wal`` now: reopened if it was replaced)."""
        if self.fd < 0 or os.stat(self.wal).st_ino != self.ino:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
            self.fd = os.open(self.wal, os.O_RDONLY | os.O_CLOEXEC)
            self.ino = os.fstat(self.fd).st_ino  # (the file opened: the one at ``wal`` now)
        os.fdatasync(self.fd)

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()


class _Writer(threading.Thread):
    """Commits queued statements in batches; reports each batch to the loop.

    The loop appends to ``pending`` without a lock (a deque's append is atomic) and kicks the
    writer once per event-loop turn (``kick``), not once per statement; the writer takes what
    is pending when it starts a batch, so one transaction holds every write of the turns that
    queued while the previous one committed."""

    def __init__(self, store: SQLiteStore, db: WriterDB) -> None:
        super().__init__(name="privchat-sqlite-writer", daemon=True)
        self.store = store
        self.db = db
        self.cond = threading.Condition(threading.Lock())
        self.pending: collections.deque[Op] = collections.deque()
        self.retry: list[Op] = []  # a batch that failed: committed first, in its order
        self.written = 0  # ops committed to SQLite
        self.committed = 0  # ops durable (``written``, or what the syncer synced of it)
        self.syncer: _Syncer | None = None
        self.stopping = False
        self.failing = False
        self.checkpointer: _Checkpointer | None = None
        self.wal_resets = 0

    def put(self, op: Op) -> None:
        """On the loop's thread; the writer sees it after the next ``kick``."""
        self.pending.append(op)

    def kick(self) -> None:
        with self.cond:
            self.cond.notify()

    def _take(self) -> list[Op] | None:
        """The next batch (the failed one first, then everything pending), or None to stop."""
        with self.cond:
            while not self.pending and not self.retry and not self.stopping:
                self.cond.wait()
            if not self.pending and not self.retry:
                return None
            ops, self.retry = self.retry, []
        popleft = self.pending.popleft
        for _ in range(len(self.pending)):  # only this thread takes: the length only grows
            ops.append(popleft())
        return ops

    def run(self) -> None:
        _batch_policy()
        backoff = 0.05
        while True:
            ops = self._take()
            if ops is None:
                return
            upto = self.written + len(ops)
            t0 = time.perf_counter()
            try:
                try:
                    self._commit(ops)
                except UnicodeEncodeError:
                    # A string no UTF-8 can hold (a lone surrogate) reached the store by a path
                    # that skipped the boundary's checks: store it with U+FFFD in its place
                    # rather than lose the batch (the views show such text with "?" anyway).
                    ops = [(sql, _encodable(params)) for sql, params in ops]
                    self._commit(ops)
            except (sqlite3.Error, ValueError, TypeError, OverflowError) as exc:
                with self.cond:  # keep them, in order, in front of what came meanwhile
                    self.retry = ops
                if not self.failing:
                    self.failing = True
                    self.store._report(self.store._on_failure, str(exc))
                if self.stopping and backoff > 1.0:
                    log.error("giving up on %d writes at shutdown: %s", len(ops), exc)
                    return
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            self.failing = False
            self.written = upto
            if self.syncer is not None:
                self.syncer.put(upto, len(ops), t0)
            else:
                self.durable(upto, len(ops), t0)
            checkpointer = self.checkpointer
            if checkpointer is not None:
                checkpointer.note_commit()
                if checkpointer.reset_due:  # (after the report: no reply waits for this)
                    self.reset_wal(checkpointer)

    def durable(self, upto: int, batch: int, t0: float) -> None:
        """Writes up to ``upto`` are durable: tell ``wait_committed`` and the loop (on the
        writer's thread, or the syncer's)."""
        with self.cond:
            self.committed = upto
            self.cond.notify_all()
        self.store._report(self.store._on_commit, upto, batch, time.perf_counter() - t0)

    def reset_wal(self, checkpointer: _Checkpointer) -> None:
        """Copy what is left of the WAL to the database on the writer's own connection, between
        two transactions: no commit can land meanwhile, so when it copies every frame the next
        transaction restarts the WAL from its beginning. Busy (the checkpointer is at it too)
        or failing: tried again after the next batch."""
        try:
            busy, frames, done = self.db.checkpoint()
        except sqlite3.Error as exc:
            log.debug("checkpoint on the writer failed: %s", exc)
            return
        if not busy and frames == done:
            checkpointer.reset_due = False
            self.wal_resets += 1

    def _commit(self, ops: list[Op]) -> None:
        """One transaction (``batch.WriterDB.commit``: the hot statements grouped, every
        other one a barrier)."""
        self.db.commit(ops)

    def wait_committed(self, upto: int, timeout: float | None = None) -> bool:
        self.kick()  # a kick the loop scheduled may not run before this returns
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while self.committed < upto:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()


class SQLiteStore(MemoryStore):
    """The in-memory working set, made durable in ``data_dir/privchat.db``."""

    def __init__(
        self,
        data_dir: pathlib.Path,
        synchronous: str = "FULL",
        window: int = 250,
        dedup_retention: int = 86400,
        notify: Callable[[Callable[..., None], tuple[Any, ...]], None] | None = None,
    ) -> None:
        super().__init__()
        if synchronous.upper() not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        self.window = max(1, window)
        self.data_dir = data_dir
        self.path = data_dir / DB_NAME
        data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._lock(data_dir / LOCK_NAME)
        self._notify = notify
        self._schedule: Callable[[Callable[[], None]], object] | None = None
        #: the writer's reports, for the loop (``_report``)
        self._reports: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = (
            collections.deque()
        )
        if notify is not None:
            self.poll = self._poll
        self._kick_due = False
        self.write_seq = 0
        self.durable_seq = 0
        self._waiters: list[tuple[int, int, Callable[[], None]]] = []
        self._waiter_n = 0
        self._failing = False
        self._sync_dead = False  # a failed fdatasync: writes refused until a restart
        self._oldest_pending: collections.deque[tuple[int, float]] = collections.deque()
        self.commits = 0
        self.committed_ops = 0
        self.commit_seconds = 0.0
        self.last_batch = 0
        self.largest_batch = 0
        self.commit_buckets = [0] * (len(COMMIT_BUCKETS) + 1)
        self.batch_buckets = [0] * (len(BATCH_BUCKETS) + 1)
        self._base: dict[int, int] = {}  # channel -> pts of the record before its window
        #: channel -> (write_seq, pts) of the commit that took its log past ``_trim_at``
        #: records: once that write is durable, the log is trimmed to its window (``_trim``)
        self._over: dict[int, tuple[int, int]] = {}
        self._trim_at = self.window + self.window // 4  # trim in steps, not per commit
        self._last_commit: Record | None = None  # (``dedup_put`` of its key looks here first)
        self._member_seq = 0
        self._social_seq = 0  # the order of friend requests, friends, blacklists, QR codes
        self._device_seq = 0  # the order of devices
        #: a message's idempotency key, compact (``dedup_get``): key hash -> ts << 64 | id
        self._keys: ShardedMap[int, int] = ShardedMap()
        self._key_shards = self._keys.shards
        self._keys_sweep = 0
        self._dedup_own = 0  # keys ever put in the usual map (0: it is empty, skip it)
        try:
            self._db = _connect(self.path, synchronous.upper())
            self._open(dedup_retention)
            self._db.close()  # (the load's: from here on the writer has its own connection)
            # The writer commits as NORMAL does (no sync in COMMIT); with FULL the syncer makes
            # each commit durable before its acknowledgements go out (``_Syncer``)
            self._full = synchronous.upper() == "FULL"
            self._wdb = WriterDB(str(self.path), "NORMAL")
            self._reader = _connect(self.path, synchronous.upper())
            self._checkpointer = _Checkpointer(self.path, synchronous.upper())
        except sqlite3.DatabaseError as exc:
            self._unlock()
            raise StoreOpenError(
                f"{self.path}: the database is unreadable or corrupt ({exc}); "
                "not starting (restore a backup, see docs/operations.md)"
            ) from None
        except BaseException:
            self._unlock()
            raise
        self._read_lock = threading.Lock()
        self._writer = _Writer(self, self._wdb)
        self._pending_append = self._writer.pending.append
        self._writer.checkpointer = self._checkpointer
        self._syncer: _Syncer | None = None
        if self._full:
            self._syncer = _Syncer(self._writer, self.path.with_name(self.path.name + "-wal"))
            self._writer.syncer = self._syncer
            self._syncer.start()
        self._checkpointer.start()
        self._writer.start()

    # ---- opening -------------------------------------------------------------------------------
    def _lock(self, path: pathlib.Path) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreOpenError(
                f"{path.parent} is in use by another running server (it holds {path.name})"
            ) from None
        return fd

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _open(self, dedup_retention: int) -> None:
        db = self._db
        row = db.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {row[0] if row else 'no answer'}")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            if tables:
                raise sqlite3.DatabaseError("not a privchat-tcp database")
            db.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
            self.epoch = secrets.token_hex(8)
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("epoch", self.epoch),
                    ("revoke_counts", "1"),
                ],
            )
            db.execute("COMMIT")
            log.info("created a new store in %s (epoch %s)", self.path, self.epoch)
            return
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        version = int(meta.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise StoreOpenError(
                f"{self.path} has schema version {version}, newer than this server's "
                f"{SCHEMA_VERSION}; not starting (upgrade privchat-tcp)"
            )
        while version < SCHEMA_VERSION:
            script = _MIGRATIONS.get(version)
            if script is None:
                raise StoreOpenError(f"{self.path}: no migration from schema version {version}")
            db.executescript("BEGIN;" + script + "COMMIT;")
            version += 1
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
            log.info("migrated %s to schema version %d", self.path, version)
        self.epoch = meta["epoch"]
        self._load(dedup_retention)

    def _load(self, dedup_retention: int) -> None:
        db = self._db
        t0 = time.monotonic()
        for row in db.execute(
            "SELECT user_id, username, password_hash, nickname, phone, email, avatar_url,"
            " user_type, created_at FROM users"
        ):
            self._users[row[0]] = User(*row)
        self._next_user = max(self._users, default=self._next_user - 1) + 1
        self._logins = dict(db.execute("SELECT login, user_id FROM logins").fetchall())
        now_s = int(time.time())
        self._revoked = dict(
            db.execute("SELECT jti, expires_at FROM revoked WHERE expires_at >= ?", (now_s,))
        )
        pts: dict[int, int] = {}
        for row in db.execute(
            "SELECT channel_id, channel_type, created_at, name, description, avatar_url,"
            " owner_id, updated_at, all_muted, max_members, pts FROM channels"
        ):
            self._channels[row[0]] = Channel(
                row[0],
                row[1],
                row[2],
                {},
                name=row[3],
                description=row[4],
                avatar_url=row[5],
                owner_id=row[6],
                updated_at=row[7],
                all_muted=bool(row[8]),
                max_members=row[9],
            )
            pts[row[0]] = row[10]
        self._next_channel = max(self._channels, default=self._next_channel - 1) + 1
        for a, b, cid in db.execute("SELECT a, b, channel_id FROM directs"):
            self._directs[(a, b)] = cid
        for cid, uid, role, joined, mute, seq in db.execute(
            "SELECT channel_id, user_id, role, joined_at, mute_until, seq FROM members ORDER BY seq"
        ):
            channel = self._channels.get(cid)
            if channel is not None:
                channel.members[uid] = Member(uid, role, joined, mute)
                self._user_channels.setdefault(uid, {})[cid] = None
            self._member_seq = max(self._member_seq, seq)
        for uid, dev, cid, ack in db.execute(
            "SELECT user_id, device_id, channel_id, pts FROM acks"
        ):
            self._acks.setdefault((uid, dev), {})[cid] = ack
            if ack > self._user_acks.get((uid, cid), 0):
                self._user_acks[(uid, cid)] = ack
        self._load_groups(db)
        for family, entity_id, version, deleted in db.execute(
            "SELECT family, entity_id, version, deleted FROM entities ORDER BY family, version"
        ):
            self._entities.setdefault(family, {})[entity_id] = (version, bool(deleted))
            self._entity_versions[family] = version
        self._load_social(db)
        self._load_channel_extras(db)
        self._load_files_devices(db)
        self._load_dedup(db, int(time.time() * 1000) - dedup_retention * 1000)
        for sender, nbytes, count in db.execute(
            "SELECT sender_id, SUM(LENGTH(payload) + LENGTH(content)), COUNT(*) FROM messages"
            " GROUP BY sender_id"
        ):
            self._user_bytes[sender] = nbytes + count * RECORD_BYTES
        n = 0
        for cid in self._channels:
            current = pts.get(cid, 0)
            base = max(0, current - self.window)
            rows = db.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE channel_id = ? AND pts > ?"
                " ORDER BY pts",
                (cid, base),
            ).fetchall()
            records = [_record(r) for r in rows]
            if len(records) != current - base or (records and records[-1].pts != current):
                raise sqlite3.DatabaseError(f"channel {cid}: its log does not end at pts {current}")
            self._logs[cid] = records
            self._base[cid] = base
            for r in records:
                if r.kind == KIND_MESSAGE:
                    self._by_message[r.message_id] = r
            n += len(records)
        log.info(
            "loaded %d users, %d channels, %d recent messages from %s in %.2fs",
            len(self._users),
            len(self._channels),
            n,
            self.path,
            time.monotonic() - t0,
        )

    def _load_social(self, db: sqlite3.Connection) -> None:
        """Accounts and contacts: phones, documents, friends, blacklists, QR codes, searches."""
        for user in self._users.values():
            if user.phone:
                self._phones.setdefault(user.phone, user.user_id)
        for uid, kind, doc in db.execute("SELECT user_id, kind, doc FROM user_docs"):
            self._docs[(uid, kind)] = json.loads(doc)
        for row in db.execute(
            "SELECT from_id, to_id, message, source, source_id, created_at FROM friend_requests"
            " ORDER BY seq"
        ):
            MemoryStore.put_friend_request(self, FriendRequest(*row))
        for a, b, since in db.execute("SELECT a, b, since FROM friends ORDER BY seq"):
            MemoryStore.add_friends(self, a, b, since)
        for uid, target, at in db.execute(
            "SELECT user_id, target_id, blocked_at FROM blacklist ORDER BY seq"
        ):
            MemoryStore.block(self, uid, target, at)
        for row in db.execute(
            "SELECT qr_key, qr_type, target_id, creator_id, token, created_at, expire_at,"
            " max_usage, used_count, revoked_at, metadata FROM qrcodes ORDER BY seq"
        ):
            MemoryStore.put_qrcode(self, QRCode(*row))
        now = int(time.time() * 1000)
        for sid, searcher, target, exp in db.execute(
            "SELECT session_id, searcher_id, target_id, expires_at FROM search_sessions"
            " WHERE expires_at >= ? ORDER BY expires_at",
            (now,),
        ):
            self._searches[sid] = (searcher, target, exp)
        self._social_seq = max(
            [
                db.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {t}").fetchone()[0]
                for t in ("friend_requests", "friends", "blacklist", "qrcodes")
            ]
        )

    def _load_channel_extras(self, db: sqlite3.Connection) -> None:
        """Channel preferences, direct channels' sources, broadcast channels (issue 12)."""
        db.executescript("BEGIN;" + _CHANNEL_SCHEMA + "COMMIT;")
        for row in db.execute(
            "SELECT user_id, channel_id, pinned_at, muted, hidden_pts, updated_at"
            " FROM channel_prefs"
        ):
            prefs = ChannelPrefs(row[0], row[1], row[2], bool(row[3]), row[4], row[5])
            self._prefs[(prefs.user_id, prefs.channel_id)] = prefs
        for cid, source, source_id in db.execute(
            "SELECT channel_id, source, source_id FROM direct_sources"
        ):
            self._direct_sources[cid] = (source, source_id)
        for row in db.execute(
            "SELECT channel_id, owner_id, name, description, avatar_url, created_at"
            " FROM broadcasts ORDER BY channel_id"
        ):
            self._broadcasts[row[0]] = Broadcast(*row)
            self._posts[row[0]] = []
        for cid, uid, at in db.execute(
            "SELECT channel_id, user_id, subscribed_at FROM broadcast_subs ORDER BY rowid"
        ):
            bc = self._broadcasts.get(cid)
            if bc is not None:
                bc.subscribers[uid] = at
        for row in db.execute(
            "SELECT content_id, channel_id, author_id, content, title, content_type, created_at"
            " FROM broadcast_posts ORDER BY content_id"
        ):
            self._posts.setdefault(row[1], []).append(BroadcastPost(*row))
            self._next_post = row[0] + 1
        # broadcast channels take their ids from the channel ids
        self._next_channel = max(self._next_channel, max(self._broadcasts, default=0) + 1)

    def _load_groups(self, db: sqlite3.Connection) -> None:
        """The tables of groups and messages (issue 12)."""
        for cid, approval, invite, announcement, dissolved in db.execute(
            "SELECT channel_id, join_need_approval, member_can_invite, announcement, dissolved"
            " FROM group_settings"
        ):
            channel = self._channels.get(cid)
            if channel is not None:
                channel.join_need_approval = bool(approval)
                channel.member_can_invite = bool(invite)
                channel.announcement = announcement
                channel.dissolved = bool(dissolved)
        for cid, uid, join_pts in db.execute(
            "SELECT channel_id, user_id, join_pts FROM member_join"
        ):
            channel = self._channels.get(cid)
            member = None if channel is None else channel.members.get(uid)
            if member is not None:
                member.join_pts = join_pts
        for row in db.execute(
            "SELECT request_id, group_id, user_id, inviter_id, qr_key, message, created_at,"
            " expires_at, status, handled_by, handled_at FROM join_requests ORDER BY request_id"
        ):
            self._load_join_request(JoinRequest(*row))
        now_ms = int(time.time() * 1000)
        for row in db.execute(
            "SELECT qr_key, group_id, token, creator_id, created_at, expires_at FROM group_qr"
            " WHERE expires_at >= ?",
            (now_ms,),
        ):
            self._group_qrs[row[0]] = GroupQR(*row)
        for uid, cid, read_pts, read_at in db.execute(
            "SELECT user_id, channel_id, pts, read_at FROM reads"
        ):
            self._reads[(uid, cid)] = (read_pts, read_at)
        for mid, emoji, uid in db.execute(
            "SELECT message_id, emoji, user_id FROM reactions ORDER BY rowid"
        ):
            self._reactions.setdefault(mid, {}).setdefault(emoji, {})[uid] = None
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if "revoke_counts" not in meta:  # a store from before the table: count once
            db.execute("BEGIN")
            db.execute(
                "INSERT OR REPLACE INTO revoke_counts (channel_id, n) SELECT channel_id,"
                " count(*) FROM messages WHERE kind = ? GROUP BY channel_id",
                (KIND_REVOKE,),
            )
            db.execute("INSERT INTO meta (key, value) VALUES ('revoke_counts', '1')")
            db.execute("COMMIT")
        self._revokes = dict(db.execute("SELECT channel_id, n FROM revoke_counts").fetchall())

    def _load_files_devices(self, db: sqlite3.Connection) -> None:
        """Files, devices and last-seen times (issue 12); the tables are created if the store
        is older than they are."""
        db.executescript("BEGIN;" + _FILES_DEVICES_SCHEMA + "COMMIT;")
        for row in db.execute(
            "SELECT file_id, owner_id, filename, mime_type, file_type, business_type, max_size,"
            " token_hash, expires_at, created_at, status, size, sha256, access_hash, uploaded_at,"
            " width, height FROM files ORDER BY file_id"
        ):
            self._files[row[0]] = FileRecord(*row)
        self._next_file = max(self._files, default=self._next_file - 1) + 1
        for uid, doc, seq in db.execute("SELECT user_id, doc, seq FROM devices ORDER BY seq"):
            fields = json.loads(doc)
            fields["login_ids"] = tuple(fields.get("login_ids", ()))
            MemoryStore.put_device(self, DeviceRecord(user_id=uid, **fields))
            self._device_seq = max(self._device_seq, seq)
        self._last_seen = dict(db.execute("SELECT user_id, at FROM last_seen").fetchall())

    def _load_dedup(self, db: sqlite3.Connection, since: int) -> None:
        """The idempotency keys younger than ``since``: the message rows' into the compact map
        (``_keys``), the dedup table's own (in time order) into the store's usual one."""
        shards = self._keys.shards
        for sender, dev, local, mid, ts in db.execute(_IMPLIED_KEYS, (since,)):
            h = hash((sender, dev, int(local)))
            shards[h % SHARDS][h] = ts << _MID_BITS | mid
        for sender, dev, local, mid, p, cid, ts in db.execute(_DEDUP_KEYS, (since,)):
            h = hash((sender, dev, int(local)))
            implied = shards[h % SHARDS].get(h)
            if implied is not None:  # the later of the two puts holds the key
                if implied >> _MID_BITS > ts:
                    continue
                del shards[h % SHARDS][h]
            MemoryStore.dedup_put(self, sender, dev, int(local), DedupEntry(mid, p, cid, ts))
            self._dedup_own += 1

    # ---- writes --------------------------------------------------------------------------------
    def _check(self) -> None:
        if self._failing:
            raise StorageUnavailable()

    def _put(self, sql: str, params: tuple[Any, ...]) -> None:
        self.write_seq += 1
        if not self._oldest_pending:
            self._oldest_pending.append((self.write_seq, time.monotonic()))
        self._pending_append((sql, params))
        if not self._kick_due:
            self._kick_soon()

    def _kick_soon(self) -> None:
        """One kick per event-loop turn, at its end."""
        schedule = self._schedule
        if schedule is None:  # no loop (a script, the contract suite): kick now
            self._writer.kick()
            return
        self._kick_due = True
        schedule(self._kick)

    def _kick(self) -> None:
        self._kick_due = False
        self._writer.kick()

    def create_user(
        self,
        username: str,
        password_hash: str,
        nickname: str,
        phone: str | None,
        email: str | None,
        now_ms: int,
    ) -> User:
        self._check()
        user = super().create_user(username, password_hash, nickname, phone, email, now_ms)
        self._put(
            "INSERT INTO users (user_id, username, password_hash, nickname, phone, email,"
            " avatar_url, user_type, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                user.user_id,
                user.username,
                user.password_hash,
                user.nickname,
                user.phone,
                user.email,
                user.avatar_url,
                user.user_type,
                user.created_at,
            ),
        )
        logins = [username.lower()]
        if email and self._logins.get(email.lower()) == user.user_id:
            logins.append(email.lower())
        for login in logins:
            self._put(
                "INSERT OR REPLACE INTO logins (login, user_id) VALUES (?, ?)",
                (login, user.user_id),
            )
        return user

    def revoke_token(self, jti: str, expires_at: int) -> None:
        self._check()
        super().revoke_token(jti, expires_at)
        self._put(
            "INSERT OR REPLACE INTO revoked (jti, expires_at) VALUES (?, ?)", (jti, expires_at)
        )

    def _index(self, channel: Channel) -> None:
        super()._index(channel)
        self._base[channel.channel_id] = 0
        self._put(
            "INSERT INTO channels (channel_id, channel_type, created_at, name, description,"
            " avatar_url, owner_id, updated_at, all_muted, max_members, pts)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,0)",
            (
                channel.channel_id,
                channel.channel_type,
                channel.created_at,
                channel.name,
                channel.description,
                channel.avatar_url,
                channel.owner_id,
                channel.updated_at,
                int(channel.all_muted),
                channel.max_members,
            ),
        )
        for member in channel.members.values():
            self._put_member(channel.channel_id, member)

    def _put_member(self, channel_id: int, member: Member) -> None:
        self._member_seq += 1
        self._put(
            "INSERT OR REPLACE INTO members (channel_id, user_id, role, joined_at, mute_until,"
            " seq) VALUES (?,?,?,?,?,?)",
            (
                channel_id,
                member.user_id,
                member.role,
                member.joined_at,
                member.mute_until,
                self._member_seq,
            ),
        )

    def get_or_create_direct(self, user_a: int, user_b: int, now_ms: int) -> tuple[Channel, bool]:
        key = (user_a, user_b) if user_a <= user_b else (user_b, user_a)
        if key not in self._directs:
            self._check()
        channel, created = super().get_or_create_direct(user_a, user_b, now_ms)
        if created:
            self._put(
                "INSERT INTO directs (a, b, channel_id) VALUES (?, ?, ?)",
                (*key, channel.channel_id),
            )
        return channel, created

    def create_group(
        self,
        owner_id: int,
        name: str,
        description: str | None,
        member_ids: Iterable[int],
        now_ms: int,
        max_members: int,
    ) -> Channel:
        self._check()
        return super().create_group(owner_id, name, description, member_ids, now_ms, max_members)

    def add_member(self, channel_id: int, user_id: int, role: int, now_ms: int) -> Member:
        self._check()
        member = super().add_member(channel_id, user_id, role, now_ms)
        self._put_member(channel_id, member)
        self._put("UPDATE channels SET updated_at = ? WHERE channel_id = ?", (now_ms, channel_id))
        self._put(
            "INSERT OR REPLACE INTO member_join (channel_id, user_id, join_pts) VALUES (?,?,?)",
            (channel_id, user_id, member.join_pts),
        )
        return member

    # ---- groups: settings, roles, mutes, the end (issue 12) ------------------------------------
    def _put_group_settings(self, channel: Channel) -> None:
        self._put(
            "INSERT OR REPLACE INTO group_settings (channel_id, join_need_approval,"
            " member_can_invite, announcement, dissolved) VALUES (?,?,?,?,?)",
            (
                channel.channel_id,
                int(channel.join_need_approval),
                int(channel.member_can_invite),
                channel.announcement,
                int(channel.dissolved),
            ),
        )

    def update_group(self, channel_id: int, changes: Mapping[str, object], now_ms: int) -> Channel:
        self._check()
        channel = super().update_group(channel_id, changes, now_ms)
        self._put(
            "UPDATE channels SET name = ?, description = ?, avatar_url = ?, owner_id = ?,"
            " all_muted = ?, max_members = ?, updated_at = ? WHERE channel_id = ?",
            (
                channel.name,
                channel.description,
                channel.avatar_url,
                channel.owner_id,
                int(channel.all_muted),
                channel.max_members,
                channel.updated_at,
                channel_id,
            ),
        )
        self._put_group_settings(channel)
        return channel

    def set_member_role(self, channel_id: int, user_id: int, role: int, now_ms: int) -> None:
        self._check()
        super().set_member_role(channel_id, user_id, role, now_ms)
        self._put(
            "UPDATE members SET role = ? WHERE channel_id = ? AND user_id = ?",
            (role, channel_id, user_id),
        )
        self._put("UPDATE channels SET updated_at = ? WHERE channel_id = ?", (now_ms, channel_id))

    def set_member_mute(self, channel_id: int, user_id: int, mute_until: int) -> None:
        self._check()
        super().set_member_mute(channel_id, user_id, mute_until)
        self._put(
            "UPDATE members SET mute_until = ? WHERE channel_id = ? AND user_id = ?",
            (mute_until, channel_id, user_id),
        )

    def dissolve_group(self, channel_id: int, now_ms: int) -> None:
        self._check()
        super().dissolve_group(channel_id, now_ms)
        channel = self._channels[channel_id]
        self._put("UPDATE channels SET updated_at = ? WHERE channel_id = ?", (now_ms, channel_id))
        self._put_group_settings(channel)

    def add_join_request(
        self,
        group_id: int,
        user_id: int,
        inviter_id: int,
        qr_key: str,
        message: str | None,
        now_ms: int,
        expires_at: int,
    ) -> JoinRequest:
        self._check()
        req = super().add_join_request(
            group_id, user_id, inviter_id, qr_key, message, now_ms, expires_at
        )
        self._put_join_request(req)
        return req

    def _put_join_request(self, req: JoinRequest) -> None:
        self._put(
            "INSERT OR REPLACE INTO join_requests (request_id, group_id, user_id, inviter_id,"
            " qr_key, message, created_at, expires_at, status, handled_by, handled_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                req.request_id,
                req.group_id,
                req.user_id,
                req.inviter_id,
                req.qr_key,
                req.message,
                req.created_at,
                req.expires_at,
                req.status,
                req.handled_by,
                req.handled_at,
            ),
        )

    def resolve_join_request(
        self, request_id: int, approved: bool, by: int, now_ms: int
    ) -> JoinRequest:
        self._check()
        req = super().resolve_join_request(request_id, approved, by, now_ms)
        self._put_join_request(req)
        return req

    def put_group_qr(self, qr: GroupQR) -> None:
        self._check()
        super().put_group_qr(qr)
        self._put(
            "INSERT OR REPLACE INTO group_qr (qr_key, group_id, token, creator_id, created_at,"
            " expires_at) VALUES (?,?,?,?,?,?)",
            (qr.qr_key, qr.group_id, qr.token, qr.creator_id, qr.created_at, qr.expires_at),
        )

    def set_read_pts(self, user_id: int, channel_id: int, pts: int, now_ms: int) -> bool:
        self._check()
        moved = super().set_read_pts(user_id, channel_id, pts, now_ms)
        if moved:
            self._put(
                "INSERT OR REPLACE INTO reads (user_id, channel_id, pts, read_at) VALUES (?,?,?,?)",
                (user_id, channel_id, pts, now_ms),
            )
        return moved

    def add_reaction(self, message_id: int, emoji: str, user_id: int, now_ms: int) -> bool:
        self._check()
        added = super().add_reaction(message_id, emoji, user_id, now_ms)
        if added:
            self._put(
                "INSERT OR IGNORE INTO reactions (message_id, emoji, user_id, created_at)"
                " VALUES (?,?,?,?)",
                (message_id, emoji, user_id, now_ms),
            )
        return added

    def remove_reaction(self, message_id: int, emoji: str, user_id: int) -> bool:
        self._check()
        removed = super().remove_reaction(message_id, emoji, user_id)
        if removed:
            self._put(
                "DELETE FROM reactions WHERE message_id = ? AND emoji = ? AND user_id = ?",
                (message_id, emoji, user_id),
            )
        return removed

    def remove_member(self, channel_id: int, user_id: int) -> None:
        self._check()
        super().remove_member(channel_id, user_id)
        self._put("DELETE FROM members WHERE channel_id = ? AND user_id = ?", (channel_id, user_id))

    # ---- files and devices ---------------------------------------------------------------------
    def create_file(
        self,
        owner_id: int,
        filename: str,
        mime_type: str,
        file_type: str,
        business_type: str,
        max_size: int,
        token_hash: str,
        expires_at: int,
        now_ms: int,
    ) -> FileRecord:
        self._check()
        record = super().create_file(
            owner_id,
            filename,
            mime_type,
            file_type,
            business_type,
            max_size,
            token_hash,
            expires_at,
            now_ms,
        )
        self._put_file(record)
        return record

    def update_file(self, file_id: int, changes: Mapping[str, object]) -> FileRecord:
        self._check()
        record = super().update_file(file_id, changes)
        self._put_file(record)
        return record

    def _put_file(self, r: FileRecord) -> None:
        self._put(
            "INSERT OR REPLACE INTO files (file_id, owner_id, filename, mime_type, file_type,"
            " business_type, max_size, token_hash, expires_at, created_at, status, size, sha256,"
            " access_hash, uploaded_at, width, height) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                r.file_id,
                r.owner_id,
                r.filename,
                r.mime_type,
                r.file_type,
                r.business_type,
                r.max_size,
                r.token_hash,
                r.expires_at,
                r.created_at,
                r.status,
                r.size,
                r.sha256,
                r.access_hash,
                r.uploaded_at,
                r.width,
                r.height,
            ),
        )

    def put_device(self, device: DeviceRecord) -> None:
        self._check()
        known = MemoryStore.get_device(self, device.user_id, device.device_id) is not None
        super().put_device(device)
        fields = {f: getattr(device, f) for f in _DEVICE_DOC}
        fields["login_ids"] = list(device.login_ids)
        doc = json.dumps(fields, separators=(",", ":"))
        if known:  # keeps its place (seq)
            self._put(
                "UPDATE devices SET doc = ? WHERE user_id = ? AND device_id = ?",
                (doc, device.user_id, device.device_id),
            )
        else:
            self._device_seq += 1
            self._put(
                "INSERT OR REPLACE INTO devices (user_id, device_id, doc, seq) VALUES (?,?,?,?)",
                (device.user_id, device.device_id, doc, self._device_seq),
            )

    def delete_device(self, user_id: int, device_id: str) -> None:
        self._check()
        super().delete_device(user_id, device_id)
        self._put("DELETE FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id))

    def set_last_seen(self, user_id: int, now_ms: int) -> None:
        self._check()
        if now_ms > MemoryStore.last_seen(self, user_id):
            super().set_last_seen(user_id, now_ms)
            self._put(
                "INSERT OR REPLACE INTO last_seen (user_id, at) VALUES (?,?)", (user_id, now_ms)
            )

    # ---- the log -------------------------------------------------------------------------------
    def commit(self, record: Record) -> Record:
        """(The MS hot path: ``MemoryStore.commit`` and ``_put`` inline.)"""
        if self._failing:
            raise StorageUnavailable()
        cid = record.channel_id
        log_ = self._logs[cid]
        record.pts = pts = self._base.get(cid, 0) + len(log_) + 1
        log_.append(record)
        sender = record.sender_id
        payload = record.payload
        content = record.content
        user_bytes = self._user_bytes
        user_bytes[sender] = user_bytes.get(sender, 0) + len(payload) + len(content) + RECORD_BYTES
        kind = record.kind
        mid = record.message_id
        if kind == KIND_MESSAGE:
            self._message_shards[hash(mid) % SHARDS][mid] = record
        elif kind == KIND_REVOKE:
            self._revokes[cid] = n = self._revokes.get(cid, 0) + 1
            self._put(
                "INSERT OR REPLACE INTO revoke_counts (channel_id, n) VALUES (?, ?)", (cid, n)
            )
        self.write_seq = seq = self.write_seq + 1
        if not self._oldest_pending:
            self._oldest_pending.append((seq, time.monotonic()))
        self._pending_append((_INSERT_MESSAGE, record))  # (the writer reads its values)
        if len(log_) > self._trim_at and cid not in self._over:
            self._over[cid] = (seq, pts)
        self._last_commit = record
        if not self._kick_due:
            self._kick_soon()
        return record

    def _trim(self, upto: int) -> None:
        """Keep ``window`` records per channel in memory, dropping only durable ones (what
        ``read_log`` then reads from the database is there for every reader)."""
        over = self._over
        if not over:
            return
        shards = self._message_shards
        every = upto >= self.write_seq  # (then every record is durable)
        for cid, (seq, durable_pts) in list(over.items()):
            if seq > upto:
                continue
            del over[cid]
            log_ = self._logs.get(cid)
            if log_ is None:
                continue
            base = self._base.get(cid, 0)
            if every:
                durable_pts = base + len(log_)
            drop = min(len(log_) - self.window, durable_pts - base)
            if drop > 0:
                unindex(log_[:drop], shards)
                del log_[:drop]
                self._base[cid] = base = base + drop
            if len(log_) > self._trim_at:  # what came since: durable once the last write is
                over[cid] = (self.write_seq, base + len(log_))

    def current_pts(self, channel_id: int) -> int:
        log_ = self._logs.get(channel_id)
        return 0 if log_ is None else self._base.get(channel_id, 0) + len(log_)

    def in_window(self, channel_id: int, after_pts: int) -> bool:
        return after_pts >= self._base.get(channel_id, 0)

    def read_log(self, channel_id: int, after_pts: int, limit: int) -> list[Record]:
        log_ = self._logs.get(channel_id)
        if not log_ and not self._base.get(channel_id) or after_pts < 0 or limit <= 0:
            return []
        base = self._base.get(channel_id, 0)
        if after_pts >= base:
            i = after_pts - base
            return log_[i : i + limit] if log_ else []
        # older than the window: the database (what is in memory is durable or queued; the
        # window's records are the in-memory ones, so join the two parts)
        older = self._read_disk(channel_id, after_pts, min(limit, base - after_pts))
        if len(older) < limit and log_:
            older.extend(log_[: limit - len(older)])
        return older

    def _read_disk(self, channel_id: int, after_pts: int, limit: int) -> list[Record]:
        # every row below the window is durable: it left memory only after its commit
        with self._read_lock:
            rows = self._reader.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE channel_id = ? AND pts > ?"
                " ORDER BY pts LIMIT ?",
                (channel_id, after_pts, limit),
            ).fetchall()
        return [_record(r) for r in rows]

    async def load_log(self, channel_id: int, after_pts: int, limit: int) -> list[Record]:
        if self.in_window(channel_id, after_pts):
            return self.read_log(channel_id, after_pts, limit)
        base = self._base.get(channel_id, 0)
        window = list(self._logs.get(channel_id, ()))
        n = min(limit, base - after_pts)
        older = await asyncio.get_running_loop().run_in_executor(
            None, self._read_disk, channel_id, after_pts, n
        )
        if len(older) < limit:
            older.extend(window[: limit - len(older)])
        return older

    def find_message(self, channel_id: int, message_id: int) -> Record | None:
        record = self._by_message.get(message_id)
        if record is not None:
            return record if not channel_id or record.channel_id == channel_id else None
        if message_id > _INT64_MAX:  # no such id (SQLite would refuse the number)
            return None
        # not in the window (so durable): one indexed lookup
        with self._read_lock:
            row = self._reader.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE message_id = ? AND kind = ?",
                (message_id, KIND_MESSAGE),
            ).fetchone()
        if row is None:
            return None
        found = _record(row)
        return found if not channel_id or found.channel_id == channel_id else None

    def mark_revoked(self, channel_id: int, message_id: int, by: int, now_ms: int) -> Record:
        self._check()
        record = self._by_message.get(message_id)
        if record is None:
            found = self.find_message(channel_id, message_id)
            if found is None:
                raise KeyError(message_id)
            record = found
        record.revoked = True
        record.revoked_by = by
        record.revoked_at = now_ms
        self._put(
            "UPDATE messages SET revoked = 1, revoked_by = ?, revoked_at = ?"
            " WHERE channel_id = ? AND pts = ?",
            (by, now_ms, channel_id, record.pts),
        )
        return record

    # ---- dedup and cursors ---------------------------------------------------------------------
    # A message's key (schema 2) is kept compact: hash((sender, device, local_id)) -> its
    # timestamp << 64 | message_id in ``_keys`` (about a third of a key tuple and a DedupEntry),
    # the rest of the answer read from the message itself (the window, else one indexed read),
    # which is also checked to be that key's (a hash collision is then a miss, never a wrong
    # answer). Keys that are not a message's own stay in the usual map and the dedup table.
    def dedup_get(self, sender: int, device: str, local_id: int) -> DedupEntry | None:
        if self._dedup_own:
            entry = super().dedup_get(sender, device, local_id)
            if entry is not None:
                return entry
        h = hash((sender, device, local_id))
        packed = self._keys.shards[h % SHARDS].get(h)
        if packed is None:
            return None
        mid = packed & _MID_MASK
        record = self._by_message.get(mid) or self.find_message(0, mid)
        if (
            record is None
            or record.local_message_id != local_id
            or record.sender_id != sender
            or record.sender_device != device
        ):
            return None
        return DedupEntry(mid, record.pts, record.channel_id, record.timestamp)

    def dedup_put(self, sender: int, device: str, local_id: int, entry: DedupEntry) -> None:
        mid = entry.message_id
        record = self._last_commit
        if record is None or record.message_id != mid:
            record = self._message_shards[hash(mid) % SHARDS].get(mid)
        h = hash((sender, device, local_id))
        # the key of the record just committed: its message row holds it (schema 2)
        if record is not None and own_key(record, sender, device, local_id, entry):
            self._key_shards[h % SHARDS][h] = entry.timestamp << _MID_BITS | mid
            if self._dedup_own:
                self._dedup.pop((sender, device, local_id))
            return
        self._keys.pop(h)
        self._dedup_own += 1
        super().dedup_put(sender, device, local_id, entry)
        self._put(
            _INSERT_DEDUP,
            (
                sender,
                device,
                str(local_id),
                entry.message_id,
                entry.pts,
                entry.channel_id,
                entry.timestamp,
            ),
        )

    def dedup_sweep(self, older_than: int) -> int:
        dropped = super().dedup_sweep(older_than)
        if dropped and not self._failing:
            self._put("DELETE FROM dedup WHERE timestamp < ?", (older_than,))
        # the compact map: one whole shard per call (its keys are not in time order after a
        # start: about 1/1021 of them, a few microseconds per thousand)
        shard = self._keys.shards[self._keys_sweep]
        self._keys_sweep = (self._keys_sweep + 1) % SHARDS
        bound = older_than << _MID_BITS
        stale = [h for h, packed in shard.items() if packed < bound]
        for h in stale:
            del shard[h]
        return dropped + len(stale)

    def set_ack(self, user_id: int, device_id: str, channel_id: int, pts: int) -> None:
        if pts <= self.get_ack(user_id, device_id, channel_id) or self._failing:
            return  # nothing to move (a cursor is an optimisation: skipped while failing)
        super().set_ack(user_id, device_id, channel_id, pts)
        self._put(
            "INSERT OR REPLACE INTO acks (user_id, device_id, channel_id, pts) VALUES (?,?,?,?)",
            (user_id, device_id, channel_id, pts),
        )

    def bump_entity(self, family: str, entity_id: str, deleted: bool = False) -> int:
        self._check()
        version = super().bump_entity(family, entity_id, deleted)
        self._put(
            "INSERT OR REPLACE INTO entities (family, entity_id, version, deleted)"
            " VALUES (?,?,?,?)",
            (family, entity_id, version, int(deleted)),
        )
        return version

    # ---- accounts and contacts -----------------------------------------------------------------
    def _next_social(self) -> int:
        self._social_seq += 1
        return self._social_seq

    def update_user(self, user_id: int, nickname: str | None, avatar_url: str | None) -> User:
        self._check()
        user = super().update_user(user_id, nickname, avatar_url)
        self._put(
            "UPDATE users SET nickname = ?, avatar_url = ? WHERE user_id = ?",
            (user.nickname, user.avatar_url, user_id),
        )
        return user

    def put_doc(self, user_id: int, kind: str, doc: dict[str, Any]) -> None:
        self._check()
        super().put_doc(user_id, kind, doc)
        self._put(
            "INSERT OR REPLACE INTO user_docs (user_id, kind, doc) VALUES (?,?,?)",
            (user_id, kind, json.dumps(doc, separators=(",", ":"))),
        )

    def put_friend_request(self, request: FriendRequest) -> None:
        self._check()
        super().put_friend_request(request)
        self._put(
            "INSERT OR REPLACE INTO friend_requests (from_id, to_id, message, source, source_id,"
            " created_at, seq) VALUES (?,?,?,?,?,?,?)",
            (
                request.from_user_id,
                request.to_user_id,
                request.message,
                request.source,
                request.source_id,
                request.created_at,
                self._next_social(),
            ),
        )

    def delete_friend_request(self, from_user_id: int, to_user_id: int) -> None:
        if self.get_friend_request(from_user_id, to_user_id) is None:
            return
        self._check()
        super().delete_friend_request(from_user_id, to_user_id)
        self._put(
            "DELETE FROM friend_requests WHERE from_id = ? AND to_id = ?",
            (from_user_id, to_user_id),
        )

    def add_friends(self, user_a: int, user_b: int, now_ms: int) -> None:
        if self.friends_since(user_a, user_b) is not None:
            return
        self._check()
        super().add_friends(user_a, user_b, now_ms)
        self._put(
            "INSERT OR REPLACE INTO friends (a, b, since, seq) VALUES (?,?,?,?)",
            (user_a, user_b, now_ms, self._next_social()),
        )

    def remove_friends(self, user_a: int, user_b: int) -> None:
        if self.friends_since(user_a, user_b) is None:
            return
        self._check()
        super().remove_friends(user_a, user_b)
        self._put(
            "DELETE FROM friends WHERE (a = ? AND b = ?) OR (a = ? AND b = ?)",
            (user_a, user_b, user_b, user_a),
        )

    def block(self, user_id: int, target_id: int, now_ms: int) -> None:
        if self.blocked_at(user_id, target_id) is not None:
            return
        self._check()
        super().block(user_id, target_id, now_ms)
        self._put(
            "INSERT OR REPLACE INTO blacklist (user_id, target_id, blocked_at, seq)"
            " VALUES (?,?,?,?)",
            (user_id, target_id, now_ms, self._next_social()),
        )

    def unblock(self, user_id: int, target_id: int) -> None:
        if self.blocked_at(user_id, target_id) is None:
            return
        self._check()
        super().unblock(user_id, target_id)
        self._put("DELETE FROM blacklist WHERE user_id = ? AND target_id = ?", (user_id, target_id))

    def put_qrcode(self, code: QRCode) -> None:
        self._check()
        known = self.get_qrcode(code.qr_key) is not None
        super().put_qrcode(code)
        if known:
            self._put(
                "UPDATE qrcodes SET used_count = ?, revoked_at = ?, expire_at = ?, max_usage = ?"
                " WHERE qr_key = ?",
                (code.used_count, code.revoked_at, code.expire_at, code.max_usage, code.qr_key),
            )
            return
        self._put(
            "INSERT INTO qrcodes (qr_key, qr_type, target_id, creator_id, token, created_at,"
            " expire_at, max_usage, used_count, revoked_at, metadata, seq)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                code.qr_key,
                code.qr_type,
                code.target_id,
                code.creator_id,
                code.token,
                code.created_at,
                code.expire_at,
                code.max_usage,
                code.used_count,
                code.revoked_at,
                code.metadata,
                self._next_social(),
            ),
        )

    def put_search_session(
        self, session_id: int, searcher_id: int, target_id: int, expires_at: int
    ) -> None:
        self._check()
        super().put_search_session(session_id, searcher_id, target_id, expires_at)
        self._put(
            "INSERT OR REPLACE INTO search_sessions (session_id, searcher_id, target_id,"
            " expires_at) VALUES (?,?,?,?)",
            (session_id, searcher_id, target_id, expires_at),
        )

    def sweep_search_sessions(self, now_ms: int) -> int:
        dropped = super().sweep_search_sessions(now_ms)
        if dropped and not self._failing:
            self._put("DELETE FROM search_sessions WHERE expires_at < ?", (now_ms,))
        return dropped

    # ---- channel preferences and broadcast channels (issue 12) ---------------------------------
    def put_channel_prefs(self, prefs: ChannelPrefs) -> None:
        self._check()
        super().put_channel_prefs(prefs)
        self._put(
            "INSERT OR REPLACE INTO channel_prefs (user_id, channel_id, pinned_at, muted,"
            " hidden_pts, updated_at) VALUES (?,?,?,?,?,?)",
            (
                prefs.user_id,
                prefs.channel_id,
                prefs.pinned_at,
                int(prefs.muted),
                prefs.hidden_pts,
                prefs.updated_at,
            ),
        )

    def set_direct_source(self, channel_id: int, source: str, source_id: str) -> None:
        if self.direct_source(channel_id) is not None:
            return
        self._check()
        super().set_direct_source(channel_id, source, source_id)
        self._put(
            "INSERT OR IGNORE INTO direct_sources (channel_id, source, source_id) VALUES (?,?,?)",
            (channel_id, source, source_id),
        )

    def create_broadcast(
        self,
        owner_id: int,
        name: str,
        description: str | None,
        avatar_url: str | None,
        now_ms: int,
    ) -> Broadcast:
        self._check()
        bc = super().create_broadcast(owner_id, name, description, avatar_url, now_ms)
        self._put(
            "INSERT INTO broadcasts (channel_id, owner_id, name, description, avatar_url,"
            " created_at) VALUES (?,?,?,?,?,?)",
            (bc.channel_id, owner_id, name, description, avatar_url, now_ms),
        )
        self._put(
            "INSERT OR IGNORE INTO broadcast_subs (channel_id, user_id, subscribed_at)"
            " VALUES (?,?,?)",
            (bc.channel_id, owner_id, now_ms),
        )
        return bc

    def subscribe_broadcast(self, channel_id: int, user_id: int, now_ms: int) -> int:
        bc = self._broadcasts[channel_id]
        if user_id in bc.subscribers:
            return bc.subscribers[user_id]
        self._check()
        since = super().subscribe_broadcast(channel_id, user_id, now_ms)
        self._put(
            "INSERT OR IGNORE INTO broadcast_subs (channel_id, user_id, subscribed_at)"
            " VALUES (?,?,?)",
            (channel_id, user_id, since),
        )
        return since

    def publish_post(
        self,
        channel_id: int,
        author_id: int,
        content: str,
        title: str | None,
        content_type: str,
        now_ms: int,
    ) -> BroadcastPost:
        self._check()
        post = super().publish_post(channel_id, author_id, content, title, content_type, now_ms)
        self._put(
            "INSERT INTO broadcast_posts (content_id, channel_id, author_id, content, title,"
            " content_type, created_at) VALUES (?,?,?,?,?,?,?)",
            (
                post.content_id,
                channel_id,
                author_id,
                content,
                title,
                content_type,
                now_ms,
            ),
        )
        return post

    # ---- durability ----------------------------------------------------------------------------
    def attach(
        self,
        notify: Callable[[Callable[..., None], tuple[Any, ...]], None],
        schedule: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        """How the writer reaches the event loop (``loop.call_soon_threadsafe``-like), and how
        the loop's thread runs a callback at the end of its turn (``loop.call_soon``: the
        writer is then kicked once per turn; without it, once per write)."""
        self._notify = notify
        self._schedule = schedule
        self.poll = self._poll

    def _report(self, fn: Callable[..., None], *args: Any) -> None:
        """On the writer's thread: queue ``fn(*args)`` for the loop, and wake it. The loop runs
        the queue in order, at the latest on its next turn (``notify``), sooner when a read
        comes first (``poll``): a commit's replies need not wait for the turn to end."""
        notify = self._notify
        if notify is not None:
            self._reports.append((fn, args))
            notify(self._run_reports, ())
        elif fn == self._on_failure:  # no loop (a script, the contract suite): flush() waits
            self._failing = True
        elif fn == self._on_sync_failure:
            self._sync_dead = self._failing = True

    def _run_reports(self) -> None:
        """On the loop's thread: what the writer reported so far, in order (commits and
        failures alike, so a failure never overtakes the commit before it)."""
        reports = self._reports
        while reports:
            fn, args = reports.popleft()
            try:
                fn(*args)
            except Exception:
                log.exception("a store report failed")

    def _poll(self) -> None:
        if self._reports:
            self._run_reports()

    def _on_commit(self, upto: int, batch: int, seconds: float) -> None:
        if self._sync_dead:
            return
        if self._failing:
            log.warning("the store is writable again")
        self._failing = False
        self.commits += 1
        self.committed_ops += batch
        self.commit_seconds += seconds
        self.last_batch = batch
        self.largest_batch = max(self.largest_batch, batch)
        if batch:  # (flush reports what the writer did without a batch of its own)
            self.commit_buckets[bisect.bisect_left(COMMIT_BUCKETS, seconds)] += 1
            self.batch_buckets[bisect.bisect_left(BATCH_BUCKETS, batch)] += 1
        if upto > self.durable_seq:
            self.durable_seq = upto
        self._trim(upto)
        pending = self._oldest_pending
        while pending and pending[0][0] <= upto:
            pending.popleft()
        if not pending and self.write_seq > upto:
            pending.append((upto + 1, time.monotonic()))
        waiters = self._waiters
        while waiters and waiters[0][0] <= upto:
            _, _, callback = heapq.heappop(waiters)
            try:
                callback()
            except Exception:
                log.exception("a durability callback failed")

    def _on_failure(self, message: str) -> None:
        self._failing = True
        log.error("the store cannot commit (%s); refusing writes until it can", message)

    def _on_sync_failure(self, message: str) -> None:
        self._sync_dead = self._failing = True
        log.critical(
            "the store cannot make its commits durable (%s); refusing writes until the server "
            "is restarted (nothing that sync covered was acknowledged)",
            message,
        )

    def when_durable(self, ticket: int, callback: Callable[[], None]) -> None:
        if ticket <= self.durable_seq:
            callback()
            return
        self._waiter_n += 1
        heapq.heappush(self._waiters, (ticket, self._waiter_n, callback))

    def persistence_lag(self) -> float:
        pending = self._oldest_pending
        if not pending or self.write_seq <= self.durable_seq:
            return 0.0
        return time.monotonic() - pending[0][1]

    def flush(self) -> None:
        if self._sync_dead:  # (nothing more becomes durable: do not wait for it)
            log.error("flush: %d writes are not durable", self.write_seq - self._writer.committed)
            return
        if not self._writer.wait_committed(self.write_seq, timeout=30.0):
            log.error("flush: %d writes are not durable", self.write_seq - self._writer.committed)
            return
        self._on_commit(self._writer.committed, 0, 0.0)

    def close(self) -> None:
        self._writer.stop()
        self._writer.join(30)
        if self._syncer is not None:  # (after the writer: it syncs what the writer committed)
            self._syncer.stop()
            self._syncer.join(30)
        self._checkpointer.stop()
        self._checkpointer.join(30)
        for db in (self._reader, self._wdb):
            try:
                db.close()
            except sqlite3.Error:
                pass
        self._unlock()

    @property
    def failing(self) -> bool:
        return self._failing

    def stats(self) -> dict[str, int]:
        out = super().stats()
        out["messages_in_memory"] = sum(len(v) for v in self._logs.values())
        out["dedup_keys"] += len(self._keys)
        out["messages"] = sum(self.current_pts(c) for c in self._channels)
        return out

    def durability_stats(self) -> dict[str, float]:
        return {
            "commits_total": self.commits,
            "committed_writes_total": self.committed_ops,
            "commit_seconds_total": self.commit_seconds,
            "last_batch_writes": self.last_batch,
            "largest_batch_writes": self.largest_batch,
            "pending_writes": self.write_seq - self.durable_seq,
            "failing": int(self._failing),
            "checkpoints_total": self._checkpointer.checkpoints,
            "wal_resets_total": self._writer.wal_resets,
            "wal_frames": self._checkpointer.wal_frames,
            "wal_syncs_total": 0 if self._syncer is None else self._syncer.syncs,
        }

    def durability_histograms(self) -> dict[str, tuple[tuple[float, ...], list[int], float]]:
        return {
            "commit_seconds": (COMMIT_BUCKETS, self.commit_buckets, self.commit_seconds),
            "batch_writes": (BATCH_BUCKETS, self.batch_buckets, float(self.committed_ops)),
        }


def backup(data_dir: pathlib.Path, dest: pathlib.Path) -> int:
    """An online, consistent copy of the store (SQLite's backup API) while a server may run;
    returns the bytes written."""
    src_path = data_dir / DB_NAME
    if not src_path.exists():
        raise StoreOpenError(f"{src_path} does not exist")
    if dest.exists():
        raise StoreOpenError(f"{dest} exists; not overwriting")
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True, timeout=30)
    try:
        out = sqlite3.connect(dest)
        try:
            src.backup(out)
            row = out.execute("PRAGMA integrity_check").fetchone()
            if row is None or row[0] != "ok":
                raise StoreOpenError(f"the copy failed its integrity check: {row}")
        finally:
            out.close()
    finally:
        src.close()
    return dest.stat().st_size

"""Idempotency keys in the SQLite store (schema 2): a message's key is its own row's, rebuilt from
``messages`` at start, with no row of its own; only a key no message row implies gets a dedup row.
And the migrations of a schema-1 store (a dedup row per key) to schema 2, and of a schema-2 one
(``messages`` clustered on channel and pts) to schema 3."""

from __future__ import annotations

import pathlib
import sqlite3
import time

from privchat_tcp.service.model import DIRECT, KIND_MESSAGE, DedupEntry, Record
from privchat_tcp.store import sqlite as sqlite_store
from privchat_tcp.store.sqlite import DB_NAME, SCHEMA_VERSION, SQLiteStore


def _now() -> int:
    return int(time.time() * 1000)


def _send(store: SQLiteStore, cid: int, sender: int, device: str, local_id: int) -> Record:
    """What ``MessageService.send`` does with the store: commit, then the key."""
    ts = _now()
    r = store.commit(
        Record(
            0, 10**15 + local_id, cid, DIRECT, sender, device, local_id, 0, ts, b"p", b"", False, 0
        )
    )
    store.dedup_put(sender, device, local_id, DedupEntry(r.message_id, r.pts, cid, ts))
    return r


def _rows(path: pathlib.Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path / DB_NAME)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_a_message_key_has_no_row_of_its_own_and_survives_a_restart(
    tmp_path: pathlib.Path,
) -> None:
    store = SQLiteStore(tmp_path)
    cid = store.get_or_create_direct(1, 2, _now())[0].channel_id
    sent = [_send(store, cid, 1, "phone", 100 + i) for i in range(20)]
    no_key = store.commit(
        Record(0, 7, cid, DIRECT, 2, "tab", 0, 0, _now(), b"q", b"", False, KIND_MESSAGE)
    )
    # a key that is not the record's own (another message id): a dedup row
    store.dedup_put(2, "tab", 555, DedupEntry(12345, 3, cid, _now()))
    store.flush()
    store.close()
    assert _rows(tmp_path, "SELECT sender, local_id, message_id FROM dedup") == [(2, "555", 12345)]

    again = SQLiteStore(tmp_path)
    try:
        for r in sent:
            got = again.dedup_get(1, "phone", r.local_message_id)
            assert got == DedupEntry(r.message_id, r.pts, cid, r.timestamp)
        extra = again.dedup_get(2, "tab", 555)
        assert extra is not None and (extra.message_id, extra.pts) == (12345, 3)
        assert again.dedup_get(2, "tab", 0) is None  # a message without a key has none
        assert no_key.pts == 21 and again.current_pts(cid) == 21
        assert again.stats()["dedup_keys"] == 21
        # the channel's pts is its last message row's (no update of its own per message)
        assert _rows(tmp_path, f"SELECT pts FROM channels WHERE channel_id = {cid}") == [(21,)]
    finally:
        again.close()


def test_expired_message_keys_are_not_loaded(tmp_path: pathlib.Path) -> None:
    store = SQLiteStore(tmp_path, dedup_retention=3600)
    cid = store.get_or_create_direct(1, 2, _now())[0].channel_id
    old = _now() - 7200 * 1000
    r = store.commit(Record(0, 99, cid, DIRECT, 1, "d", 5, 0, old, b"p", b"", False, 0))
    store.dedup_put(1, "d", 5, DedupEntry(r.message_id, r.pts, cid, old))
    fresh = _send(store, cid, 1, "d", 6)
    store.flush()
    store.close()
    again = SQLiteStore(tmp_path, dedup_retention=3600)
    try:
        assert again.dedup_get(1, "d", 5) is None  # older than the retention
        assert again.dedup_get(1, "d", 6) is not None and fresh.pts == 2
        assert len(again.read_log(cid, 0, 10)) == 2  # the message itself stays
    finally:
        again.close()


def test_a_schema_1_store_is_migrated(tmp_path: pathlib.Path) -> None:
    store = SQLiteStore(tmp_path)
    cid = store.get_or_create_direct(1, 2, _now())[0].channel_id
    sent = [_send(store, cid, 1, "phone", 100 + i) for i in range(5)]
    store.dedup_put(2, "tab", 555, DedupEntry(12345, 3, cid, _now()))
    store.flush()
    store.close()
    # what schema 1 wrote: a dedup row for every message key too
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.executemany(
        "INSERT INTO dedup (sender, device, local_id, message_id, pts, channel_id, timestamp)"
        " VALUES (?,?,?,?,?,?,?)",
        [
            (1, "phone", str(r.local_message_id), r.message_id, r.pts, cid, r.timestamp)
            for r in sent
        ],
    )
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    assert len(_rows(tmp_path, "SELECT * FROM dedup")) == 6

    again = SQLiteStore(tmp_path)
    try:
        assert _rows(tmp_path, "SELECT value FROM meta WHERE key = 'schema_version'") == [
            (str(SCHEMA_VERSION),)
        ]
        # the rows the messages imply are gone, the other one stays
        assert _rows(tmp_path, "SELECT local_id FROM dedup") == [("555",)]
        for r in sent:
            got = again.dedup_get(1, "phone", r.local_message_id)
            assert got is not None and (got.message_id, got.pts) == (r.message_id, r.pts)
        assert again.dedup_get(2, "tab", 555) is not None
        assert _send(again, cid, 1, "phone", 200).pts == 6
    finally:
        again.close()


def test_a_key_whose_message_left_the_window_answers_from_disk(tmp_path: pathlib.Path) -> None:
    store = SQLiteStore(tmp_path, window=4)
    try:
        cid = store.get_or_create_direct(1, 2, _now())[0].channel_id
        first = _send(store, cid, 1, "phone", 1)
        for i in range(20):
            _send(store, cid, 1, "phone", 2 + i)
        store.flush()
        assert not store.in_window(cid, 0)  # the first message is on disk only
        got = store.dedup_get(1, "phone", 1)
        assert got == DedupEntry(first.message_id, 1, cid, first.timestamp)
        # the same numbers under another sender or device are another key
        assert store.dedup_get(1, "tablet", 1) is None
        assert store.dedup_get(3, "phone", 1) is None
        # swept once every shard was visited (one shard per call), and then a miss
        swept = sum(store.dedup_sweep(_now() + 1000) for _ in range(2000))
        assert swept == 21 and store.dedup_get(1, "phone", 1) is None
        assert store.stats()["dedup_keys"] == 0
    finally:
        store.close()


#: ``messages`` as schema 2 laid it out: clustered on (channel_id, pts)
_MESSAGES_V2 = f"""
CREATE TABLE messages_v2 {
    sqlite_store._MESSAGES_TABLE.replace(
        "UNIQUE (channel_id, pts))", "PRIMARY KEY (channel_id, pts)) WITHOUT ROWID"
    )
};
INSERT INTO messages_v2 SELECT * FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v2 RENAME TO messages;
CREATE INDEX messages_by_id ON messages (message_id);
UPDATE meta SET value = '2' WHERE key = 'schema_version';
"""


def test_a_schema_2_store_is_migrated_to_a_rowid_messages_table(tmp_path: pathlib.Path) -> None:
    """Schema 3 appends message rows in commit order; a schema-2 store (``messages`` clustered
    on channel and pts) is rebuilt at start with every row, its keys and its revokes."""
    store = SQLiteStore(tmp_path, window=2)
    a = store.get_or_create_direct(1, 2, _now())[0].channel_id
    b = store.get_or_create_direct(1, 3, _now())[0].channel_id
    sent = [_send(store, (a, b)[i % 2], 1, "phone", 100 + i) for i in range(9)]
    store.mark_revoked(a, sent[0].message_id, 1, _now())
    store.flush()
    store.close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.executescript(_MESSAGES_V2)
    db.close()
    old_sql = _rows(tmp_path, "SELECT sql FROM sqlite_master WHERE name = 'messages'")[0][0]
    assert "WITHOUT ROWID" in str(old_sql)

    again = SQLiteStore(tmp_path, window=2)
    try:
        assert _rows(tmp_path, "SELECT value FROM meta WHERE key = 'schema_version'") == [("3",)]
        sql = _rows(tmp_path, "SELECT sql FROM sqlite_master WHERE name = 'messages'")[0][0]
        assert "WITHOUT ROWID" not in str(sql) and "UNIQUE (channel_id, pts)" in str(sql)
        assert _rows(tmp_path, "PRAGMA integrity_check") == [("ok",)]
        # every row, in commit order; what is older than the window is read from disk
        ids = [r[0] for r in _rows(tmp_path, "SELECT message_id FROM messages ORDER BY rowid")]
        assert ids == sorted(r.message_id for r in sent)
        for cid in (a, b):
            log_ = again.read_log(cid, 0, 100)
            assert [r.message_id for r in log_] == [
                r.message_id for r in sent if r.channel_id == cid
            ]
        first = again.find_message(a, sent[0].message_id)
        assert first is not None and first.revoked
        for r in sent:  # the keys, from the rows
            got = again.dedup_get(1, "phone", r.local_message_id)
            assert got is not None and (got.message_id, got.pts) == (r.message_id, r.pts)
        assert _send(again, a, 1, "phone", 500).pts == 6
        assert _send(again, b, 1, "phone", 501).pts == 5
        again.flush()
    finally:
        again.close()
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (11,)

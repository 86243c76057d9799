"""The SQLite writer's twins (``store/_batch_py.py``, ``ext/_batch_c.pyx``) commit the same
batches to the same rows, refuse the same bad ones with the same errors and commit nothing of
them, and keep SQLite's own checkpoints out of the commits."""

from __future__ import annotations

import os
import pathlib
import random
import sqlite3
from types import ModuleType
from typing import Any

import pytest

from privchat_tcp.service import _record_py
from privchat_tcp.store import _batch_py, _sql
from privchat_tcp.store import sqlite as sqlite_store

REQUIRE_EXT = bool(os.environ.get("PRIVCHAT_REQUIRE_EXT"))
try:
    from privchat_tcp.store import _batch_c
except ImportError:
    if REQUIRE_EXT:
        raise
    _batch_c = None  # type: ignore[assignment]
try:
    from privchat_tcp.service import _record_c
except ImportError:
    if REQUIRE_EXT:
        raise
    _record_c = None  # type: ignore[assignment]

TWINS = [_batch_py] + ([_batch_c] if _batch_c is not None else [])
IDS = ["py"] + (["c"] if _batch_c is not None else [])

Op = tuple[str, Any]

SCRATCH = "CREATE TABLE scratch (k INTEGER PRIMARY KEY, v)"
NEW_CHANNEL = (
    "INSERT INTO channels (channel_id, channel_type, created_at, name, owner_id, updated_at,"
    " all_muted, max_members) VALUES (?, 2, 0, ?, 1, 0, 0, 500)"
)
RENAME = "UPDATE channels SET name = ? WHERE channel_id = ?"
REVOKE = (
    "UPDATE messages SET revoked = 1, revoked_by = ?, revoked_at = ?"
    " WHERE channel_id = ? AND pts = ?"
)
SWEEP = "DELETE FROM dedup WHERE timestamp < ?"
PUT = "INSERT OR REPLACE INTO scratch (k, v) VALUES (?, ?)"


def fresh(tmp: pathlib.Path, name: str) -> pathlib.Path:
    path = tmp / f"{name}.db"
    db = sqlite3.connect(path)
    db.executescript(sqlite_store._SCHEMA + SCRATCH + ";")
    db.close()
    return path


def dump(path: pathlib.Path) -> dict[str, list[tuple[Any, ...]]]:
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}
    finally:
        db.close()


def message(cid: int, pts: int, mid: int, text: str = "hi") -> Op:
    return (
        _sql.INSERT_MESSAGE,
        (
            cid,
            pts,
            mid,
            2,
            7,
            "dev",
            str(mid),
            1,
            1000 + mid,
            b"\x00p",
            text.encode(),
            0,
            0,
            0,
            0,
            0,
            0,
        ),
    )


def dedup(sender: int, local: int, mid: int, pts: int, cid: int, ts: int) -> Op:
    return (_sql.INSERT_DEDUP, (sender, "dev", str(local), mid, pts, cid, ts))


class Gen:
    """Random batches over three channels: messages, dedup keys (some replaced), a pts set on
    its own, renames, revokes of earlier rows, sweeps, and scratch rows of every type."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.pts = {1: 0, 2: 0, 3: 0}
        self.mid = 100

    def batch(self) -> list[Op]:
        rng = self.rng
        ops: list[Op] = []
        for _ in range(rng.randrange(1, 120)):
            kind = rng.random()
            cid = rng.choice(list(self.pts))
            if kind < 0.5:
                self.pts[cid] += 1
                self.mid += 1
                ops.append(message(cid, self.pts[cid], self.mid, "m" * rng.randrange(0, 50)))
            elif kind < 0.65:
                ops.append(
                    dedup(rng.randrange(3), rng.randrange(20), self.mid, 1, cid, rng.randrange(50))
                )
            elif kind < 0.7:
                ops.append((_sql.SET_PTS, (self.pts[cid] + rng.randrange(3), cid)))
            elif kind < 0.78:
                ops.append((RENAME, (f"name-{rng.randrange(1000)}", cid)))
            elif kind < 0.86 and self.pts[cid]:
                ops.append(
                    (REVOKE, (9, rng.randrange(1 << 40), cid, rng.randrange(1, self.pts[cid] + 1)))
                )
            elif kind < 0.9:
                ops.append((SWEEP, (rng.randrange(30),)))
            else:
                value = rng.choice(
                    [
                        None,
                        rng.randrange(-(1 << 63), 1 << 63),
                        rng.random(),
                        "é€" * 3,
                        b"\x00\xff",
                        True,
                    ]
                )
                ops.append((PUT, [rng.randrange(10), value]))
        return ops


def channels() -> list[Op]:
    return [(NEW_CHANNEL, (cid, f"c{cid}")) for cid in (1, 2, 3)]


@pytest.mark.parametrize("twin", TWINS, ids=IDS)
def test_random_batches_leave_the_rows_the_changes_made_in_order_would(
    tmp_path: pathlib.Path, twin: ModuleType
) -> None:
    """Each twin against the same batches run one statement at a time through the sqlite3
    module, in order (no grouping): the same rows."""
    path = fresh(tmp_path, "twin")
    ref_path = fresh(tmp_path, "ref")
    w = twin.WriterDB(str(path), "FULL")
    ref = sqlite3.connect(ref_path, isolation_level=None)
    gen = Gen(7)
    try:
        for ops in [channels()] + [gen.batch() for _ in range(40)]:
            w.commit(ops)
            ref.execute("BEGIN")
            for sql, params in ops:
                if sql is _sql.INSERT_MESSAGE:
                    ref.execute(sql, params)
                    ref.execute(_sql.SET_PTS, (params[1], params[0]))
                else:
                    ref.execute(sql, params)
            ref.execute("COMMIT")
    finally:
        w.close()
        ref.close()
    got, want = dump(path), dump(ref_path)
    assert got["messages"] and got["dedup"] and got["scratch"]
    assert got == want


@pytest.mark.parametrize("twin", TWINS, ids=IDS)
def test_a_bad_batch_commits_nothing_and_the_next_one_commits(
    tmp_path: pathlib.Path, twin: ModuleType
) -> None:
    path = fresh(tmp_path, "db")
    w = twin.WriterDB(str(path), "NORMAL")
    try:
        w.commit(channels() + [message(1, 1, 101)])
        before = dump(path)
        bad: list[tuple[list[Op], type[BaseException]]] = [
            ([message(1, 2, 102), (PUT, (1, 1 << 64))], OverflowError),
            ([message(1, 2, 102), (PUT, (1, "\ud800"))], UnicodeEncodeError),
            ([message(1, 2, 102), (PUT, (1,))], sqlite3.ProgrammingError),
            ([message(1, 2, 102), (PUT, (1, object()))], sqlite3.ProgrammingError),
            ([message(1, 2, 102), message(1, 1, 103)], sqlite3.IntegrityError),  # pts 1 again
            ([message(1, 2, 102), ("UPDATE nowhere SET x = 1", ())], sqlite3.OperationalError),
            (
                [(PUT, (1, 2)), ("DELETE FROM scratch; DELETE FROM dedup", ())],
                sqlite3.ProgrammingError,
            ),
        ]
        for ops, error in bad:
            with pytest.raises(error):
                w.commit(ops)
            assert dump(path) == before, ops
        w.commit([message(1, 2, 102), (PUT, (1, bytearray(b"ba"))), (PUT, (2, memoryview(b"mv")))])
        after = dump(path)
        assert [r[:3] for r in after["messages"]] == [(1, 1, 101), (1, 2, 102)]
        assert after["scratch"] == [(1, b"ba"), (2, b"mv")]
        assert dict((r[0], r[-1]) for r in after["channels"])[1] == 2
    finally:
        w.close()
    with pytest.raises(sqlite3.ProgrammingError):
        w.commit([(PUT, (3, 3))])


@pytest.mark.parametrize("twin", TWINS, ids=IDS)
def test_commits_leave_the_wal_to_the_checkpointer(
    tmp_path: pathlib.Path, twin: ModuleType
) -> None:
    """``wal_autocheckpoint=0`` on the writer's connection: past SQLite's default of 1,000
    pages, the WAL still holds every commit until ``checkpoint`` copies it."""
    path = fresh(tmp_path, "db")
    w = twin.WriterDB(str(path), "NORMAL")
    try:
        for i in range(30):  # ~1,500 pages of 4 KiB
            w.commit([(PUT, (i, os.urandom(200_000)))])
        busy, frames, done = w.checkpoint()
        assert busy == 0 and frames > 1000 and done == frames
        reader = sqlite3.connect(path)
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reader.execute("SELECT count(*) FROM scratch").fetchone()[0] == 30
        reader.close()
    finally:
        w.close()


RECORD_KINDS = [_record_py] + ([_record_c] if _record_c is not None else [])


@pytest.mark.parametrize("twin", TWINS, ids=IDS)
@pytest.mark.parametrize(
    "records", RECORD_KINDS, ids=["py-record", "c-record"][: len(RECORD_KINDS)]
)
def test_a_record_queued_as_is_makes_its_row_as_committed(
    tmp_path: pathlib.Path, twin: ModuleType, records: ModuleType
) -> None:
    """The store queues a message's Record itself (``_sql.committed_row``): the row is the
    record's as it was committed, not revoked even if the loop marked it revoked since (its
    revoke's UPDATE comes later in the queue); a local id past 2**63 - 1 is stored as text."""
    path = fresh(tmp_path, "db")
    w = twin.WriterDB(str(path), "FULL")
    rows = []
    ops: list[Op] = []
    for pts, lid in ((1, 5), (2, (1 << 64) - 1), (3, 0)):
        r = records.Record(
            pts, 1000 + pts, 1, 2, 7, "dév", lid, 1, 1234, b"\x00p", b"c", pts == 2, 0
        )
        ops.append((_sql.INSERT_MESSAGE, r))
        row = _sql.committed_row(r)
        rows.append(row[:6] + (str(lid),) + row[7:])  # (TEXT affinity: an int is its text)
    ops[0][1].revoked, ops[0][1].revoked_by, ops[0][1].revoked_at = True, 9, 99
    try:
        w.commit(channels() + ops)
    finally:
        w.close()
    got = dump(path)
    assert got["messages"] == sorted(rows, key=repr)
    assert [r[6] for r in got["messages"]] == ["5", str((1 << 64) - 1), "0"]
    assert all(r[13:16] == (0, 0, 0) for r in got["messages"])
    assert dict((r[0], r[-1]) for r in got["channels"])[1] == 3

"""What the SQLite store and its writer's twins (``_batch_py``, ``ext/_batch_c.pyx``) share:
how a connection is set up, and the hot statements the writer treats apart."""

from __future__ import annotations

import pathlib
import sqlite3
from typing import Any

__all__ = [
    "INSERT_DEDUP",
    "INSERT_MESSAGE",
    "SET_PTS",
    "WAL_SIZE_LIMIT",
    "BUSY_TIMEOUT_S",
    "committed_row",
    "connect",
    "pragmas",
]

#: bytes the WAL file is truncated to when it is restarted (a long read can let it grow)
WAL_SIZE_LIMIT = 64 << 20
#: how long a connection waits for a lock another one holds (the checkpointer, a reader)
BUSY_TIMEOUT_S = 30

#: a message row (with its idempotency key: schema 2); its channel's pts is the row's. Its
#: params: the 17 values, or the Record itself (``committed_row``: the writer takes its values)
INSERT_MESSAGE = (
    "INSERT INTO messages (channel_id, pts, message_id, channel_type, sender_id, sender_device,"
    " local_message_id, message_type, timestamp, payload, content, e2e, kind, revoked,"
    " revoked_by, revoked_at, target_message_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
#: (pts, channel_id)
SET_PTS = "UPDATE channels SET pts = ? WHERE channel_id = ?"
#: a key that is not its message row's own
INSERT_DEDUP = (
    "INSERT OR REPLACE INTO dedup (sender, device, local_id, message_id, pts, channel_id,"
    " timestamp) VALUES (?,?,?,?,?,?,?)"
)


def pragmas(synchronous: str) -> list[str]:
    """The settings of every connection to the store, in order."""
    return [
        "PRAGMA journal_mode=WAL",
        f"PRAGMA synchronous={synchronous}",
        # No checkpoint inside a commit (SQLite's default, every 1,000 WAL pages, copies them
        # to the database and fsyncs it before the COMMIT returns, stalling every write behind
        # it): the store's checkpointer thread does it off the writer's path.
        "PRAGMA wal_autocheckpoint=0",
        f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}",
    ]


def connect(path: pathlib.Path, synchronous: str) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), any thread's."""
    db = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
    )
    for pragma in pragmas(synchronous):
        db.execute(pragma)
    return db


def committed_row(record: Any) -> tuple[Any, ...]:
    """The INSERT_MESSAGE values of a Record queued at its commit: its row as it was then,
    not revoked (the store queues a revoke's UPDATE after it, and the writer may read the
    record after the loop marked it: the row must not show a revoke its batch does not hold)."""
    lid = record.local_message_id
    return (
        record.channel_id,
        record.pts,
        record.message_id,
        record.channel_type,
        record.sender_id,
        record.sender_device,
        lid if lid < 1 << 63 else str(lid),
        record.message_type,
        record.timestamp,
        record.payload,
        record.content,
        int(record.e2e),
        record.kind,
        0,
        0,
        0,
        record.target_message_id,
    )

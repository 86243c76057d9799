"""The SQLite writer's connection, pure-Python twin (``ext/_batch_c.pyx`` is the compiled one).

``WriterDB.commit(ops)`` runs a batch of ``(sql, params)`` in one transaction and returns once
it is committed (durable as ``synchronous`` says). The hot statements (``_sql.INSERT_MESSAGE``,
``INSERT_DEDUP``, ``SET_PTS``, recognised by identity) are grouped per table into multi-row
statements, and a channel's pts is written once per group, its last value (a message row
carries its channel's pts: one op, not two). They commute with each other (distinct tables and
keys); every other statement is a barrier: what was grouped before it runs first, so each row
ends as the changes made in order would leave it. (On one CPU the writer waits for the GIL
after each step while the loop runs: fewer steps, shorter commits.)

Errors are the ``sqlite3`` module's (``sqlite3.Error``), or ``OverflowError`` (an int SQLite
cannot hold), ``UnicodeEncodeError`` (a str UTF-8 cannot), ``TypeError``/``ValueError``; the
transaction is then rolled back, and nothing of the batch is committed.
"""

from __future__ import annotations

import pathlib
import sqlite3
from typing import Any

from ._sql import INSERT_DEDUP, INSERT_MESSAGE, SET_PTS, committed_row, connect

__all__ = ["WriterDB", "CHUNKS"]

Op = tuple[str, Any]  # (params: a tuple or list; for INSERT_MESSAGE also a Record)

#: rows per multi-row statement of the grouped inserts, largest first: a batch's rows go out in
#: as few statements as these sizes allow (each statement is one step, one release of the GIL,
#: where ``executemany`` takes one per row)
CHUNKS = (64, 16, 4, 1)


def _rows_sql(head: str, width: int, tail: str = "") -> dict[int, str]:
    """``head`` followed by ``n`` groups of ``width`` placeholders (and ``tail``), per chunk."""
    one = "(" + ",".join("?" * width) + ")"
    return {n: head + ",".join([one] * n) + tail for n in CHUNKS}


_INSERT_MESSAGES = _rows_sql(INSERT_MESSAGE.partition("VALUES")[0] + "VALUES ", 17)
_INSERT_DEDUPS = _rows_sql(INSERT_DEDUP.partition("VALUES")[0] + "VALUES ", 7)
_SET_PTSS = _rows_sql(
    "UPDATE channels SET pts = v.column2 FROM (VALUES ",
    2,
    ") AS v WHERE channels.channel_id = v.column1",
)


def _insert_rows(db: sqlite3.Connection, sqls: dict[int, str], rows: list[Any]) -> None:
    """Run ``sqls`` over ``rows`` in chunks (``CHUNKS``), in order."""
    i = 0
    n = len(rows)
    for size in CHUNKS:
        while n - i >= size:
            db.execute(sqls[size], [v for row in rows[i : i + size] for v in row])
            i += size


class WriterDB:
    """The writer thread's own connection to ``path``."""

    def __init__(self, path: str, synchronous: str) -> None:
        self.db = connect(pathlib.Path(path), synchronous)

    def commit(self, ops: list[Op]) -> None:
        """``ops`` in one transaction (see the module's docstring)."""
        db = self.db
        messages: list[Any] = []
        dedups: list[Any] = []
        pts: dict[int, int] = {}

        def grouped() -> None:
            if messages:
                _insert_rows(db, _INSERT_MESSAGES, messages)
                messages.clear()
            if dedups:
                _insert_rows(db, _INSERT_DEDUPS, dedups)
                dedups.clear()
            if pts:
                _insert_rows(db, _SET_PTSS, list(pts.items()))
                pts.clear()

        db.execute("BEGIN")
        try:
            i = 0
            n = len(ops)
            while i < n:
                sql, params = ops[i]
                if sql is INSERT_MESSAGE:
                    if not isinstance(params, tuple | list):  # a Record (``_sql.committed_row``)
                        params = committed_row(params)
                    messages.append(params)
                    pts[params[0]] = params[1]
                    i += 1
                    continue
                if sql is INSERT_DEDUP:
                    dedups.append(params)
                    i += 1
                    continue
                if sql is SET_PTS:
                    pts[params[1]] = params[0]
                    i += 1
                    continue
                grouped()
                j = i + 1  # runs of the same statement go through executemany
                while j < n and ops[j][0] == sql:
                    j += 1
                if j - i == 1:
                    db.execute(sql, params)
                else:
                    db.executemany(sql, [op[1] for op in ops[i:j]])
                i = j
            grouped()
            db.execute("COMMIT")
        except BaseException:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise

    def checkpoint(self) -> tuple[int, int, int]:
        """``PRAGMA wal_checkpoint(PASSIVE)``: (busy, WAL frames, frames checkpointed)."""
        row = self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def close(self) -> None:
        self.db.close()

"""Seeds from the malformed-input table: each case's bytes, read by the table's own parser
(``tests/malformed_table.py``; nothing of the notation is parsed here)."""

from __future__ import annotations

import functools
import pathlib
import sys
from collections.abc import Iterator
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[2]

if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

import malformed_table  # noqa: E402  (tests/ is not a package)

__all__ = ["ROOT", "malformed_table", "cases", "session_bytes", "frames_of"]


@functools.cache
def cases() -> tuple[tuple[str, str, bytes], ...]:
    """(id, session, bytes) of every case that needs no live session (``seed_inputs``)."""
    sessions = {case.id: case.session for case in malformed_table.load()}
    return tuple((cid, sessions[cid], data) for cid, data in malformed_table.seed_inputs())


def session_bytes(*sessions: str) -> Iterator[tuple[str, bytes]]:
    """(session, bytes) of the cases of those sessions."""
    for _, session, data in cases():
        if session in sessions:
            yield session, data


def frames_of(data: bytes, max_body: int = 1 << 24) -> list[tuple[int, int, int, int, bytes]]:
    """The complete frames at the start of a client's byte stream (the pure splitter)."""
    from privchat_tcp.wire import _frame_py

    frames: list[Any] = _frame_py.split_frames(data, max_body, True)[0]
    return frames


def strip_proxy(data: bytes) -> bytes:
    """A ``proxy`` case's bytes without a valid PROXY header in front (else unchanged)."""
    from privchat_tcp.wire.proxy import ProxyError, ProxyParser

    try:
        result = ProxyParser().feed(data)
    except ProxyError:
        return data
    return data if result is None else result.rest

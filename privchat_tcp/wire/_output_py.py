"""The connection's output path, pure Python: the spec of ``ext/_output_c.pyx``.

``Connection`` binds these functions as its methods (``send_response``, ``send_push``,
``data_to_send``; ``connection.py`` picks the twin through ``_ext``): the frames of every reply
and push of the hot path, built and queued here, and the bytes the adapter takes. A session
with a cipher or compression goes through ``Connection.send``.
"""

from __future__ import annotations

from typing import Protocol

from .commands import FLOW_PUSH, FLOW_RESPONSE
from .frame import encode_header as _encode_header

__all__ = ["Output", "send_response", "send_push", "data_to_send", "count_out", "count_in"]


class Output(Protocol):
    """What the output path reads and writes of a ``Connection``."""

    cipher: object | None
    compression: int
    push_seq: int
    out_bytes: int
    _out: list[bytes]

    def send(
        self,
        seq: int,
        command: int,
        flow: int,
        status: int,
        body: bytes,
        e2e: bool = False,
        compressible: bool = True,
    ) -> None: ...


def send_response(conn: Output, seq: int, command: int, body: bytes, e2e: bool = False) -> None:
    """Queue the response frame to request ``seq``."""
    if conn.cipher is None and not conn.compression:  # the common case, ``send`` inline
        n = len(body)
        conn._out.append(_encode_header(n, seq, command, FLOW_RESPONSE, 0) + body)
        conn.out_bytes += n + 12
    else:
        conn.send(seq, command, FLOW_RESPONSE, 0, body, e2e)


def send_push(conn: Output, command: int, body: bytes, status: int = 0, e2e: bool = False) -> None:
    """Queue a push frame with the connection's next push seq."""
    conn.push_seq = seq = (conn.push_seq + 1) & 0xFFFFFFFF
    if conn.cipher is None and not conn.compression:  # the common case, ``send`` inline
        n = len(body)
        conn._out.append(_encode_header(n, seq, command, FLOW_PUSH, status) + body)
        conn.out_bytes += n + 12
    else:
        conn.send(seq, command, FLOW_PUSH, status, body, e2e)


def data_to_send(conn: Output) -> bytes:
    """Every queued frame as one buffer (one frame: the frame itself, not a copy); the queue
    and ``out_bytes`` start again from empty."""
    out = conn._out
    if not out:
        return b""
    data = b"".join(out)
    del out[:]
    conn.out_bytes = 0
    return data


def count_out(out: list[bytes], by_command: list[int], errors_by_status: list[int]) -> None:
    """Count the frames of ``out`` (each a whole frame: header bytes 9-11 are command, flags
    and status, plaintext even when sealed) by command, and the error responses (flow 1 with
    a status) by status."""
    for f in out:
        by_command[f[9]] += 1
        if f[11] and f[10] & 3 == 1:
            errors_by_status[f[11]] += 1


def count_in(frames: list[tuple[int, int, int, int, bytes]], by_command: list[int]) -> None:
    """Count the split frames (seq, command, flags, status, body) by command."""
    for f in frames:
        by_command[f[1]] += 1

"""The connection output path's twins (``wire/_output_py.py``, ``ext/_output_c.pyx``) queue the
same bytes for the same calls: plain, compressed and sealed sessions, the push seq wrapping at
32 bits, and the same exceptions for values a header cannot hold."""

from __future__ import annotations

import os
import random
import struct
from types import ModuleType

import pytest

from privchat_tcp.wire import _output_py, connection
from privchat_tcp.wire.commands import Cmd
from privchat_tcp.wire.compression import GZIP
from privchat_tcp.wire.connection import Connection
from privchat_tcp.wire.crypto import SessionCipher

REQUIRE_EXT = bool(os.environ.get("PRIVCHAT_REQUIRE_EXT"))
try:
    from privchat_tcp.wire import _output_c
except ImportError:
    if REQUIRE_EXT:
        raise
    _output_c = None  # type: ignore[assignment]

needs_c = pytest.mark.skipif(_output_c is None, reason="_output_c is not built")
SECRET = bytes(range(32))


def test_connection_binds_a_twin() -> None:
    twins = (_output_py, _output_c) if _output_c is not None else (_output_py,)
    assert any(Connection.send_push is t.send_push for t in twins)
    assert any(Connection.send_response is t.send_response for t in twins)
    assert any(Connection.data_to_send is t.data_to_send for t in twins)
    if REQUIRE_EXT:
        assert connection._output_twins.name == "c"


def _connection(kind: str) -> Connection:
    conn = Connection(1 << 20)
    if kind == "gzip":
        conn.set_compression(GZIP)
        conn.compress_threshold = 64
    elif kind == "sealed":
        conn.cipher = SessionCipher.server_side(SECRET)
    return conn


def _drive(impl: ModuleType, conn: Connection, seed: int) -> list[object]:
    """A random run of replies, pushes and takes; what each step left behind."""
    rng = random.Random(seed)
    seen: list[object] = []
    for _ in range(300):
        step = rng.random()
        body = rng.choice([b"", b"x", bytes(rng.randrange(256) for _ in range(rng.randrange(200)))])
        if step < 0.4:
            impl.send_response(
                conn,
                rng.randrange(1 << 32),
                rng.choice((Cmd.PING, Cmd.MS, Cmd.RPC, Cmd.LOGIN)),
                body,
            )
        elif step < 0.8:
            impl.send_push(conn, rng.choice((Cmd.MPS, Cmd.MPB, Cmd.MN)), body, rng.choice((0, 3)))
        else:
            seen.append(impl.data_to_send(conn))
        seen.append((list(conn.frames), conn.out_bytes, conn.push_seq))
    seen.append(impl.data_to_send(conn))
    return seen


@needs_c
@pytest.mark.parametrize("kind", ["plain", "gzip", "sealed"])
def test_the_twins_queue_the_same_bytes(kind: str) -> None:
    for seed in range(5):
        assert _drive(_output_py, _connection(kind), seed) == _drive(
            _output_c, _connection(kind), seed
        )


@needs_c
def test_the_push_seq_wraps_alike() -> None:
    conns = [_connection("plain"), _connection("plain")]
    for impl, conn in zip((_output_py, _output_c), conns, strict=True):
        conn.push_seq = 0xFFFFFFFE
        impl.send_push(conn, Cmd.MPS, b"a")
        impl.send_push(conn, Cmd.MPS, b"b")
        assert conn.push_seq == 0
    assert conns[0].data_to_send() == conns[1].data_to_send()
    assert _output_c.data_to_send(conns[1]) == b""


@needs_c
@pytest.mark.parametrize(
    ("seq", "command", "status", "body"),
    [
        (1 << 32, 3, 0, b"x"),
        (-1, 3, 0, b"x"),
        (1, 256, 0, b"x"),
        (1, 3, 256, b"x"),
        (1, 3, 0, None),
    ],
)
def test_the_twins_refuse_alike(seq: int, command: int, status: int, body: bytes) -> None:
    errors = []
    for impl in (_output_py, _output_c):
        conn = _connection("plain")
        with pytest.raises((struct.error, TypeError)) as info:
            if status:
                impl.send_push(conn, command, body, status)
            else:
                impl.send_response(conn, seq, command, body)
        errors.append(type(info.value))
        assert conn.frames == [] and conn.out_bytes == 0
    assert errors[0] is errors[1]


@needs_c
def test_a_bytearray_body_is_queued_as_bytes() -> None:
    frames = []
    for impl in (_output_py, _output_c):
        conn = _connection("plain")
        impl.send_response(conn, 7, Cmd.RPC, bytearray(b"abc"))
        frames.append(conn.frames[0])
    assert frames[0] == frames[1] and type(frames[0]) is type(frames[1]) is bytes


def _random_frames(rng: random.Random) -> list[bytes]:
    """Whole frames of a few commands, some error responses (flow 1 with a status), pushes
    and requests with a status, and runs of one command."""
    out = []
    for _ in range(rng.randrange(60)):
        command = rng.choice((3, 3, 3, 8, 9, 14, 255))
        flags = rng.choice((0, 1, 2, 3, 0x05, 0x41))
        status = rng.choice((0, 0, 0, 1, 13, 255))
        body = bytes(rng.randrange(3))
        out.append(
            struct.pack(">IBIBBB", len(body), 1, rng.randrange(1 << 32), command, flags, status)
            + body
        )
    return out


def test_the_twins_count_frames_alike() -> None:
    rng = random.Random(7)
    twins = [t for t in (_output_py, _output_c) if t is not None]
    for _ in range(500):
        out = _random_frames(rng)
        frames = [(1, f[9], f[10], f[11], f[12:]) for f in out]
        got = []
        for t in twins:
            by_cmd, errors, by_cmd_in = [0] * 256, [0] * 256, [0] * 256
            t.count_out(out, by_cmd, errors)
            t.count_in(frames, by_cmd_in)
            got.append((by_cmd, errors, by_cmd_in))
        by_cmd, errors, by_cmd_in = got[0]
        assert sum(by_cmd) == len(out) and by_cmd == by_cmd_in
        assert sum(errors) == sum(1 for f in out if f[11] and f[10] & 3 == 1)
        assert all(g == got[0] for g in got)


@needs_c
def test_the_compiled_counter_takes_any_frame_the_pure_one_does() -> None:
    """A frame that is not exact bytes (a bytearray) is counted as the pure twin counts it."""
    out = [bytes(12), bytearray(b"\0" * 9 + b"\x03\x01\x05"), bytes(9) + b"\x03\x01\x05"]
    want, got = ([0] * 256, [0] * 256), ([0] * 256, [0] * 256)
    _output_py.count_out(out, *want)
    _output_c.count_out(out, *got)
    assert got == want and want[0][3] == 2 and want[1][5] == 2

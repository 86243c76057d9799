"""Micro benchmarks (pytest-benchmark).

Run: ``python -m pytest benchmarks/bench_micro.py --benchmark-only -q``
"""

from __future__ import annotations

import os
import time
from types import ModuleType
from typing import Any

import pytest

from benchmarks.dispatch import Bench
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.wire import aead, frame, pbwire

try:
    from privchat_tcp.wire import compression
except ImportError:  # pragma: no cover - optional module
    compression = None  # type: ignore[assignment]
try:
    from privchat_tcp.wire import crypto
except ImportError:  # pragma: no cover - optional module
    crypto = None  # type: ignore[assignment]


def _twins(py: ModuleType, c: ModuleType | None) -> list[Any]:
    """A module and its compiled twin as params (the compiled one skipped when not built)."""
    skip = pytest.mark.skipif(c is None, reason="no C extension")
    return [pytest.param(py, id="py"), pytest.param(c, id="c", marks=skip)]


IMPLS = _twins(frame.impl_py, frame.impl_c)


def _small_frames_buffer(impl: ModuleType, size: int = 64 * 1024) -> bytes:
    """About ``size`` bytes of 32-byte-body request frames."""
    body = b"x" * 32
    one: bytes = impl.encode_header(len(body), 1, 3, 0, 0) + body
    return one * (size // len(one))


@pytest.mark.parametrize("impl", IMPLS)
def test_encode_header(benchmark: Any, impl: ModuleType) -> None:
    enc = impl.encode_header
    result = benchmark(enc, 100, 12345, 4, 0, 0)
    assert len(result) == 12


@pytest.mark.parametrize("impl", IMPLS)
def test_decode_header(benchmark: Any, impl: ModuleType) -> None:
    hdr = impl.encode_header(100, 12345, 4, 0, 0)
    result = benchmark(impl.decode_header, hdr)
    assert result[0] == 100


@pytest.mark.parametrize("impl", IMPLS)
def test_split_frames_64k(benchmark: Any, impl: ModuleType) -> None:
    buf = _small_frames_buffer(impl)
    frames, consumed, violation, _, _ = benchmark(impl.split_frames, buf, 1 << 20, True)
    assert violation == 0 and consumed == len(buf) and len(frames) == len(buf) // 44


def _push() -> pb.PushMessageRequest:
    return pb.PushMessageRequest(
        msg_key="k",
        server_message_id=1234567890123,
        message_seq=42,
        local_message_id=7,
        timestamp=int(time.time()),
        channel_id=99887766,
        channel_type=1,
        message_type=0,
        from_uid=123456,
        payload=b'{"content":"hello world, a short chat message"}',
        from_device="device-1",
    )


def _send() -> pb.SendMessageRequest:
    return pb.SendMessageRequest(
        client_seq=1,
        local_message_id=7,
        channel_id=99887766,
        channel_type=1,
        payload=b'{"content":"hello world, a short chat message"}',
    )


def test_pb_push_encode(benchmark: Any) -> None:
    msg = _push()
    assert benchmark(msg.SerializeToString)


def test_pb_push_decode(benchmark: Any) -> None:
    data = _push().SerializeToString()
    assert benchmark(pb.PushMessageRequest.FromString, data).message_seq == 42


def test_pb_push_build_and_encode(benchmark: Any) -> None:
    assert benchmark(lambda: _push().SerializeToString())


def test_pb_send_encode(benchmark: Any) -> None:
    assert benchmark(lambda: _send().SerializeToString())


def test_pb_send_decode(benchmark: Any) -> None:
    data = _send().SerializeToString()
    assert benchmark(pb.SendMessageRequest.FromString, data).channel_id == 99887766


def test_pong_pbwire(benchmark: Any) -> None:
    now = int(time.time() * 1000)
    assert benchmark(pbwire.pong, now) == pb.PongResponse(timestamp=now).SerializeToString()


def test_pong_protobuf(benchmark: Any) -> None:
    now = int(time.time() * 1000)
    assert benchmark(lambda: pb.PongResponse(timestamp=now).SerializeToString())


# ---- command dispatch (in process: Session.handle + hub flush, no sockets) ------------------
@pytest.mark.parametrize("per_read", [1, 8])
def test_dispatch_ms(benchmark: Any, per_read: int) -> None:
    """One read of ``per_read`` MS frames: decode, commit, reply, push to the peer's session."""
    bench = Bench()
    benchmark.pedantic(
        bench.run, setup=lambda: ((bench.ms_frames(per_read),), {}), rounds=5000 // per_read
    )
    assert bench.receiver.written > 0


@pytest.mark.parametrize("per_read", [1, 32])
def test_dispatch_ping(benchmark: Any, per_read: int) -> None:
    bench = Bench()
    frames = bench.ping_frames(per_read)
    benchmark(bench.run, frames)
    assert not bench.sender.session.conn.frames  # every pong was taken


# ---- compression x encryption ----------------------------------------------------------------
SIZES = {"64B": 64, "1KiB": 1024, "64KiB": 64 * 1024}


def _payload(size: int) -> bytes:
    # chat-like, partly compressible: JSON text with some random bytes mixed in
    chunk = b'{"content":"hello, this is a chat message ' + os.urandom(8).hex().encode() + b'"}'
    return (chunk * (size // len(chunk) + 1))[:size]


def _combos() -> list[Any]:
    if compression is None or crypto is None:
        return [pytest.param(None, None, None, marks=pytest.mark.skip(reason="no modules"))]
    out: list[Any] = []
    for algo_name, algo in (
        ("none", compression.NONE),
        ("gzip", compression.GZIP),
        ("lz4", compression.LZ4),
    ):
        for enc in (False, True):
            for size_name, size in SIZES.items():
                out.append(
                    pytest.param(
                        algo, enc, size, id=f"{algo_name}-{'aes' if enc else 'plain'}-{size_name}"
                    )
                )
    return out


@pytest.mark.parametrize(("algo", "encrypt", "size"), _combos())
def test_seal_body(benchmark: Any, algo: int, encrypt: bool, size: int) -> None:
    """Sender side: compress then encrypt one body."""
    assert compression is not None and crypto is not None
    data = _payload(size)
    cipher = crypto.SessionCipher.server_side(crypto.new_secret()) if encrypt else None

    def seal() -> bytes:
        body = compression.compress(algo, data)
        if cipher is not None:
            header, body = cipher.seal(1, 8, 0x06, 0, body)
            return header + body
        head: bytes = frame.encode_header(len(body), 1, 8, 2, 0)
        return head + body

    assert benchmark(seal)


@pytest.mark.parametrize(("algo", "encrypt", "size"), _combos())
def test_open_body(benchmark: Any, algo: int, encrypt: bool, size: int) -> None:
    """Receiver side: decrypt then decompress one body (fresh counters per round)."""
    assert compression is not None and crypto is not None
    data = _payload(size)
    body = compression.compress(algo, data)
    limit = 1 << 20
    if not encrypt:
        out = benchmark(compression.decompress, algo, body, limit)
        assert out == data
        return
    secret = crypto.new_secret()
    sealed = crypto.SessionCipher.client_side(secret).seal(1, 4, 0x04, 0, body)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (crypto.SessionCipher.server_side(secret),), {}

    def open_(receiver: Any) -> bytes:
        out: bytes = compression.decompress(algo, receiver.open_header(*sealed), limit)
        return out

    out = benchmark.pedantic(open_, setup=setup, rounds=2000 if size <= 1024 else 300)
    assert out == data


AEAD_IMPLS = _twins(aead.impl_py, aead.impl_c)


@pytest.mark.parametrize("size", [64, 1024, 64 * 1024], ids=["64B", "1KiB", "64KiB"])
@pytest.mark.parametrize("impl", AEAD_IMPLS)
def test_aead_encrypt(benchmark: Any, impl: ModuleType, size: int) -> None:
    """One session direction's AES-256-GCM, compiled (one EVP context) against the pure twin
    (cryptography's AESGCM, a context copied per call)."""
    sealer = impl.Sealer(bytes(32))
    nonce, data, aad = bytes(12), os.urandom(size), bytes(12)
    assert len(benchmark(sealer.encrypt, nonce, data, aad)) == size + 16


@pytest.mark.parametrize("size", [64, 1024, 64 * 1024], ids=["64B", "1KiB", "64KiB"])
@pytest.mark.parametrize("impl", AEAD_IMPLS)
def test_aead_decrypt(benchmark: Any, impl: ModuleType, size: int) -> None:
    key, nonce, data, aad = bytes(32), bytes(12), os.urandom(size), bytes(12)
    ct = impl.Sealer(key).encrypt(nonce, data, aad)
    assert benchmark(impl.Opener(key).decrypt, nonce, ct, aad) == data

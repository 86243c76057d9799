"""Body compression (PROTOCOL.md 2.1, 2.2): round trips, bounded decompression, broken streams."""

from __future__ import annotations

import gzip
import os
import time
import tracemalloc
import zlib

import lz4.frame
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.wire import compression
from privchat_tcp.wire.compression import GZIP, LZ4, NONE, compress, decompress, pick

MiB = 1 << 20
ALGOS = [pytest.param(GZIP, id="gzip"), pytest.param(LZ4, id="lz4")]
SIZES = [0, 64, 1024, 64 * 1024, MiB]


def _body(n: int) -> bytes:
    # Half random, half repetitive: compressible but not trivially so.
    half = n // 2
    return os.urandom(half) + (b"privchat " * (n // 9 + 1))[: n - half]


def _assert_too_large(exc: pytest.ExceptionInfo[ServiceError]) -> None:
    assert exc.value.code == ErrorCode.PACKET_TOO_LARGE == 103
    assert exc.value.status == Status.TOO_LARGE
    assert exc.value.message == "decompressed body too large"


def _assert_bad(exc: pytest.ExceptionInfo[ServiceError]) -> None:
    assert exc.value.code == ErrorCode.DECODING_ERROR == 105
    assert exc.value.status == Status.BAD_REQUEST
    assert exc.value.message == "bad compressed body"


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("size", SIZES)
def test_round_trip(algo: int, size: int) -> None:
    data = _body(size)
    packed = compress(algo, data)
    assert decompress(algo, packed, MiB) == data


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_zero_filled(size: int) -> None:
    data = bytes(size)
    for algo in (GZIP, LZ4):
        assert decompress(algo, compress(algo, data), MiB) == data


def test_wire_formats() -> None:
    data = _body(4096)
    gz = compress(GZIP, data)
    assert gz[:2] == b"\x1f\x8b"  # RFC 1952 member
    assert gzip.decompress(gz) == data
    lz = compress(LZ4, data)
    assert lz[:4] == b"\x04\x22\x4d\x18"  # LZ4 frame magic
    assert lz4.frame.decompress(lz) == data
    # Streams made by other encoders decode too.
    assert decompress(GZIP, gzip.compress(data, mtime=0), MiB) == data
    other = lz4.frame.compress(data, store_size=False, content_checksum=True, block_checksum=True)
    assert decompress(LZ4, other, MiB) == data


def test_lz4_large_blocks_and_no_size() -> None:
    data = _body(MiB)
    for block_size in (lz4.frame.BLOCKSIZE_MAX256KB, lz4.frame.BLOCKSIZE_MAX4MB):
        packed = lz4.frame.compress(data, block_size=block_size, store_size=False)
        assert decompress(LZ4, packed, MiB) == data


def test_none() -> None:
    assert compress(NONE, b"abc") == b"abc"
    assert decompress(NONE, b"abc", 3) == b"abc"
    with pytest.raises(ServiceError) as exc:
        decompress(NONE, b"abcd", 3)
    _assert_too_large(exc)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("size", [0, 1, 1000, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, MiB])
def test_limit_exact_passes_one_over_fails(algo: int, size: int) -> None:
    data = _body(size)
    packed = compress(algo, data)
    assert decompress(algo, packed, size) == data
    if size:
        with pytest.raises(ServiceError) as exc:
            decompress(algo, packed, size - 1)
        _assert_too_large(exc)


@pytest.mark.parametrize("algo", ALGOS)
def test_bomb_rejected_fast_and_bounded(algo: int) -> None:
    bomb = compress(algo, bytes(64 * MiB))
    assert len(bomb) < MiB  # it really is a bomb
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        with pytest.raises(ServiceError) as exc:
            decompress(algo, bomb, MiB)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _assert_too_large(exc)
    assert elapsed < 0.5, elapsed
    assert peak < 3 * MiB, peak


@pytest.mark.parametrize("algo", ALGOS)
def test_small_bomb_with_small_limit(algo: int) -> None:
    bomb = compress(algo, bytes(MiB))
    tracemalloc.start()
    try:
        with pytest.raises(ServiceError) as exc:
            decompress(algo, bomb, 16 * 1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _assert_too_large(exc)
    assert peak < 256 * 1024, peak


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("size", [0, 64, 100_000])
def test_truncated(algo: int, size: int) -> None:
    packed = compress(algo, _body(size))
    for cut in sorted({1, 2, 4, len(packed) // 2, len(packed) - 1}):
        with pytest.raises(ServiceError) as exc:
            decompress(algo, packed[: len(packed) - cut], MiB)
        _assert_bad(exc)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("size", [0, 64, 100_000])
def test_trailing_garbage(algo: int, size: int) -> None:
    packed = compress(algo, _body(size))
    for tail in (b"\x00", b"garbage", packed):  # including a second complete stream
        with pytest.raises(ServiceError) as exc:
            decompress(algo, packed + tail, MiB)
        _assert_bad(exc)


@pytest.mark.parametrize("algo", ALGOS)
def test_garbage(algo: int) -> None:
    for junk in (
        b"",
        b"\x00",
        b"not compressed at all",
        os.urandom(1000),
        compress(3 - algo, b"x"),
    ):
        with pytest.raises(ServiceError) as exc:
            decompress(algo, junk, MiB)
        _assert_bad(exc)


def test_corrupt_gzip_crc() -> None:
    packed = bytearray(compress(GZIP, _body(1000)))
    packed[-5] ^= 0x01  # CRC32 in the trailer
    with pytest.raises(ServiceError) as exc:
        decompress(GZIP, bytes(packed), MiB)
    _assert_bad(exc)


def test_corrupt_lz4_checksum() -> None:
    packed = bytearray(lz4.frame.compress(_body(1000), content_checksum=True))
    packed[-1] ^= 0x01
    with pytest.raises(ServiceError) as exc:
        decompress(LZ4, bytes(packed), MiB)
    _assert_bad(exc)


@pytest.mark.parametrize("algo", [3, 4, -1])
def test_unknown_algo(algo: int) -> None:
    with pytest.raises(ServiceError) as exc:
        decompress(algo, compress(GZIP, b"x"), MiB)
    _assert_bad(exc)
    with pytest.raises(ValueError):
        compress(algo, b"x")


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=4096), algo=st.sampled_from([NONE, GZIP, LZ4]))
def test_round_trip_property(data: bytes, algo: int) -> None:
    assert decompress(algo, compress(algo, data), len(data)) == data


@settings(max_examples=200, deadline=None)
@given(junk=st.binary(max_size=256), algo=st.sampled_from([GZIP, LZ4]))
def test_arbitrary_input_only_raises_service_error(junk: bytes, algo: int) -> None:
    try:
        out = decompress(algo, junk, 1024)
    except ServiceError as e:
        assert e.code in (ErrorCode.DECODING_ERROR, ErrorCode.PACKET_TOO_LARGE)
    else:
        assert len(out) <= 1024


def test_pick() -> None:
    assert pick(["gzip", "lz4"]) == LZ4
    assert pick(["lz4"]) == LZ4
    assert pick(["gzip"]) == GZIP
    assert pick(["GZIP", "brotli"]) == GZIP
    assert pick(["zstd", "br", ""]) == NONE
    assert pick([]) == NONE
    assert pick(iter(["deflate", " Lz4 "])) == LZ4


def test_flag_bits() -> None:
    assert compression.flag_bits(GZIP) == 0x10
    assert compression.flag_bits(LZ4) == 0x20
    assert compression.from_flags(0x2D) == LZ4
    assert compression.from_flags(0x11) == GZIP
    assert compression.from_flags(0x0F) == NONE


def test_gzip_level_constant_is_zlib_compatible() -> None:
    data = _body(10_000)
    assert zlib.decompress(compress(GZIP, data), wbits=31) == data

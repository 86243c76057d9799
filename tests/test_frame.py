"""The frame splitter and header codec, run against both implementations.

``impl`` is ``privchat_tcp.wire._frame_py`` (the spec) or the compiled
``privchat_tcp.wire._frame_c``. The
compiled run is skipped when the extension is absent, unless ``PRIVCHAT_REQUIRE_EXT=1`` (CI), where
a missing extension fails instead.
"""

from __future__ import annotations

import struct
from types import ModuleType
from typing import Any

import pytest
from conftest import REQUIRE_EXT, twin, twin_params
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privchat_tcp.wire import frame

LIMIT = 1 << 20  # PROTOCOL.md 2.2: 1 MiB after login

# Flow values (flags bits 1-0) and compression (bits 5-4).
REQUEST, RESPONSE, PUSH, FLOW_RESERVED = 0, 1, 2, 3
GZIP, LZ4, COMP_RESERVED = 0x10, 0x20, 0x30


@pytest.fixture(params=twin_params(frame.impl_py, frame.impl_c, "_frame_c"))
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return twin(request, "_frame_c")


def _both() -> list[ModuleType]:
    """Both implementations, for tests that compare them directly (hypothesis)."""
    if frame.impl_c is None:
        if REQUIRE_EXT:
            pytest.fail("PRIVCHAT_REQUIRE_EXT=1 but privchat_tcp.wire._frame_c did not import")
        pytest.skip("privchat_tcp.wire._frame_c is not built")
    return [frame.impl_py, frame.impl_c]


def make_frame(
    body: bytes = b"",
    seq: int = 1,
    command: int = 3,
    flags: int = REQUEST,
    status: int = 0,
    version: int = 1,
    length: int | None = None,
) -> bytes:
    """A frame built with struct, independent of either implementation."""
    n = len(body) if length is None else length
    return struct.pack("!IBIBBB", n, version, seq, command, flags, status) + body


def feed(impl: ModuleType, chunks: list[bytes], from_client: bool = True) -> list[Any]:
    """Feed chunks into a receive buffer as a protocol does; collect frames, fail on violation."""
    buf = bytearray()
    out: list[Any] = []
    for chunk in chunks:
        buf += chunk
        frames, consumed, violation, _, _ = impl.split_frames(buf, LIMIT, from_client)
        out.extend(frames)
        del buf[:consumed]
        assert violation == impl.V_NONE
    assert not buf
    return out


# --- constants ------------------------------------------------------------------------------------


def test_constants_match_the_reference(impl: ModuleType) -> None:
    for name in (
        "HEADER_SIZE",
        "VERSION",
        "V_NONE",
        "V_RESERVED",
        "V_VERSION",
        "V_TOO_LARGE",
        "V_FLOW",
        "V_COMPRESSION",
    ):
        assert getattr(impl, name) == getattr(frame.impl_py, name), name
    assert (impl.HEADER_SIZE, impl.VERSION) == (12, 1)


# --- header codec ---------------------------------------------------------------------------------

VECTORS = [
    # (len, seq, command, flags, status), wire bytes
    ((0, 0, 0, 0, 0), bytes.fromhex("000000000100000000000000")),
    ((5, 1, 3, 0x00, 0), bytes.fromhex("000000050100000001030000")),
    ((0x01020304, 0x0A0B0C0D, 12, 0x25, 15), bytes.fromhex("01020304010a0b0c0d0c250f")),
    ((0xFFFFFFFF, 0xFFFFFFFF, 255, 255, 255), bytes.fromhex("ffffffff01ffffffffffffff")),
    ((1 << 20, 1 << 31, 13, 0x1E, 6), bytes.fromhex("0010000001800000000d1e06")),
]


@pytest.mark.parametrize(("fields", "wire"), VECTORS)
def test_encode_header_vectors(impl: ModuleType, fields: tuple[int, ...], wire: bytes) -> None:
    out = impl.encode_header(*fields)
    assert type(out) is bytes
    assert out == wire


@pytest.mark.parametrize(("fields", "wire"), VECTORS)
def test_decode_header_vectors(impl: ModuleType, fields: tuple[int, ...], wire: bytes) -> None:
    length, seq, command, flags, status = fields
    expected = (length, 1, seq, command, flags, status)
    for data in (wire, bytearray(wire), wire + b"trailing body", memoryview(wire)):
        got = impl.decode_header(data)
        assert type(got) is tuple
        assert got == expected
        assert all(type(x) is int for x in got)


def test_decode_header_keeps_a_foreign_version(impl: ModuleType) -> None:
    # decode_header only decodes; the version rule belongs to split_frames.
    assert impl.decode_header(make_frame(version=7))[1] == 7


@pytest.mark.parametrize("n", range(12))
def test_decode_header_short_input(impl: ModuleType, n: int) -> None:
    for data in (bytes(n), bytearray(n)):
        with pytest.raises(ValueError, match="need 12 bytes"):
            impl.decode_header(data)


@pytest.mark.parametrize(
    "fields",
    [
        (-1, 0, 0, 0, 0),
        (1 << 32, 0, 0, 0, 0),
        (0, -1, 0, 0, 0),
        (0, 1 << 32, 0, 0, 0),
        (0, 0, 256, 0, 0),
        (0, 0, 0, -1, 0),
        (0, 0, 0, 0, 256),
        (0, 0, 0, 0, 1 << 70),
        (0.0, 0, 0, 0, 0),
        (0, 0, "3", 0, 0),
    ],
)
def test_encode_header_rejects_like_struct(impl: ModuleType, fields: tuple[Any, ...]) -> None:
    with pytest.raises(struct.error) as ref:
        frame.impl_py.encode_header(*fields)
    with pytest.raises(struct.error) as got:
        impl.encode_header(*fields)
    assert str(got.value) == str(ref.value)


def test_encode_header_accepts_int_likes(impl: ModuleType) -> None:
    assert impl.encode_header(True, 2, 3, False, 0) == make_frame(b"x", seq=2, command=3)[:12]


# --- split_frames: the good path ------------------------------------------------------------------


def test_split_empty_and_partial(impl: ModuleType) -> None:
    data = make_frame(b"hello", seq=9, command=4)
    for n in range(len(data)):
        assert impl.split_frames(data[:n], LIMIT) == ([], 0, impl.V_NONE, 0, 0)


def test_split_one_frame(impl: ModuleType) -> None:
    data = make_frame(b"hello", seq=9, command=4, flags=LZ4 | 0x04, status=0)
    frames, consumed, violation, vseq, vcommand = impl.split_frames(data, LIMIT)
    assert frames == [(9, 4, LZ4 | 0x04, 0, b"hello")]
    assert type(frames) is list and type(frames[0]) is tuple and type(frames[0][-1]) is bytes
    assert (consumed, violation, vseq, vcommand) == (len(data), impl.V_NONE, 0, 0)


def test_split_empty_body_and_trailing_partial(impl: ModuleType) -> None:
    data = make_frame(seq=1) + make_frame(b"abc", seq=2) + make_frame(b"abcdef", seq=3)[:-1]
    frames, consumed, violation, _, _ = impl.split_frames(bytearray(data), LIMIT)
    assert frames == [(1, 3, 0, 0, b""), (2, 3, 0, 0, b"abc")]
    assert consumed == 12 + 15
    assert violation == impl.V_NONE


def test_split_body_at_exact_limit(impl: ModuleType) -> None:
    body = bytes(range(256)) * 4
    frames, consumed, violation, _, _ = impl.split_frames(make_frame(body), len(body))
    assert frames == [(1, 3, 0, 0, body)] and consumed == 12 + len(body) and violation == 0


def test_split_many_frames_in_one_chunk(impl: ModuleType) -> None:
    expected = [(i, i % 14, (i % 3) << 2, 0, bytes([i % 256]) * (i % 37)) for i in range(2000)]
    data = b"".join(make_frame(b, seq=s, command=c, flags=f) for s, c, f, _, b in expected)
    for buf in (data, bytearray(data)):
        frames, consumed, violation, _, _ = impl.split_frames(buf, LIMIT)
        assert frames == expected
        assert consumed == len(data) and violation == impl.V_NONE


def test_split_server_side_frames(impl: ModuleType) -> None:
    data = make_frame(b"r", seq=5, flags=RESPONSE, status=4) + make_frame(b"p", seq=1, flags=PUSH)
    frames, consumed, violation, _, _ = impl.split_frames(data, LIMIT, False)
    assert frames == [(5, 3, RESPONSE, 4, b"r"), (1, 3, PUSH, 0, b"p")]
    assert consumed == len(data) and violation == impl.V_NONE


def _stream() -> tuple[bytes, list[tuple[int, int, int, int, bytes]]]:
    expected = [(i + 1, 1 + i % 13, (i % 3) << 4, 0, bytes(range(i % 19))) for i in range(25)]
    data = b"".join(make_frame(b, seq=s, command=c, flags=f) for s, c, f, _, b in expected)
    return data, expected


def test_split_at_every_byte_boundary(impl: ModuleType) -> None:
    data, expected = _stream()
    assert feed(impl, [data]) == expected
    for i in range(len(data) + 1):
        assert feed(impl, [data[:i], data[i:]]) == expected, i


def test_split_byte_by_byte(impl: ModuleType) -> None:
    data, expected = _stream()
    assert feed(impl, [data[i : i + 1] for i in range(len(data))]) == expected


# --- split_frames: violations ---------------------------------------------------------------------

GOOD = make_frame(b"first", seq=1) + make_frame(b"", seq=2)
GOOD_FRAMES = [(1, 3, 0, 0, b"first"), (2, 3, 0, 0, b"")]


@pytest.mark.parametrize(
    ("header", "from_client", "code"),
    [
        (make_frame(b"x", flags=0x40), True, "V_RESERVED"),
        (make_frame(b"x", flags=0x80), True, "V_RESERVED"),
        (make_frame(b"x", flags=0xC0 | RESPONSE), False, "V_RESERVED"),
        (make_frame(b"x", version=0), True, "V_VERSION"),
        (make_frame(b"x", version=2), True, "V_VERSION"),
        (make_frame(b"x", version=2, flags=RESPONSE), False, "V_VERSION"),
        (make_frame(length=LIMIT + 1), True, "V_TOO_LARGE"),
        (make_frame(length=0xFFFFFFFF), True, "V_TOO_LARGE"),
        (make_frame(length=LIMIT + 1, flags=PUSH), False, "V_TOO_LARGE"),
        (make_frame(b"x", flags=RESPONSE), True, "V_FLOW"),
        (make_frame(b"x", flags=PUSH), True, "V_FLOW"),
        (make_frame(b"x", flags=FLOW_RESERVED), True, "V_FLOW"),
        (make_frame(b"x", flags=REQUEST), False, "V_FLOW"),
        (make_frame(b"x", flags=FLOW_RESERVED), False, "V_FLOW"),
        (make_frame(b"x", flags=COMP_RESERVED), True, "V_COMPRESSION"),
        (make_frame(b"x", flags=COMP_RESERVED | PUSH), False, "V_COMPRESSION"),
    ],
)
def test_split_violation(impl: ModuleType, header: bytes, from_client: bool, code: str) -> None:
    prefix = GOOD if from_client else make_frame(b"first", seq=1, flags=RESPONSE)
    head = header[:12]
    # Detected from the header alone: no body byte is needed (TOO_LARGE must not wait for 1 MiB).
    for tail in (head, header, header + GOOD):
        frames, consumed, violation, vseq, vcommand = impl.split_frames(
            prefix + tail, LIMIT, from_client
        )
        assert violation == getattr(impl, code)
        assert frames == (GOOD_FRAMES if from_client else [(1, 3, RESPONSE, 0, b"first")])
        assert consumed == len(prefix)
        assert (vseq, vcommand) == (1, 3)


def test_violation_order_and_reported_header(impl: ModuleType) -> None:
    # Each rule masks the ones after it, in PROTOCOL.md order.
    cases = [
        (make_frame(seq=7, command=9, flags=0xF3, version=0, length=LIMIT + 1), "V_RESERVED"),
        (make_frame(seq=7, command=9, flags=0x33, version=0, length=LIMIT + 1), "V_VERSION"),
        (make_frame(seq=7, command=9, flags=0x33, length=LIMIT + 1), "V_TOO_LARGE"),
        (make_frame(seq=7, command=9, flags=0x33), "V_FLOW"),
        (make_frame(seq=7, command=9, flags=0x30), "V_COMPRESSION"),
    ]
    for data, code in cases:
        assert impl.split_frames(data, LIMIT) == ([], 0, getattr(impl, code), 7, 9)


@pytest.mark.parametrize("max_body", [-5, -1, 0, 1, 0xFFFFFFFE, 0xFFFFFFFF, 1 << 32, 1 << 80])
def test_max_body_edges(impl: ModuleType, max_body: int) -> None:
    for length in (0, 1, 0xFFFFFFFE, 0xFFFFFFFF):
        data = make_frame(length=length)
        assert impl.split_frames(data, max_body) == frame.impl_py.split_frames(data, max_body)


# --- properties -----------------------------------------------------------------------------------

HYP = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

max_bodies = st.one_of(
    st.integers(min_value=0, max_value=64),
    st.sampled_from([-1, 0xFFFFFFFF, 1 << 32, LIMIT]),
    st.integers(),
)


@st.composite
def frame_streams(draw: st.DrawFn) -> bytes:
    """Mostly well-formed frames with some header fields drawn from small, rule-hitting sets."""
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        body = draw(st.binary(max_size=20))
        parts.append(
            make_frame(
                body,
                seq=draw(st.integers(0, 0xFFFFFFFF)),
                command=draw(st.integers(0, 255)),
                flags=draw(st.one_of(st.sampled_from([0, 1, 2, 0x10, 0x25]), st.integers(0, 255))),
                status=draw(st.integers(0, 255)),
                version=draw(st.sampled_from([1, 1, 1, 0, 2])),
                length=draw(st.sampled_from([None, None, None, len(body) + 3, LIMIT + 1])),
            )
        )
    data = b"".join(parts)
    return data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data


@HYP
@given(
    data=st.one_of(st.binary(max_size=200), frame_streams()), max_body=max_bodies, fc=st.booleans()
)
def test_property_split_same_result(data: bytes, max_body: int, fc: bool) -> None:
    py, c = _both()
    ref = py.split_frames(data, max_body, fc)
    assert c.split_frames(data, max_body, fc) == ref
    assert c.split_frames(bytearray(data), max_body, fc) == ref
    frames, consumed, violation, vseq, vcommand = ref
    assert 0 <= consumed <= len(data)
    assert violation in range(6)
    if violation == 0:
        assert (vseq, vcommand) == (0, 0)


@HYP
@given(data=st.binary(max_size=40))
def test_property_decode_same_result(data: bytes) -> None:
    py, c = _both()
    if len(data) < 12:
        with pytest.raises(ValueError):
            py.decode_header(data)
        with pytest.raises(ValueError):
            c.decode_header(data)
    else:
        assert c.decode_header(data) == py.decode_header(data)
        assert c.decode_header(bytearray(data)) == py.decode_header(data)


@HYP
@given(data=st.binary(max_size=120), max_body=max_bodies, fc=st.booleans())
def test_property_split_never_raises(
    impl: ModuleType, data: bytes, max_body: int, fc: bool
) -> None:
    frames, consumed, violation, vseq, vcommand = impl.split_frames(data, max_body, fc)
    # What was consumed is exactly the frames returned.
    assert consumed == sum(12 + len(f[-1]) for f in frames)


@HYP
@given(
    length=st.integers(0, 0xFFFFFFFF),
    seq=st.integers(0, 0xFFFFFFFF),
    command=st.integers(0, 255),
    flags=st.integers(0, 255),
    status=st.integers(0, 255),
)
def test_property_roundtrip(
    impl: ModuleType, length: int, seq: int, command: int, flags: int, status: int
) -> None:
    wire = impl.encode_header(length, seq, command, flags, status)
    assert wire == frame.impl_py.encode_header(length, seq, command, flags, status)
    assert impl.decode_header(wire) == (length, 1, seq, command, flags, status)


# --- the build ------------------------------------------------------------------------------------


def test_selected_implementation_is_consistent() -> None:
    assert frame.IMPL in ("py", "c")
    chosen = frame.impl_c if frame.IMPL == "c" else frame.impl_py
    assert chosen is not None
    assert frame.split_frames is chosen.split_frames
    if frame.NO_EXTENSIONS:
        assert frame.IMPL == "py"


@pytest.mark.skipif(not REQUIRE_EXT, reason="PRIVCHAT_REQUIRE_EXT is not set")
def test_compiled_extension_required() -> None:
    assert frame.impl_c is not None, "privchat_tcp.wire._frame_c did not import"
    assert frame.IMPL == "c"

"""Pure-Python frame splitter: the reference the compiled ``_frame_c`` must match byte for byte.

A frame is a 12-byte header ``!IBIBBB`` (len, version, seq, command, flags, status) and ``len``
body bytes (PROTOCOL.md section 2). ``split_frames`` takes every complete frame out of a receive
buffer in one call and applies the header rules there, so the caller pays one Python call per
read, not per frame.
"""

from __future__ import annotations

import struct

HEADER_SIZE = 12
VERSION = 1

# Violation codes returned by split_frames (0 = none). The caller maps them to status bytes.
V_NONE = 0
V_RESERVED = 1  # reserved flag bits set: close without reply
V_VERSION = 2  # version != 1: UNSUPPORTED, close
V_TOO_LARGE = 3  # len over the limit: TOO_LARGE, close without reading the body
V_FLOW = 4  # flow not allowed in this direction: BAD_REQUEST, close
V_COMPRESSION = 5  # compression 3: BAD_REQUEST, close

_HEADER = struct.Struct("!IBIBBB")
_unpack_from = _HEADER.unpack_from
_pack = _HEADER.pack

Frame = tuple[int, int, int, int, bytes]  # (seq, command, flags, status, body)


def encode_header(length: int, seq: int, command: int, flags: int, status: int) -> bytes:
    """The 12 header bytes for a frame whose body is ``length`` bytes long."""
    return _pack(length, VERSION, seq, command, flags, status)


def decode_header(data: bytes) -> tuple[int, int, int, int, int, int]:
    """(len, version, seq, command, flags, status) of the first 12 bytes of ``data``."""
    if len(data) < HEADER_SIZE:
        raise ValueError("need 12 bytes for a header")
    return _unpack_from(data, 0)


def split_frames(
    buf: bytes | bytearray, max_body: int, from_client: bool = True
) -> tuple[list[Frame], int, int, int, int]:
    """Split every complete frame out of ``buf``.

    Returns ``(frames, consumed, violation, vseq, vcommand)``: the frames before any violation, the
    number of bytes they used (drop them from the buffer), a ``V_*`` code, and the seq and command
    of the violating header (both 0 when there is none). Parsing stops at the first violation; an
    incomplete frame at the end is left in place. ``from_client`` selects the allowed flow: 0 when
    the server reads a client, 1 or 2 when a client reads the server.
    """
    frames: list[Frame] = []
    pos = 0
    end = len(buf)
    while end - pos >= HEADER_SIZE:
        length, version, seq, command, flags, status = _unpack_from(buf, pos)
        if flags & 0xC0:
            return frames, pos, V_RESERVED, seq, command
        if version != VERSION:
            return frames, pos, V_VERSION, seq, command
        if length > max_body:
            return frames, pos, V_TOO_LARGE, seq, command
        flow = flags & 0x03
        if (flow != 0) if from_client else (flow == 0 or flow == 3):
            return frames, pos, V_FLOW, seq, command
        if flags & 0x30 == 0x30:
            return frames, pos, V_COMPRESSION, seq, command
        stop = pos + HEADER_SIZE + length
        if stop > end:
            break
        frames.append((seq, command, flags, status, bytes(buf[pos + HEADER_SIZE : stop])))
        pos = stop
    return frames, pos, V_NONE, 0, 0

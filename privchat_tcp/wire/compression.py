"""Body compression: the 2-bit compression field of the flags byte (PROTOCOL.md section 2.1).

``compress`` and ``decompress`` are pure functions on one frame body. ``decompress`` is bounded:
it never produces more than ``limit`` output bytes plus one chunk, so a decompression bomb costs at
most about twice the limit in memory and stops as soon as it passes the limit (section 2.2).

Errors are ``ServiceError``: a body that inflates past the limit is ``PACKET_TOO_LARGE`` (status
TOO_LARGE), a stream that is invalid, truncated, followed by trailing bytes, or of an unknown
algorithm is ``DECODING_ERROR`` (status BAD_REQUEST).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Final

from lz4.frame import LZ4FrameDecompressor
from lz4.frame import compress as _lz4_compress

from ..errors import ErrorCode, ServiceError, Status

__all__ = [
    "GZIP",
    "GZIP_LEVEL",
    "LZ4",
    "NAMES",
    "NONE",
    "compress",
    "decompress",
    "flag_bits",
    "from_flags",
    "pick",
]

NONE: Final = 0
GZIP: Final = 1
LZ4: Final = 2

#: Wire names a client advertises at LOGIN, by algorithm number.
NAMES: Final[dict[int, str]] = {NONE: "none", GZIP: "gzip", LZ4: "lz4"}

#: zlib level for gzip bodies: 6 is zlib's default trade-off.
GZIP_LEVEL: Final = 6

_SHIFT: Final = 4
_MASK: Final = 0x30
_GZIP_WBITS: Final = 31  # 16 + 15: gzip (RFC 1952) container, 32 KiB window
_LZ4_CHUNK: Final = 64 * 1024  # lz4 allocates max_length up front: keep each step small

_zlib_compress = zlib.compress
_zlib_decompressobj = zlib.decompressobj
_ZlibError = zlib.error


def _too_large() -> ServiceError:
    return ServiceError(ErrorCode.PACKET_TOO_LARGE, "decompressed body too large", Status.TOO_LARGE)


def _bad() -> ServiceError:
    return ServiceError(ErrorCode.DECODING_ERROR, "bad compressed body", Status.BAD_REQUEST)


def flag_bits(algo: int) -> int:
    """The flags-byte bits (5-4) for ``algo``."""
    return (algo << _SHIFT) & _MASK


def from_flags(flags: int) -> int:
    """The compression algorithm a flags byte announces (3 is reserved; the splitter rejects it)."""
    return (flags & _MASK) >> _SHIFT


def compress(algo: int, data: bytes) -> bytes:
    """Compress one body with ``algo`` (NONE returns ``data`` unchanged)."""
    if algo == LZ4:
        return _lz4_compress(data)  # type: ignore[no-any-return]
    if algo == GZIP:
        return _zlib_compress(data, GZIP_LEVEL, _GZIP_WBITS)
    if algo == NONE:
        return data
    raise ValueError(f"unknown compression {algo!r}")


def _gunzip(data: bytes, limit: int) -> bytes:
    d = _zlib_decompressobj(_GZIP_WBITS)
    try:
        # zlib grows its output in blocks and stops at max_length: at most limit + 1 bytes exist.
        out = d.decompress(data, limit + 1)
    except _ZlibError:
        raise _bad() from None
    if len(out) > limit:
        raise _too_large()
    if not d.eof or d.unused_data:
        raise _bad()  # truncated, or bytes after the end of the gzip member
    return out


def _unlz4(data: bytes, limit: int) -> bytes:
    d = LZ4FrameDecompressor()
    try:
        out: bytes = d.decompress(data, max_length=min(_LZ4_CHUNK, limit + 1))
        if len(out) > limit:
            raise _too_large()
        if d.eof:  # the usual case: a small body in one step
            if d.unused_data:
                raise _bad()
            return out
        parts = [out]
        total = len(out)
        while not d.eof:
            # Each step yields at least one byte or fails, so this ends after at most limit bytes.
            part: bytes = d.decompress(b"", max_length=min(_LZ4_CHUNK, limit + 1 - total))
            if not part and not d.eof:
                raise _bad()  # truncated: input used up before the end mark
            total += len(part)
            if total > limit:
                raise _too_large()
            parts.append(part)
    except RuntimeError:  # python-lz4 reports every LZ4F error as RuntimeError
        raise _bad() from None
    if d.unused_data:
        raise _bad()
    return b"".join(parts)


def decompress(algo: int, data: bytes, limit: int) -> bytes:
    """Decompress one body, producing at most ``limit`` bytes.

    Raises ``ServiceError`` PACKET_TOO_LARGE/TOO_LARGE past ``limit`` and DECODING_ERROR/BAD_REQUEST
    for an invalid, truncated or trailing-garbage stream or an unknown ``algo``.
    """
    if algo == LZ4:
        return _unlz4(data, limit)
    if algo == GZIP:
        return _gunzip(data, limit)
    if algo == NONE:
        if len(data) > limit:
            raise _too_large()
        return data
    raise _bad()


_PREFERENCE: Final = (("lz4", LZ4), ("gzip", GZIP))


def pick(accepted: Iterable[str]) -> int:
    """The server's choice among the compressions a client advertises: lz4, then gzip, else NONE.

    Names are matched case-insensitively; unknown names are ignored.
    """
    names = {name.strip().lower() for name in accepted if isinstance(name, str)}
    for name, algo in _PREFERENCE:
        if name in names:
            return algo
    return NONE

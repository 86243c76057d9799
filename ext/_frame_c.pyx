# cython: language_level=3, embedsignature=True, autotestdict=False
"""Compiled frame splitter: the Cython twin of ``privchat_tcp/wire/_frame_py.py``.

Same names, same results, same exceptions as the pure-Python reference, which is the spec; tests
compare the two on arbitrary input (tests/test_frame.py). The gain is in ``split_frames``: one C loop
over the receive buffer reads each 12-byte header through a pointer instead of ``struct.unpack_from``
and builds the ``(seq, command, flags, status, body)`` tuples directly.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.bytes cimport PyBytes_GET_SIZE
from libc.stdint cimport uint32_t

from _cbits cimport _as_uint, _put32

import struct

HEADER_SIZE = 12
VERSION = 1

V_NONE = 0
V_RESERVED = 1
V_VERSION = 2
V_TOO_LARGE = 3
V_FLOW = 4
V_COMPRESSION = 5

cdef enum:
    _HSIZE = 12
    _VERSION = 1

# The slow path of encode_header: anything but in-range exact ints goes to struct, so errors
# (struct.error and its messages) and __index__ handling match the reference exactly.
_pack = struct.Struct("!IBIBBB").pack


cdef inline uint32_t _be32(const unsigned char* p) noexcept nogil:
    return ((<uint32_t>p[0]) << 24) | ((<uint32_t>p[1]) << 16) | ((<uint32_t>p[2]) << 8) | p[3]


def encode_header(length, seq, command, flags, status):
    """The 12 header bytes for a frame whose body is ``length`` bytes long."""
    cdef long long l = 0, s = 0, c = 0, f = 0, st = 0
    cdef unsigned char out[_HSIZE]
    if not (
        _as_uint(length, 0xFFFFFFFF, &l)
        and _as_uint(seq, 0xFFFFFFFF, &s)
        and _as_uint(command, 0xFF, &c)
        and _as_uint(flags, 0xFF, &f)
        and _as_uint(status, 0xFF, &st)
    ):
        return _pack(length, _VERSION, seq, command, flags, status)
    _put32(out, <uint32_t>l)
    out[4] = _VERSION
    _put32(out + 5, <uint32_t>s)
    out[9] = <unsigned char>c
    out[10] = <unsigned char>f
    out[11] = <unsigned char>st
    return PyBytes_FromStringAndSize(<char*>out, _HSIZE)


@cython.boundscheck(False)
@cython.wraparound(False)
def decode_header(data):
    """(len, version, seq, command, flags, status) of the first 12 bytes of ``data``."""
    cdef Py_buffer view
    cdef const unsigned char* p
    if PyBytes_CheckExact(data):
        if PyBytes_GET_SIZE(data) < _HSIZE:
            raise ValueError("need 12 bytes for a header")
        p = <const unsigned char*>PyBytes_AS_STRING(data)
        return (_be32(p), p[4], _be32(p + 5), p[9], p[10], p[11])
    # Same order as the reference: the length check first, then the buffer.
    if len(data) < _HSIZE:
        raise ValueError("need 12 bytes for a header")
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if view.len < _HSIZE:
            raise ValueError("need 12 bytes for a header")
        p = <const unsigned char*>view.buf
        return (_be32(p), p[4], _be32(p + 5), p[9], p[10], p[11])
    finally:
        PyBuffer_Release(&view)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef tuple _split(
    const unsigned char* base, Py_ssize_t end, object max_body, bint from_client
):
    cdef list frames = []
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t stop
    cdef const unsigned char* h
    cdef uint32_t length, seq
    cdef unsigned char version, command, flags, status, flow
    cdef long long limit
    cdef int violation = 0
    if end < _HSIZE:
        return frames, 0, 0, 0, 0
    # Clamp the limit once: lengths are u32, so anything at or above 2**32 - 1 never trips it and a
    # negative one always does (as ``length > max_body`` does in the reference).
    if max_body < 0:
        limit = -1
    elif max_body >= 0xFFFFFFFF:
        limit = 0xFFFFFFFF
    else:
        limit = max_body
    while end - pos >= _HSIZE:
        h = base + pos
        length = _be32(h)
        version = h[4]
        seq = _be32(h + 5)
        command = h[9]
        flags = h[10]
        status = h[11]
        if flags & 0xC0:
            violation = 1  # V_RESERVED
        elif version != _VERSION:
            violation = 2  # V_VERSION
        elif <long long>length > limit:
            violation = 3  # V_TOO_LARGE, decided before the body has arrived
        else:
            flow = flags & 0x03
            if (flow != 0) if from_client else (flow == 0 or flow == 3):
                violation = 4  # V_FLOW
            elif flags & 0x30 == 0x30:
                violation = 5  # V_COMPRESSION
        if violation:
            return frames, pos, violation, seq, command
        # Compared as size_t, so pos + 12 + length cannot overflow where Py_ssize_t is 32 bits.
        if <size_t>length > <size_t>(end - pos - _HSIZE):
            break  # incomplete body: leave it in place
        stop = pos + _HSIZE + <Py_ssize_t>length
        frames.append(
            (seq, command, flags, status,
             PyBytes_FromStringAndSize(<const char*>h + _HSIZE, <Py_ssize_t>length))
        )
        pos = stop
    return frames, pos, 0, 0, 0


def split_frames(buf, max_body, from_client=True):
    """Split every complete frame out of ``buf``.

    Returns ``(frames, consumed, violation, vseq, vcommand)``: the frames before any violation, the
    number of bytes they used (drop them from the buffer), a ``V_*`` code, and the seq and command of
    the violating header (both 0 when there is none). Parsing stops at the first violation; an
    incomplete frame at the end is left in place. ``from_client`` selects the allowed flow: 0 when the
    server reads a client, 1 or 2 when a client reads the server.
    """
    cdef Py_buffer view
    cdef bint fc = from_client
    if PyBytes_CheckExact(buf):
        return _split(
            <const unsigned char*>PyBytes_AS_STRING(buf), PyBytes_GET_SIZE(buf), max_body, fc
        )
    # bytearray and other contiguous buffers. While the buffer is held a bytearray cannot be
    # resized, and nothing in _split runs Python code that could try.
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        return _split(<const unsigned char*>view.buf, view.len, max_body, fc)
    finally:
        PyBuffer_Release(&view)

# cython: language_level=3
"""C helpers shared by the compiled twins (cimported; inlined where used, no module of its own)."""

from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact
from libc.stdint cimport uint32_t


cdef inline void _put32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 24)
    p[1] = <unsigned char>(v >> 16)
    p[2] = <unsigned char>(v >> 8)
    p[3] = <unsigned char>v


cdef inline bint _as_uint(object o, long long top, long long* out) except -1:
    """True and ``*out`` set if ``o`` is an exact int in [0, top]; False otherwise (no error)."""
    cdef int overflow = 0
    cdef long long v
    if not PyLong_CheckExact(o):
        return False
    v = PyLong_AsLongLongAndOverflow(o, &overflow)
    if overflow or v < 0 or v > top:
        return False
    out[0] = v
    return True

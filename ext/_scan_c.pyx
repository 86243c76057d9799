# cython: language_level=3
"""Compiled twin of privchat_tcp/service/_scan_py.py: the same scans in one C loop each.

``bytes in bytes`` in the interpreter first tries the needle as an integer (``b"@" in p`` may
mean ``64 in p``) and raises and clears a TypeError for each test: five per MS, most of the
scans' cost. Here a pass over the payload's bytes does them all.
"""

from libc.string cimport memcmp
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

__all__ = ["MARKERS", "TEXT", "needs_check", "plain"]

TEXT = 0
MARKERS = (b"reply_to", b"mention", b"metadata", b"@")


cdef inline bint _marker_at(const unsigned char* p, Py_ssize_t left) noexcept:
    # p[0] is the first byte of a possible marker; ``left`` bytes from p on
    cdef unsigned char c = p[0]
    if c == 64:  # "@"
        return True
    if c == 114:  # "r"
        return left >= 8 and memcmp(p, b"reply_to", 8) == 0
    if c == 109:  # "m"
        return (left >= 7 and memcmp(p, b"mention", 7) == 0) or (
            left >= 8 and memcmp(p, b"metadata", 8) == 0
        )
    return False


def needs_check(message_type, bytes payload not None):
    if message_type != 0:
        return True
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(payload)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload), i
    for i in range(n):
        if _marker_at(p + i, n - i):
            return True
    return False


def plain(message_type, bytes payload not None, long long max_depth):
    if message_type != 0:
        return False
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(payload)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload), i
    cdef long long brackets = 0
    cdef unsigned char c
    for i in range(n):
        c = p[i]
        if c >= 0x80:  # not ASCII
            return False
        if c == 91 or c == 123:  # "[" "{"
            brackets += 1
        elif c == 92:  # "\\"
            if i + 1 < n and p[i + 1] == 117:  # "u"
                return False
        elif _marker_at(p + i, n - i):
            return False
    return brackets <= max_depth

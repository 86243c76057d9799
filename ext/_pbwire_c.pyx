# cython: language_level=3
"""Compiled twin of privchat_tcp/wire/_pbwire_py.py: the same functions, the same bytes.

Varints are written into a stack buffer instead of being built byte by byte in Python; for an
MS reply and its push this is most of the encoding cost (see benchmarks/README.md)."""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint64_t

__all__ = ["varint", "field_varint", "field_bytes", "pong", "send_response", "batch",
           "difference", "notify", "push"]


cdef inline Py_ssize_t _put(unsigned char* out, uint64_t value) noexcept:
    cdef Py_ssize_t n = 0
    while value >= 0x80:
        out[n] = <unsigned char>((value & 0x7F) | 0x80)
        value >>= 7
        n += 1
    out[n] = <unsigned char>value
    return n + 1


cdef inline uint64_t _u64(object value) except? 0:
    if value < 0:
        value += 1 << 64
    return <uint64_t>value


def varint(value):
    cdef unsigned char buf[10]
    return PyBytes_FromStringAndSize(<char*>buf, _put(buf, _u64(value)))


def field_varint(int number, value):
    cdef unsigned char buf[20]
    cdef Py_ssize_t n
    if not value:
        return b""
    n = _put(buf, <uint64_t>number << 3)
    n += _put(buf + n, _u64(value))
    return PyBytes_FromStringAndSize(<char*>buf, n)


def field_bytes(int number, bytes value):
    cdef unsigned char buf[20]
    cdef Py_ssize_t n = _put(buf, (<uint64_t>number << 3) | 2)
    n += _put(buf + n, <uint64_t>len(value))
    return PyBytes_FromStringAndSize(<char*>buf, n) + value


def pong(now_ms):
    return field_varint(1, now_ms)


cdef Py_ssize_t _fields(unsigned char* buf, tuple pairs) except -1:
    """Write (number, value) varint fields, skipping zeros."""
    cdef Py_ssize_t n = 0
    cdef int number
    for number, value in pairs:
        if value:
            n += _put(buf + n, <uint64_t>number << 3)
            n += _put(buf + n, _u64(value))
    return n


def send_response(client_seq, message_id, pts, channel_id, channel_type, timestamp):
    cdef unsigned char buf[120]
    cdef Py_ssize_t n = _fields(buf, ((1, client_seq), (2, message_id), (3, pts),
                                      (5, channel_id), (6, channel_type), (7, timestamp)))
    return PyBytes_FromStringAndSize(<char*>buf, n)


def batch(list pushes):
    cdef unsigned char buf[12]
    cdef list parts = []
    cdef bytes p
    for p in pushes:
        buf[0] = 0x0A
        parts.append(PyBytes_FromStringAndSize(<char*>buf, 1 + _put(buf + 1, len(p))))
        parts.append(p)
    return b"".join(parts)


def difference(list pushes, current_pts, has_more, channel_id):
    cdef unsigned char buf[64]
    cdef Py_ssize_t n = _fields(buf, ((2, current_pts), (3, 1 if has_more else 0),
                                      (4, channel_id)))
    return batch(pushes) + PyBytes_FromStringAndSize(<char*>buf, n)


def notify(channel_id, channel_type, pts):
    cdef unsigned char buf[64]
    cdef Py_ssize_t n = _fields(buf, ((1, channel_id), (2, channel_type), (3, pts)))
    return PyBytes_FromStringAndSize(<char*>buf, n)


cdef inline Py_ssize_t _len_field(unsigned char* buf, int number, Py_ssize_t length) noexcept:
    cdef Py_ssize_t n = _put(buf, (<uint64_t>number << 3) | 2)
    return n + _put(buf + n, <uint64_t>length)


cdef Py_ssize_t _bytes_field(list parts, unsigned char* buf, Py_ssize_t n, int number,
                             bytes value) except -1:
    """Queue the varints written so far and a non-empty length-delimited field; returns the new
    fill of ``buf`` (0 once flushed)."""
    if not value:
        return n
    n += _len_field(buf + n, number, len(value))
    parts.append(PyBytes_FromStringAndSize(<char*>buf, n))
    parts.append(value)
    return 0


def push(str msg_key, server_message_id, message_seq, local_message_id, timestamp, channel_id,
         channel_type, message_type, str topic, from_uid, bytes payload, deleted, bytes content,
         e2e, str from_device):
    cdef unsigned char buf[256]
    cdef list parts = []
    cdef Py_ssize_t n = _bytes_field(parts, buf, 0, 2, msg_key.encode())
    n += _fields(buf + n, ((3, server_message_id), (4, message_seq), (5, local_message_id),
                           (9, timestamp), (10, channel_id), (11, channel_type),
                           (12, message_type)))
    n = _bytes_field(parts, buf, n, 14, topic.encode())
    n += _fields(buf + n, ((15, from_uid),))
    n = _bytes_field(parts, buf, n, 16, payload)
    n += _fields(buf + n, ((17, 1 if deleted else 0),))
    n = _bytes_field(parts, buf, n, 18, content)
    n += _fields(buf + n, ((19, 1 if e2e else 0),))
    n = _bytes_field(parts, buf, n, 20, from_device.encode())
    if n:
        parts.append(PyBytes_FromStringAndSize(<char*>buf, n))
    return b"".join(parts)

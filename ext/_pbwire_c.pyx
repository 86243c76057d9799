# cython: language_level=3
"""Compiled twin of privchat_tcp/wire/_pbwire_py.py: the same functions, the same bytes.

Varints are written into a stack buffer instead of being built byte by byte in Python; for an
MS reply and its push this is most of the encoding cost (see benchmarks/README.md)."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.string cimport memcpy
from libc.stdint cimport uint64_t

__all__ = ["varint", "field_varint", "field_bytes", "pong", "send_response", "batch",
           "difference", "notify", "push", "decode_send_request"]


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


cdef inline Py_ssize_t _vlen(uint64_t value) noexcept:
    cdef Py_ssize_t n = 1
    while value >= 0x80:
        value >>= 7
        n += 1
    return n


cdef inline Py_ssize_t _vfield_len(int number, uint64_t value) noexcept:
    # a varint field; 0 (the default) is not written
    return 0 if value == 0 else _vlen(<uint64_t>number << 3) + _vlen(value)


cdef inline Py_ssize_t _bfield_len(int number, Py_ssize_t length) noexcept:
    # a length-delimited field; empty (the default) is not written
    return 0 if length == 0 else _vlen((<uint64_t>number << 3) | 2) + _vlen(length) + length


cdef inline Py_ssize_t _vfield(unsigned char* out, int number, uint64_t value) noexcept:
    if value == 0:
        return 0
    cdef Py_ssize_t n = _put(out, <uint64_t>number << 3)
    return n + _put(out + n, value)


cdef inline Py_ssize_t _bfield(unsigned char* out, int number, const char* data,
                               Py_ssize_t length) noexcept:
    if length == 0:
        return 0
    cdef Py_ssize_t n = _put(out, (<uint64_t>number << 3) | 2)
    n += _put(out + n, <uint64_t>length)
    memcpy(out + n, data, length)
    return n + length


def send_response(client_seq, message_id, pts, channel_id, channel_type, timestamp):
    cdef unsigned char buf[120]
    cdef Py_ssize_t n = _vfield(buf, 1, _u64(client_seq))
    n += _vfield(buf + n, 2, _u64(message_id))
    n += _vfield(buf + n, 3, _u64(pts))
    n += _vfield(buf + n, 5, _u64(channel_id))
    n += _vfield(buf + n, 6, _u64(channel_type))
    n += _vfield(buf + n, 7, _u64(timestamp))
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


def push(str msg_key, server_message_id, message_seq, local_message_id, timestamp, channel_id,
         channel_type, message_type, str topic, from_uid, bytes payload, deleted, bytes content,
         e2e, str from_device):
    # one allocation: every length is known first (a push is built once per message)
    cdef bytes key = msg_key.encode()
    cdef bytes top = topic.encode() if topic else b""
    cdef bytes dev = from_device.encode() if from_device else b""
    cdef uint64_t mid = _u64(server_message_id), seq = _u64(message_seq)
    cdef uint64_t local = _u64(local_message_id), ts = _u64(timestamp)
    cdef uint64_t cid = _u64(channel_id), ctype = _u64(channel_type)
    cdef uint64_t mtype = _u64(message_type), uid = _u64(from_uid)
    cdef uint64_t dele = 1 if deleted else 0, enc = 1 if e2e else 0
    cdef Py_ssize_t total = (
        _bfield_len(2, len(key)) + _vfield_len(3, mid) + _vfield_len(4, seq)
        + _vfield_len(5, local) + _vfield_len(9, ts) + _vfield_len(10, cid)
        + _vfield_len(11, ctype) + _vfield_len(12, mtype) + _bfield_len(14, len(top))
        + _vfield_len(15, uid) + _bfield_len(16, len(payload)) + _vfield_len(17, dele)
        + _bfield_len(18, len(content)) + _vfield_len(19, enc) + _bfield_len(20, len(dev))
    )
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    cdef Py_ssize_t n = _bfield(p, 2, key, len(key))
    n += _vfield(p + n, 3, mid)
    n += _vfield(p + n, 4, seq)
    n += _vfield(p + n, 5, local)
    n += _vfield(p + n, 9, ts)
    n += _vfield(p + n, 10, cid)
    n += _vfield(p + n, 11, ctype)
    n += _vfield(p + n, 12, mtype)
    n += _bfield(p + n, 14, top, len(top))
    n += _vfield(p + n, 15, uid)
    n += _bfield(p + n, 16, payload, len(payload))
    n += _vfield(p + n, 17, dele)
    n += _bfield(p + n, 18, content, len(content))
    n += _vfield(p + n, 19, enc)
    n += _bfield(p + n, 20, dev, len(dev))
    assert n == total
    return out


def decode_send_request(bytes body):
    # SendMessageRequest holding only client_seq (2), local_message_id (3), channel_id (5),
    # channel_type (6), message_type (7) and payload (11), each well formed: the tuple of them;
    # anything else (another field, a malformed or oversized value): None, and the caller
    # parses it with protobuf (whose answer then stands, errors included)
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(body)
    cdef Py_ssize_t n = len(body), i = 0, start, length
    cdef uint64_t value, seq = 0, local = 0, cid = 0, ctype = 0, mtype = 0
    cdef unsigned char tag, b
    cdef int shift
    cdef Py_ssize_t pay_start = 0, pay_len = 0
    while i < n:
        tag = p[i]
        i += 1
        # a varint: at most 10 bytes, the 10th at most 1 (64 bits)
        value = 0
        shift = 0
        while True:
            if i >= n or shift > 63:
                return None
            b = p[i]
            i += 1
            if shift == 63 and b > 1:
                return None
            value |= (<uint64_t>(b & 0x7F)) << shift
            if b < 0x80:
                break
            shift += 7
        if tag == 0x10:
            if value > 0xFFFFFFFF:
                return None
            seq = value
        elif tag == 0x18:
            local = value
        elif tag == 0x28:
            cid = value
        elif tag == 0x30:
            if value > 0xFFFFFFFF:
                return None
            ctype = value
        elif tag == 0x38:
            if value > 0xFFFFFFFF:
                return None
            mtype = value
        elif tag == 0x5A:
            if value > <uint64_t>(n - i):
                return None
            pay_start = i
            pay_len = <Py_ssize_t>value
            i += pay_len
        else:
            return None
    payload = body if pay_start == 0 and pay_len == n else body[pay_start:pay_start + pay_len]
    return (seq, local, cid, ctype, mtype, payload)

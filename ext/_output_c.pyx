# cython: language_level=3
"""Compiled twin of privchat_tcp/wire/_output_py.py: the same output path, bound by
``Connection`` as its methods.

The frame of a reply or a push is one allocation: the 12 header bytes written in C in front
of the body's (the pure twin joins ``encode_header``'s bytes and the body). Anything but
exact ints in the header's ranges and a ``bytes`` body goes the pure twin's way (through the
facade's ``encode_header``), so errors stay the spec's.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.bytes cimport PyBytes_GET_SIZE
from libc.stdint cimport uint32_t
from libc.string cimport memcpy

from _cbits cimport _as_uint, _put32

from privchat_tcp.wire.commands import FLOW_PUSH, FLOW_RESPONSE
from privchat_tcp.wire.frame import encode_header as _encode_header

__all__ = ["send_response", "send_push", "data_to_send", "count_out", "count_in"]

cdef int _FLOW_RESPONSE = FLOW_RESPONSE
cdef int _FLOW_PUSH = FLOW_PUSH


cdef object _frame(Py_ssize_t n, object seq, object command, int flow, object status, object body):
    cdef long long s = 0, c = 0, st = 0
    cdef bytes out
    cdef unsigned char* p
    if (
        PyBytes_CheckExact(body)
        and n <= 0xFFFFFFFF
        and _as_uint(seq, 0xFFFFFFFF, &s)
        and _as_uint(command, 0xFF, &c)
        and _as_uint(status, 0xFF, &st)
    ):
        out = PyBytes_FromStringAndSize(NULL, n + 12)
        p = <unsigned char*>PyBytes_AS_STRING(out)
        _put32(p, <uint32_t>n)
        p[4] = 1  # VERSION
        _put32(p + 5, <uint32_t>s)
        p[9] = <unsigned char>c
        p[10] = <unsigned char>flow
        p[11] = <unsigned char>st
        memcpy(p + 12, PyBytes_AS_STRING(body), n)
        return out
    return _encode_header(n, seq, command, flow, status) + body


def send_response(conn, seq, command, body, e2e=False):
    cdef Py_ssize_t n
    if conn.cipher is None and not conn.compression:
        n = len(body)
        conn._out.append(_frame(n, seq, command, _FLOW_RESPONSE, 0, body))
        conn.out_bytes += n + 12
    else:
        conn.send(seq, command, FLOW_RESPONSE, 0, body, e2e)


def send_push(conn, command, body, status=0, e2e=False):
    cdef Py_ssize_t n
    seq = (conn.push_seq + 1) & 0xFFFFFFFF
    conn.push_seq = seq
    if conn.cipher is None and not conn.compression:
        n = len(body)
        conn._out.append(_frame(n, seq, command, _FLOW_PUSH, status, body))
        conn.out_bytes += n + 12
    else:
        conn.send(seq, command, FLOW_PUSH, status, body, e2e)


def data_to_send(conn):
    out = conn._out
    if not out:
        return b""
    data = b"".join(out)
    del out[:]
    conn.out_bytes = 0
    return data


def count_out(list out, list by_command, list errors_by_status):
    """The frames of ``out`` by command (runs of one command added at once) and the error
    responses by status; a frame that is not bytes of 12 or more goes the pure twin's way."""
    cdef Py_ssize_t run = 0
    cdef int cmd, last = -1
    cdef const unsigned char* p
    for f in out:
        if not PyBytes_CheckExact(f) or PyBytes_GET_SIZE(f) < 12:
            if run:
                by_command[last] += run
                run = 0
                last = -1
            by_command[f[9]] += 1
            if f[11] and f[10] & 3 == 1:
                errors_by_status[f[11]] += 1
            continue
        p = <const unsigned char*>PyBytes_AS_STRING(f)
        cmd = p[9]
        if cmd != last:
            if run:
                by_command[last] += run
            last = cmd
            run = 0
        run += 1
        if p[11] and (p[10] & 3) == 1:
            errors_by_status[p[11]] += 1
    if run:
        by_command[last] += run


def count_in(list frames, list by_command):
    """The split frames by command (runs of one command added at once)."""
    cdef Py_ssize_t run = 0
    last = None
    for f in frames:
        cmd = f[1]
        if cmd != last:
            if run:
                by_command[last] += run
            last = cmd
            run = 0
        run += 1
    if run:
        by_command[last] += run

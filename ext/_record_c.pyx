# cython: language_level=3
"""Compiled twin of privchat_tcp/service/_record_py.py: the same classes, outside the cyclic GC.

``cython.no_gc``: instances are never tracked by the garbage collector. That is safe because
their fields hold only ints, bools, str and bytes, which cannot form a reference cycle; it
keeps the millions of records of a busy server out of every collection. Integer fields are
stored as C integers (64-bit; ``local_message_id`` unsigned, as on the wire), which also
saves about 200 bytes per record over boxed ints.
"""

cimport cython

__all__ = ["Record", "DedupEntry", "SendResult", "own_key", "unindex"]


@cython.no_gc
@cython.final
cdef class Record:
    # (its fields: ext/privchat_tcp/service/_record_c.pxd, which ext/_batch_c.pyx cimports)

    def __init__(self, long long pts, long long message_id, long long channel_id,
                 long long channel_type, long long sender_id, str sender_device,
                 unsigned long long local_message_id, long long message_type,
                 long long timestamp, bytes payload, bytes content, bint e2e, long long kind,
                 bint revoked=False, long long revoked_by=0,
                 long long revoked_at=0, long long target_message_id=0):
        self.pts = pts
        self.message_id = message_id
        self.channel_id = channel_id
        self.channel_type = channel_type
        self.sender_id = sender_id
        self.sender_device = sender_device
        self.local_message_id = local_message_id
        self.message_type = message_type
        self.timestamp = timestamp
        self.payload = payload
        self.content = content
        self.e2e = e2e
        self.kind = kind
        self.revoked = revoked
        self.revoked_by = revoked_by
        self.revoked_at = revoked_at
        self.target_message_id = target_message_id

    cdef tuple _fields(self):
        return (self.pts, self.message_id, self.channel_id, self.channel_type, self.sender_id,
                self.sender_device, self.local_message_id, self.message_type, self.timestamp,
                self.payload, self.content, self.e2e, self.kind, self.revoked,
                self.revoked_by, self.revoked_at, self.target_message_id)

    def __eq__(self, other):
        if type(other) is not Record:
            return NotImplemented
        return self._fields() == (<Record>other)._fields()

    __hash__ = None

    def __repr__(self):
        return (
            f"Record(pts={self.pts!r}, message_id={self.message_id!r}, "
            f"channel_id={self.channel_id!r}, channel_type={self.channel_type!r}, "
            f"sender_id={self.sender_id!r}, sender_device={self.sender_device!r}, "
            f"local_message_id={self.local_message_id!r}, message_type={self.message_type!r}, "
            f"timestamp={self.timestamp!r}, payload={self.payload!r}, content={self.content!r}, "
            f"e2e={bool(self.e2e)!r}, kind={self.kind!r}, "
            f"revoked={bool(self.revoked)!r}, revoked_by={self.revoked_by!r}, "
            f"revoked_at={self.revoked_at!r}, target_message_id={self.target_message_id!r})"
        )


@cython.no_gc
@cython.final
cdef class DedupEntry:
    cdef public long long message_id
    cdef public long long pts
    cdef public long long channel_id
    cdef public long long timestamp

    def __init__(self, long long message_id, long long pts, long long channel_id,
                 long long timestamp):
        self.message_id = message_id
        self.pts = pts
        self.channel_id = channel_id
        self.timestamp = timestamp

    def __eq__(self, other):
        if type(other) is not DedupEntry:
            return NotImplemented
        cdef DedupEntry o = <DedupEntry>other
        return (self.message_id == o.message_id and self.pts == o.pts
                and self.channel_id == o.channel_id and self.timestamp == o.timestamp)

    __hash__ = None

    def __repr__(self):
        return (f"DedupEntry(message_id={self.message_id!r}, pts={self.pts!r}, "
                f"channel_id={self.channel_id!r}, timestamp={self.timestamp!r})")


@cython.no_gc
@cython.final
cdef class SendResult:
    cdef public long long message_id
    cdef public long long pts
    cdef public long long channel_id
    cdef public long long timestamp
    cdef public bint duplicate

    def __init__(self, long long message_id, long long pts, long long channel_id,
                 long long timestamp, bint duplicate):
        self.message_id = message_id
        self.pts = pts
        self.channel_id = channel_id
        self.timestamp = timestamp
        self.duplicate = duplicate

    def __eq__(self, other):
        if type(other) is not SendResult:
            return NotImplemented
        cdef SendResult o = <SendResult>other
        return (self.message_id == o.message_id and self.pts == o.pts
                and self.channel_id == o.channel_id and self.timestamp == o.timestamp
                and self.duplicate == o.duplicate)

    __hash__ = None

    def __repr__(self):
        return (f"SendResult(message_id={self.message_id!r}, pts={self.pts!r}, "
                f"channel_id={self.channel_id!r}, timestamp={self.timestamp!r}, "
                f"duplicate={bool(self.duplicate)!r})")


def own_key(Record record not None, sender, str device, local_id, DedupEntry entry not None):
    """Whether ``(sender, device, local_id) -> entry`` is ``record``'s own idempotency key (the
    pure twin's docstring)."""
    return (
        record.kind == 0
        and record.local_message_id == local_id
        and record.sender_id == sender
        and record.message_id == entry.message_id
        and record.pts == entry.pts
        and record.channel_id == entry.channel_id
        and record.timestamp == entry.timestamp
        and record.sender_device == device
    )


def unindex(list records not None, list shards not None):
    """Drop each message of ``records`` from ``shards`` (the pure twin's docstring)."""
    cdef Py_ssize_t n = len(shards)
    cdef object record
    cdef Record r
    cdef object mid
    if n == 0:
        raise ZeroDivisionError("no shards")
    for record in records:
        r = <Record?>record
        if r.kind == 0:
            mid = r.message_id
            (<dict?>shards[hash(mid) % n]).pop(mid, None)

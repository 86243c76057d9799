# The compiled Record's fields (ext/_record_c.pyx), for the modules that read them at C level
# (ext/_batch_c.pyx: the SQLite writer binds a message row straight from them).

cdef class Record:
    cdef public long long pts
    cdef public long long message_id
    cdef public long long channel_id
    cdef public long long channel_type
    cdef public long long sender_id
    cdef public str sender_device
    cdef public unsigned long long local_message_id
    cdef public long long message_type
    cdef public long long timestamp
    cdef public bytes payload
    cdef public bytes content
    cdef public bint e2e
    cdef public long long kind
    cdef public bint revoked
    cdef public long long revoked_by
    cdef public long long revoked_at
    cdef public long long target_message_id

    cdef tuple _fields(self)

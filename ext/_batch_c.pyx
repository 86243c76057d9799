# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The SQLite writer's connection, compiled twin of ``privchat_tcp/store/_batch_py.py``.

Same contract: ``WriterDB.commit(ops)`` runs a batch of ``(sql, params)`` in one transaction,
every row ending as the changes made in order would leave it, and raises what the pure twin
raises (the ``sqlite3`` module's errors, ``OverflowError``, ``UnicodeEncodeError``) with the
transaction rolled back.

How it differs: it calls SQLite's C API on a connection of its own, in two passes. The first,
holding the GIL, turns every parameter into a C value (an int64, a double, a pointer into the
str's cached UTF-8 or the bytes' buffer, which the ops keep alive) and every statement into a
prepared one (cached by its SQL); the second runs the whole transaction, BEGIN to COMMIT and its
fsync, without the GIL: the event loop runs meanwhile, and never waits for the writer to hand
the GIL back between two statements. A statement per row (no multi-row grouping: a step costs
no GIL here); a channel's pts is still written once per run of hot statements, its last value.

It must share the SQLite library of Python's ``sqlite3`` module (the checkpointer and the
readers use that one): two copies of SQLite in one process do not see each other's locks. The
import checks it and fails otherwise (``_ext.twins`` then picks the pure twin).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLong
from libc.limits cimport INT_MAX
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, strlen

import os
import sqlite3

import _sqlite3

from privchat_tcp.service._record_c cimport Record

from privchat_tcp.store._sql import (
    BUSY_TIMEOUT_S,
    INSERT_DEDUP,
    INSERT_MESSAGE,
    SET_PTS,
    committed_row,
    pragmas,
)

__all__ = ["WriterDB"]


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL


cdef extern from "dlfcn.h" nogil:
    void* dlopen(const char*, int)
    void* dlsym(void*, const char*)
    int dlclose(void*)
    int RTLD_LAZY
    int RTLD_NOLOAD


cdef extern from "sqlite3.h" nogil:
    ctypedef struct sqlite3_db "sqlite3":
        pass
    ctypedef struct sqlite3_stmt:
        pass
    ctypedef void (*sqlite3_destructor_type)(void*)
    int SQLITE_OK
    int SQLITE_BUSY
    int SQLITE_ROW
    int SQLITE_DONE
    int SQLITE_CONSTRAINT
    int SQLITE_CORRUPT
    int SQLITE_NOTADB
    int SQLITE_OPEN_READWRITE
    int SQLITE_OPEN_CREATE
    int SQLITE_OPEN_NOMUTEX
    int SQLITE_CHECKPOINT_PASSIVE
    const char* sqlite3_libversion()
    int sqlite3_open_v2(const char*, sqlite3_db**, int, const char*)
    int sqlite3_close_v2(sqlite3_db*)
    int sqlite3_busy_timeout(sqlite3_db*, int)
    int sqlite3_exec(sqlite3_db*, const char*, void*, void*, char**)
    int sqlite3_prepare_v2(sqlite3_db*, const char*, int, sqlite3_stmt**, const char**)
    int sqlite3_finalize(sqlite3_stmt*)
    int sqlite3_step(sqlite3_stmt*)
    int sqlite3_reset(sqlite3_stmt*)
    int sqlite3_clear_bindings(sqlite3_stmt*)
    int sqlite3_bind_parameter_count(sqlite3_stmt*)
    int sqlite3_bind_null(sqlite3_stmt*, int)
    int sqlite3_bind_int64(sqlite3_stmt*, int, long long)
    int sqlite3_bind_double(sqlite3_stmt*, int, double)
    int sqlite3_bind_text(sqlite3_stmt*, int, const char*, int, sqlite3_destructor_type)
    int sqlite3_bind_blob(sqlite3_stmt*, int, const void*, int, sqlite3_destructor_type)
    int sqlite3_extended_errcode(sqlite3_db*)
    const char* sqlite3_errmsg(sqlite3_db*)
    int sqlite3_wal_checkpoint_v2(sqlite3_db*, const char*, int, int*, int*)


cdef int _same_sqlite() except -1:
    """Fail the import unless ``_sqlite3`` resolves SQLite to the library this module calls."""
    cdef void* handle = dlopen(os.fsencode(_sqlite3.__file__), RTLD_LAZY | RTLD_NOLOAD)
    cdef void* theirs = NULL
    if handle != NULL:
        theirs = dlsym(handle, "sqlite3_libversion")
        dlclose(handle)
    if theirs != <void*>sqlite3_libversion:
        raise ImportError(
            "privchat_tcp.store._batch_c: Python's sqlite3 module does not use the SQLite "
            f"library this module is linked to ({sqlite3_libversion().decode()}); "
            "the pure-Python writer is used instead"
        )
    return 0


_same_sqlite()

cdef enum:
    T_NULL = 0
    T_INT = 1
    T_FLOAT = 2
    T_TEXT = 3
    T_BLOB = 4
    CACHE = 256  # prepared statements kept (the store's SQL is a fixed set of strings)
    ERRMSG = 512

cdef struct Val:
    int tag
    int n
    long long i
    double d
    const char* p

cdef struct Step:
    sqlite3_stmt* stmt
    Py_ssize_t first
    int count


cdef object _error(int code, const char* msg):
    """The ``sqlite3`` module's exception for a result code (the classes it would raise)."""
    primary = code & 0xFF
    text = msg.decode("utf-8", "replace")
    if primary == SQLITE_CONSTRAINT:
        exc = sqlite3.IntegrityError(text)
    elif primary == SQLITE_CORRUPT or primary == SQLITE_NOTADB:
        exc = sqlite3.DatabaseError(text)
    else:
        exc = sqlite3.OperationalError(text)
    exc.sqlite_errorcode = code
    return exc


cdef class WriterDB:
    """The writer thread's own connection to ``path`` (used by one thread at a time)."""

    cdef sqlite3_db* db
    cdef dict cache  # sql -> index in stmts
    cdef sqlite3_stmt** stmts
    cdef int nstmts
    cdef sqlite3_stmt* begin
    cdef sqlite3_stmt* commit_
    cdef sqlite3_stmt* rollback
    cdef sqlite3_stmt* set_pts
    cdef Val* vals
    cdef Py_ssize_t nvals
    cdef Py_ssize_t cap_vals
    cdef Step* steps
    cdef Py_ssize_t nsteps
    cdef Py_ssize_t cap_steps
    cdef list keep  # bytes made from other buffers, alive until the commit returns
    cdef char errmsg[ERRMSG]
    cdef int errcode

    def __cinit__(self, str path, str synchronous):
        self.db = NULL
        self.stmts = NULL
        self.vals = NULL
        self.steps = NULL
        self.begin = self.commit_ = self.rollback = self.set_pts = NULL
        self.cache = {}
        self.keep = []
        cdef bytes bpath = os.fsencode(path)
        cdef int rc = sqlite3_open_v2(
            bpath, &self.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL
        )
        if rc != SQLITE_OK:
            msg = sqlite3_errmsg(self.db) if self.db != NULL else b"out of memory"
            raise _error(rc, msg)
        sqlite3_busy_timeout(self.db, BUSY_TIMEOUT_S * 1000)
        self.stmts = <sqlite3_stmt**>realloc(NULL, CACHE * sizeof(sqlite3_stmt*))
        if self.stmts == NULL:
            raise MemoryError()
        self.nstmts = 0
        for pragma in pragmas(synchronous):
            self._exec(pragma)
        self.begin = self._prepare("BEGIN")
        self.commit_ = self._prepare("COMMIT")
        self.rollback = self._prepare("ROLLBACK")
        self.set_pts = self._prepare(SET_PTS)

    def __dealloc__(self):
        self._close()
        free(self.stmts)
        free(self.vals)
        free(self.steps)

    cdef void _close(self) noexcept:
        cdef int i
        if self.stmts != NULL:
            for i in range(self.nstmts):
                sqlite3_finalize(self.stmts[i])
        self.nstmts = 0
        sqlite3_finalize(self.begin)  # (NULL: a no-op)
        sqlite3_finalize(self.commit_)
        sqlite3_finalize(self.rollback)
        sqlite3_finalize(self.set_pts)
        self.begin = self.commit_ = self.rollback = self.set_pts = NULL
        if self.db != NULL:
            sqlite3_close_v2(self.db)
            self.db = NULL

    cdef int _exec(self, str sql) except -1:
        cdef bytes b = sql.encode()
        cdef const char* text = b
        cdef int rc
        with nogil:
            rc = sqlite3_exec(self.db, text, NULL, NULL, NULL)
        if rc != SQLITE_OK:
            raise _error(sqlite3_extended_errcode(self.db), sqlite3_errmsg(self.db))
        return 0

    cdef sqlite3_stmt* _prepare(self, str sql) except NULL:
        cdef Py_ssize_t n
        cdef const char* text = PyUnicode_AsUTF8AndSize(sql, &n)
        cdef const char* tail = NULL
        cdef sqlite3_stmt* stmt = NULL
        if n > INT_MAX:
            raise OverflowError("SQL is too long")
        cdef int rc = sqlite3_prepare_v2(self.db, text, <int>n, &stmt, &tail)
        if rc != SQLITE_OK:
            raise _error(sqlite3_extended_errcode(self.db), sqlite3_errmsg(self.db))
        if stmt == NULL:
            raise sqlite3.ProgrammingError("no SQL statement")
        while tail != NULL and tail[0] != 0 and tail[0] in b" \t\r\n;":
            tail += 1
        if tail != NULL and tail[0] != 0:
            sqlite3_finalize(stmt)
            raise sqlite3.ProgrammingError("You can only execute one statement at a time.")
        return stmt

    cdef sqlite3_stmt* _stmt(self, object sql) except NULL:
        """The cached prepared statement of ``sql`` (prepared now if it is new)."""
        cdef object slot = self.cache.get(sql)
        cdef int i
        if slot is not None:
            return self.stmts[<int>slot]
        if self.nstmts == CACHE:  # not expected: the store's statements are literals
            for i in range(self.nstmts):
                sqlite3_finalize(self.stmts[i])
            self.nstmts = 0
            self.cache.clear()
        cdef sqlite3_stmt* stmt = self._prepare(sql)
        self.stmts[self.nstmts] = stmt
        self.cache[sql] = self.nstmts
        self.nstmts += 1
        return stmt

    cdef int _reserve(self, Py_ssize_t vals) except -1:
        cdef Py_ssize_t cap
        cdef void* grown
        if self.nvals + vals > self.cap_vals:
            cap = max(2 * self.cap_vals, self.nvals + vals, 1024)
            grown = realloc(self.vals, cap * sizeof(Val))
            if grown == NULL:
                raise MemoryError()
            self.vals = <Val*>grown
            self.cap_vals = cap
        if self.nsteps + 1 > self.cap_steps:
            cap = max(2 * self.cap_steps, 256)
            grown = realloc(self.steps, cap * sizeof(Step))
            if grown == NULL:
                raise MemoryError()
            self.steps = <Step*>grown
            self.cap_steps = cap
        return 0

    cdef int _value(self, Val* v, object x) except -1:
        cdef Py_ssize_t n
        if x is None:
            v.tag = T_NULL
        elif isinstance(x, int):
            v.tag = T_INT
            v.i = PyLong_AsLongLong(x)  # OverflowError past 64 bits, as the sqlite3 module
        elif isinstance(x, float):
            v.tag = T_FLOAT
            v.d = x
        elif isinstance(x, str):
            v.tag = T_TEXT
            v.p = PyUnicode_AsUTF8AndSize(x, &n)  # UnicodeEncodeError for a lone surrogate
            if n > INT_MAX:
                raise OverflowError("string longer than INT_MAX bytes")
            v.n = <int>n
        else:
            if not isinstance(x, bytes):
                if not isinstance(x, (bytearray, memoryview)):
                    raise sqlite3.ProgrammingError(
                        f"Error binding parameter: type {type(x).__name__!r} is not supported"
                    )
                x = bytes(x)
                self.keep.append(x)
            n = PyBytes_GET_SIZE(x)
            if n > INT_MAX:
                raise OverflowError("BLOB longer than INT_MAX bytes")
            v.tag = T_BLOB
            v.p = PyBytes_AS_STRING(x)
            v.n = <int>n
        return 0

    cdef int _add(self, sqlite3_stmt* stmt, object params) except -1:
        cdef Py_ssize_t n = len(params)
        cdef Py_ssize_t k
        cdef int want = sqlite3_bind_parameter_count(stmt)
        if n != want:
            raise sqlite3.ProgrammingError(
                f"Incorrect number of bindings supplied. The current statement uses {want}, "
                f"and there are {n} supplied."
            )
        self._reserve(n)
        for k in range(n):
            self._value(&self.vals[self.nvals + k], params[k])
        self.steps[self.nsteps].stmt = stmt
        self.steps[self.nsteps].first = self.nvals
        self.steps[self.nsteps].count = <int>n
        self.nsteps += 1
        self.nvals += n
        return 0

    cdef int _add_record(self, sqlite3_stmt* stmt, Record r) except -1:
        """A message row straight from a compiled Record's fields, as committed (not revoked:
        ``mark_revoked``'s UPDATE follows it), in INSERT_MESSAGE's column order."""
        cdef int want = sqlite3_bind_parameter_count(stmt)
        if want != 17:
            raise sqlite3.ProgrammingError(
                f"Incorrect number of bindings supplied. The current statement uses {want}, "
                "and a record supplies 17."
            )
        self._reserve(17)
        cdef Val* v = &self.vals[self.nvals]
        cdef int k
        for k in range(17):
            v[k].tag = T_INT
            v[k].i = 0
        v[0].i = r.channel_id
        v[1].i = r.pts
        v[2].i = r.message_id
        v[3].i = r.channel_type
        v[4].i = r.sender_id
        self._value(&v[5], r.sender_device)
        if r.local_message_id <= 0x7FFFFFFFFFFFFFFF:
            v[6].i = <long long>r.local_message_id
        else:  # (TEXT: what SQLite makes of an int there too)
            text = str(r.local_message_id)
            self.keep.append(text)
            self._value(&v[6], text)
        v[7].i = r.message_type
        v[8].i = r.timestamp
        self._value(&v[9], r.payload)
        self._value(&v[10], r.content)
        v[11].i = 1 if r.e2e else 0
        v[12].i = r.kind
        v[16].i = r.target_message_id  # (13-15: revoked, revoked_by, revoked_at)
        self.steps[self.nsteps].stmt = stmt
        self.steps[self.nsteps].first = self.nvals
        self.steps[self.nsteps].count = 17
        self.nsteps += 1
        self.nvals += 17
        return 0

    cdef int _add_pts(self, dict pts) except -1:
        for cid, value in pts.items():
            self._add(self.set_pts, (value, cid))
        pts.clear()
        return 0

    cdef int _run(self) noexcept nogil:
        """Every step, in order; 0, or the failing result code (``errmsg`` holds its text)."""
        cdef Py_ssize_t s, k
        cdef Step* step
        cdef Val* v
        cdef sqlite3_stmt* stmt
        cdef int rc
        cdef const char* msg
        for s in range(self.nsteps):
            step = &self.steps[s]
            stmt = step.stmt
            for k in range(step.count):
                v = &self.vals[step.first + k]
                if v.tag == T_INT:
                    rc = sqlite3_bind_int64(stmt, <int>k + 1, v.i)
                elif v.tag == T_TEXT:
                    rc = sqlite3_bind_text(stmt, <int>k + 1, v.p, v.n, <sqlite3_destructor_type>0)
                elif v.tag == T_BLOB:
                    rc = sqlite3_bind_blob(stmt, <int>k + 1, v.p, v.n, <sqlite3_destructor_type>0)
                elif v.tag == T_NULL:
                    rc = sqlite3_bind_null(stmt, <int>k + 1)
                else:
                    rc = sqlite3_bind_double(stmt, <int>k + 1, v.d)
                if rc != SQLITE_OK:
                    break
            else:
                rc = sqlite3_step(stmt)
                if rc == SQLITE_DONE or rc == SQLITE_ROW:
                    rc = SQLITE_OK
            if rc != SQLITE_OK:
                self.errcode = sqlite3_extended_errcode(self.db)
                msg = sqlite3_errmsg(self.db)
                k = strlen(msg)
                if k > ERRMSG - 1:
                    k = ERRMSG - 1
                memcpy(self.errmsg, msg, k)
                self.errmsg[k] = 0
                sqlite3_reset(stmt)
                sqlite3_clear_bindings(stmt)
                return rc
            sqlite3_reset(stmt)
            sqlite3_clear_bindings(stmt)  # (no pointer into a Python object outlives the batch)
        return 0

    def commit(self, list ops):
        """``ops`` in one transaction: every write of them, or (raising) none."""
        cdef dict pts = {}
        cdef object sql, params
        cdef Record record
        cdef int rc
        self._open()
        self.nvals = 0
        self.nsteps = 0
        try:
            self._add(self.begin, ())
            for sql, params in ops:
                if sql is INSERT_MESSAGE:
                    if type(params) is Record:
                        record = <Record>params
                        self._add_record(self._stmt(sql), record)
                        pts[record.channel_id] = record.pts
                    else:
                        if not isinstance(params, (tuple, list)):
                            params = committed_row(params)
                        self._add(self._stmt(sql), params)
                        pts[params[0]] = params[1]
                elif sql is SET_PTS:
                    pts[params[1]] = params[0]
                elif sql is INSERT_DEDUP:
                    self._add(self._stmt(sql), params)
                else:  # a barrier: the pts of what came before it first
                    if pts:
                        self._add_pts(pts)
                    self._add(self._stmt(sql), params)
            if pts:
                self._add_pts(pts)
            self._add(self.commit_, ())
            with nogil:
                rc = self._run()
                if rc != SQLITE_OK:
                    sqlite3_step(self.rollback)  # (an error if no transaction is open: ignored)
                    sqlite3_reset(self.rollback)
            if rc != SQLITE_OK:
                raise _error(self.errcode, self.errmsg)
        finally:
            self.keep.clear()
            self.nvals = 0
            self.nsteps = 0

    def checkpoint(self):
        """``PRAGMA wal_checkpoint(PASSIVE)``: (busy, WAL frames, frames checkpointed)."""
        cdef int frames = -1
        cdef int done = -1
        cdef int rc
        self._open()
        with nogil:
            rc = sqlite3_wal_checkpoint_v2(
                self.db, NULL, SQLITE_CHECKPOINT_PASSIVE, &frames, &done
            )
        if rc == SQLITE_BUSY:
            return 1, frames, done
        if rc != SQLITE_OK:
            raise _error(sqlite3_extended_errcode(self.db), sqlite3_errmsg(self.db))
        return 0, frames, done

    def close(self):
        self._close()
        self.cache.clear()

    cdef int _open(self) except -1:
        if self.db == NULL:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        return 0

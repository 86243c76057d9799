"""The SQLite writer's connection: the compiled twin (``ext/_batch_c.pyx``, SQLite's C API, the
transaction run without the GIL) or the pure one (``_batch_py``, the ``sqlite3`` module), picked
by ``privchat_tcp._ext.twins``. Both commit a batch of ``(sql, params)`` ops the same way."""

from __future__ import annotations

from types import ModuleType

from .._ext import twins

__all__ = ["WriterDB", "IMPL", "impl_py", "impl_c"]

_twins = twins("privchat_tcp.store", "batch")
impl_py: ModuleType = _twins.impl_py
impl_c: ModuleType | None = _twins.impl_c
IMPL = _twins.name
WriterDB = _twins.impl.WriterDB

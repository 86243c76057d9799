"""Type stub for the compiled ``privchat_tcp.store._batch_c`` (ext/_batch_c.pyx).

It mirrors _batch_py."""

from ._batch_py import WriterDB as WriterDB

__all__ = ["WriterDB"]

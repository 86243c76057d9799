"""Type stub for the compiled ``privchat_tcp.service._record_c`` (ext/_record_c.pyx).

It mirrors _record_py."""

from ._record_py import DedupEntry as DedupEntry
from ._record_py import Record as Record
from ._record_py import SendResult as SendResult
from ._record_py import own_key as own_key
from ._record_py import unindex as unindex

__all__ = ["Record", "DedupEntry", "SendResult", "own_key", "unindex"]

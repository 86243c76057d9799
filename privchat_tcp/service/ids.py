"""Message ids: snowflakes, drawn on the event loop's thread with the time passed in.

``Snowflake.next`` runs once per MS: it has a compiled twin (``ext/_ids_c.pyx``) picked by
``_ext``, the pure one (``_ids_py.py``) its spec; tests draw the same ids from both.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from .._ext import twins

__all__ = ["Snowflake", "IMPL", "impl_py", "impl_c"]

_twins = twins("privchat_tcp.service", "ids")
impl_py: ModuleType = _twins.impl_py
impl_c: ModuleType | None = _twins.impl_c
IMPL = _twins.name

if TYPE_CHECKING:
    from ._ids_py import Snowflake
else:
    Snowflake = _twins.impl.Snowflake

"""Session AES-256-GCM, one object per direction: the compiled one unless told not to.

``PRIVCHAT_NO_EXTENSIONS=1`` (or an install without a compiler or OpenSSL headers) uses the
pure-Python twin. Tests use ``impl_py`` / ``impl_c`` to compare both.
"""

from __future__ import annotations

from types import ModuleType

from .._ext import twins
from . import _aead_py

__all__ = ["Sealer", "Opener", "IMPL", "impl_py", "impl_c"]

_twins = twins("privchat_tcp.wire", "aead")
impl_py: ModuleType = _twins.impl_py
impl_c: ModuleType | None = _twins.impl_c
IMPL = _twins.name
_impl: ModuleType = _twins.impl

Sealer: type[_aead_py.Sealer] = _impl.Sealer
Opener: type[_aead_py.Opener] = _impl.Opener

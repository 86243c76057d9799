"""Session AES-256-GCM, one object per direction: the compiled one unless told not to.

``PRIVCHAT_NO_EXTENSIONS=1`` (or an install without a compiler or OpenSSL headers) uses the
pure-Python twin. Tests use ``impl_py`` / ``impl_c`` to compare both.
"""

from __future__ import annotations

from types import ModuleType

from . import _aead_py
from .frame import NO_EXTENSIONS

__all__ = ["Sealer", "Opener", "IMPL", "impl_py", "impl_c"]

impl_py: ModuleType = _aead_py
impl_c: ModuleType | None
try:
    from . import _aead_c as impl_c
except ImportError:  # no compiler or no OpenSSL headers at install time: the pure twin serves
    impl_c = None

_impl: ModuleType = impl_py if (NO_EXTENSIONS or impl_c is None) else impl_c
IMPL = "py" if _impl is impl_py else "c"

Sealer: type[_aead_py.Sealer] = _impl.Sealer
Opener: type[_aead_py.Opener] = _impl.Opener

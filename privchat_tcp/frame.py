"""Frame splitting and header codec: picks the compiled implementation unless told not to.

``PRIVCHAT_NO_EXTENSIONS=1`` forces the pure-Python twin. Other modules import from here only;
tests and benchmarks use the ``*_py`` / ``*_c`` names to compare both.
"""

from __future__ import annotations

import os
from types import ModuleType

from . import _frame_py
from ._frame_py import (
    HEADER_SIZE,
    V_COMPRESSION,
    V_FLOW,
    V_NONE,
    V_RESERVED,
    V_TOO_LARGE,
    V_VERSION,
    VERSION,
    Frame,
)

__all__ = [
    "HEADER_SIZE",
    "VERSION",
    "Frame",
    "V_NONE",
    "V_RESERVED",
    "V_VERSION",
    "V_TOO_LARGE",
    "V_FLOW",
    "V_COMPRESSION",
    "split_frames",
    "encode_header",
    "decode_header",
    "IMPL",
    "NO_EXTENSIONS",
    "impl_py",
    "impl_c",
]

NO_EXTENSIONS = bool(os.environ.get("PRIVCHAT_NO_EXTENSIONS"))

impl_py: ModuleType = _frame_py
impl_c: ModuleType | None
try:
    from . import _frame_c as impl_c
except ImportError:  # no compiler at install time: the pure twin serves
    impl_c = None

_impl: ModuleType = impl_py if (NO_EXTENSIONS or impl_c is None) else impl_c
IMPL = "py" if _impl is impl_py else "c"

split_frames = _impl.split_frames
encode_header = _impl.encode_header
decode_header = _impl.decode_header

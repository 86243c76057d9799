"""Frame splitting and header codec: the compiled twin unless ``_ext`` says otherwise.

Other modules import from here only; tests and benchmarks use ``impl_py`` / ``impl_c`` to
compare both.
"""

from __future__ import annotations

from types import ModuleType

from .._ext import NO_EXTENSIONS, twins
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

_twins = twins("privchat_tcp.wire", "frame")
impl_py: ModuleType = _twins.impl_py
impl_c: ModuleType | None = _twins.impl_c
IMPL = _twins.name

split_frames = _twins.impl.split_frames
encode_header = _twins.impl.encode_header
decode_header = _twins.impl.decode_header

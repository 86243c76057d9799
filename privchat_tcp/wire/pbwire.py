"""Hand-built protobuf encodings for the hot frames: the compiled twin unless told not to.

Building a protobuf object costs several microseconds; these functions write the same bytes
directly (fields in field-number order, defaults omitted, as protobuf itself does), so PONG,
SendMessageResponse, pushes, MPB and MP replies need no objects. ``PRIVCHAT_NO_EXTENSIONS=1``
forces the pure-Python twin (``_ext``); tests check both against the generated classes.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from .._ext import twins

__all__ = [
    "varint",
    "field_varint",
    "field_bytes",
    "pong",
    "send_response",
    "batch",
    "difference",
    "notify",
    "push",
    "decode_send_request",
    "DECODE_SEND_IS_FAST",
    "IMPL",
    "impl_py",
    "impl_c",
]

_twins = twins("privchat_tcp.wire", "pbwire")
impl_py: ModuleType = _twins.impl_py
impl_c: ModuleType | None = _twins.impl_c
IMPL = _twins.name
_impl: ModuleType = _twins.impl

varint: Callable[..., bytes] = _impl.varint
field_varint: Callable[..., bytes] = _impl.field_varint
field_bytes: Callable[..., bytes] = _impl.field_bytes
pong: Callable[..., bytes] = _impl.pong
send_response: Callable[..., bytes] = _impl.send_response
batch: Callable[..., bytes] = _impl.batch
difference: Callable[..., bytes] = _impl.difference
notify: Callable[..., bytes] = _impl.notify
push: Callable[..., bytes] = _impl.push
decode_send_request: Callable[[bytes], tuple[int, int, int, int, int, bytes] | None] = (
    _impl.decode_send_request
)
#: the compiled decoder is ~5x faster than a protobuf object, the pure one slower: callers use
#: it only when compiled (both give protobuf's answer or None; tests/test_pbwire.py)
DECODE_SEND_IS_FAST: bool = IMPL == "c"

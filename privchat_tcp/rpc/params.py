"""RPC bodies and parameters: parsing JSON, and checked getters for each kind of value.

Each getter raises a ``ServiceError`` of the 101xx family naming the key, never echoing the
value it was given. ``parse_body`` refuses what ``safejson.loads`` refuses (too deep, a lone
surrogate, a number too long, not UTF-8); ``text`` refuses control characters unless the
key is multi-line text or an opaque secret.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import ErrorCode, ServiceError
from .safejson import MAX_DEPTH, loads

__all__ = [
    "parse_body",
    "u64",
    "opt_u64",
    "text",
    "opt_text",
    "flag",
    "u64_list",
    "channel_type",
]

U64_MAX = (1 << 64) - 1

#: an id sent as a string (PrivChat clients send some): ASCII digits only, at most 20 of them
_ID_TEXT = re.compile(r"[0-9]{1,20}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def parse_body(raw: bytes, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """An RPC body: a JSON object (empty or ``null``: ``{}``); 10105 INVALID_JSON otherwise."""
    if not raw.strip():
        return {}
    value = loads(raw, max_depth)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ServiceError(ErrorCode.INVALID_PARAMS, "body must be a JSON object")
    return value


def _missing(key: str) -> ServiceError:
    return ServiceError(ErrorCode.MISSING_REQUIRED_PARAM, f"missing parameter: {key}")


def _type(key: str, kind: str) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_PARAM_TYPE, f"{key} must be {kind}")


def _as_u64(key: str, value: Any) -> int:
    if isinstance(value, str):  # PrivChat clients send some ids as strings
        if len(value) > 20 and value.isascii() and value.isdigit():
            raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, f"{key} out of range")
        if _ID_TEXT.fullmatch(value) is None:  # not "²", "١٢٣", " 1" or "-1"
            raise _type(key, "an unsigned integer")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type(key, "an unsigned integer")
    if not 0 <= value <= U64_MAX:
        raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, f"{key} out of range")
    return value


def u64(body: dict[str, Any], key: str, nonzero: bool = True) -> int:
    if key not in body or body[key] is None:
        raise _missing(key)
    value = _as_u64(key, body[key])
    if nonzero and value == 0:
        raise ServiceError(ErrorCode.INVALID_PARAMS, f"{key} must be non-zero")
    return value


def opt_u64(body: dict[str, Any], key: str, default: int = 0) -> int:
    value = body.get(key)
    return default if value is None else _as_u64(key, value)


def text(
    body: dict[str, Any],
    key: str,
    max_len: int = 4096,
    *,
    multiline: bool = False,
    opaque: bool = False,
) -> str:
    """A string of at most ``max_len`` characters, valid Unicode (no lone surrogate) and
    without control characters (C0, DEL, C1); ``multiline`` allows tab, LF and CR,
    ``opaque`` (a password) any character. 10104 INVALID_FORMAT otherwise."""
    value = body.get(key)
    if value is None:
        raise _missing(key)
    if not isinstance(value, str):
        raise _type(key, "a string")
    if len(value) > max_len:
        raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, f"{key} too long")
    if not value.isascii() and _SURROGATE.search(value):
        raise ServiceError(ErrorCode.INVALID_FORMAT, f"{key} is not valid Unicode")
    if not opaque and (_CONTROL_BUT_LINES if multiline else _CONTROL).search(value):
        raise ServiceError(ErrorCode.INVALID_FORMAT, f"{key} has a control character")
    return value


def opt_text(
    body: dict[str, Any],
    key: str,
    max_len: int = 4096,
    *,
    multiline: bool = False,
    opaque: bool = False,
) -> str | None:
    if body.get(key) is None:
        return None
    return text(body, key, max_len, multiline=multiline, opaque=opaque)


def flag(body: dict[str, Any], key: str, default: bool | None = None) -> bool:
    value = body.get(key)
    if value is None:
        if default is None:
            raise _missing(key)
        return default
    if not isinstance(value, bool):
        raise _type(key, "a boolean")
    return value


def u64_list(body: dict[str, Any], key: str, max_items: int = 1000) -> list[int]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _type(key, "a list of unsigned integers")
    if len(value) > max_items:
        raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, f"{key} has too many items")
    return [_as_u64(key, v) for v in value]


def channel_type(body: dict[str, Any], key: str = "channel_type") -> int:
    """0 (not given), 1 (direct) or 2 (group)."""
    value = opt_u64(body, key)
    if value not in (0, 1, 2):
        raise ServiceError(ErrorCode.INVALID_PARAMS, "channel_type must be 1 (direct) or 2 (group)")
    return value

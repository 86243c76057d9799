"""RPC bodies and parameters: parsing JSON, and checked getters for each kind of value.

Each getter raises a ``ServiceError`` of the 101xx family naming the key, never echoing the
value it was given.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ErrorCode, ServiceError

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


def parse_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ServiceError(ErrorCode.INVALID_JSON, "body is not valid JSON") from None
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
    if isinstance(value, str) and value.isdigit():  # PrivChat clients send some ids as strings
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


def text(body: dict[str, Any], key: str, max_len: int = 4096) -> str:
    value = body.get(key)
    if value is None:
        raise _missing(key)
    if not isinstance(value, str):
        raise _type(key, "a string")
    if len(value) > max_len:
        raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, f"{key} too long")
    return value


def opt_text(body: dict[str, Any], key: str, max_len: int = 4096) -> str | None:
    if body.get(key) is None:
        return None
    return text(body, key, max_len)


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

"""The RPC framework: route table, JSON bodies, parameter checks.

A route is a function ``(ctx: RpcContext, body: dict) -> JSON value`` (or a coroutine function
for routes that do blocking work, such as password hashing). It raises ``ServiceError`` to fail;
the session turns that into the status class and ``Error`` body of PROTOCOL.md section 4.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import ErrorCode, ServiceError

if TYPE_CHECKING:
    from .session import Context, Session

__all__ = [
    "ROUTES",
    "Route",
    "RpcContext",
    "route",
    "parse_body",
    "u64",
    "opt_u64",
    "text",
    "opt_text",
    "flag",
    "u64_list",
]

U64_MAX = (1 << 64) - 1


class RpcContext:
    __slots__ = ("ctx", "session")

    def __init__(self, ctx: Context, session: Session) -> None:
        self.ctx = ctx
        self.session = session

    @property
    def user_id(self) -> int:
        return self.session.user_id

    @property
    def device_id(self) -> str:
        return self.session.device_id


class Route:
    __slots__ = ("name", "handler", "anonymous", "is_async")

    def __init__(self, name: str, handler: Callable[..., Any], anonymous: bool) -> None:
        self.name = name
        self.handler = handler
        self.anonymous = anonymous
        self.is_async = inspect.iscoroutinefunction(handler)


ROUTES: dict[str, Route] = {}


def route(name: str, anonymous: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(handler: Callable[..., Any]) -> Callable[..., Any]:
        if name in ROUTES:
            raise RuntimeError(f"route {name} registered twice")
        ROUTES[name] = Route(name, handler, anonymous)
        return handler

    return register


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


from . import routes as _routes  # noqa: E402  (registers every route)

_ = _routes

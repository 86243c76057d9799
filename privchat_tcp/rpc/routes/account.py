"""``account/*``: register, password login, refresh and logout."""

from __future__ import annotations

import re
from typing import Any

from ...errors import ErrorCode, InvalidParams, ServiceError
from ...service.auth import is_uuid
from ..params import opt_text, text
from ..table import RouteTable, RpcContext
from ..views import iso

routes = RouteTable()

_USERNAME = re.compile(r"^[A-Za-z0-9_.\-]{3,32}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


def _auth_response(ctx: RpcContext, user_id: int, device_id: str, message: str) -> dict[str, Any]:
    token, refresh, exp = ctx.services.accounts.issue(user_id, device_id)
    return {
        "user_id": user_id,
        "token": token,
        "refresh_token": refresh,
        "expires_at": iso(exp * 1000),
        "device_id": device_id,
        "success": True,
        "message": message,
    }


def _device(body: dict[str, Any]) -> str:
    device_id = text(body, "device_id", 64)
    if not is_uuid(device_id):
        raise InvalidParams("device_id must be a UUID")
    return device_id.lower()


@routes.route("account/user/register", anonymous=True)
async def register(ctx: RpcContext, body: dict[str, Any]) -> Any:
    username = text(body, "username", 64).strip()
    password = text(body, "password", 256, opaque=True)
    device_id = _device(body)
    nickname = opt_text(body, "nickname", 64)
    phone = opt_text(body, "phone", 32)
    email = opt_text(body, "email", 320)
    if not _USERNAME.match(username):
        raise InvalidParams("username must be 3-32 letters, digits, '_', '.' or '-'")
    if len(password) < 6:
        raise InvalidParams("password must be at least 6 characters")
    if email is not None and not _EMAIL.match(email):
        raise InvalidParams("invalid email")
    accounts = ctx.services.accounts
    accounts.check_available(username, email)
    hashed = await ctx.run_blocking(accounts.passwords.hash, password)
    user = accounts.create(username, hashed, nickname or username, phone, email)
    return _auth_response(ctx, user.user_id, device_id, "registered")


@routes.route("account/auth/login", anonymous=True)
async def login(ctx: RpcContext, body: dict[str, Any]) -> Any:
    name = text(body, "username", 320)
    password = text(body, "password", 256, opaque=True)
    device_id = _device(body)
    accounts = ctx.services.accounts
    user = accounts.find_login(name)
    ok = await ctx.run_blocking(
        accounts.passwords.verify, user.password_hash if user else None, password
    )
    if not ok or user is None:
        raise ServiceError(ErrorCode.AUTH_REQUIRED, "invalid username or password")
    return _auth_response(ctx, user.user_id, device_id, "logged in")


@routes.route("account/auth/refresh", anonymous=True)
def refresh(ctx: RpcContext, body: dict[str, Any]) -> Any:
    token = text(body, "refresh_token", 4096)
    device_id = opt_text(body, "device_id", 64)
    user_id, device = ctx.services.accounts.refresh(
        token, None if device_id is None else device_id.lower()
    )
    return _auth_response(ctx, user_id, device, "refreshed")


@routes.route("account/auth/logout")
def logout(ctx: RpcContext, body: dict[str, Any]) -> Any:
    ctx.services.accounts.revoke(ctx.caller.token_jti)
    return True

"""``account/*``: register, password login, refresh and logout.

Password work goes through ``ctx.passwords`` (``rpc.table.PasswordGuard``): ``admit`` before
it (per-address and per-account limits, RATE_LIMITED), ``run`` for the hash itself (a bounded
pool, BUSY when full), ``settle`` after a login's check (failures back off)."""

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


def _auth_response(
    ctx: RpcContext, user_id: int, device_id: str, message: str, login_id: str | None = None
) -> dict[str, Any]:
    token, refresh, exp = ctx.services.accounts.issue(user_id, device_id, login_id)
    return {
        "user_id": user_id,
        "token": token,
        "refresh_token": refresh,
        "expires_at": iso(exp * 1000),
        "device_id": device_id,
        "success": True,
        "message": message,
    }


def _account_key(user_id: int) -> str:
    """What the login limits count an existing account's attempts under: its id, so that its
    username and email share one budget (a name that does not exist counts as typed)."""
    return f"#{user_id}"


def _device(body: dict[str, Any]) -> str:
    device_id = text(body, "device_id", 64)
    if not is_uuid(device_id):
        raise InvalidParams("device_id must be a UUID")
    return device_id.lower()


@routes.route(
    "account/user/register",
    anonymous=True,
    keys=("username", "password", "device_id", "nickname", "phone", "email", "device_info"),
)
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
    ctx.passwords.admit(ctx.caller, None, device_id)
    hashed = await ctx.passwords.run(ctx.caller, accounts.passwords.hash, password)
    user = accounts.create(username, hashed, nickname or username, phone, email)
    # who created the account knows its password: this address and device are known to it
    ctx.passwords.settle(ctx.caller, _account_key(user.user_id), device_id, True)
    return _auth_response(ctx, user.user_id, device_id, "registered")


@routes.route(
    "account/auth/login", anonymous=True, keys=("username", "password", "device_id", "device_info")
)
async def login(ctx: RpcContext, body: dict[str, Any]) -> Any:
    name = text(body, "username", 320)
    password = text(body, "password", 256, opaque=True)
    device_id = _device(body)
    accounts = ctx.services.accounts
    guard = ctx.passwords
    user = accounts.find_login(name)
    account = _account_key(user.user_id) if user is not None else name.strip().lower()
    known = guard.admit(ctx.caller, account, device_id)
    ok = await guard.run(
        ctx.caller,
        accounts.passwords.verify,
        user.password_hash if user else None,
        password,
        first=known,
    )
    ok = bool(ok) and user is not None
    guard.settle(ctx.caller, account, device_id, ok)
    if not ok or user is None:
        raise ServiceError(ErrorCode.AUTH_REQUIRED, "invalid username or password")
    return _auth_response(ctx, user.user_id, device_id, "logged in")


@routes.route("account/auth/refresh", anonymous=True, keys=("refresh_token", "device_id"))
def refresh(ctx: RpcContext, body: dict[str, Any]) -> Any:
    token = text(body, "refresh_token", 4096)
    device_id = opt_text(body, "device_id", 64)
    user_id, device, login_id = ctx.services.accounts.refresh(
        token, None if device_id is None else device_id.lower()
    )
    return _auth_response(ctx, user_id, device, "refreshed", login_id)


@routes.route("account/auth/logout", keys=())
def logout(ctx: RpcContext, body: dict[str, Any]) -> Any:
    """Revoke the session's token and its login (the refresh token too); after the reply
    every live session of that login ends (LOGOUT flow 2 UNAUTHENTICATED, 10003)."""
    ctx.services.accounts.logout(ctx.caller.token_jti, ctx.caller.login_id)
    ctx.caller.end_login()
    return True

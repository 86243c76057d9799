"""``account/*``: register, password login, refresh and logout; user detail, share card and
update, profile, search, privacy and settings.

Password work goes through ``ctx.passwords`` (``rpc.table.PasswordGuard``): ``admit`` before
it (per-address and per-account limits, RATE_LIMITED), ``run`` for the hash itself (a bounded
pool, BUSY when full), ``settle`` after a login's check (failures back off)."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from ...errors import ErrorCode, InvalidParams, ServiceError
from ...service.auth import is_uuid
from ...service.social import PRIVACY_FLAGS
from ..params import flag, opt_text, opt_u64, text, u64
from ..table import RouteTable, RpcContext
from ..views import iso, searched_user

routes = RouteTable()

#: letters and digits of any script (reference 13.2: VARCHAR(64), no charset rule), '_', '.'
#: and '-'; no '@' (that is an email's) and no space; NFC-normalized first
_USERNAME = re.compile(r"^[\w.\-]{3,32}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
_PHONE = re.compile(r"^\+?[0-9]{5,20}$")


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
    username = unicodedata.normalize("NFC", text(body, "username", 64).strip())
    password = text(body, "password", 256, opaque=True)
    device_id = _device(body)
    nickname = opt_text(body, "nickname", 64)
    phone = opt_text(body, "phone", 32)
    email = opt_text(body, "email", 320)
    if not _USERNAME.fullmatch(username):
        raise InvalidParams("username must be 3-32 letters, digits, '_', '.' or '-'")
    if len(password) < 6:
        raise InvalidParams("password must be at least 6 characters")
    if email is not None and not _EMAIL.match(email):
        raise InvalidParams("invalid email")
    if phone is not None and not _PHONE.fullmatch(phone):
        raise InvalidParams("phone must be 5-20 digits, optionally after '+'")
    accounts = ctx.services.accounts
    accounts.check_available(username, email, phone)
    ctx.passwords.admit(ctx.caller, None, device_id)
    hashed = await ctx.passwords.run(ctx.caller, accounts.passwords.hash, password)
    user = accounts.create(username, hashed, nickname or username, phone, email)
    # who created the account knows its password: this address and device are known to it
    ctx.passwords.settle(ctx.caller, _account_key(user.user_id), device_id, True)
    ctx.services.profiles.touch(user.user_id)
    if ctx.settings.welcome_message:  # reference 7.1: a welcome System message from user 1
        ctx.services.notices.system_message(user.user_id, ctx.settings.welcome_message)
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


# ---- users and profiles (issue 12) ------------------------------------------------------------
_SETTING_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_DETAIL_SOURCES = (
    "search",
    "group",
    "friend",
    "friend_pending",
    "card_share",
    "conversation",
    "qrcode",
    "phone",
)


def _done(ctx: RpcContext, action: str) -> dict[str, Any]:
    """PrivChat's generic ``{status, action, timestamp}`` (the SDK checks ``status``)."""
    return {"status": "success", "action": action, "timestamp": iso(ctx.services.clock())}


def _string_map(
    body: dict[str, Any], key: str, max_items: int, max_len: int
) -> dict[str, str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ServiceError(ErrorCode.INVALID_PARAM_TYPE, f"{key} must be an object")
    if len(value) > max_items:
        raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, f"{key} has too many entries")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not _SETTING_KEY.fullmatch(k):
            raise InvalidParams(f"each key of {key} must be 1-64 letters, digits, '_', '.' or '-'")
        if not isinstance(v, str):
            raise ServiceError(
                ErrorCode.INVALID_PARAM_TYPE, f"each value of {key} must be a string"
            )
        out[k] = text({key: v}, key, max_len, multiline=True)
    return out


def _profile_fields(body: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    display_name = opt_text(body, "display_name", 64)
    avatar_url = opt_text(body, "avatar_url", 1024)
    bio = opt_text(body, "bio", 512, multiline=True)
    return display_name, avatar_url, bio


def _profile_json(ctx: RpcContext, user_id: int) -> dict[str, Any]:
    profiles = ctx.services.profiles
    user = profiles.user(user_id)
    doc = profiles.profile(user_id)
    return {
        "user_id": user.user_id,
        "username": user.username,
        "nickname": user.nickname,
        "display_name": user.nickname,
        "avatar_url": user.avatar_url,
        "bio": doc.get("bio"),
        "extra_fields": doc.get("extra_fields", {}),
        "phone": user.phone,
        "email": user.email,
        "user_type": user.user_type,
        "created_at": iso(user.created_at),
    }


@routes.route("account/user/detail", keys=("target_user_id", "source", "source_id", "user_id"))
def user_detail(ctx: RpcContext, body: dict[str, Any]) -> Any:
    target_id = u64(body, "target_user_id")
    source = opt_text(body, "source", 32)
    source_id = opt_text(body, "source_id", 64)
    opt_u64(body, "user_id")  # server-filled in PrivChat: the caller
    if source is not None and source not in _DETAIL_SOURCES:
        raise InvalidParams("source must be one of " + ", ".join(_DETAIL_SOURCES))
    user, is_friend, can_send = ctx.services.profiles.detail(ctx.user_id, target_id)
    out: dict[str, Any] = {
        "user_id": user.user_id,
        "username": user.username,
        "nickname": user.nickname,
        "user_type": user.user_type,
        "is_friend": is_friend,
        "can_send_message": can_send,
        "source_type": source or "",
        "source_id": source_id or "",
    }
    if user.avatar_url:
        out["avatar_url"] = user.avatar_url
    if is_friend or user.user_id == ctx.user_id:  # contact details: to friends only
        if user.phone:
            out["phone"] = user.phone
        if user.email:
            out["email"] = user.email
    return out


@routes.route(
    "account/user/share_card", keys=("target_user_id", "receiver_id", "expire_seconds", "sharer_id")
)
def user_share_card(ctx: RpcContext, body: dict[str, Any]) -> Any:
    target_id = u64(body, "target_user_id")
    receiver_id = u64(body, "receiver_id")
    expire = opt_u64(body, "expire_seconds")
    opt_u64(body, "sharer_id")
    if expire > 365 * 86400:
        raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, "expire_seconds out of range")
    code = ctx.services.qrcodes.share_card(ctx.user_id, target_id, receiver_id, expire)
    return {
        "share_id": code.qr_key,
        "target_user_id": code.target_id,
        "receiver_id": receiver_id,
        "created_at": iso(code.created_at),
        "share_key": code.token,
        "share_url": f"privchat://user/card?share_id={code.qr_key}&key={code.token}",
        "expire_at": iso(code.expire_at) if code.expire_at else None,
    }


@routes.route("account/user/update", keys=("display_name", "avatar_url", "bio", "user_id"))
def user_update(ctx: RpcContext, body: dict[str, Any]) -> Any:
    display_name, avatar_url, bio = _profile_fields(body)
    opt_u64(body, "user_id")
    ctx.services.profiles.update(ctx.user_id, display_name, avatar_url, bio)
    return _done(ctx, "update")


@routes.route("account/profile/get", keys=("user_id",))
def profile_get(ctx: RpcContext, body: dict[str, Any]) -> Any:
    opt_u64(body, "user_id")
    return {**_done(ctx, "get"), **_profile_json(ctx, ctx.user_id)}


@routes.route(
    "account/profile/update", keys=("display_name", "avatar_url", "bio", "extra_fields", "user_id")
)
def profile_update(ctx: RpcContext, body: dict[str, Any]) -> Any:
    display_name, avatar_url, bio = _profile_fields(body)
    extra = _string_map(body, "extra_fields", 32, 1024)
    opt_u64(body, "user_id")
    ctx.services.profiles.update(ctx.user_id, display_name, avatar_url, bio, extra)
    return {**_done(ctx, "update"), **_profile_json(ctx, ctx.user_id)}


@routes.route("account/search/query", keys=("query", "page", "page_size", "from_user_id"))
def search_query(ctx: RpcContext, body: dict[str, Any]) -> Any:
    query = text(body, "query", 128)
    page = opt_u64(body, "page", 1)
    page_size = opt_u64(body, "page_size", 20)
    opt_u64(body, "from_user_id")
    if not 1 <= page_size <= 100 or page > 10_000:
        raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, "page_size must be 1-100")
    services = ctx.services
    found = services.profiles.search(ctx.user_id, query)
    start = (max(page, 1) - 1) * page_size
    users = [
        searched_user(services, ctx.user_id, u, sid) for u, sid in found[start : start + page_size]
    ]
    return {"users": users, "total": len(found), "query": query}


@routes.route("account/search/by_qrcode", keys=("qr_key", "token", "searcher_id"))
def search_by_qrcode(ctx: RpcContext, body: dict[str, Any]) -> Any:
    qr_key = text(body, "qr_key", 64)
    token = opt_text(body, "token", 64)
    opt_u64(body, "searcher_id")
    services = ctx.services
    code = services.qrcodes.resolve(ctx.user_id, qr_key, token)
    if code.qr_type not in ("user", "card"):
        raise ServiceError(ErrorCode.QRCODE_NOT_FOUND, "not a user's QR code")
    user = services.profiles.user(code.target_id)
    sid = services.profiles.search_session(ctx.user_id, user.user_id)
    return {
        "users": [searched_user(services, ctx.user_id, user, sid)],
        "total": 1,
        "query": qr_key,
    }


def _privacy_json(ctx: RpcContext) -> dict[str, Any]:
    doc = ctx.services.privacy.get(ctx.user_id)
    updated = doc.pop("updated_at") or ctx.services.profiles.user(ctx.user_id).created_at
    return {"user_id": ctx.user_id, **doc, "updated_at": iso(updated)}


@routes.route("account/privacy/get", keys=("user_id",))
def privacy_get(ctx: RpcContext, body: dict[str, Any]) -> Any:
    opt_u64(body, "user_id")
    return _privacy_json(ctx)


@routes.route("account/privacy/update", keys=(*PRIVACY_FLAGS, "user_id"))
def privacy_update(ctx: RpcContext, body: dict[str, Any]) -> Any:
    changes = {}
    for name in PRIVACY_FLAGS:
        if body.get(name) is not None:
            changes[name] = flag(body, name)
    opt_u64(body, "user_id")
    ctx.services.privacy.update(ctx.user_id, changes)
    return {"success": True, "message": "privacy updated", **_privacy_json(ctx)}


@routes.route("account/settings/update", keys=("settings", "user_id"))
def settings_update(ctx: RpcContext, body: dict[str, Any]) -> Any:
    value = body.get("settings")
    opt_u64(body, "user_id")
    if not isinstance(value, dict):
        raise ServiceError(ErrorCode.INVALID_PARAM_TYPE, "settings must be an object")
    if not value or len(value) > 64:
        raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, "settings must have 1-64 entries")
    for key in value:
        if not _SETTING_KEY.fullmatch(key):
            raise InvalidParams("each setting key must be 1-64 letters, digits, '_', '.' or '-'")
    values = ctx.services.profiles.update_settings(ctx.user_id, value)
    return {
        "success": True,
        "user_id": ctx.user_id,
        "updated_count": len(value),
        "settings": values,
        "updated_at": iso(ctx.services.clock()),
    }

"""PrivChat RPC routes (reference sections 6, 7, 11, 12). Each calls the service layer."""

from __future__ import annotations

import re
from typing import Any

from ._version import __version__
from .auth import is_uuid
from .errors import ErrorCode, ServiceError
from .rpc import RpcContext, flag, opt_text, opt_u64, route, text, u64, u64_list
from .service import iso, now_ms
from .store.base import DIRECT, GROUP

_USERNAME = re.compile(r"^[A-Za-z0-9_.\-]{3,32}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
TYPING_ACTIONS = (
    "Typing",
    "Recording",
    "UploadingPhoto",
    "UploadingVideo",
    "UploadingFile",
    "ChoosingSticker",
)


def _bad(message: str) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_PARAMS, message)


# ---- system (anonymous) ----------------------------------------------------------------------
@route("system/health", anonymous=True)
def system_health(ctx: RpcContext, body: dict[str, Any]) -> Any:
    return {"status": "ok", "draining": ctx.ctx.draining}


@route("system/info", anonymous=True)
def system_info(ctx: RpcContext, body: dict[str, Any]) -> Any:
    s = ctx.ctx.settings
    return {
        "name": "privchat-tcp",
        "version": __version__,
        "protocol_version": 1,
        "max_message_size": s.max_body,
        "heartbeat_interval": s.heartbeat_interval,
        "store_epoch": ctx.ctx.service.store.epoch,
        "encryption": ctx.ctx.server_key is not None,
    }


# ---- accounts -----------------------------------------------------------------------------------
def _auth_response(ctx: RpcContext, user_id: int, device_id: str, message: str) -> dict[str, Any]:
    tokens = ctx.ctx.tokens
    token, exp = tokens.issue(user_id, device_id)
    refresh, _ = tokens.issue(user_id, device_id, refresh=True)
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
        raise _bad("device_id must be a UUID")
    return device_id.lower()


@route("account/user/register", anonymous=True)
async def register(ctx: RpcContext, body: dict[str, Any]) -> Any:
    username = text(body, "username", 64).strip()
    password = text(body, "password", 256)
    device_id = _device(body)
    nickname = opt_text(body, "nickname", 64)
    phone = opt_text(body, "phone", 32)
    email = opt_text(body, "email", 320)
    if not _USERNAME.match(username):
        raise _bad("username must be 3-32 letters, digits, '_', '.' or '-'")
    if len(password) < 6:
        raise _bad("password must be at least 6 characters")
    if email is not None and not _EMAIL.match(email):
        raise _bad("invalid email")
    store = ctx.ctx.service.store
    if store.find_user(username.lower()) or (email and store.find_user(email.lower())):
        raise _bad("username already exists")
    hashed = await ctx.ctx.run_blocking(ctx.ctx.passwords.hash, password)
    if store.find_user(username.lower()) or (email and store.find_user(email.lower())):
        raise _bad("username already exists")  # registered while we hashed
    user = store.create_user(username, hashed, nickname or username, phone, email, now_ms())
    return _auth_response(ctx, user.user_id, device_id, "registered")


@route("account/auth/login", anonymous=True)
async def login(ctx: RpcContext, body: dict[str, Any]) -> Any:
    name = text(body, "username", 320).strip().lower()
    password = text(body, "password", 256)
    device_id = _device(body)
    user = ctx.ctx.service.store.find_user(name)
    ok = await ctx.ctx.run_blocking(
        ctx.ctx.passwords.verify, user.password_hash if user else None, password
    )
    if not ok or user is None:
        raise ServiceError(ErrorCode.AUTH_REQUIRED, "invalid username or password")
    return _auth_response(ctx, user.user_id, device_id, "logged in")


@route("account/auth/refresh", anonymous=True)
def refresh(ctx: RpcContext, body: dict[str, Any]) -> Any:
    token = text(body, "refresh_token", 4096)
    claims = ctx.ctx.tokens.verify(token, refresh=True)
    store = ctx.ctx.service.store
    if store.is_token_revoked(claims["jti"]):
        raise ServiceError(ErrorCode.TOKEN_REVOKED, "token revoked")
    device_id = opt_text(body, "device_id", 64)
    if device_id is not None and device_id.lower() != claims["device_id"]:
        raise ServiceError(ErrorCode.INVALID_TOKEN, "device does not match the token")
    if store.get_user(claims["uid"]) is None:
        raise ServiceError(ErrorCode.INVALID_TOKEN, "invalid token")
    store.revoke_token(claims["jti"], claims["exp"])  # a refresh token is used once
    return _auth_response(ctx, claims["uid"], claims["device_id"], "refreshed")


@route("account/auth/logout")
def logout(ctx: RpcContext, body: dict[str, Any]) -> Any:
    session = ctx.session
    ctx.ctx.service.store.revoke_token(
        session.token_jti, int(now_ms() // 1000) + ctx.ctx.tokens.ttl
    )
    return True


# ---- channels and groups ------------------------------------------------------------------------
@route("channel/direct/get_or_create")
def direct_get_or_create(ctx: RpcContext, body: dict[str, Any]) -> Any:
    channel, created = ctx.ctx.service.direct(ctx.user_id, u64(body, "target_user_id"))
    return {"channel_id": channel.channel_id, "created": created}


@route("group/group/create")
def group_create(ctx: RpcContext, body: dict[str, Any]) -> Any:
    name = text(body, "name", 128)
    description = opt_text(body, "description", 1024)
    members = u64_list(body, "member_ids", ctx.ctx.settings.max_group_members)
    group = ctx.ctx.service.create_group(ctx.user_id, name, description, members)
    return {
        "group_id": group.channel_id,
        "name": group.name,
        "description": group.description,
        "member_count": len(group.members),
        "created_at": iso(group.created_at),
        "creator_id": ctx.user_id,
    }


@route("group/group/info")
def group_info(ctx: RpcContext, body: dict[str, Any]) -> Any:
    return ctx.ctx.service.group_info(ctx.user_id, u64(body, "group_id"))


@route("group/member/add")
def group_member_add(ctx: RpcContext, body: dict[str, Any]) -> Any:
    ctx.ctx.service.add_member(
        ctx.user_id, u64(body, "group_id"), u64(body, "user_id"), opt_text(body, "role", 16)
    )
    return True


@route("group/member/remove")
def group_member_remove(ctx: RpcContext, body: dict[str, Any]) -> Any:
    ctx.ctx.service.remove_member(ctx.user_id, u64(body, "group_id"), u64(body, "user_id"))
    return True


@route("group/member/list")
def group_member_list(ctx: RpcContext, body: dict[str, Any]) -> Any:
    return ctx.ctx.service.group_members(ctx.user_id, u64(body, "group_id"))


@route("group/member/leave")
def group_member_leave(ctx: RpcContext, body: dict[str, Any]) -> Any:
    ctx.ctx.service.leave_group(ctx.user_id, u64(body, "group_id"))
    return True


# ---- messages -----------------------------------------------------------------------------------
@route("message/revoke")
def message_revoke(ctx: RpcContext, body: dict[str, Any]) -> Any:
    ctx.ctx.service.revoke(
        ctx.user_id,
        ctx.device_id,
        u64(body, "channel_id"),
        u64(body, "server_message_id"),
        ctx.session,
    )
    return True


# ---- sync ---------------------------------------------------------------------------------------
def _channel_type(body: dict[str, Any]) -> int:
    value = opt_u64(body, "channel_type")
    if value not in (0, DIRECT, GROUP):
        raise _bad("channel_type must be 1 (direct) or 2 (group)")
    return value


@route("sync/submit")
def sync_submit(ctx: RpcContext, body: dict[str, Any]) -> Any:
    args = {
        "local_message_id": u64(body, "local_message_id", nonzero=False),
        "channel_id": u64(body, "channel_id"),
        "channel_type": _channel_type(body),
        "last_pts": opt_u64(body, "last_pts"),
        "command_type": opt_text(body, "command_type", 64) or "text",
        "payload": body.get("payload"),
    }
    return ctx.ctx.service.submit(ctx.user_id, ctx.device_id, args, ctx.session)


@route("sync/get_difference")
def sync_get_difference(ctx: RpcContext, body: dict[str, Any]) -> Any:
    service = ctx.ctx.service
    channel_type = _channel_type(body)
    channel, records, current, has_more = service.pull(
        ctx.user_id, u64(body, "channel_id"), opt_u64(body, "last_pts"), opt_u64(body, "limit", 100)
    )
    if channel_type and channel_type != channel.channel_type:
        raise _bad("channel_type does not match the channel")
    return {
        "commits": [service.commit_json(r) for r in records],
        "current_pts": current,
        "has_more": has_more,
    }


def _channel_pts(ctx: RpcContext, channel_id: int, channel_type: int) -> dict[str, Any]:
    service = ctx.ctx.service
    channel = service.member_channel(ctx.user_id, channel_id)
    if channel_type and channel_type != channel.channel_type:
        raise _bad("channel_type does not match the channel")
    return {
        "channel_id": channel_id,
        "channel_type": channel.channel_type,
        "current_pts": service.store.current_pts(channel_id),
    }


@route("sync/get_channel_pts")
def sync_get_channel_pts(ctx: RpcContext, body: dict[str, Any]) -> Any:
    item = _channel_pts(ctx, u64(body, "channel_id"), _channel_type(body))
    return {"current_pts": item["current_pts"], "store_epoch": ctx.ctx.service.store.epoch}


@route("sync/batch_get_channel_pts")
def sync_batch_get_channel_pts(ctx: RpcContext, body: dict[str, Any]) -> Any:
    channels = body.get("channels")
    if not isinstance(channels, list):
        raise _bad("channels must be a list")
    if len(channels) > 1000:
        raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, "too many channels")
    out = []
    for item in channels:
        if not isinstance(item, dict):
            raise _bad("each channel must be an object")
        out.append(_channel_pts(ctx, u64(item, "channel_id"), _channel_type(item)))
    return {"channel_pts_map": out, "store_epoch": ctx.ctx.service.store.epoch}


@route("sync/session_ready")
def sync_session_ready(ctx: RpcContext, body: dict[str, Any]) -> Any:
    ctx.session.session_ready()
    return True


# ---- presence -----------------------------------------------------------------------------------
@route("presence/typing")
def presence_typing(ctx: RpcContext, body: dict[str, Any]) -> Any:
    action = body.get("action_type", "Typing")
    if action not in TYPING_ACTIONS:
        raise _bad("unknown action_type")
    ctx.ctx.service.typing(
        ctx.user_id,
        u64(body, "channel_id"),
        _channel_type(body),
        flag(body, "is_typing", True),
        action,
        ctx.session,
    )
    return {"code": 0, "message": "OK"}


# ---- entity sync --------------------------------------------------------------------------------
UNSUPPORTED_ENTITY = "不支持的 entity_type: {}（当前支持 channel）"


@route("entity/sync_entities")
def entity_sync(ctx: RpcContext, body: dict[str, Any]) -> Any:
    entity_type = text(body, "entity_type", 64)
    if entity_type != "channel":
        raise _bad(UNSUPPORTED_ENTITY.format(entity_type))
    service = ctx.ctx.service
    items = []
    for cid in service.store.user_channels(ctx.user_id):
        channel = service.store.get_channel(cid)
        if channel is None:
            continue
        if channel.channel_type == DIRECT:
            peer = next((u for u in channel.members if u != ctx.user_id), ctx.user_id)
            name = str(peer)
        else:
            name = channel.name
        last = service.store.read_log(cid, max(service.store.current_pts(cid) - 1, 0), 1)
        items.append(
            {
                "entity_id": str(cid),
                "version": 1,
                "deleted": False,
                "payload": {
                    "channel_id": cid,
                    "channel_type": channel.channel_type,
                    "type": channel.channel_type,
                    "channel_name": name,
                    "name": name,
                    "avatar": "",
                    "unread_count": 0,
                    "last_msg_content": service.envelope(last[0]).get("content", "")
                    if last
                    else "",
                    "last_msg_timestamp": last[0].timestamp if last else 0,
                    "top": 0,
                    "mute": 0,
                    "current_pts": service.store.current_pts(cid),
                },
            }
        )
    return {"items": items, "next_version": 1, "has_more": False}

"""``qrcode/*`` and ``user/qrcode/*``: QR codes with expiry and usage limits (reference 7.5).

The rules are ``service/profiles.py``'s ``QRCodeService``. ``creator_id`` and ``user_id``,
which PrivChat reads as strings here, must name the caller (absent: the caller).
"""

from __future__ import annotations

import json
from typing import Any

from ...errors import ErrorCode, ServiceError
from ...service.model import QRCode
from ...service.profiles import qr_url
from ..params import flag, opt_text, opt_u64, text, u64
from ..safejson import MAX_DEPTH, loads
from ..table import RouteTable, RpcContext
from ..views import iso, public_user, qrcode_entry

routes = RouteTable()

MAX_EXPIRE = 365 * 86400
MAX_METADATA_BYTES = 2048


def _self(ctx: RpcContext, body: dict[str, Any], key: str) -> None:
    value = opt_u64(body, key)
    if value and value != ctx.user_id:
        raise ServiceError(ErrorCode.PERMISSION_DENIED, f"{key} must be your own id")


def _expire(body: dict[str, Any]) -> int:
    value = opt_u64(body, "expire_seconds")
    if value > MAX_EXPIRE:
        raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, "expire_seconds out of range")
    return value


def _code_json(code: QRCode) -> dict[str, Any]:
    return {
        "qr_key": code.qr_key,
        "qr_code": qr_url(code),
        "qr_type": code.qr_type,
        "target_id": code.target_id,
        "created_at": iso(code.created_at),
        "expire_at": iso(code.expire_at) if code.expire_at else None,
        "max_usage": code.max_usage or None,
        "used_count": code.used_count,
    }


def _refreshed(ctx: RpcContext, old: QRCode | None, new: QRCode) -> dict[str, Any]:
    return {
        "old_qr_key": old.qr_key if old else None,
        "new_qr_key": new.qr_key,
        "new_qr_code": qr_url(new),
        "revoked_at": iso(ctx.services.clock()),
    }


@routes.route(
    "qrcode/generate",
    keys=("qr_type", "target_id", "expire_seconds", "max_usage", "metadata", "user_id"),
)
def qrcode_generate(ctx: RpcContext, body: dict[str, Any]) -> Any:
    qr_type = text(body, "qr_type", 16)
    target_id = u64(body, "target_id")
    expire = _expire(body)
    max_usage = opt_u64(body, "max_usage")
    metadata = body.get("metadata")
    opt_u64(body, "user_id")
    if max_usage > 1_000_000:
        raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, "max_usage out of range")
    meta = "" if metadata is None else json.dumps(metadata, ensure_ascii=False)
    if len(meta.encode()) > MAX_METADATA_BYTES:
        raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, "metadata too large")
    code = ctx.services.qrcodes.generate(ctx.user_id, qr_type, target_id, expire, max_usage, meta)
    return _code_json(code)


@routes.route("qrcode/resolve", keys=("qr_key", "token", "scanner_id"))
def qrcode_resolve(ctx: RpcContext, body: dict[str, Any]) -> Any:
    qr_key = text(body, "qr_key", 64)
    token = opt_text(body, "token", 64)
    opt_u64(body, "scanner_id")
    services = ctx.services
    code = services.qrcodes.resolve(ctx.user_id, qr_key, token)
    data: Any = None
    if code.qr_type in ("user", "card"):
        data = public_user(services, code.target_id)
    elif code.qr_type == "group":
        group = services.channels.find_channel(code.target_id)
        if group is None or group.dissolved:
            raise ServiceError(ErrorCode.QRCODE_NOT_FOUND, "QR code not found")
        data = {
            "group_id": group.channel_id,
            "name": group.name,
            "member_count": len(group.members),
        }
    elif code.metadata:
        try:
            data = loads(code.metadata.encode(), MAX_DEPTH, "metadata")
        except ServiceError:
            data = None
    return {
        "qr_type": code.qr_type,
        "target_id": code.target_id,
        "action": {"user": "add_friend", "card": "add_friend", "group": "join_group"}.get(
            code.qr_type, "open" if code.qr_type == "feature" else "authorize"
        ),
        "data": data,
        "used_count": code.used_count,
        "max_usage": code.max_usage or None,
        "expire_at": iso(code.expire_at) if code.expire_at else None,
    }


@routes.route("qrcode/refresh", keys=("qr_type", "target_id", "creator_id"))
def qrcode_refresh(ctx: RpcContext, body: dict[str, Any]) -> Any:
    qr_type = text(body, "qr_type", 16)
    target_id = u64(body, "target_id")
    _self(ctx, body, "creator_id")
    old, new = ctx.services.qrcodes.refresh(ctx.user_id, qr_type, target_id)
    return _refreshed(ctx, old, new)


@routes.route("qrcode/revoke", keys=("qr_key", "user_id"))
def qrcode_revoke(ctx: RpcContext, body: dict[str, Any]) -> Any:
    qr_key = text(body, "qr_key", 64)
    opt_u64(body, "user_id")
    code = ctx.services.qrcodes.revoke(ctx.user_id, qr_key)
    return {"success": True, "qr_key": code.qr_key, "revoked_at": iso(code.revoked_at)}


@routes.route("qrcode/list", keys=("creator_id", "include_revoked"))
def qrcode_list(ctx: RpcContext, body: dict[str, Any]) -> Any:
    include = flag(body, "include_revoked", False)
    _self(ctx, body, "creator_id")
    codes = ctx.services.qrcodes.codes_of(ctx.user_id, include)
    return {"qr_keys": [qrcode_entry(c) for c in codes], "total": len(codes)}


@routes.route("user/qrcode/generate", keys=("expire_seconds", "user_id"))
def user_qrcode_generate(ctx: RpcContext, body: dict[str, Any]) -> Any:
    expire = _expire(body)
    opt_u64(body, "user_id")
    code = ctx.services.qrcodes.user_code(ctx.user_id, expire)
    return {"qr_key": code.qr_key, "qr_code": qr_url(code), "created_at": iso(code.created_at)}


@routes.route("user/qrcode/refresh", keys=("user_id",))
def user_qrcode_refresh(ctx: RpcContext, body: dict[str, Any]) -> Any:
    _self(ctx, body, "user_id")
    old, new = ctx.services.qrcodes.refresh(ctx.user_id, "user", ctx.user_id)
    return _refreshed(ctx, old, new)


@routes.route("user/qrcode/get", keys=("user_id",))
def user_qrcode_get(ctx: RpcContext, body: dict[str, Any]) -> Any:
    _self(ctx, body, "user_id")
    qrcodes = ctx.services.qrcodes
    code = qrcodes.current(ctx.user_id, "user", ctx.user_id) or qrcodes.user_code(ctx.user_id, 0)
    return {
        "qr_key": code.qr_key,
        "qr_code": qr_url(code),
        "created_at": iso(code.created_at),
        "used_count": code.used_count,
    }

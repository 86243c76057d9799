"""``group/*``: groups and their members (direct channels: ``routes/channel.py``)."""

from __future__ import annotations

from typing import Any

from ...errors import ErrorCode, InvalidParams, ServiceError
from ...service.model import Channel, JoinRequest
from ..params import flag, opt_text, opt_u64, text, u64, u64_list
from ..table import RouteTable, RpcContext
from ..views import group_info, group_members, iso

routes = RouteTable()


@routes.route("group/group/create", keys=("name", "description", "member_ids", "creator_id"))
def group_create(ctx: RpcContext, body: dict[str, Any]) -> Any:
    name = text(body, "name", 128)
    description = opt_text(body, "description", 1024, multiline=True)
    members = u64_list(body, "member_ids", ctx.settings.max_group_members)
    group = ctx.services.groups.create(ctx.user_id, name, description, members)
    return {
        "group_id": group.channel_id,
        "name": group.name,
        "description": group.description,
        "member_count": len(group.members),
        "created_at": iso(group.created_at),
        "creator_id": ctx.user_id,
    }


@routes.route("group/group/info", keys=("group_id", "user_id"))
def group_group_info(ctx: RpcContext, body: dict[str, Any]) -> Any:
    group = ctx.services.groups.member_group(ctx.user_id, u64(body, "group_id"))
    return group_info(ctx.services, group)


@routes.route("group/member/add", keys=("group_id", "user_id", "role", "inviter_id"))
def group_member_add(ctx: RpcContext, body: dict[str, Any]) -> Any:
    """True: a member now; False: the group needs approval and the invitation waits."""
    return ctx.services.groups.add_member(
        ctx.user_id, u64(body, "group_id"), u64(body, "user_id"), opt_text(body, "role", 16)
    )


@routes.route("group/member/remove", keys=("group_id", "user_id", "operator_id"))
def group_member_remove(ctx: RpcContext, body: dict[str, Any]) -> Any:
    ctx.services.groups.remove_member(ctx.user_id, u64(body, "group_id"), u64(body, "user_id"))
    return True


@routes.route("group/member/list", keys=("group_id", "user_id"))
def group_member_list(ctx: RpcContext, body: dict[str, Any]) -> Any:
    group = ctx.services.groups.member_group(ctx.user_id, u64(body, "group_id"))
    return group_members(ctx.services, group)


@routes.route("group/member/leave", keys=("group_id", "user_id"))
def group_member_leave(ctx: RpcContext, body: dict[str, Any]) -> Any:
    ctx.services.groups.leave(ctx.user_id, u64(body, "group_id"))
    return True


@routes.route("group/member/mute", keys=("group_id", "user_id", "mute_duration", "operator_id"))
def group_member_mute(ctx: RpcContext, body: dict[str, Any]) -> Any:
    """The mute's end in unix ms (0: until unmuted)."""
    return ctx.services.groups.mute(
        ctx.user_id, u64(body, "group_id"), u64(body, "user_id"), opt_u64(body, "mute_duration")
    )


@routes.route("group/member/unmute", keys=("group_id", "user_id", "operator_id"))
def group_member_unmute(ctx: RpcContext, body: dict[str, Any]) -> Any:
    ctx.services.groups.unmute(ctx.user_id, u64(body, "group_id"), u64(body, "user_id"))
    return True


def _as_caller(ctx: RpcContext, key: str, value: int) -> None:
    """A key naming the operator (PrivChat's request structs carry it), read with the other
    keys (``opt_u64``): if given, it must be the caller; the server acts as the session's user
    in any case."""
    if value and value != ctx.user_id:
        raise ServiceError(ErrorCode.PERMISSION_DENIED, f"{key} is not the caller")


@routes.route("group/role/transfer_owner", keys=("group_id", "current_owner_id", "new_owner_id"))
def group_role_transfer_owner(ctx: RpcContext, body: dict[str, Any]) -> Any:
    current = opt_u64(body, "current_owner_id")
    group_id = u64(body, "group_id")
    new_owner = u64(body, "new_owner_id")
    _as_caller(ctx, "current_owner_id", current)
    at = ctx.services.groups.transfer_owner(ctx.user_id, group_id, new_owner)
    return {"group_id": group_id, "new_owner_id": new_owner, "transferred_at": iso(at)}


@routes.route("group/role/set", keys=("group_id", "operator_id", "user_id", "role"))
def group_role_set(ctx: RpcContext, body: dict[str, Any]) -> Any:
    operator = opt_u64(body, "operator_id")
    group_id = u64(body, "group_id")
    user_id = u64(body, "user_id")
    wanted = text(body, "role", 16)
    _as_caller(ctx, "operator_id", operator)
    role, at = ctx.services.groups.set_role(ctx.user_id, group_id, user_id, wanted)
    return {"group_id": group_id, "user_id": user_id, "role": role, "updated_at": iso(at)}


def _settings(group: Channel) -> dict[str, Any]:
    out: dict[str, Any] = {
        "join_need_approval": group.join_need_approval,
        "member_can_invite": group.member_can_invite,
        "all_muted": group.all_muted,
        "max_members": group.max_members,
        "created_at": iso(group.created_at),
        "updated_at": iso(group.updated_at),
    }
    if group.announcement is not None:
        out["announcement"] = group.announcement
    if group.description is not None:
        out["description"] = group.description
    return out


@routes.route("group/settings/get", keys=("group_id", "user_id"))
def group_settings_get(ctx: RpcContext, body: dict[str, Any]) -> Any:
    group = ctx.services.groups.member_group(ctx.user_id, u64(body, "group_id"))
    return {"group_id": group.channel_id, "settings": _settings(group)}


#: GroupSettingsPatch's keys: flags, and texts with their bounds
_PATCH_FLAGS = ("join_need_approval", "member_can_invite", "all_muted")
_PATCH_TEXTS = {"announcement": 2048, "description": 1024}


@routes.route("group/settings/update", keys=("group_id", "operator_id", "settings"))
def group_settings_update(ctx: RpcContext, body: dict[str, Any]) -> Any:
    operator = opt_u64(body, "operator_id")
    group_id = u64(body, "group_id")
    patch = body.get("settings")
    if not isinstance(patch, dict):
        raise ServiceError(ErrorCode.INVALID_PARAM_TYPE, "settings must be an object")
    changes: dict[str, object] = {}
    for key in patch:
        if key not in _PATCH_FLAGS and key not in _PATCH_TEXTS and key != "max_members":
            raise InvalidParams(f"unknown parameter: settings.{_key(key)}")
    for key in _PATCH_FLAGS:
        if patch.get(key) is not None:
            changes[key] = flag(patch, key)
    for key, bound in _PATCH_TEXTS.items():
        if patch.get(key) is not None:
            changes[key] = text(patch, key, bound, multiline=True)
    if patch.get("max_members") is not None:
        changes["max_members"] = u64(patch, "max_members")
    _as_caller(ctx, "operator_id", operator)
    group = ctx.services.groups.update_settings(ctx.user_id, group_id, changes)
    return {
        "success": True,
        "group_id": str(group_id),
        "message": "group settings updated",
        "updated_count": len(changes),
        "updated_at": iso(group.updated_at),
    }


def _key(key: str) -> str:
    if len(key) <= 64 and key.isascii() and key.isprintable():
        return key
    return "(a key that is not printable ASCII)"


@routes.route("group/settings/mute_all", keys=("group_id", "operator_id", "muted", "mute_all"))
def group_settings_mute_all(ctx: RpcContext, body: dict[str, Any]) -> Any:
    operator = opt_u64(body, "operator_id")
    group_id = u64(body, "group_id")
    # ``mute_all`` is PrivChat's alias of ``muted``: either, or both saying the same
    muted = None if body.get("muted") is None else flag(body, "muted")
    alias = None if body.get("mute_all") is None else flag(body, "mute_all")
    if muted is None:
        muted = flag(body, "muted") if alias is None else alias
    elif alias is not None and alias != muted:
        raise InvalidParams("muted and mute_all disagree")
    _as_caller(ctx, "operator_id", operator)
    group = ctx.services.groups.mute_all(ctx.user_id, group_id, muted)
    return {
        "success": True,
        "group_id": str(group_id),
        "all_muted": group.all_muted,
        "message": "all members muted" if group.all_muted else "all members unmuted",
        "operator_id": str(ctx.user_id),
        "updated_at": iso(group.updated_at),
    }


def _approval(req: JoinRequest) -> dict[str, Any]:
    method: dict[str, Any]
    if req.qr_key:
        method = {"QRCode": {"qr_code_id": req.qr_key}}
    else:
        method = {"MemberInvite": {"inviter_id": str(req.inviter_id)}}
    item: dict[str, Any] = {
        "request_id": str(req.request_id),
        "user_id": req.user_id,
        "method": method,
        "created_at": iso(req.created_at),
        "expires_at": iso(req.expires_at),
    }
    if req.message is not None:
        item["message"] = req.message
    return item


@routes.route("group/approval/list", keys=("group_id", "operator_id"))
def group_approval_list(ctx: RpcContext, body: dict[str, Any]) -> Any:
    operator = opt_u64(body, "operator_id")
    group_id = u64(body, "group_id")
    _as_caller(ctx, "operator_id", operator)
    requests = [_approval(r) for r in ctx.services.groups.pending(ctx.user_id, group_id)]
    return {"group_id": str(group_id), "requests": requests, "total": len(requests)}


@routes.route(
    "group/approval/handle", keys=("request_id", "operator_id", "action", "reject_reason")
)
def group_approval_handle(ctx: RpcContext, body: dict[str, Any]) -> Any:
    operator = opt_u64(body, "operator_id")
    request_id = u64(body, "request_id")
    action = text(body, "action", 16)
    reason = opt_text(body, "reject_reason", 512, multiline=True)
    if action not in ("approve", "reject"):
        raise InvalidParams("action must be approve or reject")
    _as_caller(ctx, "operator_id", operator)
    req = ctx.services.groups.handle_request(ctx.user_id, request_id, action == "approve")
    out: dict[str, Any] = {
        "success": True,
        "request_id": str(req.request_id),
        "action": action,
        "group_id": req.group_id,
        "user_id": req.user_id,
        "message": "request approved" if action == "approve" else "request rejected",
        "handled_at": iso(req.handled_at),
    }
    if action == "reject" and reason is not None:
        out["reject_reason"] = reason
    return out


@routes.route(
    "group/qrcode/generate", keys=("group_id", "expire_seconds", "max_usage", "operator_id")
)
def group_qrcode_generate(ctx: RpcContext, body: dict[str, Any]) -> Any:
    group_id = u64(body, "group_id")
    code = ctx.services.groups.make_qr(
        ctx.user_id, group_id, opt_u64(body, "expire_seconds"), opt_u64(body, "max_usage")
    )
    return {
        "qr_key": code.qr_key,
        "qr_code": f"privchat://group/get?qrkey={code.qr_key}&token={code.token}",
        "expire_at": iso(code.expire_at) if code.expire_at else None,
        "group_id": group_id,
        "created_at": iso(code.created_at),
    }


@routes.route("group/join/qrcode", keys=("qr_key", "token", "message", "user_id"))
def group_join_qrcode(ctx: RpcContext, body: dict[str, Any]) -> Any:
    result = ctx.services.groups.join_by_qr(
        ctx.user_id,
        text(body, "qr_key", 128),
        opt_text(body, "token", 128),
        opt_text(body, "message", 512, multiline=True),
    )
    if result.joined:
        return {
            "status": "joined",
            "group_id": result.group_id,
            "request_id": None,
            "message": None,
            "expires_at": None,
            "user_id": result.user_id,
            "joined_at": iso(result.joined_at),
        }
    req = result.request
    assert req is not None
    return {
        "status": "pending",
        "group_id": result.group_id,
        "request_id": str(req.request_id),
        "message": "waiting for approval",
        "expires_at": iso(req.expires_at),
        "user_id": result.user_id,
        "joined_at": None,
    }

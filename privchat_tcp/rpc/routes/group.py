"""``group/*``: groups and their members (direct channels: ``routes/channel.py``)."""

from __future__ import annotations

from typing import Any

from ..params import opt_text, text, u64, u64_list
from ..table import RouteTable, RpcContext
from ..views import group_info, group_members, iso

routes = RouteTable()


@routes.route("group/group/create", keys=("name", "description", "member_ids", "creator_id"))
def group_create(ctx: RpcContext, body: dict[str, Any]) -> Any:
    name = text(body, "name", 128)
    description = opt_text(body, "description", 1024, multiline=True)
    members = u64_list(body, "member_ids", ctx.settings.max_group_members)
    group = ctx.services.channels.create_group(ctx.user_id, name, description, members)
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
    group = ctx.services.channels.member_group(ctx.user_id, u64(body, "group_id"))
    return group_info(ctx.services, group)


@routes.route("group/member/add", keys=("group_id", "user_id", "role", "inviter_id"))
def group_member_add(ctx: RpcContext, body: dict[str, Any]) -> Any:
    ctx.services.channels.add_member(
        ctx.user_id, u64(body, "group_id"), u64(body, "user_id"), opt_text(body, "role", 16)
    )
    return True


@routes.route("group/member/remove", keys=("group_id", "user_id", "operator_id"))
def group_member_remove(ctx: RpcContext, body: dict[str, Any]) -> Any:
    ctx.services.channels.remove_member(ctx.user_id, u64(body, "group_id"), u64(body, "user_id"))
    return True


@routes.route("group/member/list", keys=("group_id", "user_id"))
def group_member_list(ctx: RpcContext, body: dict[str, Any]) -> Any:
    group = ctx.services.channels.member_group(ctx.user_id, u64(body, "group_id"))
    return group_members(ctx.services, group)


@routes.route("group/member/leave", keys=("group_id", "user_id"))
def group_member_leave(ctx: RpcContext, body: dict[str, Any]) -> Any:
    ctx.services.channels.leave_group(ctx.user_id, u64(body, "group_id"))
    return True

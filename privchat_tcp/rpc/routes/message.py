"""``message/*``: revoking, history, read state and reactions (PrivChat reference 7.4).

Every key a route reads is checked before any service call (a bad value is a 101xx naming it,
whatever else is wrong); ``user_id`` keys are the server's to fill (reference section 3.6):
checked, then ignored.
"""

from __future__ import annotations

import json
from typing import Any

from ...errors import ErrorCode, ServiceError
from ...service import Services
from ...service.model import Record
from ...service.reactions import MAX_EMOJI_LEN
from ..params import opt_u64, text, u64
from ..table import RouteTable, RpcContext
from ..views import CONTENT_TYPES, envelope, iso, public_user

routes = RouteTable()


def _message_id(body: dict[str, Any]) -> int:
    """``message_id``, or its alias ``server_message_id`` (both checked when both given)."""
    first = opt_u64(body, "message_id")
    second = opt_u64(body, "server_message_id")
    value = first or second
    if not value:
        raise ServiceError(ErrorCode.MISSING_REQUIRED_PARAM, "missing parameter: message_id")
    return value


def _ignored_user_id(body: dict[str, Any]) -> None:
    opt_u64(body, "user_id")  # server-filled: the session's user (checked, then ignored)


@routes.route("message/revoke", keys=("channel_id", "server_message_id", "user_id"))
def message_revoke(ctx: RpcContext, body: dict[str, Any]) -> Any:
    ctx.services.messages.revoke(
        ctx.user_id,
        ctx.device_id,
        u64(body, "channel_id"),
        u64(body, "server_message_id"),
        ctx.origin,
    )
    return True


# ---- history ------------------------------------------------------------------------------------
def history_item(services: Services, record: Record) -> dict[str, Any]:
    """A message as PrivChat's MessageHistoryItem (revoked: content blanked)."""
    env = envelope(record, services.settings.json_max_depth)
    content = env.get("content", "")
    if not isinstance(content, str):
        content = json.dumps(content, separators=(",", ":"), ensure_ascii=False)
    reply = env.get("reply_to_message_id")
    metadata = env.get("metadata")
    item: dict[str, Any] = {
        "message_id": record.message_id,
        "channel_id": record.channel_id,
        "sender_id": record.sender_id,
        "content": "" if record.revoked else content,
        "message_type": CONTENT_TYPES[record.message_type]
        if record.message_type < len(CONTENT_TYPES)
        else "text",
        "timestamp": iso(record.timestamp),
        "reply_to_message_id": str(reply) if reply is not None and not record.revoked else None,
        "metadata": metadata if isinstance(metadata, dict) and not record.revoked else None,
        "revoked": record.revoked,
        "revoked_at": record.revoked_at if record.revoked else None,
        "revoked_by": record.revoked_by if record.revoked else None,
        "pts": record.pts,
        "local_message_id": record.local_message_id or None,
    }
    if record.e2e and not record.revoked:
        item["e2e"] = True
        item["data"] = env.get("data")
    return item


@routes.route(
    "message/history/get", keys=("user_id", "channel_id", "before_server_message_id", "limit")
)
async def message_history_get(ctx: RpcContext, body: dict[str, Any]) -> Any:
    """Old history may be outside the store's working set: read off the loop."""
    _ignored_user_id(body)
    channel_id = u64(body, "channel_id")
    before = opt_u64(body, "before_server_message_id")
    limit = opt_u64(body, "limit")
    services = ctx.services
    _, records, has_more = await services.messages.history(ctx.user_id, channel_id, before, limit)
    messages = [history_item(services, r) for r in records]
    return {"messages": messages, "total": len(messages), "has_more": has_more}


# ---- read state ---------------------------------------------------------------------------------
@routes.route(
    "message/status/read", keys=("channel_id", "message_id", "server_message_id", "user_id")
)
def message_status_read(ctx: RpcContext, body: dict[str, Any]) -> Any:
    _ignored_user_id(body)
    channel_id = u64(body, "channel_id")
    message_id = _message_id(body)
    ctx.services.reads.mark_read(ctx.user_id, channel_id, message_id, ctx.origin)
    return True


@routes.route(
    "message/status/read_pts",
    keys=("channel_id", "read_pts", "last_read_message_id", "client_visible_pts"),
)
def message_status_read_pts(ctx: RpcContext, body: dict[str, Any]) -> Any:
    channel_id = u64(body, "channel_id")
    read_pts = u64(body, "read_pts", nonzero=False)
    last_id = opt_u64(body, "last_read_message_id")
    opt_u64(body, "client_visible_pts")  # a later client's hint: checked, not needed
    accepted, position = ctx.services.reads.set_read_pts(
        ctx.user_id, channel_id, read_pts, last_id, ctx.origin
    )
    out: dict[str, Any] = {
        "status": "success",
        "message": "已读 pts 已更新",
        "channel_id": channel_id,
        "last_read_pts": position,
        "accepted_read_pts": accepted,
    }
    if last_id:
        out["last_read_message_id"] = last_id
    return out


@routes.route("message/status/count", keys=("channel_id",))
async def message_status_count(ctx: RpcContext, body: dict[str, Any]) -> Any:
    """Counting may read old history: off the loop."""
    channel_id = opt_u64(body, "channel_id")
    reads = ctx.services.reads
    channels = reads.unread_channels(ctx.user_id, channel_id)
    unread = await reads.unread_count(ctx.user_id, channels)
    return {"unread_count": unread, "channel_id": str(channel_id) if channel_id else None}


@routes.route("message/status/read_list", keys=("message_id", "server_message_id", "channel_id"))
def message_status_read_list(ctx: RpcContext, body: dict[str, Any]) -> Any:
    message_id = _message_id(body)
    channel_id = u64(body, "channel_id")
    services = ctx.services
    readers, total = services.reads.readers(ctx.user_id, channel_id, message_id)
    items = []
    for uid, read_at in readers:
        item = public_user(services, uid)
        item["read_at"] = iso(read_at) if read_at else None
        items.append(item)
    return {
        "readers": items,
        "total": total,
        "read_count": len(items),
        "unread_count": total - len(items),
    }


@routes.route("message/status/read_stats", keys=("message_id", "server_message_id", "channel_id"))
def message_status_read_stats(ctx: RpcContext, body: dict[str, Any]) -> Any:
    message_id = _message_id(body)
    channel_id = u64(body, "channel_id")
    readers, total = ctx.services.reads.readers(ctx.user_id, channel_id, message_id)
    return {"read_count": len(readers), "total_count": total}


# ---- reactions ----------------------------------------------------------------------------------
_REACTION_KEYS = ("server_message_id", "channel_id", "emoji", "user_id")
_REACTION_READ_KEYS = ("server_message_id", "channel_id", "user_id")


def _reaction_target(body: dict[str, Any]) -> tuple[int, int]:
    _ignored_user_id(body)
    return u64(body, "server_message_id"), opt_u64(body, "channel_id")


@routes.route("message/reaction/add", keys=_REACTION_KEYS)
def message_reaction_add(ctx: RpcContext, body: dict[str, Any]) -> Any:
    message_id, channel_id = _reaction_target(body)
    emoji = text(body, "emoji", MAX_EMOJI_LEN)
    ctx.services.reactions.add(ctx.user_id, message_id, channel_id, emoji, ctx.origin)
    return True


@routes.route("message/reaction/remove", keys=_REACTION_KEYS)
def message_reaction_remove(ctx: RpcContext, body: dict[str, Any]) -> Any:
    message_id, channel_id = _reaction_target(body)
    emoji = text(body, "emoji", MAX_EMOJI_LEN)
    return ctx.services.reactions.remove(ctx.user_id, message_id, channel_id, emoji, ctx.origin)


def _reactions(ctx: RpcContext, body: dict[str, Any]) -> tuple[dict[str, list[int]], int]:
    message_id, channel_id = _reaction_target(body)
    reactions = ctx.services.reactions.reactions_of(ctx.user_id, message_id, channel_id)
    return reactions, sum(len(uids) for uids in reactions.values())


@routes.route("message/reaction/list", keys=_REACTION_READ_KEYS)
def message_reaction_list(ctx: RpcContext, body: dict[str, Any]) -> Any:
    reactions, total = _reactions(ctx, body)
    return {"success": True, "reactions": reactions, "total_count": total}


@routes.route("message/reaction/stats", keys=_REACTION_READ_KEYS)
def message_reaction_stats(ctx: RpcContext, body: dict[str, Any]) -> Any:
    reactions, total = _reactions(ctx, body)
    return {"success": True, "stats": {"reactions": reactions, "total_count": total}}

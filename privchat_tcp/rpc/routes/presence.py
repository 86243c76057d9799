"""``presence/*``: typing notifications, online status and subscriptions to it."""

from __future__ import annotations

from typing import Any

from ...errors import InvalidParams
from ...service.presence import MAX_QUERY
from ..params import channel_type, flag, u64, u64_list
from ..table import RouteTable, RpcContext

routes = RouteTable()

TYPING_ACTIONS = (
    "Typing",
    "Recording",
    "UploadingPhoto",
    "UploadingVideo",
    "UploadingFile",
    "ChoosingSticker",
)


@routes.route("presence/typing", keys=("channel_id", "channel_type", "is_typing", "action_type"))
def presence_typing(ctx: RpcContext, body: dict[str, Any]) -> Any:
    action = body.get("action_type", "Typing")
    if action not in TYPING_ACTIONS:
        raise InvalidParams("unknown action_type")
    ctx.services.messages.typing(
        ctx.user_id,
        u64(body, "channel_id"),
        channel_type(body),
        flag(body, "is_typing", True),
        action,
        ctx.origin,
    )
    return {"code": 0, "message": "OK"}


@routes.route("presence/subscribe", keys=("user_ids",))
def presence_subscribe(ctx: RpcContext, body: dict[str, Any]) -> Any:
    """Watch users (self and 0 skipped): their statuses now, and each change pushed (PUB,
    topic "presence") while this session lasts."""
    user_ids = u64_list(body, "user_ids", MAX_QUERY)
    initial = ctx.services.presence.subscribe(ctx.origin, ctx.user_id, user_ids)
    return {"initial_statuses": initial}


@routes.route("presence/unsubscribe", keys=("user_ids",))
def presence_unsubscribe(ctx: RpcContext, body: dict[str, Any]) -> Any:
    return ctx.services.presence.unsubscribe(ctx.origin, u64_list(body, "user_ids", MAX_QUERY))


@routes.route("presence/status/get", keys=("user_ids",))
def presence_status_get(ctx: RpcContext, body: dict[str, Any]) -> Any:
    statuses = ctx.services.presence.statuses(ctx.user_id, u64_list(body, "user_ids", MAX_QUERY))
    return {"code": 0, "message": "OK", "statuses": statuses}

"""``presence/*``: typing notifications."""

from __future__ import annotations

from typing import Any

from ...errors import InvalidParams
from ..params import channel_type, flag, u64
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

"""``message/*``: revoking."""

from __future__ import annotations

from typing import Any

from ..params import u64
from ..table import RouteTable, RpcContext

routes = RouteTable()


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

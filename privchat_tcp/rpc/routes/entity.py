"""``entity/sync_entities``: the caller's channels as PrivChat entities."""

from __future__ import annotations

from typing import Any

from ...errors import InvalidParams
from ...service.model import DIRECT
from ..params import text
from ..table import RouteTable, RpcContext
from ..views import envelope

routes = RouteTable()

#: the SDK skips an optional entity type on this substring (reference 11.7); the value the
#: client sent is not echoed (it is hostile input)
UNSUPPORTED_ENTITY = "不支持的 entity_type（当前支持 channel）"


@routes.route("entity/sync_entities", keys=("entity_type", "since_version", "scope", "limit"))
def entity_sync(ctx: RpcContext, body: dict[str, Any]) -> Any:
    entity_type = text(body, "entity_type", 64)
    if entity_type != "channel":
        raise InvalidParams(UNSUPPORTED_ENTITY)
    services = ctx.services
    depth = ctx.settings.json_max_depth
    items = []
    for channel in services.channels.user_channels(ctx.user_id):
        cid = channel.channel_id
        if channel.channel_type == DIRECT:
            peer = next((u for u in channel.members if u != ctx.user_id), ctx.user_id)
            name = str(peer)
        else:
            name = channel.name
        last = services.messages.last_record(cid)
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
                    "last_msg_content": envelope(last, depth).get("content", "") if last else "",
                    "last_msg_timestamp": last.timestamp if last else 0,
                    "top": 0,
                    "mute": 0,
                    "current_pts": services.channels.current_pts(cid),
                },
            }
        )
    return {"items": items, "next_version": 1, "has_more": False}

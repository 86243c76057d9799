"""``system/*``: health and server facts, answered before login."""

from __future__ import annotations

from typing import Any

from ..._version import __version__
from ..table import RouteTable, RpcContext

routes = RouteTable()


@routes.route("system/health", anonymous=True, keys=())
def system_health(ctx: RpcContext, body: dict[str, Any]) -> Any:
    return {"status": "ok", "draining": ctx.server.draining}


@routes.route("system/info", anonymous=True, keys=())
def system_info(ctx: RpcContext, body: dict[str, Any]) -> Any:
    s = ctx.settings
    return {
        "name": "privchat-tcp",
        "version": __version__,
        "protocol_version": 1,
        "max_message_size": s.max_body,
        "heartbeat_interval": s.heartbeat_interval,
        "store_epoch": ctx.services.epoch,
        "encryption": ctx.server.encryption,
    }

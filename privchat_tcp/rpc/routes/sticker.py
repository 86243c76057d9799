"""``sticker/package/*``: the sticker catalogue (``service/stickers.py``)."""

from __future__ import annotations

from typing import Any

from ..params import text
from ..table import RouteTable, RpcContext

routes = RouteTable()


@routes.route("sticker/package/list", keys=())
def package_list(ctx: RpcContext, body: dict[str, Any]) -> Any:
    return {"packages": ctx.services.stickers.packages()}


@routes.route("sticker/package/detail", keys=("package_id",))
def package_detail(ctx: RpcContext, body: dict[str, Any]) -> Any:
    return {"package": ctx.services.stickers.package(text(body, "package_id", 64))}

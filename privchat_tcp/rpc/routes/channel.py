"""``channel/*``: direct channels, per-user pin / hide / mute, broadcast channels and their
content (reference 6 and 7.5; the choices the reference leaves open are in docs/protocol.md)."""

from __future__ import annotations

from typing import Any

from ...errors import ErrorCode, ServiceError
from ...service.model import Broadcast, BroadcastPost
from ..params import U64_MAX, flag, opt_text, opt_u64, text, u64
from ..table import RouteTable, RpcContext
from ..views import iso

routes = RouteTable()


def _id_text(body: dict[str, Any], key: str) -> str | None:
    """An id PrivChat sends as a string (``source_id``); a number is taken as its digits."""
    value = body.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= U64_MAX:
            raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, f"{key} out of range")
        return str(value)
    return opt_text(body, key, 128)


def _self_only(ctx: RpcContext, body: dict[str, Any]) -> None:
    """``user_id`` in the body (PrivChat deserializes it): the caller's own, or absent."""
    user_id = opt_u64(body, "user_id")
    if user_id and user_id != ctx.user_id:
        raise ServiceError(ErrorCode.PERMISSION_DENIED, "user_id is not the caller's")


# ---- direct channels ---------------------------------------------------------------------------
@routes.route(
    "channel/direct/get_or_create", keys=("target_user_id", "source", "source_id", "user_id")
)
def direct_get_or_create(ctx: RpcContext, body: dict[str, Any]) -> Any:
    target = u64(body, "target_user_id")
    source = opt_text(body, "source", 32)
    source_id = _id_text(body, "source_id")
    channel, created = ctx.services.conversations.open_direct(
        ctx.user_id, target, source, source_id
    )
    return {"channel_id": channel.channel_id, "created": created}


# ---- per-user preferences ----------------------------------------------------------------------
@routes.route("channel/pin", keys=("user_id", "channel_id", "pinned"))
def channel_pin(ctx: RpcContext, body: dict[str, Any]) -> Any:
    channel_id = u64(body, "channel_id")
    pinned = flag(body, "pinned", True)
    _self_only(ctx, body)
    return ctx.services.conversations.pin(ctx.user_id, channel_id, pinned)


@routes.route("channel/hide", keys=("user_id", "channel_id"))
def channel_hide(ctx: RpcContext, body: dict[str, Any]) -> Any:
    channel_id = u64(body, "channel_id")
    _self_only(ctx, body)
    return ctx.services.conversations.hide(ctx.user_id, channel_id)


@routes.route("channel/mute", keys=("user_id", "channel_id", "muted"))
def channel_mute(ctx: RpcContext, body: dict[str, Any]) -> Any:
    channel_id = u64(body, "channel_id")
    muted = flag(body, "muted", True)
    _self_only(ctx, body)
    return ctx.services.conversations.mute(ctx.user_id, channel_id, muted)


# ---- broadcast channels ------------------------------------------------------------------------
def _status(ctx: RpcContext, action: str) -> dict[str, Any]:
    return {"status": "success", "action": action, "timestamp": iso(ctx.services.clock())}


def _broadcast(ctx: RpcContext, bc: Broadcast) -> dict[str, Any]:
    return {
        "channel_id": bc.channel_id,
        "name": bc.name,
        "description": bc.description,
        "avatar_url": bc.avatar_url,
        "owner_id": bc.owner_id,
        "created_at": iso(bc.created_at),
        "subscriber_count": len(bc.subscribers),
        "subscribed": ctx.user_id in bc.subscribers,
    }


def _post(post: BroadcastPost) -> dict[str, Any]:
    return {
        "content_id": post.content_id,
        "channel_id": post.channel_id,
        "author_id": post.author_id,
        "title": post.title,
        "content": post.content,
        "content_type": post.content_type,
        "published_at": iso(post.created_at),
    }


def broadcast_create(ctx: RpcContext, body: dict[str, Any]) -> Any:
    name = text(body, "name", 256)
    description = opt_text(body, "description", 2048, multiline=True)
    avatar_url = opt_text(body, "avatar_url", 2048)
    bc = ctx.services.broadcasts.create(ctx.user_id, name, description, avatar_url)
    return {**_status(ctx, "create"), **_broadcast(ctx, bc)}


def broadcast_subscribe(ctx: RpcContext, body: dict[str, Any]) -> Any:
    channel_id = u64(body, "channel_id")
    _self_only(ctx, body)
    since = ctx.services.broadcasts.subscribe(ctx.user_id, channel_id)
    return {
        "status": "success",
        "message": "subscribed",
        "channel_id": channel_id,
        "user_id": ctx.user_id,
        "subscribed_at": iso(since),
    }


for _name in ("channel/broadcast/create", "channel/channel/create"):
    routes.route(_name, keys=("name", "description", "avatar_url"))(broadcast_create)
for _name in ("channel/broadcast/subscribe", "channel/channel/subscribe"):
    routes.route(_name, keys=("user_id", "channel_id"))(broadcast_subscribe)


def _page(body: dict[str, Any]) -> tuple[int, int]:
    return opt_u64(body, "page"), opt_u64(body, "page_size")


@routes.route("channel/broadcast/list", keys=("page", "page_size"))
def broadcast_list(ctx: RpcContext, body: dict[str, Any]) -> Any:
    page, page_size = _page(body)
    channels, total = ctx.services.broadcasts.directory(page, page_size)
    offset, limit = ctx.services.broadcasts.page(page, page_size)
    return {
        **_status(ctx, "list"),
        "channels": [_broadcast(ctx, bc) for bc in channels],
        "total": total,
        "page": offset // limit + 1,
        "page_size": limit,
        "has_more": offset + len(channels) < total,
    }


@routes.route("channel/content/publish", keys=("channel_id", "content", "title", "content_type"))
def content_publish(ctx: RpcContext, body: dict[str, Any]) -> Any:
    channel_id = u64(body, "channel_id")
    content = text(body, "content", 16384, multiline=True)
    title = opt_text(body, "title", 512)
    content_type = opt_text(body, "content_type", 64)
    post = ctx.services.broadcasts.publish(ctx.user_id, channel_id, content, title, content_type)
    return {**_status(ctx, "publish"), **_post(post)}


@routes.route("channel/content/list", keys=("channel_id", "page", "page_size"))
def content_list(ctx: RpcContext, body: dict[str, Any]) -> Any:
    channel_id = u64(body, "channel_id")
    page, page_size = _page(body)
    posts, total = ctx.services.broadcasts.content(ctx.user_id, channel_id, page, page_size)
    offset, limit = ctx.services.broadcasts.page(page, page_size)
    return {
        **_status(ctx, "list"),
        "channel_id": channel_id,
        "contents": [_post(p) for p in posts],
        "total": total,
        "page": offset // limit + 1,
        "page_size": limit,
        "has_more": offset + len(posts) < total,
    }

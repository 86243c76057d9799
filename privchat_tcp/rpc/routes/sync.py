"""``sync/*``: submit (the MS commit as JSON), get_difference, channel pts, session_ready."""

from __future__ import annotations

import json
from typing import Any

from ...errors import ErrorCode, InvalidParams, ServiceError
from ...service import Services
from ...service.model import Channel, Record
from ..params import channel_type, opt_text, opt_u64, u64
from ..table import RouteTable, RpcContext
from ..views import CONTENT_TYPE_IDS, commit_json

routes = RouteTable()


def _envelope(value: Any) -> dict[str, Any]:
    """``sync/submit``'s payload as the envelope to store: an object (its ``text`` or
    ``content`` is the text) or a string (the text). Anything else, ``null`` included, is
    refused: it is not a message."""
    if value is None:
        raise ServiceError(ErrorCode.MISSING_REQUIRED_PARAM, "missing parameter: payload")
    if isinstance(value, dict):
        text = value.get("text", value.get("content"))
        env = dict(value)
        env["content"] = text if isinstance(text, str) else json.dumps(value)
        return env
    if isinstance(value, str):
        return {"content": value}
    raise ServiceError(ErrorCode.INVALID_PARAM_TYPE, "payload must be an object or a string")


@routes.route(
    "sync/submit",
    keys=(
        "local_message_id",
        "channel_id",
        "channel_type",
        "last_pts",
        "command_type",
        "payload",
        "client_timestamp",
        "device_id",
    ),
)
def sync_submit(ctx: RpcContext, body: dict[str, Any]) -> Any:
    local_id = u64(body, "local_message_id", nonzero=False)
    channel_id = u64(body, "channel_id")
    ctype = channel_type(body)
    last_pts = opt_u64(body, "last_pts")
    command = opt_text(body, "command_type", 64) or "text"
    env = _envelope(body.get("payload"))
    services = ctx.services
    channel = services.channels.member_channel(ctx.user_id, channel_id, ctype)
    server_pts = services.channels.current_pts(channel.channel_id)
    message_type = CONTENT_TYPE_IDS.get(command, 0)
    result = services.messages.send(
        ctx.user_id,
        ctx.device_id,
        channel,
        local_id,
        message_type,
        json.dumps(env, separators=(",", ":"), ensure_ascii=False).encode(),
        b"",
        False,
        ctx.origin,
        check=True,
        env=env,
    )
    return {
        "decision": "accepted",
        "pts": result.pts,
        "server_msg_id": result.message_id,
        "server_timestamp": result.timestamp,
        "local_message_id": local_id,
        "has_gap": last_pts < max(server_pts - 1, 0),
        "current_pts": result.pts - 1 if result.duplicate else server_pts,
    }


@routes.route("sync/get_difference", keys=("channel_id", "channel_type", "last_pts", "limit"))
def sync_get_difference(ctx: RpcContext, body: dict[str, Any]) -> Any:
    ctype = channel_type(body)
    services = ctx.services
    args = (
        ctx.user_id,
        u64(body, "channel_id"),
        opt_u64(body, "last_pts"),
        opt_u64(body, "limit", 100),
        ctype,
        ctx.origin,
    )
    if not services.messages.in_memory(args[1], args[2]):  # old history: read off the loop
        return _difference_later(services, args)
    return _difference_json(services, services.messages.pull(*args))


async def _difference_later(services: Services, args: tuple[int, int, int, int, int, str]) -> Any:
    return _difference_json(services, await services.messages.pull_async(*args))


def _difference_json(services: Services, page: tuple[Channel, list[Record], int, bool]) -> Any:
    _, records, current, has_more = page
    return {
        "commits": [commit_json(services, r) for r in records],
        "current_pts": current,
        "has_more": has_more,
    }


def _channel_pts(ctx: RpcContext, channel_id: int, ctype: int) -> dict[str, Any]:
    channels = ctx.services.channels
    channel = channels.member_channel(ctx.user_id, channel_id, ctype)
    return {
        "channel_id": channel_id,
        "channel_type": channel.channel_type,
        "current_pts": channels.current_pts(channel_id),
    }


@routes.route("sync/get_channel_pts", keys=("channel_id", "channel_type"))
def sync_get_channel_pts(ctx: RpcContext, body: dict[str, Any]) -> Any:
    item = _channel_pts(ctx, u64(body, "channel_id"), channel_type(body))
    return {"current_pts": item["current_pts"], "store_epoch": ctx.services.epoch}


@routes.route("sync/batch_get_channel_pts", keys=("channels",))
def sync_batch_get_channel_pts(ctx: RpcContext, body: dict[str, Any]) -> Any:
    channels = body.get("channels")
    if not isinstance(channels, list):
        raise InvalidParams("channels must be a list")
    if len(channels) > 1000:
        raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, "too many channels")
    out = []
    for item in channels:
        if not isinstance(item, dict):
            raise InvalidParams("each channel must be an object")
        out.append(_channel_pts(ctx, u64(item, "channel_id"), channel_type(item)))
    return {"channel_pts_map": out, "store_epoch": ctx.services.epoch}


@routes.route("sync/session_ready", keys=("client_timestamp",))
def sync_session_ready(ctx: RpcContext, body: dict[str, Any]) -> Any:
    ctx.caller.session_ready()
    return True

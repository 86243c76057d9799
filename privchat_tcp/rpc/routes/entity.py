"""``entity/sync_entities`` (reference 11.7): pages of one entity family by version, with
tombstones; the payloads are the reference's ``*SyncPayload`` shapes."""

from __future__ import annotations

import json
from typing import Any

from ...service import Services
from ...service.entities import PRIVACY_SETTING, EntityItem, SyncPage
from ...service.model import DIRECT, GROUP, Channel, Member, Record, User
from ..params import opt_text, opt_u64, text
from ..table import RouteTable, RpcContext
from ..views import CONTENT_TYPES, envelope

routes = RouteTable()

#: ``last_msg_content`` of a channel's payload is cut to this many characters
LAST_MSG_CHARS = 200


@routes.route("entity/sync_entities", keys=("entity_type", "since_version", "scope", "limit"))
async def entity_sync(ctx: RpcContext, body: dict[str, Any]) -> Any:
    """A ``message`` page may read old history: off the loop; the others answer at once."""
    entity_type = text(body, "entity_type", 64)
    since = opt_u64(body, "since_version")
    scope = opt_text(body, "scope", 128)
    limit = opt_u64(body, "limit")
    entities = ctx.services.entities
    if entities.kind(entity_type) == "message":
        page = await entities.sync_messages(ctx.user_id, since, scope, limit)
    else:
        page = entities.sync(ctx.user_id, entity_type, since, scope, limit)
    return {
        "items": [_item(ctx, page, item) for item in page.items],
        "next_version": page.next_version,
        "has_more": page.has_more,
    }


def _item(ctx: RpcContext, page: SyncPage, item: EntityItem) -> dict[str, Any]:
    out: dict[str, Any] = {
        "entity_id": item.entity_id,
        "version": item.version,
        "deleted": item.deleted,
    }
    if item.deleted:
        out["payload"] = None
        return out
    kind = page.entity_type
    value = item.value
    if kind == "friend":
        out["payload"] = _friend(value[0], value[1], item.version)
    elif kind == "user":
        out["payload"] = _user(value, item.version)
        if value.user_id != page.viewer:  # the viewer's relation to them
            social = ctx.services.social
            out["payload"]["is_friend"] = social.is_friend(page.viewer, value.user_id)
            out["payload"]["is_blocked"] = social.is_blocked(page.viewer, value.user_id)
    elif kind == "group":
        out["payload"] = _group(value)
    elif kind == "channel":
        out["payload"] = _channel(ctx, page.viewer, value)
    elif kind == "group_member":
        out["payload"] = _member(ctx.services, value[0], value[1], item.version)
    elif kind == "user_block":
        user, at = value
        out["payload"] = {
            **_user(user, item.version),
            "blocked_user_id": user.user_id,
            "blocked_at": at,
        }
    elif kind == "message":
        out["payload"] = _message(ctx, value)
    elif kind == "message_status":
        out["payload"] = _read_status(*value)
    elif kind == "message_reaction":
        out["payload"] = _reaction(ctx, *value)
    elif value[0] == PRIVACY_SETTING:  # user_settings: the privacy flags, defaults filled in
        flags = ctx.services.privacy.get(page.viewer)
        out["payload"] = {"setting_key": value[0], "value": flags}
    else:  # user_settings
        out["payload"] = {"setting_key": value[0], "value": value[1]}
    return out


def _message(ctx: RpcContext, record: Record) -> dict[str, Any]:
    """A message as the reference's MessageSyncPayload (its aliases included); revoked:
    content blanked, ``revoked`` true."""
    env = envelope(record, ctx.settings.json_max_depth)
    content: Any = env.get("content", "")
    if not isinstance(content, str):
        content = json.dumps(content, separators=(",", ":"), ensure_ascii=False)
    if record.revoked:
        content = ""
    kind = (
        CONTENT_TYPES[record.message_type] if record.message_type < len(CONTENT_TYPES) else "text"
    )
    out: dict[str, Any] = {
        "server_message_id": record.message_id,
        "message_id": record.message_id,
        "id": record.message_id,
        "local_message_id": record.local_message_id or None,
        "channel_id": record.channel_id,
        "channel_type": record.channel_type,
        "type": record.message_type,
        "conversation_type": record.channel_type,
        "timestamp": record.timestamp,
        "created_at": record.timestamp,
        "send_time": record.timestamp,
        "from_uid": record.sender_id,
        "sender_id": record.sender_id,
        "from": record.sender_id,
        "uid": record.sender_id,
        "message_type": kind,
        "content": content,
        "text": content,
        "body": env if not record.revoked and not record.e2e else None,
        "status": 2 if record.revoked else 1,
        "pts": record.pts,
        "order_seq": record.pts,
        "revoked": record.revoked,
        "revoked_at": record.revoked_at if record.revoked else None,
        "revoked_by": record.revoked_by if record.revoked else None,
    }
    if record.e2e and not record.revoked:
        out["e2e"] = True
        out["data"] = env.get("data")
    return out


def _read_status(
    channel: Channel, reader: int, read_pts: int, read_at: int, message: Record | None
) -> dict[str, Any]:
    """A read position as the reference's MessageStatusSyncPayload: the message at the
    position (when it is one) is read, and so is everything before it."""
    out: dict[str, Any] = {
        "channel_id": channel.channel_id,
        "channel_type": channel.channel_type,
        "user_id": reader,
        "reader_id": reader,
        "read_pts": read_pts,
        "last_read_pts": read_pts,
        "read_at": read_at,
        "readed": True,
        "is_read": True,
        "read": True,
    }
    if message is not None:
        out["message_id"] = out["server_message_id"] = out["id"] = message.message_id
    return out


def _reaction(
    ctx: RpcContext, channel: Channel, message: Record, user_id: int, emoji: str
) -> dict[str, Any]:
    return {
        "server_message_id": message.message_id,
        "message_id": message.message_id,
        "channel_id": channel.channel_id,
        "channel_type": channel.channel_type,
        "user_id": user_id,
        "uid": user_id,
        "emoji": emoji,
        "is_deleted": False,
    }


def _user(user: User, version: int) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "uid": user.user_id,
        "username": user.username,
        "nickname": user.nickname,
        "avatar": user.avatar_url or "",
        "user_type": user.user_type,
        "updated_at": version,
        "version": version,
    }


def _friend(user: User, since: int, version: int) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "uid": user.user_id,
        "is_pinned": False,
        "pinned": False,
        "created_at": since,
        "updated_at": since,
        "version": version,
        "friend": {"created_at": since, "updated_at": since, "version": version},
        "user": {
            "username": user.username,
            "nickname": user.nickname,
            "name": user.nickname,
            "alias": None,
            "avatar": user.avatar_url or "",
            "user_type": user.user_type,
            "type": user.user_type,
            "updated_at": version,
            "version": version,
        },
    }


def _group(group: Channel) -> dict[str, Any]:
    return {
        "group_id": group.channel_id,
        "name": group.name,
        "description": group.description,
        "avatar": group.avatar_url or "",
        "avatar_url": group.avatar_url,
        "owner_id": group.owner_id,
        "member_count": len(group.members),
        "created_at": group.created_at,
        "updated_at": group.updated_at,
    }


def _channel(ctx: RpcContext, viewer: int, channel: Channel) -> dict[str, Any]:
    services = ctx.services
    cid = channel.channel_id
    avatar = ""
    if channel.channel_type == DIRECT:
        peer = next((u for u in channel.members if u != viewer), viewer)
        name = str(peer)
        peer_user = services.entities.user(peer)
        if peer_user is not None and peer_user.avatar_url:
            avatar = peer_user.avatar_url
    else:
        name = channel.name
        avatar = channel.avatar_url or ""
    last = services.messages.last_record(cid)
    content: Any = envelope(last, ctx.settings.json_max_depth).get("content", "") if last else ""
    if not isinstance(content, str):
        content = ""
    prefs = services.conversations.prefs(viewer, cid)
    return {
        "channel_id": cid,
        "channel_type": channel.channel_type,
        "type": channel.channel_type,
        "channel_name": name,
        "name": name,
        "avatar": avatar,
        "unread_count": services.entities.unread(viewer, channel),
        "last_msg_content": content[:LAST_MSG_CHARS],
        "last_msg_timestamp": last.timestamp if last else 0,
        "top": 1 if prefs.pinned_at else 0,
        "mute": 1 if prefs.muted else 0,
        "pinned_at": prefs.pinned_at,
        "hidden": services.conversations.is_hidden(prefs),
        "current_pts": services.channels.current_pts(cid),
    }


def _member(services: Services, group: Channel, member: Member, version: int) -> dict[str, Any]:
    return {
        "group_id": group.channel_id,
        "user_id": member.user_id,
        "uid": member.user_id,
        "role": member.role,
        "status": 0,
        "alias": None,
        "is_muted": services.channels.is_muted(group, member.user_id)
        if group.channel_type == GROUP
        else False,
        "joined_at": member.joined_at,
        "updated_at": version,
        "version": version,
    }

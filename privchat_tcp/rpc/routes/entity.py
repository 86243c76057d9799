"""``entity/sync_entities`` (reference 11.7): pages of one entity family by version, with
tombstones; the payloads are the reference's ``*SyncPayload`` shapes."""

from __future__ import annotations

from typing import Any

from ...service import Services
from ...service.entities import PRIVACY_SETTING, EntityItem, SyncPage
from ...service.model import DIRECT, GROUP, Channel, Member, User
from ..params import opt_text, opt_u64, text
from ..table import RouteTable, RpcContext
from ..views import envelope

routes = RouteTable()

#: ``last_msg_content`` of a channel's payload is cut to this many characters
LAST_MSG_CHARS = 200


@routes.route("entity/sync_entities", keys=("entity_type", "since_version", "scope", "limit"))
def entity_sync(ctx: RpcContext, body: dict[str, Any]) -> Any:
    entity_type = text(body, "entity_type", 64)
    since = opt_u64(body, "since_version")
    scope = opt_text(body, "scope", 128)
    limit = opt_u64(body, "limit")
    page = ctx.services.entities.sync(ctx.user_id, entity_type, since, scope, limit)
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
    elif value[0] == PRIVACY_SETTING:  # user_settings: the privacy flags, defaults filled in
        flags = ctx.services.privacy.get(page.viewer)
        out["payload"] = {"setting_key": value[0], "value": flags}
    else:  # user_settings
        out["payload"] = {"setting_key": value[0], "value": value[1]}
    return out


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

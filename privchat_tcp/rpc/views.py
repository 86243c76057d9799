"""JSON shapes of the model (PrivChat reference section 7): the one place a record, a user or a
group becomes JSON.

Stored payloads and metadata are parsed here with ``safejson.loads``: whatever a sender managed
to store, a view renders it (as text at worst) and never fails for the other members."""

from __future__ import annotations

import base64
import datetime
from typing import Any

from google.protobuf.message import DecodeError

from ..errors import ServiceError
from ..proto import privchat_pb2 as pb
from ..service import Services
from ..service.content import CONTENT_TYPE_NAMES
from ..service.model import KIND_REVOKE, ROLE_NAMES, Channel, QRCode, Record, User
from ..service.profiles import qr_url
from .safejson import MAX_DEPTH, is_envelope, loads

__all__ = [
    "CONTENT_TYPES",
    "CONTENT_TYPE_IDS",
    "iso",
    "public_user",
    "commit_json",
    "envelope",
    "group_info",
    "group_members",
    "searched_user",
    "qrcode_entry",
]

# ContentMessageType, PrivChat 0.1.1 numbering (reference section 10.1)
CONTENT_TYPES = list(CONTENT_TYPE_NAMES)
CONTENT_TYPE_IDS = {name: i for i, name in enumerate(CONTENT_TYPES)}


def iso(ms: int) -> str:
    """RFC 3339 text of a unix-ms time."""
    return (
        datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat().replace("+00:00", "Z")
    )


def public_user(services: Services, user_id: int) -> dict[str, Any]:
    user = services.accounts.get(user_id)
    if user is None:
        return {
            "user_id": user_id,
            "username": f"user_{user_id}",
            "nickname": None,
            "avatar_url": None,
        }
    return {
        "user_id": user.user_id,
        "username": user.username,
        "nickname": user.nickname,
        "avatar_url": user.avatar_url,
    }


def commit_json(services: Services, record: Record) -> dict[str, Any]:
    """A record as PrivChat's ServerCommit. A revoke event's ``server_msg_id`` is the revoked
    message's id, as in its push (``server_message_id``): the id a client finds the message by;
    the event itself is known by its pts."""
    content: Any
    if record.kind == KIND_REVOKE:
        message_id = record.target_message_id
        content = {
            "message_id": message_id,
            "channel_id": record.channel_id,
            "revoked_by": record.sender_id,
            "revoked_at": record.timestamp,
            "event": "message.revoke",
        }
        message_type = "system"
    else:
        message_id = record.message_id
        message_type = (
            CONTENT_TYPES[record.message_type]
            if record.message_type < len(CONTENT_TYPES)
            else "text"
        )
        content = envelope(record, services.settings.json_max_depth)
    return {
        "pts": record.pts,
        "server_msg_id": message_id,
        "local_message_id": record.local_message_id or None,
        "channel_id": record.channel_id,
        "channel_type": record.channel_type,
        "message_type": message_type,
        "content": content,
        "server_timestamp": record.timestamp,
        "sender_id": record.sender_id,
        "sender_info": public_user(services, record.sender_id),
    }


def envelope(record: Record, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """The message as PrivChat's payload envelope (never parsed when end-to-end). A payload
    that is not a JSON object within the limits is its text (invalid UTF-8 replaced);
    metadata that is not JSON within them is left out."""
    if record.revoked:
        return {"content": "", "revoked": True}
    if record.e2e:
        return {
            "e2e": True,
            "data": base64.b64encode(record.payload or record.content).decode(),
        }
    if record.payload:
        value: Any = None
        if is_envelope(record.payload):
            try:
                value = loads(record.payload, max_depth, "payload")
            except ServiceError:
                pass
        if isinstance(value, dict):
            return value
        return {"content": record.payload.decode("utf-8", "replace")}
    try:
        content = pb.MessageContent.FromString(record.content)
    except DecodeError:
        return {"content": ""}
    env: dict[str, Any] = {"content": content.searchable_content}
    if content.metadata:
        try:
            env["metadata"] = loads(content.metadata, max_depth, "metadata")
        except ServiceError:
            pass
    if content.reply_to_message_id:
        env["reply_to_message_id"] = str(content.reply_to_message_id)
    if content.mentioned_targets:
        env["mentioned_user_ids"] = list(content.mentioned_targets)
    return env


def group_info(services: Services, group: Channel) -> dict[str, Any]:
    return {
        "group_id": group.channel_id,
        "name": group.name,
        "description": group.description,
        "avatar_url": group.avatar_url,
        "owner_id": group.owner_id,
        "created_at": iso(group.created_at),
        "updated_at": iso(group.updated_at),
        "member_count": len(group.members),
        "message_count": services.groups.message_count(group.channel_id),
        "is_archived": False,
        "tags": None,
        "custom_fields": None,
    }


def group_members(services: Services, group: Channel) -> dict[str, Any]:
    members = []
    for m in group.members.values():
        user = services.accounts.get(m.user_id)
        item: dict[str, Any] = {
            "user_id": m.user_id,
            "username": user.username if user else f"user_{m.user_id}",
            "nickname": user.nickname if user else "",
            "role": ROLE_NAMES[m.role],
            "joined_at": iso(m.joined_at),
            "is_muted": services.channels.is_muted(group, m.user_id),
        }
        if user and user.avatar_url:
            item["avatar_url"] = user.avatar_url
        members.append(item)
    return {"members": members, "total": len(members)}


# ---- accounts and contacts (issue 12) ---------------------------------------------------------
def searched_user(services: Services, viewer: int, user: User, search_session_id: int) -> Any:
    """PrivChat's ``SearchedUser`` (reference 7.1) of ``user`` as ``viewer`` sees it."""
    item: dict[str, Any] = {
        "user_id": user.user_id,
        "username": user.username,
        "nickname": user.nickname,
        "user_type": user.user_type,
        "search_session_id": search_session_id,
        "is_friend": services.social.is_friend(viewer, user.user_id),
        "can_send_message": services.social.can_send(viewer, user.user_id),
    }
    if user.avatar_url:
        item["avatar_url"] = user.avatar_url
    return item


def qrcode_entry(code: QRCode) -> dict[str, Any]:
    """PrivChat's ``QRCodeEntry`` (``qrcode/list``)."""
    return {
        "qr_key": code.qr_key,
        "qr_code": qr_url(code),
        "qr_type": code.qr_type,
        "target_id": str(code.target_id),
        "created_at": iso(code.created_at),
        "expire_at": iso(code.expire_at) if code.expire_at else None,
        "used_count": code.used_count,
        "max_usage": code.max_usage or None,
        "revoked": bool(code.revoked_at),
    }

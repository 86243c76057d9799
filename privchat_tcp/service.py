"""The service layer: every rule about users, channels, messages and sync lives here.

Commands (MS, MP, MR, ACK, SUB) and RPC routes (``sync/submit``, ``sync/get_difference``,
``message/revoke`` ...) call these methods, so both paths share one pts allocator, one commit
log and one reader. The service knows the store only through ``Store`` and reaches sessions only
through ``Delivery``; it never sees bytes from the wire except message payloads.
"""

from __future__ import annotations

import base64
import datetime
import json
import time
from collections.abc import Iterable
from typing import Any, Protocol

from . import pbwire
from .config import Settings
from .errors import ErrorCode, ServiceError
from .proto import privchat_pb2 as pb
from .store.base import (
    GROUP,
    ROLE_ADMIN,
    ROLE_MEMBER,
    ROLE_NAMES,
    ROLE_OWNER,
    Channel,
    DedupEntry,
    Record,
    Store,
    User,
)

__all__ = ["Service", "Delivery", "Snowflake", "CONTENT_TYPES", "iso"]

SYSTEM_MESSAGE = 5
KIND_MESSAGE = 0
KIND_REVOKE = 1

# ContentMessageType, PrivChat 0.1.1 numbering (reference section 10.1)
CONTENT_TYPES = [
    "text",
    "image",
    "file",
    "voice",
    "video",
    "system",
    "audio",
    "location",
    "contact_card",
    "sticker",
    "forward",
]
CONTENT_TYPE_IDS = {name: i for i, name in enumerate(CONTENT_TYPES)}


def iso(ms: int) -> str:
    """RFC 3339 text of a unix-ms time."""
    return (
        datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat().replace("+00:00", "Z")
    )


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Snowflake:
    """41-bit ms since 2024-01-01, 5-bit datacenter, 5-bit machine, 12-bit sequence."""

    EPOCH_MS = 1_704_067_200_000

    def __init__(self, datacenter: int, machine: int) -> None:
        self._node = (datacenter << 17) | (machine << 12)
        self._last = 0
        self._seq = 0

    def next(self, now: int = 0) -> int:
        """The next id; ``now`` is the current unix ms when the caller has it.

        Not thread-safe: ids are drawn on the event loop's thread, like every store write."""
        ms = (now or now_ms()) - self.EPOCH_MS
        if ms <= self._last:
            ms = self._last
            self._seq = (self._seq + 1) & 0xFFF
            if self._seq == 0:  # 4096 ids in one ms: borrow the next ms
                ms += 1
        else:
            self._seq = 0
        self._last = ms
        return (ms << 22) | self._node | self._seq


class Delivery(Protocol):
    """What the service needs from the session layer (one process today, Redis later)."""

    def deliver(self, channel: Channel, record: Record, origin: object | None) -> None:
        """Push a committed record to every online device of the channel's members."""

    def publish(self, channel_id: int, body: bytes, origin: object | None) -> None:
        """Send a PUB body to the channel's subscribers."""

    def online_devices(self, user_id: int) -> int:
        """How many sessions the user has."""


def _bad(message: str, code: int = ErrorCode.INVALID_PARAMS) -> ServiceError:
    return ServiceError(code, message)


class Service:
    def __init__(self, settings: Settings, store: Store, delivery: Delivery) -> None:
        self.settings = settings
        self.store = store
        self.delivery = delivery
        self.ids = Snowflake(settings.snowflake_datacenter_id, settings.snowflake_machine_id)
        self._typing: dict[tuple[int, int], float] = {}
        self._last_sweep = now_ms()

    # ---- users ------------------------------------------------------------------
    def user(self, user_id: int) -> User:
        user = self.store.get_user(user_id)
        if user is None:
            raise ServiceError(ErrorCode.USER_NOT_FOUND, "user not found")
        return user

    def public_user(self, user_id: int) -> dict[str, Any]:
        user = self.store.get_user(user_id)
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

    # ---- channels ------------------------------------------------------------------
    def channel(self, channel_id: int) -> Channel:
        channel = self.store.get_channel(channel_id)
        if channel is None:
            raise ServiceError(ErrorCode.CHANNEL_NOT_FOUND, "channel not found")
        return channel

    def member_channel(self, user_id: int, channel_id: int) -> Channel:
        """The channel, if ``user_id`` is a member of it."""
        channel = self.channel(channel_id)
        if user_id not in channel.members:
            if channel.channel_type == GROUP:
                raise ServiceError(ErrorCode.NOT_GROUP_MEMBER, "not a member of this group")
            raise ServiceError(ErrorCode.PERMISSION_DENIED, "not a member of this channel")
        return channel

    def group(self, group_id: int) -> Channel:
        channel = self.store.get_channel(group_id)
        if channel is None or channel.channel_type != GROUP:
            raise ServiceError(ErrorCode.GROUP_NOT_FOUND, "group not found")
        return channel

    def direct(self, user_id: int, target_id: int) -> tuple[Channel, bool]:
        if target_id == user_id:
            raise _bad("cannot open a direct chat with yourself")
        self.user(target_id)
        return self.store.get_or_create_direct(user_id, target_id, now_ms())

    def create_group(
        self, owner_id: int, name: str, description: str | None, member_ids: Iterable[int]
    ) -> Channel:
        name = name.strip()
        if not name or len(name) > 128:
            raise _bad("group name must be 1-128 characters")
        if description is not None and len(description) > 1024:
            raise _bad("description too long")
        ids = []
        for uid in member_ids:
            if uid != owner_id and uid not in ids:
                self.user(uid)
                ids.append(uid)
        if len(ids) + 1 > self.settings.max_group_members:
            raise ServiceError(ErrorCode.GROUP_FULL, "group full")
        return self.store.create_group(
            owner_id, name, description, ids, now_ms(), self.settings.max_group_members
        )

    def add_member(self, operator: int, group_id: int, user_id: int, role: str | None) -> None:
        group = self.group(group_id)
        op = group.members.get(operator)
        if op is None:
            raise ServiceError(ErrorCode.NOT_GROUP_MEMBER, "not a member of this group")
        wanted = ROLE_MEMBER
        if role is not None:
            role_l = role.lower()
            if role_l not in ("member", "admin"):
                raise _bad("role must be member or admin")
            if role_l == "admin":
                if op.role != ROLE_OWNER:
                    raise ServiceError(ErrorCode.NOT_GROUP_OWNER, "only the owner adds admins")
                wanted = ROLE_ADMIN
        self.user(user_id)
        if user_id in group.members:
            raise ServiceError(ErrorCode.MEMBER_ALREADY_IN_GROUP, "already a member")
        if len(group.members) >= group.max_members:
            raise ServiceError(ErrorCode.GROUP_FULL, "group full")
        self.store.add_member(group_id, user_id, wanted, now_ms())

    def remove_member(self, operator: int, group_id: int, user_id: int) -> None:
        group = self.group(group_id)
        op = group.members.get(operator)
        if op is None:
            raise ServiceError(ErrorCode.NOT_GROUP_MEMBER, "not a member of this group")
        target = group.members.get(user_id)
        if target is None:
            raise ServiceError(ErrorCode.NOT_GROUP_MEMBER, "user is not a member")
        if target.role == ROLE_OWNER:
            raise ServiceError(ErrorCode.PERMISSION_DENIED, "Cannot remove group owner")
        if op.role == ROLE_MEMBER or (op.role == ROLE_ADMIN and target.role != ROLE_MEMBER):
            raise ServiceError(ErrorCode.NOT_GROUP_ADMIN, "not allowed to remove this member")
        self.store.remove_member(group_id, user_id)

    def leave_group(self, user_id: int, group_id: int) -> None:
        group = self.group(group_id)
        member = group.members.get(user_id)
        if member is None:
            raise ServiceError(ErrorCode.NOT_GROUP_MEMBER, "not a member of this group")
        if member.role == ROLE_OWNER and len(group.members) > 1:
            raise ServiceError(
                ErrorCode.PERMISSION_DENIED, "the owner must transfer ownership before leaving"
            )
        self.store.remove_member(group_id, user_id)

    def group_info(self, user_id: int, group_id: int) -> dict[str, Any]:
        group = self.group(group_id)
        if user_id not in group.members:
            raise ServiceError(ErrorCode.NOT_GROUP_MEMBER, "not a member of this group")
        return {
            "group_id": group.channel_id,
            "name": group.name,
            "description": group.description,
            "avatar_url": group.avatar_url,
            "owner_id": group.owner_id,
            "created_at": iso(group.created_at),
            "updated_at": iso(group.updated_at),
            "member_count": len(group.members),
            "message_count": self.store.current_pts(group_id),
            "is_archived": False,
            "tags": None,
            "custom_fields": None,
        }

    def group_members(self, user_id: int, group_id: int) -> dict[str, Any]:
        group = self.group(group_id)
        if user_id not in group.members:
            raise ServiceError(ErrorCode.NOT_GROUP_MEMBER, "not a member of this group")
        now = now_ms()
        members = []
        for m in group.members.values():
            user = self.store.get_user(m.user_id)
            item: dict[str, Any] = {
                "user_id": m.user_id,
                "username": user.username if user else f"user_{m.user_id}",
                "nickname": user.nickname if user else "",
                "role": ROLE_NAMES[m.role],
                "joined_at": iso(m.joined_at),
                "is_muted": m.mute_until == -1 or m.mute_until > now,
            }
            if user and user.avatar_url:
                item["avatar_url"] = user.avatar_url
            members.append(item)
        return {"members": members, "total": len(members)}

    # ---- messages ----------------------------------------------------------------------
    def resolve_target(
        self, user_id: int, channel_id: int, channel_type: int, conv_type: int, conv_target: int
    ) -> Channel:
        if channel_id == 0 and conv_type:
            if conv_type == pb.Conversation.SINGLE:
                return self.direct(user_id, conv_target)[0]
            if conv_type == pb.Conversation.GROUP:
                channel_id = conv_target
                channel_type = GROUP
            else:
                raise ServiceError(
                    ErrorCode.UNSUPPORTED_PROTOCOL, "conversation type not supported", status=8
                )
        if channel_id == 0:
            raise _bad("channel_id must be non-zero")
        channel = self.member_channel(user_id, channel_id)
        if channel_type and channel_type != channel.channel_type:
            raise _bad("channel_type does not match the channel")
        return channel

    def send(
        self,
        sender: int,
        device: str,
        channel: Channel,
        local_id: int,
        message_type: int,
        payload: bytes,
        content: bytes,
        e2e: bool,
        origin: object | None,
    ) -> tuple[Record | DedupEntry, bool]:
        """Commit one message (idempotent on sender, device, local_id) and deliver it.

        Returns the committed record, or the original's dedup entry and True for a retry; both
        carry ``message_id``, ``pts`` and ``timestamp``."""
        if local_id:
            seen = self.store.dedup_get(sender, device, local_id)
            if seen is not None:
                return seen, True
        if not payload and not content:
            raise ServiceError(ErrorCode.MESSAGE_CONTENT_INVALID, "empty message")
        ts = now_ms()
        if channel.channel_type == GROUP:
            member = channel.members[sender]
            if member.mute_until == -1 or member.mute_until > ts:
                raise ServiceError(ErrorCode.MEMBER_MUTED, "you are muted in this group")
            if channel.all_muted and member.role == ROLE_MEMBER:
                raise ServiceError(ErrorCode.GROUP_MUTED, "the group is muted")
        message_id = self.ids.next(ts)
        channel_id = channel.channel_id
        channel_type = channel.channel_type
        record = Record(
            0,
            message_id,
            channel_id,
            channel_type,
            sender,
            device,
            local_id,
            message_type,
            ts,
            payload,
            content,
            e2e,
            KIND_MESSAGE,
        )
        pts = self.store.commit(record).pts
        # the push every recipient and every pull shares (the same bytes as _push_bytes)
        record.push = pbwire.push(
            f"msg_{message_id}",
            message_id,
            pts,
            local_id,
            ts // 1000,
            channel_id,
            channel_type,
            message_type,
            "",
            sender,
            payload,
            False,
            content,
            e2e,
            device,
        )
        if local_id:
            self.store.dedup_put(
                sender, device, local_id, DedupEntry(message_id, pts, channel_id, ts)
            )
            self._maybe_sweep(ts)
        self.delivery.deliver(channel, record, origin)
        return record, False

    def _maybe_sweep(self, now: int) -> None:
        if now - self._last_sweep > 1_000:  # each call sweeps a part (Store.dedup_sweep)
            self._last_sweep = now
            self.store.dedup_sweep(now - self.settings.dedup_retention * 1000)

    def _push_bytes(self, record: Record, tombstone: bool = False) -> bytes:
        """The record's PushMessageRequest, serialized once and shared by every recipient."""
        return pbwire.push(
            f"msg_{record.message_id}",
            record.message_id,
            record.pts,
            record.local_message_id,
            record.timestamp // 1000,
            record.channel_id,
            record.channel_type,
            record.message_type,
            "",
            record.sender_id,
            b"" if tombstone else record.payload,
            tombstone,
            b"" if tombstone else record.content,
            record.e2e,
            record.sender_device,
        )

    def revoke(
        self, user_id: int, device: str, channel_id: int, message_id: int, origin: object | None
    ) -> Record:
        channel = self.member_channel(user_id, channel_id)
        target = self.store.find_message(channel_id, message_id)
        if target is None:
            raise ServiceError(ErrorCode.MESSAGE_NOT_FOUND, "message not found")
        if target.revoked:
            raise _bad("message already revoked")
        now = now_ms()
        if target.sender_id == user_id:
            role = channel.members[user_id].role
            privileged = channel.channel_type == GROUP and role in (ROLE_OWNER, ROLE_ADMIN)
            if not privileged and now - target.timestamp > self.settings.revoke_window * 1000:
                raise ServiceError(
                    ErrorCode.MESSAGE_CANNOT_REVOKE, "message cannot be revoked (timeout)"
                )
        elif not (
            channel.channel_type == GROUP
            and channel.members[user_id].role in (ROLE_OWNER, ROLE_ADMIN)
        ):
            raise ServiceError(
                ErrorCode.PERMISSION_DENIED, "only the sender or an admin may revoke"
            )
        target.revoked = True
        target.revoked_by = user_id
        target.revoked_at = now
        target.push = self._push_bytes(target, tombstone=True)
        self.store.update_record(target)
        payload = json.dumps(
            {
                "message_id": message_id,
                "channel_id": channel_id,
                "revoked_by": user_id,
                "revoked_at": now,
            },
            separators=(",", ":"),
        ).encode()
        event = Record(
            pts=0,
            message_id=self.ids.next(now),
            channel_id=channel_id,
            channel_type=channel.channel_type,
            sender_id=user_id,
            sender_device=device,
            local_message_id=0,
            message_type=SYSTEM_MESSAGE,
            timestamp=now,
            payload=payload,
            content=b"",
            e2e=False,
            kind=KIND_REVOKE,
            target_message_id=message_id,
        )
        self.store.commit(event)
        event.push = pbwire.push(
            f"revoke_{message_id}",
            message_id,
            event.pts,
            0,
            now // 1000,
            channel_id,
            channel.channel_type,
            SYSTEM_MESSAGE,
            "message.revoke",
            user_id,
            payload,
            True,
            b"",
            False,
            "",
        )
        self.delivery.deliver(channel, event, origin)
        return event

    def pull(
        self, user_id: int, channel_id: int, last_pts: int, limit: int
    ) -> tuple[Channel, list[Record], int, bool]:
        channel = self.member_channel(user_id, channel_id)
        if limit <= 0:
            limit = 100
        limit = min(limit, self.settings.max_pull_limit)
        current = self.store.current_pts(channel_id)
        records = self.store.read_log(channel_id, last_pts, limit)
        has_more = bool(records) and records[-1].pts < current
        return channel, records, current, has_more

    def ack(self, user_id: int, device: str, channel_id: int, pts: int) -> None:
        current = self.store.current_pts(channel_id)
        channel = self.store.get_channel(channel_id)
        if channel is None or user_id not in channel.members:
            return
        self.store.set_ack(user_id, device, channel_id, min(pts, current))

    def pending(self, user_id: int, device: str) -> list[tuple[Channel, int, int]]:
        """(channel, acked pts, current pts) for every channel with events the device lacks."""
        out = []
        for cid in self.store.user_channels(user_id):
            current = self.store.current_pts(cid)
            acked = self.store.get_ack(user_id, device, cid)
            if current > acked:
                channel = self.store.get_channel(cid)
                if channel is not None:
                    out.append((channel, acked, current))
        return out

    # ---- sync/* JSON views ----------------------------------------------------------------
    def commit_json(self, record: Record) -> dict[str, Any]:
        """A record as PrivChat's ServerCommit."""
        content: Any
        if record.kind == KIND_REVOKE:
            content = json.loads(record.payload)
            content["event"] = "message.revoke"
            message_type = "system"
        else:
            message_type = (
                CONTENT_TYPES[record.message_type]
                if record.message_type < len(CONTENT_TYPES)
                else "text"
            )
            content = self.envelope(record)
        return {
            "pts": record.pts,
            "server_msg_id": record.message_id,
            "local_message_id": record.local_message_id or None,
            "channel_id": record.channel_id,
            "channel_type": record.channel_type,
            "message_type": message_type,
            "content": content,
            "server_timestamp": record.timestamp,
            "sender_id": record.sender_id,
            "sender_info": self.public_user(record.sender_id),
        }

    def envelope(self, record: Record) -> dict[str, Any]:
        """The message as PrivChat's payload envelope (never parsed when end-to-end)."""
        if record.revoked:
            return {"content": "", "revoked": True}
        if record.e2e:
            return {
                "e2e": True,
                "data": base64.b64encode(record.payload or record.content).decode(),
            }
        if record.payload:
            try:
                value = json.loads(record.payload)
            except (ValueError, UnicodeDecodeError):
                value = None
            if isinstance(value, dict):
                return value
            return {"content": record.payload.decode("utf-8", "replace")}
        content = pb.MessageContent.FromString(record.content)
        env: dict[str, Any] = {"content": content.searchable_content}
        if content.metadata:
            try:
                env["metadata"] = json.loads(content.metadata)
            except ValueError:
                pass
        if content.reply_to_message_id:
            env["reply_to_message_id"] = str(content.reply_to_message_id)
        if content.mentioned_targets:
            env["mentioned_user_ids"] = list(content.mentioned_targets)
        return env

    def submit(
        self, user_id: int, device: str, body: dict[str, Any], origin: object | None
    ) -> dict[str, Any]:
        """``sync/submit``: the same commit as MS, answered as ClientSubmitResponse."""
        local_id = body["local_message_id"]
        channel = self.member_channel(user_id, body["channel_id"])
        if body.get("channel_type") and body["channel_type"] != channel.channel_type:
            raise _bad("channel_type does not match the channel")
        server_pts = self.store.current_pts(channel.channel_id)
        value = body.get("payload")
        if isinstance(value, dict):
            text = value.get("text", value.get("content"))
            env = dict(value)
            env["content"] = text if isinstance(text, str) else json.dumps(value)
        elif isinstance(value, str):
            env = {"content": value}
        else:
            env = {"content": json.dumps(value)}
        command = str(body.get("command_type") or "text")
        message_type = CONTENT_TYPE_IDS.get(command, 0)
        payload = json.dumps(env, separators=(",", ":"), ensure_ascii=False).encode()
        result, duplicate = self.send(
            user_id, device, channel, local_id, message_type, payload, b"", False, origin
        )
        last_pts = body.get("last_pts", 0)
        return {
            "decision": "accepted",
            "pts": result.pts,
            "server_msg_id": result.message_id,
            "server_timestamp": result.timestamp,
            "local_message_id": local_id,
            "has_gap": last_pts < max(server_pts - 1, 0),
            "current_pts": result.pts - 1 if duplicate else server_pts,
        }

    # ---- typing ------------------------------------------------------------------------
    def typing(
        self,
        user_id: int,
        channel_id: int,
        channel_type: int,
        is_typing: bool,
        action: str,
        origin: object | None,
    ) -> None:
        channel = self.member_channel(user_id, channel_id)
        if channel_type and channel_type != channel.channel_type:
            raise _bad("channel_type does not match the channel")
        now = time.monotonic()
        key = (user_id, channel_id)
        last = self._typing.get(key)
        if last is not None and now - last < self.settings.typing_interval:
            return  # over the rate: still OK, not broadcast (PrivChat behaviour)
        if len(self._typing) > 100_000:
            self._typing.clear()
        self._typing[key] = now
        ts = int(time.time())
        note = {
            "user_id": user_id,
            "username": None,
            "channel_id": channel_id,
            "channel_type": channel.channel_type,
            "is_typing": is_typing,
            "action_type": action,
            "timestamp": ts,
        }
        body = pb.PublishRequest(
            channel_id=channel_id,
            topic="typing",
            timestamp=ts,
            payload=json.dumps(note, separators=(",", ":")).encode(),
            publisher=str(user_id),
        ).SerializeToString()
        self.delivery.publish(channel_id, body, origin)

"""The in-memory store: plain dicts and lists, no IO (``--memory-only``).

It implements every interface of ``service.ports`` and passes ``tests/store_contract.py``.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from ..service.model import (
    DIRECT,
    FILE_PENDING,
    GROUP,
    JOIN_APPROVED,
    JOIN_PENDING,
    JOIN_REJECTED,
    KIND_MESSAGE,
    KIND_REVOKE,
    ROLE_MEMBER,
    ROLE_OWNER,
    Broadcast,
    BroadcastPost,
    Channel,
    ChannelPrefs,
    DedupEntry,
    DeviceRecord,
    FileRecord,
    FriendRequest,
    GroupQR,
    JoinRequest,
    Member,
    QRCode,
    Record,
    User,
)
from ..service.ports import FILE_FIELDS, GROUP_FIELDS, Store
from .sharded import SHARDS, ShardedMap

__all__ = ["MemoryStore"]

FIRST_USER_ID = 100_000_000
FIRST_CHANNEL_ID = 1_000
FIRST_FILE_ID = 1
#: what a record costs this store beyond its payload and content (the compiled Record, its log
#: slot and index entry, two bytes headers): measured ~280 bytes per 1,000-byte message
#: (``python -m benchmarks.bounds stored``); counted in ``user_bytes``
RECORD_BYTES = 256


class MemoryStore(Store):
    def __init__(self) -> None:
        self.epoch = secrets.token_hex(8)
        self._users: dict[int, User] = {}
        self._logins: dict[str, int] = {}
        self._next_user = FIRST_USER_ID
        self._revoked: dict[str, int] = {}
        self._channels: dict[int, Channel] = {}
        self._directs: dict[tuple[int, int], int] = {}
        self._user_channels: dict[int, dict[int, None]] = {}
        self._next_channel = FIRST_CHANNEL_ID
        self._logs: dict[int, list[Record]] = {}
        # the two per-message indexes are sharded: one big dict's resize stalls every session
        self._by_message: ShardedMap[int, Record] = ShardedMap()
        self._dedup: ShardedMap[tuple[int, str, int], DedupEntry] = ShardedMap()
        # their shard lists, indexed by the hot path (``commit``, ``dedup_get/put``)
        self._message_shards = self._by_message.shards
        self._dedup_shards = self._dedup.shards
        self._acks: dict[tuple[int, str], dict[int, int]] = {}
        # entity versions: family -> (entity_id -> (version, deleted)), kept in version order
        self._entities: dict[str, dict[str, tuple[int, bool]]] = {}
        self._entity_versions: dict[str, int] = {}
        self._user_bytes: dict[int, int] = {}
        # accounts and contacts
        self._phones: dict[str, int] = {}
        self._docs: dict[tuple[int, str], dict[str, Any]] = {}
        self._requests: dict[int, dict[int, FriendRequest]] = {}  # to -> from -> request
        self._friends: dict[int, dict[int, int]] = {}  # user -> friend -> since
        self._blocked: dict[int, dict[int, int]] = {}  # user -> blocked -> when
        self._qrcodes: dict[str, QRCode] = {}
        self._qr_by_creator: dict[int, dict[str, None]] = {}
        self._searches: dict[int, tuple[int, int, int]] = {}
        self._revokes: dict[int, int] = {}  # channel -> revoke events in its log
        self._user_acks: dict[tuple[int, int], int] = {}  # (user, channel) -> highest cursor
        self._join_requests: dict[int, JoinRequest] = {}
        self._pending_joins: dict[int, dict[int, None]] = {}  # group -> pending request ids
        self._next_join_request = 1
        self._group_qrs: dict[str, GroupQR] = {}
        self._reads: dict[tuple[int, int], tuple[int, int]] = {}
        self._reactions: dict[int, dict[str, dict[int, None]]] = {}
        # channel preferences and broadcast channels
        self._prefs: dict[tuple[int, int], ChannelPrefs] = {}
        self._direct_sources: dict[int, tuple[str, str]] = {}
        self._broadcasts: dict[int, Broadcast] = {}  # in creation order
        self._posts: dict[int, list[BroadcastPost]] = {}  # channel -> posts, oldest first
        self._next_post = 1
        # files and devices
        self._files: dict[int, FileRecord] = {}
        self._next_file = FIRST_FILE_ID
        self._devices: dict[int, dict[str, DeviceRecord]] = {}  # user -> device -> record
        self._last_seen: dict[int, int] = {}

    # users ------------------------------------------------------------------
    def create_user(
        self,
        username: str,
        password_hash: str,
        nickname: str,
        phone: str | None,
        email: str | None,
        now_ms: int,
    ) -> User:
        user = User(
            self._next_user, username, password_hash, nickname, phone, email, created_at=now_ms
        )
        self._next_user += 1
        self._users[user.user_id] = user
        self._logins[username.lower()] = user.user_id
        if email:
            self._logins.setdefault(email.lower(), user.user_id)
        if phone:
            self._phones.setdefault(phone, user.user_id)
        return user

    def get_user(self, user_id: int) -> User | None:
        return self._users.get(user_id)

    def find_user(self, login: str) -> User | None:
        uid = self._logins.get(login)
        return None if uid is None else self._users[uid]

    def revoke_token(self, jti: str, expires_at: int) -> None:
        self._revoked[jti] = expires_at

    def is_token_revoked(self, jti: str) -> bool:
        return jti in self._revoked

    # channels ---------------------------------------------------------------
    def _new_channel_id(self) -> int:
        cid = self._next_channel
        self._next_channel += 1
        return cid

    def _index(self, channel: Channel) -> None:
        self._channels[channel.channel_id] = channel
        self._logs[channel.channel_id] = []
        for uid in channel.members:
            self._user_channels.setdefault(uid, {})[channel.channel_id] = None

    def get_channel(self, channel_id: int) -> Channel | None:
        return self._channels.get(channel_id)

    def get_or_create_direct(self, user_a: int, user_b: int, now_ms: int) -> tuple[Channel, bool]:
        key = (user_a, user_b) if user_a <= user_b else (user_b, user_a)
        cid = self._directs.get(key)
        if cid is not None:
            return self._channels[cid], False
        members = {uid: Member(uid, ROLE_MEMBER, now_ms) for uid in key}
        channel = Channel(self._new_channel_id(), DIRECT, now_ms, members, updated_at=now_ms)
        self._directs[key] = channel.channel_id
        self._index(channel)
        return channel, True

    def create_group(
        self,
        owner_id: int,
        name: str,
        description: str | None,
        member_ids: Iterable[int],
        now_ms: int,
        max_members: int,
    ) -> Channel:
        members = {owner_id: Member(owner_id, ROLE_OWNER, now_ms)}
        for uid in member_ids:
            members.setdefault(uid, Member(uid, ROLE_MEMBER, now_ms))
        channel = Channel(
            self._new_channel_id(),
            GROUP,
            now_ms,
            members,
            name=name,
            description=description,
            owner_id=owner_id,
            updated_at=now_ms,
            max_members=max_members,
        )
        self._index(channel)
        return channel

    def add_member(self, channel_id: int, user_id: int, role: int, now_ms: int) -> Member:
        channel = self._channels[channel_id]
        member = Member(user_id, role, now_ms, join_pts=self.current_pts(channel_id))
        channel.members[user_id] = member
        channel.updated_at = now_ms
        self._user_channels.setdefault(user_id, {})[channel_id] = None
        return member

    def remove_member(self, channel_id: int, user_id: int) -> None:
        channel = self._channels[channel_id]
        channel.members.pop(user_id, None)
        chans = self._user_channels.get(user_id)
        if chans is not None:
            chans.pop(channel_id, None)

    def user_channels(self, user_id: int) -> list[int]:
        return list(self._user_channels.get(user_id, ()))

    # log ----------------------------------------------------------------------
    def commit(self, record: Record) -> Record:
        log = self._logs[record.channel_id]
        record.pts = len(log) + 1
        log.append(record)
        sender = record.sender_id  # ``_count_bytes``, inline (the MS hot path)
        user_bytes = self._user_bytes
        user_bytes[sender] = (
            user_bytes.get(sender, 0) + len(record.payload) + len(record.content) + RECORD_BYTES
        )
        kind = record.kind
        if kind == KIND_MESSAGE:
            mid = record.message_id
            self._message_shards[hash(mid) % SHARDS][mid] = record
        elif kind == KIND_REVOKE:
            self._revokes[record.channel_id] = self._revokes.get(record.channel_id, 0) + 1
        return record

    def message_count(self, channel_id: int) -> int:
        return self.current_pts(channel_id) - self._revokes.get(channel_id, 0)

    def current_pts(self, channel_id: int) -> int:
        log = self._logs.get(channel_id)
        return 0 if log is None else len(log)

    def read_log(self, channel_id: int, after_pts: int, limit: int) -> list[Record]:
        log = self._logs.get(channel_id)
        if not log or after_pts < 0:
            return []
        # pts == index + 1, so the slice is direct
        return log[after_pts : after_pts + limit]

    def user_bytes(self, user_id: int) -> int:
        return self._user_bytes.get(user_id, 0)

    def _count_bytes(self, record: Record) -> None:
        sender = record.sender_id
        user_bytes = self._user_bytes
        user_bytes[sender] = (
            user_bytes.get(sender, 0) + len(record.payload) + len(record.content) + RECORD_BYTES
        )

    def find_message(self, channel_id: int, message_id: int) -> Record | None:
        record = self._by_message.get(message_id)
        if record is None or (channel_id and record.channel_id != channel_id):
            return None
        return record

    def mark_revoked(self, channel_id: int, message_id: int, by: int, now_ms: int) -> Record:
        record = self._by_message[message_id]
        record.revoked = True
        record.revoked_by = by
        record.revoked_at = now_ms
        return record

    # dedup ------------------------------------------------------------------------
    def dedup_get(self, sender: int, device: str, local_id: int) -> DedupEntry | None:
        key = (sender, device, local_id)
        return self._dedup_shards[hash(key) % SHARDS].get(key)

    def dedup_put(self, sender: int, device: str, local_id: int, entry: DedupEntry) -> None:
        key = (sender, device, local_id)
        self._dedup_shards[hash(key) % SHARDS][key] = entry

    def dedup_sweep(self, older_than: int) -> int:
        # one shard per call: entries are inserted in time order, so the expired ones lead
        return self._dedup.sweep_shard(lambda entry: entry.timestamp < older_than)

    # acks -------------------------------------------------------------------------
    def get_ack(self, user_id: int, device_id: str, channel_id: int) -> int:
        acks = self._acks.get((user_id, device_id))
        return 0 if acks is None else acks.get(channel_id, 0)

    def set_ack(self, user_id: int, device_id: str, channel_id: int, pts: int) -> None:
        acks = self._acks.setdefault((user_id, device_id), {})
        if pts > acks.get(channel_id, 0):
            acks[channel_id] = pts
            key = (user_id, channel_id)
            if pts > self._user_acks.get(key, 0):
                self._user_acks[key] = pts

    def get_user_ack(self, user_id: int, channel_id: int) -> int:
        return self._user_acks.get((user_id, channel_id), 0)

    # groups: settings, roles, mutes, the end --------------------------------------
    def update_group(self, channel_id: int, changes: Mapping[str, object], now_ms: int) -> Channel:
        unknown = set(changes) - GROUP_FIELDS
        if unknown:
            raise KeyError(sorted(unknown)[0])
        channel = self._channels[channel_id]
        for key, value in changes.items():
            setattr(channel, key, value)
        channel.updated_at = now_ms
        return channel

    def set_member_role(self, channel_id: int, user_id: int, role: int, now_ms: int) -> None:
        channel = self._channels[channel_id]
        channel.members[user_id].role = role
        channel.updated_at = now_ms

    def set_member_mute(self, channel_id: int, user_id: int, mute_until: int) -> None:
        self._channels[channel_id].members[user_id].mute_until = mute_until

    def dissolve_group(self, channel_id: int, now_ms: int) -> None:
        channel = self._channels[channel_id]
        for uid in list(channel.members):
            self.remove_member(channel_id, uid)
        channel.dissolved = True
        channel.updated_at = now_ms

    # join requests and QR codes ---------------------------------------------------
    def add_join_request(
        self,
        group_id: int,
        user_id: int,
        inviter_id: int,
        qr_key: str,
        message: str | None,
        now_ms: int,
        expires_at: int,
    ) -> JoinRequest:
        req = JoinRequest(
            self._next_join_request,
            group_id,
            user_id,
            inviter_id,
            qr_key,
            message,
            now_ms,
            expires_at,
        )
        self._next_join_request += 1
        self._join_requests[req.request_id] = req
        self._pending_joins.setdefault(group_id, {})[req.request_id] = None
        return req

    def get_join_request(self, request_id: int) -> JoinRequest | None:
        return self._join_requests.get(request_id)

    def pending_join_requests(self, group_id: int, limit: int) -> list[JoinRequest]:
        out: list[JoinRequest] = []
        for rid in self._pending_joins.get(group_id, ()):
            if len(out) >= limit:
                break
            out.append(self._join_requests[rid])
        return out

    def resolve_join_request(
        self, request_id: int, approved: bool, by: int, now_ms: int
    ) -> JoinRequest:
        req = self._join_requests[request_id]
        req.status = JOIN_APPROVED if approved else JOIN_REJECTED
        req.handled_by = by
        req.handled_at = now_ms
        pending = self._pending_joins.get(req.group_id)
        if pending is not None:
            pending.pop(request_id, None)
        return req

    def put_group_qr(self, qr: GroupQR) -> None:
        self._group_qrs[qr.qr_key] = qr

    def get_group_qr(self, qr_key: str) -> GroupQR | None:
        return self._group_qrs.get(qr_key)

    def _load_join_request(self, req: JoinRequest) -> None:
        self._join_requests[req.request_id] = req
        if req.status == JOIN_PENDING:
            self._pending_joins.setdefault(req.group_id, {})[req.request_id] = None
        self._next_join_request = max(self._next_join_request, req.request_id + 1)

    # read positions -----------------------------------------------------------------
    def set_read_pts(self, user_id: int, channel_id: int, pts: int, now_ms: int) -> bool:
        key = (user_id, channel_id)
        if pts <= self._reads.get(key, (0, 0))[0]:
            return False
        self._reads[key] = (pts, now_ms)
        return True

    def get_read(self, user_id: int, channel_id: int) -> tuple[int, int]:
        return self._reads.get((user_id, channel_id), (0, 0))

    # reactions ------------------------------------------------------------------------
    def add_reaction(self, message_id: int, emoji: str, user_id: int, now_ms: int) -> bool:
        users = self._reactions.setdefault(message_id, {}).setdefault(emoji, {})
        if user_id in users:
            return False
        users[user_id] = None
        return True

    def remove_reaction(self, message_id: int, emoji: str, user_id: int) -> bool:
        by_emoji = self._reactions.get(message_id)
        users = None if by_emoji is None else by_emoji.get(emoji)
        if users is None or user_id not in users:
            return False
        del users[user_id]
        if not users:
            del by_emoji[emoji]  # type: ignore[union-attr]
        return True

    def reactions(self, message_id: int) -> dict[str, list[int]]:
        by_emoji = self._reactions.get(message_id, {})
        return {emoji: list(users) for emoji, users in by_emoji.items() if users}

    # entity versions -----------------------------------------------------------
    def bump_entity(self, family: str, entity_id: str, deleted: bool = False) -> int:
        version = self._entity_versions.get(family, 0) + 1
        self._entity_versions[family] = version
        items = self._entities.setdefault(family, {})
        items.pop(entity_id, None)  # re-inserted last: the dict stays in version order
        items[entity_id] = (version, deleted)
        return version

    def entities_since(
        self, family: str, since_version: int, limit: int
    ) -> list[tuple[str, int, bool]]:
        items = self._entities.get(family)
        if not items or limit <= 0:
            return []
        newer: list[tuple[str, int, bool]] = []
        for entity_id, (version, deleted) in reversed(items.items()):
            if version <= since_version:
                break
            newer.append((entity_id, version, deleted))
        newer.reverse()
        return newer[:limit]

    def entity_version(self, family: str) -> int:
        return self._entity_versions.get(family, 0)

    def entity_of(self, family: str, entity_id: str) -> tuple[int, bool] | None:
        return self._entities.get(family, {}).get(entity_id)

    # profiles --------------------------------------------------------------------
    def update_user(self, user_id: int, nickname: str | None, avatar_url: str | None) -> User:
        user = self._users[user_id]
        if nickname is not None:
            user.nickname = nickname
        if avatar_url is not None:
            user.avatar_url = avatar_url
        return user

    def find_by_phone(self, phone: str) -> User | None:
        uid = self._phones.get(phone)
        return None if uid is None else self._users.get(uid)

    def get_doc(self, user_id: int, kind: str) -> dict[str, Any]:
        return self._docs.get((user_id, kind), {})

    def put_doc(self, user_id: int, kind: str, doc: dict[str, Any]) -> None:
        self._docs[(user_id, kind)] = dict(doc)
        self.contacts_version += 1

    # friends and blacklists ------------------------------------------------------
    def put_friend_request(self, request: FriendRequest) -> None:
        inbox = self._requests.setdefault(request.to_user_id, {})
        inbox.pop(request.from_user_id, None)
        inbox[request.from_user_id] = request

    def get_friend_request(self, from_user_id: int, to_user_id: int) -> FriendRequest | None:
        return self._requests.get(to_user_id, {}).get(from_user_id)

    def delete_friend_request(self, from_user_id: int, to_user_id: int) -> None:
        inbox = self._requests.get(to_user_id)
        if inbox is not None:
            inbox.pop(from_user_id, None)

    def friend_requests_to(self, user_id: int) -> list[FriendRequest]:
        return list(self._requests.get(user_id, {}).values())

    def add_friends(self, user_a: int, user_b: int, now_ms: int) -> None:
        if self.friends_since(user_a, user_b) is not None:
            return
        self._friends.setdefault(user_a, {})[user_b] = now_ms
        self._friends.setdefault(user_b, {})[user_a] = now_ms
        self.contacts_version += 1

    def remove_friends(self, user_a: int, user_b: int) -> None:
        self._friends.get(user_a, {}).pop(user_b, None)
        self._friends.get(user_b, {}).pop(user_a, None)
        self.contacts_version += 1

    def friends_since(self, user_a: int, user_b: int) -> int | None:
        return self._friends.get(user_a, {}).get(user_b)

    def friends_of(self, user_id: int) -> list[tuple[int, int]]:
        return list(self._friends.get(user_id, {}).items())

    def block(self, user_id: int, target_id: int, now_ms: int) -> None:
        self._blocked.setdefault(user_id, {}).setdefault(target_id, now_ms)
        self.contacts_version += 1

    def unblock(self, user_id: int, target_id: int) -> None:
        self._blocked.get(user_id, {}).pop(target_id, None)
        self.contacts_version += 1

    def blocked_at(self, user_id: int, target_id: int) -> int | None:
        blocked = self._blocked.get(user_id)  # no empty dict per call: the MS send rule asks
        return None if blocked is None else blocked.get(target_id)

    def blacklist(self, user_id: int) -> list[tuple[int, int]]:
        return list(self._blocked.get(user_id, {}).items())

    # QR codes and search sessions ------------------------------------------------
    def put_qrcode(self, code: QRCode) -> None:
        self._qrcodes[code.qr_key] = code
        self._qr_by_creator.setdefault(code.creator_id, {})[code.qr_key] = None

    def get_qrcode(self, qr_key: str) -> QRCode | None:
        return self._qrcodes.get(qr_key)

    def qrcodes_of(self, creator_id: int) -> list[QRCode]:
        return [self._qrcodes[k] for k in self._qr_by_creator.get(creator_id, ())]

    def put_search_session(
        self, session_id: int, searcher_id: int, target_id: int, expires_at: int
    ) -> None:
        self._searches[session_id] = (searcher_id, target_id, expires_at)

    def get_search_session(self, session_id: int) -> tuple[int, int, int] | None:
        return self._searches.get(session_id)

    def sweep_search_sessions(self, now_ms: int) -> int:
        # put with one lifetime, so in expiry order: the expired ones lead
        old = []
        for k, v in self._searches.items():
            if v[2] >= now_ms:
                break
            old.append(k)
        for k in old:
            del self._searches[k]
        return len(old)

    # channel preferences --------------------------------------------------------
    def get_channel_prefs(self, user_id: int, channel_id: int) -> ChannelPrefs | None:
        return self._prefs.get((user_id, channel_id))

    def put_channel_prefs(self, prefs: ChannelPrefs) -> None:
        self._prefs[(prefs.user_id, prefs.channel_id)] = dataclasses.replace(prefs)

    def set_direct_source(self, channel_id: int, source: str, source_id: str) -> None:
        self._direct_sources.setdefault(channel_id, (source, source_id))

    def direct_source(self, channel_id: int) -> tuple[str, str] | None:
        return self._direct_sources.get(channel_id)

    # broadcast channels ---------------------------------------------------------
    def create_broadcast(
        self,
        owner_id: int,
        name: str,
        description: str | None,
        avatar_url: str | None,
        now_ms: int,
    ) -> Broadcast:
        bc = Broadcast(self._new_channel_id(), owner_id, name, description, avatar_url, now_ms)
        bc.subscribers[owner_id] = now_ms
        self._broadcasts[bc.channel_id] = bc
        self._posts[bc.channel_id] = []
        return bc

    def get_broadcast(self, channel_id: int) -> Broadcast | None:
        return self._broadcasts.get(channel_id)

    def list_broadcasts(self, offset: int, limit: int) -> list[Broadcast]:
        if offset < 0 or limit <= 0:
            return []
        ids = list(self._broadcasts)
        end = len(ids) - offset
        start = max(0, end - limit)
        return [self._broadcasts[i] for i in reversed(ids[start:end])] if end > 0 else []

    def broadcast_count(self) -> int:
        return len(self._broadcasts)

    def subscribe_broadcast(self, channel_id: int, user_id: int, now_ms: int) -> int:
        return self._broadcasts[channel_id].subscribers.setdefault(user_id, now_ms)

    def publish_post(
        self,
        channel_id: int,
        author_id: int,
        content: str,
        title: str | None,
        content_type: str,
        now_ms: int,
    ) -> BroadcastPost:
        post = BroadcastPost(
            self._next_post, channel_id, author_id, content, title, content_type, now_ms
        )
        self._next_post += 1
        self._posts.setdefault(channel_id, []).append(post)
        return post

    def posts(self, channel_id: int, offset: int, limit: int) -> list[BroadcastPost]:
        posts = self._posts.get(channel_id, [])
        if offset < 0 or limit <= 0:
            return []
        end = len(posts) - offset
        if end <= 0:
            return []
        return posts[max(0, end - limit) : end][::-1]

    def post_count(self, channel_id: int) -> int:
        return len(self._posts.get(channel_id, ()))

    # files ------------------------------------------------------------------------------
    def create_file(
        self,
        owner_id: int,
        filename: str,
        mime_type: str,
        file_type: str,
        business_type: str,
        max_size: int,
        token_hash: str,
        expires_at: int,
        now_ms: int,
    ) -> FileRecord:
        record = FileRecord(
            self._next_file,
            owner_id,
            filename,
            mime_type,
            file_type,
            business_type,
            max_size,
            token_hash,
            expires_at,
            now_ms,
            FILE_PENDING,
        )
        self._next_file += 1
        self._files[record.file_id] = record
        return record

    def get_file(self, file_id: int) -> FileRecord | None:
        return self._files.get(file_id)

    def update_file(self, file_id: int, changes: Mapping[str, object]) -> FileRecord:
        for key in changes:
            if key not in FILE_FIELDS:
                raise KeyError(key)
        record = self._files[file_id]
        for key, value in changes.items():
            setattr(record, key, value)
        return record

    # devices -----------------------------------------------------------------------------
    def put_device(self, device: DeviceRecord) -> None:
        self._devices.setdefault(device.user_id, {})[device.device_id] = device

    def get_device(self, user_id: int, device_id: str) -> DeviceRecord | None:
        return self._devices.get(user_id, {}).get(device_id)

    def devices_of(self, user_id: int) -> list[DeviceRecord]:
        return list(self._devices.get(user_id, {}).values())

    def delete_device(self, user_id: int, device_id: str) -> None:
        devices = self._devices.get(user_id)
        if devices is not None:
            devices.pop(device_id, None)
            if not devices:
                del self._devices[user_id]

    def set_last_seen(self, user_id: int, now_ms: int) -> None:
        if now_ms > self._last_seen.get(user_id, 0):
            self._last_seen[user_id] = now_ms

    def last_seen(self, user_id: int) -> int:
        return self._last_seen.get(user_id, 0)

    def flush(self) -> None:
        """Nothing to write: this store keeps everything in memory (``--memory-only``)."""

    def close(self) -> None:
        """Nothing to release."""

    def stats(self) -> dict[str, int]:
        return {
            "users": len(self._users),
            "channels": len(self._channels),
            "messages": len(self._by_message),
            "dedup_keys": len(self._dedup),
        }

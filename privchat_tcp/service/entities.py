"""``entity/sync_entities`` (reference 11.7): the families of versioned entities, what bumps
them (``EntityFeed``), and the paged read (``EntitySync``).

A *family* is one entity type as one viewer (or one channel) sees it; every change of an entity
gives it the family's next version (``ports.EntityLog``), a change that takes it out of view
gives it a tombstone. The families and who bumps them:

===================  ==============  =====================================================
family               entity_id       bumped when
===================  ==============  =====================================================
``friend:<uid>``     friend's uid    a friendship starts or ends (both sides)
``user:<uid>``       user id         the viewer registers (self), opens a direct channel
                                     (the peer), becomes or stops being a friend, a visible
                                     user's profile changes (friends, direct peers, fellow
                                     members of groups up to ``large_group_threshold``)
``group:<uid>``      group id        the viewer joins, leaves or is removed, the group
                                     changes or is dissolved
``channel:<uid>``    channel id      the viewer joins or leaves a channel, the channel
                                     changes, the viewer pins, mutes or hides it, the
                                     viewer's read position in it moves
``member:<cid>``     "<gid>:<uid>"   a member joins, leaves, or changes (role, mute)
``user_block:<uid>`` blocked uid     the viewer blocks or unblocks someone
``user_settings:``   setting key     the viewer's settings document changes; ``privacy``:
``<uid>``                            the viewer's privacy flags change
``reaction:<cid>``   "<mid>:<uid>:   a member adds or takes back a reaction (a tombstone)
                     <emoji>"
``read:<cid>``       "<cid>:<uid>"   a member's read position in the channel moves
``reads:<uid>``      channel id      the viewer's own read position in a channel moves
===================  ==============  =====================================================

A message does not bump anything (the hot path stays as it is): the ``message`` type of one
channel is its log, its version the pts (a message at the pts it was committed, a revoked one
again at its revoke's pts), and the ``last_msg_*`` fields of a channel's payload are read when
the page is built.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..errors import InvalidParams, NotChannelMember, NotGroupMember
from .model import DIRECT, GROUP, KIND_MESSAGE, KIND_REVOKE, Channel, ChannelPrefs, User
from .ports import (
    AccountStore,
    ChannelPrefsStore,
    ChannelStore,
    EntityLog,
    MessageLog,
    ProfileStore,
    ReactionStore,
    ReadStore,
    SocialStore,
)

__all__ = [
    "EntityFeed",
    "EntitySync",
    "EntityItem",
    "SyncPage",
    "SUPPORTED",
    "UNSUPPORTED_ENTITY",
    "PRIVACY_SETTING",
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "friend_family",
    "user_family",
    "group_family",
    "channel_family",
    "member_family",
    "block_family",
    "settings_family",
    "reaction_family",
    "read_family",
    "own_read_family",
    "parse_scope",
    "MESSAGE_TYPES",
]

#: the entity types served, in the reference's order (11.7, server 0.1) and the SDK's aliases
SUPPORTED = (
    "friend",
    "user",
    "group",
    "group_member",
    "channel",
    "user_settings",
    "user_block",
    "message",
    "message_status",
    "message_reaction",
)
ALIASES = {
    "blacklist": "user_block",
    "message_read_status": "message_status",
    "reaction": "message_reaction",
}
#: the message-level types: one channel's (a scope), except ``message_status`` (without a
#: scope: the viewer's own read positions)
MESSAGE_TYPES = ("message", "message_status", "message_reaction")
#: a ``message`` page holds about this many bytes of messages (at least one message)
MESSAGE_PAGE_BYTES = 1 << 20
_RECORD_FIELDS_BYTES = 64
#: the SDK skips an optional entity type on this substring (reference 11.7); the value the
#: client sent is not echoed (it is hostile input)
UNSUPPORTED_ENTITY = "不支持的 entity_type（当前支持 " + ", ".join(SUPPORTED) + "）"
#: the ``user_settings`` entity that carries the account's privacy flags (reserved: no
#: setting of ``account/settings/update`` has this key)
PRIVACY_SETTING = "privacy"
DEFAULT_LIMIT = 100
MAX_LIMIT = 200
#: a channel's ``unread_count`` is exact up to this many events after the read position (in
#: the store's memory window); past it, it is the number of events (an upper bound)
EXACT_UNREAD_MAX = 1000

_SCOPE_SPLIT = re.compile(r"[:/|,]")


def friend_family(user_id: int) -> str:
    return f"friend:{user_id}"


def user_family(user_id: int) -> str:
    return f"user:{user_id}"


def group_family(user_id: int) -> str:
    return f"group:{user_id}"


def channel_family(user_id: int) -> str:
    return f"channel:{user_id}"


def member_family(channel_id: int) -> str:
    return f"member:{channel_id}"


def block_family(user_id: int) -> str:
    return f"user_block:{user_id}"


def settings_family(user_id: int) -> str:
    return f"user_settings:{user_id}"


def reaction_family(channel_id: int) -> str:
    return f"reaction:{channel_id}"


def read_family(channel_id: int) -> str:
    return f"read:{channel_id}"


def own_read_family(user_id: int) -> str:
    return f"reads:{user_id}"


def parse_scope(scope: str | None) -> int:
    """The scope's id: its last integer token after splitting on ``: / | ,`` (reference 11.7,
    e.g. ``"2:1001"`` or ``"1001"``); 0 when there is none."""
    if not scope:
        return 0
    for token in reversed(_SCOPE_SPLIT.split(scope)):
        token = token.strip()
        if token.isascii() and token.isdigit() and len(token) <= 20:
            return int(token)
    return 0


class EntityFeed:
    """The one place the services bump entity versions."""

    def __init__(self, log: EntityLog | None) -> None:
        self._log = log  # None: versions are not kept (a service built without a store's log)

    def bump(self, family: str, entity_id: str, deleted: bool = False) -> int:
        return 0 if self._log is None else self._log.bump_entity(family, entity_id, deleted)

    def user_created(self, user_id: int) -> None:
        self.bump(user_family(user_id), str(user_id))

    def user_changed(
        self, user_id: int, viewers: Iterable[int], groups: Iterable[int] = ()
    ) -> None:
        """A user's profile changed: in their own view, in each viewer's (friends, direct
        peers: the ``user:<viewer>`` families) and, once per group, in the group's members
        (``member:<cid>``, which a scoped ``user`` sync reads)."""
        self.bump(user_family(user_id), str(user_id))
        for viewer in viewers:
            if viewer != user_id:
                self.bump(user_family(viewer), str(user_id))
        for cid in groups:
            self.bump(member_family(cid), f"{cid}:{user_id}")

    def privacy_changed(self, user_id: int) -> None:
        """The user's privacy flags changed: their ``user_settings`` entity ``privacy`` (the
        flags) and their own ``user`` entity, in their own view (other devices re-pull)."""
        self.bump(settings_family(user_id), PRIVACY_SETTING)
        self.bump(user_family(user_id), str(user_id))

    def channel_created(self, channel: Channel) -> None:
        cid = channel.channel_id
        members = list(channel.members)
        for uid in members:
            self.bump(channel_family(uid), str(cid))
            if channel.channel_type == GROUP:
                self.bump(group_family(uid), str(cid))
            self.bump(member_family(cid), f"{cid}:{uid}")
        if channel.channel_type == DIRECT and len(members) == 2:
            a, b = members
            self.bump(user_family(a), str(b))
            self.bump(user_family(b), str(a))

    def member_joined(self, channel: Channel, user_id: int) -> None:
        cid = channel.channel_id
        self.bump(channel_family(user_id), str(cid))
        if channel.channel_type == GROUP:
            self.bump(group_family(user_id), str(cid))
        self.bump(member_family(cid), f"{cid}:{user_id}")

    def member_left(self, channel: Channel, user_id: int) -> None:
        cid = channel.channel_id
        self.bump(channel_family(user_id), str(cid), deleted=True)
        if channel.channel_type == GROUP:
            self.bump(group_family(user_id), str(cid), deleted=True)
        self.bump(member_family(cid), f"{cid}:{user_id}", deleted=True)

    def member_changed(self, channel: Channel, user_id: int) -> None:
        """A member's role or mute changed."""
        cid = channel.channel_id
        self.bump(member_family(cid), f"{cid}:{user_id}")

    def group_changed(self, channel: Channel) -> None:
        """The group's name, avatar, settings or owner changed: in every member's view."""
        cid = str(channel.channel_id)
        for uid in channel.members:
            self.bump(group_family(uid), cid)
            self.bump(channel_family(uid), cid)

    def group_dissolved(self, channel: Channel, former_members: Iterable[int]) -> None:
        cid = str(channel.channel_id)
        for uid in former_members:
            self.bump(group_family(uid), cid, deleted=True)
            self.bump(channel_family(uid), cid, deleted=True)

    def prefs_changed(self, user_id: int, channel_id: int) -> None:
        """The user pinned, muted or hid the channel."""
        self.bump(channel_family(user_id), str(channel_id))

    def friendship(self, user_a: int, user_b: int, ended: bool = False) -> None:
        """A friendship started or ended: each side's friend and user views."""
        for me, other in ((user_a, user_b), (user_b, user_a)):
            self.bump(friend_family(me), str(other), deleted=ended)
            self.bump(user_family(me), str(other))

    def blocked(self, user_id: int, target_id: int, unblocked: bool = False) -> None:
        """The viewer blocked (unblocked) someone: the ``user_block`` entity, and the target
        in the viewer's ``user`` view (its ``is_blocked``)."""
        self.bump(block_family(user_id), str(target_id), deleted=unblocked)
        self.bump(user_family(user_id), str(target_id))

    def reaction_changed(
        self, channel_id: int, message_id: int, user_id: int, emoji: str, removed: bool = False
    ) -> None:
        """A member reacted (or took the reaction back: a tombstone)."""
        self.bump(reaction_family(channel_id), f"{message_id}:{user_id}:{emoji}", removed)

    def read_moved(self, channel_id: int, user_id: int) -> None:
        """A member's read position moved: in the channel's readers, the member's own, and
        the member's ``channel`` entity (its ``unread_count``)."""
        self.bump(read_family(channel_id), f"{channel_id}:{user_id}")
        self.bump(own_read_family(user_id), str(channel_id))
        self.bump(channel_family(user_id), str(channel_id))

    def settings_changed(self, user_id: int, keys: Iterable[str], removed: bool = False) -> None:
        for key in keys:
            self.bump(settings_family(user_id), key, deleted=removed)


class EntityItem:
    """One item of a page: its id, version, whether it is a tombstone, and what it is (a
    model value for the view to render; None for a tombstone)."""

    __slots__ = ("entity_id", "version", "deleted", "value")

    def __init__(self, entity_id: str, version: int, deleted: bool, value: Any) -> None:
        self.entity_id = entity_id
        self.version = version
        self.deleted = deleted
        self.value = value


class SyncPage:
    __slots__ = ("entity_type", "items", "next_version", "has_more", "viewer")

    def __init__(
        self,
        entity_type: str,
        viewer: int,
        items: list[EntityItem],
        next_version: int,
        has_more: bool,
    ) -> None:
        self.entity_type = entity_type
        self.viewer = viewer
        self.items = items
        self.next_version = next_version
        self.has_more = has_more


class EntitySync:
    """The read side: one page of one family, each item checked against the live state (an
    entity the viewer no longer sees is a tombstone whatever its last bump said)."""

    def __init__(
        self,
        entities: EntityLog,
        accounts: AccountStore,
        channels: ChannelStore,
        social: SocialStore,
        profiles: ProfileStore,
        prefs: ChannelPrefsStore,
        log: MessageLog,
        reads: ReadStore,
        reactions: ReactionStore | None = None,
        page_bytes: int = MESSAGE_PAGE_BYTES,
    ) -> None:
        self._reactions = reactions
        self._page_bytes = page_bytes
        self._entities = entities
        self._accounts = accounts
        self._channels = channels
        self._social = social
        self._profiles = profiles
        self._prefs = prefs
        self._log = log
        self._reads = reads

    def sync(
        self, viewer: int, entity_type: str, since_version: int, scope: str | None, limit: int
    ) -> SyncPage:
        kind = self.kind(entity_type)
        if kind == "message":
            raise InvalidParams("message entities are paged by sync_messages")
        limit = DEFAULT_LIMIT if limit <= 0 else min(limit, MAX_LIMIT)
        scope_id = parse_scope(scope)
        if kind == "message_reaction" or (kind == "message_status" and scope_id):
            self._scoped_channel(viewer, kind, scope_id)
            family = (reaction_family if kind == "message_reaction" else read_family)(scope_id)
        elif kind == "message_status":
            family = own_read_family(viewer)
        elif kind == "group_member" or (kind == "user" and scope_id):
            if not scope_id:
                raise InvalidParams("group_member needs a scope: the group id")
            channel = self._channels.get_channel(scope_id)
            if channel is None or viewer not in channel.members:
                raise NotGroupMember("not a member of the scoped channel")
            family = member_family(scope_id)
        else:
            family = {
                "friend": friend_family,
                "user": user_family,
                "group": group_family,
                "channel": channel_family,
                "user_settings": settings_family,
                "user_block": block_family,
            }[kind](viewer)
        if since_version > self._entities.entity_version(family):
            since_version = 0  # a cursor from another store: a full sync
        if kind in ("channel", "group") and scope_id:
            # one channel (the SDK's ``sync_channel``): that entity of the viewer's family
            found = self._entities.entity_of(family, str(scope_id))
            rows = []
            if found is not None and found[0] > since_version:
                rows = [(str(scope_id), found[0], found[1])]
            has_more = False
        else:
            rows = self._entities.entities_since(family, since_version, limit + 1)
            has_more = len(rows) > limit
            rows = rows[:limit]
        items = []
        for entity_id, version, deleted in rows:
            value = None if deleted else self._resolve(viewer, kind, entity_id, scope_id)
            if kind == "user" and scope_id:  # a member of the scoped channel, as a user
                if value is None:
                    continue  # who left the channel is still a user: no tombstone
                entity_id = entity_id.partition(":")[2]
            items.append(EntityItem(entity_id, version, value is None, value))
        next_version = rows[-1][1] if rows else since_version
        return SyncPage(kind, viewer, items, next_version, has_more)

    @staticmethod
    def kind(entity_type: str) -> str:
        """The served type an ``entity_type`` (or its alias) names; 10100 with the message
        the SDK matches when none."""
        kind = ALIASES.get(entity_type, entity_type)
        if kind not in SUPPORTED:
            raise InvalidParams(UNSUPPORTED_ENTITY)
        return kind

    def _scoped_channel(self, viewer: int, kind: str, scope_id: int) -> Channel:
        """The channel a message-level type's scope names, the viewer a member of it."""
        if not scope_id:
            raise InvalidParams(f"{kind} needs a scope: the channel id")
        channel = self._channels.get_channel(scope_id)
        if channel is None or viewer not in channel.members or channel.dissolved:
            if channel is not None and channel.channel_type == GROUP:
                raise NotGroupMember("not a member of the scoped channel")
            raise NotChannelMember("not a member of the scoped channel")
        return channel

    async def sync_messages(
        self, viewer: int, since_version: int, scope: str | None, limit: int
    ) -> SyncPage:
        """The ``message`` type of one channel (the scope): its log after ``since_version``
        (a pts) and the viewer's join, at most ``limit`` records and about ``page_bytes`` of
        them (at least one). A message's version is its pts; a revoke event gives the revoked
        message again at the event's pts (each message once per page, at its latest). Old
        history is read off the loop (``load_log``)."""
        limit = DEFAULT_LIMIT if limit <= 0 else min(limit, MAX_LIMIT)
        channel = self._scoped_channel(viewer, "message", parse_scope(scope))
        cid = channel.channel_id
        current = self._log.current_pts(cid)
        if since_version > current:
            since_version = 0  # a cursor from another store: a full sync
        floor = channel.members[viewer].join_pts
        after = max(since_version, floor)
        if self._log.in_window(cid, after):
            records = self._log.read_log(cid, after, limit)
        else:
            records = await self._log.load_log(cid, after, limit)
        size = 0
        for i, record in enumerate(records):
            size += len(record.payload) + len(record.content) + _RECORD_FIELDS_BYTES
            if size > self._page_bytes and i:
                records = records[:i]
                break
        latest: dict[str, EntityItem] = {}
        for record in records:
            target = record
            if record.kind == KIND_REVOKE:
                found = self._log.find_message(cid, record.target_message_id)
                if found is None or found.pts <= floor:
                    continue  # a message the viewer never had
                target = found
            elif record.kind != KIND_MESSAGE:
                continue
            entity_id = str(target.message_id)
            latest.pop(entity_id, None)  # once, at its latest version
            latest[entity_id] = EntityItem(entity_id, record.pts, False, target)
        next_version = records[-1].pts if records else since_version
        has_more = bool(records) and records[-1].pts < current
        return SyncPage("message", viewer, list(latest.values()), next_version, has_more)

    # ---- the live state of one entity, None when the viewer does not see it ----------------
    def _resolve(self, viewer: int, kind: str, entity_id: str, scope_id: int) -> Any:
        if kind == "message_reaction":
            return self._reaction(viewer, entity_id, scope_id)
        if kind == "message_status":
            return self._read(viewer, entity_id, scope_id)
        if kind in ("group_member", "user") and scope_id:
            channel = self._channels.get_channel(scope_id)
            _, _, uid_text = entity_id.partition(":")
            if channel is None or not uid_text.isdigit():
                return None
            member = channel.members.get(int(uid_text))
            if member is None:
                return None
            if kind == "user":
                return self._accounts.get_user(member.user_id)
            return (channel, member)
        if kind == "user_settings":
            if entity_id == PRIVACY_SETTING:
                return (entity_id, self._profiles.get_doc(viewer, "privacy"))
            doc = self._profiles.get_doc(viewer, "settings")
            values = doc.get("values")
            if not isinstance(values, dict):
                return None
            return (entity_id, values[entity_id]) if entity_id in values else None
        if not entity_id.isdigit():
            return None
        ident = int(entity_id)
        if kind == "friend":
            since = self._social.friends_since(viewer, ident)
            user = self._accounts.get_user(ident)
            return None if since is None or user is None else (user, since)
        if kind == "user_block":
            at = self._social.blocked_at(viewer, ident)
            user = self._accounts.get_user(ident)
            return None if at is None or user is None else (user, at)
        if kind == "user":
            return self._accounts.get_user(ident)
        channel = self._channels.get_channel(ident)
        if channel is None or viewer not in channel.members or channel.dissolved:
            return None
        if kind == "group":
            return channel if channel.channel_type == GROUP else None
        return channel  # "channel"

    def _reaction(self, viewer: int, entity_id: str, channel_id: int) -> Any:
        """(channel, message, user id, emoji) while the reaction holds and the message is in
        the viewer's history."""
        mid_text, _, rest = entity_id.partition(":")
        uid_text, _, emoji = rest.partition(":")
        channel = self._channels.get_channel(channel_id)
        if self._reactions is None or channel is None or viewer not in channel.members:
            return None
        if not (mid_text.isdigit() and uid_text.isdigit()):
            return None
        record = self._log.find_message(channel_id, int(mid_text))
        if record is None or record.pts <= channel.members[viewer].join_pts:
            return None
        uid = int(uid_text)
        if uid not in self._reactions.reactions(record.message_id).get(emoji, ()):
            return None
        return (channel, record, uid, emoji)

    def _read(self, viewer: int, entity_id: str, scope_id: int) -> Any:
        """(channel, reader, read pts, read_at ms, the message at that pts or None): a
        member's position (scoped: ``"<cid>:<uid>"``; the viewer's own: the channel id)."""
        if scope_id:
            _, _, uid_text = entity_id.partition(":")
            cid = scope_id
        else:
            uid_text, cid = str(viewer), int(entity_id) if entity_id.isdigit() else 0
        channel = self._channels.get_channel(cid)
        if channel is None or not uid_text.isdigit() or viewer not in channel.members:
            return None
        reader = int(uid_text)
        if reader not in channel.members:
            return None
        pts, at = self._reads.get_read(reader, cid)
        if not pts:
            return None
        found = None
        if self._log.in_window(cid, pts - 1):
            at_pts = self._log.read_log(cid, pts - 1, 1)
            if at_pts and at_pts[0].kind == KIND_MESSAGE:
                found = at_pts[0]
        return (channel, reader, pts, at, found)

    # ---- what the channel view reads --------------------------------------------------------
    def prefs(self, viewer: int, channel_id: int) -> ChannelPrefs | None:
        return self._prefs.get_channel_prefs(viewer, channel_id)

    def user(self, user_id: int) -> User | None:
        return self._accounts.get_user(user_id)

    def unread(self, viewer: int, channel: Channel) -> int:
        """Unread messages after the viewer's read position (or their join), counted as
        ``message/status/count`` does (not its own, not revoked, no revoke events) while they
        are at most ``EXACT_UNREAD_MAX`` events in memory; past that, the number of events."""
        cid = channel.channel_id
        member = channel.members.get(viewer)
        read = self._reads.get_read(viewer, cid)[0]
        start = max(read, member.join_pts if member else 0)
        events = self._log.current_pts(cid) - start
        if events <= 0:
            return 0
        if events > EXACT_UNREAD_MAX or not self._log.in_window(cid, start):
            return events
        return sum(
            1
            for r in self._log.read_log(cid, start, events)
            if r.kind == KIND_MESSAGE and r.sender_id != viewer and not r.revoked
        )

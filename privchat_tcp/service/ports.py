"""What the services need from a store, one interface per concern, and from the session layer.

Every store implementation (``store/memory.py`` today; SQLite and a shared store next) inherits
the interfaces below and passes the one contract suite, ``tests/store_contract.py``. The
services know a store only through these; only the composition root (``app.py``) picks one.

The I/O decision (``docs/architecture.md``): the methods are synchronous and answer from a
working set the store keeps in memory, so that the hot path (MS, fan-out, MP of recent history)
never awaits. A store that persists applies a write to its working set at once and makes it
durable off the event loop, in batches; ``Durability.write_seq``/``when_durable`` let the
caller hold an acknowledgement until the write under it is durable. Reads that can miss the working
set (old history) have a ``load_*`` coroutine twin that a store answers off the loop.

General rules of every contract:

- Ids are positive integers the store allocates; it never reuses one, and an id stays unique
  for the life of the store (across restarts when it persists), so a token or a cursor that
  names an id cannot later name something else. ``epoch`` names the store: it changes only
  when a new, empty store is created.
- Values returned are the store's current view; the caller must not change them (the service
  goes through a store method for every change).
- ``now_ms`` arguments are unix milliseconds, passed in: no store reads the clock.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from .model import (
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

__all__ = [
    "AccountStore",
    "TokenStore",
    "ChannelStore",
    "MessageLog",
    "DedupStore",
    "CursorStore",
    "EntityLog",
    "ProfileStore",
    "SocialStore",
    "QRCodeStore",
    "SearchSessionStore",
    "GroupAdminStore",
    "GroupJoinStore",
    "ReadStore",
    "ReactionStore",
    "ChannelPrefsStore",
    "BroadcastStore",
    "FileStore",
    "DeviceStore",
    "FILE_FIELDS",
    "GROUP_FIELDS",
    "Durability",
    "Store",
    "Delivery",
]


class AccountStore(abc.ABC):
    """Users, and the logins (username, email) that find them."""

    @abc.abstractmethod
    def create_user(
        self,
        username: str,
        password_hash: str,
        nickname: str,
        phone: str | None,
        email: str | None,
        now_ms: int,
    ) -> User:
        """Create a user with a new id (ids increase). ``username`` and ``email`` become logins
        (lowered); the caller checked they are free. Atomic: the user and its logins appear
        together."""

    @abc.abstractmethod
    def get_user(self, user_id: int) -> User | None:
        """The user, or None if there is none with that id."""

    @abc.abstractmethod
    def find_user(self, login: str) -> User | None:
        """By username or email, case-insensitive (``login`` already trimmed and lowered)."""


class TokenStore(abc.ABC):
    """Revoked ids: of tokens (JWT ``jti``) and of logins (the ``lid`` claim that every token
    of one login shares; ``service/accounts.py``). Both are random hex strings in one set."""

    @abc.abstractmethod
    def revoke_token(self, jti: str, expires_at: int) -> None:
        """Remember ``jti`` as revoked until ``expires_at`` (unix seconds; after that the token
        is refused as expired anyway, so the store may forget it). Idempotent."""

    @abc.abstractmethod
    def is_token_revoked(self, jti: str) -> bool:
        """True once ``revoke_token(jti)`` was called (and until its expiry at least)."""


class ChannelStore(abc.ABC):
    """Channels (direct and group), their members and roles, and each user's channel list."""

    @abc.abstractmethod
    def get_channel(self, channel_id: int) -> Channel | None:
        """The channel with its members, or None."""

    @abc.abstractmethod
    def get_or_create_direct(self, user_a: int, user_b: int, now_ms: int) -> tuple[Channel, bool]:
        """The one direct channel of the pair (either order), created (True) if there was none.
        Both users are members; atomic: two calls never create two channels for a pair."""

    @abc.abstractmethod
    def create_group(
        self,
        owner_id: int,
        name: str,
        description: str | None,
        member_ids: Iterable[int],
        now_ms: int,
        max_members: int,
    ) -> Channel:
        """A new group: ``owner_id`` as owner, each of ``member_ids`` (the owner left out, each
        once) as member, all joined at ``now_ms``; its log starts empty (pts 0). Atomic."""

    @abc.abstractmethod
    def add_member(self, channel_id: int, user_id: int, role: int, now_ms: int) -> Member:
        """Add ``user_id`` (not yet a member) with ``role``; the channel appears in the user's
        ``user_channels``. The member's ``join_pts`` is the channel's pts at that moment (their
        history starts after it; 0 for the members a group is created with)."""

    @abc.abstractmethod
    def remove_member(self, channel_id: int, user_id: int) -> None:
        """Remove ``user_id`` from the channel and the channel from the user's list; a no-op
        for a non-member."""

    @abc.abstractmethod
    def user_channels(self, user_id: int) -> list[int]:
        """Ids of the channels ``user_id`` is a member of, in the order they were joined."""


class MessageLog(abc.ABC):
    """Each channel's log of committed events, numbered by pts."""

    @abc.abstractmethod
    def commit(self, record: Record) -> Record:
        """Append ``record`` to its channel's log and return the stored record, whose ``pts`` is
        the channel's previous pts + 1 (the ``pts`` passed in is ignored): no gap, no reuse.
        Atomic per channel; the record is visible to ``read_log`` when ``commit`` returns and
        is never changed afterwards, except by ``mark_revoked``."""

    @abc.abstractmethod
    def current_pts(self, channel_id: int) -> int:
        """The pts of the channel's last record; 0 for an empty log or an unknown channel."""

    @abc.abstractmethod
    def read_log(self, channel_id: int, after_pts: int, limit: int) -> list[Record]:
        """Up to ``limit`` records with pts > ``after_pts`` (exclusive), in pts order, with no
        gap; [] past the end, for ``after_pts`` < 0 or an unknown channel."""

    @abc.abstractmethod
    def find_message(self, channel_id: int, message_id: int) -> Record | None:
        """The message (kind 0) with ``message_id`` in that channel (``channel_id`` 0: in any
        channel); None if it is not there (a revoke event is not found by its own id)."""

    @abc.abstractmethod
    def mark_revoked(self, channel_id: int, message_id: int, by: int, now_ms: int) -> Record:
        """Mark a message revoked (by user ``by`` at ``now_ms``) and return it: the one change
        the log allows to a committed record. Its pts and place stay; later reads see
        ``revoked``. The caller checked it exists and is not revoked."""

    @abc.abstractmethod
    def message_count(self, channel_id: int) -> int:
        """How many messages (kind 0, revoked ones included) the channel's log holds: its pts
        less its revoke events; 0 for an unknown channel."""

    def in_window(self, channel_id: int, after_pts: int) -> bool:
        """Whether ``read_log(channel_id, after_pts, ...)`` answers from memory; when it does
        not, callers on the event loop use ``load_log`` instead."""
        return True

    @abc.abstractmethod
    def user_bytes(self, user_id: int) -> int:
        """Bytes the store holds for the records ``user_id`` committed as sender (messages and
        revoke events, in every channel): at least the payload and content of each, plus the
        store's own cost per record. A committed record counts from ``commit`` on, revoked or
        not (its record stays); 0 for a user who committed nothing. The per-user stored-bytes
        quota (``max_stored_bytes_per_user``) reads it on every send: O(1)."""

    async def load_log(self, channel_id: int, after_pts: int, limit: int) -> list[Record]:
        """``read_log`` for history that may be outside the working set, answered off the
        event loop by a store that keeps only recent records in memory. Same contract."""
        return self.read_log(channel_id, after_pts, limit)


class DedupStore(abc.ABC):
    """Idempotency keys of MS / ``sync/submit``: (sender, device, local_message_id)."""

    @abc.abstractmethod
    def dedup_get(self, sender: int, device: str, local_id: int) -> DedupEntry | None:
        """The entry stored for the key, or None (never stored, or swept)."""

    @abc.abstractmethod
    def dedup_put(self, sender: int, device: str, local_id: int, entry: DedupEntry) -> None:
        """Store the entry for the key (the first commit of that key). Entries are put in
        ``timestamp`` order."""

    @abc.abstractmethod
    def dedup_sweep(self, older_than: int) -> int:
        """Drop entries whose timestamp (unix ms) is before ``older_than``. A store may do it
        in steps, a part of its keys per call (the service calls it about once a second), so
        that no single call holds the event loop for long. Returns how many were dropped."""


class CursorStore(abc.ABC):
    """Delivery cursors: the pts each device has acknowledged, per channel."""

    @abc.abstractmethod
    def get_ack(self, user_id: int, device_id: str, channel_id: int) -> int:
        """The device's cursor in the channel; 0 when it never acknowledged."""

    @abc.abstractmethod
    def set_ack(self, user_id: int, device_id: str, channel_id: int, pts: int) -> None:
        """Move the cursor forward to ``pts``; a lower value leaves it where it is."""

    @abc.abstractmethod
    def get_user_ack(self, user_id: int, channel_id: int) -> int:
        """The highest cursor any device of the user has in the channel; 0 when none has."""


class EntityLog(abc.ABC):
    """Per-family monotonic versions for ``entity/sync_entities`` (reference 11.7).

    A family is a string naming one entity type in one scope, e.g. ``"friend:100000001"`` (the
    friends of that user) or ``"group:1002"``; the service builds the names. Every change of an
    entity bumps it to the family's next version; a delete leaves a tombstone (``deleted``)."""

    @abc.abstractmethod
    def bump_entity(self, family: str, entity_id: str, deleted: bool = False) -> int:
        """Give ``entity_id`` the family's next version (1 for the first; versions increase by
        one per bump, per family) and return it; its previous version is superseded."""

    @abc.abstractmethod
    def entities_since(
        self, family: str, since_version: int, limit: int
    ) -> list[tuple[str, int, bool]]:
        """Up to ``limit`` (entity_id, version, deleted) with version > ``since_version``
        (exclusive), in version order, each entity once (at its latest version)."""

    @abc.abstractmethod
    def entity_version(self, family: str) -> int:
        """The family's latest version; 0 if nothing was ever bumped."""

    @abc.abstractmethod
    def entity_of(self, family: str, entity_id: str) -> tuple[int, bool] | None:
        """(latest version, deleted) of one entity of the family; None if never bumped."""


class ProfileStore(abc.ABC):
    """What a user says about themself beyond the account: display fields, per-user documents
    (``kind`` "profile", "privacy", "settings"), and the phone numbers that find users."""

    @abc.abstractmethod
    def update_user(self, user_id: int, nickname: str | None, avatar_url: str | None) -> User:
        """Set the user's nickname and/or avatar URL (None: leave it) and return the user. The
        caller checked the user exists."""

    @abc.abstractmethod
    def find_by_phone(self, phone: str) -> User | None:
        """The user registered with exactly this phone number, or None."""

    @abc.abstractmethod
    def get_doc(self, user_id: int, kind: str) -> dict[str, Any]:
        """The user's document of that kind ({} if never put); the caller must not change it."""

    @abc.abstractmethod
    def put_doc(self, user_id: int, kind: str, doc: dict[str, Any]) -> None:
        """Replace the user's document of that kind (JSON values only)."""


class SocialStore(abc.ABC):
    """Friend requests, friendships (symmetric) and blacklists (one-way).

    ``contacts_version`` changes with every write of a friendship or a blacklist entry
    (``add_friends``, ``remove_friends``, ``block``, ``unblock``) and, in a store that is also
    the ``ProfileStore``, of a user document (``put_doc``: the privacy flags): a cache of
    rules read from them (the direct send rule, ``SocialService.check_send``) is valid while
    it has not changed."""

    contacts_version: int = 0

    @abc.abstractmethod
    def put_friend_request(self, request: FriendRequest) -> None:
        """Store the pending request from ``from_user_id`` to ``to_user_id``, replacing an
        earlier one of the same pair (which then counts as made last)."""

    @abc.abstractmethod
    def get_friend_request(self, from_user_id: int, to_user_id: int) -> FriendRequest | None:
        """The pending request of that pair (that direction), or None."""

    @abc.abstractmethod
    def delete_friend_request(self, from_user_id: int, to_user_id: int) -> None:
        """Forget the pending request of that pair; a no-op if there is none."""

    @abc.abstractmethod
    def friend_requests_to(self, user_id: int) -> list[FriendRequest]:
        """The pending requests to ``user_id``, in the order they were (last) made."""

    @abc.abstractmethod
    def add_friends(self, user_a: int, user_b: int, now_ms: int) -> None:
        """Make the pair friends (both ways) since ``now_ms``; a no-op if they are."""

    @abc.abstractmethod
    def remove_friends(self, user_a: int, user_b: int) -> None:
        """End the friendship (both ways); a no-op if there is none."""

    @abc.abstractmethod
    def friends_since(self, user_a: int, user_b: int) -> int | None:
        """When the pair became friends (the same either way round), or None."""

    @abc.abstractmethod
    def friends_of(self, user_id: int) -> list[tuple[int, int]]:
        """(friend id, since) of every friend, in the order they became friends."""

    @abc.abstractmethod
    def block(self, user_id: int, target_id: int, now_ms: int) -> None:
        """``user_id`` blacklists ``target_id`` (one way); blocking again keeps the first
        time."""

    @abc.abstractmethod
    def unblock(self, user_id: int, target_id: int) -> None:
        """Take ``target_id`` off ``user_id``'s blacklist; a no-op if not there."""

    @abc.abstractmethod
    def blocked_at(self, user_id: int, target_id: int) -> int | None:
        """When ``user_id`` blocked ``target_id``, or None (one way only)."""

    @abc.abstractmethod
    def blacklist(self, user_id: int) -> list[tuple[int, int]]:
        """(blocked id, when) of ``user_id``'s blacklist, in the order they were blocked."""


class QRCodeStore(abc.ABC):
    """QR codes and shared contact cards, by key."""

    @abc.abstractmethod
    def put_qrcode(self, code: QRCode) -> None:
        """Insert the code, or replace the stored code with the same ``qr_key`` (its
        changed fields: uses, revocation)."""

    @abc.abstractmethod
    def get_qrcode(self, qr_key: str) -> QRCode | None:
        """The code with that key (revoked or expired ones too), or None."""

    @abc.abstractmethod
    def qrcodes_of(self, creator_id: int) -> list[QRCode]:
        """Every code ``creator_id`` made, in the order they were first put."""


class SearchSessionStore(abc.ABC):
    """``search_session_id``s of ``account/search/query`` results: who found whom, until when."""

    @abc.abstractmethod
    def put_search_session(
        self, session_id: int, searcher_id: int, target_id: int, expires_at: int
    ) -> None:
        """Remember that ``searcher_id`` found ``target_id`` under ``session_id`` (unique, the
        caller's random id) until ``expires_at`` (unix ms)."""

    @abc.abstractmethod
    def get_search_session(self, session_id: int) -> tuple[int, int, int] | None:
        """(searcher, target, expires_at) of the session, or None (never put, or swept)."""

    @abc.abstractmethod
    def sweep_search_sessions(self, now_ms: int) -> int:
        """Forget sessions that expired before ``now_ms``; returns how many."""


#: the group fields ``GroupAdminStore.update_group`` may change
GROUP_FIELDS = frozenset(
    (
        "name",
        "description",
        "avatar_url",
        "owner_id",
        "all_muted",
        "max_members",
        "join_need_approval",
        "member_can_invite",
        "announcement",
    )
)


class GroupAdminStore(abc.ABC):
    """A group's settings, its members' roles and mutes, and its end."""

    @abc.abstractmethod
    def update_group(self, channel_id: int, changes: Mapping[str, object], now_ms: int) -> Channel:
        """Set the group fields named in ``changes`` (keys of ``GROUP_FIELDS``; another key is
        a ``KeyError`` and changes nothing) and ``updated_at`` to ``now_ms``; returns the
        group. The caller checked the values."""

    @abc.abstractmethod
    def set_member_role(self, channel_id: int, user_id: int, role: int, now_ms: int) -> None:
        """Give a member (the caller checked it is one) ``role``; ``updated_at`` becomes
        ``now_ms``. The member keeps its place in the member order."""

    @abc.abstractmethod
    def set_member_mute(self, channel_id: int, user_id: int, mute_until: int) -> None:
        """Set a member's ``mute_until`` (unix ms; 0 not muted, -1 until unmuted)."""

    @abc.abstractmethod
    def dissolve_group(self, channel_id: int, now_ms: int) -> None:
        """End a group: it has no members left and is ``dissolved`` from now on (its id is
        never reused; its log stays)."""


class GroupJoinStore(abc.ABC):
    """Join requests that wait for approval, and join QR codes."""

    @abc.abstractmethod
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
        """A new pending request with a new id (ids increase, never reused)."""

    @abc.abstractmethod
    def get_join_request(self, request_id: int) -> JoinRequest | None:
        """The request (pending or handled), or None."""

    @abc.abstractmethod
    def pending_join_requests(self, group_id: int, limit: int) -> list[JoinRequest]:
        """Up to ``limit`` of the group's pending requests, oldest first."""

    @abc.abstractmethod
    def resolve_join_request(
        self, request_id: int, approved: bool, by: int, now_ms: int
    ) -> JoinRequest:
        """Mark a pending request (the caller checked it is) approved or rejected by ``by`` at
        ``now_ms``; it leaves the pending list. Returns it."""

    @abc.abstractmethod
    def put_group_qr(self, qr: GroupQR) -> None:
        """Store a QR code under its ``qr_key`` (new: the caller made a random key)."""

    @abc.abstractmethod
    def get_group_qr(self, qr_key: str) -> GroupQR | None:
        """The QR code, or None (also past its expiry: the caller checks ``expires_at``)."""


class ReadStore(abc.ABC):
    """Read positions: the pts up to which each user has read each channel."""

    @abc.abstractmethod
    def set_read_pts(self, user_id: int, channel_id: int, pts: int, now_ms: int) -> bool:
        """Move the user's read position forward to ``pts`` (read at ``now_ms``); a lower or
        equal value changes nothing. True if it moved."""

    @abc.abstractmethod
    def get_read(self, user_id: int, channel_id: int) -> tuple[int, int]:
        """(read pts, unix ms it was set); (0, 0) when the user never read the channel."""


class ReactionStore(abc.ABC):
    """Emoji reactions to messages, by message id."""

    @abc.abstractmethod
    def add_reaction(self, message_id: int, emoji: str, user_id: int, now_ms: int) -> bool:
        """Record that ``user_id`` reacted ``emoji``; False (and no change) if it already had."""

    @abc.abstractmethod
    def remove_reaction(self, message_id: int, emoji: str, user_id: int) -> bool:
        """Take the reaction back; False if there was none."""

    @abc.abstractmethod
    def reactions(self, message_id: int) -> dict[str, list[int]]:
        """emoji -> the user ids that reacted with it, both in the order first added; an emoji
        nobody holds any more is left out."""


class ChannelPrefsStore(abc.ABC):
    """Per-user channel preferences (pin, mute, hide) and how a direct channel was opened."""

    @abc.abstractmethod
    def get_channel_prefs(self, user_id: int, channel_id: int) -> ChannelPrefs | None:
        """The user's preferences for the channel, or None if never put."""

    @abc.abstractmethod
    def put_channel_prefs(self, prefs: ChannelPrefs) -> None:
        """Replace the preferences of (``prefs.user_id``, ``prefs.channel_id``)."""

    @abc.abstractmethod
    def set_direct_source(self, channel_id: int, source: str, source_id: str) -> None:
        """Remember how a direct channel was first opened (PrivChat's ``create_source``); a
        second call for the same channel changes nothing (the first source stays)."""

    @abc.abstractmethod
    def direct_source(self, channel_id: int) -> tuple[str, str] | None:
        """(source, source_id) given when the channel was created, or None."""


class BroadcastStore(abc.ABC):
    """Broadcast channels, their subscribers and the content published to them."""

    @abc.abstractmethod
    def create_broadcast(
        self,
        owner_id: int,
        name: str,
        description: str | None,
        avatar_url: str | None,
        now_ms: int,
    ) -> Broadcast:
        """A new broadcast channel with a new id taken from the channel ids (never the id of
        a direct or group channel, never reused); the owner is its first subscriber."""

    @abc.abstractmethod
    def get_broadcast(self, channel_id: int) -> Broadcast | None:
        """The broadcast channel with its subscribers, or None."""

    @abc.abstractmethod
    def list_broadcasts(self, offset: int, limit: int) -> list[Broadcast]:
        """Up to ``limit`` broadcast channels from ``offset``, newest first."""

    @abc.abstractmethod
    def broadcast_count(self) -> int:
        """How many broadcast channels there are."""

    @abc.abstractmethod
    def subscribe_broadcast(self, channel_id: int, user_id: int, now_ms: int) -> int:
        """Subscribe the user (the caller checked the channel exists) and return when the
        subscription started: ``now_ms``, or the earlier time if already subscribed."""

    @abc.abstractmethod
    def publish_post(
        self,
        channel_id: int,
        author_id: int,
        content: str,
        title: str | None,
        content_type: str,
        now_ms: int,
    ) -> BroadcastPost:
        """Append content to the channel with a new ``content_id`` (ids increase across every
        channel, never reused)."""

    @abc.abstractmethod
    def posts(self, channel_id: int, offset: int, limit: int) -> list[BroadcastPost]:
        """Up to ``limit`` of the channel's posts from ``offset``, newest first."""

    @abc.abstractmethod
    def post_count(self, channel_id: int) -> int:
        """How many posts the channel has (0 for an unknown channel)."""


#: the file fields ``FileStore.update_file`` may change
FILE_FIELDS = frozenset(
    ("status", "size", "sha256", "access_hash", "uploaded_at", "width", "height", "expires_at")
)


class FileStore(abc.ABC):
    """Files: the upload token's terms, then what was stored (the bytes live in the data
    directory, named by the file id; the store keeps their metadata)."""

    @abc.abstractmethod
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
        """A new pending file (``FILE_PENDING``) with a new id (ids increase, never reused,
        across restarts when the store persists), created at ``now_ms``."""

    @abc.abstractmethod
    def get_file(self, file_id: int) -> FileRecord | None:
        """The file (in any status), or None."""

    @abc.abstractmethod
    def update_file(self, file_id: int, changes: Mapping[str, object]) -> FileRecord:
        """Set the fields named in ``changes`` (keys of ``FILE_FIELDS``; another key is a
        ``KeyError`` and changes nothing) of an existing file (the caller checked) and return
        it."""


class DeviceStore(abc.ABC):
    """Each user's devices (``DeviceRecord``) and when the user was last seen online."""

    @abc.abstractmethod
    def put_device(self, device: DeviceRecord) -> None:
        """Insert the device, or replace the stored one with the same (user, device id),
        which keeps its place in ``devices_of``."""

    @abc.abstractmethod
    def get_device(self, user_id: int, device_id: str) -> DeviceRecord | None:
        """The device, or None."""

    @abc.abstractmethod
    def devices_of(self, user_id: int) -> list[DeviceRecord]:
        """The user's devices, in the order they were first put."""

    @abc.abstractmethod
    def delete_device(self, user_id: int, device_id: str) -> None:
        """Forget the device; a no-op if there is none. Put again, it comes last."""

    @abc.abstractmethod
    def set_last_seen(self, user_id: int, now_ms: int) -> None:
        """The user was online at ``now_ms``; an earlier time leaves the stored one."""

    @abc.abstractmethod
    def last_seen(self, user_id: int) -> int:
        """When the user was last seen online (unix ms); 0 if never."""


class Durability(abc.ABC):
    """When writes are durable (PROTOCOL.md 7 and 9: flushed on shutdown; the lag is a metric).

    Writes are numbered as they are applied: ``write_seq`` is the number of the last write,
    ``durable_seq`` of the last one known durable, both read on the event loop's thread. A
    store that does not persist keeps both at 0. The session layer holds what a write
    acknowledges (or reveals, a push) until ``durable_seq`` reaches it (``when_durable``)."""

    epoch: str
    write_seq: int = 0
    durable_seq: int = 0
    #: run on the loop's thread what the store has reported since (writes durable), at once
    #: instead of on the loop's next turn; None when there is nothing to poll. The TCP layer
    #: calls it before each read it handles, so the replies a commit releases leave without
    #: waiting for the rest of the turn's reads
    poll: Callable[[], None] | None = None

    def when_durable(self, ticket: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on the event loop once ``durable_seq >= ticket`` (at once, in
        this call, if it is already). A write that fails is retried, not dropped: the callback
        waits for it (the store reports the failure in its metrics and log, and refuses new
        writes meanwhile with ``StorageUnavailable``)."""
        callback()

    def persistence_lag(self) -> float | None:
        """Seconds the oldest commit that is not yet durable has waited (0.0 when every commit
        is); None for a store that does not persist (the metric is then left out)."""
        return None

    @abc.abstractmethod
    def flush(self) -> None:
        """Return once every commit so far is durable. The server calls it on shutdown, after
        the last session has ended. A store that does not persist has nothing to write."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the store holds (files, connections); called once, after ``flush``."""

    def stats(self) -> dict[str, int]:
        """Sizes for metrics."""
        return {}

    def durability_stats(self) -> dict[str, float]:
        """Commit counters for metrics (a store that persists): commits, writes committed,
        seconds spent committing, the last and largest batch, writes pending, failing."""
        return {}

    def durability_histograms(self) -> dict[str, tuple[tuple[float, ...], list[int], float]]:
        """Histograms for metrics (a store that persists): name -> (upper bounds, counts per
        bucket with one more for over the last bound, sum of the observations); e.g. the
        latency of each commit and the writes in each batch."""
        return {}


class Store(
    AccountStore,
    TokenStore,
    ChannelStore,
    MessageLog,
    DedupStore,
    CursorStore,
    EntityLog,
    ProfileStore,
    SocialStore,
    QRCodeStore,
    SearchSessionStore,
    GroupAdminStore,
    GroupJoinStore,
    ReadStore,
    ReactionStore,
    ChannelPrefsStore,
    BroadcastStore,
    FileStore,
    DeviceStore,
    Durability,
):
    """Every concern at once: what the composition root hands to the services."""


class Delivery(Protocol):
    """What the services need from the session layer (one process today, a bus later).

    ``origin`` is the id of the session that caused the event (a value that can cross
    processes): it does not get its own event back."""

    def deliver(self, channel: Channel, record: Record, origin: str | None) -> None:
        """Push a committed record to every online, READY device of the channel's members."""

    def publish_typing(self, channel: Channel, note: dict[str, object], origin: str | None) -> None:
        """Send a typing notification to the channel's subscribers."""

    def online_devices(self, user_id: int) -> int:
        """How many sessions the user has."""

    def push_notice(
        self, user_ids: Iterable[int], channel: Channel, payload: bytes, origin: str | None
    ) -> None:
        """Push a notice that is in no log (a read receipt: ``from_uid`` 0, System, no pts)
        to the online, READY devices of ``user_ids`` but the origin session."""

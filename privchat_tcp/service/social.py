"""Contacts: privacy flags, friend requests and friendships, blacklists, the send rule of
direct channels, and the notices users receive in their system channel.

The rules only: stores through ``ports``, the clock passed in. Other services read two
functions of this module:

- ``PrivacyService.allows(viewer, target, what)``: whether ``target``'s privacy flag ``what``
  (one of ``PRIVACY_FLAGS``) lets ``viewer`` do that; the user themself and (for every flag
  but ``allow_add_by_group``) the target's friends always may.
- ``SocialService.check_send(sender, channel)``: the refusal of a direct message, called by
  ``MessageService.send`` (MS and ``sync/submit``): 20402 when the peer blocked the sender,
  20403 when the sender blocked the peer (reference section 8, and server 0.1's send
  handler), 10004 when the peer takes no messages from non-friends or is the system user.

Entity families bumped here, through ``EntityFeed`` (``service/entities.py``;
``entity/sync_entities`` reads them): a friendship's start and end bump ``friend:<uid>``
(the friend's id; a tombstone when it ends) and ``user:<uid>`` (the friend) for both users; a
block or unblock bumps ``user_block:<uid>`` (the blocked id; a tombstone on unblock) and
``user:<uid>`` (the target) of the blocker; a privacy change the user's ``user_settings``
entity ``privacy`` and their own ``user`` entity.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from ..config import Settings
from ..errors import ErrorCode, InvalidParams, ServiceError, UserNotFound
from .channels import ChannelService
from .entities import EntityFeed
from .ids import Snowflake
from .model import DIRECT, KIND_MESSAGE, SYSTEM_USER_ID, Channel, FriendRequest, Record, User
from .ports import (
    AccountStore,
    ChannelStore,
    Delivery,
    EntityLog,
    MessageLog,
    ProfileStore,
    QRCodeStore,
    SearchSessionStore,
    SocialStore,
)

__all__ = [
    "PRIVACY_FLAGS",
    "friend_family",
    "blacklist_family",
    "settings_family",
    "Notifier",
    "PrivacyService",
    "SocialService",
    "SOURCES",
]

#: how many allowed (sender, direct channel) pairs ``check_send`` remembers (then forgets all)
SEND_ALLOWED_MAX = 100_000

#: the account privacy flags of reference 7.1, all true by default (stored as ProfileStore
#: document kind "privacy", with ``updated_at`` in unix ms)
PRIVACY_FLAGS = (
    "allow_add_by_group",
    "allow_search_by_phone",
    "allow_search_by_username",
    "allow_search_by_email",
    "allow_search_by_qrcode",
    "allow_view_by_non_friend",
    "allow_receive_message_from_non_friend",
)

#: where a friend request (or a direct chat) may say it comes from (reference 7.2, 15.13)
SOURCES = ("search", "group", "card_share", "qrcode", "phone")

SYSTEM_MESSAGE_TYPE = 5  # ContentMessageType "system" (0.1.1 numbering)


def friend_family(user_id: int) -> str:
    return f"friend:{user_id}"


def blacklist_family(user_id: int) -> str:
    return f"user_block:{user_id}"


def settings_family(user_id: int) -> str:
    return f"user_settings:{user_id}"


class Notifier:
    """System messages and notices: ordinary messages from the system user (1) in the user's
    system channel (the direct channel of the pair (1, user)), so they are durable, counted in
    pts and reach offline devices like any message (reference 12.5: what server 0.1 does)."""

    def __init__(
        self,
        channels: ChannelStore,
        log: MessageLog,
        delivery: Delivery,
        ids: Snowflake,
        clock: Callable[[], int],
    ) -> None:
        self._channels = channels
        self._log = log
        self._delivery = delivery
        self._ids = ids
        self._clock = clock
        #: entity versions (``service/entities.py``), set by the composition of the services
        self.feed: EntityFeed | None = None

    def system_channel(self, user_id: int) -> Channel:
        channel, created = self._channels.get_or_create_direct(
            SYSTEM_USER_ID, user_id, self._clock()
        )
        if created and self.feed is not None:  # in the user's channel entities
            self.feed.channel_created(channel)
        return channel

    def system_message(self, user_id: int, text: str) -> Record:
        """A System message with ``text`` to ``user_id``."""
        return self._commit(user_id, {"content": text})

    def notify(
        self, user_id: int, text: str, notification_type: str, data: dict[str, Any]
    ) -> Record:
        """A notice (``{"message_type": "notification", "content", "metadata"}``, reference
        12.5); ``metadata`` holds ``notification_type`` (the snake_case ``type_str``), ``type``
        (the NotificationType variant) and the variant's fields."""
        variant = "".join(part.capitalize() for part in notification_type.split("_"))
        metadata = {"notification_type": notification_type, "type": variant, **data}
        return self._commit(
            user_id, {"message_type": "notification", "content": text, "metadata": metadata}
        )

    def _commit(self, user_id: int, envelope: dict[str, Any]) -> Record:
        channel = self.system_channel(user_id)
        now = self._clock()
        payload = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
        record = self._log.commit(
            Record(
                0,
                self._ids.next(now),
                channel.channel_id,
                DIRECT,
                SYSTEM_USER_ID,
                "",
                0,
                SYSTEM_MESSAGE_TYPE,
                now,
                payload,
                b"",
                False,
                KIND_MESSAGE,
            )
        )
        self._delivery.deliver(channel, record, None)
        return record


class PrivacyService:
    """The privacy flags of each user (document kind "privacy")."""

    def __init__(
        self,
        profiles: ProfileStore,
        social: SocialStore,
        clock: Callable[[], int],
        entities: EntityLog | None = None,
    ) -> None:
        self._profiles = profiles
        self._social = social
        self._clock = clock
        self._feed = EntityFeed(entities)

    def get(self, user_id: int) -> dict[str, Any]:
        """Every flag (defaults filled in) and ``updated_at`` (unix ms; the account's
        creation when never changed: 0 here, the caller fills it)."""
        doc = self._profiles.get_doc(user_id, "privacy")
        out: dict[str, Any] = {f: bool(doc.get(f, True)) for f in PRIVACY_FLAGS}
        out["updated_at"] = int(doc.get("updated_at", 0))
        return out

    def update(self, user_id: int, changes: Mapping[str, bool]) -> dict[str, Any]:
        for key in changes:
            if key not in PRIVACY_FLAGS:
                raise InvalidParams(f"unknown privacy flag: {key}")
        doc = self.get(user_id)
        doc.update(changes)
        doc["updated_at"] = self._clock()
        self._profiles.put_doc(user_id, "privacy", doc)
        self._feed.privacy_changed(user_id)
        return doc

    def allows(self, viewer: int, target: int, what: str) -> bool:
        """Whether ``target``'s flag ``what`` lets ``viewer`` do it. The target themself always
        may; a friend of the target may for every flag but ``allow_add_by_group`` (friends
        need no request)."""
        if viewer == target:
            return True
        doc = self._profiles.get_doc(target, "privacy")
        if doc.get(what, True):
            return True
        if what == "allow_add_by_group":
            return False
        return self._social.friends_since(viewer, target) is not None


class SocialService:
    """Friend requests, friendships and blacklists, and the rule of direct messages."""

    def __init__(
        self,
        settings: Settings,
        accounts: AccountStore,
        social: SocialStore,
        searches: SearchSessionStore,
        qrcodes: QRCodeStore,
        profiles: ProfileStore,
        entities: EntityLog,
        channels: ChannelService,
        privacy: PrivacyService,
        notifier: Notifier,
        clock: Callable[[], int],
    ) -> None:
        self.settings = settings
        self._accounts = accounts
        self._social = social
        self._searches = searches
        self._qrcodes = qrcodes
        self._profiles = profiles
        self._entities = entities
        self._feed = EntityFeed(entities)
        self.channels = channels
        self.privacy = privacy
        self.notifier = notifier
        self._clock = clock
        #: (sender, direct channel id) -> the ``contacts_version`` its message was allowed at
        self._send_allowed: dict[tuple[int, int], int] = {}

    # ---- lookups -------------------------------------------------------------------------------
    def user(self, user_id: int) -> User:
        user = self._accounts.get_user(user_id) if user_id != SYSTEM_USER_ID else None
        if user is None:
            raise UserNotFound()
        return user

    def is_friend(self, a: int, b: int) -> bool:
        return self._social.friends_since(a, b) is not None

    def is_blocked(self, user_id: int, target_id: int) -> bool:
        """Whether ``user_id`` blacklisted ``target_id`` (one way)."""
        return self._social.blocked_at(user_id, target_id) is not None

    # ---- the send rule -------------------------------------------------------------------------
    def check_send(self, sender: int, channel: Channel) -> None:
        """Refuse a message in a direct channel the peer does not take from ``sender``.

        An allowed (sender, channel) is remembered until the store's ``contacts_version``
        changes (a block, an unblock, a friendship, a privacy change): the next message
        after such a change is checked again (the MS hot path)."""
        if channel.channel_type != DIRECT:
            return
        key = (sender, channel.channel_id)
        version = self._social.contacts_version
        allowed = self._send_allowed
        if allowed.get(key) == version:
            return
        peer = sender
        for uid in channel.members:
            if uid != sender:
                peer = uid
        if peer != sender:
            self.check_contact(sender, peer)
        if len(allowed) >= SEND_ALLOWED_MAX:
            allowed.clear()
        allowed[key] = version

    def check_contact(self, sender: int, peer: int) -> None:
        """The refusal of ``sender`` writing to ``peer`` (a message, a direct chat)."""
        if peer == SYSTEM_USER_ID:
            raise ServiceError(ErrorCode.PERMISSION_DENIED, "the system user takes no messages")
        social = self._social
        if social.blocked_at(peer, sender) is not None:
            raise ServiceError(ErrorCode.BLOCKED_BY_USER, "you are blocked by this user")
        if social.blocked_at(sender, peer) is not None:
            raise ServiceError(ErrorCode.USER_IN_BLACKLIST, "this user is in your blacklist")
        if not self.privacy.allows(sender, peer, "allow_receive_message_from_non_friend"):
            raise ServiceError(
                ErrorCode.PERMISSION_DENIED, "this user takes messages from friends only"
            )

    def can_send(self, sender: int, peer: int) -> bool:
        if sender == peer:
            return False
        try:
            self.check_contact(sender, peer)
        except ServiceError:
            return False
        return True

    # ---- sources -------------------------------------------------------------------------------
    def check_source(
        self, user_id: int, target_id: int, source: str | None, source_id: str | None
    ) -> None:
        """Check where a friend request (or a direct chat) says it found ``target_id``
        (reference 15.13); no ``source``: nothing to check."""
        if source is None:
            return
        if source not in SOURCES:
            raise InvalidParams("source must be one of " + ", ".join(SOURCES))
        if not source_id:
            raise InvalidParams(f"source {source} needs a source_id")
        now = self._clock()
        if source == "search":
            sid = int(source_id) if source_id.isascii() and source_id.isdigit() else 0
            found = self._searches.get_search_session(sid) if 0 < sid < 1 << 63 else None
            if found is None or found[0] != user_id or found[1] != target_id or found[2] < now:
                raise InvalidParams("search_session_id is unknown or expired")
        elif source == "group":
            gid = int(source_id) if source_id.isascii() and source_id.isdigit() else 0
            group = self.channels.find_channel(gid) if 0 < gid < 1 << 63 else None
            if group is None or user_id not in group.members or target_id not in group.members:
                raise ServiceError(ErrorCode.PERMISSION_DENIED, "not both members of the group")
            if not self.privacy.allows(user_id, target_id, "allow_add_by_group"):
                raise ServiceError(
                    ErrorCode.GROUP_ADD_FRIEND_PERSONAL_DISABLED,
                    "this user does not allow being added via a group",
                )
        elif source in ("card_share", "qrcode"):
            code = self._qrcodes.get_qrcode(source_id)
            kind = "card" if source == "card_share" else "user"
            if (
                code is None
                or code.qr_type != kind
                or code.target_id != target_id
                or code.revoked_at
                or (code.expire_at and code.expire_at < now)
            ):
                raise InvalidParams(f"the {source} source_id is unknown or expired")
            if kind == "card":
                receiver = json.loads(code.metadata or "{}").get("receiver_id")
                if receiver != user_id:
                    raise ServiceError(
                        ErrorCode.PERMISSION_DENIED, "the card was not shared with you"
                    )
            elif not self.privacy.allows(user_id, target_id, "allow_search_by_qrcode"):
                raise ServiceError(ErrorCode.PERMISSION_DENIED, "not found by QR code")
        else:  # phone
            found_user = self._profiles.find_by_phone(source_id)
            if found_user is None or found_user.user_id != target_id:
                raise InvalidParams("the phone number does not name this user")
            if not self.privacy.allows(user_id, target_id, "allow_search_by_phone"):
                raise ServiceError(ErrorCode.PERMISSION_DENIED, "not found by phone")

    # ---- friends -------------------------------------------------------------------------------
    def apply(
        self,
        user_id: int,
        target_id: int,
        message: str | None,
        source: str | None,
        source_id: str | None,
    ) -> tuple[User, FriendRequest]:
        if target_id == user_id:
            raise InvalidParams("cannot befriend yourself")
        target = self.user(target_id)
        social = self._social
        if social.blocked_at(target_id, user_id) is not None:
            raise ServiceError(ErrorCode.BLOCKED_BY_USER, "you are blocked by this user")
        if social.blocked_at(user_id, target_id) is not None:
            raise ServiceError(ErrorCode.USER_IN_BLACKLIST, "this user is in your blacklist")
        if self.is_friend(user_id, target_id):
            raise ServiceError(ErrorCode.ALREADY_FRIENDS, "already friends")
        self.check_source(user_id, target_id, source, source_id)
        now = self._clock()
        request = FriendRequest(user_id, target_id, message, source, source_id, now)
        repeated = social.get_friend_request(user_id, target_id) is not None
        social.put_friend_request(request)
        if repeated:  # the target was told already: asking again is no new notice
            return target, request
        me = self.user(user_id)
        self.notifier.notify(
            target_id,
            f"{me.nickname or me.username} wants to be your friend",
            "friend_request_sent",
            {
                "request_id": user_id,
                "from_user_id": user_id,
                "to_user_id": target_id,
                "message": message or "",
            },
        )
        return target, request

    def accept(self, user_id: int, applicant_id: int) -> Channel:
        """Accept ``applicant_id``'s pending request: friends both ways, and their direct
        channel (created if there was none) is returned."""
        social = self._social
        if social.get_friend_request(applicant_id, user_id) is None:
            raise ServiceError(ErrorCode.FRIEND_REQUEST_EXPIRED, "no pending friend request")
        social.delete_friend_request(applicant_id, user_id)
        social.delete_friend_request(user_id, applicant_id)
        social.add_friends(user_id, applicant_id, self._clock())
        self._bump_friends(user_id, applicant_id, False)
        channel, _ = self.channels.direct(user_id, applicant_id)
        me = self.user(user_id)
        self.notifier.notify(
            applicant_id,
            f"{me.nickname or me.username} accepted your friend request",
            "friend_request_accepted",
            {
                "request_id": applicant_id,
                "user_id": user_id,
                "username": me.username,
                "avatar": me.avatar_url,
                "channel_id": channel.channel_id,
            },
        )
        return channel

    def reject(self, user_id: int, applicant_id: int) -> None:
        social = self._social
        if social.get_friend_request(applicant_id, user_id) is None:
            raise ServiceError(ErrorCode.FRIEND_REQUEST_EXPIRED, "no pending friend request")
        social.delete_friend_request(applicant_id, user_id)
        self.notifier.notify(
            applicant_id,
            "your friend request was declined",
            "friend_request_rejected",
            {"request_id": applicant_id, "user_id": user_id},
        )

    def remove(self, user_id: int, friend_id: int) -> None:
        if not self.is_friend(user_id, friend_id):
            raise ServiceError(ErrorCode.FRIEND_NOT_FOUND, "not friends")
        self._social.remove_friends(user_id, friend_id)
        self._bump_friends(user_id, friend_id, True)
        me = self.user(user_id)
        self.notifier.notify(  # FriendDeleted (reference 12.5): the one removed is told
            friend_id,
            f"{me.nickname or me.username} removed you from their friends",
            "friend_deleted",
            {"user_id": user_id, "username": me.username},
        )

    def pending(self, user_id: int) -> list[FriendRequest]:
        return self._social.friend_requests_to(user_id)

    def status(self, user_id: int, other_id: int) -> str | None:
        """ "accepted" (friends), "pending" (a request either way) or None."""
        if self.is_friend(user_id, other_id):
            return "accepted"
        social = self._social
        if (
            social.get_friend_request(user_id, other_id) is not None
            or social.get_friend_request(other_id, user_id) is not None
        ):
            return "pending"
        return None

    def friends(self, user_id: int) -> list[tuple[int, int]]:
        return self._social.friends_of(user_id)

    def _bump_friends(self, a: int, b: int, deleted: bool) -> None:
        """Each side's ``friend`` and ``user`` views (the per-viewer families)."""
        self._feed.friendship(a, b, ended=deleted)

    # ---- blacklist -----------------------------------------------------------------------------
    def block(self, user_id: int, target_id: int) -> None:
        if target_id == user_id:
            raise InvalidParams("cannot block yourself")
        self.user(target_id)
        self._social.block(user_id, target_id, self._clock())
        # what the blocked user asked for is dropped with them
        self._social.delete_friend_request(target_id, user_id)
        self._feed.blocked(user_id, target_id)

    def unblock(self, user_id: int, target_id: int) -> bool:
        if self._social.blocked_at(user_id, target_id) is None:
            return False
        self._social.unblock(user_id, target_id)
        self._feed.blocked(user_id, target_id, unblocked=True)
        return True

    def blacklist(self, user_id: int) -> list[tuple[int, int]]:
        return self._social.blacklist(user_id)

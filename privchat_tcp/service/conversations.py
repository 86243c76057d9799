"""A user's conversations: opening a direct channel (``source``, blacklists, privacy), and the
per-user pin, mute and hide of a channel (reference 7.5).

Opening a direct channel that exists returns it (and shows it again if the user had hidden
it). Creating one is refused when either side blocked the other (20402 / 20403), or when the
target is not a friend and their privacy document says ``allow_receive_message_from_non_friend:
false`` (10004). A ``source`` must name a reason that holds (``source_id`` names the group, the
search session, the QR code or shared card, ...): 10004 when it does not; it is remembered as
the channel's creation source.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..errors import ErrorCode, InvalidParams, ServiceError
from .channels import CONV_SINGLE, ChannelService
from .entities import EntityFeed
from .model import DIRECT, Channel, ChannelPrefs
from .ports import ChannelPrefsStore, ProfileStore, QRCodeStore, SearchSessionStore, SocialStore

__all__ = ["ConversationService", "SOURCES", "privacy_flag", "PRIVACY_DEFAULTS"]

BLOCKED_BY_USER = 20402  # the target blocked the caller
USER_IN_BLACKLIST = 20403  # the caller blocked the target

#: ``source`` values (reference 7.1 ``DetailSourceType`` and 7.2 friend sources)
SOURCES = (
    "search",
    "group",
    "friend",
    "friend_pending",
    "card_share",
    "conversation",
    "qrcode",
    "phone",
)

#: the account privacy flags (reference 7.1 ``account/privacy/get``) and their defaults
PRIVACY_DEFAULTS = {
    "allow_add_by_group": True,
    "allow_search_by_phone": True,
    "allow_search_by_username": True,
    "allow_search_by_email": True,
    "allow_search_by_qrcode": True,
    "allow_view_by_non_friend": True,
    "allow_receive_message_from_non_friend": True,
}


def privacy_flag(profiles: ProfileStore, user_id: int, name: str) -> bool:
    """One of the user's privacy flags (their ``"privacy"`` document, the reference's field
    names), its default when it was never set."""
    value = profiles.get_doc(user_id, "privacy").get(name)
    return value if isinstance(value, bool) else PRIVACY_DEFAULTS[name]


def _denied(message: str) -> ServiceError:
    return ServiceError(ErrorCode.PERMISSION_DENIED, message)


class ConversationService:
    def __init__(
        self,
        channels: ChannelService,
        prefs: ChannelPrefsStore,
        social: SocialStore,
        profiles: ProfileStore,
        qrcodes: QRCodeStore,
        searches: SearchSessionStore,
        feed: EntityFeed,
        clock: Callable[[], int],
    ) -> None:
        self._channels = channels
        self._prefs = prefs
        self._social = social
        self._profiles = profiles
        self._qrcodes = qrcodes
        self._searches = searches
        self._feed = feed
        self._clock = clock
        #: the refusal of ``user_id`` writing to ``target_id`` (``SocialService.check_contact``:
        #: 20402, 20403, privacy 10004), set by the composition of the services; None: the
        #: checks below (blacklists both ways, ``allow_receive_message_from_non_friend``)
        self.contact_rule: Callable[[int, int], None] | None = None

    # ---- direct channels -----------------------------------------------------------------------
    def find_direct(self, user_id: int, target_id: int) -> Channel | None:
        for channel in self._channels.user_channels(user_id):
            if channel.channel_type == DIRECT and target_id in channel.members:
                return channel
        return None

    def open_direct(
        self, user_id: int, target_id: int, source: str | None, source_id: str | None
    ) -> tuple[Channel, bool]:
        if target_id == user_id:
            raise InvalidParams("cannot open a direct chat with yourself")
        if source is not None and source not in SOURCES:
            raise InvalidParams("unknown source")
        self._channels.user(target_id)
        existing = self.find_direct(user_id, target_id)
        if existing is not None:
            self._unhide(user_id, existing)
            return existing, False
        self._check_contact(user_id, target_id)
        friends = self._social.friends_since(user_id, target_id) is not None
        if source is not None:
            self._check_source(user_id, target_id, source, source_id or "", friends)
        channel, created = self._channels.direct(user_id, target_id)
        if created and source is not None:
            self._prefs.set_direct_source(channel.channel_id, source, source_id or "")
        return channel, created

    def _check_contact(self, user_id: int, target_id: int) -> None:
        if self.contact_rule is not None:
            self.contact_rule(user_id, target_id)
            return
        if self._social.blocked_at(target_id, user_id) is not None:
            raise ServiceError(BLOCKED_BY_USER, "blocked by the user")
        if self._social.blocked_at(user_id, target_id) is not None:
            raise ServiceError(USER_IN_BLACKLIST, "the user is in your blacklist")
        if self._social.friends_since(user_id, target_id) is None and not privacy_flag(
            self._profiles, target_id, "allow_receive_message_from_non_friend"
        ):
            raise _denied("the user accepts messages from friends only")

    def resolve_target(
        self, user_id: int, channel_id: int, channel_type: int, conv_type: int, conv_target: int
    ) -> Channel:
        """The channel an MS is addressed to (``ChannelService.resolve_target``); a peer
        Conversation opens the direct channel by ``open_direct``'s rule, the one of
        ``channel/direct/get_or_create`` (20402, 20403, the privacy flag: 10004)."""
        if not channel_id and conv_type == CONV_SINGLE:
            return self.open_direct(user_id, conv_target, None, None)[0]
        return self._channels.resolve_target(
            user_id, channel_id, channel_type, conv_type, conv_target
        )

    def direct_source(self, channel_id: int) -> tuple[str, str] | None:
        return self._prefs.direct_source(channel_id)

    def _check_source(
        self, user_id: int, target_id: int, source: str, source_id: str, friends: bool
    ) -> None:
        now = self._clock()
        ident = int(source_id) if source_id.isascii() and source_id.isdigit() else 0
        if source == "friend":
            ok = friends
        elif source == "friend_pending":
            ok = (
                self._social.get_friend_request(user_id, target_id) is not None
                or self._social.get_friend_request(target_id, user_id) is not None
            )
        elif source in ("group", "conversation"):
            ok = (
                ident > 0
                and self._channels.is_member(user_id, ident)
                and (self._channels.is_member(target_id, ident))
            )
        elif source == "search":
            found = self._searches.get_search_session(ident) if ident else None
            ok = found is not None and found[:2] == (user_id, target_id) and found[2] >= now
        elif source in ("card_share", "qrcode"):
            code = self._qrcodes.get_qrcode(source_id) if source_id else None
            ok = (
                code is not None
                and code.qr_type == ("card" if source == "card_share" else "user")
                and code.target_id == target_id
                and not code.revoked_at
                and (not code.expire_at or code.expire_at > now)
            )
        else:  # "phone": the target's number, and they may be found by it
            user = self._channels.find_user(target_id)
            ok = (
                user is not None
                and bool(user.phone)
                and user.phone == source_id
                and privacy_flag(self._profiles, target_id, "allow_search_by_phone")
            )
        if not ok:
            raise _denied(f"source {source} does not hold")

    # ---- pin, mute, hide -----------------------------------------------------------------------
    def prefs(self, user_id: int, channel_id: int) -> ChannelPrefs:
        """A copy of the user's preferences for the channel (the defaults if never set)."""
        found = self._prefs.get_channel_prefs(user_id, channel_id)
        return (
            dataclasses.replace(found) if found is not None else ChannelPrefs(user_id, channel_id)
        )

    def is_hidden(self, prefs: ChannelPrefs) -> bool:
        """Hidden, and no event came since it was hidden."""
        return prefs.hidden_pts >= 0 and (
            self._channels.current_pts(prefs.channel_id) <= prefs.hidden_pts
        )

    def _put(self, prefs: ChannelPrefs) -> None:
        prefs.updated_at = self._clock()
        self._prefs.put_channel_prefs(prefs)
        self._feed.prefs_changed(prefs.user_id, prefs.channel_id)

    def pin(self, user_id: int, channel_id: int, pinned: bool) -> bool:
        self._channels.member_channel(user_id, channel_id)
        prefs = self.prefs(user_id, channel_id)
        if bool(prefs.pinned_at) != pinned:
            prefs.pinned_at = self._clock() if pinned else 0
            self._put(prefs)
        return True

    def mute(self, user_id: int, channel_id: int, muted: bool) -> bool:
        self._channels.member_channel(user_id, channel_id)
        prefs = self.prefs(user_id, channel_id)
        if prefs.muted != muted:
            prefs.muted = muted
            self._put(prefs)
        return True

    def hide(self, user_id: int, channel_id: int) -> bool:
        """Hide the channel from the user's list until its next event."""
        self._channels.member_channel(user_id, channel_id)
        prefs = self.prefs(user_id, channel_id)
        pts = self._channels.current_pts(channel_id)
        if prefs.hidden_pts != pts:
            prefs.hidden_pts = pts
            self._put(prefs)
        return True

    def _unhide(self, user_id: int, channel: Channel) -> None:
        prefs = self.prefs(user_id, channel.channel_id)
        if prefs.hidden_pts >= 0:
            prefs.hidden_pts = -1
            self._put(prefs)

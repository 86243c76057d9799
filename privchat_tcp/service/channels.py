"""Channels, groups, members and roles: the one membership check and the one channel-type check."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..config import Settings
from ..errors import (
    ChannelNotFound,
    ChannelTypeMismatch,
    ErrorCode,
    GroupNotFound,
    InvalidParams,
    NotChannelMember,
    NotGroupMember,
    ServiceError,
    UserNotFound,
)
from .entities import EntityFeed
from .model import GROUP, Channel, User
from .ports import AccountStore, ChannelStore, MessageLog

__all__ = ["ChannelService", "check_channel_type", "CONV_SINGLE", "CONV_GROUP"]

# Conversation.Type of a SendMessageRequest addressed without a channel id
CONV_SINGLE = 1
CONV_GROUP = 2


def check_channel_type(channel: Channel, channel_type: int) -> None:
    """A request that names a channel_type (0: any) must name the channel's own."""
    if channel_type and channel_type != channel.channel_type:
        raise ChannelTypeMismatch()


class ChannelService:
    def __init__(
        self,
        settings: Settings,
        accounts: AccountStore,
        channels: ChannelStore,
        log: MessageLog,
        clock: Callable[[], int],
        feed: EntityFeed | None = None,
    ) -> None:
        self.settings = settings
        self._accounts = accounts
        self._channels = channels
        self._log = log
        self._clock = clock
        #: entity versions of what changes here (``entity/sync_entities``)
        self.feed = feed if feed is not None else EntityFeed(None)

    # ---- lookups -------------------------------------------------------------------------------
    def user(self, user_id: int) -> User:
        user = self._accounts.get_user(user_id)
        if user is None:
            raise UserNotFound()
        return user

    def find_user(self, user_id: int) -> User | None:
        return self._accounts.get_user(user_id)

    def channel(self, channel_id: int) -> Channel:
        channel = self._channels.get_channel(channel_id)
        if channel is None:
            raise ChannelNotFound()
        return channel

    def find_channel(self, channel_id: int) -> Channel | None:
        return self._channels.get_channel(channel_id)

    def member_channel(self, user_id: int, channel_id: int, channel_type: int = 0) -> Channel:
        """The channel, if ``user_id`` is a member of it (and it is of ``channel_type``, 0: any)."""
        channel = self.channel(channel_id)
        if user_id not in channel.members:
            if channel.channel_type == GROUP:
                raise NotGroupMember()
            raise NotChannelMember()
        check_channel_type(channel, channel_type)
        return channel

    def is_member(self, user_id: int, channel_id: int, channel_type: int = 0) -> bool:
        """Whether ``user_id`` belongs to the channel (of ``channel_type``, 0: any)."""
        channel = self._channels.get_channel(channel_id)
        return (
            channel is not None
            and user_id in channel.members
            and (not channel_type or channel_type == channel.channel_type)
        )

    def group(self, group_id: int) -> Channel:
        channel = self._channels.get_channel(group_id)
        if channel is None or channel.channel_type != GROUP:
            raise GroupNotFound()
        return channel

    def member_group(self, user_id: int, group_id: int) -> Channel:
        group = self.group(group_id)
        if user_id not in group.members:
            raise NotGroupMember()
        return group

    def user_channels(self, user_id: int) -> list[Channel]:
        out = []
        for cid in self._channels.user_channels(user_id):
            channel = self._channels.get_channel(cid)
            if channel is not None:
                out.append(channel)
        return out

    def current_pts(self, channel_id: int) -> int:
        return self._log.current_pts(channel_id)

    # ---- direct channels -----------------------------------------------------------------------
    def direct(self, user_id: int, target_id: int) -> tuple[Channel, bool]:
        if target_id == user_id:
            raise InvalidParams("cannot open a direct chat with yourself")
        self.user(target_id)
        channel, created = self._channels.get_or_create_direct(user_id, target_id, self._clock())
        if created:
            self.feed.channel_created(channel)
        return channel, created

    def resolve_target(
        self, user_id: int, channel_id: int, channel_type: int, conv_type: int, conv_target: int
    ) -> Channel:
        """The channel an MS is addressed to: by id, or by a group Conversation. A peer
        Conversation (``CONV_SINGLE``) may open a direct channel, which is the rule of
        ``ConversationService.resolve_target`` (privacy, blacklists): refused here."""
        if channel_id:  # the usual case, inline; member_channel raises the refusals
            channel = self._channels.get_channel(channel_id)
            if (
                channel is not None
                and user_id in channel.members
                and (not channel_type or channel_type == channel.channel_type)
            ):
                return channel
            return self.member_channel(user_id, channel_id, channel_type)
        if conv_type:
            if conv_type == CONV_GROUP:
                channel_id = conv_target
                channel_type = GROUP
            else:
                raise ServiceError(
                    ErrorCode.UNSUPPORTED_PROTOCOL, "conversation type not supported", status=8
                )
        if channel_id == 0:
            raise InvalidParams("channel_id must be non-zero")
        return self.member_channel(user_id, channel_id, channel_type)

    # ---- groups --------------------------------------------------------------------------------
    def create_group(
        self, owner_id: int, name: str, description: str | None, member_ids: Iterable[int]
    ) -> Channel:
        name = name.strip()
        if not name or len(name) > 128:
            raise InvalidParams("group name must be 1-128 characters")
        if description is not None and len(description) > 1024:
            raise InvalidParams("description too long")
        ids: list[int] = []
        for uid in member_ids:
            if uid != owner_id and uid not in ids:
                self.user(uid)
                ids.append(uid)
        if len(ids) + 1 > self.settings.max_group_members:
            raise ServiceError(ErrorCode.GROUP_FULL, "group full")
        group = self._channels.create_group(
            owner_id, name, description, ids, self._clock(), self.settings.max_group_members
        )
        self.feed.channel_created(group)
        return group

    def is_muted(self, channel: Channel, user_id: int) -> bool:
        member = channel.members.get(user_id)
        if member is None:
            return False
        return member.mute_until == -1 or member.mute_until > self._clock()

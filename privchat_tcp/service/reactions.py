"""Emoji reactions to messages (PrivChat reference 7.4: ``message/reaction/*``).

A member reacts to a message of its channel (within its history: after its join); a revoked
message takes no new reaction. Reactions are bounded per message: at most
``MAX_EMOJIS_PER_MESSAGE`` different emoji, and each user holds at most
``MAX_REACTIONS_PER_USER`` of them, so a message's reactions stay small whatever a client sends.

A change (an add that added, a remove that removed) bumps the reaction's entity in the
channel's family ``reaction:<cid>`` (``message_reaction`` entities; a tombstone on remove)
and pushes a notice (no pts, ``from_uid`` 0, System, topic ``notification``) whose payload is
``{"message_type": "notification", "content": "消息回应", "metadata": {"notification_type":
"message_reaction_added" | "message_reaction_removed", "message_id", "channel_id",
"channel_type", "user_id", "emoji", "reactions", "total_count", "updated_at"}}`` to the
members (the reactor's other devices too; the origin session is left out); in a group above
``large_group_threshold`` members only to the reactor and the message's sender.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from ..errors import ErrorCode, MessageNotFound, ServiceError
from .channels import ChannelService
from .model import GROUP, KIND_MESSAGE, Record
from .ports import Delivery, MessageLog, ReactionStore

__all__ = ["ReactionService", "MAX_EMOJIS_PER_MESSAGE", "MAX_REACTIONS_PER_USER", "MAX_EMOJI_LEN"]

MAX_EMOJIS_PER_MESSAGE = 50
MAX_REACTIONS_PER_USER = 20
MAX_EMOJI_LEN = 32


class ReactionService:
    def __init__(
        self,
        channels: ChannelService,
        log: MessageLog,
        store: ReactionStore,
        clock: Callable[[], int],
        delivery: Delivery | None = None,
    ) -> None:
        self.channels = channels
        self._log = log
        self._store = store
        self._clock = clock
        self.delivery = delivery

    def _message(self, user_id: int, message_id: int, channel_id: int) -> Record:
        """The message (in ``channel_id``; 0: in any channel), if ``user_id`` may see it."""
        record = self._log.find_message(channel_id, message_id)
        if record is None or record.kind != KIND_MESSAGE:
            raise MessageNotFound()
        channel = self.channels.member_channel(user_id, record.channel_id)
        if record.pts <= channel.members[user_id].join_pts:
            raise MessageNotFound()  # from before the member joined: not in its history
        return record

    @staticmethod
    def check_emoji(emoji: str) -> str:
        emoji = emoji.strip()
        if not emoji or len(emoji) > MAX_EMOJI_LEN:
            raise ServiceError(
                ErrorCode.INVALID_PARAMS, f"emoji must be 1-{MAX_EMOJI_LEN} characters"
            )
        return emoji

    def _changed(
        self, user_id: int, record: Record, emoji: str, removed: bool, origin: str | None
    ) -> None:
        cid = record.channel_id
        self.channels.feed.reaction_changed(cid, record.message_id, user_id, emoji, removed)
        if self.delivery is None:
            return
        channel = self.channels.channel(cid)
        targets: list[int] = list(channel.members)
        if (
            channel.channel_type == GROUP
            and len(targets) > self.channels.settings.large_group_threshold
        ):
            targets = [user_id] if record.sender_id == user_id else [user_id, record.sender_id]
        reactions = self._store.reactions(record.message_id)
        payload = json.dumps(
            {
                "message_type": "notification",
                "content": "消息回应",
                "metadata": {
                    "notification_type": "message_reaction_removed"
                    if removed
                    else "message_reaction_added",
                    "message_id": str(record.message_id),
                    "channel_id": cid,
                    "channel_type": channel.channel_type,
                    "user_id": str(user_id),
                    "emoji": emoji,
                    "reactions": reactions,
                    "total_count": sum(len(uids) for uids in reactions.values()),
                    "updated_at": self._clock(),
                },
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        self.delivery.push_notice(targets, channel, payload, origin)

    def add(
        self, user_id: int, message_id: int, channel_id: int, emoji: str, origin: str | None = None
    ) -> bool:
        """React; True if added, False if the user already had this reaction (no change)."""
        emoji = self.check_emoji(emoji)
        record = self._message(user_id, message_id, channel_id)
        if record.revoked:
            raise ServiceError(ErrorCode.MESSAGE_REVOKED, "message revoked")
        current = self._store.reactions(message_id)
        users = current.get(emoji)
        if users is not None and user_id in users:
            return False
        if users is None and len(current) >= MAX_EMOJIS_PER_MESSAGE:
            raise ServiceError(
                ErrorCode.PARAM_OUT_OF_RANGE, "too many different reactions on this message"
            )
        if sum(1 for uids in current.values() if user_id in uids) >= MAX_REACTIONS_PER_USER:
            raise ServiceError(
                ErrorCode.PARAM_OUT_OF_RANGE, "too many reactions of yours on this message"
            )
        added = self._store.add_reaction(message_id, emoji, user_id, self._clock())
        if added:
            self._changed(user_id, record, emoji, False, origin)
        return added

    def remove(
        self, user_id: int, message_id: int, channel_id: int, emoji: str, origin: str | None = None
    ) -> bool:
        """Take a reaction back; False if the user had none with this emoji."""
        emoji = self.check_emoji(emoji)
        record = self._message(user_id, message_id, channel_id)
        removed = self._store.remove_reaction(message_id, emoji, user_id)
        if removed:
            self._changed(user_id, record, emoji, True, origin)
        return removed

    def reactions_of(self, user_id: int, message_id: int, channel_id: int) -> dict[str, list[int]]:
        """emoji -> the users who reacted with it, in the order they did."""
        self._message(user_id, message_id, channel_id)
        return {emoji: list(uids) for emoji, uids in self._store.reactions(message_id).items()}

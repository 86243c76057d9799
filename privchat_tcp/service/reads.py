"""Read state (PrivChat reference 7.4): read positions per user and channel, unread counts,
who read a message, and the receipts a direct chat's sender is pushed.

A user's read position in a channel is a pts (``ReadStore``): reading a message moves it to
that message's pts, ``read_pts`` moves it to a pts; it never moves back. When it moves, the
entity families ``read:<cid>`` and ``reads:<uid>`` are bumped (``message_status`` entities),
and a ``user_read_pts`` notice is pushed (``read_notice_targets``) to the reader's other
devices and to the other members: the peer of a direct chat (the sender of a message read
with ``message/status/read`` gets the reference's ``read_receipt`` instead), every member of a
group up to ``large_group_threshold`` members (a larger group's members sync the entities).
A message counts as read by a member once the member's position reaches its pts. Unread
messages are the messages (not revoke events, not revoked, not the user's own) after the
position and the member's join.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable

from ..errors import MessageNotFound
from .channels import ChannelService
from .model import DIRECT, KIND_MESSAGE, Channel, Record
from .ports import Delivery, MessageLog, ReadStore

__all__ = ["ReadService", "UNREAD_SCAN_MAX", "Reader"]

#: an unread count reads at most this many records of a channel's log (the count is then
#: "at least this many"): a count never walks an unbounded log
UNREAD_SCAN_MAX = 10_000
_PAGE = 1000

#: (user id, read_at unix ms) of a member whose read position covers a message
Reader = tuple[int, int]


def _iso(ms: int) -> str:
    return (
        datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat().replace("+00:00", "Z")
    )


def _notice(content: str, metadata: dict[str, object]) -> bytes:
    return json.dumps(
        {"message_type": "notification", "content": content, "metadata": metadata},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


class ReadService:
    def __init__(
        self,
        channels: ChannelService,
        log: MessageLog,
        reads: ReadStore,
        delivery: Delivery,
        clock: Callable[[], int],
    ) -> None:
        self.channels = channels
        self._log = log
        self._reads = reads
        self.delivery = delivery
        self._clock = clock

    def _message(self, user_id: int, channel_id: int, message_id: int) -> tuple[Channel, Record]:
        """A message of a channel ``user_id`` is a member of, within the member's history."""
        channel = self.channels.member_channel(user_id, channel_id)
        record = self._log.find_message(channel_id, message_id)
        member = channel.members[user_id]
        if record is None or record.kind != KIND_MESSAGE or record.pts <= member.join_pts:
            raise MessageNotFound()
        return channel, record

    def get_read(self, user_id: int, channel_id: int) -> tuple[int, int]:
        return self._reads.get_read(user_id, channel_id)

    # ---- moving the read position --------------------------------------------------------------
    def mark_read(self, user_id: int, channel_id: int, message_id: int, origin: str | None) -> None:
        """``message/status/read``: the user read the message (and what came before it). In a
        direct chat its sender is pushed a read receipt (reference 7.4); in a group, nothing."""
        channel, record = self._message(user_id, channel_id, message_id)
        now = self._clock()
        moved = self._reads.set_read_pts(user_id, channel_id, record.pts, now)
        if not moved:
            return
        receipt_to = 0
        if channel.channel_type == DIRECT and record.sender_id != user_id:
            receipt_to = record.sender_id
            payload = _notice(
                "消息已读",
                {
                    "notification_type": "read_receipt",
                    "message_id": str(message_id),
                    "channel_id": channel_id,
                    "reader_id": str(user_id),
                    "read_at": _iso(now),
                },
            )
            self.delivery.push_notice((record.sender_id,), channel, payload, origin)
        self._moved(user_id, channel, origin, skip=receipt_to)

    def set_read_pts(
        self,
        user_id: int,
        channel_id: int,
        read_pts: int,
        last_read_message_id: int,
        origin: str | None,
    ) -> tuple[int, int]:
        """``message/status/read_pts``: move the read position to ``read_pts`` (at most the
        channel's pts: a position past the log is cut to it). ``last_read_message_id`` (0:
        none) must be a message of the channel. Returns (accepted pts, the position now). The
        peer of a direct chat is pushed the new position."""
        channel = self.channels.member_channel(user_id, channel_id)
        if last_read_message_id:
            record = self._log.find_message(channel_id, last_read_message_id)
            if record is None:
                raise MessageNotFound("last_read_message_id names no message of this channel")
        accepted = min(read_pts, self._log.current_pts(channel_id))
        moved = self._reads.set_read_pts(user_id, channel_id, accepted, self._clock())
        position = self._reads.get_read(user_id, channel_id)[0]
        if moved:
            self._moved(user_id, channel, origin)
        return accepted, position

    def read_notice_targets(self, user_id: int, channel: Channel) -> list[int]:
        """Who is told that ``user_id``'s position moved: the reader (its other devices:
        the origin session is left out by the delivery), the direct peer, and the members of
        a group up to ``large_group_threshold`` members."""
        if channel.channel_type == DIRECT:
            return list(channel.members)
        if len(channel.members) <= self.channels.settings.large_group_threshold:
            return list(channel.members)
        return [user_id]

    def _moved(self, user_id: int, channel: Channel, origin: str | None, skip: int = 0) -> None:
        """The position moved: bump the ``message_status`` entities, push the notice."""
        cid = channel.channel_id
        self.channels.feed.read_moved(cid, user_id)
        position, at = self._reads.get_read(user_id, cid)
        payload = _notice(
            "已读位置更新",
            {
                "notification_type": "user_read_pts",
                "channel_id": cid,
                "channel_type": channel.channel_type,
                "reader_id": str(user_id),
                "read_pts": position,
                "read_at": _iso(at),
            },
        )
        targets = [uid for uid in self.read_notice_targets(user_id, channel) if uid != skip]
        self.delivery.push_notice(targets, channel, payload, origin)

    # ---- counting ------------------------------------------------------------------------------
    def unread_channels(self, user_id: int, channel_id: int) -> list[Channel]:
        """The channels an unread count covers: the one named (a member's), or all of them."""
        if channel_id:
            return [self.channels.member_channel(user_id, channel_id)]
        return self.channels.user_channels(user_id)

    async def unread_count(self, user_id: int, channels: list[Channel]) -> int:
        """Unread messages of ``user_id`` in ``channels``: messages after its read position
        and its join, not its own, not revoked. Old history is read off the loop; each
        channel's count reads at most ``UNREAD_SCAN_MAX`` records."""
        total = 0
        for channel in channels:
            cid = channel.channel_id
            member = channel.members.get(user_id)
            if member is None:
                continue
            after = max(self._reads.get_read(user_id, cid)[0], member.join_pts)
            current = self._log.current_pts(cid)
            end = min(current, after + UNREAD_SCAN_MAX)
            while after < end:
                n = min(_PAGE, end - after)
                if self._log.in_window(cid, after):
                    records = self._log.read_log(cid, after, n)
                else:
                    records = await self._log.load_log(cid, after, n)
                if not records:
                    break
                for r in records:
                    if r.kind == KIND_MESSAGE and r.sender_id != user_id and not r.revoked:
                        total += 1
                after = records[-1].pts
        return min(total, (1 << 31) - 1)

    # ---- who read a message --------------------------------------------------------------------
    def readers(self, user_id: int, channel_id: int, message_id: int) -> tuple[list[Reader], int]:
        """(readers, how many members could read it): the members but the sender who were
        members when it was sent and whose read position reaches it, in member order, with
        the time their position was set."""
        channel, record = self._message(user_id, channel_id, message_id)
        readers: list[Reader] = []
        total = 0
        for uid, member in channel.members.items():
            if uid == record.sender_id or member.join_pts >= record.pts:
                continue
            total += 1
            read_pts, read_at = self._reads.get_read(uid, channel_id)
            if read_pts >= record.pts:
                readers.append((uid, read_at))
        return readers, total

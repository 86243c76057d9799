"""Messages and sync: one commit path under MS and ``sync/submit``, one reader under MP and
``sync/get_difference``, revokes, delivery cursors, and typing.

The rules only: no bytes from the wire but message payloads, no asyncio, the clock passed in.
A committed record is a value handed to ``Delivery``; the session layer builds its push bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Protocol

from ..config import Settings
from ..errors import ErrorCode, InvalidParams, MessageNotFound, ServiceError
from .channels import ChannelService
from .ids import Snowflake
from .model import (
    GROUP,
    KIND_MESSAGE,
    KIND_REVOKE,
    ROLE_ADMIN,
    ROLE_MEMBER,
    ROLE_OWNER,
    SYSTEM_MESSAGE,
    Channel,
    DedupEntry,
    Record,
)
from .ports import CursorStore, DedupStore, Delivery, MessageLog
from .quotas import SendQuota

__all__ = ["MessageService", "SendResult", "record_bytes", "RECORD_FIELDS_BYTES"]


class FileRules(Protocol):
    """The attachment rule of ``service/files.py``: a message's ``file_id`` must name a file
    its sender uploaded (20006 otherwise)."""

    def check_message(self, sender: int, message_type: int, payload: bytes, e2e: bool) -> None: ...


#: about what a record's fields other than payload and content take in a page (ids, pts,
#: times, the device id ...), so that a page of tiny messages is bounded by bytes too
RECORD_FIELDS_BYTES = 64


def record_bytes(record: Record) -> int:
    """About what one record takes in a page or a push: the bound of ``max_reply_bytes``."""
    return len(record.payload) + len(record.content) + RECORD_FIELDS_BYTES


class SendResult:
    """What a commit (or the retry of one) answers: the message's id, pts and time."""

    __slots__ = ("message_id", "pts", "channel_id", "timestamp", "duplicate")

    def __init__(
        self, message_id: int, pts: int, channel_id: int, timestamp: int, duplicate: bool
    ) -> None:
        self.message_id = message_id
        self.pts = pts
        self.channel_id = channel_id
        self.timestamp = timestamp
        self.duplicate = duplicate


class MessageService:
    def __init__(
        self,
        settings: Settings,
        channels: ChannelService,
        log: MessageLog,
        dedup: DedupStore,
        cursors: CursorStore,
        delivery: Delivery,
        clock: Callable[[], int],
        monotonic: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.channels = channels
        self._log = log
        self._dedup = dedup
        self._cursors = cursors
        self.delivery = delivery
        self._clock = clock
        self._monotonic = monotonic
        self.ids = Snowflake(settings.snowflake_datacenter_id, settings.snowflake_machine_id)
        self._typing: dict[tuple[int, int], float] = {}
        self._last_sweep = clock()
        self.quota = SendQuota(settings, log, monotonic)
        #: the attachment rule (``FileService.check_message``), set by ``Services``
        self.files: FileRules | None = None

    # ---- sending -------------------------------------------------------------------------------
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
        origin: str | None,
    ) -> SendResult:
        """Commit one message (idempotent on sender, device, local_id) and deliver it.

        A retry of a committed key answers the original's id, pts and time (``duplicate``);
        a new message must fit the sender's quotas (``SendQuota``)."""
        if local_id:
            seen = self._dedup.dedup_get(sender, device, local_id)
            if seen is not None:
                return SendResult(seen.message_id, seen.pts, seen.channel_id, seen.timestamp, True)
        if not payload and not content:
            raise ServiceError(ErrorCode.MESSAGE_CONTENT_INVALID, "empty message")
        if self.files is not None:
            self.files.check_message(sender, message_type, payload, e2e)
        ts = self._clock()
        if channel.channel_type == GROUP:
            member = channel.members[sender]
            if member.mute_until == -1 or member.mute_until > ts:
                raise ServiceError(ErrorCode.MEMBER_MUTED, "you are muted in this group")
            if channel.all_muted and member.role == ROLE_MEMBER:
                raise ServiceError(ErrorCode.GROUP_MUTED, "the group is muted")
        self.quota.take(sender, len(payload) + len(content))
        message_id = self.ids.next(ts)
        channel_id = channel.channel_id
        record = self._log.commit(
            Record(
                0,
                message_id,
                channel_id,
                channel.channel_type,
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
        )
        pts = record.pts
        if local_id:
            self._dedup.dedup_put(
                sender, device, local_id, DedupEntry(message_id, pts, channel_id, ts)
            )
            self._maybe_sweep(ts)
        self.delivery.deliver(channel, record, origin)
        return SendResult(message_id, pts, channel_id, ts, False)

    def _maybe_sweep(self, now: int) -> None:
        if now - self._last_sweep > 1_000:  # each call sweeps a part (DedupStore.dedup_sweep)
            self._last_sweep = now
            self._dedup.dedup_sweep(now - self.settings.dedup_retention * 1000)

    # ---- revoking ------------------------------------------------------------------------------
    def revoke(
        self, user_id: int, device: str, channel_id: int, message_id: int, origin: str | None
    ) -> Record:
        """Revoke a message: mark it revoked and commit a revoke event (its own pts), delivered
        to the members. Returns the event; its ``target_message_id`` is the revoked message."""
        channel = self.channels.member_channel(user_id, channel_id)
        target = self._log.find_message(channel_id, message_id)
        if target is None:
            raise MessageNotFound()
        if target.revoked:
            raise InvalidParams("message already revoked")
        now = self._clock()
        role = channel.members[user_id].role
        privileged = channel.channel_type == GROUP and role in (ROLE_OWNER, ROLE_ADMIN)
        if target.sender_id == user_id:
            if not privileged and now - target.timestamp > self.settings.revoke_window * 1000:
                raise ServiceError(
                    ErrorCode.MESSAGE_CANNOT_REVOKE, "message cannot be revoked (timeout)"
                )
        elif not privileged:
            raise ServiceError(
                ErrorCode.PERMISSION_DENIED, "only the sender or an admin may revoke"
            )
        self._log.mark_revoked(channel_id, message_id, user_id, now)
        payload = json.dumps(
            {
                "message_id": message_id,
                "channel_id": channel_id,
                "revoked_by": user_id,
                "revoked_at": now,
            },
            separators=(",", ":"),
        ).encode()
        event = self._log.commit(
            Record(
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
        )
        self.delivery.deliver(channel, event, origin)
        return event

    # ---- reading -------------------------------------------------------------------------------
    def pull(
        self, user_id: int, channel_id: int, last_pts: int, limit: int, channel_type: int = 0
    ) -> tuple[Channel, list[Record], int, bool]:
        """(channel, records after ``last_pts``, current pts, has_more) for a member.

        A page holds at most ``limit`` (up to ``max_pull_limit``) records and about
        ``max_reply_bytes`` of them (``record_bytes``), but always one record if there is
        one, so a message larger than the bound still gets through; ``has_more`` pages on."""
        channel = self.channels.member_channel(user_id, channel_id, channel_type)
        current = self._log.current_pts(channel_id)
        records = self._bounded(self._log.read_log(channel_id, last_pts, self._page_limit(limit)))
        return channel, records, current, bool(records) and records[-1].pts < current

    def _page_limit(self, limit: int) -> int:
        return min(100 if limit <= 0 else limit, self.settings.max_pull_limit)

    def _bounded(self, records: list[Record]) -> list[Record]:
        """The first records of a page that fit ``max_reply_bytes`` (``record_bytes``), and
        always the first one, so a message larger than the bound still gets through."""
        budget = self.settings.max_reply_bytes
        size = 0
        for i, record in enumerate(records):
            size += record_bytes(record)
            if size > budget and i:
                return records[:i]
        return records

    def in_memory(self, channel_id: int, last_pts: int) -> bool:
        """Whether a pull from ``last_pts`` is answered from memory (else ``pull_async``)."""
        return self._log.in_window(channel_id, last_pts)

    async def pull_async(
        self, user_id: int, channel_id: int, last_pts: int, limit: int, channel_type: int = 0
    ) -> tuple[Channel, list[Record], int, bool]:
        """``pull`` for history that may be outside the store's working set (off the loop)."""
        channel = self.channels.member_channel(user_id, channel_id, channel_type)
        records = await self._log.load_log(channel_id, last_pts, self._page_limit(limit))
        records = self._bounded(records)
        current = self._log.current_pts(channel_id)
        return channel, records, current, bool(records) and records[-1].pts < current

    def read_log(self, channel_id: int, after_pts: int, limit: int) -> list[Record]:
        return self._log.read_log(channel_id, after_pts, limit)

    def last_record(self, channel_id: int) -> Record | None:
        current = self._log.current_pts(channel_id)
        last = self._log.read_log(channel_id, max(current - 1, 0), 1)
        return last[0] if last else None

    # ---- delivery cursors ----------------------------------------------------------------------
    def ack(self, user_id: int, device: str, channel_id: int, pts: int) -> None:
        if not self.channels.is_member(user_id, channel_id):
            return
        current = self._log.current_pts(channel_id)
        self._cursors.set_ack(user_id, device, channel_id, min(pts, current))

    def pending(self, user_id: int, device: str) -> list[tuple[Channel, int, int]]:
        """(channel, acked pts, current pts) for every channel with events the device lacks."""
        out = []
        for channel in self.channels.user_channels(user_id):
            cid = channel.channel_id
            current = self._log.current_pts(cid)
            acked = self._cursors.get_ack(user_id, device, cid)
            if current > acked:
                out.append((channel, acked, current))
        return out

    # ---- typing --------------------------------------------------------------------------------
    def typing(
        self,
        user_id: int,
        channel_id: int,
        channel_type: int,
        is_typing: bool,
        action: str,
        origin: str | None,
    ) -> None:
        channel = self.channels.member_channel(user_id, channel_id, channel_type)
        now = self._monotonic()
        key = (user_id, channel_id)
        last = self._typing.get(key)
        if last is not None and now - last < self.settings.typing_interval:
            return  # over the rate: still OK, not broadcast (PrivChat behaviour)
        if len(self._typing) > 100_000:
            self._typing.clear()
        self._typing[key] = now
        note: dict[str, object] = {
            "user_id": user_id,
            "username": None,
            "channel_id": channel_id,
            "channel_type": channel.channel_type,
            "is_typing": is_typing,
            "action_type": action,
            "timestamp": self._clock() // 1000,
        }
        self.delivery.publish_typing(channel, note, origin)

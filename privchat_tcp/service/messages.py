"""Messages and sync: one commit path under MS and ``sync/submit``, one reader under MP and
``sync/get_difference``, revokes, delivery cursors, and typing.

The rules only: no bytes from the wire but message payloads, no asyncio, the clock passed in.
A committed record is a value handed to ``Delivery``; the session layer builds its push bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from ..config import Settings
from ..errors import ErrorCode, InvalidParams, MessageNotFound, ServiceError
from .channels import ChannelService
from .content import check_content, push_payload
from .ids import Snowflake
from .model import (
    GROUP,
    KIND_MESSAGE,
    KIND_REVOKE,
    ROLE_ADMIN,
    ROLE_MEMBER,
    ROLE_OWNER,
    SYSTEM_MESSAGE,
    SYSTEM_USER_ID,
    Channel,
    DedupEntry,
    Record,
    SendResult,
)
from .ports import CursorStore, DedupStore, Delivery, MessageLog, ReadStore
from .quotas import SendQuota

__all__ = [
    "MessageService",
    "SendResult",
    "DeviceMarks",
    "record_bytes",
    "RECORD_FIELDS_BYTES",
    "HISTORY_LIMIT",
    "HISTORY_MAX",
]

#: ``message/history/get``: the page when no ``limit`` is given (PrivChat's server: 20), the
#: largest page
HISTORY_LIMIT = 20
HISTORY_MAX = 100


class FileRules(Protocol):
    """The attachment rule of ``service/files.py``: a message's ``file_id`` must name a file
    its sender uploaded (20006 otherwise). ``message_types``: the types it reads (the others
    pass without a call: the MS hot path)."""

    message_types: frozenset[int]

    def check_message(self, sender: int, message_type: int, payload: bytes, e2e: bool) -> None: ...


#: about what a record's fields other than payload and content take in a page (ids, pts,
#: times, the device id ...), so that a page of tiny messages is bounded by bytes too
RECORD_FIELDS_BYTES = 64


def record_bytes(record: Record) -> int:
    """About what one record takes in a page or a push: the bound of ``max_reply_bytes``."""
    return len(record.payload) + len(record.content) + RECORD_FIELDS_BYTES


class DeviceMarks:
    """What one session's device has of its channels beyond its stored cursors, kept in memory
    while the session lives (a pull must not wait for a write): ``has`` (channel -> pts it
    pulled or was pushed at READY up to), ``gaps`` (channels whose catch-up was an MN, so its
    live pushes do not show the device has what came before them). Written to the cursors
    when the session ends (``MessageService.session_ended``)."""

    __slots__ = ("user_id", "device", "has", "gaps")

    def __init__(self, user_id: int, device: str) -> None:
        self.user_id = user_id
        self.device = device
        self.has: dict[int, int] = {}
        self.gaps: set[int] = set()


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
        reads: ReadStore | None = None,
    ) -> None:
        self.settings = settings
        self._reads = reads
        #: session id -> what its device has beyond its cursors (``DeviceMarks``)
        self._marks: dict[str, DeviceMarks] = {}
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
        #: who may write to whom in a direct channel (``SocialService.check_send``: blacklists,
        #: privacy); raises the refusal
        self.send_rule: Callable[[int, Channel], None] | None = None
        self._files: FileRules | None = None
        self._file_types: frozenset[int] = frozenset()

    @property
    def files(self) -> FileRules | None:
        """The attachment rule (``FileService.check_message``), set by ``Services``."""
        return self._files

    @files.setter
    def files(self, files: FileRules | None) -> None:
        self._files = files
        self._file_types = frozenset() if files is None else frozenset(files.message_types)

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
        *,
        check: bool = False,
        env: dict[str, Any] | None = None,
    ) -> SendResult:
        """Commit one message (idempotent on sender, device, local_id) and deliver it.

        A retry of a committed key answers the original's id, pts and time (``duplicate``);
        a key used in another channel is refused (10204). A new message must fit the
        sender's quotas (``SendQuota``) and, with ``check``, the envelope rules
        (``check_envelope``; ``env`` the parsed payload, None: plain text)."""
        if local_id:
            seen = self._dedup.dedup_get(sender, device, local_id)
            if seen is not None:
                if seen.channel_id != channel.channel_id:  # not a retry of that message
                    raise ServiceError(
                        ErrorCode.DUPLICATE_OPERATION,
                        "local_message_id already used for a message in another channel",
                    )
                return SendResult(seen.message_id, seen.pts, seen.channel_id, seen.timestamp, True)
        if not payload and not content:
            raise ServiceError(ErrorCode.MESSAGE_CONTENT_INVALID, "empty message")
        if message_type == SYSTEM_MESSAGE and sender != SYSTEM_USER_ID:
            raise ServiceError(ErrorCode.PERMISSION_DENIED, "only the server sends System messages")
        if check:
            extra = check_content(self._log, self.channels, sender, channel, message_type, env)
            if extra is not None and payload and env is not None:
                payload = push_payload(env, extra)  # what receivers see (reference 10.2)
        if message_type in self._file_types:  # ``files.message_types``: the others pass
            files = self.files
            if files is not None:
                files.check_message(sender, message_type, payload, e2e)
        ts = self._clock()
        channel_type = channel.channel_type
        if channel_type == GROUP:
            member = channel.members[sender]
            if member.mute_until == -1 or member.mute_until > ts:
                raise ServiceError(ErrorCode.MEMBER_MUTED, "you are muted in this group")
            if channel.all_muted and member.role == ROLE_MEMBER:
                raise ServiceError(ErrorCode.GROUP_MUTED, "the group is muted")
        elif self.send_rule is not None:
            self.send_rule(sender, channel)
        self.quota.take(sender, len(payload) + len(content))
        message_id = self.ids.next(ts)
        channel_id = channel.channel_id
        record = self._log.commit(
            Record(
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
        )
        pts = record.pts
        if local_id:
            self._dedup.dedup_put(
                sender, device, local_id, DedupEntry(message_id, pts, channel_id, ts)
            )
            if ts - self._last_sweep > 1_000:  # ``_maybe_sweep``, inline
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

    # ---- content rules -------------------------------------------------------------------------
    def check_envelope(
        self, sender: int, channel: Channel, message_type: int, env: dict[str, Any] | None
    ) -> None:
        """The rules of a message's envelope before it is committed (reference sections 9 and
        10): a reply names a message of the channel (20000), ``@all`` is for the owner and
        admins (10004), mentions name members and the metadata fits the type (20006).
        ``env`` is the parsed payload envelope (None: not JSON, plain text)."""
        check_content(self._log, self.channels, sender, channel, message_type, env)

    # ---- reading -------------------------------------------------------------------------------
    def history_floor(self, user_id: int, channel: Channel) -> int:
        """The pts after which ``user_id``'s history of the channel starts (its join)."""
        member = channel.members.get(user_id)
        return 0 if member is None else member.join_pts

    def pull(
        self,
        user_id: int,
        channel_id: int,
        last_pts: int,
        limit: int,
        channel_type: int = 0,
        origin: str | None = None,
    ) -> tuple[Channel, list[Record], int, bool]:
        """(channel, records after ``last_pts``, current pts, has_more) for a member.

        A page holds at most ``limit`` (up to ``max_pull_limit``) records and about
        ``max_reply_bytes`` of them (``record_bytes``), but always one record if there is
        one, so a message larger than the bound still gets through; ``has_more`` pages on.
        A member's history starts after its ``join_pts``: a pull from before starts there.
        ``origin`` (the pulling session): its device has what the page holds from now on."""
        channel = self.channels.member_channel(user_id, channel_id, channel_type)
        after = max(last_pts, self.history_floor(user_id, channel))
        current = self._log.current_pts(channel_id)
        records = self._bounded(self._log.read_log(channel_id, after, self._page_limit(limit)))
        return self._page(channel, records, current, after, origin)

    def _page(
        self,
        channel: Channel,
        records: list[Record],
        current: int,
        after: int,
        origin: str | None,
    ) -> tuple[Channel, list[Record], int, bool]:
        has_more = bool(records) and records[-1].pts < current
        if origin is not None:
            marks = self._marks.get(origin)
            if marks is not None:
                cid = channel.channel_id
                reached = min(records[-1].pts if records else after, current)
                if reached > marks.has.get(cid, 0):
                    marks.has[cid] = reached
                if not has_more:
                    marks.gaps.discard(cid)
        return channel, records, current, has_more

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
        self,
        user_id: int,
        channel_id: int,
        last_pts: int,
        limit: int,
        channel_type: int = 0,
        origin: str | None = None,
    ) -> tuple[Channel, list[Record], int, bool]:
        """``pull`` for history that may be outside the store's working set (off the loop)."""
        channel = self.channels.member_channel(user_id, channel_id, channel_type)
        after = max(last_pts, self.history_floor(user_id, channel))
        records = await self._log.load_log(channel_id, after, self._page_limit(limit))
        records = self._bounded(records)
        current = self._log.current_pts(channel_id)
        return self._page(channel, records, current, after, origin)

    async def history(
        self, user_id: int, channel_id: int, before_message_id: int, limit: int
    ) -> tuple[Channel, list[Record], bool]:
        """``message/history/get``: up to ``limit`` messages (kind 0; revoke events are not
        messages) before ``before_message_id`` (0: the newest), oldest first, and whether
        older ones remain. Only the member's history (after its ``join_pts``). Old history
        is read off the loop (``load_log``). The scan is bounded: at most ten chunks of the
        log per call, so a stretch of revoke events cannot make it walk the whole log."""
        channel = self.channels.member_channel(user_id, channel_id)
        limit = HISTORY_LIMIT if limit <= 0 else min(limit, HISTORY_MAX)
        floor = self.history_floor(user_id, channel)
        if before_message_id:
            target = self._log.find_message(channel_id, before_message_id)
            if target is None or target.pts <= floor:  # before the member joined: not its
                raise MessageNotFound()
            end = target.pts  # exclusive
        else:
            end = self._log.current_pts(channel_id) + 1
        chunk = max(2 * limit, 50)
        out: list[Record] = []
        start = end - 1
        for _ in range(10):
            if len(out) >= limit or start <= floor:
                break
            start = max(floor, end - 1 - chunk)
            records = await self._log.load_log(channel_id, start, end - 1 - start)
            out[:0] = [r for r in records if r.kind == KIND_MESSAGE]
            end = start + 1
        has_more = start > floor or len(out) > limit
        if len(out) > limit:
            out = out[-limit:]
        return channel, self._bounded_tail(out), has_more

    def _bounded_tail(self, records: list[Record]) -> list[Record]:
        """The newest records of a history page that fit ``max_reply_bytes`` (at least one)."""
        budget = self.settings.max_reply_bytes
        size = 0
        for i in range(len(records) - 1, -1, -1):
            size += record_bytes(records[i])
            if size > budget and i < len(records) - 1:
                return records[i + 1 :]
        return records

    def read_log(self, channel_id: int, after_pts: int, limit: int) -> list[Record]:
        return self._log.read_log(channel_id, after_pts, limit)

    def find_message(self, channel_id: int, message_id: int) -> Record | None:
        return self._log.find_message(channel_id, message_id)

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
        """(channel, pts the catch-up starts after, current pts) for every channel with events
        the device lacks (reference section 11, and 5's offline queue, which is the user's):

        - a device has what it acknowledged (ACK), pulled (MP, ``get_difference``) or was
          pushed (at READY, or live while READY): its cursor, which never moves back;
        - a device new to the server (no cursor in any channel) starts where the user's
          other devices are, or where the user has read: the user's offline messages, not
          every channel's history;
        - a member starts after its ``join_pts``: nothing from before it joined."""
        cursors = self._cursors
        channels = self.channels.user_channels(user_id)
        acks = [cursors.get_ack(user_id, device, c.channel_id) for c in channels]
        new_device = not any(acks)
        reads = self._reads
        out = []
        for channel, acked in zip(channels, acks, strict=True):
            cid = channel.channel_id
            current = self._log.current_pts(cid)
            if new_device:
                acked = cursors.get_user_ack(user_id, cid)
                if reads is not None:
                    acked = max(acked, reads.get_read(user_id, cid)[0])
            start = max(acked, self.history_floor(user_id, channel))
            if current > start:
                out.append((channel, start, current))
        return out

    def session_started(self, origin: str, user_id: int, device: str) -> DeviceMarks:
        """Begin tracking what a READY session's device has (``DeviceMarks``)."""
        marks = self._marks.get(origin)
        if marks is None:
            marks = self._marks[origin] = DeviceMarks(user_id, device)
        return marks

    def pushed(self, origin: str, channel_id: int, pts: int, complete: bool) -> None:
        """The catch-up pushed the device a channel up to ``pts`` (``complete``: up to its
        current pts; otherwise the rest was an MN, to pull). The cursor moves at once: a
        device that never ACKs is not pushed the same messages at every READY."""
        marks = self._marks.get(origin)
        if marks is None:
            return
        if pts > marks.has.get(channel_id, 0):
            marks.has[channel_id] = pts
            self._cursors.set_ack(marks.user_id, marks.device, channel_id, pts)
        if not complete:
            marks.gaps.add(channel_id)

    def session_ended(self, origin: str, live: dict[int, int] | None) -> None:
        """A session ended: its device has what it pulled, was pushed at READY and, where its
        catch-up was complete, what was pushed live since (``live``: channel -> the last pts
        delivered live in this process; None: its live pushes may not have arrived)."""
        marks = self._marks.pop(origin, None)
        if marks is None:
            return
        uid, device = marks.user_id, marks.device
        large = self.settings.large_group_threshold
        for channel in self.channels.user_channels(uid):
            cid = channel.channel_id
            has = marks.has.get(cid, 0)
            if live is not None and cid not in marks.gaps and len(channel.members) <= large:
                has = max(has, live.get(cid, 0))
            if has:
                self._cursors.set_ack(uid, device, cid, min(has, self._log.current_pts(cid)))

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

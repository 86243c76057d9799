"""The one delivery policy: how a committed record reaches a device, live and at READY.

``Deliverer`` implements the services' ``Delivery`` port. A record's push body is built once
per delivery (``push_body``) and shared by every recipient; ``mode`` decides, for live pushes
and catch-up alike, whether a device gets the message (batched into MPS/MPB), the message as
its own end-to-end frame, or an MN notify to pull (a group too large to fan out bodies to).
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

from .._ext import twins
from ..config import Settings
from ..proto import privchat_pb2 as pb
from ..service.messages import record_bytes
from ..service.model import GROUP, SYSTEM_MESSAGE, Channel, Record
from ..service.ports import Durability
from ..wire import pbwire
from ..wire.commands import Cmd

if TYPE_CHECKING:
    from ..service import Services
    from .session import Session

__all__ = ["Deliverer", "push_body", "check_subscribe", "BATCH", "E2E", "NOTIFY"]

BATCH = 0  # queued on the session, sent as MPS or in an MPB with the others of the turn
E2E = 1  # its own MPS frame, sealed as end-to-end (encryption 3)
NOTIFY = 2  # an MN: the device pulls


# a record's push body, built once per delivery: a compiled twin (``ext/_push_c.pyx``) picked
# by ``_ext``, the pure one (``_push_py.py``) its spec
_twins = twins("privchat_tcp.session", "push")
impl_py: ModuleType = _twins.impl_py
impl_c: ModuleType | None = _twins.impl_c
IMPL = _twins.name

if TYPE_CHECKING:
    from ._push_py import push_body
else:
    push_body = _twins.impl.push_body


def check_subscribe(services: Services, user_id: int, channel_id: int, channel_type: int) -> int:
    """SUB's reason code for subscribing ``user_id`` (0: allowed, 4: not allowed).

    ``channel_type`` is SubscribeRequest's numbering: 0 private (a direct channel), 1 group,
    2 room. Every kind needs membership of the channel; this server has no public rooms, so a
    room subscription names a channel the user is a member of (of any kind)."""
    channel = services.channels.find_channel(channel_id)
    if channel is None or user_id not in channel.members:
        return 4
    if channel_type in (0, 1) and (channel_type == 1) != (channel.channel_type == GROUP):
        return 4
    return 0


class FanOut(Protocol):
    """What the policy needs of the hub (``hub.py``)."""

    def fan_out(self, members: Iterable[int], body: bytes, mode: int, origin: str | None) -> None:
        """Queue ``body`` on the READY sessions of ``members`` but the origin, by ``mode``."""

    def publish(self, channel: Channel, body: bytes, origin: str | None) -> None:
        """A PUB to the channel's subscribers."""

    def device_count(self, user_id: int) -> int: ...


class Deliverer:
    """The policy, and the one rule of a store that persists: a record is pushed once it is
    durable (a device never sees a message that a crash could take back). Until then it waits
    here, in commit order; the sender's own session waits for its acknowledgement instead
    (``Session.hold``)."""

    def __init__(self, settings: Settings, hub: FanOut, durability: Durability) -> None:
        self.settings = settings
        self.hub = hub
        self.durability = durability
        self._later: collections.deque[tuple[int, Channel, Record, str | None]] = (
            collections.deque()
        )
        self._waiting = False
        #: channel -> the pts of the last record delivered live (what a READY session whose
        #: catch-up was complete has, when it ends: ``session_ended``)
        self.delivered: dict[int, int] = {}
        self._large = settings.large_group_threshold

    def large(self, channel: Channel) -> bool:
        return len(channel.members) > self.settings.large_group_threshold

    def mode(self, channel: Channel, record: Record) -> int:
        if self.large(channel):
            return NOTIFY
        return E2E if record.e2e else BATCH

    # ---- the Delivery port ---------------------------------------------------------------------
    def deliver(self, channel: Channel, record: Record, origin: str | None) -> None:
        d = self.durability
        if d.write_seq > d.durable_seq or self._later:
            self._later.append((d.write_seq, channel, record, origin))
            if not self._waiting:
                self._waiting = True
                d.when_durable(d.write_seq, self._release)
            return
        # ``_deliver``, inline (the MS hot path)
        self.delivered[channel.channel_id] = record.pts
        members = channel.members
        if len(members) > self._large:  # ``mode``, inline
            body = pbwire.notify(channel.channel_id, channel.channel_type, record.pts)
            self.hub.fan_out(members, body, NOTIFY, origin)
        else:
            self.hub.fan_out(members, push_body(record), E2E if record.e2e else BATCH, origin)

    def _release(self) -> None:
        self._waiting = False
        later = self._later
        durable = self.durability.durable_seq
        while later and later[0][0] <= durable:
            _, channel, record, origin = later.popleft()
            self._deliver(channel, record, origin)
        if later:
            self._waiting = True
            self.durability.when_durable(later[-1][0], self._release)

    def _deliver(self, channel: Channel, record: Record, origin: str | None) -> None:
        self.delivered[channel.channel_id] = record.pts
        members = channel.members
        if len(members) > self.settings.large_group_threshold:  # ``mode``, inline
            body = pbwire.notify(channel.channel_id, channel.channel_type, record.pts)
            self.hub.fan_out(members, body, NOTIFY, origin)
        else:
            self.hub.fan_out(members, push_body(record), E2E if record.e2e else BATCH, origin)

    def publish_typing(self, channel: Channel, note: dict[str, object], origin: str | None) -> None:
        ts = note["timestamp"]
        body = pb.PublishRequest(
            channel_id=channel.channel_id,
            topic="typing",
            timestamp=ts if isinstance(ts, int) else 0,
            payload=json.dumps(note, separators=(",", ":")).encode(),
            publisher=str(note["user_id"]),
        ).SerializeToString()
        self.hub.publish(channel, body, origin)

    def online_devices(self, user_id: int) -> int:
        return self.hub.device_count(user_id)

    # ---- catch-up and pulls -------------------------------------------------------------
    def catch_up(self, session: Session) -> None:
        """At READY: what the device missed (``MessageService.pending``: since its cursor, a
        new device since the user's, a new member since it joined), under the same policy as
        live pushes (too much, or a large group: an MN to pull instead). The pushes of one
        catch-up stop at about ``max_reply_bytes`` of messages (at least one message): each
        channel whose messages do not fit gets an MN from there on, and the device pulls the
        rest. What was pushed moves the device's cursors (``MessageService.pushed``), so the
        next READY does not push it again, ACK or not."""
        services = session.deps.services
        messages = services.messages
        origin = session.session_id
        messages.session_started(origin, session.user_id, session.device_id)
        limit = self.settings.catchup_push_limit
        budget = self.settings.max_reply_bytes
        size = 0
        for channel, start, current in messages.pending(session.user_id, session.device_id):
            cid = channel.channel_id
            missing = current - start
            notify = pbwire.notify(cid, channel.channel_type, current)
            old = not messages.in_memory(cid, start)
            if old or self.large(channel) or missing > limit or size >= budget:
                # old history, a large group, too much, or past the catch-up's bytes: it pulls
                session.push_now(Cmd.MN, notify)
                messages.pushed(origin, cid, start, False)
                continue
            last = start
            for record in messages.read_log(cid, start, missing):
                n = record_bytes(record)
                if size and size + n > budget:
                    session.push_now(Cmd.MN, notify)
                    break
                size += n
                last = record.pts
                queue(session, self.mode(channel, record), push_body(record))
            messages.pushed(origin, cid, last, last >= current)

    def session_ended(self, session: Session) -> None:
        """The session is gone: its device keeps what it was pushed and pulled (its cursors).
        Live pushes count only for a READY session whose queued output was not dropped (a
        slow consumer's end, a connection lost with pushes still queued)."""
        if not session.user_id:
            return
        dropped = session.end_reason in ("slow_consumer", "output_lost")
        live = self.delivered if session.ready and not dropped else None
        session.deps.services.messages.session_ended(session.session_id, live)

    def push_notice(
        self, user_ids: Iterable[int], channel: Channel, payload: bytes, origin: str | None
    ) -> None:
        """A notice that is not in any log (a read receipt, reference 7.4): a push with
        ``from_uid`` 0, ``message_type`` System and no pts, to the READY devices of
        ``user_ids`` but the origin, once the writes before it are durable."""
        now = time.time_ns() // 1_000_000
        body = pb.PushMessageRequest(
            msg_key=f"notice_{channel.channel_id}_{now}",
            timestamp=now // 1000,
            channel_id=channel.channel_id,
            channel_type=channel.channel_type,
            message_type=SYSTEM_MESSAGE,
            topic="notification",
            from_uid=0,
            payload=payload,
        ).SerializeToString()
        members = list(user_ids)
        d = self.durability
        if d.write_seq > d.durable_seq:
            d.when_durable(d.write_seq, lambda: self.hub.fan_out(members, body, BATCH, origin))
        else:
            self.hub.fan_out(members, body, BATCH, origin)

    def difference(
        self, channel: Channel, records: list[Record], current: int, has_more: bool
    ) -> tuple[bytes, bool]:
        """An MP reply's GetDifferenceResponse bytes, and whether any record is end-to-end."""
        data = pbwire.difference(
            [push_body(r) for r in records], current, has_more, channel.channel_id
        )
        return data, any(r.e2e for r in records)


def queue(session: Session, mode: int, body: bytes) -> None:
    """Queue one push on a session by its mode (the hub's fan-out inlines the same)."""
    if mode == BATCH:
        session.enqueue(body)
    elif mode == E2E:
        session.push_now(Cmd.MPS, body, e2e=True)
    else:
        session.push_now(Cmd.MN, body)

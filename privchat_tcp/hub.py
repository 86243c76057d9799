"""The hub: who is online, on which devices, subscribed to what; delivery of pushes.

One per server process. It implements the service's ``Delivery``: a committed record's push body
is serialized once (``Record.push``) and queued on every recipient session; sessions flush once
per event-loop turn, so several messages for one device in a turn leave as one MPB frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from . import pbwire
from .errors import ErrorCode, Status
from .protocol import Cmd
from .store.base import Channel, Record

if TYPE_CHECKING:
    from .config import Settings
    from .session import Session

__all__ = ["Hub"]


class Hub:
    def __init__(
        self, settings: Settings, schedule: Callable[[Callable[[], None]], object]
    ) -> None:
        self.settings = settings
        self._schedule = schedule
        self._by_user: dict[int, dict[str, Session]] = {}
        self._subs: dict[int, set[Session]] = {}
        self._dirty: dict[Session, None] = {}
        self._flush_scheduled = False
        self.sessions_total = 0

    # ---- registry ----------------------------------------------------------------
    def register(self, session: Session) -> Session | None:
        """Add a logged-in session; returns the session it replaces (same user and device)."""
        devices = self._by_user.setdefault(session.user_id, {})
        old = devices.get(session.device_id)
        devices[session.device_id] = session
        if old is None:
            self.sessions_total += 1
        else:
            old.replaced = True
            self._drop_subs(old)
        return old

    def device_count(self, user_id: int) -> int:
        devices = self._by_user.get(user_id)
        return 0 if devices is None else len(devices)

    def unregister(self, session: Session) -> None:
        devices = self._by_user.get(session.user_id)
        if devices is not None and devices.get(session.device_id) is session:
            del devices[session.device_id]
            self.sessions_total -= 1
            if not devices:
                del self._by_user[session.user_id]
        self._drop_subs(session)
        self._dirty.pop(session, None)

    def sessions(self) -> Iterator[Session]:
        for devices in list(self._by_user.values()):
            yield from list(devices.values())

    def online_devices(self, user_id: int) -> int:
        return self.device_count(user_id)

    def user_sessions(self, user_id: int) -> list[Session]:
        devices = self._by_user.get(user_id)
        return [] if devices is None else list(devices.values())

    # ---- subscriptions -------------------------------------------------------------
    def subscribe(self, session: Session, channel_id: int) -> bool:
        subs = session.subs
        if subs is None:
            subs = session.subs = set()
        if channel_id not in subs and len(subs) >= self.settings.max_subscriptions:
            return False
        subs.add(channel_id)
        self._subs.setdefault(channel_id, set()).add(session)
        return True

    def unsubscribe(self, session: Session, channel_id: int) -> None:
        if session.subs is not None:
            session.subs.discard(channel_id)
        subscribers = self._subs.get(channel_id)
        if subscribers is not None:
            subscribers.discard(session)
            if not subscribers:
                del self._subs[channel_id]

    def _drop_subs(self, session: Session) -> None:
        if session.subs:
            for channel_id in list(session.subs):
                self.unsubscribe(session, channel_id)

    # ---- delivery ------------------------------------------------------------------
    def deliver(self, channel: Channel, record: Record, origin: object | None) -> None:
        by_user = self._by_user
        large = len(channel.members) > self.settings.large_group_threshold
        if large:
            body = pbwire.notify(channel.channel_id, channel.channel_type, record.pts)
        else:
            body = record.push
        e2e = record.e2e
        dirty = self._dirty
        for uid in channel.members:
            devices = by_user.get(uid)
            if devices is None:
                continue
            for s in devices.values():
                if s is origin or not s.ready:
                    continue
                if large:
                    s.push_now(Cmd.MN, body)
                elif e2e:
                    s.push_now(Cmd.MPS, body, e2e=True)
                else:
                    s.pending.append(body)
                dirty[s] = None
        self._kick()

    def publish(self, channel_id: int, body: bytes, origin: object | None) -> None:
        subscribers = self._subs.get(channel_id)
        if not subscribers:
            return
        for s in subscribers:
            if s is not origin:
                s.push_now(Cmd.PUB, body)
                self._dirty[s] = None
        self._kick()

    def touch(self, session: Session) -> None:
        """The session has output queued outside its own read: flush it this turn."""
        self._dirty[session] = None
        self._kick()

    def _kick(self) -> None:
        if not self._flush_scheduled and self._dirty:
            self._flush_scheduled = True
            self._schedule(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        dirty = self._dirty
        self._dirty = {}
        for s in dirty:
            s.flush()

    def end_all(
        self,
        status: int = Status.GOING_AWAY,
        code: int = ErrorCode.SERVICE_UNAVAILABLE,
        message: str = "server going away",
    ) -> None:
        for s in self.sessions():
            s.end(status, code, message)

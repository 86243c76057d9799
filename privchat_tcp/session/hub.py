"""The hub: who is online, on which devices, subscribed to what; the fan-out of pushes.

One per server process. Sessions flush once per event-loop turn (the hub schedules it), so
several messages for one device in a turn leave as one MPB frame. Events carry their origin
as a session id (a value that can cross processes): that session does not get its own event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from ..config import Settings
from ..errors import ErrorCode, Status
from ..service.model import Channel
from ..wire.commands import Cmd
from .delivery import BATCH, E2E
from .session import Session

__all__ = ["Hub"]


class Hub:
    def __init__(
        self, settings: Settings, schedule: Callable[[Callable[[], None]], object]
    ) -> None:
        self.settings = settings
        self._schedule = schedule
        self._by_user: dict[int, dict[str, Session]] = {}
        self._by_id: dict[str, Session] = {}
        self._subs: dict[int, set[Session]] = {}
        self._session_subs: dict[Session, set[int]] = {}
        self._dirty: dict[Session, None] = {}
        self._flush_scheduled = False
        self.sessions_total = 0
        #: told of each session the hub drops, and whether it was its device's current one
        #: (``presence.PresenceLink.session_ended``; set by the composition root)
        self.on_unregister: Callable[[Session, bool], None] | None = None

    # ---- registry ------------------------------------------------------------------------------
    def register(self, session: Session) -> Session | None:
        """Add a logged-in session; returns the session it replaces (same user and device)."""
        devices = self._by_user.setdefault(session.user_id, {})
        old = devices.get(session.device_id)
        devices[session.device_id] = session
        self._by_id[session.session_id] = session
        if old is None:
            self.sessions_total += 1
        else:
            self._drop_subs(old)
            self._by_id.pop(old.session_id, None)
            if self.on_unregister is not None:
                self.on_unregister(old, False)
        return old

    def device_count(self, user_id: int) -> int:
        devices = self._by_user.get(user_id)
        return 0 if devices is None else len(devices)

    def has_device(self, user_id: int, device_id: str) -> bool:
        """Whether a session of the user's device is registered (O(1): a LOGIN asks)."""
        devices = self._by_user.get(user_id)
        return devices is not None and device_id in devices

    def unregister(self, session: Session) -> None:
        devices = self._by_user.get(session.user_id)
        last = False
        if devices is not None and devices.get(session.device_id) is session:
            del devices[session.device_id]
            self.sessions_total -= 1
            last = True
            if not devices:
                del self._by_user[session.user_id]
        known = self._by_id.get(session.session_id) is session
        if known:
            del self._by_id[session.session_id]
        self._drop_subs(session)
        self._dirty.pop(session, None)
        if (known or last) and self.on_unregister is not None:
            self.on_unregister(session, last)

    def sessions(self) -> Iterator[Session]:
        for devices in list(self._by_user.values()):
            yield from list(devices.values())

    def user_sessions(self, user_id: int) -> list[Session]:
        devices = self._by_user.get(user_id)
        return [] if devices is None else list(devices.values())

    def session(self, session_id: str | None) -> Session | None:
        return None if session_id is None else self._by_id.get(session_id)

    # ---- subscriptions -------------------------------------------------------------------------
    def subscribe(self, session: Session, channel_id: int) -> bool:
        subs = self._session_subs.get(session)
        if subs is None:
            subs = self._session_subs[session] = set()
        if channel_id not in subs and len(subs) >= self.settings.max_subscriptions:
            return False
        subs.add(channel_id)
        self._subs.setdefault(channel_id, set()).add(session)
        return True

    def subscriptions(self, session: Session) -> set[int]:
        return set(self._session_subs.get(session, ()))

    def unsubscribe(self, session: Session, channel_id: int) -> None:
        subs = self._session_subs.get(session)
        if subs is not None:
            subs.discard(channel_id)
        subscribers = self._subs.get(channel_id)
        if subscribers is not None:
            subscribers.discard(session)
            if not subscribers:
                del self._subs[channel_id]

    def _drop_subs(self, session: Session) -> None:
        subs = self._session_subs.pop(session, None)
        if subs:
            for channel_id in subs:
                subscribers = self._subs.get(channel_id)
                if subscribers is not None:
                    subscribers.discard(session)
                    if not subscribers:
                        del self._subs[channel_id]

    # ---- delivery ------------------------------------------------------------------------------
    def fan_out(self, members: Iterable[int], body: bytes, mode: int, origin: str | None) -> None:
        """Queue ``body`` on every READY session of ``members`` but the origin, by the
        delivery mode (``delivery.BATCH``, ``E2E`` or ``NOTIFY``)."""
        skip = self._by_id.get(origin) if origin is not None else None
        dirty = self._dirty
        if mode == BATCH:  # the usual mode, its own loop (no test per recipient)
            for devices in map(self._by_user.get, members):
                if devices is not None:
                    for s in devices.values():
                        if s.ready and s is not skip:
                            s.enqueue(body)
                            dirty[s] = None
        else:
            for devices in map(self._by_user.get, members):
                if devices is not None:
                    for s in devices.values():
                        if s.ready and s is not skip:
                            if mode == E2E:
                                s.push_now(Cmd.MPS, body, e2e=True)
                            else:
                                s.push_now(Cmd.MN, body)
                            dirty[s] = None
        if dirty and not self._flush_scheduled:  # ``_kick``, inline
            self._flush_scheduled = True
            self._schedule(self.flush)

    def publish(self, channel: Channel, body: bytes, origin: str | None) -> None:
        """A PUB to the channel's subscribers that are still its members."""
        subscribers = self._subs.get(channel.channel_id)
        if not subscribers:
            return
        skip = self._by_id.get(origin) if origin is not None else None
        members = channel.members
        for s in list(subscribers):
            if s is skip:
                continue
            if s.user_id not in members:  # left or was removed since subscribing
                self.unsubscribe(s, channel.channel_id)
                continue
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

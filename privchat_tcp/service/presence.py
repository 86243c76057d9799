"""Presence: OnlineStatus from live sessions and the persisted last-seen time, filtered by the
target's privacy rule, and subscriptions that get each change pushed.

``OnlineStatus`` (reference 12.1) goes on the wire as the variant name. A user with a session
online is ``Online``; otherwise the time since their last session ended picks the status with
the reference's bands, except that the first band (0-180 s, "Online" in PrivChat, whose last
seen is a heartbeat) is ``Recently`` here, where live sessions are known exactly. ``Offline``
is what a viewer the target's privacy rule hides them from sees.

Subscriptions (``presence/subscribe``) belong to a session (by its id, a value that can cross
processes) and end with it; a change (a user's first session starting, their last ending) is
pushed to the subscribed sessions through ``PresencePush`` (the session layer), as each
viewer may see it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..errors import ErrorCode, InvalidParams, ServiceError
from .devices import DeviceService
from .ports import AccountStore, ProfileStore, SocialStore

__all__ = [
    "PresenceService",
    "PresencePush",
    "ONLINE",
    "RECENTLY",
    "LAST_WEEK",
    "LAST_MONTH",
    "LONG_TIME_AGO",
    "OFFLINE",
    "status_after",
    "privacy_rules",
    "rule_allows",
    "MAX_SUBSCRIPTIONS",
    "MAX_QUERY",
]

ONLINE = "Online"
RECENTLY = "Recently"
LAST_WEEK = "LastWeek"
LAST_MONTH = "LastMonth"
LONG_TIME_AGO = "LongTimeAgo"
OFFLINE = "Offline"

#: users one session may watch; more: 10103
MAX_SUBSCRIPTIONS = 1000
#: users one presence/status/get or presence/subscribe may name (reference: 1..=100)
MAX_QUERY = 100


def status_after(elapsed_s: int, online: bool) -> str:
    """The status of a user last seen ``elapsed_s`` seconds ago (reference 12.1)."""
    if online:
        return ONLINE
    if elapsed_s <= 3600:
        return RECENTLY
    if elapsed_s <= 604800:
        return LAST_WEEK
    if elapsed_s <= 2592000:
        return LAST_MONTH
    return LONG_TIME_AGO


def privacy_rules(doc: dict[str, Any]) -> tuple[Any, Any]:
    """(show_online_to, show_last_seen_to) of a user's "privacy" document (reference 12.4,
    ``PresencePrivacySettings``; each a ``PrivacyRule``: "Everyone", "Contacts", "Nobody" or
    ``{"Custom": {"allow_users": [...], "deny_users": [...]}}``). Not set: "Everyone", or
    "Contacts" when the account's ``allow_view_by_non_friend`` is false."""
    default = "Contacts" if doc.get("allow_view_by_non_friend") is False else "Everyone"
    return doc.get("show_online_to", default), doc.get("show_last_seen_to", default)


def rule_allows(rule: Any, viewer: int, is_friend: Callable[[], bool]) -> bool:
    """Whether ``rule`` lets ``viewer`` see; an unreadable rule hides (fails closed)."""
    if rule == "Everyone":
        return True
    if rule == "Contacts":
        return is_friend()
    if isinstance(rule, dict) and isinstance(rule.get("Custom"), dict):
        custom = rule["Custom"]
        allow, deny = custom.get("allow_users"), custom.get("deny_users")
        if isinstance(deny, list) and viewer in deny:
            return False
        return isinstance(allow, list) and viewer in allow
    return False


class PresencePush(Protocol):
    """What the service needs from the session layer to push a change."""

    def push_presence(self, session_id: str, note: dict[str, Any]) -> None:
        """Push ``note`` (an ``OnlineStatusChangeNotification``) to that session, if it is
        still online."""


class PresenceService:
    def __init__(
        self,
        devices: DeviceService,
        accounts: AccountStore,
        profiles: ProfileStore,
        social: SocialStore,
        clock: Callable[[], int],
    ) -> None:
        self._devices = devices
        self._accounts = accounts
        self._profiles = profiles
        self._social = social
        self._clock = clock
        #: target -> {session id: viewer}
        self._subs: dict[int, dict[str, int]] = {}
        #: session id -> targets
        self._by_session: dict[str, set[int]] = {}
        #: the session layer's push (set by the composition root; None: changes are not pushed)
        self.push: PresencePush | None = None
        #: the status each (target, session) was last told, so a push is a change
        self._told: dict[tuple[int, str], str] = {}

    # ---- reading -------------------------------------------------------------------------------
    def visible(self, target: int, viewer: int) -> tuple[bool, bool]:
        """(may see online, may see last seen) for ``viewer`` looking at ``target``."""
        if target == viewer:
            return True, True
        if self._social.blocked_at(target, viewer) is not None:
            return False, False
        online_rule, seen_rule = privacy_rules(self._profiles.get_doc(target, "privacy"))
        friend: list[bool] = []

        def is_friend() -> bool:
            if not friend:
                friend.append(self._social.friends_since(target, viewer) is not None)
            return friend[0]

        return rule_allows(online_rule, viewer, is_friend), rule_allows(
            seen_rule, viewer, is_friend
        )

    def info(self, target: int, viewer: int) -> dict[str, Any]:
        """``OnlineStatusInfo{user_id, status, last_seen (unix s), online_devices}`` of
        ``target`` as ``viewer`` may see it."""
        show_online, show_seen = self.visible(target, viewer)
        now = self._clock()
        if self._devices.is_online(target):
            if not show_online:
                return _hidden(target)
            return {
                "user_id": target,
                "status": ONLINE,
                "last_seen": now // 1000 if show_seen else 0,
                "online_devices": self._devices.online_types(target),
            }
        if not show_seen:
            return _hidden(target)
        seen = self._devices.last_seen(target)
        return {
            "user_id": target,
            "status": status_after(max(0, now - seen) // 1000, False) if seen else LONG_TIME_AGO,
            "last_seen": seen // 1000,
            "online_devices": [],
        }

    def _targets(self, user_ids: list[int], viewer: int, allow_self: bool) -> list[int]:
        if not user_ids or len(user_ids) > MAX_QUERY:
            raise InvalidParams(f"user_ids must name 1 to {MAX_QUERY} users")
        out: dict[int, None] = {}
        for uid in user_ids:
            if uid == 0 or (uid == viewer and not allow_self):
                continue
            if self._accounts.get_user(uid) is not None:
                out[uid] = None
        return list(out)

    def statuses(self, viewer: int, user_ids: list[int]) -> dict[str, dict[str, Any]]:
        """``presence/status/get``: the status of each existing user named (1 to 100)."""
        return {str(uid): self.info(uid, viewer) for uid in self._targets(user_ids, viewer, True)}

    # ---- subscriptions -------------------------------------------------------------------------
    def subscribe(
        self, session_id: str, viewer: int, user_ids: list[int]
    ) -> dict[str, dict[str, Any]]:
        """Watch the users named (self and 0 skipped; unknown users left out); returns their
        statuses now. A session watches at most ``MAX_SUBSCRIPTIONS`` users (10103)."""
        targets = self._targets(user_ids, viewer, False)
        watched = self._by_session.get(session_id, set())
        if len(watched | set(targets)) > MAX_SUBSCRIPTIONS:
            raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, "too many presence subscriptions")
        watched = self._by_session.setdefault(session_id, set())
        initial = {}
        for uid in targets:
            watched.add(uid)
            self._subs.setdefault(uid, {})[session_id] = viewer
            info = self.info(uid, viewer)
            self._told[(uid, session_id)] = info["status"]
            initial[str(uid)] = info
        return initial

    def unsubscribe(self, session_id: str, user_ids: list[int]) -> bool:
        if not user_ids or len(user_ids) > MAX_QUERY:
            raise InvalidParams(f"user_ids must name 1 to {MAX_QUERY} users")
        watched = self._by_session.get(session_id)
        for uid in user_ids:
            self._drop(uid, session_id)
            if watched is not None:
                watched.discard(uid)
        if watched is not None and not watched:
            del self._by_session[session_id]
        return True

    def subscribers(self, target: int) -> dict[str, int]:
        return dict(self._subs.get(target, {}))

    def session_ended(self, session_id: str) -> None:
        """The session is gone: its subscriptions end."""
        for uid in self._by_session.pop(session_id, ()):
            self._drop(uid, session_id)

    def _drop(self, target: int, session_id: str) -> None:
        subs = self._subs.get(target)
        if subs is not None:
            subs.pop(session_id, None)
            if not subs:
                del self._subs[target]
        self._told.pop((target, session_id), None)

    # ---- changes -------------------------------------------------------------------------------
    def changed(self, user_id: int, online: bool) -> None:
        """The user's first session started (``online``) or their last one ended: push the
        change to each subscribed session whose viewer sees a different status."""
        push = self.push
        subs = self._subs.get(user_id)
        if push is None or not subs:
            return
        now_s = self._clock() // 1000
        for session_id, viewer in list(subs.items()):
            info = self.info(user_id, viewer)
            old = self._told.get((user_id, session_id), OFFLINE)
            if info["status"] == old:
                continue
            self._told[(user_id, session_id)] = info["status"]
            push.push_presence(
                session_id,
                {
                    "user_id": user_id,
                    "old_status": old,
                    "new_status": info["status"],
                    "last_seen": info["last_seen"],
                    "online_devices": info["online_devices"],
                    "timestamp": now_s,
                },
            )

    def stats(self) -> dict[str, int]:
        return {"presence_subscriptions": sum(len(s) for s in self._subs.values())}


def _hidden(target: int) -> dict[str, Any]:
    return {"user_id": target, "status": OFFLINE, "last_seen": 0, "online_devices": []}

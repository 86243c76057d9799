"""Devices: what each device of a user said about itself, where and when it was last seen, its
push settings, and kicking a device (its logins revoked; the session layer ends its sessions).

The session layer reports each session's start (``connected``, at LOGIN, with the client
address the PROXY header carried) and end (``disconnected``); which devices are online right
now is kept here, in this process (like the hub's registry). A device's record is written when
it changes at LOGIN and at the end of its session, never per frame, and at the end of the
event loop's turn: several changes of one device in a turn are one write.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from ..config import Settings
from ..errors import ErrorCode, InvalidParams, ServiceError, StorageUnavailable
from .model import DeviceRecord
from .ports import DeviceStore, TokenStore

__all__ = ["DeviceService", "DEVICE_FIELDS", "PUSH_VENDORS", "MAX_LOGIN_IDS"]

#: the DeviceInfo fields of a LOGIN a device record keeps (each at most 64 characters)
DEVICE_FIELDS = ("device_type", "device_name", "device_model", "os_version", "app_version")
PUSH_VENDORS = (
    "apns",
    "fcm",
    "hms",
    "xiaomi",
    "oppo",
    "vivo",
    "honor",
    "lenovo",
    "zte",
    "meizu",
)
#: logins remembered per device (a kick revokes them); older ones are forgotten
MAX_LOGIN_IDS = 8


def _field(value: str) -> str:
    """A device-reported string, kept printable and short (the usual printable one as it is:
    one C call, not a generator over its characters, on every LOGIN)."""
    value = value[:64]
    if value.isprintable():
        return value
    return "".join(ch for ch in value if ch.isprintable())


class DeviceService:
    def __init__(
        self,
        settings: Settings,
        store: DeviceStore,
        tokens: TokenStore,
        clock: Callable[[], int],
    ) -> None:
        self.settings = settings
        self._store = store
        self._tokens = tokens
        self._clock = clock
        #: user -> device -> address, of the sessions online in this process
        self._live: dict[int, dict[str, str]] = {}
        #: called with (user id, online) when a user's first device comes online or the last
        #: one leaves (``PresenceService.changed``)
        self.on_change: Callable[[int, bool], None] | None = None
        #: runs a callback at the end of the event loop's turn (set by the composition root;
        #: None: records from LOGIN are written at once)
        self.schedule: Callable[[Callable[[], None]], object] | None = None
        #: records of LOGINs this turn, written at its end (``flush``): the write is then no
        #: part of the LOGIN frame, whose answer does not wait for it to be durable
        self._pending: dict[tuple[int, str], DeviceRecord] = {}

    # ---- sessions ------------------------------------------------------------------------------
    def connected(
        self,
        user_id: int,
        device_id: str,
        info: Mapping[str, str],
        address: str,
        login_id: str,
    ) -> None:
        """A session of the device started (after LOGIN)."""
        now = self._clock()
        old = self._pending.get((user_id, device_id)) or self._store.get_device(user_id, device_id)
        fields: dict[str, Any] = {k: _field(info.get(k, "")) for k in DEVICE_FIELDS}
        if old is None:
            record = DeviceRecord(
                user_id,
                device_id,
                first_seen=now,
                last_active=now,
                address=address,
                login_ids=(login_id,) if login_id else (),
                **fields,
            )
            self._later(record)
        else:
            changes: dict[str, Any] = {
                k: v for k, v in fields.items() if v and v != getattr(old, k)
            }
            if address != old.address:
                changes["address"] = address
            if login_id and login_id not in old.login_ids:
                changes["login_ids"] = (*old.login_ids, login_id)[-MAX_LOGIN_IDS:]
            if changes:
                changes["last_active"] = now
                self._later(dataclasses.replace(old, **changes))
        live = self._live.setdefault(user_id, {})
        first = not live
        live[device_id] = address
        if first and self.on_change is not None:
            self.on_change(user_id, True)

    def disconnected(self, user_id: int, device_id: str) -> None:
        """The device's session ended: its last active time and the user's last seen are now.
        The record is written at the end of the turn like a LOGIN's (a storm of ends and
        LOGINs in one turn writes each device once)."""
        live = self._live.get(user_id)
        if live is None or live.pop(device_id, None) is None:
            return
        now = self._clock()
        record = self._pending.get((user_id, device_id)) or self._store.get_device(
            user_id, device_id
        )
        if record is not None and record.last_active != now:
            self._later(dataclasses.replace(record, last_active=now))
        if not live:
            del self._live[user_id]
            try:
                self._store.set_last_seen(user_id, now)
            except StorageUnavailable:
                pass  # the store reports its failure; presence then shows the last time kept
            if self.on_change is not None:
                self.on_change(user_id, False)

    def _later(self, record: DeviceRecord) -> None:
        if self.schedule is None:
            self._keep(record)
            return
        if not self._pending:
            self.schedule(self.flush)
        self._pending[(record.user_id, record.device_id)] = record

    def flush(self) -> None:
        """Write the records of this turn's LOGINs (every other method does it first)."""
        pending = self._pending
        if pending:
            self._pending = {}
            for record in pending.values():
                self._keep(record)

    def _keep(self, record: DeviceRecord) -> None:
        """Write a device record from a session's start or end: a store refusing writes
        (disk full) must not fail the LOGIN or the disconnect, so it is skipped then."""
        try:
            self._store.put_device(record)
        except StorageUnavailable:
            pass

    def online(self, user_id: int) -> dict[str, str]:
        """device id -> address of the user's sessions online now."""
        return dict(self._live.get(user_id, {}))

    def is_online(self, user_id: int) -> bool:
        return user_id in self._live

    def online_types(self, user_id: int) -> list[str]:
        """The device types of the user's devices online now (``unknown`` when not said)."""
        out = []
        for device_id in self._live.get(user_id, {}):
            record = self._pending.get((user_id, device_id)) or self._store.get_device(
                user_id, device_id
            )
            known = record is not None and record.device_type
            out.append(record.device_type if record is not None and known else "unknown")
        return out

    def last_seen(self, user_id: int) -> int:
        """Unix ms: now when online, else when the user's last session ended (0: never)."""
        if user_id in self._live:
            return self._clock()
        return self._store.last_seen(user_id)

    # ---- device/* ------------------------------------------------------------------------------
    def devices(self, user_id: int) -> list[DeviceRecord]:
        self.flush()
        return self._store.devices_of(user_id)

    def device(self, user_id: int, device_id: str) -> DeviceRecord:
        self.flush()
        record = self._store.get_device(user_id, device_id)
        if record is None:
            raise ServiceError(ErrorCode.DEVICE_NOT_FOUND, "device not found")
        return record

    def push_update(
        self,
        user_id: int,
        device_id: str,
        apns_armed: bool,
        push_token: str | None,
        vendor: str | None,
    ) -> DeviceRecord:
        """Set a device's push settings (``device/push/update``); 20800 for a device the user
        never logged in with."""
        if vendor is not None and vendor not in PUSH_VENDORS:
            raise InvalidParams("unknown vendor")
        record = self.device(user_id, device_id)
        changed = dataclasses.replace(
            record,
            apns_armed=apns_armed,
            push_token=record.push_token if push_token is None else push_token,
            vendor=record.vendor if vendor is None else vendor,
        )
        self._store.put_device(changed)
        return changed

    def push_enabled(self, user_id: int) -> bool:
        """Whether any of the user's devices is armed for push."""
        self.flush()
        return any(d.apns_armed for d in self._store.devices_of(user_id))

    def kick(self, user_id: int, device_id: str, current: str) -> None:
        """Sign a device out: revoke the logins its sessions used and forget it. The caller's
        own device is refused (10200: that is ``account/auth/logout``); an unknown one 20800.
        The session layer ends its live sessions after the reply."""
        self.flush()
        if device_id == current:
            raise ServiceError(
                ErrorCode.OPERATION_NOT_ALLOWED, "this is the current device: log out instead"
            )
        record = self.device(user_id, device_id)
        self._revoke(record)
        self._store.delete_device(user_id, device_id)

    def kick_others(self, user_id: int, current: str) -> list[str]:
        """Kick every device of the user but ``current``; returns their ids."""
        self.flush()
        kicked = []
        for record in self._store.devices_of(user_id):
            if record.device_id == current:
                continue
            self._revoke(record)
            self._store.delete_device(user_id, record.device_id)
            kicked.append(record.device_id)
        for device_id in self._live.get(user_id, {}):  # online without a record: none today
            if device_id != current and device_id not in kicked:
                kicked.append(device_id)
        return kicked

    def _revoke(self, record: DeviceRecord) -> None:
        until = self._clock() // 1000 + max(
            self.settings.token_ttl, self.settings.refresh_token_ttl
        )
        for login_id in record.login_ids:
            self._tokens.revoke_token(login_id, until)

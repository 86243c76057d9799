"""Presence and devices as the session layer sees them: each session's start and end reported
to the services (``DeviceService.connected`` / ``disconnected``, the end of a session's
presence subscriptions), and presence changes pushed as PUB frames.

A change goes to a subscribed session as ``PublishRequest{channel_id: <user id>, topic:
"presence", timestamp: <unix s>, payload: <JSON OnlineStatusChangeNotification>, publisher:
"<user id>"}`` (docs/protocol.md, "Presence").
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..proto import privchat_pb2 as pb
from ..wire.commands import Cmd

if TYPE_CHECKING:
    from ..service import Services
    from .hub import Hub
    from .session import Session

__all__ = ["PresenceLink", "device_info"]

#: the DeviceInfo fields of a LOGIN kept for device/list
_INFO_FIELDS = ("device_type", "device_name", "device_model", "os_version", "app_version")


def device_info(req: pb.AuthorizationRequest) -> dict[str, str]:
    """What a LOGIN's DeviceInfo says about the device (device/list shows it)."""
    if not req.HasField("device_info"):
        return {}
    info = req.device_info
    return {k: getattr(info, k) for k in _INFO_FIELDS}


class PresenceLink:
    """The hub's watcher of sessions and the services' ``PresencePush``."""

    def __init__(self, services: Services, hub: Hub) -> None:
        self.services = services
        self.hub = hub

    def session_ended(self, session: Session, last: bool) -> None:
        """The hub dropped ``session``; ``last``: it was its device's current session."""
        services = self.services
        services.presence.session_ended(session.session_id)
        if last:
            services.devices.disconnected(session.user_id, session.device_id)

    def push_presence(self, session_id: str, note: dict[str, Any]) -> None:
        session = self.hub.session(session_id)
        if session is None or session.closed or not session.user_id:
            return
        user_id = note["user_id"]
        body = pb.PublishRequest(
            channel_id=user_id,
            topic="presence",
            timestamp=note["timestamp"],
            payload=json.dumps(note, separators=(",", ":")).encode(),
            publisher=str(user_id),
        ).SerializeToString()
        session.push_now(Cmd.PUB, body)
        self.hub.touch(session)

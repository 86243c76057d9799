"""``device/*``: push settings, the user's devices (with the last active time and the client
address their last session came from), and signing other devices out."""

from __future__ import annotations

from typing import Any

from ...service.model import DeviceRecord
from ..params import flag, opt_text, text
from ..table import RouteTable, RpcContext
from ..views import iso

routes = RouteTable()


def _push_view(record: DeviceRecord, connected: bool) -> dict[str, Any]:
    return {
        "device_id": record.device_id,
        "apns_armed": record.apns_armed,
        "connected": connected,
        "platform": record.device_type or "unknown",
        "vendor": record.vendor or None,
    }


@routes.route("device/push/update", keys=("device_id", "apns_armed", "push_token", "vendor"))
def push_update(ctx: RpcContext, body: dict[str, Any]) -> Any:
    device_id = text(body, "device_id", 64)
    armed = flag(body, "apns_armed")
    push_token = opt_text(body, "push_token", 512)
    vendor = opt_text(body, "vendor", 16)
    devices = ctx.services.devices
    record = devices.push_update(ctx.user_id, device_id, armed, push_token, vendor)
    return {
        "device_id": record.device_id,
        "apns_armed": record.apns_armed,
        "user_push_enabled": devices.push_enabled(ctx.user_id),
    }


@routes.route("device/push/status", keys=("device_id",))
def push_status(ctx: RpcContext, body: dict[str, Any]) -> Any:
    device_id = opt_text(body, "device_id", 64)
    devices = ctx.services.devices
    online = devices.online(ctx.user_id)
    records = (
        [devices.device(ctx.user_id, device_id)]
        if device_id is not None
        else devices.devices(ctx.user_id)
    )
    return {
        "devices": [_push_view(r, r.device_id in online) for r in records],
        "user_push_enabled": devices.push_enabled(ctx.user_id),
    }


@routes.route("device/list", keys=())
def device_list(ctx: RpcContext, body: dict[str, Any]) -> Any:
    """Every device of the user, first seen first: ``online`` ones were active now."""
    devices = ctx.services.devices
    online = devices.online(ctx.user_id)
    now = ctx.services.clock()
    out = []
    for r in devices.devices(ctx.user_id):
        live = r.device_id in online
        last = now if live else r.last_active
        out.append(
            {
                "device_id": r.device_id,
                "device_type": r.device_type or "unknown",
                "device_name": r.device_name,
                "device_model": r.device_model,
                "os_version": r.os_version,
                "app_version": r.app_version,
                "is_current": r.device_id == ctx.device_id,
                "online": live,
                "ip_address": online.get(r.device_id, r.address),
                "last_active_at": last,
                "last_active": iso(last),
                "first_login_at": r.first_seen,
                "apns_armed": r.apns_armed,
            }
        )
    return {"devices": out, "total": len(out)}


@routes.route("device/kick_device", keys=("device_id",))
def kick_device(ctx: RpcContext, body: dict[str, Any]) -> Any:
    """Sign one other device out: its logins are revoked and its sessions end now with
    LOGOUT flow 2 UNAUTHENTICATED (10003)."""
    device_id = text(body, "device_id", 64)
    ctx.services.devices.kick(ctx.user_id, device_id, ctx.device_id)
    ended = ctx.caller.end_devices((device_id,))
    return {"success": True, "device_id": device_id, "kicked_sessions": ended}


@routes.route("device/kick_other_devices", keys=())
def kick_other_devices(ctx: RpcContext, body: dict[str, Any]) -> Any:
    kicked = ctx.services.devices.kick_others(ctx.user_id, ctx.device_id)
    ended = ctx.caller.end_devices(kicked)
    return {
        "success": True,
        "kicked_devices": kicked,
        "count": len(kicked),
        "kicked_sessions": ended,
    }

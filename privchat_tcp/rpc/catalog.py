"""Every PrivChat route name this server is to serve (reference section 6): the 83 route
constants of privchat-protocol 0.1.1 and the 8 routes only server 0.1 registers."""

from __future__ import annotations

__all__ = ["CONSTANTS", "SERVER_ONLY", "ALL", "ANONYMOUS"]

CONSTANTS: tuple[str, ...] = (
    "account/auth/login",
    "account/auth/logout",
    "account/auth/refresh",
    "account/user/detail",
    "account/user/share_card",
    "account/user/register",
    "account/user/update",
    "account/profile/get",
    "account/profile/update",
    "account/search/query",
    "account/search/by_qrcode",
    "account/privacy/get",
    "account/privacy/update",
    "contact/friend/apply",
    "contact/friend/accept",
    "contact/friend/reject",
    "contact/friend/remove",
    "contact/friend/pending",
    "contact/friend/check",
    "contact/blacklist/add",
    "contact/blacklist/remove",
    "contact/blacklist/list",
    "contact/blacklist/check",
    "group/group/create",
    "group/group/info",
    "group/member/add",
    "group/member/remove",
    "group/member/list",
    "group/member/leave",
    "group/member/mute",
    "group/member/unmute",
    "group/role/transfer_owner",
    "group/role/set",
    "group/settings/get",
    "group/settings/update",
    "group/settings/mute_all",
    "group/approval/list",
    "group/approval/handle",
    "group/qrcode/generate",
    "group/join/qrcode",
    "message/revoke",
    "message/history/get",
    "message/status/read",
    "message/status/count",
    "message/status/read_list",
    "message/status/read_stats",
    "message/reaction/add",
    "message/reaction/remove",
    "message/reaction/list",
    "message/reaction/stats",
    "channel/direct/get_or_create",
    "channel/pin",
    "channel/hide",
    "channel/mute",
    "channel/broadcast/create",
    "channel/broadcast/subscribe",
    "channel/broadcast/list",
    "channel/content/publish",
    "channel/content/list",
    "file/request_upload_token",
    "file/upload_callback",
    "presence/subscribe",
    "presence/unsubscribe",
    "presence/typing",
    "presence/status/get",
    "device/push/update",
    "device/push/status",
    "sticker/package/list",
    "sticker/package/detail",
    "qrcode/generate",
    "qrcode/resolve",
    "qrcode/refresh",
    "qrcode/revoke",
    "qrcode/list",
    "user/qrcode/generate",
    "user/qrcode/refresh",
    "user/qrcode/get",
    "sync/submit",
    "sync/get_difference",
    "sync/get_channel_pts",
    "sync/batch_get_channel_pts",
    "sync/session_ready",
    "entity/sync_entities",
)

SERVER_ONLY: tuple[str, ...] = (
    "message/status/read_pts",
    "device/list",
    "device/kick_device",
    "device/kick_other_devices",
    "account/settings/update",
    "file/validate_token",
    "channel/channel/create",
    "channel/channel/subscribe",
)

#: the PrivChat routes and this server's own (``system/*``)
ALL: frozenset[str] = frozenset(CONSTANTS + SERVER_ONLY + ("system/health", "system/info"))

#: served before login
ANONYMOUS: frozenset[str] = frozenset(
    ("account/auth/login", "account/user/register", "account/auth/refresh")
    + ("system/health", "system/info")
)

assert len(CONSTANTS) == 83 and len(set(CONSTANTS)) == 83
assert len(SERVER_ONLY) == 8

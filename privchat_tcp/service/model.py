"""The data model the services and every store share: plain values, no I/O.

``Record`` (one committed event of a channel's log), ``DedupEntry`` and ``SendResult`` (what
an MS's commit answers) have a compiled twin
(``ext/_record_c.pyx``) picked by ``_ext``; a record is never changed by the service after it
is committed (the store's ``mark_revoked`` is the one change the log allows).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .._ext import twins

if TYPE_CHECKING:
    from ._record_py import DedupEntry, Record, SendResult, own_key, unindex
else:  # the compiled twin keeps the store's millions of records out of the cyclic GC
    _records = twins("privchat_tcp.service", "record")
    Record = _records.impl.Record
    DedupEntry = _records.impl.DedupEntry
    SendResult = _records.impl.SendResult
    own_key = _records.impl.own_key
    unindex = _records.impl.unindex

__all__ = [
    "User",
    "Channel",
    "Member",
    "Record",
    "DedupEntry",
    "SendResult",
    "own_key",
    "unindex",
    "KIND_MESSAGE",
    "KIND_REVOKE",
    "SYSTEM_MESSAGE",
    "DIRECT",
    "GROUP",
    "ROLE_OWNER",
    "ROLE_ADMIN",
    "ROLE_MEMBER",
    "ROLE_NAMES",
    "SYSTEM_USER_ID",
    "FriendRequest",
    "QRCode",
    "JoinRequest",
    "GroupQR",
    "JOIN_PENDING",
    "JOIN_APPROVED",
    "JOIN_REJECTED",
    "ChannelPrefs",
    "Broadcast",
    "BroadcastPost",
    "FileRecord",
    "DeviceRecord",
    "FILE_PENDING",
    "FILE_UPLOADED",
    "FILE_CONFIRMED",
    "FILE_FAILED",
]

KIND_MESSAGE = 0  # Record.kind
KIND_REVOKE = 1
SYSTEM_MESSAGE = 5  # message_type of a revoke event

DIRECT = 1  # wire channel_type
GROUP = 2

ROLE_OWNER = 0  # PrivChat 0.1 numbering
ROLE_ADMIN = 1
ROLE_MEMBER = 2
ROLE_NAMES = {ROLE_OWNER: "Owner", ROLE_ADMIN: "Admin", ROLE_MEMBER: "Member"}

SYSTEM_USER_ID = 1  # the sender of System messages (PrivChat: user 1); no account has it

JOIN_PENDING = 0  # JoinRequest.status
JOIN_APPROVED = 1
JOIN_REJECTED = 2


@dataclasses.dataclass(slots=True)
class User:
    user_id: int
    username: str
    password_hash: str
    nickname: str
    phone: str | None = None
    email: str | None = None
    avatar_url: str | None = None
    user_type: int = 0
    created_at: int = 0  # unix ms


@dataclasses.dataclass(slots=True)
class Member:
    user_id: int
    role: int
    joined_at: int  # unix ms
    mute_until: int = 0  # unix ms; -1 = permanent
    join_pts: int = 0  # the channel's pts when the member joined: their history starts after it


@dataclasses.dataclass(slots=True)
class Channel:
    channel_id: int
    channel_type: int
    created_at: int
    members: dict[int, Member]
    # groups only
    name: str = ""
    description: str | None = None
    avatar_url: str | None = None
    owner_id: int = 0
    updated_at: int = 0
    all_muted: bool = False
    max_members: int = 500
    join_need_approval: bool = False
    member_can_invite: bool = True
    announcement: str | None = None
    dissolved: bool = False  # its last member left: no longer found as a group


@dataclasses.dataclass(slots=True)
class JoinRequest:
    """A request to join a group that waits for an owner's or admin's decision."""

    request_id: int
    group_id: int
    user_id: int
    inviter_id: int  # 0: by QR code
    qr_key: str  # "" : by invitation
    message: str | None
    created_at: int  # unix ms
    expires_at: int  # unix ms
    status: int = JOIN_PENDING
    handled_by: int = 0
    handled_at: int = 0


@dataclasses.dataclass(slots=True)
class GroupQR:
    """A group's join QR code: ``qr_key`` names it, ``token`` proves it was scanned."""

    qr_key: str
    group_id: int
    token: str
    creator_id: int
    created_at: int  # unix ms
    expires_at: int  # unix ms


# ---- accounts and contacts -------------------------------------------------------------------
SYSTEM_USER_ID = 1  # the sender of notices (reference 5.6: ids 1-99 are system users)


@dataclasses.dataclass(slots=True)
class FriendRequest:
    from_user_id: int
    to_user_id: int
    message: str | None
    source: str | None
    source_id: str | None
    created_at: int  # unix ms


@dataclasses.dataclass(slots=True)
class QRCode:
    """A QR code (or a shared contact card, ``qr_type`` "card"): a capability naming a target."""

    qr_key: str
    qr_type: str  # user, group, auth, feature, card
    target_id: int
    creator_id: int
    token: str
    created_at: int  # unix ms
    expire_at: int = 0  # unix ms; 0 = never
    max_usage: int = 0  # 0 = unlimited
    used_count: int = 0
    revoked_at: int = 0  # unix ms; 0 = not revoked
    metadata: str = ""  # JSON text, the creator's


# ---- channels: per-user preferences, broadcast channels (issue 12) ----------------------------
@dataclasses.dataclass(slots=True)
class ChannelPrefs:
    """One user's preferences for one channel (``channel/pin``, ``channel/hide``,
    ``channel/mute``)."""

    user_id: int
    channel_id: int
    pinned_at: int = 0  # unix ms; 0 = not pinned
    muted: bool = False
    hidden_pts: int = -1  # the channel's pts when hidden (-1: not hidden); a later message shows it
    updated_at: int = 0  # unix ms


@dataclasses.dataclass(slots=True)
class Broadcast:
    """A broadcast channel: its owner publishes, its subscribers read."""

    channel_id: int  # from the channel ids: never the id of a direct or group channel
    owner_id: int
    name: str
    description: str | None
    avatar_url: str | None
    created_at: int  # unix ms
    subscribers: dict[int, int] = dataclasses.field(default_factory=dict)  # user -> since (ms)


@dataclasses.dataclass(slots=True)
class BroadcastPost:
    """One piece of content published to a broadcast channel."""

    content_id: int
    channel_id: int
    author_id: int
    content: str
    title: str | None
    content_type: str
    created_at: int  # unix ms


# ---- files and devices (issue 12) ------------------------------------------------------------
FILE_PENDING = 0  # FileRecord.status: a token was issued, nothing uploaded yet
FILE_UPLOADED = 1  # the bytes are stored
FILE_CONFIRMED = 2  # the client's file/upload_callback confirmed it
FILE_FAILED = 3  # the client reported a failed upload; the token is spent


@dataclasses.dataclass(slots=True)
class FileRecord:
    """An uploaded file (or one whose upload token was issued): who owns it, what it may be."""

    file_id: int
    owner_id: int
    filename: str
    mime_type: str
    file_type: str  # image, video, audio, file, other
    business_type: str  # message, avatar, group_avatar ...
    max_size: int  # bytes the upload may have (the declared file_size)
    token_hash: str  # SHA-256 hex of the upload token
    expires_at: int  # unix ms: the token's end
    created_at: int  # unix ms
    status: int = FILE_PENDING
    size: int = 0  # bytes stored
    sha256: str = ""  # of the stored bytes
    access_hash: str = ""  # SHA-256 hex of the download key (the capability in file_url)
    uploaded_at: int = 0  # unix ms
    width: int = 0  # images, when known
    height: int = 0


@dataclasses.dataclass(slots=True)
class DeviceRecord:
    """A device of a user: what it said about itself at LOGIN, where and when it was last
    seen, its push settings, and the logins its sessions used (a kick revokes them)."""

    user_id: int
    device_id: str
    device_type: str = ""  # ios, android, web, macos, windows, linux, iot, unknown
    device_name: str = ""
    device_model: str = ""
    os_version: str = ""
    app_version: str = ""
    first_seen: int = 0  # unix ms
    last_active: int = 0  # unix ms: its last session's end (or start)
    address: str = ""  # the client address of its last session (the PROXY header's)
    login_ids: tuple[str, ...] = ()  # the last logins (``lid``) its sessions used
    apns_armed: bool = False
    push_token: str = ""
    vendor: str = ""

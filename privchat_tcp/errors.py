"""Status classes, PrivChat error codes and the exception tree.

::

    PrivchatError(Exception)
    ├── ServiceError                 a request failed with a PrivChat ErrorCode; connection stays up
    │   │ (status class derived from the code, PROTOCOL.md section 4)
    │   └── the named errors below   the code on the class (ChannelNotFound, NotGroupMember ...)
    ├── ProtocolViolation            the peer broke the wire contract; status + whether to close
    ├── InvalidState(RuntimeError)   local misuse, e.g. sending on a closed client
    └── ConfigError(ValueError)      a bad setting

Messages never carry secrets: say "invalid token", not which part of it.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "Status",
    "ErrorCode",
    "PrivchatError",
    "ServiceError",
    "ProtocolViolation",
    "InvalidState",
    "ConfigError",
    "InvalidParams",
    "UserNotFound",
    "ChannelNotFound",
    "GroupNotFound",
    "NotGroupMember",
    "NotChannelMember",
    "ChannelTypeMismatch",
    "MessageNotFound",
    "AuthRequired",
    "InvalidToken",
    "TokenRevoked",
    "StorageUnavailable",
    "status_for_code",
    "STATUS_NAMES",
]


class Status:
    """The status byte of a response (PROTOCOL.md section 4)."""

    OK: Final = 0
    BAD_REQUEST: Final = 1
    UNAUTHENTICATED: Final = 2
    FORBIDDEN: Final = 3
    NOT_FOUND: Final = 4
    CONFLICT: Final = 5
    TOO_LARGE: Final = 6
    RATE_LIMITED: Final = 7
    UNSUPPORTED: Final = 8
    CRYPTO: Final = 9
    BUSY: Final = 10
    GOING_AWAY: Final = 11
    TIMEOUT: Final = 12
    REPLACED: Final = 13
    SLOW_CONSUMER: Final = 14
    INTERNAL: Final = 15


STATUS_NAMES: Final[dict[int, str]] = {
    v: k for k, v in vars(Status).items() if not k.startswith("_") and isinstance(v, int)
}


class ErrorCode:
    """PrivChat 0.1.1 ErrorCode values used by this server (reference section 8)."""

    OK: Final = 0
    SYSTEM_ERROR: Final = 1
    SYSTEM_BUSY: Final = 2
    SERVICE_UNAVAILABLE: Final = 3
    INTERNAL_ERROR: Final = 4
    TIMEOUT: Final = 5
    MAINTENANCE: Final = 6
    PROTOCOL_ERROR: Final = 100
    UNSUPPORTED_PROTOCOL: Final = 101
    INVALID_PACKET: Final = 102
    PACKET_TOO_LARGE: Final = 103
    ENCODING_ERROR: Final = 104
    DECODING_ERROR: Final = 105
    AUTH_REQUIRED: Final = 10000
    INVALID_TOKEN: Final = 10001
    TOKEN_EXPIRED: Final = 10002
    TOKEN_REVOKED: Final = 10003
    PERMISSION_DENIED: Final = 10004
    SESSION_EXPIRED: Final = 10005
    SESSION_NOT_FOUND: Final = 10006
    INVALID_PARAMS: Final = 10100
    MISSING_REQUIRED_PARAM: Final = 10101
    INVALID_PARAM_TYPE: Final = 10102
    PARAM_OUT_OF_RANGE: Final = 10103
    INVALID_FORMAT: Final = 10104
    INVALID_JSON: Final = 10105
    PAYLOAD_TOO_LARGE: Final = 10106
    OPERATION_NOT_ALLOWED: Final = 10200
    RESOURCE_NOT_FOUND: Final = 10201
    RESOURCE_ALREADY_EXISTS: Final = 10202
    DUPLICATE_OPERATION: Final = 10204
    RATE_LIMIT_EXCEEDED: Final = 10300
    CONCURRENT_LIMIT_EXCEEDED: Final = 10303
    MESSAGE_NOT_FOUND: Final = 20000
    MESSAGE_REVOKED: Final = 20002
    MESSAGE_TOO_LARGE: Final = 20004
    MESSAGE_CONTENT_INVALID: Final = 20006
    MESSAGE_CANNOT_REVOKE: Final = 20007
    SEND_MESSAGE_TOO_FAST: Final = 20009
    USER_NOT_FOUND: Final = 20200
    USER_ALREADY_EXISTS: Final = 20201
    GROUP_NOT_FOUND: Final = 20300
    GROUP_FULL: Final = 20302
    NOT_GROUP_MEMBER: Final = 20303
    NOT_GROUP_ADMIN: Final = 20304
    NOT_GROUP_OWNER: Final = 20305
    GROUP_MUTED: Final = 20306
    MEMBER_MUTED: Final = 20307
    MEMBER_ALREADY_IN_GROUP: Final = 20308
    CANNOT_REMOVE_OWNER: Final = 20309
    CHANNEL_NOT_FOUND: Final = 20500
    STORAGE_QUOTA_EXCEEDED: Final = 20606
    DEVICE_LIMIT_EXCEEDED: Final = 20801
    # accounts and contacts (issue 12)
    FRIEND_NOT_FOUND: Final = 20400
    ALREADY_FRIENDS: Final = 20401
    BLOCKED_BY_USER: Final = 20402  # the peer blocked the caller
    USER_IN_BLACKLIST: Final = 20403  # the caller blocked the peer
    FRIEND_REQUEST_EXPIRED: Final = 20404  # no pending request
    GROUP_ADD_FRIEND_PERSONAL_DISABLED: Final = 20312
    NICKNAME_INVALID: Final = 20205
    QRCODE_NOT_FOUND: Final = 20700
    QRCODE_EXPIRED: Final = 20701
    QRCODE_USED: Final = 20702
    QRCODE_REVOKED: Final = 20703
    QRCODE_LIMIT_EXCEEDED: Final = 20704
    # files and devices (issue 12)
    FILE_NOT_FOUND: Final = 20600
    FILE_UPLOAD_FAILED: Final = 20601
    FILE_TOO_LARGE: Final = 20602
    FILE_TYPE_NOT_ALLOWED: Final = 20603
    UPLOAD_TOKEN_INVALID: Final = 20604
    UPLOAD_TOKEN_EXPIRED: Final = 20605
    DEVICE_NOT_FOUND: Final = 20800


_EXACT: Final[dict[int, int]] = {
    0: Status.OK,
    1: Status.INTERNAL,
    2: Status.BUSY,
    3: Status.GOING_AWAY,
    4: Status.INTERNAL,
    5: Status.TIMEOUT,
    6: Status.GOING_AWAY,
    7: Status.INTERNAL,
    8: Status.INTERNAL,
    9: Status.INTERNAL,
    101: Status.UNSUPPORTED,
    103: Status.TOO_LARGE,
    10004: Status.FORBIDDEN,
    10007: Status.FORBIDDEN,
    10008: Status.FORBIDDEN,
    10106: Status.TOO_LARGE,
    10200: Status.FORBIDDEN,
    10201: Status.NOT_FOUND,
    20002: Status.CONFLICT,
    20004: Status.TOO_LARGE,
    20009: Status.RATE_LIMITED,
    20201: Status.CONFLICT,
    20303: Status.FORBIDDEN,
    20304: Status.FORBIDDEN,
    20305: Status.FORBIDDEN,
    20306: Status.FORBIDDEN,
    20307: Status.FORBIDDEN,
    20308: Status.CONFLICT,
    20309: Status.FORBIDDEN,
    20401: Status.CONFLICT,
    20402: Status.FORBIDDEN,
    20403: Status.FORBIDDEN,
    20602: Status.TOO_LARGE,
    20606: Status.TOO_LARGE,  # the stored-bytes quota (max_stored_bytes_per_user)
    20801: Status.BUSY,
    20312: Status.FORBIDDEN,  # the target does not allow being added via a group
    20404: Status.NOT_FOUND,  # no pending friend request
    20701: Status.CONFLICT,  # QR code expired, used up, revoked, too many
    20702: Status.CONFLICT,
    20703: Status.CONFLICT,
    20704: Status.CONFLICT,
}


def status_for_code(code: int) -> int:
    """Map a PrivChat ErrorCode number to its status class (PROTOCOL.md section 4)."""
    status = _EXACT.get(code)
    if status is not None:
        return status
    if 100 <= code <= 199:
        return Status.BAD_REQUEST
    if 200 <= code <= 299:
        return Status.UNSUPPORTED
    if 10000 <= code <= 10099:
        return Status.UNAUTHENTICATED
    if 10100 <= code <= 10199:
        return Status.BAD_REQUEST
    if 10200 <= code <= 10299:
        return Status.CONFLICT
    if 10300 <= code <= 10399:
        return Status.RATE_LIMITED
    if code >= 20000 and code % 100 == 0:
        return Status.NOT_FOUND
    if code >= 20000:
        return Status.BAD_REQUEST
    return Status.INTERNAL


class PrivchatError(Exception):
    """Root of every error this package raises."""


class ServiceError(PrivchatError):
    """A request failed; ``code`` is the PrivChat ErrorCode, ``status`` its class."""

    def __init__(self, code: int, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status_for_code(code) if status is None else status


class ProtocolViolation(PrivchatError):
    """The peer broke the wire contract."""

    def __init__(self, status: int, code: int, message: str, close: bool) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.close = close


class InvalidState(PrivchatError, RuntimeError):
    """Local misuse of an object, e.g. sending on a closed client."""


class ConfigError(PrivchatError, ValueError):
    """A setting has a bad value."""


class _Named(ServiceError):
    """A ServiceError whose code (and so status) belongs to the class, as asyncpg's sqlstate."""

    CODE: int = ErrorCode.SYSTEM_ERROR
    DEFAULT: str = "error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(self.CODE, self.DEFAULT if message is None else message)


class InvalidParams(_Named):
    CODE = ErrorCode.INVALID_PARAMS
    DEFAULT = "invalid parameters"


class UserNotFound(_Named):
    CODE = ErrorCode.USER_NOT_FOUND
    DEFAULT = "user not found"


class ChannelNotFound(_Named):
    CODE = ErrorCode.CHANNEL_NOT_FOUND
    DEFAULT = "channel not found"


class GroupNotFound(_Named):
    CODE = ErrorCode.GROUP_NOT_FOUND
    DEFAULT = "group not found"


class NotGroupMember(_Named):
    CODE = ErrorCode.NOT_GROUP_MEMBER
    DEFAULT = "not a member of this group"


class NotChannelMember(_Named):
    CODE = ErrorCode.PERMISSION_DENIED
    DEFAULT = "not a member of this channel"


class ChannelTypeMismatch(_Named):
    CODE = ErrorCode.INVALID_PARAMS
    DEFAULT = "channel_type does not match the channel"


class MessageNotFound(_Named):
    CODE = ErrorCode.MESSAGE_NOT_FOUND
    DEFAULT = "message not found"


class AuthRequired(_Named):
    CODE = ErrorCode.AUTH_REQUIRED
    DEFAULT = "login required"


class InvalidToken(_Named):
    CODE = ErrorCode.INVALID_TOKEN
    DEFAULT = "invalid token"


class TokenRevoked(_Named):
    CODE = ErrorCode.TOKEN_REVOKED
    DEFAULT = "token revoked"


class StorageUnavailable(_Named):
    """The store cannot make writes durable right now (disk full, I/O error): retry later."""

    CODE = ErrorCode.SYSTEM_BUSY
    DEFAULT = "storage unavailable; retry later"

"""privchat-tcp: an instant-messaging server for the PrivChat model over a binary TCP protocol."""

from ._version import __version__
from .app import Server, serve
from .client import Client, Push
from .config import Settings, load_settings
from .errors import (
    ConfigError,
    ErrorCode,
    InvalidState,
    PrivchatError,
    ProtocolViolation,
    ServiceError,
    Status,
)
from .wire.commands import Cmd
from .wire.connection import Connection, Side
from .wire.frame import IMPL, decode_header, encode_header, split_frames

__all__ = [
    "__version__",
    "Client",
    "Push",
    "Settings",
    "load_settings",
    "ConfigError",
    "ErrorCode",
    "InvalidState",
    "PrivchatError",
    "ProtocolViolation",
    "ServiceError",
    "Status",
    "IMPL",
    "decode_header",
    "encode_header",
    "split_frames",
    "Cmd",
    "Connection",
    "Side",
    "Server",
    "serve",
]

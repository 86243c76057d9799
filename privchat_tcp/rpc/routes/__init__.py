"""The route modules, one per PrivChat prefix; each declares ``routes``, a ``RouteTable``."""

from __future__ import annotations

from ..table import RouteTable
from . import (
    account,
    channel,
    contact,
    device,
    entity,
    file,
    group,
    message,
    presence,
    qrcode,
    sticker,
    sync,
    system,
)

__all__ = ["TABLES", "all_routes"]

TABLES: tuple[RouteTable, ...] = (
    system.routes,
    account.routes,
    group.routes,
    message.routes,
    sync.routes,
    presence.routes,
    entity.routes,
    channel.routes,
    contact.routes,
    qrcode.routes,
    file.routes,
    device.routes,
    sticker.routes,
)


def all_routes() -> RouteTable:
    """A new table with every route this server serves."""
    return RouteTable.merge(*TABLES)

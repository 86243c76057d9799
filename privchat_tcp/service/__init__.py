"""The service layer: the rules about users, channels, messages and sync.

No bytes from the wire (but message payloads), no asyncio, no store implementation: a store is
reached through ``ports`` and sessions through ``ports.Delivery``; the clock is passed in.
``Services`` is the bundle the composition root builds and the commands and routes call.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..config import Settings
from .accounts import AccountService
from .auth import PasswordHasher, TokenIssuer
from .channels import ChannelService
from .devices import DeviceService
from .files import FileService
from .messages import MessageService, SendResult
from .ports import Delivery, Durability, Store
from .presence import PresenceService
from .stickers import StickerCatalogue

__all__ = ["Services", "SendResult", "now_ms"]


def now_ms() -> int:
    """The wall clock in unix ms: the default ``clock`` of ``Services``."""
    return time.time_ns() // 1_000_000


class Services:
    """Every service over one store, sharing one clock."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        delivery: Delivery,
        tokens: TokenIssuer,
        passwords: PasswordHasher,
        clock: Callable[[], int] = now_ms,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.epoch = store.epoch
        #: the store's write numbering: the session layer holds acknowledgements on it
        self.durability: Durability = store
        self.accounts = AccountService(store, store, tokens, passwords, clock, store.epoch)
        self.channels = ChannelService(settings, store, store, store, clock)
        self.messages = MessageService(
            settings, self.channels, store, store, store, delivery, clock, monotonic
        )
        # files, devices, presence, stickers (issue 12)
        self.files = FileService(settings, store, clock)
        self.messages.files = self.files
        self.devices = DeviceService(settings, store, store, clock)
        self.presence = PresenceService(self.devices, store, store, store, clock)
        self.devices.on_change = self.presence.changed
        #: the default set until the composition root loads the data directory's catalogue
        self.stickers = StickerCatalogue.load(None, settings.file_base_url)

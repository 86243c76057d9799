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
from .broadcasts import BroadcastService
from .channels import ChannelService
from .conversations import ConversationService
from .devices import DeviceService
from .entities import EntityFeed, EntitySync
from .files import FileService
from .groups import GroupService
from .messages import MessageService, SendResult
from .ports import Delivery, Durability, Store
from .presence import PresenceService
from .profiles import ProfileService, QRCodeService
from .reactions import ReactionService
from .reads import ReadService
from .social import Notifier, PrivacyService, SocialService
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
        #: entity versions: every service that changes an entity bumps it through this
        self.feed = EntityFeed(store)
        self.accounts = AccountService(
            store, store, tokens, passwords, clock, store.epoch, feed=self.feed, phones=store
        )
        self.channels = ChannelService(settings, store, store, store, clock, feed=self.feed)
        self.messages = MessageService(
            settings, self.channels, store, store, store, delivery, clock, monotonic, store
        )
        self.groups = GroupService(
            settings, self.channels, self.messages, store, store, store, clock
        )
        # channels (issue 12): direct channels' sources, pin/mute/hide, broadcast channels,
        # and the read side of entity versions
        self.conversations = ConversationService(
            self.channels, store, store, store, store, store, self.feed, clock
        )
        self.broadcasts = BroadcastService(store, clock)
        self.entities = EntitySync(
            store, store, store, store, store, store, store, store, store, settings.max_reply_bytes
        )
        self.reads = ReadService(self.channels, store, store, delivery, clock)
        self.reactions = ReactionService(self.channels, store, store, clock, delivery)
        # accounts and contacts (issue 12): privacy, friends, blacklists, profiles, QR codes
        self.notices = Notifier(store, store, delivery, self.messages.ids, clock)
        self.notices.feed = self.feed
        self.privacy = PrivacyService(store, store, clock, store)
        self.social = SocialService(
            settings,
            store,
            store,
            store,
            store,
            store,
            store,
            self.channels,
            self.privacy,
            self.notices,
            clock,
        )
        self.profiles = ProfileService(
            settings, store, store, store, store, self.social, self.privacy, clock
        )
        self.qrcodes = QRCodeService(
            settings, store, self.channels, self.social, self.privacy, clock
        )
        self.messages.send_rule = self.social.check_send
        # one rule for opening a direct channel (get_or_create and an MS to a peer)
        self.conversations.contact_rule = self.social.check_contact
        # files, devices, presence, stickers (issue 12)
        self.files = FileService(settings, store, clock)
        self.messages.files = self.files
        self.devices = DeviceService(settings, store, store, clock)
        self.presence = PresenceService(self.devices, store, store, store, clock)
        self.devices.on_change = self.presence.changed
        #: the default set until the composition root loads the data directory's catalogue
        self.stickers = StickerCatalogue.load(None, settings.file_base_url)

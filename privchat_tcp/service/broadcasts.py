"""Broadcast channels (reference 6 and 7.5: ``channel/broadcast/*``, ``channel/content/*``, and
server 0.1's ``channel/channel/create|subscribe``).

Anyone may create one (and is its owner and first subscriber), list them (a directory, newest
first) and subscribe; only the owner publishes; the owner and the subscribers read the content
(newest first). Broadcast channels take their ids from the channel ids, so an id names one
channel of one kind; they have no message log (content is not a message: no MS, no pts).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..errors import ChannelNotFound, ErrorCode, InvalidParams, ServiceError
from .model import Broadcast, BroadcastPost
from .ports import BroadcastStore

__all__ = ["BroadcastService", "MAX_CONTENT", "MAX_PAGE_SIZE", "DEFAULT_PAGE_SIZE"]

MAX_NAME = 128
MAX_DESCRIPTION = 1024
MAX_URL = 1024
MAX_TITLE = 256
MAX_CONTENT = 16384
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
#: a content type: a short lower-case word ("text", "image", "link", ...)
_CONTENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,31}")


class BroadcastService:
    def __init__(self, store: BroadcastStore, clock: Callable[[], int]) -> None:
        self._store = store
        self._clock = clock

    def get(self, channel_id: int) -> Broadcast:
        bc = self._store.get_broadcast(channel_id)
        if bc is None:
            raise ChannelNotFound("broadcast channel not found")
        return bc

    def create(
        self, owner_id: int, name: str, description: str | None, avatar_url: str | None
    ) -> Broadcast:
        name = name.strip()
        if not name or len(name) > MAX_NAME:
            raise InvalidParams(f"name must be 1-{MAX_NAME} characters")
        if description is not None and len(description) > MAX_DESCRIPTION:
            raise InvalidParams("description too long")
        if avatar_url is not None and len(avatar_url) > MAX_URL:
            raise InvalidParams("avatar_url too long")
        return self._store.create_broadcast(owner_id, name, description, avatar_url, self._clock())

    def subscribe(self, user_id: int, channel_id: int) -> int:
        """When the user's subscription started (now, or earlier if already subscribed)."""
        self.get(channel_id)
        return self._store.subscribe_broadcast(channel_id, user_id, self._clock())

    @staticmethod
    def page(page: int, page_size: int) -> tuple[int, int]:
        """(offset, limit) of a 1-based page (0: the first) of ``page_size`` (0: default)."""
        if page_size == 0:
            page_size = DEFAULT_PAGE_SIZE
        if page_size > MAX_PAGE_SIZE:
            raise ServiceError(
                ErrorCode.PARAM_OUT_OF_RANGE, f"page_size must be at most {MAX_PAGE_SIZE}"
            )
        page = max(page, 1)
        if page > 1_000_000:
            raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, "page out of range")
        return (page - 1) * page_size, page_size

    def directory(self, page: int, page_size: int) -> tuple[list[Broadcast], int]:
        offset, limit = self.page(page, page_size)
        return self._store.list_broadcasts(offset, limit), self._store.broadcast_count()

    def publish(
        self,
        user_id: int,
        channel_id: int,
        content: str,
        title: str | None,
        content_type: str | None,
    ) -> BroadcastPost:
        bc = self.get(channel_id)
        if bc.owner_id != user_id:
            raise ServiceError(ErrorCode.PERMISSION_DENIED, "only the channel's owner publishes")
        if not content.strip():
            raise InvalidParams("content must not be empty")
        if len(content) > MAX_CONTENT:
            raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, "content too long")
        if title is not None and len(title) > MAX_TITLE:
            raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, "title too long")
        kind = "text" if content_type is None else content_type
        if _CONTENT_TYPE.fullmatch(kind) is None:
            raise InvalidParams("content_type must be a short lower-case word")
        return self._store.publish_post(channel_id, user_id, content, title, kind, self._clock())

    def content(
        self, user_id: int, channel_id: int, page: int, page_size: int
    ) -> tuple[list[BroadcastPost], int]:
        bc = self.get(channel_id)
        if user_id not in bc.subscribers:
            raise ServiceError(ErrorCode.PERMISSION_DENIED, "subscribe to read this channel")
        offset, limit = self.page(page, page_size)
        return self._store.posts(channel_id, offset, limit), self._store.post_count(channel_id)

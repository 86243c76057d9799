"""The store interface: everything the service layer keeps, behind one abstract class.

Handlers and the service never know which implementation they talk to. An implementation must
make ``commit`` atomic per channel: the pts it returns is the channel's previous pts + 1, with no
gap and no reuse, and the record is visible to ``read_log`` as soon as ``commit`` returns.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .. import _record_py
from ..frame import NO_EXTENSIONS

if TYPE_CHECKING:
    from .._record_py import DedupEntry, Record
else:  # the compiled twin keeps the store's millions of records out of the cyclic GC
    try:
        from .. import _record_c as _records
    except ImportError:  # no compiler at install time
        _records = _record_py
    if NO_EXTENSIONS:
        _records = _record_py
    Record = _records.Record
    DedupEntry = _records.DedupEntry

__all__ = [
    "User",
    "Channel",
    "Member",
    "Record",
    "DedupEntry",
    "Store",
    "DIRECT",
    "GROUP",
    "ROLE_OWNER",
    "ROLE_ADMIN",
    "ROLE_MEMBER",
    "ROLE_NAMES",
]

DIRECT = 1  # wire channel_type
GROUP = 2

ROLE_OWNER = 0  # PrivChat 0.1 numbering
ROLE_ADMIN = 1
ROLE_MEMBER = 2
ROLE_NAMES = {ROLE_OWNER: "Owner", ROLE_ADMIN: "Admin", ROLE_MEMBER: "Member"}


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


class Store(abc.ABC):
    """Abstract store. All methods are synchronous; an implementation that does IO commits in
    batches and tells the caller when a commit is durable (the in-memory one: at once)."""

    epoch: str

    # users
    @abc.abstractmethod
    def create_user(
        self,
        username: str,
        password_hash: str,
        nickname: str,
        phone: str | None,
        email: str | None,
        now_ms: int,
    ) -> User: ...

    @abc.abstractmethod
    def get_user(self, user_id: int) -> User | None: ...

    @abc.abstractmethod
    def find_user(self, login: str) -> User | None:
        """By username or email, case-insensitive (``login`` already trimmed and lowered)."""

    # tokens
    @abc.abstractmethod
    def revoke_token(self, jti: str, expires_at: int) -> None: ...

    @abc.abstractmethod
    def is_token_revoked(self, jti: str) -> bool: ...

    # channels
    @abc.abstractmethod
    def get_channel(self, channel_id: int) -> Channel | None: ...

    @abc.abstractmethod
    def get_or_create_direct(
        self, user_a: int, user_b: int, now_ms: int
    ) -> tuple[Channel, bool]: ...

    @abc.abstractmethod
    def create_group(
        self,
        owner_id: int,
        name: str,
        description: str | None,
        member_ids: Iterable[int],
        now_ms: int,
        max_members: int,
    ) -> Channel: ...

    @abc.abstractmethod
    def add_member(self, channel_id: int, user_id: int, role: int, now_ms: int) -> Member: ...

    @abc.abstractmethod
    def remove_member(self, channel_id: int, user_id: int) -> None: ...

    @abc.abstractmethod
    def user_channels(self, user_id: int) -> list[int]: ...

    # the commit log
    @abc.abstractmethod
    def commit(self, record: Record) -> Record:
        """Give ``record`` the channel's next pts, append it and return it."""

    @abc.abstractmethod
    def current_pts(self, channel_id: int) -> int: ...

    @abc.abstractmethod
    def read_log(self, channel_id: int, after_pts: int, limit: int) -> list[Record]: ...

    @abc.abstractmethod
    def find_message(self, channel_id: int, message_id: int) -> Record | None: ...

    @abc.abstractmethod
    def update_record(self, record: Record) -> None:
        """Persist a change to an existing record (revoked flag, tombstone push)."""

    # idempotency
    @abc.abstractmethod
    def dedup_get(self, sender: int, device: str, local_id: int) -> DedupEntry | None: ...

    @abc.abstractmethod
    def dedup_put(self, sender: int, device: str, local_id: int, entry: DedupEntry) -> None: ...

    @abc.abstractmethod
    def dedup_sweep(self, older_than: int) -> int:
        """Drop entries whose timestamp (unix ms) is before ``older_than``. A store may do it
        in steps, a part of its keys per call (the service calls it about once a second), so
        that no single call holds the event loop for long. Returns how many were dropped."""

    # delivery cursors: what each device has acknowledged, per channel
    @abc.abstractmethod
    def get_ack(self, user_id: int, device_id: str, channel_id: int) -> int: ...

    @abc.abstractmethod
    def set_ack(self, user_id: int, device_id: str, channel_id: int, pts: int) -> None: ...

    def stats(self) -> dict[str, int]:
        """Sizes for metrics."""
        return {}

    # durability (PROTOCOL.md 7 and 9: flushed on shutdown; its lag is a metric)
    def persistence_lag(self) -> float | None:
        """Seconds the oldest commit that is not yet durable has waited (0.0 when every commit
        is); None for a store that does not persist (the metric is then left out)."""
        return None

    @abc.abstractmethod
    def flush(self) -> None:
        """Return once every commit so far is durable. The server calls it on shutdown, after
        the last session has ended. A store that does not persist has nothing to write."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the store holds (files, connections); called once, after ``flush``."""

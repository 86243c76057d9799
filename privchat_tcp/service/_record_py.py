"""The store's per-message objects, pure Python (the spec of ``ext/_record_c.pyx``).

``Record`` is one committed event of a channel's log, ``DedupEntry`` what a retried MS answers
with, ``SendResult`` what a commit (or its retry) answers, once per MS. Each compiled twin has
the same constructor, fields, equality and repr, and is invisible to the cyclic garbage
collector (``cython.no_gc``): a server keeps millions of these, and every full collection
would otherwise walk all of them (measured: one collection held the event loop for 585 ms
after about a million messages). ``privchat_tcp.service.model`` picks the twin
(``_ext``).
"""

from __future__ import annotations

import dataclasses

__all__ = ["Record", "DedupEntry", "SendResult", "own_key", "unindex"]


@dataclasses.dataclass(slots=True)
class Record:
    """One committed event of a channel's log: a message or a revoke.

    A value: the wire bytes of its push are built from it by the session layer (once per
    delivery, shared by every recipient), never stored on it.
    """

    pts: int
    message_id: int
    channel_id: int
    channel_type: int
    sender_id: int
    sender_device: str
    local_message_id: int
    message_type: int
    timestamp: int  # unix ms
    payload: bytes
    content: bytes  # serialized MessageContent, or b""
    e2e: bool
    kind: int  # 0 message, 1 revoke
    revoked: bool = False
    revoked_by: int = 0
    revoked_at: int = 0
    target_message_id: int = 0  # for a revoke: the revoked message


@dataclasses.dataclass(slots=True)
class DedupEntry:
    """What a retried MS answers with; ``timestamp`` (unix ms) also ages the entry out."""

    message_id: int
    pts: int
    channel_id: int
    timestamp: int


@dataclasses.dataclass(slots=True)
class SendResult:
    """What a commit (or the retry of one) answers: the message's id, pts and time."""

    message_id: int
    pts: int
    channel_id: int
    timestamp: int  # unix ms
    duplicate: bool  # the retry of a committed message


def own_key(record: Record, sender: int, device: str, local_id: int, entry: DedupEntry) -> bool:
    """Whether ``(sender, device, local_id) -> entry`` is ``record``'s own idempotency key: a
    message whose sender, device and local id these are, and whose id, pts, channel and time
    the entry answers with."""
    return (
        record.kind == 0
        and record.local_message_id == local_id
        and record.sender_id == sender
        and record.message_id == entry.message_id
        and record.pts == entry.pts
        and record.channel_id == entry.channel_id
        and record.timestamp == entry.timestamp
        and record.sender_device == device
    )


def unindex(records: list[Record], shards: list[dict[int, Record]]) -> None:
    """Drop each message of ``records`` (kind 0) from ``shards``, a map of message id to record
    split over dicts by ``hash(message_id) % len(shards)``; ids not there are skipped."""
    n = len(shards)
    for record in records:
        if record.kind == 0:
            mid = record.message_id
            shards[hash(mid) % n].pop(mid, None)

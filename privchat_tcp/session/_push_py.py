"""A record's push body, pure Python: the spec of ``ext/_push_c.pyx`` (``delivery.py`` picks the
twin through ``_ext``)."""

from __future__ import annotations

from ..service.model import KIND_REVOKE, SYSTEM_MESSAGE, Record
from ..wire import pbwire

__all__ = ["push_body"]


def push_body(record: Record) -> bytes:
    """The record's PushMessageRequest: a message, its tombstone once revoked, or a revoke
    event (whose ids are the revoked message's: ``msg_id`` ``revoke_<id>``, ``server_message_id``
    the revoked message, ``message_seq`` the event's own pts)."""
    if record.kind == KIND_REVOKE:
        target = record.target_message_id
        return pbwire.push(
            f"revoke_{target}",
            target,
            record.pts,
            0,
            record.timestamp // 1000,
            record.channel_id,
            record.channel_type,
            SYSTEM_MESSAGE,
            "message.revoke",
            record.sender_id,
            record.payload,
            True,
            b"",
            False,
            "",
        )
    tombstone = record.revoked
    return pbwire.push(
        f"msg_{record.message_id}",
        record.message_id,
        record.pts,
        record.local_message_id,
        record.timestamp // 1000,
        record.channel_id,
        record.channel_type,
        record.message_type,
        "",
        record.sender_id,
        b"" if tombstone else record.payload,
        tombstone,
        b"" if tombstone else record.content,
        record.e2e,
        record.sender_device,
    )

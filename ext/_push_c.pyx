# cython: language_level=3
"""Compiled twin of privchat_tcp/session/_push_py.py: the same push body, built once per
delivered record, without the interpreter between the record's fields and the encoder
(``pbwire.push``, the twin the wire facade picked)."""

from privchat_tcp.service.model import KIND_REVOKE, SYSTEM_MESSAGE
from privchat_tcp.wire import pbwire

__all__ = ["push_body"]

_push = pbwire.push


def push_body(record):
    if record.kind == KIND_REVOKE:
        target = record.target_message_id
        return _push(
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
    return _push(
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

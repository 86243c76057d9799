"""The byte scans of an MS payload, pure Python (the spec of ``ext/_scan_c.pyx``; ``content.py``
picks the twin): whether an envelope rule may apply (``needs_check``), and whether the payload
is the hot path's plain text (``plain``)."""

from __future__ import annotations

__all__ = ["MARKERS", "TEXT", "needs_check", "plain"]

#: ContentMessageType text (``content.TEXT``)
TEXT = 0
#: bytes whose presence in a payload may make a rule apply (a text message without any of
#: them needs no parse)
MARKERS = (b"reply_to", b"mention", b"metadata", b"@")


def needs_check(message_type: int, payload: bytes) -> bool:
    """Whether a payload's envelope must be parsed for the rules: not a text message, or one
    holding a marker (``MARKERS``)."""
    if message_type != TEXT:
        return True
    return (
        b"@" in payload or b"reply_to" in payload or b"mention" in payload or b"metadata" in payload
    )


def plain(message_type: int, payload: bytes, max_depth: int) -> bool:
    """Whether an MS payload needs neither the envelope rules (``needs_check`` is False) nor a
    look at its JSON (``safejson.check_stored`` passes it without a parse: ASCII, at most
    ``max_depth`` of ``[`` and ``{`` together, no ``\\u`` escape). False says nothing more: the
    caller applies both checks."""
    return (
        not needs_check(message_type, payload)
        and payload.isascii()
        and payload.count(b"[") + payload.count(b"{") <= max_depth
        and b"\\u" not in payload
    )

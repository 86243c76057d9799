"""The MS payload scans' twins (``service/_scan_py.py``, ``ext/_scan_c.pyx``) give the same
answers for the same payloads, and ``plain`` says only what the checks it stands for say."""

from __future__ import annotations

import os
import random

import pytest

from privchat_tcp.rpc.safejson import check_stored
from privchat_tcp.service import _scan_py, content

REQUIRE_EXT = bool(os.environ.get("PRIVCHAT_REQUIRE_EXT"))
try:
    from privchat_tcp.service import _scan_c
except ImportError:
    if REQUIRE_EXT:
        raise
    _scan_c = None  # type: ignore[assignment]

#: pieces a payload is drawn from: every marker, cut markers, escapes, brackets, non-ASCII
PIECES = [
    b"@",
    b"reply_to",
    b"reply_t",
    b"mention",
    b"mentio",
    b"metadata",
    b"metadat",
    b"m",
    b"r",
    b"\\",
    b"\\u",
    b"\\ud83d",
    b"u",
    b"[",
    b"{",
    b"}",
    b"]",
    b'"content":',
    b"hello ",
    "你好".encode(),
    b"\x80",
    b"\x7f",
    b"\x00",
    b" ",
]
FIXED = [
    b"",
    b'{"content":"bench message"}',
    b'{"content":"mail me: a@b.c"}',
    b'{"content":"x","reply_to_message_id":5}',
    b'{"content":"x","mentioned_user_ids":[1]}',
    b'{"content":"x","metadata":{}}',
    b'{"content":"\\u00e9"}',
    b"plain text\\",
    b"ends with reply_to",
    b"ends with mention",
    b"ends with metadata",
    b"[[[[",
    b"{" * 40,
    "é".encode(),
]


def _payloads(seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)
    out = list(FIXED)
    for _ in range(n):
        out.append(b"".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 12))))
    return out


def test_the_facade_picks_a_twin() -> None:
    assert content.plain in (_scan_py.plain, getattr(_scan_c, "plain", None))
    assert content.needs_check in (_scan_py.needs_check, getattr(_scan_c, "needs_check", None))
    if REQUIRE_EXT:
        assert content.IMPL == "c"


@pytest.mark.parametrize("message_type", [0, 1, 7, 2**64])
def test_plain_means_no_rule_and_no_json_refusal(message_type: int) -> None:
    """``plain`` is True only where ``needs_check`` is False and ``check_stored`` passes."""
    for depth in (0, 1, 3, 32):
        for payload in _payloads(depth, 400):
            if _scan_py.plain(message_type, payload, depth):
                assert not content.needs_check(message_type, payload)
                check_stored(payload, depth)  # raises nothing


@pytest.mark.skipif(_scan_c is None, reason="_scan_c is not built")
@pytest.mark.parametrize("message_type", [0, 1, 7, 2**64])
def test_the_twins_answer_alike(message_type: int) -> None:
    assert _scan_c.TEXT == _scan_py.TEXT and _scan_c.MARKERS == _scan_py.MARKERS
    for depth in (0, 1, 2, 3, 32):
        for payload in _payloads(message_type % 1000 + depth, 2000):
            assert _scan_c.needs_check(message_type, payload) is _scan_py.needs_check(
                message_type, payload
            ), payload
            assert _scan_c.plain(message_type, payload, depth) is _scan_py.plain(
                message_type, payload, depth
            ), (payload, depth)

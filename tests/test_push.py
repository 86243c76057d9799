"""A record's push body: the twins (``session/_push_py.py``, ``ext/_push_c.pyx``) build the same
bytes from either ``Record`` twin, for messages, tombstones and revoke events."""

from __future__ import annotations

import os
import random
from types import ModuleType

import pytest

from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.service import _record_py
from privchat_tcp.service.model import KIND_MESSAGE, KIND_REVOKE, SYSTEM_MESSAGE
from privchat_tcp.session import _push_py, delivery

REQUIRE_EXT = bool(os.environ.get("PRIVCHAT_REQUIRE_EXT"))
try:
    from privchat_tcp.session import _push_c
except ImportError:
    if REQUIRE_EXT:
        raise
    _push_c = None  # type: ignore[assignment]
try:
    from privchat_tcp.service import _record_c
except ImportError:
    _record_c = None  # type: ignore[assignment]

RECORDS = [_record_py] + ([_record_c] if _record_c is not None else [])


def _records(module: ModuleType, seed: int) -> list[object]:
    rng = random.Random(seed)
    out = []
    for i in range(300):
        kind = rng.choice((KIND_MESSAGE, KIND_MESSAGE, KIND_REVOKE))
        record = module.Record(
            rng.randrange(1, 1 << 40),
            rng.choice((1, rng.randrange(1 << 63))),
            rng.randrange(1, 1 << 40),
            rng.choice((1, 2)),
            rng.randrange(1, 1 << 40),
            rng.choice(("", "device-1", "设备")),
            rng.choice((0, rng.randrange(1 << 64))),
            SYSTEM_MESSAGE if kind == KIND_REVOKE else rng.randrange(11),
            rng.choice((0, 999, 1_700_000_000_123)),
            rng.choice((b"", b'{"content":"hi"}', bytes(range(256)))),
            rng.choice((b"", b"\x0a\x02hi")),
            rng.random() < 0.2,
            kind,
        )
        if kind == KIND_REVOKE:
            record.target_message_id = rng.randrange(1, 1 << 63)
        elif i % 4 == 0:
            record.revoked = True
        out.append(record)
    return out


def test_delivery_picks_a_twin() -> None:
    assert delivery.push_body in (_push_py.push_body, getattr(_push_c, "push_body", None))
    if REQUIRE_EXT:
        assert delivery.IMPL == "c"


@pytest.mark.parametrize("records", RECORDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_the_push_says_what_the_record_says(records: ModuleType) -> None:
    for record in _records(records, 1):
        push = pb.PushMessageRequest.FromString(delivery.push_body(record))
        if record.kind == KIND_REVOKE:
            assert push.msg_key == f"revoke_{record.target_message_id}"
            assert push.server_message_id == record.target_message_id and push.deleted
        else:
            assert push.server_message_id == record.message_id
            assert push.deleted == record.revoked
            assert push.payload == (b"" if record.revoked else record.payload)
        assert push.message_seq == record.pts and push.timestamp == record.timestamp // 1000


@pytest.mark.skipif(_push_c is None, reason="_push_c is not built")
@pytest.mark.parametrize("records", RECORDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_the_twins_build_the_same_bytes(records: ModuleType) -> None:
    for seed in range(3):
        for record in _records(records, seed):
            assert _push_c.push_body(record) == _push_py.push_body(record)

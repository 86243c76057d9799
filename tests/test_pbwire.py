"""The hand-built protobuf encodings, compiled and pure, equal what the generated classes make."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.wire import pbwire

IMPLS = [pytest.param(pbwire.impl_py, id="py")]
if pbwire.impl_c is not None:
    IMPLS.append(pytest.param(pbwire.impl_c, id="c"))
elif os.environ.get("PRIVCHAT_REQUIRE_EXT"):
    IMPLS.append(
        pytest.param(None, id="c", marks=pytest.mark.xfail(strict=True, reason="not compiled"))
    )

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
text = st.text(max_size=40)
blob = st.binary(max_size=300)


@pytest.mark.parametrize("impl", IMPLS)
@given(ms=st.integers(0, 2**63 - 1))
def test_pong(impl: ModuleType, ms: int) -> None:
    assert impl.pong(ms) == pb.PongResponse(timestamp=ms).SerializeToString()


@pytest.mark.parametrize("impl", IMPLS)
@given(seq=u32, mid=u64, pts=u64, cid=u64, ctype=st.integers(0, 255), ts=st.integers(0, 2**63 - 1))
def test_send_response(
    impl: ModuleType, seq: int, mid: int, pts: int, cid: int, ctype: int, ts: int
) -> None:
    expected = pb.SendMessageResponse(
        client_seq=seq,
        server_message_id=mid,
        message_seq=pts,
        channel_id=cid,
        channel_type=ctype,
        timestamp=ts,
    ).SerializeToString()
    assert impl.send_response(seq, mid, pts, cid, ctype, ts) == expected


def _push(i: int) -> pb.PushMessageRequest:
    return pb.PushMessageRequest(
        server_message_id=i + 1, message_seq=i, channel_id=7, payload=b"x" * (i * 37)
    )


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", [0, 1, 2, 50])
def test_batch_and_difference(impl: ModuleType, n: int) -> None:
    pushes = [_push(i) for i in range(n)]
    bodies = [p.SerializeToString() for p in pushes]
    assert impl.batch(bodies) == pb.PushBatchRequest(messages=pushes).SerializeToString()
    for has_more in (False, True):
        expected = pb.GetDifferenceResponse(
            messages=pushes, current_pts=n + 3, has_more=has_more, channel_id=7
        )
        assert impl.difference(bodies, n + 3, has_more, 7) == expected.SerializeToString()


@pytest.mark.parametrize("impl", IMPLS)
@given(cid=u64, ctype=st.integers(0, 255), pts=u64)
def test_notify(impl: ModuleType, cid: int, ctype: int, pts: int) -> None:
    expected = pb.MessageNotify(channel_id=cid, channel_type=ctype, pts=pts).SerializeToString()
    assert impl.notify(cid, ctype, pts) == expected


@pytest.mark.parametrize("impl", IMPLS)
@given(
    key=text,
    mid=u64,
    pts=u64,
    local=u64,
    ts=u32,
    cid=u64,
    ctype=st.integers(0, 255),
    mtype=u32,
    topic=text,
    uid=u64,
    payload=blob,
    deleted=st.booleans(),
    content=st.builds(lambda s: pb.MessageContent(searchable_content=s).SerializeToString(), text),
    e2e=st.booleans(),
    device=text,
)
def test_push(
    impl: ModuleType,
    key: str,
    mid: int,
    pts: int,
    local: int,
    ts: int,
    cid: int,
    ctype: int,
    mtype: int,
    topic: str,
    uid: int,
    payload: bytes,
    deleted: bool,
    content: bytes,
    e2e: bool,
    device: str,
) -> None:
    expected = pb.PushMessageRequest(
        msg_key=key,
        server_message_id=mid,
        message_seq=pts,
        local_message_id=local,
        timestamp=ts,
        channel_id=cid,
        channel_type=ctype,
        message_type=mtype,
        topic=topic,
        from_uid=uid,
        payload=payload,
        deleted=deleted,
        content=pb.MessageContent.FromString(content) if content else None,
        e2e=e2e,
        from_device=device,
    ).SerializeToString()
    got = impl.push(
        key,
        mid,
        pts,
        local,
        ts,
        cid,
        ctype,
        mtype,
        topic,
        uid,
        payload,
        deleted,
        content,
        e2e,
        device,
    )
    assert got == expected


@pytest.mark.parametrize("impl", IMPLS)
def test_field_bytes_appends_a_submessage(impl: ModuleType) -> None:
    base = pb.PushMessageRequest(server_message_id=1, payload=b"p")
    content = pb.MessageContent(content_type=1, searchable_content="hi")
    data = base.SerializeToString() + impl.field_bytes(18, content.SerializeToString())
    parsed = pb.PushMessageRequest.FromString(data)
    assert parsed.content == content and parsed.payload == b"p"


def test_compiled_twin_in_use_when_required() -> None:
    if not os.environ.get("PRIVCHAT_REQUIRE_EXT"):
        pytest.skip("PRIVCHAT_REQUIRE_EXT is not set")
    assert pbwire.IMPL == "c"


_SEND_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "client_seq": st.integers(0, 2**32 - 1),
        "local_message_id": st.integers(0, 2**64 - 1),
        "channel_id": st.integers(0, 2**64 - 1),
        "channel_type": st.integers(0, 2**32 - 1),
        "message_type": st.integers(0, 2**32 - 1),
        "payload": st.binary(max_size=64),
        "stream_no": st.text(max_size=4),
        "from_uid": st.integers(0, 2**64 - 1),
        "topic": st.text(max_size=4),
    },
)


def _expected_send(body: bytes) -> tuple[int, int, int, int, int, bytes] | None:
    """What protobuf makes of ``body`` (None: it refuses it)."""
    try:
        req = pb.SendMessageRequest.FromString(body)
    except Exception:  # noqa: BLE001 - DecodeError and friends
        return None
    return (
        req.client_seq,
        req.local_message_id,
        req.channel_id,
        req.channel_type,
        req.message_type,
        req.payload,
    )


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=300)
@given(fields=_SEND_FIELDS, extra=st.binary(max_size=12), split=st.integers(0, 200))
def test_decode_send_request_agrees_with_protobuf(
    impl: ModuleType, fields: dict[str, Any], extra: bytes, split: int
) -> None:
    body = pb.SendMessageRequest(**fields).SerializeToString()
    mutated = body[:split] + extra + body[split:]  # also malformed and duplicated fields
    for data in (body, mutated, body + body):
        got = impl.decode_send_request(data)
        if got is not None:  # when the fast path answers, it answers what protobuf does
            assert got == _expected_send(data)
        assert (got is None) == (impl_other(impl).decode_send_request(data) is None)
    if not set(fields) & {"stream_no", "from_uid", "topic"}:  # only the hot fields: decoded
        assert impl.decode_send_request(body) == _expected_send(body)


def impl_other(impl: ModuleType) -> ModuleType:
    other = pbwire.impl_c if impl is pbwire.impl_py else pbwire.impl_py
    return other if other is not None else impl


@pytest.mark.parametrize("impl", IMPLS)
def test_decode_send_request_defers_what_it_does_not_hold(impl: ModuleType) -> None:
    content = pb.SendMessageRequest(
        channel_id=5, content=pb.MessageContent(searchable_content="x")
    ).SerializeToString()
    conv = pb.SendMessageRequest(
        conversation=pb.Conversation(type=1, target_id=7)
    ).SerializeToString()
    for body in (
        content,
        conv,
        b"\x28",
        b"\x28\xff",
        b"\x5a\x05ab",
        b"\x28" + b"\xff" * 10 + b"\x01",
    ):
        assert impl.decode_send_request(body) is None
    big = b"\x10" + bytes.fromhex("8080808010")  # client_seq 2**32: not a uint32
    assert impl.decode_send_request(big) is None
    assert impl.decode_send_request(b"") == (0, 0, 0, 0, 0, b"")

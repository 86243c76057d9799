"""The hand-built protobuf encodings equal what the generated classes produce."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from privchat_tcp import pbwire
from privchat_tcp.proto import privchat_pb2 as pb

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


@given(st.integers(0, 2**63 - 1))
def test_pong(ms: int) -> None:
    assert pbwire.pong(ms) == pb.PongResponse(timestamp=ms).SerializeToString()


@given(u32, u64, u64, u64, st.integers(0, 255), st.integers(0, 2**63 - 1))
def test_send_response(seq: int, mid: int, pts: int, cid: int, ctype: int, ts: int) -> None:
    expected = pb.SendMessageResponse(
        client_seq=seq,
        server_message_id=mid,
        message_seq=pts,
        channel_id=cid,
        channel_type=ctype,
        timestamp=ts,
    ).SerializeToString()
    assert pbwire.send_response(seq, mid, pts, cid, ctype, ts) == expected


def _push(i: int) -> pb.PushMessageRequest:
    return pb.PushMessageRequest(
        server_message_id=i + 1, message_seq=i, channel_id=7, payload=b"x" * (i * 37)
    )


@pytest.mark.parametrize("n", [0, 1, 2, 50])
def test_batch_and_difference(n: int) -> None:
    pushes = [_push(i) for i in range(n)]
    bodies = [p.SerializeToString() for p in pushes]
    assert pbwire.batch(bodies) == pb.PushBatchRequest(messages=pushes).SerializeToString()
    for has_more in (False, True):
        expected = pb.GetDifferenceResponse(
            messages=pushes, current_pts=n + 3, has_more=has_more, channel_id=7
        )
        got = pb.GetDifferenceResponse.FromString(pbwire.difference(bodies, n + 3, has_more, 7))
        assert got == expected


@given(u64, st.integers(0, 255), u64)
def test_notify(cid: int, ctype: int, pts: int) -> None:
    expected = pb.MessageNotify(channel_id=cid, channel_type=ctype, pts=pts).SerializeToString()
    assert pbwire.notify(cid, ctype, pts) == expected


def test_push_with_appended_content_parses() -> None:
    base = pb.PushMessageRequest(server_message_id=1, payload=b"p")
    content = pb.MessageContent(content_type=1, searchable_content="hi")
    data = base.SerializeToString() + pbwire.field_bytes(18, content.SerializeToString())
    parsed = pb.PushMessageRequest.FromString(data)
    assert parsed.content == content and parsed.payload == b"p"

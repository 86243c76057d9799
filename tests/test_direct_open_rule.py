"""Opening a direct channel has one rule (issue 12): an MS addressed by a peer Conversation
(no channel id) opens the channel exactly as ``channel/direct/get_or_create`` does, with the
same refusals: 20402 when the peer blocked the sender, 20403 when the sender blocked the
peer, 10004 when the peer takes messages from friends only. The matrix runs in memory (the
harness drives a real session); one case runs over TCP."""

from __future__ import annotations

import json

import pytest
from conftest import ServerThread, run, user

from privchat_tcp.errors import ErrorCode, ServiceError
from privchat_tcp.harness import Device, Harness
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.wire.commands import Cmd


def _ms_to_peer(dev: Device, peer: int) -> int:
    """An MS addressed by Conversation (type 1, the peer): its reason code (0 sent)."""
    req = pb.SendMessageRequest(
        client_seq=1,
        conversation=pb.Conversation(type=1, target_id=peer),
        payload=json.dumps({"content": "hi"}).encode(),
    )
    try:
        rec = dev.request(Cmd.MS, req.SerializeToString())
    except ServiceError as exc:
        return exc.code
    return pb.SendMessageResponse.FromString(rec.body).reason_code


def _get_or_create(dev: Device, peer: int) -> int:
    try:
        dev.rpc("channel/direct/get_or_create", {"target_user_id": peer})
    except ServiceError as exc:
        return exc.code
    return 0


@pytest.mark.parametrize(
    ("a_blocks_b", "b_blocks_a", "b_friends_only", "friends", "code"),
    [
        (False, False, False, False, 0),
        (True, False, False, False, ErrorCode.USER_IN_BLACKLIST),
        (False, True, False, False, ErrorCode.BLOCKED_BY_USER),
        (True, True, False, False, ErrorCode.BLOCKED_BY_USER),  # the peer's block first
        (False, False, True, False, ErrorCode.PERMISSION_DENIED),
        (False, False, True, True, 0),  # friends are never refused by the flag
    ],
)
def test_ms_to_a_peer_follows_get_or_create(
    a_blocks_b: bool, b_blocks_a: bool, b_friends_only: bool, friends: bool, code: int
) -> None:
    results = []
    for via_ms in (True, False):  # the same setting, opened one way then the other
        h = Harness()
        a, b = h.user("a_user"), h.user("b_user")
        da, db = h.login(a), h.login(b)
        if friends:
            da.rpc("contact/friend/apply", {"target_user_id": b.user_id})
            db.rpc("contact/friend/accept", {"from_user_id": a.user_id})
        if a_blocks_b:
            da.rpc("contact/blacklist/add", {"blocked_user_id": b.user_id})
        if b_blocks_a:
            db.rpc("contact/blacklist/add", {"blocked_user_id": a.user_id})
        if b_friends_only:
            db.rpc("account/privacy/update", {"allow_receive_message_from_non_friend": False})
        got = _ms_to_peer(da, b.user_id) if via_ms else _get_or_create(da, b.user_id)
        results.append(got)
        opened = h.core.services.conversations.find_direct(a.user_id, b.user_id)
        if got:  # a refusal opens nothing
            assert opened is None or friends
        else:
            assert opened is not None
    assert results == [code, code]


def test_ms_to_a_blocking_stranger_opens_no_channel_over_tcp(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        carol = await user(server.port, "carol")
        assert await bob.rpc("contact/blacklist/add", {"blocked_user_id": alice.user_id})
        assert await carol.rpc(
            "account/privacy/update", {"allow_receive_message_from_non_friend": False}
        )
        for target, code in (
            (bob, ErrorCode.BLOCKED_BY_USER),
            (carol, ErrorCode.PERMISSION_DENIED),
        ):
            try:
                await alice.send(text="hello", to_user=target.user_id)
            except ServiceError as exc:
                assert exc.code == code
            else:
                raise AssertionError("an MS to a peer who refuses it was accepted")
        page = await alice.rpc("entity/sync_entities", {"entity_type": "channel"})
        assert page["items"] == []  # no channel was opened to either
        await bob.rpc("contact/blacklist/remove", {"blocked_user_id": alice.user_id})
        sent = await alice.send(text="hello", to_user=bob.user_id)
        assert sent.reason_code == 0 and sent.message_seq == 1
        push = await bob.next_push(10)
        assert push.command == Cmd.MPS and push.message.from_uid == alice.user_id
        for c in (alice, bob, carol):
            await c.close()

    run(main())

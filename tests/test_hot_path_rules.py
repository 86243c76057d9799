"""The MS hot path remembers what is stable (the direct send rule per sender and channel,
the attachment types, a PONG per millisecond): every change of what a rule reads takes effect
at the next message, whether it comes through a route or straight from the store. In memory
(the harness), under whichever twins run (the test command runs both)."""

from __future__ import annotations

import json

import pytest

from privchat_tcp.errors import ErrorCode, ServiceError
from privchat_tcp.harness import Device, Harness
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.service.social import SocialService
from privchat_tcp.wire.commands import Cmd
from privchat_tcp.wire.frame import decode_header

BLOCKED_BY = ErrorCode.BLOCKED_BY_USER
IN_BLACKLIST = ErrorCode.USER_IN_BLACKLIST
DENIED = ErrorCode.PERMISSION_DENIED


def _ms(dev: Device, channel_id: int, text: str = "hi") -> int:
    """0 if the MS was accepted, else its error code."""
    req = pb.SendMessageRequest(
        client_seq=1,
        channel_id=channel_id,
        payload=json.dumps({"content": text}).encode(),
    )
    try:
        dev.request(Cmd.MS, req.SerializeToString())
    except ServiceError as exc:
        return exc.code
    return 0


@pytest.fixture
def direct() -> tuple[Harness, Device, Device, int]:
    h = Harness()
    a, b = h.user("alice"), h.user("bob")
    channel, _ = h.core.services.channels.direct(a.user_id, b.user_id)
    return h, h.login(a), h.login(b), channel.channel_id


def test_blacklist_through_routes_takes_effect_at_the_next_message(
    direct: tuple[Harness, Device, Device, int],
) -> None:
    h, alice, bob, cid = direct
    a, b = alice.session.user_id, bob.session.user_id
    assert _ms(alice, cid) == 0 and _ms(alice, cid) == 0  # the second one from the cache
    bob.rpc("contact/blacklist/add", {"blocked_user_id": a})
    assert _ms(alice, cid) == BLOCKED_BY
    assert _ms(bob, cid) == IN_BLACKLIST
    bob.rpc("contact/blacklist/remove", {"blocked_user_id": a})
    assert _ms(alice, cid) == 0 and _ms(bob, cid) == 0
    alice.rpc("contact/blacklist/add", {"blocked_user_id": b})
    assert _ms(alice, cid) == IN_BLACKLIST
    assert _ms(bob, cid) == BLOCKED_BY


def test_privacy_and_friendship_take_effect_at_the_next_message(
    direct: tuple[Harness, Device, Device, int],
) -> None:
    h, alice, bob, cid = direct
    a, b = alice.session.user_id, bob.session.user_id
    assert _ms(alice, cid) == 0
    bob.rpc("account/privacy/update", {"allow_receive_message_from_non_friend": False})
    assert _ms(alice, cid) == DENIED
    assert _ms(bob, cid) == 0  # alice still takes messages from anyone
    h.store.add_friends(a, b, 1)  # straight to the store: no service saw it
    assert _ms(alice, cid) == 0
    h.store.remove_friends(a, b)
    assert _ms(alice, cid) == DENIED
    bob.rpc("account/privacy/update", {"allow_receive_message_from_non_friend": True})
    assert _ms(alice, cid) == 0


def test_store_writes_take_effect_at_the_next_message(
    direct: tuple[Harness, Device, Device, int],
) -> None:
    h, alice, bob, cid = direct
    a, b = alice.session.user_id, bob.session.user_id
    store = h.store
    assert _ms(alice, cid) == 0
    before = store.contacts_version
    store.block(b, a, 1)
    assert store.contacts_version != before
    assert _ms(alice, cid) == BLOCKED_BY
    store.unblock(b, a)
    assert _ms(alice, cid) == 0
    store.put_doc(b, "privacy", {"allow_receive_message_from_non_friend": False})
    assert _ms(alice, cid) == DENIED


def test_the_allowed_pairs_are_bounded(
    direct: tuple[Harness, Device, Device, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    h, alice, bob, cid = direct
    social = h.core.services.social
    monkeypatch.setattr("privchat_tcp.service.social.SEND_ALLOWED_MAX", 1)
    assert _ms(alice, cid) == 0 and _ms(bob, cid) == 0
    assert len(social._send_allowed) == 1  # noqa: SLF001 - the cache's bound
    assert isinstance(social, SocialService)


@pytest.fixture
def group() -> tuple[Harness, int, Device, Device]:
    h = Harness()
    owner, member = h.user("owner"), h.user("member")
    dev_owner, dev_member = h.login(owner), h.login(member)
    gid = dev_owner.rpc("group/group/create", {"name": "g", "member_ids": [member.user_id]})[
        "group_id"
    ]
    return h, gid, dev_owner, dev_member


def test_group_mutes_and_membership_take_effect_at_the_next_message(
    group: tuple[Harness, int, Device, Device],
) -> None:
    h, gid, owner, member = group
    uid = member.session.user_id
    assert _ms(member, gid) == 0
    owner.rpc("group/member/mute", {"group_id": gid, "user_id": uid, "mute_duration": 3600})
    assert _ms(member, gid) == ErrorCode.MEMBER_MUTED
    owner.rpc("group/member/unmute", {"group_id": gid, "user_id": uid})
    assert _ms(member, gid) == 0
    owner.rpc("group/settings/mute_all", {"group_id": gid, "muted": True})
    assert _ms(member, gid) == ErrorCode.GROUP_MUTED
    assert _ms(owner, gid) == 0
    owner.rpc("group/settings/mute_all", {"group_id": gid, "muted": False})
    assert _ms(member, gid) == 0
    owner.rpc("group/member/remove", {"group_id": gid, "user_id": uid})
    assert _ms(member, gid) == ErrorCode.NOT_GROUP_MEMBER


def test_pings_answered_on_the_fast_path_carry_the_clock(
    direct: tuple[Harness, Device, Device, int],
) -> None:
    _, alice, _, _ = direct
    session = alice.session
    session.handle([(7, Cmd.PING, 0, 0, b""), (8, Cmd.PING, 0, 0, b"")])
    data = session.conn.data_to_send()
    first = decode_header(data)
    assert first[2] == 7 and first[3] == Cmd.PING and first[4] == 1
    body = data[12 : 12 + first[0]]
    second = decode_header(data[12 + first[0] :])
    assert second[2] == 8 and data[24 + first[0] :] == body
    assert pb.PongResponse.FromString(body).timestamp > 0

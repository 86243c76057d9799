"""Rule matrices through the in-memory harness: real sessions, commands, routes and services,
no sockets (microseconds per case). The over-TCP suites stay the definition of done."""

from __future__ import annotations

import json
from typing import Any

import pytest

from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.harness import Device, Harness
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.service.model import User
from privchat_tcp.wire.commands import Cmd


def _ms(
    dev: Device, channel_id: int, text: str = "hi", local_id: int = 0
) -> pb.SendMessageResponse:
    req = pb.SendMessageRequest(
        client_seq=1,
        local_message_id=local_id,
        channel_id=channel_id,
        payload=json.dumps({"content": text}).encode(),
    )
    rec = dev.request(Cmd.MS, req.SerializeToString())
    return pb.SendMessageResponse.FromString(rec.body)


def _sub(dev: Device, channel_id: int, channel_type: int) -> int:
    req = pb.SubscribeRequest(channel_id=channel_id, channel_type=channel_type, action=1)
    rec = dev.request(Cmd.SUB, req.SerializeToString())
    return pb.SubscribeResponse.FromString(rec.body).reason_code


def _code(fn: Any, *args: Any) -> int:
    try:
        fn(*args)
    except ServiceError as exc:
        return exc.code
    return 0


@pytest.fixture
def h() -> Harness:
    return Harness()


def _group(h: Harness) -> tuple[int, dict[str, User], dict[str, Device]]:
    users = {name: h.user(name) for name in ("owner", "admin", "m1", "m2", "outsider")}
    devs = {name: h.login(u) for name, u in users.items()}
    g = devs["owner"].rpc(
        "group/group/create",
        {"name": "g", "member_ids": [users["m1"].user_id, users["m2"].user_id]},
    )["group_id"]
    devs["owner"].rpc(
        "group/member/add", {"group_id": g, "user_id": users["admin"].user_id, "role": "admin"}
    )
    return g, users, devs


# ---- roles: who may remove whom -----------------------------------------------------------------
REMOVE = [
    # operator, target, expected code
    ("owner", "admin", 0),
    ("owner", "m1", 0),
    ("admin", "m1", 0),
    ("admin", "owner", ErrorCode.PERMISSION_DENIED),
    ("m1", "m2", ErrorCode.NOT_GROUP_ADMIN),
    ("m1", "admin", ErrorCode.NOT_GROUP_ADMIN),
    ("outsider", "m1", ErrorCode.NOT_GROUP_MEMBER),
    ("owner", "outsider", ErrorCode.NOT_GROUP_MEMBER),
]


@pytest.mark.parametrize(("operator", "target", "code"), REMOVE)
def test_member_removal_by_role(h: Harness, operator: str, target: str, code: int) -> None:
    g, users, _ = _group(h)
    groups = h.core.services.groups
    got = _code(groups.remove_member, users[operator].user_id, g, users[target].user_id)
    assert got == code
    members = groups.group(g).members
    assert (users[target].user_id in members) == (code != 0 and target != "outsider")


# ---- revokes: the sender, or a group's owner or admin -------------------------------------------
REVOKE = [
    ("m1", "m1", 0),
    ("m2", "m1", ErrorCode.PERMISSION_DENIED),
    ("admin", "m1", 0),
    ("owner", "m1", 0),
    ("outsider", "m1", ErrorCode.NOT_GROUP_MEMBER),
]


@pytest.mark.parametrize(("revoker", "sender", "code"), REVOKE)
def test_revoke_by_role(h: Harness, revoker: str, sender: str, code: int) -> None:
    g, users, devs = _group(h)
    sent = _ms(devs[sender], g)
    messages = h.core.services.messages
    got = _code(messages.revoke, users[revoker].user_id, "d", g, sent.server_message_id, None)
    assert got == code
    found = h.store.find_message(g, sent.server_message_id)
    assert found is not None and found.revoked == (code == 0)


def test_revoke_in_a_direct_channel_only_by_the_sender(h: Harness) -> None:
    a, b = h.user("a"), h.user("b")
    da = h.login(a)
    ch = da.rpc("channel/direct/get_or_create", {"target_user_id": b.user_id})["channel_id"]
    sent = _ms(da, ch)
    messages = h.core.services.messages
    assert _code(messages.revoke, b.user_id, "d", ch, sent.server_message_id, None) == (
        ErrorCode.PERMISSION_DENIED
    )
    assert _code(messages.revoke, a.user_id, "d", ch, sent.server_message_id, None) == 0
    assert _code(messages.revoke, a.user_id, "d", ch, sent.server_message_id, None) == (
        ErrorCode.INVALID_PARAMS  # already revoked
    )


# ---- SUB: membership for every channel_type (0 private, 1 group, 2 room) ------------------------
@pytest.mark.parametrize("channel_type", [0, 1, 2])
@pytest.mark.parametrize("who", ["member", "outsider"])
def test_sub_needs_membership(h: Harness, channel_type: int, who: str) -> None:
    g, users, devs = _group(h)
    a = users["m1"]
    dm = devs["m1"].rpc("channel/direct/get_or_create", {"target_user_id": users["m2"].user_id})[
        "channel_id"
    ]
    dev = devs["m1" if who == "member" else "outsider"]
    for channel, kind_ok in ((g, channel_type in (1, 2)), (dm, channel_type in (0, 2))):
        expected = 0 if who == "member" and kind_ok else 4
        assert _sub(dev, channel, channel_type) == expected, (channel, channel_type, who)
    _ = a


def test_typing_reaches_only_current_members(h: Harness) -> None:
    g, users, devs = _group(h)
    assert _sub(devs["m2"], g, 1) == 0
    devs["m1"].rpc("presence/typing", {"channel_id": g, "channel_type": 2})
    assert len(devs["m2"].pushes(Cmd.PUB)) == 1
    devs["owner"].rpc("group/member/remove", {"group_id": g, "user_id": users["m2"].user_id})
    h.core.services.messages._typing.clear()  # the typing rate limit is not under test
    devs["m1"].rpc("presence/typing", {"channel_id": g, "channel_type": 2})
    assert len(devs["m2"].pushes(Cmd.PUB)) == 1  # removed: nothing more


# ---- delivery -----------------------------------------------------------------------------------
def test_pushes_go_to_ready_devices_but_not_back_to_the_sender(h: Harness) -> None:
    a, b = h.user("a"), h.user("b")
    a1, a2 = h.login(a), h.login(a)
    b1 = h.login(b)
    b_idle = h.login(b, ready=False)
    ch = a1.rpc("channel/direct/get_or_create", {"target_user_id": b.user_id})["channel_id"]
    _ms(a1, ch, "one")
    assert [len(d.pushes(Cmd.MPS)) for d in (a1, a2, b1, b_idle)] == [0, 1, 1, 0]
    b_idle.rpc("sync/session_ready", {})  # catch-up under the same policy
    assert len(b_idle.pushes(Cmd.MPS)) == 1


def test_a_retry_answers_the_original_and_commits_nothing(h: Harness) -> None:
    a, b = h.user("a"), h.user("b")
    da = h.login(a)
    ch = da.rpc("channel/direct/get_or_create", {"target_user_id": b.user_id})["channel_id"]
    first = _ms(da, ch, "x", local_id=7)
    again = _ms(da, ch, "x", local_id=7)
    assert (again.server_message_id, again.message_seq) == (
        first.server_message_id,
        first.message_seq,
    )
    assert h.core.services.channels.current_pts(ch) == 1


def test_login_required_before_other_commands(h: Harness) -> None:
    dev = h.device()
    with pytest.raises(ServiceError) as err:
        dev.request(Cmd.MS, b"")
    assert err.value.code == ErrorCode.AUTH_REQUIRED and err.value.status == Status.UNAUTHENTICATED

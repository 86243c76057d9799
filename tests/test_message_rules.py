"""Message rule matrices in memory (the harness: real sessions, commands, routes, services; no
sockets): who may mention everyone, what each content type's metadata needs, who may read,
react and see history, and where a member's history and a device's catch-up start. The
over-TCP suite (``test_message_routes.py``) stays the definition of done."""

from __future__ import annotations

import json
from typing import Any

import pytest

from privchat_tcp.errors import ErrorCode, ServiceError
from privchat_tcp.harness import Device, Harness
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.wire.commands import Cmd


def _ms(dev: Device, channel_id: int, payload: dict[str, Any], message_type: int = 0) -> int:
    """0 if the MS was accepted, else its error code."""
    req = pb.SendMessageRequest(
        client_seq=1,
        channel_id=channel_id,
        message_type=message_type,
        payload=json.dumps(payload, ensure_ascii=False).encode(),
    )
    try:
        dev.request(Cmd.MS, req.SerializeToString())
    except ServiceError as exc:
        return exc.code
    return 0


def _rpc(dev: Device, route: str, body: dict[str, Any]) -> int:
    try:
        dev.rpc(route, body)
    except ServiceError as exc:
        return exc.code
    return 0


def _pushed(dev: Device) -> list[pb.PushMessageRequest]:
    """The messages pushed to a device, MPS and MPB."""
    pushed = [pb.PushMessageRequest.FromString(r.body) for r in dev.pushes(Cmd.MPS)]
    pushed += [
        m for r in dev.pushes(Cmd.MPB) for m in pb.PushBatchRequest.FromString(r.body).messages
    ]
    return pushed


@pytest.fixture
def group() -> tuple[Harness, int, dict[str, Device]]:
    h = Harness()
    users = {name: h.user(name) for name in ("owner", "admin", "member", "outsider")}
    devs = {name: h.login(u) for name, u in users.items()}
    gid = devs["owner"].rpc(
        "group/group/create", {"name": "g", "member_ids": [users["member"].user_id]}
    )["group_id"]
    devs["owner"].rpc(
        "group/member/add", {"group_id": gid, "user_id": users["admin"].user_id, "role": "admin"}
    )
    return h, gid, devs


MENTION_ALL = [
    ("owner", {"content": "@all look"}, 0),
    ("admin", {"content": "hey @everyone"}, 0),
    ("member", {"content": "@全体成员 hi"}, ErrorCode.PERMISSION_DENIED),
    ("member", {"content": "@ALL"}, ErrorCode.PERMISSION_DENIED),
    ("member", {"content": "x", "is_mention_all": True}, ErrorCode.PERMISSION_DENIED),
    ("member", {"content": "mail a@b.c"}, 0),
    ("member", {"content": "the @alliance"}, 0),
    ("member", {"content": "ping @all, please"}, ErrorCode.PERMISSION_DENIED),
    ("outsider", {"content": "@all"}, ErrorCode.NOT_GROUP_MEMBER),
]


@pytest.mark.parametrize(("who", "payload", "code"), MENTION_ALL)
def test_mention_all_needs_owner_or_admin(
    group: tuple[Harness, int, dict[str, Device]], who: str, payload: dict[str, Any], code: int
) -> None:
    _, gid, devs = group
    assert _ms(devs[who], gid, payload) == code


INVALID = ErrorCode.MESSAGE_CONTENT_INVALID
METADATA = [
    (1, None, INVALID),
    (1, {"file_id": 0}, INVALID),
    (1, {"file_id": "abc"}, INVALID),
    (1, {"file_id": True}, INVALID),
    (1, {"file_id": 5, "url": 3}, INVALID),
    (1, {"file_id": 5, "height": 1 << 32}, INVALID),
    # well-formed file metadata, but no file the sender uploaded: the file_id rule refuses it
    # (tests/test_files.py sends files that were uploaded)
    (1, {"file_id": "5", "url": "u", "width": 1, "height": 2}, INVALID),
    (2, {}, INVALID),
    (2, {"file_id": 9}, INVALID),
    (3, {"file_id": 9}, INVALID),
    (4, {"file_id": 9}, INVALID),
    (6, {"file_id": 9}, INVALID),
    (7, {"latitude": "1", "longitude": 1}, INVALID),
    (7, {"latitude": 0, "longitude": 181}, INVALID),
    (7, {"latitude": -90, "longitude": 180}, 0),
    (8, {"user_id": 1}, INVALID),
    (9, {"image_url": "u"}, INVALID),
    (9, {"sticker_id": "", "image_url": "u"}, INVALID),
    (9, {"sticker_id": "s", "image_url": "u"}, 0),
    (10, {"messages": "m"}, INVALID),
    (10, {"messages": [1]}, INVALID),
    (10, {"messages": [{"message_id": -1}]}, INVALID),
    (10, {"messages": [{}] * 101}, INVALID),
    (10, {"messages": [{"content": "c"}]}, 0),
    (0, "any metadata: text has no struct", 0),
    (5, {"x": 1}, ErrorCode.PERMISSION_DENIED),  # System: never from a user
]


@pytest.mark.parametrize(("message_type", "metadata", "code"), METADATA)
def test_metadata_by_type(
    group: tuple[Harness, int, dict[str, Device]], message_type: int, metadata: Any, code: int
) -> None:
    _, gid, devs = group
    payload: dict[str, Any] = {"content": ""}
    if metadata is not None:
        payload["metadata"] = metadata
    assert _ms(devs["member"], gid, payload, message_type) == code


def test_replies_and_mentions_name_what_is_in_the_channel(
    group: tuple[Harness, int, dict[str, Device]],
) -> None:
    h, gid, devs = group
    assert _ms(devs["owner"], gid, {"content": "first"}) == 0
    first = devs["member"].rpc("message/history/get", {"channel_id": gid})["messages"][0]
    mid = first["message_id"]
    member = devs["member"]
    assert _ms(member, gid, {"content": "re", "reply_to_message_id": str(mid)}) == 0
    assert _ms(member, gid, {"content": "re", "reply_to_message_id": mid}) == 0
    for bad in (12345, "x", -1, [mid], {"id": mid}):
        code = _ms(member, gid, {"content": "re", "reply_to_message_id": bad})
        assert code == ErrorCode.MESSAGE_NOT_FOUND, bad
    owner_id = h.core.services.channels.group(gid).owner_id
    assert _ms(member, gid, {"content": "hi", "mentioned_user_ids": [owner_id]}) == 0
    for bad_list in ([owner_id + 999], "all", [0], list(range(1, 102))):
        code = _ms(member, gid, {"content": "hi", "mentioned_user_ids": bad_list})
        assert code == ErrorCode.MESSAGE_CONTENT_INVALID, bad_list


WHO_MAY = [
    ("message/history/get", {}),
    ("message/status/count", {}),
    ("message/status/read", {"message": True}),
    ("message/status/read_pts", {"read_pts": 1}),
    ("message/status/read_list", {"message": True}),
    ("message/status/read_stats", {"message": True}),
    ("message/reaction/add", {"message": True, "emoji": "+1"}),
    ("message/reaction/list", {"message": True}),
]


@pytest.mark.parametrize(("route", "extra"), WHO_MAY)
def test_only_members_read_state_and_react(
    group: tuple[Harness, int, dict[str, Device]], route: str, extra: dict[str, Any]
) -> None:
    _, gid, devs = group
    assert _ms(devs["owner"], gid, {"content": "m"}) == 0
    history = devs["owner"].rpc("message/history/get", {"channel_id": gid})["messages"]
    mid = history[-1]["message_id"]  # the owner's "m" (the GroupCreated notice comes first)
    body: dict[str, Any] = {"channel_id": gid}
    for key, value in extra.items():
        if key == "message":
            body["server_message_id"] = mid
        else:
            body[key] = value
    for who in ("owner", "admin", "member"):
        assert _rpc(devs[who], route, body) == 0, who
    assert _rpc(devs["outsider"], route, body) == ErrorCode.NOT_GROUP_MEMBER


def test_a_member_added_later_sees_only_what_came_after(
    group: tuple[Harness, int, dict[str, Device]],
) -> None:
    h, gid, devs = group
    for i in range(3):
        assert _ms(devs["owner"], gid, {"content": f"old{i}"}) == 0
    late = h.user("late")
    devs["owner"].rpc("group/member/add", {"group_id": gid, "user_id": late.user_id})
    assert _ms(devs["owner"], gid, {"content": "new"}) == 0
    dev = h.login(late)
    pushed = _pushed(dev)
    # the group's notice of the joining (a System message from user 1), then "new"
    assert [json.loads(p.payload)["content"] for p in pushed][-1:] == ["new"]
    assert all(p.from_uid == 1 for p in pushed[:-1])
    hist = dev.rpc("message/history/get", {"channel_id": gid})
    assert [m["content"] for m in hist["messages"]][-1:] == ["new"]
    assert dev.rpc("message/status/count", {"channel_id": gid})["unread_count"] == len(pushed)
    old = devs["member"].rpc("message/history/get", {"channel_id": gid})["messages"][0]
    assert (
        _rpc(dev, "message/status/read", {"channel_id": gid, "message_id": old["message_id"]})
        == ErrorCode.MESSAGE_NOT_FOUND
    )


CONTENT = [
    # MessageContent fields of an MS without a payload: the same rules
    ("member", 1, {"searchable_content": "pic"}, ErrorCode.MESSAGE_CONTENT_INVALID),
    ("member", 1, {"searchable_content": "pic", "metadata": '{"file_id": 3}'}, 0),
    ("member", 1, {"searchable_content": "pic", "metadata": "not json"}, INVALID),
    ("member", 0, {"searchable_content": "x", "mentioned_type": 2}, ErrorCode.PERMISSION_DENIED),
    ("admin", 0, {"searchable_content": "x", "mentioned_type": 2}, 0),
    ("member", 0, {"searchable_content": "x", "mentioned_targets": [424242]}, INVALID),
    ("member", 0, {"searchable_content": "x", "reply_to_message_id": 77}, 20000),
    ("member", 0, {"searchable_content": "plain", "metadata": "whatever"}, 0),
]


@pytest.mark.parametrize(("who", "message_type", "fields", "code"), CONTENT)
def test_message_content_fields_follow_the_same_rules(
    group: tuple[Harness, int, dict[str, Device]],
    who: str,
    message_type: int,
    fields: dict[str, Any],
    code: int,
) -> None:
    _, gid, devs = group
    req = pb.SendMessageRequest(
        client_seq=1,
        channel_id=gid,
        message_type=message_type,
        content=pb.MessageContent(**fields),
    )
    try:
        devs[who].request(Cmd.MS, req.SerializeToString())
        got = 0
    except ServiceError as exc:
        got = exc.code
    assert got == code


@pytest.mark.parametrize(
    "payload",
    [
        b'{"content":"hello"}',
        b'{"content":"mail me: a@b.c"}',
        b'{"content":"x","reply_to_message_id":5}',
        b'{"content":"x","mentioned_user_ids":[1]}',
        b'{"content":"x","metadata":{}}',
        b"plain text",
        b"",
    ],
)
@pytest.mark.parametrize("message_type", [0, 1, 7])
def test_needs_check_is_the_marker_scan(payload: bytes, message_type: int) -> None:
    """The unrolled scan on the MS hot path says what scanning for each marker says."""
    from privchat_tcp.service.content import _MARKERS, needs_check

    expected = message_type != 0 or any(marker in payload for marker in _MARKERS)
    assert needs_check(message_type, payload) is expected


def _last_push(dev: Device) -> pb.PushMessageRequest:
    return max(_pushed(dev), key=lambda m: m.message_seq)


def _send_raw(dev: Device, gid: int, **fields: Any) -> int:
    """The server message id of an MS built from raw SendMessageRequest fields."""
    req = pb.SendMessageRequest(client_seq=1, channel_id=gid, **fields)
    return pb.SendMessageResponse.FromString(
        dev.request(Cmd.MS, req.SerializeToString()).body
    ).server_message_id


REPLIED = [
    # what the replied-to message is -> the reply_to.content receivers get
    ({"payload": json.dumps({"content": "é" * 60}).encode()}, "é" * 50, "text"),
    ({"payload": b"plain text, not JSON"}, "plain text, not JSON", "text"),
    ({"content": pb.MessageContent(searchable_content="from content")}, "from content", "text"),
    (
        {
            "message_type": 7,
            "payload": b'{"content":"here","metadata":{"latitude":1,"longitude":2}}',
        },
        "here",
        "location",
    ),
]


@pytest.mark.parametrize(("target", "preview", "type_name"), REPLIED)
def test_a_reply_carries_what_it_replies_to(
    group: tuple[Harness, int, dict[str, Device]],
    target: dict[str, Any],
    preview: str,
    type_name: str,
) -> None:
    """Reference 10.2: the push payload the server builds for a reply."""
    h, gid, devs = group
    owner_id = h.core.services.channels.group(gid).owner_id
    mid = _send_raw(devs["owner"], gid, **target)
    assert _ms(devs["member"], gid, {"content": "re", "reply_to_message_id": str(mid)}) == 0
    got = json.loads(_last_push(devs["admin"]).payload)
    assert got["reply_to"] == {
        "message_id": mid,
        "sender_id": owner_id,
        "content": preview,
        "message_type": type_name,
    }
    assert got["content"] == "re" and got["reply_to_message_id"] == str(mid)
    assert "is_mention_all" not in got
    hist = devs["admin"].rpc("message/history/get", {"channel_id": gid})["messages"]
    assert hist[-1]["reply_to_message_id"] == str(mid)


def test_a_reply_to_a_revoked_message_shows_no_text(
    group: tuple[Harness, int, dict[str, Device]],
) -> None:
    _, gid, devs = group
    mid = _send_raw(devs["owner"], gid, payload=b'{"content":"secret"}')
    devs["owner"].rpc("message/revoke", {"channel_id": gid, "server_message_id": mid})
    assert _ms(devs["member"], gid, {"content": "re", "reply_to_message_id": mid}) == 0
    assert json.loads(_last_push(devs["admin"]).payload)["reply_to"]["content"] == ""


def test_only_a_rule_that_adds_rebuilds_the_payload(
    group: tuple[Harness, int, dict[str, Device]],
) -> None:
    """A message the rules pass without adding anything is relayed byte for byte."""
    _, gid, devs = group
    raw = b'{ "content" : "hi @alliance",  "mentioned_user_ids": [] }'
    _send_raw(devs["member"], gid, payload=raw)
    assert _last_push(devs["admin"]).payload == raw
    _send_raw(devs["owner"], gid, payload=b'{"content":"@all now"}')
    assert json.loads(_last_push(devs["admin"]).payload) == {
        "content": "@all now",
        "is_mention_all": True,
    }

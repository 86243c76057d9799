"""Reactions and read positions reach the users they concern, and the message-level entity
types of ``entity/sync_entities`` (issue 12; reference 11.7, 12.5): ``message`` (one channel's
log by pts), ``message_status`` / ``message_read_status`` (read positions),
``message_reaction`` / ``reaction`` (one entity per reaction, a tombstone when taken back).

Over TCP: the notices (their payloads, who gets them and who does not: the origin session),
the pages (versions, cursors, paging, tombstones, scopes) and the refusals. In memory (the
harness): who is told in a group above ``large_group_threshold``."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from conftest import ServerThread, run, user

from privchat_tcp.client import Client
from privchat_tcp.config import Settings
from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.harness import Device, Harness
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.wire.commands import Cmd


async def other_device(port: int, name: str) -> Client:
    """A second device of ``name`` (a password login from a new device id), READY."""
    client = await Client.connect("127.0.0.1", port)
    await client.password_login(name, "password-" + name, str(uuid.uuid4()))
    await client.login()
    await client.ready()
    return client


async def notices(client: Client) -> list[dict[str, Any]]:
    """Every notice (no pts, from_uid 0) the client has received by the time a PING it
    sends now is answered (the server wrote them before its reply)."""
    await client.ping()
    out = []
    for p in client.drain_pushes():
        if p.command == Cmd.MPS and p.message.message_seq == 0:
            assert p.message.from_uid == 0 and p.message.message_type == 5
            out.append(json.loads(p.message.payload))
    return out


async def sync(
    client: Client, entity_type: str, since: int = 0, scope: str | None = None, limit: int = 0
) -> dict[str, Any]:
    body: dict[str, Any] = {"entity_type": entity_type, "since_version": since}
    if scope is not None:
        body["scope"] = scope
    if limit:
        body["limit"] = limit
    page: dict[str, Any] = await client.rpc("entity/sync_entities", body)
    versions = [i["version"] for i in page["items"]]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert all(v > since for v in versions)
    return page


async def refused(call: Any, code: int, status: int | None = None) -> None:
    try:
        await call
    except ServiceError as exc:
        assert exc.code == code, (exc.code, exc.message)
        if status is not None:
            assert exc.status == status
        return
    raise AssertionError(f"accepted, expected {code}")


# ---- reactions -----------------------------------------------------------------------------------
def test_reactions_are_pushed_and_synced_as_entities(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        bob2 = await other_device(server.port, "bob")
        out = await user(server.port, "outsider")
        ch = (await alice.rpc("channel/direct/get_or_create", {"target_user_id": bob.user_id}))[
            "channel_id"
        ]
        msg = await alice.send(ch, "react to me")
        for c in (alice, bob, bob2):
            await notices(c)
            c.drain_pushes()
        start = (await sync(alice, "message_reaction", scope=str(ch)))["next_version"]
        assert start == 0

        react = {"server_message_id": msg.server_message_id, "channel_id": ch, "emoji": "👍"}
        assert await bob.rpc("message/reaction/add", react) is True
        [told] = await notices(alice)
        meta = told["metadata"]
        assert told["message_type"] == "notification" and told["content"] == "消息回应"
        assert meta["notification_type"] == "message_reaction_added"
        assert (meta["message_id"], meta["channel_id"], meta["channel_type"]) == (
            str(msg.server_message_id),
            ch,
            1,
        )
        assert (meta["user_id"], meta["emoji"]) == (str(bob.user_id), "👍")
        assert meta["reactions"] == {"👍": [bob.user_id]} and meta["total_count"] == 1
        assert [n["metadata"]["notification_type"] for n in await notices(bob2)] == [
            "message_reaction_added"
        ]  # the reactor's other device
        assert await notices(bob) == []  # not back to the session that reacted
        # the same reaction again changes nothing: no notice, no version
        assert await bob.rpc("message/reaction/add", react) is True
        assert await notices(alice) == []

        page = await sync(alice, "message_reaction", start, str(ch))
        [item] = page["items"]
        assert item["entity_id"] == f"{msg.server_message_id}:{bob.user_id}:👍"
        assert item["deleted"] is False and page["next_version"] == item["version"]
        assert item["payload"] == {
            "server_message_id": msg.server_message_id,
            "message_id": msg.server_message_id,
            "channel_id": ch,
            "channel_type": 1,
            "user_id": bob.user_id,
            "uid": bob.user_id,
            "emoji": "👍",
            "is_deleted": False,
        }
        same = await sync(bob2, "reaction", 0, f"1:{ch}")  # the alias, sync_channel's scope
        assert [i["entity_id"] for i in same["items"]] == [item["entity_id"]]

        cursor = page["next_version"]
        assert await bob.rpc("message/reaction/remove", react) is True
        [gone] = await notices(alice)
        assert gone["metadata"]["notification_type"] == "message_reaction_removed"
        assert gone["metadata"]["reactions"] == {} and gone["metadata"]["total_count"] == 0
        assert await bob.rpc("message/reaction/remove", react) is False  # nothing to take
        assert await notices(alice) == []
        after = await sync(alice, "message_reaction", cursor, str(ch))
        assert [(i["entity_id"], i["deleted"], i["payload"]) for i in after["items"]] == [
            (item["entity_id"], True, None)
        ]
        assert after["next_version"] > cursor
        assert (await sync(alice, "message_reaction", after["next_version"], str(ch)))[
            "items"
        ] == []

        # refusals: a scope is needed, and the caller must be a member of it
        await refused(
            alice.rpc("entity/sync_entities", {"entity_type": "message_reaction"}),
            ErrorCode.INVALID_PARAMS,
            Status.BAD_REQUEST,
        )
        await refused(
            out.rpc("entity/sync_entities", {"entity_type": "reaction", "scope": str(ch)}),
            ErrorCode.PERMISSION_DENIED,
            Status.FORBIDDEN,
        )
        for c in (alice, bob, bob2, out):
            await c.close()

    run(main())


# ---- read positions ------------------------------------------------------------------------------
def test_read_positions_reach_members_and_the_readers_other_devices(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        carol = await user(server.port, "carol")
        bob2 = await other_device(server.port, "bob")
        gid = (
            await alice.rpc(
                "group/group/create", {"name": "g", "member_ids": [bob.user_id, carol.user_id]}
            )
        )["group_id"]
        sent = [await alice.send(gid, f"m{i}") for i in range(3)]
        for c in (alice, bob, carol, bob2):
            await notices(c)
            c.drain_pushes()

        read = {"channel_id": gid, "message_id": sent[1].server_message_id}
        assert await bob.rpc("message/status/read", read) is True
        for c in (alice, carol, bob2):  # the members, and bob's other device
            [note] = await notices(c)
            meta = note["metadata"]
            assert note["content"] == "已读位置更新"
            assert meta["notification_type"] == "user_read_pts"
            assert (meta["channel_id"], meta["channel_type"]) == (gid, 2)
            assert (meta["reader_id"], meta["read_pts"]) == (str(bob.user_id), sent[1].message_seq)
            assert meta["read_at"].endswith("Z")
        assert await notices(bob) == []  # not the session that read
        assert await bob.rpc("message/status/read", read) is True  # no move: nobody is told
        assert await notices(alice) == []

        # the members' positions, scoped; the reader's own, unscoped
        members = await sync(alice, "message_status", scope=str(gid))
        [pos] = members["items"]
        assert pos["entity_id"] == f"{gid}:{bob.user_id}" and pos["deleted"] is False
        payload = pos["payload"]
        assert (payload["user_id"], payload["read_pts"]) == (bob.user_id, sent[1].message_seq)
        assert payload["message_id"] == payload["server_message_id"] == sent[1].server_message_id
        assert payload["readed"] is True and payload["channel_type"] == 2
        own = await sync(bob2, "message_read_status")  # the alias, no scope: bob's own
        [mine] = own["items"]
        assert mine["entity_id"] == str(gid) and mine["payload"]["read_pts"] == sent[1].message_seq
        assert (await sync(alice, "message_status"))["items"] == []  # alice read nothing

        cursor, own_cursor = members["next_version"], own["next_version"]
        moved = await bob2.rpc(
            "message/status/read_pts", {"channel_id": gid, "read_pts": sent[2].message_seq}
        )
        assert moved["last_read_pts"] == sent[2].message_seq
        [to_bob] = await notices(bob)  # now the other device's move reaches the first
        assert to_bob["metadata"]["read_pts"] == sent[2].message_seq
        assert await notices(bob2) == []
        [later] = (await sync(carol, "message_status", cursor, str(gid)))["items"]
        assert later["payload"]["read_pts"] == sent[2].message_seq
        assert later["payload"]["message_id"] == sent[2].server_message_id
        [mine2] = (await sync(bob, "message_status", own_cursor))["items"]
        assert mine2["version"] > own_cursor and mine2["payload"]["read_pts"] == sent[2].message_seq

        out = await user(server.port, "outsider")
        await refused(
            out.rpc("entity/sync_entities", {"entity_type": "message_status", "scope": str(gid)}),
            ErrorCode.NOT_GROUP_MEMBER,
            Status.FORBIDDEN,
        )
        for c in (alice, bob, carol, bob2, out):
            await c.close()

    run(main())


# ---- messages ----------------------------------------------------------------------------------
def test_message_entities_page_a_channel_log_by_pts(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        ch = (await alice.rpc("channel/direct/get_or_create", {"target_user_id": bob.user_id}))[
            "channel_id"
        ]
        sent = [await alice.send(ch, f"m{i}") for i in range(5)]
        await bob.send(ch, "reply")
        revoked = sent[1]
        assert await alice.rpc(
            "message/revoke", {"server_message_id": revoked.server_message_id, "channel_id": ch}
        )
        # the SDK's loop, two at a time: 7 events (6 messages, 1 revoke) in 4 pages
        since, pages, items = 0, 0, []
        while True:
            page = await sync(bob, "message", since, f"1:{ch}", limit=2)
            pages += 1
            items += page["items"]
            if not page["has_more"]:
                break
            assert page["next_version"] > since
            since = page["next_version"]
        assert pages == 4 and page["next_version"] == 7
        by_id = {}
        for i in items:  # a client applies them in order: the last one wins
            by_id[i["entity_id"]] = i
        assert set(by_id) == {str(s.server_message_id) for s in sent} | {
            str(items[5]["payload"]["message_id"])
        }
        first = by_id[str(sent[0].server_message_id)]
        assert first["version"] == sent[0].message_seq == 1 and first["deleted"] is False
        p = first["payload"]
        assert (p["server_message_id"], p["channel_id"], p["channel_type"]) == (
            sent[0].server_message_id,
            ch,
            1,
        )
        assert (p["from_uid"], p["content"], p["pts"], p["revoked"]) == (
            alice.user_id,
            "m0",
            1,
            False,
        )
        gone = by_id[str(revoked.server_message_id)]
        assert gone["version"] == 7  # again at its revoke's pts
        assert gone["payload"]["revoked"] is True and gone["payload"]["content"] == ""
        assert gone["payload"]["revoked_by"] == alice.user_id
        # from a cursor: only what came after it
        tail = await sync(alice, "message", 6, str(ch))
        assert [i["entity_id"] for i in tail["items"]] == [str(revoked.server_message_id)]
        assert (tail["next_version"], tail["has_more"]) == (7, False)
        assert (await sync(alice, "message", 7, str(ch)))["items"] == []

        # a new member of a group starts at their join
        gid = (await alice.rpc("group/group/create", {"name": "g", "member_ids": []}))["group_id"]
        before = await alice.send(gid, "before bob")
        await alice.rpc("group/member/add", {"group_id": gid, "user_id": bob.user_id})
        after = await alice.send(gid, "after bob")
        seen = {i["entity_id"] for i in (await sync(bob, "message", 0, str(gid)))["items"]}
        assert str(after.server_message_id) in seen
        assert str(before.server_message_id) not in seen

        out = await user(server.port, "outsider")
        await refused(
            bob.rpc("entity/sync_entities", {"entity_type": "message"}),
            ErrorCode.INVALID_PARAMS,
            Status.BAD_REQUEST,
        )
        await refused(
            out.rpc("entity/sync_entities", {"entity_type": "message", "scope": str(ch)}),
            ErrorCode.PERMISSION_DENIED,
            Status.FORBIDDEN,
        )
        await refused(
            out.rpc("entity/sync_entities", {"entity_type": "message", "scope": "99999"}),
            ErrorCode.PERMISSION_DENIED,
        )
        for c in (alice, bob, out):
            await c.close()

    run(main())


# ---- who is told, in memory --------------------------------------------------------------------
def _notice_types(dev: Device) -> list[str]:
    out = []
    for r in dev.pushes():
        if r.command == Cmd.MPS:
            msgs = [pb.PushMessageRequest.FromString(r.body)]
        elif r.command == Cmd.MPB:
            msgs = list(pb.PushBatchRequest.FromString(r.body).messages)
        else:
            continue
        for m in msgs:
            if m.message_seq == 0:
                out.append(json.loads(m.payload)["metadata"]["notification_type"])
    dev.received.clear()
    return out


@pytest.mark.parametrize("large", [False, True])
def test_who_is_told_by_group_size(large: bool) -> None:
    """A group up to ``large_group_threshold`` members: every member is told of a read
    position and a reaction. Above it: a read only to the reader's other devices, a reaction
    only to the reactor's and the message's sender."""
    h = Harness(Settings(jwt_secret="harness-secret-" + "0" * 32, large_group_threshold=3))
    owner, reader, other, fourth = (h.user(n) for n in ("owner", "reader", "other", "fourth"))
    d_owner, d_reader, d_reader2, d_other = (
        h.login(owner),
        h.login(reader),
        h.login(reader),
        h.login(other),
    )
    members = [reader.user_id, other.user_id] + ([fourth.user_id] if large else [])
    gid = d_owner.rpc("group/group/create", {"name": "g", "member_ids": members})["group_id"]
    req = pb.SendMessageRequest(client_seq=1, channel_id=gid, payload=b'{"content":"x"}')
    sent = pb.SendMessageResponse.FromString(d_owner.request(Cmd.MS, req.SerializeToString()).body)
    for d in (d_owner, d_reader, d_reader2, d_other):
        d.received.clear()

    d_reader.rpc("message/status/read_pts", {"channel_id": gid, "read_pts": sent.message_seq})
    told = {"owner": d_owner, "reader2": d_reader2, "other": d_other, "reader": d_reader}
    got = {name: _notice_types(d) for name, d in told.items()}
    everyone = not large
    assert got == {
        "owner": ["user_read_pts"] if everyone else [],
        "reader2": ["user_read_pts"],
        "other": ["user_read_pts"] if everyone else [],
        "reader": [],
    }
    d_reader.rpc(
        "message/reaction/add",
        {"server_message_id": sent.server_message_id, "channel_id": gid, "emoji": "👍"},
    )
    got = {name: _notice_types(d) for name, d in told.items()}
    assert got == {
        "owner": ["message_reaction_added"],  # the message's sender, always
        "reader2": ["message_reaction_added"],
        "other": ["message_reaction_added"] if everyone else [],
        "reader": [],
    }

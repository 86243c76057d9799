"""``message/*`` over TCP (issue 12): history, read state and receipts, reactions, replies,
mentions and per-type metadata; the catch-up at READY (cursors, new devices, new members,
bounds) and the ``sync/submit`` defects; read state and reactions across a SQLite restart."""

from __future__ import annotations

import asyncio
import json
import pathlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from conftest import ServerThread, device, run, user

from privchat_tcp.client import Client, Push
from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.wire.commands import Cmd


async def refused(call: Awaitable[Any], code: int, status: int | None = None) -> ServiceError:
    try:
        await call
    except ServiceError as exc:
        assert exc.code == code, (exc.code, exc.message)
        if status is not None:
            assert exc.status == status, (exc.status, exc.message)
        return exc
    raise AssertionError(f"accepted, expected {code}")


async def direct(a: Client, b: Client) -> int:
    got = await a.rpc("channel/direct/get_or_create", {"target_user_id": b.user_id})
    return int(got["channel_id"])


async def settle(server: ServerThread, user_id: int) -> None:
    """Wait until the server has ended every session of ``user_id`` (their close is
    handled on the server's loop after the client's)."""
    assert server.server is not None
    hub = server.server.hub
    for _ in range(500):
        if server.call(lambda: hub.device_count(user_id)) == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("sessions did not end")


def seqs(pushes: list[Push]) -> list[tuple[int, int]]:
    """(command, pts) of each push: MPS with its pts, MN with the pts it announces."""
    out = []
    for p in pushes:
        if p.command == Cmd.MPS:
            out.append((Cmd.MPS, p.message.message_seq))
        elif p.command == Cmd.MN:
            out.append((Cmd.MN, p.message.pts))
    return out


async def next_notice(client: Client, timeout: float = 10.0) -> dict[str, Any]:
    """The next push that is a notice (no pts, from_uid 0): its payload JSON."""
    while True:
        p = await client.next_push(timeout)
        if p.command == Cmd.MPS and p.message.message_seq == 0:
            assert p.message.from_uid == 0 and p.message.message_type == 5
            value: dict[str, Any] = json.loads(p.message.payload)
            return value


# ---- history ------------------------------------------------------------------------------------
def test_history_pages_backwards_with_revoked_content_blanked(server: ServerThread) -> None:
    async def main() -> None:
        a = await user(server.port, "alice")
        b = await user(server.port, "bob")
        out = await user(server.port, "outsider")
        ch = await direct(a, b)
        sent = [await a.send(ch, f"m{i}") for i in range(5)]
        await a.revoke(ch, sent[3].server_message_id)  # a revoke event: pts 6, not a message
        page = await b.rpc("message/history/get", {"channel_id": ch, "limit": 3, "user_id": 0})
        assert [m["content"] for m in page["messages"]] == ["m2", "", "m4"]
        assert page["has_more"] is True and page["total"] == 3
        first = page["messages"][0]
        assert first["message_id"] == sent[2].server_message_id
        assert first["channel_id"] == ch and first["sender_id"] == a.user_id
        assert first["message_type"] == "text" and first["timestamp"].endswith("Z")
        assert first["revoked"] is False and first["revoked_at"] is None
        gone = page["messages"][1]
        assert gone["revoked"] is True and gone["revoked_by"] == a.user_id
        assert gone["content"] == "" and isinstance(gone["revoked_at"], int)
        older = await b.rpc(
            "message/history/get",
            {"channel_id": ch, "before_server_message_id": first["message_id"]},
        )
        assert [m["content"] for m in older["messages"]] == ["m0", "m1"]
        assert older["has_more"] is False
        everything = await a.rpc("message/history/get", {"channel_id": ch})
        assert len(everything["messages"]) == 5  # the default page is 20
        # refusals: an outsider, a message that is not there, a key it does not read
        await refused(
            out.rpc("message/history/get", {"channel_id": ch}),
            ErrorCode.PERMISSION_DENIED,
            Status.FORBIDDEN,
        )
        await refused(
            b.rpc("message/history/get", {"channel_id": ch, "before_server_message_id": 12345}),
            ErrorCode.MESSAGE_NOT_FOUND,
            Status.NOT_FOUND,
        )
        exc = await refused(
            b.rpc("message/history/get", {"channel_id": ch, "before": 1}),
            ErrorCode.INVALID_PARAMS,
            Status.BAD_REQUEST,
        )
        assert "before" in exc.message
        for c in (a, b, out):
            await c.close()

    run(main())


# ---- read state ---------------------------------------------------------------------------------
def test_read_status_counts_lists_and_receipts(server: ServerThread) -> None:
    async def main() -> None:
        a = await user(server.port, "alice")
        b = await user(server.port, "bob")
        c = await user(server.port, "carol")
        out = await user(server.port, "outsider")
        ch = await direct(a, b)
        sent = [await a.send(ch, f"m{i}") for i in range(3)]
        await b.send(ch, "mine")  # the reader's own message is never unread
        assert await b.rpc("message/status/count", {"channel_id": ch}) == {
            "unread_count": 3,
            "channel_id": str(ch),
        }
        g = await a.rpc("group/group/create", {"name": "g", "member_ids": [b.user_id, c.user_id]})
        gid = g["group_id"]
        gm = await a.send(gid, "to the group")
        total = await b.rpc("message/status/count", {})
        assert total == {"unread_count": 5, "channel_id": None}  # with the GroupCreated notice

        a.drain_pushes()
        read = {"channel_id": ch, "message_id": sent[1].server_message_id}
        assert await b.rpc("message/status/read", read) is True
        receipt = await next_notice(a)
        assert receipt["message_type"] == "notification" and receipt["content"] == "消息已读"
        meta = receipt["metadata"]
        assert meta["notification_type"] == "read_receipt"
        assert meta["message_id"] == str(sent[1].server_message_id)
        assert meta["channel_id"] == ch and meta["reader_id"] == str(b.user_id)
        assert meta["read_at"].endswith("Z")
        assert (await b.rpc("message/status/count", {"channel_id": ch}))["unread_count"] == 1

        readers = await a.rpc(
            "message/status/read_list",
            {"channel_id": ch, "server_message_id": sent[0].server_message_id},
        )
        assert [r["user_id"] for r in readers["readers"]] == [b.user_id]
        assert readers["readers"][0]["username"] == "bob" and readers["readers"][0]["read_at"]
        assert (readers["total"], readers["read_count"], readers["unread_count"]) == (1, 1, 0)
        late = await a.rpc(
            "message/status/read_stats", {"channel_id": ch, "message_id": sent[2].server_message_id}
        )
        assert late == {"read_count": 0, "total_count": 1}

        # read_pts: the position moves forward only, cut at the channel's pts; the peer is told
        moved = await b.rpc("message/status/read_pts", {"channel_id": ch, "read_pts": 100})
        assert moved == {
            "status": "success",
            "message": "已读 pts 已更新",
            "channel_id": ch,
            "last_read_pts": 4,
            "accepted_read_pts": 4,
        }
        note = await next_notice(a)
        assert note["metadata"]["notification_type"] == "user_read_pts"
        assert note["metadata"]["read_pts"] == 4 and note["metadata"]["reader_id"] == str(b.user_id)
        back = await b.rpc("message/status/read_pts", {"channel_id": ch, "read_pts": 1})
        assert back["last_read_pts"] == 4 and back["accepted_read_pts"] == 1
        assert (await b.rpc("message/status/count", {}))["unread_count"] == 2  # the group's

        # a group: the list counts the members but the sender; no read_receipt, but the
        # members are told the reader's position (a small group: every member)
        assert await c.rpc(
            "message/status/read", {"channel_id": gid, "message_id": gm.server_message_id}
        )
        stats = await a.rpc(
            "message/status/read_stats", {"channel_id": gid, "message_id": gm.server_message_id}
        )
        assert stats == {"read_count": 1, "total_count": 2}
        moved_note = await next_notice(a)
        assert moved_note["metadata"]["notification_type"] == "user_read_pts"
        assert moved_note["metadata"]["channel_id"] == gid
        assert moved_note["metadata"]["reader_id"] == str(c.user_id)
        await a.ping()
        notices = [
            p for p in a.drain_pushes() if p.command == Cmd.MPS and p.message.message_seq == 0
        ]
        assert notices == []  # one notice, not two

        # refusals
        await refused(
            out.rpc("message/status/read", read), ErrorCode.PERMISSION_DENIED, Status.FORBIDDEN
        )
        await refused(
            b.rpc("message/status/read", {"channel_id": ch, "message_id": 999}),
            ErrorCode.MESSAGE_NOT_FOUND,
            Status.NOT_FOUND,
        )
        await refused(
            b.rpc("message/status/read", {"channel_id": ch}),
            ErrorCode.MISSING_REQUIRED_PARAM,
            Status.BAD_REQUEST,
        )
        await refused(
            out.rpc("message/status/count", {"channel_id": gid}),
            ErrorCode.NOT_GROUP_MEMBER,
            Status.FORBIDDEN,
        )
        await refused(out.rpc("message/status/read_list", read), ErrorCode.PERMISSION_DENIED)
        await refused(
            b.rpc("message/status/read_pts", {"channel_id": ch, "read_pts": -1}),
            ErrorCode.PARAM_OUT_OF_RANGE,
            Status.BAD_REQUEST,
        )
        for x in (a, b, c, out):
            await x.close()

    run(main())


# ---- reactions ----------------------------------------------------------------------------------
def test_reactions_add_remove_list_stats(server: ServerThread) -> None:
    async def main() -> None:
        a = await user(server.port, "alice")
        b = await user(server.port, "bob")
        out = await user(server.port, "outsider")
        ch = await direct(a, b)
        m = (await a.send(ch, "react to me")).server_message_id
        for who, emoji in ((b, "👍"), (a, "👍"), (b, "❤️")):
            assert (
                await who.rpc(
                    "message/reaction/add",
                    {"server_message_id": m, "channel_id": ch, "emoji": emoji},
                )
                is True
            )
        # adding again changes nothing
        assert await b.rpc("message/reaction/add", {"server_message_id": m, "emoji": "👍"})
        listed = await a.rpc("message/reaction/list", {"server_message_id": m})
        assert listed == {
            "success": True,
            "reactions": {"👍": [b.user_id, a.user_id], "❤️": [b.user_id]},
            "total_count": 3,
        }
        assert (
            await b.rpc("message/reaction/remove", {"server_message_id": m, "emoji": "👍"}) is True
        )
        assert (
            await b.rpc("message/reaction/remove", {"server_message_id": m, "emoji": "👍"}) is False
        )
        stats = await b.rpc("message/reaction/stats", {"server_message_id": m, "channel_id": ch})
        assert stats == {
            "success": True,
            "stats": {"reactions": {"👍": [a.user_id], "❤️": [b.user_id]}, "total_count": 2},
        }
        # refusals
        add = {"server_message_id": m, "emoji": "😀"}
        await refused(
            out.rpc("message/reaction/add", add), ErrorCode.PERMISSION_DENIED, Status.FORBIDDEN
        )
        await refused(
            out.rpc("message/reaction/list", {"server_message_id": m}), ErrorCode.PERMISSION_DENIED
        )
        await refused(
            a.rpc("message/reaction/add", {"server_message_id": 42, "emoji": "😀"}),
            ErrorCode.MESSAGE_NOT_FOUND,
            Status.NOT_FOUND,
        )
        await refused(
            a.rpc(
                "message/reaction/add",
                {"server_message_id": m, "channel_id": ch + 1, "emoji": "😀"},
            ),
            ErrorCode.MESSAGE_NOT_FOUND,
        )
        await refused(
            a.rpc("message/reaction/add", {"server_message_id": m, "emoji": "  "}),
            ErrorCode.INVALID_PARAMS,
            Status.BAD_REQUEST,
        )
        await refused(
            a.rpc("message/reaction/add", {"server_message_id": m, "emoji": "x" * 33}),
            ErrorCode.PARAM_OUT_OF_RANGE,
        )
        # bounded: at most 20 reactions of one user on one message
        for i in range(19):
            await a.rpc("message/reaction/add", {"server_message_id": m, "emoji": f"e{i}"})
        await refused(
            a.rpc("message/reaction/add", {"server_message_id": m, "emoji": "one too many"}),
            ErrorCode.PARAM_OUT_OF_RANGE,
        )
        await a.revoke(ch, m)
        await refused(
            b.rpc("message/reaction/add", {"server_message_id": m, "emoji": "😀"}),
            ErrorCode.MESSAGE_REVOKED,
            Status.CONFLICT,
        )
        for x in (a, b, out):
            await x.close()

    run(main())


# ---- replies, mentions, metadata ----------------------------------------------------------------
def envelope(**fields: Any) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode()


def test_replies_mentions_and_metadata_are_checked(server: ServerThread) -> None:
    async def main() -> None:
        owner = await user(server.port, "owner")
        m1 = await user(server.port, "member1")
        other = await user(server.port, "other")
        g = await owner.rpc("group/group/create", {"name": "g", "member_ids": [m1.user_id]})
        gid = g["group_id"]
        elsewhere = await direct(owner, other)
        first = await owner.send(gid, "first")
        away = await owner.send(elsewhere, "in another channel")

        reply = await m1.send(
            gid, payload=envelope(content="re", reply_to_message_id=str(first.server_message_id))
        )
        assert reply.server_message_id
        hist = await owner.rpc("message/history/get", {"channel_id": gid})
        assert hist["messages"][-1]["reply_to_message_id"] == str(first.server_message_id)
        for target in (12345, away.server_message_id, "not a number"):
            await refused(
                m1.send(gid, payload=envelope(content="re", reply_to_message_id=target)),
                ErrorCode.MESSAGE_NOT_FOUND,
            )
        # MessageContent carries a reply too
        req = pb.SendMessageRequest(
            client_seq=1,
            channel_id=gid,
            content=pb.MessageContent(searchable_content="re", reply_to_message_id=99),
        )
        await refused(m1.call(Cmd.MS, req, pb.SendMessageResponse), ErrorCode.MESSAGE_NOT_FOUND)

        # @all: the owner (or an admin) only
        await refused(m1.send(gid, "hello @all"), ErrorCode.PERMISSION_DENIED, Status.FORBIDDEN)
        await refused(
            m1.send(gid, payload=envelope(content="x", is_mention_all=True)),
            ErrorCode.PERMISSION_DENIED,
        )
        assert (await owner.send(gid, "hello @all")).server_message_id
        assert (await m1.send(gid, "mail me at a@b.c")).server_message_id  # not a mention
        ok = envelope(content="hi", mentioned_user_ids=[owner.user_id])
        assert (await m1.send(gid, payload=ok)).server_message_id
        await refused(
            m1.send(gid, payload=envelope(content="hi", mentioned_user_ids=[other.user_id])),
            ErrorCode.MESSAGE_CONTENT_INVALID,
            Status.BAD_REQUEST,
        )

        # metadata by type (0.1.1 numbering: 1 image, 7 location, 8 contact card, 9 sticker)
        cases: list[tuple[int, Any, int]] = [
            (1, None, ErrorCode.MESSAGE_CONTENT_INVALID),
            (1, {"url": "x"}, ErrorCode.MESSAGE_CONTENT_INVALID),
            # well formed, but not a file m1 uploaded (tests/test_files.py sends real ones)
            (1, {"file_id": "12", "width": 10, "height": 20}, ErrorCode.MESSAGE_CONTENT_INVALID),
            (1, {"file_id": 12, "width": -1}, ErrorCode.MESSAGE_CONTENT_INVALID),
            (2, {"file_id": 7}, ErrorCode.MESSAGE_CONTENT_INVALID),
            (7, {"latitude": 91, "longitude": 0}, ErrorCode.MESSAGE_CONTENT_INVALID),
            (7, {"latitude": 48.8, "longitude": 2.35}, 0),
            (8, {"user_id": 99}, ErrorCode.MESSAGE_CONTENT_INVALID),
            (8, {"user_id": other.user_id}, 0),
            (9, {"sticker_id": "s1"}, ErrorCode.MESSAGE_CONTENT_INVALID),
            (9, {"sticker_id": "s1", "image_url": "https://x/y.png"}, 0),
            (10, {"messages": []}, ErrorCode.MESSAGE_CONTENT_INVALID),
            (10, {"messages": [{"message_id": 1, "content": "c"}]}, 0),
        ]
        for message_type, metadata, code in cases:
            body = envelope(content="", metadata=metadata)
            call = m1.send(gid, payload=body, message_type=message_type)
            if code:
                await refused(call, code)
            else:
                assert (await call).server_message_id, (message_type, metadata)
        # sync/submit applies the same rules
        submit = {
            "local_message_id": 0,
            "channel_id": gid,
            "channel_type": 2,
            "last_pts": 0,
            "command_type": "image",
            "payload": {"content": "pic"},
            "client_timestamp": 0,
        }
        await refused(m1.rpc("sync/submit", submit), ErrorCode.MESSAGE_CONTENT_INVALID)
        submit["payload"] = {"text": "everyone @all"}
        submit["command_type"] = "text"
        await refused(m1.rpc("sync/submit", submit), ErrorCode.PERMISSION_DENIED)
        for x in (owner, m1, other):
            await x.close()

    run(main())


# ---- sync/submit defects ------------------------------------------------------------------------
def test_sync_submit_refuses_reused_ids_null_payloads_and_system_messages(
    server: ServerThread,
) -> None:
    async def main() -> None:
        a = await user(server.port, "alice")
        b = await user(server.port, "bob")
        c = await user(server.port, "carol")
        ab = await direct(a, b)
        ac = await direct(a, c)

        def body(channel: int, **over: Any) -> dict[str, Any]:
            out = {
                "local_message_id": 77,
                "channel_id": channel,
                "channel_type": 1,
                "last_pts": 0,
                "command_type": "text",
                "payload": {"text": "hello"},
                "client_timestamp": 0,
            }
            out.update(over)
            return out

        first = await a.rpc("sync/submit", body(ab))
        again = await a.rpc("sync/submit", body(ab))
        assert again["server_msg_id"] == first["server_msg_id"] and again["pts"] == first["pts"]
        # the same local id in another channel is not a retry of that message
        await refused(
            a.rpc("sync/submit", body(ac)), ErrorCode.DUPLICATE_OPERATION, Status.CONFLICT
        )
        await refused(a.send(ac, "x", local_message_id=77), ErrorCode.DUPLICATE_OPERATION)
        assert [m.message_seq for m in (await b.pull(ab, 0, 10)).messages] == [1]
        assert (await c.pull(ac, 0, 10)).messages == []
        # a null payload is no message; nor is a number
        await refused(
            a.rpc("sync/submit", body(ab, local_message_id=78, payload=None)),
            ErrorCode.MISSING_REQUIRED_PARAM,
            Status.BAD_REQUEST,
        )
        await refused(
            a.rpc("sync/submit", body(ab, local_message_id=79, payload=5)),
            ErrorCode.INVALID_PARAM_TYPE,
        )
        # no user commits a System message, by either path
        await refused(
            a.rpc("sync/submit", body(ab, local_message_id=80, command_type="system")),
            ErrorCode.PERMISSION_DENIED,
            Status.FORBIDDEN,
        )
        await refused(a.send(ab, "official", message_type=5), ErrorCode.PERMISSION_DENIED)
        diff = await b.rpc("sync/get_difference", {"channel_id": ab, "last_pts": 0})
        assert [x["content"]["content"] for x in diff["commits"]] == ["hello"]
        for x in (a, b, c):
            await x.close()

    run(main())


# ---- catch-up at READY --------------------------------------------------------------------------
async def raw_device(port: int, token: str, device_id: str, ready: bool = True) -> Client:
    """A device that never ACKs and does not pull on gaps (as PrivChat's SDK: no ACK)."""
    return await device(port, token, device_id, ready=ready, track=False, auto_ack=False)


def test_catch_up_starts_where_the_device_is(server: ServerThread) -> None:
    async def main() -> None:
        port = server.port
        a = await user(port, "alice")
        b = await user(port, "bob", track=False, auto_ack=False)
        ch = await direct(a, b)
        for i in range(3):
            await a.send(ch, f"live{i}")
        got = []
        while len(got) < 3:
            got.append(await b.next_push(10))
        assert seqs(got) == [(Cmd.MPS, 1), (Cmd.MPS, 2), (Cmd.MPS, 3)]
        # pushed live, never acknowledged: not pushed again at the next READY
        await b.close()
        await settle(server, b.user_id)
        await b.reconnect()
        assert seqs(b.drain_pushes()) == []
        # missed while offline: pushed once at READY, not at the one after
        await b.close()
        await settle(server, b.user_id)
        for i in range(2):
            await a.send(ch, f"offline{i}")
        await b.reconnect()
        assert seqs(b.drain_pushes()) == [(Cmd.MPS, 4), (Cmd.MPS, 5)]
        await b.close()
        await settle(server, b.user_id)
        await b.reconnect()
        assert seqs(b.drain_pushes()) == []
        # a device that pulled has what it pulled
        await b.close()
        await settle(server, b.user_id)
        await a.send(ch, "pulled")
        puller = await raw_device(port, b.token, b.device_id, ready=False)
        assert [m.message_seq for m in (await puller.pull(ch, 5, 10)).messages] == [6]
        await puller.close()
        await settle(server, b.user_id)
        await b.reconnect()
        assert seqs(b.drain_pushes()) == []
        # a new device of the user starts where the user's devices are: what the user missed
        await b.close()
        await settle(server, b.user_id)
        await a.send(ch, "missed by every device")
        fresh = await Client.connect("127.0.0.1", port, track=False, auto_ack=False)
        await fresh.password_login("bob", "password-bob", str(uuid.uuid4()))
        await fresh.login()
        await fresh.ready()
        assert seqs(fresh.drain_pushes()) == [(Cmd.MPS, 7)]
        await fresh.close()
        await a.close()

    run(main())


def test_a_new_member_starts_after_it_joined(server: ServerThread) -> None:
    async def main() -> None:
        port = server.port
        a = await user(port, "alice")
        b = await user(port, "bob")
        carol = await user(port, "carol", track=False, auto_ack=False)
        await carol.close()
        g = (await a.rpc("group/group/create", {"name": "g", "member_ids": [b.user_id]}))[
            "group_id"
        ]
        for i in range(3):
            await a.send(g, f"before{i}")
        assert await a.rpc("group/member/add", {"group_id": g, "user_id": carol.user_id})
        for i in range(2):
            await a.send(g, f"after{i}")
        await settle(server, carol.user_id)
        await carol.reconnect()
        # pts 1 is the GroupCreated notice, 5 the notice of carol's joining, then hers
        assert seqs(carol.drain_pushes()) == [(Cmd.MPS, 5), (Cmd.MPS, 6), (Cmd.MPS, 7)]
        pulled = await carol.pull(g, 0, 100)
        assert [m.message_seq for m in pulled.messages] == [5, 6, 7] and pulled.current_pts == 7
        diff = await carol.rpc("sync/get_difference", {"channel_id": g, "last_pts": 0})
        assert [x["pts"] for x in diff["commits"]] == [5, 6, 7]
        hist = await carol.rpc("message/history/get", {"channel_id": g})
        assert [m["content"] for m in hist["messages"]][1:] == ["after0", "after1"]
        assert hist["messages"][0]["sender_id"] == 1  # the join notice
        assert hist["has_more"] is False
        before = (await b.pull(g, 0, 1)).messages[0].server_message_id
        await refused(
            carol.rpc("message/reaction/add", {"server_message_id": before, "emoji": "👍"}),
            ErrorCode.MESSAGE_NOT_FOUND,
        )
        # b, a member from the start, still reads the whole history
        assert len((await b.rpc("message/history/get", {"channel_id": g}))["messages"]) == 7
        for x in (a, b, carol):
            await x.close()

    run(main())


def test_the_replay_is_bounded(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(catchup_push_limit=3)

    async def main() -> None:
        a = await user(srv.port, "alice")
        b = await user(srv.port, "bob", track=False, auto_ack=False)
        ch = await direct(a, b)
        await b.close()
        await settle(srv, b.user_id)
        for i in range(5):
            await a.send(ch, f"m{i}")
        await b.reconnect()
        assert seqs(b.drain_pushes()) == [(Cmd.MN, 5)]  # too many to push: an MN to pull
        page = await b.pull(ch, 0, 100)
        assert [m.message_seq for m in page.messages] == [1, 2, 3, 4, 5]
        await b.close()
        await settle(srv, b.user_id)
        await b.reconnect()
        assert seqs(b.drain_pushes()) == []  # it pulled: nothing to replay
        await a.close()
        await b.close()

    run(main())


# ---- durable across a restart (SQLite) ----------------------------------------------------------
def test_read_state_reactions_and_cursors_survive_a_restart(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    first = ServerThread(data_dir=str(data)).start()
    state: dict[str, Any] = {}

    async def before() -> None:
        a = await user(first.port, "alice")
        b = await user(first.port, "bob", track=False, auto_ack=False)
        ch = await direct(a, b)
        sent = [await a.send(ch, f"m{i}") for i in range(3)]
        for _ in range(3):
            await b.next_push(10)
        assert await b.rpc(
            "message/status/read", {"channel_id": ch, "message_id": sent[1].server_message_id}
        )
        assert await b.rpc(
            "message/reaction/add", {"server_message_id": sent[0].server_message_id, "emoji": "🎉"}
        )
        assert await a.rpc(
            "message/reaction/add", {"server_message_id": sent[0].server_message_id, "emoji": "🎉"}
        )
        state.update(ch=ch, ids=[s.server_message_id for s in sent], token=b.token, dev=b.device_id)
        await a.close()
        await b.close()
        await settle(first, b.user_id)

    run(before())
    first.stop()
    second = ServerThread(data_dir=str(data)).start()
    try:

        async def after() -> None:
            a = await Client.connect("127.0.0.1", second.port)
            await a.password_login("alice", "password-alice")
            await a.login()
            ch, ids = state["ch"], state["ids"]
            b = await raw_device(second.port, state["token"], state["dev"])
            assert seqs(b.drain_pushes()) == []  # its cursor survived: nothing replayed
            assert (await b.rpc("message/status/count", {"channel_id": ch}))["unread_count"] == 1
            stats = await a.rpc(
                "message/status/read_stats", {"channel_id": ch, "message_id": ids[1]}
            )
            assert stats == {"read_count": 1, "total_count": 1}
            listed = await b.rpc("message/reaction/list", {"server_message_id": ids[0]})
            assert listed["reactions"] == {"🎉": [b.user_id, a.user_id]}
            await a.close()
            await b.close()

        run(after())
    finally:
        second.stop()


def test_old_history_and_counts_read_beyond_the_window(
    make_server: Callable[..., ServerThread],
) -> None:
    """With SQLite keeping 8 records per channel in memory, history and unread counts of 30
    messages read the older ones from the database (off the loop) and miss none."""
    srv = make_server(memory_window=8)

    async def main() -> None:
        a = await user(srv.port, "alice")
        b = await user(srv.port, "bob")
        ch = await direct(a, b)
        for i in range(30):
            await a.send(ch, f"m{i}")
        await a.revoke(ch, (await b.pull(ch, 4, 1)).messages[0].server_message_id)  # m4
        assert server_in_memory(srv) <= 8 + 8 // 4 + 2
        seen: list[str] = []
        before = 0
        while True:
            body: dict[str, Any] = {"channel_id": ch, "limit": 7}
            if before:
                body["before_server_message_id"] = before
            page = await b.rpc("message/history/get", body)
            seen[:0] = [m["content"] for m in page["messages"]]
            if not page["has_more"]:
                break
            before = page["messages"][0]["message_id"]
        assert seen == [("" if i == 4 else f"m{i}") for i in range(30)]
        count = await b.rpc("message/status/count", {"channel_id": ch})
        assert count["unread_count"] == 29  # the revoked one is not unread
        await b.rpc("message/status/read_pts", {"channel_id": ch, "read_pts": 10})
        assert (await b.rpc("message/status/count", {}))["unread_count"] == 20
        await a.close()
        await b.close()

    run(main())


def server_in_memory(srv: ServerThread) -> int:
    assert srv.server is not None
    store = srv.server.store
    return int(srv.call(lambda: store.stats()["messages_in_memory"]))

"""Sessions and messaging end to end over TCP (issue: core server, 'done when')."""

from __future__ import annotations

import asyncio
import uuid

from conftest import ServerThread, device, run, user

from privchat_tcp.client import Client, Push
from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.wire.commands import Cmd


async def collect(client: Client, until: dict[int, int], timeout: float = 20.0) -> list[Push]:
    """Pushes until the client's pts reach ``until`` for every channel."""
    got: list[Push] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(client.last_pts.get(c, 0) < p for c, p in until.items()):
        remaining = deadline - loop.time()
        assert remaining > 0, (client.last_pts, until)
        try:
            got.append(await client.next_push(remaining))
        except TimeoutError:
            break
    got.extend(client.drain_pushes())
    return got


def test_three_users_two_devices_offline_catch_up_retry_revoke_replace(
    server: ServerThread,
) -> None:
    async def main() -> None:
        port = server.port
        a1 = await user(port, "alice")
        b1 = await user(port, "bob")
        c1 = await user(port, "carol")
        # a second device of each user logs in with the password for its own token
        devices: dict[str, Client] = {"a1": a1, "b1": b1, "c1": c1}
        for name in ("alice", "bob", "carol"):
            second = await Client.connect("127.0.0.1", port)
            await second.password_login(name, "password-" + name, str(uuid.uuid4()))
            await second.login()
            await second.ready()
            devices[name[0] + "2"] = second
        a2, b2, c2 = devices["a2"], devices["b2"], devices["c2"]

        group = await a1.rpc(
            "group/group/create", {"name": "trio", "member_ids": [b1.user_id, c1.user_id]}
        )
        gid = group["group_id"]
        ab = (await a1.rpc("channel/direct/get_or_create", {"target_user_id": b1.user_id}))[
            "channel_id"
        ]
        ac = (await a1.rpc("channel/direct/get_or_create", {"target_user_id": c1.user_id}))[
            "channel_id"
        ]

        # c2 receives a first message, acknowledges it, then goes offline
        await a1.send(gid, "before")  # pts 2: pts 1 is the GroupCreated notice
        first = await collect(c2, {gid: 2})
        assert [p.message.message_seq for p in first] == [1, 2]
        await asyncio.sleep(0.05)  # let the ACK leave
        await c2.close()

        senders = [(a1, gid), (b1, gid), (c1, gid), (a2, ab), (b2, ab), (c1, ac), (a1, ac)]
        final: dict[int, int] = {}
        for i in range(1000):
            client, channel = senders[i % len(senders)]
            resp = await client.send(channel, f"m{i}", local_message_id=i + 1)
            final[channel] = resp.message_seq
        assert final[gid] == 2 + sum(1 for i in range(1000) if senders[i % 7][1] == gid)

        # a retried MS returns the original id and pts, and stores nothing twice
        again = await a1.send(gid, "m0", local_message_id=1)
        first_reply = (await a1.pull(gid, 2, 1)).messages[0]
        assert again.server_message_id == first_reply.server_message_id
        assert again.message_seq == 3
        assert server.call(lambda: server.server.store.current_pts(gid)) == final[gid]  # type: ignore[union-attr]

        # every online device ends with every channel's last pts, without a duplicate
        for name, client in devices.items():
            if name == "c2":
                continue
            wanted = {
                c: p
                for c, p in final.items()
                if c == gid or (c == ab and name[0] in "ab") or (c == ac and name[0] in "ac")
            }
            await collect(client, wanted)
            assert client.duplicates == 0, name

        # the offline device reconnects: every message exactly once, in pts order
        await c2.reconnect()
        wanted = {gid: final[gid], ac: final[ac]}
        pushes = await collect(c2, wanted)
        seen: dict[int, list[int]] = {}
        for p in pushes:
            if p.command == Cmd.MPS:
                seen.setdefault(p.message.channel_id, []).append(p.message.message_seq)
        assert seen[gid] == list(range(3, final[gid] + 1))
        assert seen[ac] == list(range(1, final[ac] + 1))
        assert ab not in seen
        assert c2.duplicates == 0

        # a revoke reaches every device, as a new pts event
        target = (await b1.pull(gid, 2, 1)).messages[0]
        revoked = await a1.revoke(gid, target.server_message_id)
        assert revoked.pts == final[gid] + 1
        for name, client in devices.items():
            if name == "a1":
                continue
            got = await collect(client, {gid: revoked.pts})
            events = [p.message for p in got if p.command == Cmd.MPS and p.message.deleted]
            assert [e.server_message_id for e in events] == [target.server_message_id], name
            assert events[0].topic == "message.revoke"
        # pulled again, the revoked message is a tombstone
        tomb = (await b1.pull(gid, 2, 1)).messages[0]
        assert tomb.deleted and tomb.payload == b""

        # a second LOGIN of a device replaces the first: LOGOUT flow 2, REPLACED
        replacement = await device(port, a1.token, a1.device_id)
        end = await a1.next_push(5)
        while end.command != Cmd.LOGOUT:
            end = await a1.next_push(5)
        assert end.status == Status.REPLACED
        await a1.wait_closed()
        assert await replacement.ping()

        for client in [*devices.values(), replacement]:
            await client.close()

    run(main(), timeout=120)


def test_group_rules_over_rpc(server: ServerThread) -> None:
    async def main() -> None:
        owner = await user(server.port, "owner")
        m1 = await user(server.port, "member1")
        m2 = await user(server.port, "member2")
        out = await user(server.port, "outsider")
        g = await owner.rpc(
            "group/group/create", {"name": "team", "description": "d", "member_ids": [m1.user_id]}
        )
        gid = g["group_id"]
        assert g["member_count"] == 2 and g["creator_id"] == owner.user_id
        assert await m1.rpc("group/member/add", {"group_id": gid, "user_id": m2.user_id}) is True
        try:
            await m1.rpc("group/member/add", {"group_id": gid, "user_id": m2.user_id})
            raise AssertionError("duplicate add accepted")
        except ServiceError as exc:
            assert exc.code == ErrorCode.MEMBER_ALREADY_IN_GROUP and exc.status == Status.CONFLICT
        for call, body, code in [
            (out, {"group_id": gid}, ErrorCode.NOT_GROUP_MEMBER),
        ]:
            try:
                await call.rpc("group/member/list", body)
                raise AssertionError("outsider listed members")
            except ServiceError as exc:
                assert exc.code == code and exc.status == Status.FORBIDDEN
        members = await m2.rpc("group/member/list", {"group_id": gid})
        roles = {m["user_id"]: m["role"] for m in members["members"]}
        assert roles == {owner.user_id: "Owner", m1.user_id: "Member", m2.user_id: "Member"}
        try:
            await m1.rpc("group/member/remove", {"group_id": gid, "user_id": m2.user_id})
            raise AssertionError("member removed a member")
        except ServiceError as exc:
            assert exc.status == Status.FORBIDDEN
        try:
            await m1.rpc("group/member/remove", {"group_id": gid, "user_id": owner.user_id})
            raise AssertionError("owner removed")
        except ServiceError as exc:
            assert exc.code == ErrorCode.PERMISSION_DENIED
        assert await owner.rpc("group/member/remove", {"group_id": gid, "user_id": m2.user_id})
        try:
            await m2.send(gid, "still here?")
            raise AssertionError("removed member sent")
        except ServiceError as exc:
            assert exc.code == ErrorCode.NOT_GROUP_MEMBER
        assert await m1.rpc("group/member/leave", {"group_id": gid}) is True
        info = await owner.rpc("group/group/info", {"group_id": gid})
        assert info["member_count"] == 1 and info["owner_id"] == owner.user_id
        try:
            await owner.rpc("group/group/info", {"group_id": 999999})
            raise AssertionError("missing group found")
        except ServiceError as exc:
            assert exc.code == ErrorCode.GROUP_NOT_FOUND and exc.status == Status.NOT_FOUND
        for c in (owner, m1, m2, out):
            await c.close()

    run(main())


def test_sync_submit_and_ms_share_one_pts_and_log(server: ServerThread) -> None:
    async def main() -> None:
        a = await user(server.port, "alice")
        b = await user(server.port, "bob")
        ch = (await a.rpc("channel/direct/get_or_create", {"target_user_id": b.user_id}))[
            "channel_id"
        ]
        r1 = await a.send(ch, "one")
        sub = await a.rpc(
            "sync/submit",
            {
                "local_message_id": 555,
                "channel_id": ch,
                "channel_type": 1,
                "last_pts": 1,
                "command_type": "text",
                "payload": {"text": "two"},
                "client_timestamp": 0,
            },
        )
        assert sub["decision"] == "accepted" and sub["pts"] == 2 and sub["current_pts"] == 1
        assert sub["has_gap"] is False
        again = await a.rpc(
            "sync/submit",
            {
                "local_message_id": 555,
                "channel_id": ch,
                "channel_type": 1,
                "last_pts": 0,
                "command_type": "text",
                "payload": {"text": "two"},
                "client_timestamp": 0,
            },
        )
        assert again["server_msg_id"] == sub["server_msg_id"] and again["pts"] == 2
        r3 = await b.send(ch, "three")
        assert (r1.message_seq, r3.message_seq) == (1, 3)
        diff = await b.rpc(
            "sync/get_difference", {"channel_id": ch, "channel_type": 1, "last_pts": 0, "limit": 2}
        )
        assert [c["pts"] for c in diff["commits"]] == [1, 2] and diff["has_more"] is True
        assert diff["commits"][1]["content"]["content"] == "two"
        assert diff["commits"][0]["server_msg_id"] == r1.server_message_id
        rest = await b.rpc("sync/get_difference", {"channel_id": ch, "last_pts": 2})
        assert [c["pts"] for c in rest["commits"]] == [3] and rest["has_more"] is False
        mp = await b.pull(ch, 0, 10)
        assert [m.message_seq for m in mp.messages] == [1, 2, 3] and mp.current_pts == 3
        pts = await b.rpc("sync/get_channel_pts", {"channel_id": ch, "channel_type": 1})
        assert pts["current_pts"] == 3 and pts["store_epoch"] == b.auth.store_epoch  # type: ignore[union-attr]
        batch = await b.rpc(
            "sync/batch_get_channel_pts", {"channels": [{"channel_id": ch, "channel_type": 1}]}
        )
        assert batch["channel_pts_map"] == [{"channel_id": ch, "channel_type": 1, "current_pts": 3}]
        assert await b.rpc("sync/session_ready", {}) is True  # idempotent
        await a.close()
        await b.close()

    run(main())


def test_large_group_gets_mn_and_pulls(make_server: object) -> None:
    srv = make_server(large_group_threshold=2)  # type: ignore[operator]

    async def main() -> None:
        a = await user(srv.port, "alice")
        b = await user(srv.port, "bob")
        c = await user(srv.port, "carol")
        g = await a.rpc("group/group/create", {"name": "big", "member_ids": [b.user_id, c.user_id]})
        for i in range(3):
            await a.send(g["group_id"], f"m{i}")
        got = await collect(b, {g["group_id"]: 4})  # pts 1: the GroupCreated notice
        commands = [p.command for p in got]
        assert Cmd.MN in commands
        pulled = [p.message.message_seq for p in got if p.command == Cmd.MPS]
        assert pulled == [1, 2, 3, 4]
        # a burst: notifications arrive while a pull is in flight; none may be left behind
        await asyncio.gather(*(a.send(g["group_id"], f"burst{i}") for i in range(60)))
        got = await collect(b, {g["group_id"]: 64})
        pulled = [p.message.message_seq for p in got if p.command == Cmd.MPS]
        assert pulled == list(range(5, 65))
        for x in (a, b, c):
            await x.close()

    run(main())


def test_typing_reaches_subscribers_as_pub(server: ServerThread) -> None:
    async def main() -> None:
        a = await user(server.port, "alice")
        b = await user(server.port, "bob")
        ch = (await a.rpc("channel/direct/get_or_create", {"target_user_id": b.user_id}))[
            "channel_id"
        ]
        sub = await b.subscribe(ch, channel_type=0)
        assert sub.reason_code == 0
        outsider = await user(server.port, "eve")
        assert (await outsider.subscribe(ch, channel_type=0)).reason_code == 4
        reply = await a.rpc(
            "presence/typing",
            {"channel_id": ch, "channel_type": 1, "is_typing": True, "action_type": "Typing"},
        )
        assert reply == {"code": 0, "message": "OK"}
        push = await b.next_push(5)
        assert push.command == Cmd.PUB and push.message.topic == "typing"
        assert push.message.publisher == str(a.user_id)
        for x in (a, b, outsider):
            await x.close()

    run(main())


def test_register_and_login_rules(server: ServerThread) -> None:
    async def main() -> None:
        c = await Client.connect("127.0.0.1", server.port)
        for body, code in [
            (
                {"username": "ok_name", "password": "12345", "device_id": str(uuid.uuid4())},
                ErrorCode.INVALID_PARAMS,
            ),
            (
                {"username": "ok_name", "password": "123456", "device_id": "not-a-uuid"},
                ErrorCode.INVALID_PARAMS,
            ),
            (
                {"username": "a", "password": "123456", "device_id": str(uuid.uuid4())},
                ErrorCode.INVALID_PARAMS,
            ),
            (
                {"password": "123456", "device_id": str(uuid.uuid4())},
                ErrorCode.MISSING_REQUIRED_PARAM,
            ),
        ]:
            try:
                await c.rpc("account/user/register", body)
                raise AssertionError(body)
            except ServiceError as exc:
                assert exc.code == code and exc.status == Status.BAD_REQUEST
        reg = await c.register("Dora", "secret1")
        assert reg["user_id"] >= 100_000_000 and reg["token"]
        try:
            await c.register("dora", "secret1")
            raise AssertionError("duplicate username")
        except ServiceError as exc:
            assert exc.code == ErrorCode.INVALID_PARAMS
        try:
            await c.password_login("dora", "wrong-password")
            raise AssertionError("bad password accepted")
        except ServiceError as exc:
            assert exc.code == ErrorCode.AUTH_REQUIRED and exc.status == Status.UNAUTHENTICATED
        good = await c.password_login("  DORA ", "secret1")
        assert good["user_id"] == reg["user_id"]
        auth = await c.login()
        assert auth.user_id == reg["user_id"] and auth.store_epoch and auth.heartbeat_interval
        refreshed = await c.rpc("account/auth/refresh", {"refresh_token": good["refresh_token"]})
        assert refreshed["user_id"] == reg["user_id"] and refreshed["token"] != good["token"]
        await c.close()

    run(main())


def test_logout_ends_the_connection(server: ServerThread) -> None:
    async def main() -> None:
        a = await user(server.port, "alice")
        await a.logout()
        await a.wait_closed()

    run(main())


def test_conversation_addressing_and_mpb(server: ServerThread) -> None:
    async def main() -> None:
        a = await user(server.port, "alice")
        b = await user(server.port, "bob")
        r = await a.send(to_user=b.user_id, text="by conversation")
        direct = await a.rpc("channel/direct/get_or_create", {"target_user_id": b.user_id})
        assert direct == {"channel_id": r.channel_id, "created": False}
        assert r.channel_type == 1
        g = await a.rpc("group/group/create", {"name": "g", "member_ids": [b.user_id]})
        r2 = await a.send(to_group=g["group_id"], text="to the group")
        # pts 1 of the group is its GroupCreated notice
        assert (r2.channel_id, r2.channel_type, r2.message_seq) == (g["group_id"], 2, 2)
        await collect(b, {r.channel_id: 1, g["group_id"]: 2})
        # several messages for one device in one turn leave as one MPB frame
        seen: list[int] = []
        original = b._on_frame

        def spy(seq: int, command: int, flags: int, status: int, body: bytes) -> None:
            seen.append(command)
            original(seq, command, flags, status, body)

        b._on_frame = spy  # type: ignore[method-assign]
        await asyncio.gather(*(a.send(r.channel_id, f"burst {i}") for i in range(20)))
        got = await collect(b, {r.channel_id: 21})
        assert [p.message.message_seq for p in got] == list(range(2, 22))
        assert Cmd.MPB in seen and len(seen) < 20
        try:
            await a.send(to_user=a.user_id, text="self")
            raise AssertionError("direct chat with self")
        except ServiceError as exc:
            assert exc.status == Status.BAD_REQUEST
        for c in (a, b):
            await c.close()

    run(main())


def test_revoke_rules(make_server: object) -> None:
    srv = make_server(revoke_window=0)  # type: ignore[operator]

    async def main() -> None:
        owner = await user(srv.port, "owner")
        m1 = await user(srv.port, "member1")
        m2 = await user(srv.port, "member2")
        g = await owner.rpc(
            "group/group/create", {"name": "g", "member_ids": [m1.user_id, m2.user_id]}
        )
        gid = g["group_id"]
        sent = await m1.send(gid, "oops")
        await asyncio.sleep(0.01)
        # the sender's window (0 s here) has passed
        try:
            await m1.revoke(gid, sent.server_message_id)
            raise AssertionError("revoked after the window")
        except ServiceError as exc:
            assert exc.code == ErrorCode.MESSAGE_CANNOT_REVOKE
        # another member may not revoke it
        try:
            await m2.rpc(
                "message/revoke", {"channel_id": gid, "server_message_id": sent.server_message_id}
            )
            raise AssertionError("a member revoked another's message")
        except ServiceError as exc:
            assert exc.code == ErrorCode.PERMISSION_DENIED and exc.status == Status.FORBIDDEN
        # the owner may, any time, over RPC; the revoke is a new pts event for everyone
        assert (
            await owner.rpc(
                "message/revoke", {"channel_id": gid, "server_message_id": sent.server_message_id}
            )
            is True
        )
        got = await collect(m2, {gid: 3})  # pts 1: the GroupCreated notice, 2: "oops"
        assert got[-1].message.deleted and got[-1].message.message_seq == 3
        try:
            await owner.revoke(gid, sent.server_message_id)
            raise AssertionError("revoked twice")
        except ServiceError as exc:
            assert exc.code == ErrorCode.INVALID_PARAMS
        try:
            await owner.revoke(gid, 12345)
            raise AssertionError("revoked a missing message")
        except ServiceError as exc:
            assert exc.code == ErrorCode.MESSAGE_NOT_FOUND and exc.status == Status.NOT_FOUND
        for c in (owner, m1, m2):
            await c.close()

    run(main())

"""Hostile input over TCP (issue 10): each test performs an attack and shows it fail.

Lone surrogates, deeply nested JSON and ids that are not ASCII digits are refused at the
boundary with a BAD_REQUEST of the 101xx family; nothing a client stored can make a view fail
for other users; no exception escapes one frame's handling, and the log never gets a
traceback flood; typing events reach only current members; a revoke has one id in both
views. ``test_every_route_refuses_the_hostile_table`` sends the table of hostile values to
every route, one pipelined write per route.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ServerThread, run, user

from privchat_tcp.client import Client
from privchat_tcp.errors import ErrorCode, Status
from privchat_tcp.harness import Harness
from privchat_tcp.net import tcp as tcp_module
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.rpc.routes import all_routes
from privchat_tcp.rpc.table import Route, RpcContext
from privchat_tcp.service.social import PRIVACY_FLAGS
from privchat_tcp.session import session as session_module
from privchat_tcp.session.session import MAX_ASYNC_RPC, FailureLog, Session
from privchat_tcp.wire.commands import Cmd

Answer = tuple[int, int, bytes]


# ---- helpers ------------------------------------------------------------------------------------
def rpc_item(route: str, body: bytes) -> tuple[int, bytes]:
    return Cmd.RPC, pb.RpcRequest(route=route, body=body).SerializeToString()


async def pipelined(
    client: Client, items: list[tuple[int, bytes]], timeout: float = 20.0
) -> list[Answer]:
    """Send several requests in ONE write (the server reads them in one turn)."""
    loop = asyncio.get_running_loop()
    futs: list[asyncio.Future[Answer]] = []
    data = b""
    for command, body in items:
        seq = client.next_seq()
        data += client.pack(command, body, 0, seq)
        fut: asyncio.Future[Answer] = loop.create_future()
        client._waiters[seq] = fut
        futs.append(fut)
    assert client._proto is not None and client._proto.transport is not None
    client._proto.transport.write(data)
    return list(await asyncio.wait_for(asyncio.gather(*futs), timeout))


async def raw_rpc(client: Client, route: str, body: bytes) -> tuple[int, Any]:
    """(status, Error or the reply's JSON) of one RPC with a body given as bytes."""
    status, _, data = await client.request(*rpc_item(route, body), timeout=20)
    if status:
        return status, pb.Error.FromString(data)
    resp = pb.RpcResponse.FromString(data)
    return status, json.loads(resp.data) if resp.data else None


def bad_request(answer: Answer) -> pb.Error:
    status, _, data = answer
    err = pb.Error.FromString(data)
    assert status == Status.BAD_REQUEST, (status, err)
    assert 100 <= err.code <= 105 or 10100 <= err.code <= 10199, err
    return err


def ms_item(channel_id: int, payload: bytes, content: pb.MessageContent | None = None) -> bytes:
    req = pb.SendMessageRequest(client_seq=1, channel_id=channel_id, payload=payload)
    if content is not None:
        req.content.CopyFrom(content)
    return req.SerializeToString()


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The server's log (its thread runs in this process): the test ends by asserting it
    has no traceback and no error, unless the test cleared ``caplog`` itself."""
    caplog.set_level(logging.INFO, logger="privchat_tcp")
    yield caplog
    assert_no_traceback(caplog)


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    bad = tracebacks(caplog) + [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bad, [(r.name, r.getMessage()[:200]) for r in bad]


DEEP = b"[" * 5000 + b"]" * 5000


# ---- finding 4: lone surrogates ---------------------------------------------------------------
def test_lone_surrogates_are_refused_and_the_other_frames_of_the_read_are_answered(
    server: ServerThread, server_log: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        anon = await Client.connect("127.0.0.1", server.port)
        # before login: account/auth/refresh answered INTERNAL
        answers = await pipelined(
            anon,
            [
                rpc_item("account/auth/refresh", b'{"refresh_token":"\\ud800"}'),
                (Cmd.PING, b""),
                rpc_item("account/auth/refresh", b'{"refresh_token":"\xed\xa0\x80"}'),
                rpc_item("account/user/register", b'{"username":"\\udfff"}'),
                rpc_item("system/health", b""),
            ],
        )
        assert bad_request(answers[0]).code == ErrorCode.INVALID_JSON
        assert answers[1][0] == 0
        assert bad_request(answers[2]).code == ErrorCode.INVALID_JSON
        bad_request(answers[3])
        assert answers[4][0] == 0

        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        # entity_type was echoed into the error: building it raised out of data_received,
        # the connection dropped and the frames after it in the read were lost
        answers = await pipelined(
            alice,
            [
                rpc_item("entity/sync_entities", b'{"entity_type":"\\ud800"}'),
                (Cmd.PING, b""),
                rpc_item("entity/sync_entities", b'{"entity_type":"\xed\xa0\x80"}'),
                rpc_item("group/group/create", b'{"name":"g\\ud800"}'),
                rpc_item("group/group/create", b'{"name":"g","description":"\\udc00"}'),
                rpc_item(
                    "account/user/register",
                    json.dumps({"username": "x" * 3, "nickname": "\ud800"}).encode(),
                ),
                rpc_item("entity/sync_entities", b'{"entity_type":"channel"}'),
            ],
        )
        for i in (0, 2, 3, 4, 5):
            bad_request(answers[i])
        assert answers[1][0] == 0 and answers[6][0] == 0
        # the group was not created (it was committed, then answered INTERNAL)
        items = json.loads(pb.RpcResponse.FromString(answers[6][2]).data)["items"]
        assert items == []
        # the SDK's substring survives; the value sent is not echoed
        status, err = await raw_rpc(alice, "entity/sync_entities", b'{"entity_type":"zzz-mine"}')
        assert status == Status.BAD_REQUEST and "不支持的 entity_type" in err.message
        assert "zzz-mine" not in err.message
        # control characters where they make no sense; multi-line text keeps its lines
        status, err = await raw_rpc(alice, "group/group/create", b'{"name":"a\\u0000b"}')
        assert status == Status.BAD_REQUEST and err.code == ErrorCode.INVALID_FORMAT
        status, err = await raw_rpc(alice, "group/group/create", b'{"name":"a\\u001b[2Jb"}')
        assert status == Status.BAD_REQUEST and err.code == ErrorCode.INVALID_FORMAT
        status, g = await raw_rpc(
            alice, "group/group/create", b'{"name":"ok \\ud83d\\ude00","description":"a\\nb"}'
        )
        assert status == 0 and g["name"] == "ok \U0001f600" and g["description"] == "a\nb"
        # an MS envelope or metadata with a lone surrogate is refused: the views parse them
        dm = (await alice.rpc("channel/direct/get_or_create", {"target_user_id": bob.user_id}))[
            "channel_id"
        ]
        answers = await pipelined(
            alice,
            [
                (Cmd.MS, ms_item(dm, b'{"content":"\\ud800"}')),
                (Cmd.MS, ms_item(dm, b'{"content":"\xed\xa0\x80"}')),
                (Cmd.MS, ms_item(dm, b"", pb.MessageContent(metadata='{"k":"\\udbff"}'))),
                (Cmd.MS, ms_item(dm, b'{"content":"\\ud83d\\ude00"}')),
                (
                    Cmd.RPC,
                    pb.RpcRequest(
                        route="sync/submit",
                        body=b'{"local_message_id":0,"channel_id":%d,"payload":{"text":"\\ud800"}}'
                        % dm,
                    ).SerializeToString(),
                ),
            ],
        )
        for i in (0, 1, 2, 4):
            assert bad_request(answers[i]).code == ErrorCode.INVALID_JSON
        assert answers[3][0] == 0 and pb.SendMessageResponse.FromString(answers[3][2]).message_seq
        assert await alice.ping() and await bob.ping()
        for c in (anon, alice, bob):
            await c.close()

    run(main())


def test_stored_hostile_data_never_fails_a_view_for_other_members(
    server: ServerThread, server_log: pytest.LogCaptureFixture
) -> None:
    """Data stored without the checks (before them, or by a path that skips them): a
    nickname and a group name with a lone surrogate, payloads and metadata 100,000 deep,
    with surrogates, NaN or a 5,000-digit number. Every view still answers, for everyone."""

    async def main() -> None:
        owner = await user(server.port, "owner")
        member = await user(server.port, "member")
        assert server.server is not None
        services = server.server.services
        mallory = server.call(
            lambda: services.accounts.create("mallory", "", "bad\ud800nick", None, None)
        )
        gid = (
            await owner.rpc("group/group/create", {"name": "g", "member_ids": [member.user_id]})
        )["group_id"]
        await owner.rpc("group/member/add", {"group_id": gid, "user_id": mallory.user_id})
        evil = server.call(
            lambda: services.channels.create_group(
                mallory.user_id, "evil\udc00", "d\ud800", [member.user_id]
            )
        )
        channel = server.call(lambda: services.channels.channel(gid))
        payloads = [
            b"[" * 100_000 + b"]" * 100_000,
            b'{"content":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            b'{"content":"\\ud800"}',
            b'{"content":"\xed\xa0\x80"}',
            b'{"content":1,"n":NaN}',
            b'{"content":' + b"1" * 5000 + b"}",
            b'{"content":1e999}',
        ]
        contents = [
            pb.MessageContent(searchable_content="m", metadata="[" * 100_000),
            pb.MessageContent(searchable_content="m", metadata='{"a":"\\ud800"}'),
        ]
        for payload in payloads:
            server.call(
                lambda p=payload: services.messages.send(  # type: ignore[misc]
                    mallory.user_id, "dev", channel, 0, 0, p, b"", False, None
                )
            )
        for content in contents:
            server.call(
                lambda c=content: services.messages.send(  # type: ignore[misc]
                    mallory.user_id, "dev", channel, 0, 0, b"", c.SerializeToString(), False, None
                )
            )
        n = len(payloads) + len(contents)
        for viewer in (owner, member):
            diff = await viewer.rpc(
                "sync/get_difference", {"channel_id": gid, "last_pts": 0, "limit": 100}
            )
            # pts 1, 2: the group's creation and mallory's joining (System messages, user 1)
            created, notice, *commits = diff["commits"]
            assert created["content"]["metadata"]["notification_type"] == "group_created"
            assert notice["sender_id"] == 1 and notice["message_type"] == "system"
            assert "bad?nick" in notice["content"]["content"]
            assert [c["pts"] for c in commits] == list(range(3, n + 3))
            assert all(isinstance(c["content"], dict) for c in commits)
            assert commits[0]["content"]["content"].startswith("[[[")  # as its text
            assert commits[0]["sender_info"]["nickname"] == "bad?nick"
            assert "metadata" not in commits[-1]["content"]
            members = await viewer.rpc("group/member/list", {"group_id": gid})
            assert {m["nickname"] for m in members["members"]} >= {"bad?nick"}
            entities = await viewer.rpc("entity/sync_entities", {"entity_type": "channel"})
            assert len(entities["items"]) >= 1
        info = await member.rpc("group/group/info", {"group_id": evil.channel_id})
        assert info["name"] == "evil?" and info["description"] == "d?"
        entities = await member.rpc("entity/sync_entities", {"entity_type": "channel"})
        assert {i["payload"]["name"] for i in entities["items"]} == {"g", "evil?"}
        pulled = await member.pull(gid, 0, 100)  # MP relays the bytes as stored
        assert [m.payload for m in pulled.messages][2 : len(payloads) + 2] == payloads
        for c in (owner, member):
            await c.close()

    run(main())


# ---- finding 5: deeply nested JSON ------------------------------------------------------------
def test_deep_json_is_refused_before_login_and_after_without_a_log_flood(
    server: ServerThread, server_log: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        anon = await Client.connect("127.0.0.1", server.port)
        deep = b"[" * 2000 + b"]" * 2000
        names = all_routes().names()
        answers = await pipelined(anon, [rpc_item(r, deep) for r in names] + [(Cmd.PING, b"")])
        for route, answer in zip(names, answers, strict=False):
            if all_routes().get(route).anonymous:  # type: ignore[union-attr]
                assert bad_request(answer).code == ErrorCode.INVALID_JSON, route
            else:
                assert answer[0] == Status.UNAUTHENTICATED, route
        assert answers[-1][0] == 0

        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        dm = (await alice.rpc("channel/direct/get_or_create", {"target_user_id": bob.user_id}))[
            "channel_id"
        ]

        def nested(levels: int) -> bytes:  # an object at the top: `levels` levels in all
            return b'{"text":"x","n":' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"

        very_deep = b"[" * 100_000 + b"]" * 100_000
        answers = await pipelined(
            alice,
            [
                (Cmd.MS, ms_item(dm, b'{"content":"x","n":' + very_deep + b"}")),
                (Cmd.MS, ms_item(dm, b"", pb.MessageContent(metadata=very_deep.decode()))),
                (Cmd.MS, ms_item(dm, nested(33))),
                (Cmd.MS, ms_item(dm, nested(32))),  # the limit itself is fine
                rpc_item(
                    "sync/submit",
                    b'{"local_message_id":0,"channel_id":%d,"payload":%s}' % (dm, very_deep),
                ),
                rpc_item(
                    "sync/submit",
                    b'{"local_message_id":0,"channel_id":%d,"payload":%s}' % (dm, nested(31)),
                ),
                rpc_item(
                    "sync/submit",
                    b'{"local_message_id":0,"channel_id":%d,"payload":%s}' % (dm, nested(32)),
                ),
                (Cmd.MS, ms_item(dm, very_deep)),  # not an envelope: opaque bytes
            ],
        )
        for i in (0, 1, 2, 6):
            err = bad_request(answers[i])
            assert err.code == ErrorCode.INVALID_JSON and "32 levels" in err.message, i
        for i in (3, 5, 7):
            assert answers[i][0] == 0, i
        diff = await bob.rpc("sync/get_difference", {"channel_id": dm, "last_pts": 0})
        assert len(diff["commits"]) == 3
        first, second, third = (c["content"] for c in diff["commits"])
        assert first["text"] == "x" and isinstance(first["n"], list)  # 32 levels, as sent
        assert second["content"] == "x"
        assert third["content"].startswith("[[[")  # the opaque payload, as its text
        assert await alice.ping() and await bob.ping()
        for c in (anon, alice, bob):
            await c.close()

    run(main())


def test_json_max_depth_is_a_setting(make_server: Any) -> None:
    srv = make_server(json_max_depth=4)

    async def main() -> None:
        alice = await user(srv.port, "alice")
        status, err = await raw_rpc(alice, "system/health", b'{"a":[[[[]]]]}')
        assert status == Status.BAD_REQUEST and "4 levels" in err.message
        # 4 levels parse: what answers is the route's own refusal of a key it does not read
        status, err = await raw_rpc(alice, "system/health", b'{"a":[[[]]]}')
        assert status == Status.BAD_REQUEST and err.code == ErrorCode.INVALID_PARAMS
        assert err.message == "unknown parameter: a"
        await alice.close()

    run(main())


# ---- finding 9: ids as strings ----------------------------------------------------------------
def test_ids_must_be_ascii_digits_of_bounded_length(
    server: ServerThread, server_log: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        gid = (await alice.rpc("group/group/create", {"name": "g"}))["group_id"]
        cases: list[tuple[bytes, int]] = [
            ('{"group_id":"²"}'.encode(), ErrorCode.INVALID_PARAM_TYPE),
            ('{"group_id":"١٢٣"}'.encode(), ErrorCode.INVALID_PARAM_TYPE),  # was 123
            (b'{"group_id":"\\u0661\\u0662\\u0663"}', ErrorCode.INVALID_PARAM_TYPE),
            (b'{"group_id":"' + b"1" * 4301 + b'"}', ErrorCode.PARAM_OUT_OF_RANGE),
            (b'{"group_id":"' + b"1" * 21 + b'"}', ErrorCode.PARAM_OUT_OF_RANGE),
            (b'{"group_id":' + b"1" * 5000 + b"}", ErrorCode.INVALID_JSON),
            (b'{"group_id":' + b"9" * 21 + b"}", ErrorCode.PARAM_OUT_OF_RANGE),
            (b'{"group_id":' + b"9" * 22 + b"}", ErrorCode.INVALID_JSON),
            (b'{"group_id":18446744073709551616}', ErrorCode.PARAM_OUT_OF_RANGE),
            (b'{"group_id":"-1"}', ErrorCode.INVALID_PARAM_TYPE),
            (b'{"group_id":" 1"}', ErrorCode.INVALID_PARAM_TYPE),
            (b'{"group_id":"1.0"}', ErrorCode.INVALID_PARAM_TYPE),
            (b'{"group_id":1e3}', ErrorCode.INVALID_PARAM_TYPE),
            (b'{"group_id":NaN}', ErrorCode.INVALID_JSON),
        ]
        answers = await pipelined(
            alice, [rpc_item("group/group/info", body) for body, _ in cases] + [(Cmd.PING, b"")]
        )
        for (body, code), answer in zip(cases, answers, strict=False):
            assert bad_request(answer).code == code, body[:40]
        assert answers[-1][0] == 0
        # ids as ASCII digit strings still work (PrivChat clients send some)
        info = await alice.rpc("group/group/info", {"group_id": str(gid)})
        assert info["group_id"] == gid
        await alice.close()

    run(main())


# ---- finding 6: typing events reach only current members ---------------------------------------
async def no_pub(client: Client) -> None:
    """After a PING round trip, nothing was published to ``client`` (a PUB would have been
    written in the same turn as the one its positive control received, before the pong)."""
    assert await client.ping()
    pubs = [p for p in client.drain_pushes() if p.command == Cmd.PUB]
    assert pubs == [], pubs


async def next_pub(client: Client) -> pb.PublishRequest:
    while True:
        push = await client.next_push(5)
        if push.command == Cmd.PUB:
            message: pb.PublishRequest = push.message
            return message


def test_an_outsider_cannot_subscribe_to_typing_events(make_server: Any) -> None:
    srv = make_server(typing_interval=0)

    async def main() -> None:
        owner = await user(srv.port, "owner")
        member = await user(srv.port, "member")
        outsider = await user(srv.port, "outsider")
        gid = (
            await owner.rpc("group/group/create", {"name": "g", "member_ids": [member.user_id]})
        )["group_id"]
        dm = (await owner.rpc("channel/direct/get_or_create", {"target_user_id": member.user_id}))[
            "channel_id"
        ]
        # the attack: SUB with channel_type 2 (room) skipped the membership check
        for channel_id in (gid, dm):
            for channel_type in (2, 1, 0):
                sub = await outsider.subscribe(channel_id, channel_type=channel_type)
                assert sub.reason_code == 4, (channel_id, channel_type)
        # the members do subscribe (room numbering included): the positive control
        assert (await member.subscribe(gid, channel_type=2)).reason_code == 0
        assert (await owner.subscribe(dm, channel_type=2)).reason_code == 0
        await owner.rpc("presence/typing", {"channel_id": gid, "channel_type": 2})
        await member.rpc("presence/typing", {"channel_id": dm, "channel_type": 1})
        got = await next_pub(member)
        assert got.channel_id == gid and got.publisher == str(owner.user_id)
        got = await next_pub(owner)
        assert got.channel_id == dm and got.publisher == str(member.user_id)
        await no_pub(outsider)
        # nor may the outsider type there
        status, err = await raw_rpc(
            outsider, "presence/typing", b'{"channel_id":%d,"channel_type":2}' % gid
        )
        assert status == Status.FORBIDDEN
        for c in (owner, member, outsider):
            await c.close()

    run(main())


def test_removed_and_leaving_members_stop_receiving_typing_events(make_server: Any) -> None:
    srv = make_server(typing_interval=0)

    async def main() -> None:
        owner = await user(srv.port, "owner")
        removed = await user(srv.port, "removed")
        leaver = await user(srv.port, "leaver")
        watcher = await user(srv.port, "watcher")
        gid = (
            await owner.rpc(
                "group/group/create",
                {
                    "name": "g",
                    "member_ids": [removed.user_id, leaver.user_id, watcher.user_id],
                },
            )
        )["group_id"]
        for c in (removed, leaver, watcher):
            assert (await c.subscribe(gid, channel_type=1)).reason_code == 0
        await owner.rpc("presence/typing", {"channel_id": gid, "channel_type": 2})
        for c in (removed, leaver, watcher):
            assert (await next_pub(c)).channel_id == gid
        await owner.rpc("group/member/remove", {"group_id": gid, "user_id": removed.user_id})
        await leaver.rpc("group/member/leave", {"group_id": gid})
        await owner.rpc("presence/typing", {"channel_id": gid, "channel_type": 2})
        assert (await next_pub(watcher)).channel_id == gid
        await no_pub(removed)
        await no_pub(leaver)
        # and they cannot subscribe again
        assert (await removed.subscribe(gid, channel_type=2)).reason_code == 4
        assert (await leaver.subscribe(gid, channel_type=1)).reason_code == 4
        for c in (owner, removed, leaver, watcher):
            await c.close()

    run(main())


# ---- finding 13: a revoke event's id -----------------------------------------------------------
def test_a_revoke_has_the_revoked_messages_id_in_both_views(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        dm = (await alice.rpc("channel/direct/get_or_create", {"target_user_id": bob.user_id}))[
            "channel_id"
        ]
        sent = await alice.send(dm, "oops")
        mid = sent.server_message_id
        revoke = await alice.revoke(dm, mid)
        assert revoke.pts == 2
        pulled = await bob.pull(dm, 0, 10)
        event = pulled.messages[1]
        assert event.message_seq == 2 and event.topic == "message.revoke"
        assert event.server_message_id == mid and event.msg_key == f"revoke_{mid}"
        diff = await bob.rpc("sync/get_difference", {"channel_id": dm, "last_pts": 0})
        tomb, commit = diff["commits"]
        assert tomb["server_msg_id"] == mid and tomb["content"]["revoked"] is True
        assert commit["pts"] == 2 and commit["message_type"] == "system"
        assert commit["server_msg_id"] == mid == event.server_message_id
        assert commit["content"]["message_id"] == mid
        assert commit["content"]["event"] == "message.revoke"
        assert commit["content"]["revoked_by"] == alice.user_id
        for c in (alice, bob):
            await c.close()

    run(main())


# ---- no exception escapes a frame's handling ---------------------------------------------------
@pytest.fixture
def fresh_failures(monkeypatch: pytest.MonkeyPatch) -> FailureLog:
    """A FailureLog of its own, so that this test sees each kind's first traceback."""
    failures = FailureLog(logging.getLogger("privchat_tcp.session"))
    monkeypatch.setattr(session_module, "FAILURES", failures)
    monkeypatch.setattr(tcp_module, "FAILURES", failures)
    return failures


def test_an_unexpected_failure_answers_internal_for_its_frame_only(
    server: ServerThread,
    caplog: pytest.LogCaptureFixture,
    fresh_failures: FailureLog,
) -> None:
    """A bug in a route (simulated), or a reply that cannot be encoded: that frame is
    answered INTERNAL, the other frames of the read are answered, the connection stays
    open, and each kind of failure logs one traceback, not one per frame."""
    caplog.set_level(logging.INFO, logger="privchat_tcp")

    def boom(ctx: RpcContext, body: dict[str, Any]) -> Any:
        raise RuntimeError("secret " + "x" * 3)  # the message is not logged

    def nan(ctx: RpcContext, body: dict[str, Any]) -> Any:
        return {"x": float("nan")}

    async def unencodable(ctx: RpcContext, body: dict[str, Any]) -> Any:
        return {"x": object()}

    assert server.server is not None
    routes = server.server.routes
    for name, fn in (("test/boom", boom), ("test/nan", nan), ("test/async", unencodable)):
        server.call(lambda n=name, f=fn: routes.add(Route(n, f, True)))  # type: ignore[misc]

    async def main() -> None:
        c = await Client.connect("127.0.0.1", server.port)
        items = [
            rpc_item("test/boom", b""),
            (Cmd.PING, b""),
            rpc_item("test/boom", b""),
            rpc_item("test/nan", b""),
            rpc_item("system/health", b""),
            rpc_item("test/async", b""),
            rpc_item("test/boom", b""),
        ]
        answers = await pipelined(c, items)
        assert [a[0] for a in answers] == [15, 0, 15, 15, 0, 15, 15]
        assert pb.Error.FromString(answers[0][2]).message == "internal error"
        assert await c.ping()
        await c.close()

    run(main())
    assert fresh_failures.total == 5
    logged = tracebacks(caplog)
    assert len(logged) == 3, [r.getMessage() for r in logged]  # boom, nan, async: once each
    assert all(r.exc_info is None and "secret xxx" not in r.getMessage() for r in logged)
    assert "in boom" in logged[0].getMessage()
    assert not [r for r in caplog.records if "Fatal error" in r.getMessage()]


def test_a_failure_outside_the_frames_closes_cleanly_after_the_answers(
    server: ServerThread,
    caplog: pytest.LogCaptureFixture,
    fresh_failures: FailureLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The adapter's guard: an exception past the per-frame handling (simulated after the
    frames were handled) does not reach the event loop ("Fatal error on transport"): it is
    logged once, what was answered is written, and the connection closes."""
    caplog.set_level(logging.INFO, logger="privchat_tcp")
    mark = pb.PingRequest(timestamp=424242).SerializeToString()
    handle = Session.handle

    def failing_handle(self: Session, frames: Any) -> None:
        handle(self, frames)
        if any(f[1] == Cmd.PING and f[4] == mark for f in frames):
            raise RuntimeError("past the frames")

    monkeypatch.setattr(Session, "handle", failing_handle)

    async def main() -> None:
        bystander = await user(server.port, "bystander")
        c = await Client.connect("127.0.0.1", server.port)
        answers = await pipelined(c, [rpc_item("system/health", b""), (Cmd.PING, mark)])
        assert [a[0] for a in answers] == [0, 0]
        await c.wait_closed()
        assert await bystander.ping()
        await bystander.close()

    run(main())
    assert fresh_failures.total == 1
    assert len(tracebacks(caplog)) == 1
    assert not [r for r in caplog.records if "Fatal error" in r.getMessage()]


# ---- the table: every route, every key it reads, every hostile value ---------------------------
ID, IDS, TEXT, SECRET, FLAG, ANY, CHANNELS = "id", "ids", "text", "secret", "flag", "any", "chans"

#: the keys each route reads, by kind, with a value its getter accepts
ROUTE_KEYS: dict[str, dict[str, tuple[str, Any]]] = {
    "system/health": {},
    "system/info": {},
    "account/user/register": {
        "username": (TEXT, "someone"),
        "password": (SECRET, "secret-password"),
        "device_id": (TEXT, "00000000-0000-4000-8000-000000000000"),
        "nickname": (TEXT, "nick"),
        "phone": (TEXT, "123"),
        "email": (TEXT, "a@b.c"),
    },
    "account/auth/login": {
        "username": (TEXT, "someone"),
        "password": (SECRET, "secret-password"),
        "device_id": (TEXT, "00000000-0000-4000-8000-000000000000"),
    },
    "account/auth/refresh": {"refresh_token": (TEXT, "x.y.z"), "device_id": (TEXT, "d")},
    "account/auth/logout": {},
    "channel/direct/get_or_create": {
        "target_user_id": (ID, 1),
        "source": (TEXT, "group"),
        "source_id": (TEXT, "1"),
    },
    "group/group/create": {
        "name": (TEXT, "g"),
        "description": (TEXT, "d"),
        "member_ids": (IDS, [1]),
    },
    "group/group/info": {"group_id": (ID, 1)},
    "group/member/add": {"group_id": (ID, 1), "user_id": (ID, 1), "role": (TEXT, "member")},
    "group/member/remove": {"group_id": (ID, 1), "user_id": (ID, 1)},
    "group/member/list": {"group_id": (ID, 1)},
    "group/member/leave": {"group_id": (ID, 1)},
    "group/member/mute": {"group_id": (ID, 1), "user_id": (ID, 1), "mute_duration": (ID, 60)},
    "group/member/unmute": {"group_id": (ID, 1), "user_id": (ID, 1)},
    "group/role/transfer_owner": {
        "current_owner_id": (ID, 0),
        "group_id": (ID, 1),
        "new_owner_id": (ID, 2),
    },
    "group/role/set": {
        "operator_id": (ID, 0),
        "group_id": (ID, 1),
        "user_id": (ID, 1),
        "role": (TEXT, "admin"),
    },
    "group/settings/get": {"group_id": (ID, 1)},
    "group/settings/update": {
        "operator_id": (ID, 0),
        "group_id": (ID, 1),
        "settings": (ANY, {"announcement": "a"}),
    },
    "group/settings/mute_all": {
        "operator_id": (ID, 0),
        "group_id": (ID, 1),
        "muted": (FLAG, True),
        "mute_all": (FLAG, True),
    },
    "group/approval/list": {"operator_id": (ID, 0), "group_id": (ID, 1)},
    "group/approval/handle": {
        "operator_id": (ID, 0),
        "request_id": (ID, 1),
        "action": (TEXT, "approve"),
        "reject_reason": (TEXT, "no"),
    },
    "group/qrcode/generate": {
        "group_id": (ID, 1),
        "expire_seconds": (ID, 60),
        "max_usage": (ID, 1),
    },
    "group/join/qrcode": {"qr_key": (TEXT, "k"), "token": (TEXT, "t"), "message": (TEXT, "m")},
    "message/revoke": {"channel_id": (ID, 1), "server_message_id": (ID, 1)},
    "sync/submit": {
        "local_message_id": (ID, 1),
        "channel_id": (ID, 1),
        "channel_type": (ID, 1),
        "last_pts": (ID, 0),
        "command_type": (TEXT, "text"),
        "payload": (ANY, {"text": "hi"}),
    },
    "sync/get_difference": {
        "channel_type": (ID, 1),
        "channel_id": (ID, 1),
        "last_pts": (ID, 0),
        "limit": (ID, 10),
    },
    "sync/get_channel_pts": {"channel_id": (ID, 1), "channel_type": (ID, 1)},
    "sync/batch_get_channel_pts": {"channels": (CHANNELS, [{"channel_id": 1}])},
    "sync/session_ready": {},
    "presence/typing": {
        "action_type": (TEXT, "Typing"),
        "channel_id": (ID, 1),
        "channel_type": (ID, 1),
        "is_typing": (FLAG, True),
    },
    "entity/sync_entities": {
        "entity_type": (TEXT, "channel"),
        "since_version": (ID, 0),
        "scope": (TEXT, "1"),
        "limit": (ID, 10),
    },
    "channel/pin": {"channel_id": (ID, 1), "pinned": (FLAG, True), "user_id": (ID, 1)},
    "channel/hide": {"channel_id": (ID, 1), "user_id": (ID, 1)},
    "channel/mute": {"channel_id": (ID, 1), "muted": (FLAG, True), "user_id": (ID, 1)},
    "channel/broadcast/create": {
        "name": (TEXT, "b"),
        "description": (TEXT, "d"),
        "avatar_url": (TEXT, "https://x/a.png"),
    },
    "channel/channel/create": {
        "name": (TEXT, "b"),
        "description": (TEXT, "d"),
        "avatar_url": (TEXT, "https://x/a.png"),
    },
    "channel/broadcast/subscribe": {"channel_id": (ID, 1), "user_id": (ID, 1)},
    "channel/channel/subscribe": {"channel_id": (ID, 1), "user_id": (ID, 1)},
    "channel/broadcast/list": {"page": (ID, 1), "page_size": (ID, 10)},
    "channel/content/publish": {
        "channel_id": (ID, 1),
        "content": (TEXT, "hello"),
        "title": (TEXT, "t"),
        "content_type": (TEXT, "text"),
    },
    "channel/content/list": {"channel_id": (ID, 1), "page": (ID, 1), "page_size": (ID, 10)},
    # message/* (issue 12: history, read state, reactions)
    "message/history/get": {
        "user_id": (ID, 1),
        "channel_id": (ID, 1),
        "before_server_message_id": (ID, 1),
        "limit": (ID, 10),
    },
    "message/status/read": {
        "channel_id": (ID, 1),
        "message_id": (ID, 1),
        "server_message_id": (ID, 1),
        "user_id": (ID, 1),
    },
    "message/status/read_pts": {
        "channel_id": (ID, 1),
        "read_pts": (ID, 1),
        "last_read_message_id": (ID, 1),
        "client_visible_pts": (ID, 1),
    },
    "message/status/count": {"channel_id": (ID, 1)},
    "message/status/read_list": {
        "message_id": (ID, 1),
        "server_message_id": (ID, 1),
        "channel_id": (ID, 1),
    },
    "message/status/read_stats": {
        "message_id": (ID, 1),
        "server_message_id": (ID, 1),
        "channel_id": (ID, 1),
    },
    "message/reaction/add": {
        "server_message_id": (ID, 1),
        "channel_id": (ID, 1),
        "emoji": (TEXT, "+1"),
        "user_id": (ID, 1),
    },
    "message/reaction/remove": {
        "server_message_id": (ID, 1),
        "channel_id": (ID, 1),
        "emoji": (TEXT, "+1"),
        "user_id": (ID, 1),
    },
    "message/reaction/list": {
        "server_message_id": (ID, 1),
        "channel_id": (ID, 1),
        "user_id": (ID, 1),
    },
    "message/reaction/stats": {
        "server_message_id": (ID, 1),
        "channel_id": (ID, 1),
        "user_id": (ID, 1),
    },
    # accounts, contacts and QR codes (issue 12)
    "account/user/detail": {
        "target_user_id": (ID, 1),
        "source": (TEXT, "search"),
        "source_id": (TEXT, "1"),
        "user_id": (ID, 1),
    },
    "account/user/share_card": {
        "target_user_id": (ID, 1),
        "receiver_id": (ID, 1),
        "expire_seconds": (ID, 60),
        "sharer_id": (ID, 1),
    },
    "account/user/update": {
        "display_name": (TEXT, "n"),
        "avatar_url": (TEXT, "https://a.example/b.png"),
        "bio": (TEXT, "b"),
        "user_id": (ID, 1),
    },
    "account/profile/get": {"user_id": (ID, 1)},
    "account/profile/update": {
        "display_name": (TEXT, "n"),
        "avatar_url": (TEXT, "https://a.example/b.png"),
        "bio": (TEXT, "b"),
        "extra_fields": (ANY, {"k": "v"}),
        "user_id": (ID, 1),
    },
    "account/search/query": {
        "query": (TEXT, "someone"),
        "page": (ID, 1),
        "page_size": (ID, 10),
        "from_user_id": (ID, 1),
    },
    "account/search/by_qrcode": {
        "qr_key": (TEXT, "k"),
        "token": (TEXT, "t"),
        "searcher_id": (ID, 1),
    },
    "account/privacy/get": {"user_id": (ID, 1)},
    "account/privacy/update": {
        **{name: (FLAG, True) for name in PRIVACY_FLAGS},
        "user_id": (ID, 1),
    },
    "account/settings/update": {"settings": (ANY, {"theme": "dark"}), "user_id": (ID, 1)},
    "contact/friend/apply": {
        "target_user_id": (ID, 1),
        "message": (TEXT, "hi"),
        "source": (TEXT, "search"),
        "source_id": (TEXT, "1"),
        "from_user_id": (ID, 1),
    },
    "contact/friend/accept": {
        "from_user_id": (ID, 1),
        "message": (TEXT, "ok"),
        "target_user_id": (ID, 1),
    },
    "contact/friend/reject": {
        "from_user_id": (ID, 1),
        "target_user_id": (ID, 1),
        "message": (TEXT, "no"),
    },
    "contact/friend/remove": {"friend_id": (ID, 1), "user_id": (ID, 1)},
    "contact/friend/pending": {"user_id": (ID, 1)},
    "contact/friend/check": {"friend_id": (ID, 1), "user_id": (ID, 1)},
    "contact/blacklist/add": {"user_id": (ID, 1), "blocked_user_id": (ID, 1)},
    "contact/blacklist/remove": {"user_id": (ID, 1), "blocked_user_id": (ID, 1)},
    "contact/blacklist/list": {"user_id": (ID, 1)},
    "contact/blacklist/check": {"user_id": (ID, 1), "target_user_id": (ID, 1)},
    "qrcode/generate": {
        "qr_type": (TEXT, "user"),
        "target_id": (ID, 1),
        "expire_seconds": (ID, 60),
        "max_usage": (ID, 1),
        "metadata": (ANY, {"a": 1}),
        "user_id": (ID, 1),
    },
    "qrcode/resolve": {"qr_key": (TEXT, "k"), "token": (TEXT, "t"), "scanner_id": (ID, 1)},
    "qrcode/refresh": {"qr_type": (TEXT, "user"), "target_id": (ID, 1), "creator_id": (ID, 1)},
    "qrcode/revoke": {"qr_key": (TEXT, "k"), "user_id": (ID, 1)},
    "qrcode/list": {"creator_id": (ID, 1), "include_revoked": (FLAG, True)},
    "user/qrcode/generate": {"expire_seconds": (ID, 60), "user_id": (ID, 1)},
    "user/qrcode/refresh": {"user_id": (ID, 1)},
    "user/qrcode/get": {"user_id": (ID, 1)},
    # files, devices, presence, stickers (issue 12)
    "file/request_upload_token": {
        "user_id": (ID, 1),
        "filename": (TEXT, "a.png"),
        "file_size": (ID, 10),
        "mime_type": (TEXT, "image/png"),
        "file_type": (TEXT, "image"),
        "business_type": (TEXT, "message"),
    },
    "file/upload_callback": {"file_id": (ID, 1), "user_id": (ID, 1), "status": (TEXT, "success")},
    "file/validate_token": {"token": (TEXT, "1.abcdefghijklmnopqrstuvwxyz")},
    "device/push/update": {
        "device_id": (TEXT, "d"),
        "apns_armed": (FLAG, True),
        "push_token": (TEXT, "t"),
        "vendor": (TEXT, "fcm"),
    },
    "device/push/status": {"device_id": (TEXT, "d")},
    "device/list": {},
    "device/kick_device": {"device_id": (TEXT, "d")},
    "device/kick_other_devices": {},
    "presence/subscribe": {"user_ids": (IDS, [1])},
    "presence/unsubscribe": {"user_ids": (IDS, [1])},
    "presence/status/get": {"user_ids": (IDS, [1])},
    "sticker/package/list": {},
    "sticker/package/detail": {"package_id": (TEXT, "default")},
}

SURROGATES = [b'"\\ud800"', b'"x\\udfffy"', b'"\xed\xa0\x80"', b'"\\udc00\\ud800"']
DEEP_VALUE = b"[" * 3000 + b"]" * 3000
HUGE_IDS = [
    b'"' + b"1" * 5000 + b'"',
    b"1" * 5000,
    b'"' + b"9" * 21 + b'"',
    b"18446744073709551616",
]
NOT_ASCII_IDS = ['"²"', '"١٢٣"', '"１２３"', '"\\u0663"']
CONTROLS = [b'"a\\u0000b"', b'"a\\u001bb"', b'"\\u007f"', b'"a\\u0085b"']
#: for the body as a whole, whatever the route reads
BODIES = [
    DEEP,
    b'{"a":' + DEEP_VALUE + b"}",
    b'{"\\ud800":1}',
    b'{"n":' + b"1" * 5000 + b"}",
    b'{"n":NaN}',
    b'{"n":-Infinity}',
    b'{"n":1e999}',
    b'{"s":"\xed\xa0\x80"}',
    b'{"s":"\xff"}',
]


def hostile_values(kind: str) -> list[bytes]:
    values = [*SURROGATES, DEEP_VALUE]
    ids = HUGE_IDS + [v.encode() for v in NOT_ASCII_IDS]
    if kind == ID:
        values += ids
    elif kind == IDS:
        values += [b"[" + v + b"]" for v in ids]
    elif kind == TEXT:
        values += CONTROLS
    elif kind == CHANNELS:
        values += [b'[{"channel_id":' + v + b"}]" for v in ids]
        values += [b'[{"channel_id":1,"channel_type":' + v + b"}]" for v in ids]
    elif kind == FLAG:
        values += [v.encode() for v in NOT_ASCII_IDS]
    return values


def body_with(keys: dict[str, tuple[str, Any]], key: str, value: bytes) -> bytes:
    """The route's valid body with ``key`` set to the (raw JSON) hostile ``value``."""
    parts = [
        json.dumps(k).encode() + b":" + (value if k == key else json.dumps(v[1]).encode())
        for k, v in keys.items()
    ]
    return b"{" + b",".join(parts) + b"}"


def hostile_bodies(route: str) -> list[bytes]:
    keys = ROUTE_KEYS[route]
    out = list(BODIES)
    for key, (kind, _) in keys.items():
        out += [body_with(keys, key, value) for value in hostile_values(kind)]
    return out


def test_the_table_lists_every_route_and_every_key_it_reads() -> None:
    """Discovery by trying, in memory: each route is called with its listed body in a dict
    that records the keys read: exactly the keys the table lists are read."""
    assert sorted(ROUTE_KEYS) == all_routes().names()

    class Recording(dict[str, Any]):
        def __init__(self, value: dict[str, Any]) -> None:
            super().__init__(value)
            self.read: set[str] = set()

        def get(self, key: str, default: Any = None) -> Any:
            self.read.add(key)
            return super().get(key, default)

        def __getitem__(self, key: str) -> Any:
            self.read.add(key)
            return super().__getitem__(key)

        def __contains__(self, key: object) -> bool:
            self.read.add(str(key))
            return super().__contains__(key)

    h = Harness()
    dev = h.login(h.user("prober"))
    ctx = dev.session.rpc_context()
    for route in all_routes():
        if route.name == "account/auth/logout":
            continue  # reads nothing, and would revoke the prober's token
        body = Recording({k: v for k, (_, v) in ROUTE_KEYS[route.name].items()})
        try:
            result = route.handler(ctx, body)
            if route.is_async:
                result.send(None)
        except StopIteration:
            pass
        except Exception:  # noqa: BLE001,S110 - refusals are fine: only the keys matter
            pass
        assert body.read == set(ROUTE_KEYS[route.name]), (route.name, body.read)


def test_every_route_refuses_the_hostile_table(
    make_server: Any, server_log: pytest.LogCaptureFixture
) -> None:
    # every route's table in a few pipelined writes: more frames than the default rate allows
    server = make_server(rate_per_connection=0, rate_per_user=0)

    async def main() -> None:
        alice = await user(server.port, "alice")
        anon = await Client.connect("127.0.0.1", server.port)
        table = all_routes()
        sent = 0
        for name in table.names():
            route = table.get(name)
            assert route is not None
            bodies = hostile_bodies(name)
            # async routes run at most MAX_ASYNC_RPC at a time per session (more are
            # refused 10303): they get one pipelined write per MAX_ASYNC_RPC bodies
            step = MAX_ASYNC_RPC if route.is_async else len(bodies)
            clients = [alice, anon] if route.anonymous else [alice]
            for client in clients:
                for i in range(0, len(bodies), step):
                    chunk = bodies[i : i + step]
                    answers = await pipelined(
                        client, [rpc_item(name, b) for b in chunk] + [(Cmd.PING, b"")]
                    )
                    for body, answer in zip(chunk, answers, strict=False):
                        status, _, data = answer
                        assert status == Status.BAD_REQUEST, (
                            name,
                            body[:80],
                            status,
                            pb.Error.FromString(data),
                        )
                        err = pb.Error.FromString(data)
                        assert 10100 <= err.code <= 10199, (name, body[:80], err)
                    assert answers[-1][0] == 0  # the PING after them: the connection is open
                    sent += len(chunk)
        assert sent > 700
        assert alice.connected and anon.connected
        assert await alice.ping() and await anon.ping()
        await alice.close()
        await anon.close()

    run(main(), timeout=120)

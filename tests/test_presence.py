"""Presence over TCP: ``presence/status/get``, ``presence/subscribe`` (changes pushed as PUB
topic "presence") and ``presence/unsubscribe``; OnlineStatus from live sessions and the last
seen time, filtered by the target's privacy rule. The rules themselves in memory."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import ServerThread, run, user

from privchat_tcp.client import Client
from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.harness import Harness
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.service.presence import (
    LAST_MONTH,
    LAST_WEEK,
    LONG_TIME_AGO,
    ONLINE,
    RECENTLY,
    privacy_rules,
    rule_allows,
    status_after,
)
from privchat_tcp.wire.commands import Cmd

DAY = 86400


async def refused(client: Client, route: str, body: dict[str, Any]) -> ServiceError:
    try:
        await client.rpc(route, body)
    except ServiceError as exc:
        return exc
    raise AssertionError(f"{route} {body} was accepted")


async def presence_note(client: Client) -> dict[str, Any]:
    while True:
        push = await client.next_push(10)
        if push.command == Cmd.PUB and push.message.topic == "presence":
            note: dict[str, Any] = json.loads(push.message.payload)
            assert push.message.channel_id == note["user_id"]
            assert push.message.publisher == str(note["user_id"])
            return note


async def status_of(client: Client, uid: int) -> dict[str, Any]:
    reply = await client.rpc("presence/status/get", {"user_ids": [uid]})
    assert reply["code"] == 0 and reply["message"] == "OK"
    info: dict[str, Any] = reply["statuses"][str(uid)]
    return info


def test_status_get(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        reply = await bob.rpc("presence/status/get", {"user_ids": [alice.user_id, 999, 0]})
        assert reply["code"] == 0 and reply["message"] == "OK"
        assert list(reply["statuses"]) == [str(alice.user_id)]  # unknown users left out
        info = reply["statuses"][str(alice.user_id)]
        assert info["user_id"] == alice.user_id and info["status"] == ONLINE
        assert info["last_seen"] > 0 and info["online_devices"] == ["linux"]
        # registered, never online
        never = await Client.connect("127.0.0.1", server.port)
        carol = (await never.register("carol", "password-carol"))["user_id"]
        assert await status_of(bob, carol) == {
            "user_id": carol,
            "status": LONG_TIME_AGO,
            "last_seen": 0,
            "online_devices": [],
        }
        for body, code in (
            ({"user_ids": []}, ErrorCode.INVALID_PARAMS),
            ({}, ErrorCode.INVALID_PARAMS),
            ({"user_ids": list(range(1, 102))}, ErrorCode.PARAM_OUT_OF_RANGE),
            ({"user_ids": ["x"]}, ErrorCode.INVALID_PARAM_TYPE),
            ({"user_ids": [1], "detail": True}, ErrorCode.INVALID_PARAMS),
        ):
            err = await refused(bob, "presence/status/get", body)
            assert (err.code, err.status) == (code, Status.BAD_REQUEST), body
        for c in (alice, bob, never):
            await c.close()

    run(main())


def test_offline_users_by_last_seen(server: ServerThread) -> None:
    async def main() -> None:
        bob = await user(server.port, "bob")
        alice = await user(server.port, "alice")
        uid = alice.user_id
        await alice.close()
        while (await status_of(bob, uid))["status"] == ONLINE:
            await bob.ping()
        info = await status_of(bob, uid)
        assert info["status"] == RECENTLY and info["last_seen"] > 0
        assert info["online_devices"] == []
        assert server.server is not None
        store = server.server.store
        now = server.server.services.clock()
        for ago, status in (
            (2 * 3600, LAST_WEEK),
            (10 * DAY, LAST_MONTH),
            (40 * DAY, LONG_TIME_AGO),
        ):
            server.call(lambda ago=ago: store._last_seen.__setitem__(uid, now - ago * 1000))  # type: ignore[attr-defined]
            got = await status_of(bob, uid)
            assert got["status"] == status and got["last_seen"] == (now - ago * 1000) // 1000
        await bob.close()

    run(main())


def test_subscribe_pushes_changes_and_unsubscribe_stops_them(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        carol = await user(server.port, "carol")
        got = await bob.rpc("presence/subscribe", {"user_ids": [alice.user_id, bob.user_id, 0]})
        assert list(got["initial_statuses"]) == [str(alice.user_id)]  # self and 0 skipped
        assert got["initial_statuses"][str(alice.user_id)]["status"] == ONLINE
        await carol.rpc("presence/subscribe", {"user_ids": [alice.user_id]})
        await alice.close()
        for watcher in (bob, carol):
            note = await presence_note(watcher)
            assert note["user_id"] == alice.user_id
            assert (note["old_status"], note["new_status"]) == (ONLINE, RECENTLY)
            assert note["last_seen"] > 0 and note["timestamp"] > 0
        # back online
        again = await Client.connect("127.0.0.1", server.port)
        again.device_id = alice.device_id
        await again.login(alice.token)
        note = await presence_note(bob)
        assert (note["old_status"], note["new_status"]) == (RECENTLY, ONLINE)
        assert note["online_devices"] == ["linux"]
        await presence_note(carol)
        # bob stops watching; carol still does
        assert await bob.rpc("presence/unsubscribe", {"user_ids": [alice.user_id]}) is True
        await again.close()
        await presence_note(carol)
        await bob.ping()  # the change reached carol: bob would have it by now
        assert [p for p in bob.drain_pushes() if p.command == Cmd.PUB] == []
        err = await refused(bob, "presence/subscribe", {"user_ids": []})
        assert err.code == ErrorCode.INVALID_PARAMS
        err = await refused(bob, "presence/unsubscribe", {})
        assert err.code == ErrorCode.INVALID_PARAMS
        await bob.close()
        await carol.close()

    run(main())


def test_a_subscription_ends_with_its_session(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        await bob.rpc("presence/subscribe", {"user_ids": [alice.user_id]})
        assert server.server is not None
        presence = server.server.services.presence
        assert server.call(lambda: len(presence.subscribers(alice.user_id))) == 1
        await bob.close()
        while server.call(lambda: len(presence.subscribers(alice.user_id))):
            await alice.ping()
        await alice.close()

    run(main())


def test_privacy_rules_filter_what_others_see(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        carol = await user(server.port, "carol")
        assert server.server is not None
        store = server.server.store
        uid = alice.user_id

        def privacy(doc: dict[str, Any]) -> None:
            server.call(lambda: store.put_doc(uid, "privacy", doc))

        privacy({"show_online_to": "Nobody", "show_last_seen_to": "Nobody"})
        hidden = await status_of(bob, uid)
        assert hidden == {"user_id": uid, "status": "Offline", "last_seen": 0, "online_devices": []}
        assert (await status_of(alice, uid))["status"] == ONLINE  # one always sees oneself
        privacy({"show_online_to": "Contacts", "show_last_seen_to": "Contacts"})
        assert (await status_of(bob, uid))["status"] == "Offline"
        server.call(lambda: store.add_friends(uid, bob.user_id, 1))
        assert (await status_of(bob, uid))["status"] == ONLINE
        assert (await status_of(carol, uid))["status"] == "Offline"
        privacy({"show_online_to": {"Custom": {"allow_users": [carol.user_id], "deny_users": []}}})
        assert (await status_of(carol, uid))["status"] == ONLINE
        assert (await status_of(bob, uid))["status"] == "Offline"
        # the account flag: not viewable by non-friends
        privacy({"allow_view_by_non_friend": False})
        assert (await status_of(carol, uid))["status"] == "Offline"
        assert (await status_of(bob, uid))["status"] == ONLINE  # a friend
        # a blocked viewer sees nothing
        privacy({})
        server.call(lambda: store.block(uid, carol.user_id, 1))
        assert (await status_of(carol, uid))["status"] == "Offline"
        # a hidden user's changes are not pushed either
        privacy({"show_online_to": "Nobody", "show_last_seen_to": "Nobody"})
        got = await carol.rpc("presence/subscribe", {"user_ids": [uid]})
        assert got["initial_statuses"][str(uid)]["status"] == "Offline"
        await bob.rpc("presence/subscribe", {"user_ids": [uid]})  # a friend: sees Nobody too
        await alice.close()
        await bob.ping()
        await carol.ping()
        assert not [p for p in carol.drain_pushes() if p.command == Cmd.PUB]
        for c in (bob, carol):
            await c.close()

    run(main())


# ---- the rules, in memory --------------------------------------------------------------------
@pytest.mark.parametrize(
    "elapsed, status",
    [
        (0, RECENTLY),
        (3600, RECENTLY),
        (3601, LAST_WEEK),
        (604800, LAST_WEEK),
        (604801, LAST_MONTH),
        (2592000, LAST_MONTH),
        (2592001, LONG_TIME_AGO),
    ],
)
def test_status_bands(elapsed: int, status: str) -> None:
    assert status_after(elapsed, False) == status
    assert status_after(elapsed, True) == ONLINE


@pytest.mark.parametrize(
    "rule, viewer, friend, allowed",
    [
        ("Everyone", 5, False, True),
        ("Contacts", 5, False, False),
        ("Contacts", 5, True, True),
        ("Nobody", 5, True, False),
        ({"Custom": {"allow_users": [5], "deny_users": []}}, 5, False, True),
        ({"Custom": {"allow_users": [5], "deny_users": [5]}}, 5, True, False),
        ({"Custom": {"allow_users": [6]}}, 5, True, False),
        ("everyone", 5, True, False),  # unknown: hidden
        (None, 5, True, False),
    ],
)
def test_rule_matrix(rule: Any, viewer: int, friend: bool, allowed: bool) -> None:
    assert rule_allows(rule, viewer, lambda: friend) is allowed


def test_privacy_document_defaults() -> None:
    assert privacy_rules({}) == ("Everyone", "Everyone")
    assert privacy_rules({"allow_view_by_non_friend": False}) == ("Contacts", "Contacts")
    assert privacy_rules({"show_online_to": "Nobody"}) == ("Nobody", "Everyone")


def test_harness_status_and_subscription() -> None:
    h = Harness()
    alice, bob = h.user("alice"), h.user("bob")
    a = h.login(alice)
    b = h.login(bob)
    got = b.rpc("presence/subscribe", {"user_ids": [alice.user_id]})
    assert got["initial_statuses"][str(alice.user_id)]["status"] == ONLINE
    a.session.close()  # the connection goes: the hub drops the session
    a.transmit()
    h.turn()
    pubs = [r for r in b.received if r.command == Cmd.PUB]
    assert len(pubs) == 1
    note = json.loads(pb.PublishRequest.FromString(pubs[0].body).payload)
    assert (note["old_status"], note["new_status"]) == (ONLINE, RECENTLY)
    statuses = b.rpc("presence/status/get", {"user_ids": [alice.user_id]})["statuses"]
    assert statuses[str(alice.user_id)]["status"] == RECENTLY

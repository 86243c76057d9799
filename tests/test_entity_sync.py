"""``entity/sync_entities`` over TCP (issue 12, reference 11.7): every supported type's page
and payload, per-family monotonic versions, ``since_version`` / ``limit`` / ``next_version`` /
``has_more`` paging, tombstones, scopes, the unsupported-type answer the SDK relies on, and
versions that survive a restart of the SQLite store."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from conftest import ServerThread, device, run, user

from privchat_tcp.client import Client
from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.harness import Harness
from privchat_tcp.service.entities import MAX_LIMIT, parse_scope


async def sync(
    client: Client, entity_type: str, since: int = 0, limit: int = 0, scope: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"entity_type": entity_type, "since_version": since}
    if limit:
        body["limit"] = limit
    if scope is not None:
        body["scope"] = scope
    page: dict[str, Any] = await client.rpc("entity/sync_entities", body)
    assert set(page) == {"items", "next_version", "has_more"}
    versions = [i["version"] for i in page["items"]]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    if page["items"] and page["next_version"] >= since:  # (not a cursor from another store)
        assert all(v > since for v in versions)
    return page


async def sync_all(
    client: Client, entity_type: str, limit: int, scope: str | None = None
) -> tuple[list[dict[str, Any]], int, int]:
    """The SDK's loop: (items, pages, final cursor)."""
    since, pages, items = 0, 0, []
    while True:
        page = await sync(client, entity_type, since, limit, scope)
        pages += 1
        items += page["items"]
        assert len(page["items"]) <= limit
        if not page["has_more"]:
            return items, pages, page["next_version"]
        assert page["next_version"] > since  # the SDK's "paging stalled" check
        since = page["next_version"]


def test_every_bootstrap_type_and_the_unsupported_answer(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        gid = (await alice.rpc("group/group/create", {"name": "g", "member_ids": [bob.user_id]}))[
            "group_id"
        ]
        dm = (await alice.rpc("channel/direct/get_or_create", {"target_user_id": bob.user_id}))[
            "channel_id"
        ]
        users = await sync(alice, "user")
        by_id = {i["entity_id"]: i for i in users["items"]}
        assert set(by_id) == {str(alice.user_id), str(bob.user_id)}  # self, the direct peer
        me = by_id[str(alice.user_id)]["payload"]
        assert (me["user_id"], me["uid"], me["username"]) == (
            alice.user_id,
            alice.user_id,
            "alice",
        )
        groups = await sync(alice, "group")
        [g] = groups["items"]
        assert g["entity_id"] == str(gid) and g["deleted"] is False
        assert (g["payload"]["group_id"], g["payload"]["name"]) == (gid, "g")
        assert (g["payload"]["owner_id"], g["payload"]["member_count"]) == (alice.user_id, 2)
        channels = await sync(bob, "channel")
        by_cid = {i["entity_id"]: i["payload"] for i in channels["items"]}
        assert set(by_cid) == {str(gid), str(dm)}
        assert by_cid[str(dm)]["channel_type"] == 1
        assert by_cid[str(dm)]["channel_name"] == str(alice.user_id)
        assert by_cid[str(gid)]["channel_type"] == 2 and by_cid[str(gid)]["name"] == "g"
        members = await sync(bob, "group_member", scope=str(gid))
        got = {i["entity_id"]: i["payload"] for i in members["items"]}
        assert set(got) == {f"{gid}:{alice.user_id}", f"{gid}:{bob.user_id}"}
        assert got[f"{gid}:{alice.user_id}"]["role"] == 0  # owner, 0.1 numbering
        assert got[f"{gid}:{bob.user_id}"]["role"] == 2
        scoped = await sync(bob, "user", scope=f"2:{gid}")  # sync_channel's scope form
        assert {i["entity_id"] for i in scoped["items"]} == {
            str(alice.user_id),
            str(bob.user_id),
        }
        for empty in ("friend", "user_settings", "user_block", "blacklist"):
            page = await sync(alice, empty)
            assert page == {"items": [], "next_version": 0, "has_more": False}
        # an optional type the server does not keep: the text the SDK skips it on
        for kind in ("channel_extra", "reminder", "zzz"):
            err = await refused(alice, {"entity_type": kind})
            assert err.code == ErrorCode.INVALID_PARAMS and err.status == Status.BAD_REQUEST
            assert "不支持的 entity_type" in err.message and kind not in err.message
        # the refusals: group_member needs a scope, of a group the caller is in
        err = await refused(alice, {"entity_type": "group_member"})
        assert err.code == ErrorCode.INVALID_PARAMS
        carol = await user(server.port, "carol")
        err = await refused(carol, {"entity_type": "group_member", "scope": str(gid)})
        assert err.code == ErrorCode.NOT_GROUP_MEMBER
        err = await refused(alice, {"entity_type": "group", "since_version": -1})
        assert err.code == ErrorCode.PARAM_OUT_OF_RANGE
        err = await refused(alice, {"entity_type": "group", "cursor": 1})
        assert err.code == ErrorCode.INVALID_PARAMS and "cursor" in err.message
        for c in (alice, bob, carol):
            await c.close()

    run(main())


async def refused(client: Client, body: dict[str, Any]) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        await client.rpc("entity/sync_entities", body)
    return info.value


def test_paging_increments_and_tombstones(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        gids = []
        for i in range(7):
            made = await alice.rpc(
                "group/group/create", {"name": f"g{i}", "member_ids": [bob.user_id]}
            )
            gids.append(made["group_id"])
        items, pages, cursor = await sync_all(bob, "group", 3)
        assert pages == 3 and [int(i["entity_id"]) for i in items] == gids
        assert [i["version"] for i in items] == list(range(1, 8))  # per family, from 1
        assert cursor == 7
        tail = await sync(bob, "group", cursor)
        assert tail == {"items": [], "next_version": cursor, "has_more": False}
        # only what changed since the cursor comes back: bob leaves one group, is removed from
        # another, joins a new one
        await bob.rpc("group/member/leave", {"group_id": gids[1]})
        await alice.rpc("group/member/remove", {"group_id": gids[4], "user_id": bob.user_id})
        new = (await alice.rpc("group/group/create", {"name": "g7"}))["group_id"]
        await alice.rpc("group/member/add", {"group_id": new, "user_id": bob.user_id})
        page = await sync(bob, "group", cursor)
        assert [(i["entity_id"], i["deleted"]) for i in page["items"]] == [
            (str(gids[1]), True),
            (str(gids[4]), True),
            (str(new), False),
        ]
        assert [i["payload"] for i in page["items"][:2]] == [None, None]  # tombstones
        assert page["next_version"] == page["items"][-1]["version"] == cursor + 3
        # the channel family has the same tombstones; a full sync lists them too (the SDK
        # deletes what it may still hold)
        channels = await sync(bob, "channel")
        dead = {i["entity_id"] for i in channels["items"] if i["deleted"]}
        assert dead == {str(gids[1]), str(gids[4])}
        # the remaining members see the member tombstones
        members = await sync(alice, "group_member", scope=str(gids[1]))
        assert [(i["entity_id"], i["deleted"]) for i in members["items"]][-1] == (
            f"{gids[1]}:{bob.user_id}",
            True,
        )
        # a cursor ahead of the family (from another store) is a full sync
        again = await sync(bob, "group", 10_000)
        assert len(again["items"]) == 8
        # limit is bounded
        many = await sync(bob, "group", 0, 10_000)
        assert len(many["items"]) == 8 <= MAX_LIMIT
        await alice.close()
        await bob.close()

    run(main())


def test_friends_settings_and_blocks_follow_the_feed(server: ServerThread) -> None:
    """What another service reports through ``services.feed`` (friendships, settings,
    blacklists) pages like the rest, checked against the store's live state."""

    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        assert server.server is not None
        services, store = server.server.services, server.server.store

        def befriend() -> None:
            store.add_friends(alice.user_id, bob.user_id, 5)
            services.feed.friendship(alice.user_id, bob.user_id)

        server.call(befriend)
        page = await sync(alice, "friend")
        [item] = page["items"]
        assert item["entity_id"] == str(bob.user_id) and item["deleted"] is False
        payload = item["payload"]
        assert (payload["user_id"], payload["created_at"]) == (bob.user_id, 5)
        assert payload["user"]["username"] == "bob"
        users = await sync(alice, "user")
        assert str(bob.user_id) in {i["entity_id"] for i in users["items"]}

        def unfriend() -> None:
            store.remove_friends(alice.user_id, bob.user_id)
            services.feed.friendship(alice.user_id, bob.user_id, ended=True)

        server.call(unfriend)
        page2 = await sync(bob, "friend", 1)
        assert [(i["entity_id"], i["deleted"]) for i in page2["items"]] == [
            (str(alice.user_id), True)
        ]

        def settings() -> None:  # the document as the service writes it
            services.profiles.update_settings(alice.user_id, {"theme": "dark", "lang": "fr"})

        server.call(settings)
        page3 = await sync(alice, "user_settings")
        assert [i["payload"] for i in page3["items"]] == [
            {"setting_key": "theme", "value": "dark"},
            {"setting_key": "lang", "value": "fr"},
        ]

        def block() -> None:
            store.block(alice.user_id, bob.user_id, 9)
            services.feed.blocked(alice.user_id, bob.user_id)

        server.call(block)
        page4 = await sync(alice, "user_block")
        assert page4["items"][0]["payload"]["blocked_user_id"] == bob.user_id
        assert page4["items"][0]["payload"]["blocked_at"] == 9
        await alice.close()
        await bob.close()

    run(main())


def test_versions_survive_a_restart(tmp_path: pathlib.Path) -> None:
    data = str(tmp_path / "data")
    first = ServerThread(data_dir=data).start()
    state: dict[str, Any] = {}

    async def before() -> None:
        alice = await user(first.port, "alice")
        for i in range(3):
            await alice.rpc("group/group/create", {"name": f"g{i}"})
        page = await sync(alice, "group")
        state.update(token=alice.token, device=alice.device_id, cursor=page["next_version"])
        await alice.close()

    run(before())
    first.stop()
    second = ServerThread(data_dir=data).start()
    try:

        async def after() -> None:
            alice = await device(second.port, state["token"], state["device"])
            assert (await sync(alice, "group", state["cursor"]))["items"] == []
            full = await sync(alice, "group")
            assert [i["version"] for i in full["items"]] == [1, 2, 3]
            gid = (await alice.rpc("group/group/create", {"name": "after"}))["group_id"]
            page = await sync(alice, "group", state["cursor"])
            assert [(i["entity_id"], i["version"]) for i in page["items"]] == [
                (str(gid), state["cursor"] + 1)
            ]
            await alice.close()

        run(after())
    finally:
        second.stop()


def test_scope_parsing_and_the_feed_in_memory() -> None:
    assert parse_scope(None) == 0 and parse_scope("") == 0
    assert parse_scope("1001") == 1001 and parse_scope("2:1001") == 1001
    assert parse_scope("group/7|x") == 7 and parse_scope("cursor:abc") == 0
    h = Harness()
    a, b = h.user("alice"), h.user("bob")
    dev = h.login(a)
    gid = dev.rpc("group/group/create", {"name": "g", "member_ids": [b.user_id]})["group_id"]
    store = h.store
    assert store.entity_version(f"group:{b.user_id}") == 1
    assert store.entity_version(f"member:{gid}") == 2
    assert store.entity_version(f"user:{a.user_id}") == 1  # registered: self
    dev.rpc("group/member/remove", {"group_id": gid, "user_id": b.user_id})
    assert store.entities_since(f"group:{b.user_id}", 1, 9) == [(str(gid), 2, True)]


def test_a_scope_on_channel_or_group_answers_that_one_entity(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        carol = await user(server.port, "carol")
        gids = []
        for i in range(3):
            made = await alice.rpc(
                "group/group/create", {"name": f"g{i}", "member_ids": [bob.user_id]}
            )
            gids.append(made["group_id"])
        page = await sync(bob, "channel", scope=f"2:{gids[1]}")
        assert [(i["entity_id"], i["version"]) for i in page["items"]] == [(str(gids[1]), 2)]
        assert page["next_version"] == 2 and page["has_more"] is False
        assert page["items"][0]["payload"]["name"] == "g1"
        group = await sync(bob, "group", scope=str(gids[2]))
        assert [i["entity_id"] for i in group["items"]] == [str(gids[2])]
        assert (await sync(bob, "group", 3, scope=str(gids[2])))["items"] == []  # not newer
        # not the caller's channel: nothing (its existence is not told)
        assert (await sync(carol, "channel", scope=f"2:{gids[0]}"))["items"] == []
        await bob.rpc("group/member/leave", {"group_id": gids[0]})
        gone = await sync(bob, "channel", scope=str(gids[0]))
        assert [(i["entity_id"], i["deleted"]) for i in gone["items"]] == [(str(gids[0]), True)]
        for c in (alice, bob, carol):
            await c.close()

    run(main())

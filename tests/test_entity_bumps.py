"""What social and privacy changes bump, seen the way a client sees it (issue 12): a client
that synced an entity type keeps its cursor (``next_version``) and asks again from it; the
change must be on that next page, in the per-viewer family ``entity/sync_entities`` reads.

- friend accept / remove: each side's ``friend`` and ``user`` views;
- blacklist add / remove: the blocker's ``user_block`` and ``user`` views (``is_blocked``);
- a profile change: the views of the user, their friends and direct peers, and their groups'
  member families (a scoped ``user`` sync);
- ``account/privacy/update``: the user's ``user_settings`` entity ``privacy`` and own ``user``.
"""

from __future__ import annotations

from typing import Any

from conftest import ServerThread, run, user

from privchat_tcp.client import Client
from privchat_tcp.errors import ErrorCode, ServiceError


async def page(
    client: Client, entity_type: str, since: int = 0, scope: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"entity_type": entity_type, "since_version": since}
    if scope is not None:
        body["scope"] = scope
    got: dict[str, Any] = await client.rpc("entity/sync_entities", body)
    assert not got["has_more"]
    assert all(i["version"] > since for i in got["items"])
    return got


def items(got: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["entity_id"]: i for i in got["items"]}


async def befriend(a: Client, b: Client) -> None:
    await a.rpc("contact/friend/apply", {"target_user_id": b.user_id})
    await b.rpc("contact/friend/accept", {"from_user_id": a.user_id})


def test_friendships_and_blocks_reach_each_viewer_from_their_cursor(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        cursors = {}
        for c in (alice, bob):
            for kind in ("user", "friend"):
                cursors[c.user_id, kind] = (await page(c, kind))["next_version"]

        await befriend(alice, bob)
        for me, other in ((alice, bob), (bob, alice)):
            friends = items(await page(me, "friend", cursors[me.user_id, "friend"]))
            assert friends[str(other.user_id)]["deleted"] is False
            users_page = await page(me, "user", cursors[me.user_id, "user"])
            seen = items(users_page)[str(other.user_id)]["payload"]
            assert (seen["user_id"], seen["is_friend"], seen["is_blocked"]) == (
                other.user_id,
                True,
                False,
            )
            cursors[me.user_id, "user"] = users_page["next_version"]
            cursors[me.user_id, "friend"] = (await page(me, "friend"))["next_version"]

        assert await alice.rpc("contact/friend/remove", {"friend_id": bob.user_id}) is True
        for me, other in ((alice, bob), (bob, alice)):
            friends = items(await page(me, "friend", cursors[me.user_id, "friend"]))
            assert friends[str(other.user_id)]["deleted"] is True  # a tombstone
            users_page = await page(me, "user", cursors[me.user_id, "user"])
            assert items(users_page)[str(other.user_id)]["payload"]["is_friend"] is False
            cursors[me.user_id, "user"] = users_page["next_version"]

        blocks = (await page(alice, "user_block"))["next_version"]
        assert await alice.rpc("contact/blacklist/add", {"blocked_user_id": bob.user_id}) is True
        blocked = items(await page(alice, "user_block", blocks))[str(bob.user_id)]
        assert blocked["deleted"] is False and blocked["payload"]["blocked_user_id"] == bob.user_id
        users_page = await page(alice, "user", cursors[alice.user_id, "user"])
        assert items(users_page)[str(bob.user_id)]["payload"]["is_blocked"] is True
        # bob's view of alice did not change: nothing new for him
        assert (await page(bob, "user", cursors[bob.user_id, "user"]))["items"] == []

        blocks = (await page(alice, "user_block"))["next_version"]
        cursor = users_page["next_version"]
        assert await alice.rpc("contact/blacklist/remove", {"blocked_user_id": bob.user_id})
        unblocked = items(await page(alice, "user_block", blocks))[str(bob.user_id)]
        assert unblocked["deleted"] is True and unblocked["payload"] is None
        again = items(await page(alice, "user", cursor))[str(bob.user_id)]
        assert again["payload"]["is_blocked"] is False
        await alice.close()
        await bob.close()

    run(main())


def test_a_profile_change_reaches_friends_peers_and_group_members(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        friend = await user(server.port, "friend")
        peer = await user(server.port, "peer")
        member = await user(server.port, "member")
        stranger = await user(server.port, "stranger")
        await befriend(alice, friend)
        await peer.rpc("channel/direct/get_or_create", {"target_user_id": alice.user_id})
        gid = (
            await alice.rpc("group/group/create", {"name": "g", "member_ids": [member.user_id]})
        )["group_id"]
        before = {c.user_id: (await page(c, "user"))["next_version"] for c in (friend, peer)}
        scoped = (await page(member, "user", scope=str(gid)))["next_version"]
        lone = (await page(stranger, "user"))["next_version"]

        await alice.rpc("account/user/update", {"display_name": "Alice A."})
        for c in (friend, peer):
            seen = items(await page(c, "user", before[c.user_id]))
            assert seen[str(alice.user_id)]["payload"]["nickname"] == "Alice A."
        in_group = items(await page(member, "user", scoped, scope=str(gid)))
        assert in_group[str(alice.user_id)]["payload"]["nickname"] == "Alice A."
        assert (await page(stranger, "user", lone))["items"] == []  # sees her nowhere
        for c in (alice, friend, peer, member, stranger):
            await c.close()

    run(main())


def test_a_privacy_change_bumps_the_users_own_entities(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        other_device = await user(server.port, "bob")  # someone else: sees nothing of it
        settings = (await page(alice, "user_settings"))["next_version"]
        users = (await page(alice, "user"))["next_version"]
        theirs = (await page(other_device, "user"))["next_version"]

        await alice.rpc("account/privacy/update", {"allow_view_by_non_friend": False})
        [privacy] = (await page(alice, "user_settings", settings))["items"]
        assert privacy["entity_id"] == "privacy" and privacy["deleted"] is False
        flags = privacy["payload"]["value"]
        assert privacy["payload"]["setting_key"] == "privacy"
        assert flags["allow_view_by_non_friend"] is False
        assert flags["allow_add_by_group"] is True  # defaults filled in
        [me] = (await page(alice, "user", users))["items"]
        assert me["entity_id"] == str(alice.user_id)
        assert (await page(other_device, "user", theirs))["items"] == []
        # the key is the privacy flags': account/settings/update does not take it
        try:
            await alice.rpc("account/settings/update", {"settings": {"privacy": 1}})
        except ServiceError as exc:
            assert exc.code == ErrorCode.INVALID_PARAMS
        else:
            raise AssertionError("the reserved setting was accepted")
        # ordinary settings still page as before, next to it
        await alice.rpc("account/settings/update", {"settings": {"theme": "dark"}})
        everything = items(await page(alice, "user_settings"))
        assert everything["theme"]["payload"] == {"setting_key": "theme", "value": "dark"}
        assert set(everything) == {"privacy", "theme"}
        await alice.close()
        await other_device.close()

    run(main())

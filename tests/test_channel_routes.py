"""``channel/*`` over TCP (issue 12): direct channels with ``source`` and the privacy and
blacklist rules, per-user pin / hide / mute, broadcast channels and their content; each
route's success reply and its refusals, and what survives a restart. The rule matrix of
opening a direct channel also runs in memory (``privchat_tcp.harness``)."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from conftest import ServerThread, device, run, user

from privchat_tcp.client import Client
from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.harness import Harness
from privchat_tcp.service.model import QRCode

BLOCKED_BY_USER = 20402
USER_IN_BLACKLIST = 20403


async def refused(client: Client, route: str, body: dict[str, Any]) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        await client.rpc(route, body)
    return info.value


def _store(server: ServerThread) -> Any:
    assert server.server is not None
    return server.server.services.conversations, server.server.store


# ---- direct channels ---------------------------------------------------------------------------
def test_direct_get_or_create_returns_one_channel_per_pair(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        first = await alice.rpc("channel/direct/get_or_create", {"target_user_id": bob.user_id})
        assert set(first) == {"channel_id", "created"}
        assert first["created"] is True and first["channel_id"] > 0
        again = await bob.rpc("channel/direct/get_or_create", {"target_user_id": alice.user_id})
        assert again == {"channel_id": first["channel_id"], "created": False}
        # the refusals: yourself, nobody, a source that is not one, an unknown key
        err = await refused(
            alice, "channel/direct/get_or_create", {"target_user_id": alice.user_id}
        )
        assert err.code == ErrorCode.INVALID_PARAMS and err.status == Status.BAD_REQUEST
        err = await refused(alice, "channel/direct/get_or_create", {"target_user_id": 99})
        assert err.code == ErrorCode.USER_NOT_FOUND and err.status == Status.NOT_FOUND
        err = await refused(
            alice,
            "channel/direct/get_or_create",
            {"target_user_id": bob.user_id, "source": "telepathy"},
        )
        assert err.code == ErrorCode.INVALID_PARAMS and "source" in err.message
        err = await refused(
            alice, "channel/direct/get_or_create", {"target_user_id": bob.user_id, "via": 1}
        )
        assert err.code == ErrorCode.INVALID_PARAMS and "via" in err.message
        for c in (alice, bob):
            await c.close()

    run(main())


def test_direct_source_must_hold_and_is_remembered(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        carol = await user(server.port, "carol")
        gid = (await alice.rpc("group/group/create", {"name": "g", "member_ids": [bob.user_id]}))[
            "group_id"
        ]
        # carol is not in the group: her claim does not hold
        err = await refused(
            carol,
            "channel/direct/get_or_create",
            {"target_user_id": bob.user_id, "source": "group", "source_id": str(gid)},
        )
        assert err.code == ErrorCode.PERMISSION_DENIED and err.status == Status.FORBIDDEN
        err = await refused(
            carol,
            "channel/direct/get_or_create",
            {"target_user_id": bob.user_id, "source": "friend"},
        )
        assert err.code == ErrorCode.PERMISSION_DENIED
        # alice and bob share it (the id may come as a number)
        dm = await alice.rpc(
            "channel/direct/get_or_create",
            {"target_user_id": bob.user_id, "source": "group", "source_id": gid},
        )
        assert dm["created"] is True
        conversations, _ = _store(server)
        assert server.call(lambda: conversations.direct_source(dm["channel_id"])) == (
            "group",
            str(gid),
        )
        # a shared card names its target
        store = _store(server)[1]
        card = QRCode("card-key-1", "card", bob.user_id, alice.user_id, "tok", 0)
        server.call(lambda: store.put_qrcode(card))
        dm2 = await carol.rpc(
            "channel/direct/get_or_create",
            {"target_user_id": bob.user_id, "source": "card_share", "source_id": "card-key-1"},
        )
        assert dm2["created"] is True
        err = await refused(
            carol,
            "channel/direct/get_or_create",
            {"target_user_id": alice.user_id, "source": "card_share", "source_id": "card-key-1"},
        )
        assert err.code == ErrorCode.PERMISSION_DENIED
        for c in (alice, bob, carol):
            await c.close()

    run(main())


def test_direct_blacklist_and_privacy_over_tcp(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        carol = await user(server.port, "carol")
        store = _store(server)[1]
        server.call(lambda: store.block(bob.user_id, alice.user_id, 1))
        err = await refused(alice, "channel/direct/get_or_create", {"target_user_id": bob.user_id})
        assert err.code == BLOCKED_BY_USER and err.status == Status.FORBIDDEN
        err = await refused(bob, "channel/direct/get_or_create", {"target_user_id": alice.user_id})
        assert err.code == USER_IN_BLACKLIST
        # carol accepts messages from friends only
        server.call(
            lambda: store.put_doc(
                carol.user_id, "privacy", {"allow_receive_message_from_non_friend": False}
            )
        )
        err = await refused(
            alice, "channel/direct/get_or_create", {"target_user_id": carol.user_id}
        )
        assert err.code == ErrorCode.PERMISSION_DENIED
        server.call(lambda: store.add_friends(alice.user_id, carol.user_id, 1))
        dm = await alice.rpc(
            "channel/direct/get_or_create",
            {"target_user_id": carol.user_id, "source": "friend"},
        )
        assert dm["created"] is True
        for c in (alice, bob, carol):
            await c.close()

    run(main())


#: (target's privacy allows non-friends, friends, target blocked caller, caller blocked target,
#:  expected code)
DIRECT_RULES = [
    (True, False, False, False, 0),
    (False, False, False, False, ErrorCode.PERMISSION_DENIED),
    (False, True, False, False, 0),
    (True, True, True, False, BLOCKED_BY_USER),
    (True, False, False, True, USER_IN_BLACKLIST),
    (False, True, True, True, BLOCKED_BY_USER),
]


@pytest.mark.parametrize(("open_", "friends", "blocked_by", "blocking", "code"), DIRECT_RULES)
def test_direct_rule_matrix_in_memory(
    open_: bool, friends: bool, blocked_by: bool, blocking: bool, code: int
) -> None:
    h = Harness()
    a, b = h.user("alice"), h.user("bob")
    store = h.store
    store.put_doc(b.user_id, "privacy", {"allow_receive_message_from_non_friend": open_})
    if friends:
        store.add_friends(a.user_id, b.user_id, 1)
    if blocked_by:
        store.block(b.user_id, a.user_id, 1)
    if blocking:
        store.block(a.user_id, b.user_id, 1)
    dev = h.login(a)
    try:
        reply = dev.rpc("channel/direct/get_or_create", {"target_user_id": b.user_id})
    except ServiceError as exc:
        assert exc.code == code
    else:
        assert code == 0 and reply["created"] is True


# ---- pin, hide, mute ---------------------------------------------------------------------------
def test_pin_hide_mute_show_in_the_channel_entities(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        carol = await user(server.port, "carol")
        dm = (await alice.rpc("channel/direct/get_or_create", {"target_user_id": bob.user_id}))[
            "channel_id"
        ]

        async def payload(c: Client) -> dict[str, Any]:
            page = await c.rpc("entity/sync_entities", {"entity_type": "channel"})
            items = {i["entity_id"]: i for i in page["items"]}
            return dict(items[str(dm)]["payload"])

        before = await payload(alice)
        assert (before["top"], before["mute"], before["hidden"]) == (0, 0, False)
        assert await alice.rpc("channel/pin", {"channel_id": dm, "pinned": True}) is True
        assert await alice.rpc("channel/mute", {"channel_id": dm, "muted": True}) is True
        assert await alice.rpc("channel/hide", {"channel_id": dm}) is True
        after = await payload(alice)
        assert (after["top"], after["mute"], after["hidden"]) == (1, 1, True)
        assert after["pinned_at"] > 0
        other = await payload(bob)  # per user: bob's view did not change
        assert (other["top"], other["mute"], other["hidden"]) == (0, 0, False)
        # a new message shows the hidden channel again
        await bob.send(dm, "hello")
        assert (await payload(alice))["hidden"] is False
        # unpin, unmute
        await alice.rpc("channel/pin", {"channel_id": dm, "pinned": False})
        await alice.rpc("channel/mute", {"channel_id": dm, "muted": False})
        final = await payload(alice)
        assert (final["top"], final["mute"], final["pinned_at"]) == (0, 0, 0)
        # the refusals: not a member, no such channel, someone else's user_id, a bad flag
        for route, extra in (
            ("channel/pin", {"pinned": True}),
            ("channel/hide", {}),
            ("channel/mute", {"muted": True}),
        ):
            err = await refused(carol, route, {"channel_id": dm, **extra})
            assert err.code == ErrorCode.PERMISSION_DENIED and err.status == Status.FORBIDDEN
            err = await refused(alice, route, {"channel_id": 999_999, **extra})
            assert err.code == ErrorCode.CHANNEL_NOT_FOUND and err.status == Status.NOT_FOUND
            err = await refused(alice, route, {"channel_id": dm, "user_id": bob.user_id, **extra})
            assert err.code == ErrorCode.PERMISSION_DENIED
        err = await refused(alice, "channel/pin", {"channel_id": dm, "pinned": "yes"})
        assert err.code == ErrorCode.INVALID_PARAM_TYPE
        # the caller's own user_id is fine
        assert await alice.rpc("channel/pin", {"channel_id": dm, "user_id": alice.user_id})
        for c in (alice, bob, carol):
            await c.close()

    run(main())


# ---- broadcast channels ------------------------------------------------------------------------
def test_broadcast_create_subscribe_list_publish_content(server: ServerThread) -> None:
    async def main() -> None:
        owner = await user(server.port, "owner")
        reader = await user(server.port, "reader")
        stranger = await user(server.port, "stranger")
        made = await owner.rpc(
            "channel/broadcast/create",
            {"name": "News", "description": "daily", "avatar_url": "https://x/n.png"},
        )
        assert made["status"] == "success" and made["action"] == "create"
        assert isinstance(made["timestamp"], str)
        assert (made["name"], made["description"], made["owner_id"]) == (
            "News",
            "daily",
            owner.user_id,
        )
        assert made["subscriber_count"] == 1 and made["subscribed"] is True
        bid = made["channel_id"]
        # server 0.1's name for the same route
        other = await owner.rpc("channel/channel/create", {"name": "Sport"})
        assert other["channel_id"] != bid and other["description"] is None

        listed = await reader.rpc("channel/broadcast/list", {"page": 1, "page_size": 1})
        assert listed["status"] == "success" and listed["total"] == 2
        assert [c["channel_id"] for c in listed["channels"]] == [other["channel_id"]]
        assert listed["has_more"] is True and listed["channels"][0]["subscribed"] is False
        page2 = await reader.rpc("channel/broadcast/list", {"page": 2, "page_size": 1})
        assert [c["channel_id"] for c in page2["channels"]] == [bid]
        assert page2["has_more"] is False

        sub = await reader.rpc("channel/broadcast/subscribe", {"channel_id": bid})
        assert sub["status"] == "success" and sub["channel_id"] == bid
        assert sub["user_id"] == reader.user_id and sub["subscribed_at"].endswith("Z")
        again = await reader.rpc("channel/channel/subscribe", {"channel_id": bid})
        assert again["subscribed_at"] == sub["subscribed_at"]  # once: the first time stays

        posts = []
        for i in range(3):
            posts.append(
                await owner.rpc(
                    "channel/content/publish",
                    {"channel_id": bid, "content": f"post {i}", "title": f"t{i}"},
                )
            )
        assert posts[0]["status"] == "success" and posts[0]["content_type"] == "text"
        assert posts[2]["content_id"] > posts[1]["content_id"] > posts[0]["content_id"]
        content = await reader.rpc(
            "channel/content/list", {"channel_id": bid, "page": 1, "page_size": 2}
        )
        assert content["total"] == 3 and content["has_more"] is True
        assert [p["content"] for p in content["contents"]] == ["post 2", "post 1"]
        assert content["contents"][0]["title"] == "t2"
        assert content["contents"][0]["author_id"] == owner.user_id

        # the refusals
        err = await refused(reader, "channel/content/publish", {"channel_id": bid, "content": "x"})
        assert err.code == ErrorCode.PERMISSION_DENIED and err.status == Status.FORBIDDEN
        err = await refused(stranger, "channel/content/list", {"channel_id": bid})
        assert err.code == ErrorCode.PERMISSION_DENIED
        err = await refused(reader, "channel/broadcast/subscribe", {"channel_id": 999_999})
        assert err.code == ErrorCode.CHANNEL_NOT_FOUND and err.status == Status.NOT_FOUND
        err = await refused(owner, "channel/broadcast/create", {"name": "  "})
        assert err.code == ErrorCode.INVALID_PARAMS
        err = await refused(owner, "channel/broadcast/create", {})
        assert err.code == ErrorCode.MISSING_REQUIRED_PARAM
        err = await refused(reader, "channel/broadcast/list", {"page_size": 1000})
        assert err.code == ErrorCode.PARAM_OUT_OF_RANGE
        err = await refused(
            owner,
            "channel/content/publish",
            {"channel_id": bid, "content": "x", "content_type": "Not A Type"},
        )
        assert err.code == ErrorCode.INVALID_PARAMS
        # a broadcast channel is not a message channel
        err = await refused(owner, "channel/pin", {"channel_id": bid})
        assert err.code == ErrorCode.CHANNEL_NOT_FOUND
        for c in (owner, reader, stranger):
            await c.close()

    run(main())


def test_channels_state_survives_a_restart(tmp_path: pathlib.Path) -> None:
    data = str(tmp_path / "data")
    first = ServerThread(data_dir=data).start()
    state: dict[str, Any] = {}

    async def before() -> None:
        alice = await user(first.port, "alice")
        bob = await user(first.port, "bob")
        dm = (await alice.rpc("channel/direct/get_or_create", {"target_user_id": bob.user_id}))[
            "channel_id"
        ]
        await alice.rpc("channel/pin", {"channel_id": dm})
        await alice.rpc("channel/mute", {"channel_id": dm})
        bid = (await alice.rpc("channel/broadcast/create", {"name": "N"}))["channel_id"]
        await bob.rpc("channel/broadcast/subscribe", {"channel_id": bid})
        await alice.rpc("channel/content/publish", {"channel_id": bid, "content": "kept"})
        state.update(
            dm=dm,
            bid=bid,
            alice=(alice.token, alice.user_id, alice.device_id),
            bob=(bob.token, bob.user_id, bob.device_id),
        )
        await alice.close()
        await bob.close()

    run(before())
    first.stop()
    second = ServerThread(data_dir=data).start()
    try:

        async def after() -> None:
            alice = await device(second.port, state["alice"][0], state["alice"][2])
            bob = await device(second.port, state["bob"][0], state["bob"][2])
            page = await alice.rpc("entity/sync_entities", {"entity_type": "channel"})
            item = next(i for i in page["items"] if i["entity_id"] == str(state["dm"]))
            assert (item["payload"]["top"], item["payload"]["mute"]) == (1, 1)
            again = await alice.rpc(
                "channel/direct/get_or_create", {"target_user_id": state["bob"][1]}
            )
            assert again == {"channel_id": state["dm"], "created": False}
            content = await bob.rpc("channel/content/list", {"channel_id": state["bid"]})
            assert [p["content"] for p in content["contents"]] == ["kept"]
            listed = await bob.rpc("channel/broadcast/list", {})
            assert listed["channels"][0]["subscribed"] is True
            # a new channel does not take the broadcast channel's id
            g = await alice.rpc("group/group/create", {"name": "g"})
            assert g["group_id"] not in (state["dm"], state["bid"])
            await alice.close()
            await bob.close()

        run(after())
    finally:
        second.stop()

"""Account routes over TCP (issue 12): register's fixes (duplicate phone and email, Unicode
usernames) and welcome message, user detail, share card, update, profile, search, privacy,
settings, and QR codes with expiry and usage limits (the expiry with the harness's clock)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from conftest import ServerThread, run, user

from privchat_tcp.client import Client
from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.harness import Harness
from privchat_tcp.service.model import SYSTEM_USER_ID
from privchat_tcp.service.social import PRIVACY_FLAGS
from privchat_tcp.wire.commands import Cmd


async def refused(call: Awaitable[Any]) -> ServiceError:
    try:
        await call
    except ServiceError as exc:
        return exc
    raise AssertionError("the request was accepted")


async def registered(port: int, name: str, password: str | None = None, **extra: Any) -> Client:
    client = await Client.connect("127.0.0.1", port)
    await client.register(name, password or "password-" + name, None, **extra)
    await client.login()
    await client.ready()
    return client


# ---- register ------------------------------------------------------------------------------
def test_register_refuses_a_taken_phone_or_email_by_name(server: ServerThread) -> None:
    async def main() -> None:
        alice = await registered(server.port, "alice", phone="+15550100", email="a@example.org")
        other = await Client.connect("127.0.0.1", server.port)
        phone = await refused(other.register("bob", "password-bob", phone="+15550100"))
        assert phone.code == ErrorCode.INVALID_PARAMS and phone.status == Status.BAD_REQUEST
        assert "phone" in phone.message and "username" not in phone.message
        email = await refused(other.register("bob", "password-bob", email="A@example.org"))
        assert email.code == ErrorCode.INVALID_PARAMS
        assert "email" in email.message and "username" not in email.message
        name = await refused(other.register("ALICE", "password-bob"))
        assert name.code == ErrorCode.INVALID_PARAMS and "username" in name.message
        bad = await refused(other.register("bob", "password-bob", phone="12ab"))
        assert bad.code == ErrorCode.INVALID_PARAMS
        # none of them created an account: bob is still free
        reply = await other.register("bob", "password-bob", phone="+15550101")
        assert reply["success"] is True and reply["user_id"] == alice.user_id + 1
        await alice.close()
        await other.close()

    run(main())


def test_usernames_of_any_script_register_and_log_in(server: ServerThread) -> None:
    async def main() -> None:
        for name in ("张三丰", "Ünïcödé", "пользователь", "user_名字.1"):
            client = await Client.connect("127.0.0.1", server.port)
            reply = await client.register(name, "secret-" + name)
            assert reply["success"] is True
            again = await Client.connect("127.0.0.1", server.port)
            login = await again.password_login(name.upper(), "secret-" + name)
            assert login["user_id"] == reply["user_id"]
            await again.login()
            detail = await again.rpc("account/user/detail", {"target_user_id": reply["user_id"]})
            assert detail["username"] == name
            await client.close()
            await again.close()
        # NFC: the decomposed spelling of a registered name is the same name
        decomposed = await Client.connect("127.0.0.1", server.port)
        taken = await refused(decomposed.register("U\u0308nïcödé", "secret-x"))
        assert taken.code == ErrorCode.INVALID_PARAMS and "username" in taken.message
        for bad in ("a@b", "two words", "ab", "x" * 33):
            err = await refused(decomposed.register(bad, "secret-x"))
            assert err.code == ErrorCode.INVALID_PARAMS, bad
        await decomposed.close()

    run(main())


def test_register_sends_the_welcome_message(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(welcome_message="Welcome to the test server")

    async def main() -> None:
        alice = await user(srv.port, "alice")
        # the system channel is an ordinary direct channel of the pair (1, alice)
        channels = await alice.rpc("entity/sync_entities", {"entity_type": "channel"})
        (item,) = channels["items"]
        channel_id = int(item["entity_id"])
        diff = await alice.pull(channel_id, 0, 10)
        (msg,) = diff.messages
        assert msg.from_uid == SYSTEM_USER_ID and msg.message_type == 5
        assert json.loads(msg.payload) == {"content": "Welcome to the test server"}
        # and READY pushed it to the new device
        push = await alice.next_push(timeout=10)
        assert push.command == Cmd.MPS
        assert push.message.server_message_id == msg.server_message_id
        await alice.close()

    run(main())


# ---- users and profiles ----------------------------------------------------------------------
def test_user_detail_update_and_profile(server: ServerThread) -> None:
    async def main() -> None:
        alice = await registered(server.port, "alice", phone="+15550100", email="a@example.org")
        bob = await user(server.port, "bob")
        detail = await bob.rpc(
            "account/user/detail",
            {"target_user_id": alice.user_id, "source": "search", "source_id": "7"},
        )
        assert detail == {
            "user_id": alice.user_id,
            "username": "alice",
            "nickname": "alice",
            "user_type": 0,
            "is_friend": False,
            "can_send_message": True,
            "source_type": "search",
            "source_id": "7",
        }  # no phone or email for a non-friend
        own = await alice.rpc("account/user/detail", {"target_user_id": alice.user_id})
        assert own["phone"] == "+15550100" and own["email"] == "a@example.org"

        updated = await alice.rpc(
            "account/user/update",
            {"display_name": "Alice", "avatar_url": "https://img.example/a.png", "bio": "hello"},
        )
        assert updated["status"] == "success" and updated["action"] == "update"
        assert updated["timestamp"].endswith("Z")
        detail = await bob.rpc("account/user/detail", {"target_user_id": alice.user_id})
        assert detail["nickname"] == "Alice"
        assert detail["avatar_url"] == "https://img.example/a.png"
        profile = await alice.rpc(
            "account/profile/update", {"bio": "two\nlines", "extra_fields": {"city": "Paris"}}
        )
        assert profile["status"] == "success"
        got = await alice.rpc("account/profile/get", {})
        assert got["status"] == "success" and got["action"] == "get"
        assert got["display_name"] == "Alice" and got["bio"] == "two\nlines"
        assert got["extra_fields"] == {"city": "Paris"} and got["phone"] == "+15550100"
        # the registration and every change bumped alice's entity in the views that see her
        # (her own: the per-viewer family entity/sync_entities reads); bob sees her in none
        store = server.server.store  # type: ignore[union-attr]
        own_family = server.call(lambda: store.entities_since(f"user:{alice.user_id}", 0, 10))
        assert [e[0] for e in own_family] == [str(alice.user_id)]
        mine = await alice.rpc("entity/sync_entities", {"entity_type": "user"})
        [me] = mine["items"]
        assert me["payload"]["nickname"] == "Alice" and me["version"] == own_family[0][1]
        theirs = await bob.rpc("entity/sync_entities", {"entity_type": "user"})
        assert str(alice.user_id) not in {i["entity_id"] for i in theirs["items"]}

        # refusals
        empty = await refused(alice.rpc("account/user/update", {"display_name": "  "}))
        assert empty.code == 20205 and empty.status == Status.BAD_REQUEST
        typed = await refused(alice.rpc("account/profile/update", {"extra_fields": {"k": 1}}))
        assert typed.code == ErrorCode.INVALID_PARAM_TYPE
        many = {f"k{i}": "v" for i in range(33)}
        too_many = await refused(alice.rpc("account/profile/update", {"extra_fields": many}))
        assert too_many.code == ErrorCode.PARAM_OUT_OF_RANGE
        unknown = await refused(bob.rpc("account/user/detail", {"target_user_id": 55}))
        assert unknown.code == ErrorCode.USER_NOT_FOUND
        source = await refused(
            bob.rpc("account/user/detail", {"target_user_id": alice.user_id, "source": "x"})
        )
        assert source.code == ErrorCode.INVALID_PARAMS
        # who blocked the viewer is not shown to them
        await alice.rpc("contact/blacklist/add", {"blocked_user_id": bob.user_id})
        hidden = await refused(bob.rpc("account/user/detail", {"target_user_id": alice.user_id}))
        assert hidden.code == ErrorCode.USER_NOT_FOUND
        await alice.close()
        await bob.close()

    run(main())


def test_search_by_username_email_and_phone(server: ServerThread) -> None:
    async def main() -> None:
        alice = await registered(server.port, "alice", phone="+15550100", email="a@example.org")
        bob = await user(server.port, "bob")
        for query in ("alice", " ALICE ", "a@example.org", "+15550100"):
            found = await bob.rpc("account/search/query", {"query": query})
            assert found["total"] == 1 and found["query"] == query, query
            (item,) = found["users"]
            assert item["user_id"] == alice.user_id and item["username"] == "alice"
            assert item["nickname"] == "alice" and item["user_type"] == 0
            assert item["is_friend"] is False and item["can_send_message"] is True
            assert isinstance(item["search_session_id"], int) and item["search_session_id"] > 0
        none = await bob.rpc("account/search/query", {"query": "nobody", "page_size": 5})
        assert none == {"users": [], "total": 0, "query": "nobody"}
        await alice.rpc("account/privacy/update", {"allow_search_by_email": False})
        assert (await bob.rpc("account/search/query", {"query": "a@example.org"}))["total"] == 0
        assert (await bob.rpc("account/search/query", {"query": "alice"}))["total"] == 1
        empty = await refused(bob.rpc("account/search/query", {"query": "   "}))
        assert empty.code == ErrorCode.INVALID_PARAMS
        size = await refused(bob.rpc("account/search/query", {"query": "a", "page_size": 1000}))
        assert size.code == ErrorCode.PARAM_OUT_OF_RANGE
        await alice.close()
        await bob.close()

    run(main())


def test_privacy_get_and_update(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        got = await alice.rpc("account/privacy/get", {})
        assert got["user_id"] == alice.user_id and got["updated_at"].endswith("Z")
        assert {k: got[k] for k in PRIVACY_FLAGS} == {k: True for k in PRIVACY_FLAGS}
        assert set(got) == {"user_id", "updated_at", *PRIVACY_FLAGS}
        reply = await alice.rpc(
            "account/privacy/update",
            {"allow_view_by_non_friend": False, "allow_search_by_phone": False},
        )
        assert reply["success"] is True and reply["user_id"] == alice.user_id
        assert reply["allow_view_by_non_friend"] is False
        assert reply["allow_search_by_phone"] is False and reply["allow_add_by_group"] is True
        again = await alice.rpc("account/privacy/get", {})
        assert again["allow_view_by_non_friend"] is False and again["allow_search_by_qrcode"]
        typed = await refused(alice.rpc("account/privacy/update", {"allow_add_by_group": "no"}))
        assert typed.code == ErrorCode.INVALID_PARAM_TYPE and typed.status == Status.BAD_REQUEST
        unknown = await refused(alice.rpc("account/privacy/update", {"allow_everything": True}))
        assert unknown.code == ErrorCode.INVALID_PARAMS and "allow_everything" in unknown.message
        await alice.close()

    run(main())


def test_settings_update(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        reply = await alice.rpc(
            "account/settings/update", {"settings": {"theme": "dark", "notify": {"sound": True}}}
        )
        assert reply["success"] is True and reply["updated_count"] == 2
        assert reply["settings"] == {"theme": "dark", "notify": {"sound": True}}
        reply = await alice.rpc("account/settings/update", {"settings": {"theme": None}})
        assert reply["settings"] == {"notify": {"sound": True}}
        store = server.server.store  # type: ignore[union-attr]
        family = f"user_settings:{alice.user_id}"
        items = server.call(lambda: store.entities_since(family, 0, 10))
        assert [(e[0], e[2]) for e in items] == [("notify", False), ("theme", True)]
        bad_key = await refused(alice.rpc("account/settings/update", {"settings": {"a b": 1}}))
        assert bad_key.code == ErrorCode.INVALID_PARAMS
        typed = await refused(alice.rpc("account/settings/update", {"settings": [1]}))
        assert typed.code == ErrorCode.INVALID_PARAM_TYPE
        big = await refused(alice.rpc("account/settings/update", {"settings": {"k": "x" * 5000}}))
        assert big.code == ErrorCode.PARAM_OUT_OF_RANGE
        await alice.close()

    run(main())


def test_share_card_is_a_source_for_its_receiver_only(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        carol = await user(server.port, "carol")
        card = await alice.rpc(
            "account/user/share_card",
            {"target_user_id": alice.user_id, "receiver_id": bob.user_id, "expire_seconds": 600},
        )
        assert card["target_user_id"] == alice.user_id and card["receiver_id"] == bob.user_id
        assert card["share_id"] and card["share_key"] and card["expire_at"].endswith("Z")
        assert card["share_url"].startswith("privchat://user/card?share_id=")
        body = {
            "target_user_id": alice.user_id,
            "source": "card_share",
            "source_id": card["share_id"],
        }
        wrong = await refused(carol.rpc("contact/friend/apply", body))
        assert wrong.code == ErrorCode.PERMISSION_DENIED
        assert (await bob.rpc("contact/friend/apply", body))["status"] == "pending"
        # a card of someone who is not your friend is not yours to share
        stranger = await refused(
            bob.rpc(
                "account/user/share_card",
                {"target_user_id": carol.user_id, "receiver_id": alice.user_id},
            )
        )
        assert stranger.code == ErrorCode.PERMISSION_DENIED
        for c in (alice, bob, carol):
            await c.close()

    run(main())


# ---- QR codes --------------------------------------------------------------------------------
def test_qrcodes_generate_resolve_limit_revoke_list_refresh(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        code = await alice.rpc(
            "qrcode/generate",
            {
                "qr_type": "user",
                "target_id": str(alice.user_id),
                "max_usage": 1,
                "expire_seconds": 3600,
            },
        )
        assert code["qr_type"] == "user" and code["target_id"] == alice.user_id
        assert code["max_usage"] == 1 and code["used_count"] == 0
        assert code["expire_at"].endswith("Z") and code["created_at"].endswith("Z")
        assert code["qr_code"] == (
            f"privchat://user/get?qrkey={code['qr_key']}&token="
            + code["qr_code"].split("&token=")[1]
        )
        token = code["qr_code"].split("&token=")[1]
        wrong = await refused(bob.rpc("qrcode/resolve", {"qr_key": code["qr_key"], "token": "x"}))
        assert wrong.code == ErrorCode.QRCODE_NOT_FOUND and wrong.status == Status.NOT_FOUND
        resolved = await bob.rpc("qrcode/resolve", {"qr_key": code["qr_key"], "token": token})
        assert resolved["qr_type"] == "user" and resolved["target_id"] == alice.user_id
        assert resolved["action"] == "add_friend" and resolved["used_count"] == 1
        assert resolved["data"]["user_id"] == alice.user_id
        used = await refused(bob.rpc("qrcode/resolve", {"qr_key": code["qr_key"]}))
        assert used.code == ErrorCode.QRCODE_USED and used.status == Status.CONFLICT

        # a group code needs membership; another user's code is not yours to make
        group = await alice.rpc("group/group/create", {"name": "g"})
        outsider = await refused(
            bob.rpc("qrcode/generate", {"qr_type": "group", "target_id": group["group_id"]})
        )
        assert outsider.code == ErrorCode.NOT_GROUP_MEMBER
        gcode = await alice.rpc(
            "qrcode/generate",
            {"qr_type": "group", "target_id": group["group_id"], "metadata": {"from": "poster"}},
        )
        g = await bob.rpc("qrcode/resolve", {"qr_key": gcode["qr_key"]})
        assert g["action"] == "join_group" and g["data"]["name"] == "g"
        assert g["max_usage"] is None and g["expire_at"] is None
        other = await refused(
            bob.rpc("qrcode/generate", {"qr_type": "user", "target_id": alice.user_id})
        )
        assert other.code == ErrorCode.PERMISSION_DENIED
        kind = await refused(alice.rpc("qrcode/generate", {"qr_type": "x", "target_id": 1}))
        assert kind.code == ErrorCode.INVALID_PARAMS

        revoked = await alice.rpc("qrcode/revoke", {"qr_key": gcode["qr_key"]})
        assert revoked["success"] is True and revoked["qr_key"] == gcode["qr_key"]
        gone = await refused(bob.rpc("qrcode/resolve", {"qr_key": gcode["qr_key"]}))
        assert gone.code == ErrorCode.QRCODE_REVOKED and gone.status == Status.CONFLICT
        not_mine = await refused(bob.rpc("qrcode/revoke", {"qr_key": code["qr_key"]}))
        assert not_mine.code == ErrorCode.QRCODE_NOT_FOUND

        listed = await alice.rpc("qrcode/list", {"creator_id": str(alice.user_id)})
        assert [e["qr_key"] for e in listed["qr_keys"]] == [code["qr_key"]]
        assert listed["total"] == 1 and listed["qr_keys"][0]["used_count"] == 1
        assert listed["qr_keys"][0]["target_id"] == str(alice.user_id)
        everything = await alice.rpc("qrcode/list", {"include_revoked": True})
        assert [e["revoked"] for e in everything["qr_keys"]] == [False, True]
        others = await refused(bob.rpc("qrcode/list", {"creator_id": alice.user_id}))
        assert others.code == ErrorCode.PERMISSION_DENIED

        refreshed = await alice.rpc(
            "qrcode/refresh",
            {"qr_type": "group", "target_id": group["group_id"], "creator_id": alice.user_id},
        )
        assert refreshed["old_qr_key"] is None  # the only group code was revoked already
        assert refreshed["new_qr_code"].startswith("privchat://group/get?qrkey=")
        fresh = await bob.rpc("qrcode/resolve", {"qr_key": refreshed["new_qr_key"]})
        assert fresh["data"]["group_id"] == group["group_id"]
        await alice.close()
        await bob.close()

    run(main())


def test_user_qrcodes_and_search_by_qrcode(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        made = await alice.rpc("user/qrcode/generate", {})
        assert made["qr_code"].startswith("privchat://user/get?qrkey=" + made["qr_key"])
        got = await alice.rpc("user/qrcode/get", {"user_id": str(alice.user_id)})
        assert got["qr_key"] == made["qr_key"] and got["used_count"] == 0
        found = await bob.rpc("account/search/by_qrcode", {"qr_key": made["qr_key"]})
        assert found["total"] == 1 and found["users"][0]["user_id"] == alice.user_id
        assert found["users"][0]["search_session_id"] > 0
        assert (await alice.rpc("user/qrcode/get", {}))["used_count"] == 1
        refreshed = await alice.rpc("user/qrcode/refresh", {})
        assert refreshed["old_qr_key"] == made["qr_key"] and refreshed["revoked_at"]
        old = await refused(bob.rpc("account/search/by_qrcode", {"qr_key": made["qr_key"]}))
        assert old.code == ErrorCode.QRCODE_REVOKED
        assert (await alice.rpc("user/qrcode/get", {}))["qr_key"] == refreshed["new_qr_key"]
        # a new generate replaces the current code
        newer = await alice.rpc("user/qrcode/generate", {"expire_seconds": 60})
        assert (await alice.rpc("user/qrcode/get", {}))["qr_key"] == newer["qr_key"]
        # the flag closes search by QR code
        await alice.rpc("account/privacy/update", {"allow_search_by_qrcode": False})
        closed = await refused(bob.rpc("account/search/by_qrcode", {"qr_key": newer["qr_key"]}))
        assert closed.code == ErrorCode.QRCODE_NOT_FOUND
        others = await refused(bob.rpc("user/qrcode/get", {"user_id": alice.user_id}))
        assert others.code == ErrorCode.PERMISSION_DENIED
        unknown = await refused(bob.rpc("account/search/by_qrcode", {"qr_key": "nope"}))
        assert unknown.code == ErrorCode.QRCODE_NOT_FOUND
        await alice.close()
        await bob.close()

    run(main())


def test_qrcode_quota(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(max_qrcodes_per_user=2)

    async def main() -> None:
        alice = await user(srv.port, "alice")
        body = {"qr_type": "feature", "target_id": 5}
        first = await alice.rpc("qrcode/generate", body)
        await alice.rpc("qrcode/generate", body)
        full = await refused(alice.rpc("qrcode/generate", body))
        assert full.code == ErrorCode.QRCODE_LIMIT_EXCEEDED and full.status == Status.CONFLICT
        await alice.rpc("qrcode/revoke", {"qr_key": first["qr_key"]})
        assert (await alice.rpc("qrcode/generate", body))["qr_type"] == "feature"
        await alice.close()

    run(main())


def test_qrcodes_expire() -> None:
    now = [time.time_ns() // 1_000_000]
    h = Harness(clock=lambda: now[0])
    a, b = h.user("a_user"), h.user("b_user")
    da, db = h.login(a), h.login(b)
    code = da.rpc(
        "qrcode/generate", {"qr_type": "user", "target_id": a.user_id, "expire_seconds": 60}
    )
    assert db.rpc("qrcode/resolve", {"qr_key": code["qr_key"]})["used_count"] == 1
    now[0] += 60_000
    try:
        db.rpc("qrcode/resolve", {"qr_key": code["qr_key"]})
    except ServiceError as exc:
        assert exc.code == ErrorCode.QRCODE_EXPIRED and exc.status == Status.CONFLICT
    else:
        raise AssertionError("an expired code resolved")
    # a search session expires too: it no longer serves as a friend request's source
    sid = db.rpc("account/search/query", {"query": "a_user"})["users"][0]["search_session_id"]
    now[0] += h.settings.search_session_ttl * 1000 + 1
    try:
        db.rpc(
            "contact/friend/apply",
            {"target_user_id": a.user_id, "source": "search", "source_id": str(sid)},
        )
    except ServiceError as exc:
        assert exc.code == ErrorCode.INVALID_PARAMS
    else:
        raise AssertionError("an expired search session was accepted")


def test_the_account_contact_and_qrcode_routes_are_served() -> None:
    from privchat_tcp.rpc.routes import all_routes

    names = set(all_routes().names())
    mine = {
        *(
            f"account/{r}"
            for r in (
                "user/detail",
                "user/share_card",
                "user/update",
                "profile/get",
                "profile/update",
                "search/query",
                "search/by_qrcode",
                "privacy/get",
                "privacy/update",
                "settings/update",
            )
        ),
        *(
            f"contact/friend/{r}"
            for r in ("apply", "accept", "reject", "remove", "pending", "check")
        ),
        *(f"contact/blacklist/{r}" for r in ("add", "remove", "list", "check")),
        *(f"qrcode/{r}" for r in ("generate", "resolve", "refresh", "revoke", "list")),
        *(f"user/qrcode/{r}" for r in ("generate", "refresh", "get")),
    }
    assert len(mine) == 28 and mine <= names, mine - names

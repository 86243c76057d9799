"""Contacts over TCP (issue 12): friend requests and their notices, friendships, blacklists
enforced on sends both ways, the privacy rule of messages from non-friends, the sources a
request names; the blacklist and privacy matrices in memory; persistence across a restart."""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Awaitable
from typing import Any

import pytest
from conftest import ServerThread, run, user

from privchat_tcp.client import Client, Push
from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.harness import Device, Harness
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.service.model import SYSTEM_USER_ID
from privchat_tcp.wire.commands import Cmd


async def refused(call: Awaitable[Any]) -> ServiceError:
    try:
        await call
    except ServiceError as exc:
        return exc
    raise AssertionError("the request was accepted")


async def registered(port: int, name: str, **extra: Any) -> Client:
    """``conftest.user`` with more register fields (``phone``, ``email``)."""
    client = await Client.connect("127.0.0.1", port)
    await client.register(name, "password-" + name, None, **extra)
    await client.login()
    await client.ready()
    return client


async def notice(client: Client, kind: str) -> dict[str, Any]:
    """The next notice of ``notification_type`` ``kind`` the client is pushed (from user 1);
    ``channel_id`` is added: the client's system channel."""
    while True:
        push: Push = await client.next_push(timeout=10)
        if push.command != Cmd.MPS:
            continue
        msg = push.message
        if msg.from_uid != SYSTEM_USER_ID:
            continue
        payload = json.loads(msg.payload)
        if payload.get("metadata", {}).get("notification_type") == kind:
            assert payload["message_type"] == "notification"
            assert msg.message_type == 5  # System
            payload["channel_id"] = msg.channel_id
            return payload  # type: ignore[no-any-return]


async def befriend(a: Client, b: Client) -> int:
    await a.rpc("contact/friend/apply", {"target_user_id": b.user_id})
    channel_id: int = await b.rpc("contact/friend/accept", {"from_user_id": a.user_id})
    return channel_id


def test_a_friend_request_is_noticed_accepted_and_opens_the_direct_channel(
    server: ServerThread,
) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        found = await alice.rpc("account/search/query", {"query": "BOB"})
        assert found["total"] == 1 and found["query"] == "BOB"
        sid = found["users"][0]["search_session_id"]
        reply = await alice.rpc(
            "contact/friend/apply",
            {
                "target_user_id": bob.user_id,
                "message": "hi bob",
                "source": "search",
                "source_id": str(sid),
            },
        )
        assert reply["user_id"] == bob.user_id and reply["username"] == "bob"
        assert reply["status"] == "pending" and reply["message"] == "hi bob"
        assert reply["added_at"].endswith("Z")
        note = await notice(bob, "friend_request_sent")
        meta = note["metadata"]
        assert meta["from_user_id"] == alice.user_id and meta["to_user_id"] == bob.user_id
        assert meta["message"] == "hi bob" and meta["type"] == "FriendRequestSent"

        pending = await bob.rpc("contact/friend/pending", {})
        assert pending["total"] == 1
        item = pending["requests"][0]
        assert item["from_user_id"] == alice.user_id and item["message"] == "hi bob"
        assert item["user"]["username"] == "alice" and item["created_at"].endswith("Z")
        assert await alice.rpc("contact/friend/check", {"friend_id": bob.user_id}) == {
            "is_friend": False,
            "status": "pending",
        }

        channel_id = await bob.rpc("contact/friend/accept", {"from_user_id": alice.user_id})
        assert isinstance(channel_id, int) and channel_id > 0
        accepted = await notice(alice, "friend_request_accepted")
        assert accepted["metadata"]["user_id"] == bob.user_id
        assert accepted["metadata"]["channel_id"] == channel_id
        assert await alice.rpc("contact/friend/check", {"friend_id": bob.user_id}) == {
            "is_friend": True,
            "status": "accepted",
        }
        assert (await bob.rpc("contact/friend/pending", {}))["total"] == 0
        # the channel accept returned is the pair's direct channel
        direct = await alice.rpc("channel/direct/get_or_create", {"target_user_id": bob.user_id})
        assert direct == {"channel_id": channel_id, "created": False}
        sent = await alice.send(channel_id, "hello friend")
        assert sent.reason_code == 0

        # refusals
        again = await refused(bob.rpc("contact/friend/accept", {"from_user_id": alice.user_id}))
        assert again.code == ErrorCode.FRIEND_REQUEST_EXPIRED and again.status == Status.NOT_FOUND
        dup = await refused(alice.rpc("contact/friend/apply", {"target_user_id": bob.user_id}))
        assert dup.code == ErrorCode.ALREADY_FRIENDS and dup.status == Status.CONFLICT
        me = await refused(alice.rpc("contact/friend/apply", {"target_user_id": alice.user_id}))
        assert me.code == ErrorCode.INVALID_PARAMS
        nobody = await refused(alice.rpc("contact/friend/apply", {"target_user_id": 99}))
        assert nobody.code == ErrorCode.USER_NOT_FOUND and nobody.status == Status.NOT_FOUND
        system = await refused(
            alice.rpc("contact/friend/apply", {"target_user_id": SYSTEM_USER_ID})
        )
        assert system.code == ErrorCode.USER_NOT_FOUND
        typo = await refused(
            alice.rpc("contact/friend/apply", {"target_user_id": bob.user_id, "msg": "x"})
        )
        assert typo.code == ErrorCode.INVALID_PARAMS and "msg" in typo.message
        await alice.close()
        await bob.close()

    run(main())


def test_reject_and_remove(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        await alice.rpc("contact/friend/apply", {"target_user_id": bob.user_id, "message": "?"})
        assert (
            await bob.rpc(
                "contact/friend/reject",
                {"from_user_id": alice.user_id, "target_user_id": bob.user_id},
            )
            is True
        )
        rejected = await notice(alice, "friend_request_rejected")
        assert rejected["metadata"]["user_id"] == bob.user_id
        assert (await bob.rpc("contact/friend/pending", {}))["requests"] == []
        gone = await refused(bob.rpc("contact/friend/reject", {"from_user_id": alice.user_id}))
        assert gone.code == ErrorCode.FRIEND_REQUEST_EXPIRED
        other = await refused(
            bob.rpc(
                "contact/friend/reject",
                {"from_user_id": alice.user_id, "target_user_id": alice.user_id},
            )
        )
        assert other.code == ErrorCode.PERMISSION_DENIED and other.status == Status.FORBIDDEN

        not_friends = await refused(alice.rpc("contact/friend/remove", {"friend_id": bob.user_id}))
        assert not_friends.code == ErrorCode.FRIEND_NOT_FOUND
        assert not_friends.status == Status.NOT_FOUND
        await befriend(alice, bob)
        assert await alice.rpc("contact/friend/remove", {"friend_id": bob.user_id}) is True
        assert await bob.rpc("contact/friend/check", {"friend_id": alice.user_id}) == {
            "is_friend": False,
            "status": None,
        }
        unknown = await refused(alice.rpc("contact/friend/check", {"friend_id": 98}))
        assert unknown.code == ErrorCode.USER_NOT_FOUND
        # the friend entity family of each has a tombstone for the other
        store = server.server.store  # type: ignore[union-attr]
        items = server.call(lambda: store.entities_since(f"friend:{alice.user_id}", 0, 10))
        assert items[-1][0] == str(bob.user_id) and items[-1][2] is True
        await alice.close()
        await bob.close()

    run(main())


def test_the_sources_a_request_names_are_checked(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await registered(server.port, "bob", phone="+15550100")
        carol = await user(server.port, "carol")
        apply = alice.rpc

        bad = await refused(
            apply(
                "contact/friend/apply",
                {"target_user_id": bob.user_id, "source": "search", "source_id": "12345"},
            )
        )
        assert bad.code == ErrorCode.INVALID_PARAMS
        # a search session proves who searched whom: carol's does not serve alice
        found = await carol.rpc("account/search/query", {"query": "bob"})
        sid = str(found["users"][0]["search_session_id"])
        stolen = await refused(
            apply(
                "contact/friend/apply",
                {"target_user_id": bob.user_id, "source": "search", "source_id": sid},
            )
        )
        assert stolen.code == ErrorCode.INVALID_PARAMS
        unknown = await refused(
            apply("contact/friend/apply", {"target_user_id": bob.user_id, "source": "fax"})
        )
        assert unknown.code == ErrorCode.INVALID_PARAMS

        # group: both must be members, and the target must allow it
        group = await carol.rpc("group/group/create", {"name": "g", "member_ids": [bob.user_id]})
        gid = str(group["group_id"])
        outsider = await refused(
            apply(
                "contact/friend/apply",
                {"target_user_id": bob.user_id, "source": "group", "source_id": gid},
            )
        )
        assert outsider.code == ErrorCode.PERMISSION_DENIED
        await carol.rpc("group/member/add", {"group_id": int(gid), "user_id": alice.user_id})
        await bob.rpc("account/privacy/update", {"allow_add_by_group": False})
        closed = await refused(
            apply(
                "contact/friend/apply",
                {"target_user_id": bob.user_id, "source": "group", "source_id": gid},
            )
        )
        assert closed.code == ErrorCode.GROUP_ADD_FRIEND_PERSONAL_DISABLED
        assert closed.status == Status.FORBIDDEN
        await bob.rpc("account/privacy/update", {"allow_add_by_group": True})
        ok = await apply(
            "contact/friend/apply",
            {"target_user_id": bob.user_id, "source": "group", "source_id": gid},
        )
        assert ok["status"] == "pending"

        # phone: the number must be the target's, and the target must allow it
        wrong = await refused(
            apply(
                "contact/friend/apply",
                {"target_user_id": carol.user_id, "source": "phone", "source_id": "+15550100"},
            )
        )
        assert wrong.code == ErrorCode.INVALID_PARAMS
        by_phone = await apply(
            "contact/friend/apply",
            {"target_user_id": bob.user_id, "source": "phone", "source_id": "+15550100"},
        )
        assert by_phone["status"] == "pending"

        # qrcode: a working user code of the target
        code = await carol.rpc("user/qrcode/get", {})
        by_qr = await apply(
            "contact/friend/apply",
            {"target_user_id": carol.user_id, "source": "qrcode", "source_id": code["qr_key"]},
        )
        assert by_qr["user_id"] == carol.user_id
        await carol.rpc("qrcode/revoke", {"qr_key": code["qr_key"]})
        revoked = await refused(
            apply(
                "contact/friend/apply",
                {"target_user_id": carol.user_id, "source": "qrcode", "source_id": code["qr_key"]},
            )
        )
        assert revoked.code == ErrorCode.INVALID_PARAMS
        for c in (alice, bob, carol):
            await c.close()

    run(main())


def test_the_blacklist_is_enforced_on_sends_both_ways(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        direct = await alice.rpc("channel/direct/get_or_create", {"target_user_id": bob.user_id})
        cid = direct["channel_id"]
        assert (await alice.send(cid, "before")).reason_code == 0

        assert await bob.rpc("contact/blacklist/add", {"blocked_user_id": alice.user_id}) is True
        assert await bob.rpc("contact/blacklist/check", {"target_user_id": alice.user_id}) == {
            "is_blocked": True
        }
        assert await alice.rpc("contact/blacklist/check", {"target_user_id": bob.user_id}) == {
            "is_blocked": False
        }
        listed = await bob.rpc("contact/blacklist/list", {"user_id": bob.user_id})
        assert listed["total"] == 1
        entry = listed["users"][0]
        assert entry["user_id"] == alice.user_id and entry["username"] == "alice"
        assert entry["nickname"] == "alice" and isinstance(entry["blocked_at"], int)

        # alice is blocked by bob: 20402 BlockedByUser, on MS and on sync/submit
        blocked = await refused(alice.send(cid, "after"))
        assert blocked.code == ErrorCode.BLOCKED_BY_USER and blocked.status == Status.FORBIDDEN
        submit = await refused(
            alice.rpc(
                "sync/submit",
                {
                    "local_message_id": 7,
                    "channel_id": cid,
                    "channel_type": 1,
                    "payload": {"content": "x"},
                },
            )
        )
        assert submit.code == ErrorCode.BLOCKED_BY_USER
        by_conversation = await refused(alice.send(text="x", to_user=bob.user_id))
        assert by_conversation.code == ErrorCode.BLOCKED_BY_USER
        # bob blocked alice: 20403 UserInBlacklist
        own = await refused(bob.send(cid, "to alice"))
        assert own.code == ErrorCode.USER_IN_BLACKLIST and own.status == Status.FORBIDDEN
        # nor friend requests, either way
        ask = await refused(alice.rpc("contact/friend/apply", {"target_user_id": bob.user_id}))
        assert ask.code == ErrorCode.BLOCKED_BY_USER
        # only bob's own list is his to change
        other = await refused(
            bob.rpc(
                "contact/blacklist/add",
                {"user_id": alice.user_id, "blocked_user_id": alice.user_id},
            )
        )
        assert other.code == ErrorCode.PERMISSION_DENIED
        me = await refused(bob.rpc("contact/blacklist/add", {"blocked_user_id": bob.user_id}))
        assert me.code == ErrorCode.INVALID_PARAMS
        nobody = await refused(bob.rpc("contact/blacklist/add", {"blocked_user_id": 97}))
        assert nobody.code == ErrorCode.USER_NOT_FOUND

        assert await bob.rpc("contact/blacklist/remove", {"blocked_user_id": alice.user_id})
        assert (await bob.rpc("contact/blacklist/list", {}))["users"] == []
        assert (await alice.send(cid, "again")).reason_code == 0
        assert (await bob.send(cid, "hi")).reason_code == 0
        await alice.close()
        await bob.close()

    run(main())


def test_messages_from_non_friends_follow_the_privacy_flag(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        cid = (await alice.rpc("channel/direct/get_or_create", {"target_user_id": bob.user_id}))[
            "channel_id"
        ]
        reply = await bob.rpc(
            "account/privacy/update", {"allow_receive_message_from_non_friend": False}
        )
        assert reply["allow_receive_message_from_non_friend"] is False
        closed = await refused(alice.send(cid, "hi stranger"))
        assert closed.code == ErrorCode.PERMISSION_DENIED and closed.status == Status.FORBIDDEN
        detail = await alice.rpc("account/user/detail", {"target_user_id": bob.user_id})
        assert detail["can_send_message"] is False and detail["is_friend"] is False
        # bob may still write to alice (her flag is open), and friends may write to bob
        assert (await bob.send(cid, "hi")).reason_code == 0
        await befriend(alice, bob)
        assert (await alice.send(cid, "now we are friends")).reason_code == 0
        # the system channel takes no messages
        note = await notice(alice, "friend_request_accepted")
        system = await refused(alice.send(note["channel_id"], "hi"))
        assert system.code == ErrorCode.PERMISSION_DENIED
        await alice.close()
        await bob.close()

    run(main())


def test_contacts_survive_a_restart() -> None:
    """With the SQLite store (the default): friends, requests, blacklist, privacy, settings,
    profile and QR codes are there after a restart."""
    data = tempfile.TemporaryDirectory(prefix="privchat-contacts-")
    ids: dict[str, Any] = {}

    async def first(port: int) -> None:
        alice = await user(port, "alice")
        bob = await user(port, "bob")
        carol = await user(port, "carol")
        ids.update(alice=alice.user_id, bob=bob.user_id, carol=carol.user_id)
        ids["channel"] = await befriend(alice, bob)
        await carol.rpc("contact/friend/apply", {"target_user_id": alice.user_id, "message": "m"})
        await carol.rpc("contact/friend/apply", {"target_user_id": bob.user_id})
        await alice.rpc("contact/blacklist/add", {"blocked_user_id": carol.user_id})
        await alice.rpc("account/privacy/update", {"allow_search_by_username": False})
        await alice.rpc("account/settings/update", {"settings": {"theme": "dark"}})
        await alice.rpc("account/profile/update", {"display_name": "Alice A", "bio": "hi"})
        code = await alice.rpc("qrcode/generate", {"qr_type": "user", "target_id": alice.user_id})
        ids["qr_key"] = code["qr_key"]
        for c in (alice, bob, carol):
            await c.close()

    async def second(port: int) -> None:
        alice = await Client.connect("127.0.0.1", port)
        await alice.password_login("alice", "password-alice", str(uuid.uuid4()))
        await alice.login()
        await alice.ready()
        bob = await Client.connect("127.0.0.1", port)
        await bob.password_login("bob", "password-bob", str(uuid.uuid4()))
        await bob.login()
        assert await alice.rpc("contact/friend/check", {"friend_id": ids["bob"]}) == {
            "is_friend": True,
            "status": "accepted",
        }
        listed = await alice.rpc("contact/blacklist/list", {})
        assert [u["user_id"] for u in listed["users"]] == [ids["carol"]]
        # blocking carol dropped her request to alice; her request to bob stays
        assert (await alice.rpc("contact/friend/pending", {}))["total"] == 0
        bobs = await bob.rpc("contact/friend/pending", {})
        assert [r["from_user_id"] for r in bobs["requests"]] == [ids["carol"]]
        privacy = await alice.rpc("account/privacy/get", {})
        assert privacy["allow_search_by_username"] is False
        assert privacy["allow_search_by_email"] is True
        profile = await alice.rpc("account/profile/get", {})
        assert profile["display_name"] == "Alice A" and profile["bio"] == "hi"
        codes = await alice.rpc("qrcode/list", {})
        assert [c["qr_key"] for c in codes["qr_keys"]] == [ids["qr_key"]]
        direct = await alice.rpc("channel/direct/get_or_create", {"target_user_id": ids["bob"]})
        assert direct["channel_id"] == ids["channel"]
        settings = await alice.rpc("account/settings/update", {"settings": {"lang": "en"}})
        assert settings["settings"] == {"theme": "dark", "lang": "en"}
        await alice.close()
        await bob.close()

    try:
        srv = ServerThread(data_dir=data.name).start()
        try:
            assert type(srv.server.store).__name__ == "SQLiteStore"  # type: ignore[union-attr]
            run(first(srv.port))
        finally:
            srv.stop()
        again = ServerThread(data_dir=data.name).start()
        try:
            run(second(again.port))
        finally:
            again.stop()
    finally:
        data.cleanup()


# ---- the matrices, in memory -----------------------------------------------------------------
def _send(dev: Device, channel_id: int) -> int:
    req = pb.SendMessageRequest(
        client_seq=1, channel_id=channel_id, payload=json.dumps({"content": "x"}).encode()
    )
    try:
        rec = dev.request(Cmd.MS, req.SerializeToString())
    except ServiceError as exc:
        return exc.code
    return pb.SendMessageResponse.FromString(rec.body).reason_code


@pytest.mark.parametrize(
    ("a_blocks_b", "b_blocks_a", "a_to_b", "b_to_a"),
    [
        (False, False, 0, 0),
        (True, False, ErrorCode.USER_IN_BLACKLIST, ErrorCode.BLOCKED_BY_USER),
        (False, True, ErrorCode.BLOCKED_BY_USER, ErrorCode.USER_IN_BLACKLIST),
        (True, True, ErrorCode.BLOCKED_BY_USER, ErrorCode.BLOCKED_BY_USER),
    ],
)
def test_blacklist_matrix(a_blocks_b: bool, b_blocks_a: bool, a_to_b: int, b_to_a: int) -> None:
    h = Harness()
    a, b = h.user("a_user"), h.user("b_user")
    da, db = h.login(a), h.login(b)
    cid = da.rpc("channel/direct/get_or_create", {"target_user_id": b.user_id})["channel_id"]
    if a_blocks_b:
        da.rpc("contact/blacklist/add", {"blocked_user_id": b.user_id})
    if b_blocks_a:
        db.rpc("contact/blacklist/add", {"blocked_user_id": a.user_id})
    assert _send(da, cid) == a_to_b
    assert _send(db, cid) == b_to_a


@pytest.mark.parametrize("friends", [False, True])
@pytest.mark.parametrize("open_flag", [False, True])
def test_privacy_matrix(friends: bool, open_flag: bool) -> None:
    h = Harness()
    a = h.user("a_user")
    b = h.core.services.accounts.create("b_user", "", "b", "+15550123", "b@example.org")
    da, db = h.login(a), h.login(b)
    if friends:
        da.rpc("contact/friend/apply", {"target_user_id": b.user_id})
        db.rpc("contact/friend/accept", {"from_user_id": a.user_id})
    flags = {
        "allow_receive_message_from_non_friend": open_flag,
        "allow_view_by_non_friend": open_flag,
        "allow_search_by_username": open_flag,
        "allow_search_by_email": open_flag,
        "allow_search_by_phone": open_flag,
    }
    db.rpc("account/privacy/update", flags)
    allowed = friends or open_flag
    try:  # a stranger who takes no messages from non-friends: no channel to them either
        cid = da.rpc("channel/direct/get_or_create", {"target_user_id": b.user_id})["channel_id"]
    except ServiceError as exc:
        assert not allowed and exc.code == ErrorCode.PERMISSION_DENIED
    else:
        assert _send(da, cid) == (0 if allowed else ErrorCode.PERMISSION_DENIED)
    for query in ("b_user", "B@EXAMPLE.ORG", "+15550123"):
        found = da.rpc("account/search/query", {"query": query})
        assert [u["user_id"] for u in found["users"]] == ([b.user_id] if allowed else []), query
    try:
        detail = da.rpc("account/user/detail", {"target_user_id": b.user_id})
    except ServiceError as exc:
        assert not allowed and exc.code == ErrorCode.PERMISSION_DENIED
    else:
        assert allowed and detail["user_id"] == b.user_id
        assert ("phone" in detail) == friends  # contact details only to friends
    # the user themself is never hidden from themself
    assert db.rpc("account/search/query", {"query": "b_user"})["total"] == 1
    # the send rule never blocks b writing to a (a's flags are open)
    cid = db.rpc("channel/direct/get_or_create", {"target_user_id": a.user_id})["channel_id"]
    assert _send(db, cid) == 0


def test_add_by_group_is_not_opened_by_friendship() -> None:
    h = Harness()
    services = h.core.services
    a, b = h.user("a_user"), h.user("b_user")
    services.privacy.update(b.user_id, {"allow_add_by_group": False})
    services.social._social.add_friends(a.user_id, b.user_id, 1)  # noqa: SLF001
    assert not services.privacy.allows(a.user_id, b.user_id, "allow_add_by_group")
    assert services.privacy.allows(a.user_id, b.user_id, "allow_view_by_non_friend")
    assert services.privacy.allows(b.user_id, b.user_id, "allow_add_by_group")

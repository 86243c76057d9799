"""Groups over TCP (issue 12): mutes, roles, settings, invitations, join approval, QR codes, the
end of a group, the notices members get, what a new member sees, and what survives a restart;
the role matrix through the in-memory harness as well."""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from collections.abc import Awaitable
from typing import Any

import pytest
from conftest import ServerThread, device, run
from conftest import user as _register

from privchat_tcp.client import Client, Push
from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.harness import Device, Harness
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.service.entities import group_family, member_family
from privchat_tcp.service.groups import (
    QR_CODE_EXPIRED,
    QR_CODE_LIMIT_EXCEEDED,
    QR_CODE_NOT_FOUND,
)
from privchat_tcp.service.model import SYSTEM_MESSAGE, SYSTEM_USER_ID
from privchat_tcp.wire.commands import Cmd


async def refused(call: Awaitable[Any], code: int, status: int | None = None) -> ServiceError:
    """The error ``call`` fails with, which must have ``code`` (and ``status``)."""
    try:
        await call
    except ServiceError as exc:
        assert exc.code == code, (exc.code, exc.message)
        if status is not None:
            assert exc.status == status, exc.status
        return exc
    raise AssertionError(f"accepted, expected {code}")


def notice(push: Push) -> dict[str, Any] | None:
    """A group notice's payload (a System message from user 1), else None."""
    if push.command != Cmd.MPS:
        return None
    msg = push.message
    if msg.message_type != SYSTEM_MESSAGE or msg.from_uid != SYSTEM_USER_ID:
        return None
    value = json.loads(msg.payload)
    assert value["message_type"] == "notification"
    assert isinstance(value["content"], str) and value["content"]
    out: dict[str, Any] = value["metadata"]
    return out


async def notices(client: Client, kind: str, count: int = 1) -> list[dict[str, Any]]:
    """The next ``count`` notices of ``kind`` the client receives (others are skipped)."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        push = await client.next_push(10)
        note = notice(push)
        if note is not None and note["notification_type"] == kind:
            got.append(note)
    return got


async def user(port: int, name: str) -> Client:
    """A registered, READY client; usernames are at least 3 characters, so short names get
    a suffix (``x`` is ``x_user``)."""
    return await _register(port, name if len(name) >= 3 else f"{name}_user")


async def again(port: int, client_or_token: Client | tuple[str, str]) -> Client:
    """The same account and device on a new connection (``(token, device_id)`` of one)."""
    if isinstance(client_or_token, Client):
        token, device_id = client_or_token.token, client_or_token.device_id
    else:
        token, device_id = client_or_token
    return await device(port, token, device_id)


async def new_device(port: int, username: str, device_id: str) -> Client:
    """Another device of the account (``conftest.user``'s password), READY."""
    other = await Client.connect("127.0.0.1", port)
    await other.password_login(username, "password-" + username, device_id)
    await other.login()
    await other.ready()
    return other


async def group_of(port: int, *names: str) -> tuple[int, dict[str, Client]]:
    """A group of the first name (the owner) with the others as members."""
    clients = {n: await user(port, n) for n in names}
    owner = clients[names[0]]
    g = await owner.rpc(
        "group/group/create",
        {"name": "team", "member_ids": [clients[n].user_id for n in names[1:]]},
    )
    return int(g["group_id"]), clients


async def close_all(clients: dict[str, Client]) -> None:
    for c in clients.values():
        await c.close()


# ---- mutes --------------------------------------------------------------------------------------
def test_member_mute_is_enforced_on_ms_and_submit(server: ServerThread) -> None:
    async def main() -> None:
        g, c = await group_of(server.port, "owner", "admin", "m1", "m2")
        owner, admin, m1, m2 = c["owner"], c["admin"], c["m1"], c["m2"]
        await owner.rpc(
            "group/role/set", {"group_id": g, "user_id": admin.user_id, "role": "admin"}
        )
        until = await admin.rpc(
            "group/member/mute", {"group_id": g, "user_id": m1.user_id, "mute_duration": 3600}
        )
        assert isinstance(until, int) and until > 0
        now = await m1.ping()  # the server's clock, unix ms
        assert now + 3600 * 1000 - 60_000 < until <= now + 3600 * 1000  # an hour from now
        await refused(m1.send(g, "muted?"), ErrorCode.MEMBER_MUTED, Status.FORBIDDEN)
        submit = {"local_message_id": 1, "channel_id": g, "channel_type": 2, "payload": "x"}
        await refused(m1.rpc("sync/submit", submit), ErrorCode.MEMBER_MUTED, Status.FORBIDDEN)
        members = await m2.rpc("group/member/list", {"group_id": g})
        muted = {m["user_id"]: m["is_muted"] for m in members["members"]}
        assert muted == {
            owner.user_id: False,
            admin.user_id: False,
            m1.user_id: True,
            m2.user_id: False,
        }
        # the role matrix: a member mutes nobody, an admin not the owner nor themself
        await refused(
            m2.rpc("group/member/mute", {"group_id": g, "user_id": m1.user_id}),
            ErrorCode.NOT_GROUP_ADMIN,
            Status.FORBIDDEN,
        )
        await refused(
            admin.rpc("group/member/mute", {"group_id": g, "user_id": owner.user_id}),
            ErrorCode.PERMISSION_DENIED,
        )
        await refused(
            admin.rpc(
                "group/member/mute",
                {"group_id": g, "user_id": m2.user_id, "mute_duration": 2**62},
            ),
            ErrorCode.PARAM_OUT_OF_RANGE,
            Status.BAD_REQUEST,
        )
        assert await admin.rpc("group/member/unmute", {"group_id": g, "user_id": m1.user_id})
        assert (await m1.send(g, "free again")).message_seq > 0
        # 0: until unmuted
        assert (
            await owner.rpc(
                "group/member/mute", {"group_id": g, "user_id": admin.user_id, "mute_duration": 0}
            )
            == 0
        )
        await refused(admin.send(g, "admin muted"), ErrorCode.MEMBER_MUTED)
        await refused(
            m2.rpc("group/member/unmute", {"group_id": g, "user_id": admin.user_id}),
            ErrorCode.NOT_GROUP_ADMIN,
        )
        assert await owner.rpc("group/member/unmute", {"group_id": g, "user_id": admin.user_id})
        await close_all(c)

    run(main())


def test_mute_all_leaves_only_the_owner_and_admins_talking(server: ServerThread) -> None:
    async def main() -> None:
        g, c = await group_of(server.port, "owner", "admin", "m1")
        owner, admin, m1 = c["owner"], c["admin"], c["m1"]
        await owner.rpc(
            "group/role/set", {"group_id": g, "user_id": admin.user_id, "role": "admin"}
        )
        await refused(
            m1.rpc("group/settings/mute_all", {"group_id": g, "muted": True}),
            ErrorCode.NOT_GROUP_ADMIN,
            Status.FORBIDDEN,
        )
        reply = await admin.rpc("group/settings/mute_all", {"group_id": g, "muted": True})
        assert reply["success"] is True and reply["all_muted"] is True
        assert reply["group_id"] == str(g) and reply["operator_id"] == str(admin.user_id)
        assert reply["updated_at"].endswith("Z") and reply["message"]
        await refused(m1.send(g, "hello?"), ErrorCode.GROUP_MUTED, Status.FORBIDDEN)
        submit = {"local_message_id": 9, "channel_id": g, "payload": "x"}
        await refused(m1.rpc("sync/submit", submit), ErrorCode.GROUP_MUTED)
        assert (await admin.send(g, "admins talk")).message_seq > 0
        assert (await owner.send(g, "owners too")).message_seq > 0
        got = await m1.rpc("group/settings/get", {"group_id": g})
        assert got["settings"]["all_muted"] is True
        reply = await owner.rpc("group/settings/mute_all", {"group_id": g, "mute_all": False})
        assert reply["all_muted"] is False
        assert (await m1.send(g, "talking again")).message_seq > 0
        await refused(
            owner.rpc("group/settings/mute_all", {"group_id": g}),
            ErrorCode.MISSING_REQUIRED_PARAM,
        )
        await close_all(c)

    run(main())


# ---- roles --------------------------------------------------------------------------------------
def test_roles_transfer_and_set(server: ServerThread) -> None:
    async def main() -> None:
        g, c = await group_of(server.port, "owner", "m1", "m2")
        owner, m1, m2 = c["owner"], c["m1"], c["m2"]
        outsider = await user(server.port, "outsider")
        await refused(
            m1.rpc("group/role/set", {"group_id": g, "user_id": m2.user_id, "role": "admin"}),
            ErrorCode.NOT_GROUP_OWNER,
            Status.FORBIDDEN,
        )
        reply = await owner.rpc(
            "group/role/set", {"group_id": g, "user_id": m1.user_id, "role": "admin"}
        )
        assert reply["group_id"] == g and reply["user_id"] == m1.user_id
        assert reply["role"] == "admin" and reply["updated_at"].endswith("Z")
        await refused(
            owner.rpc("group/role/set", {"group_id": g, "user_id": m2.user_id, "role": "owner"}),
            ErrorCode.INVALID_PARAMS,
            Status.BAD_REQUEST,
        )
        await refused(
            owner.rpc(
                "group/role/set", {"group_id": g, "user_id": owner.user_id, "role": "member"}
            ),
            ErrorCode.PERMISSION_DENIED,
        )
        await refused(
            m1.rpc("group/role/transfer_owner", {"group_id": g, "new_owner_id": m2.user_id}),
            ErrorCode.NOT_GROUP_OWNER,
        )
        await refused(
            owner.rpc(
                "group/role/transfer_owner", {"group_id": g, "new_owner_id": outsider.user_id}
            ),
            ErrorCode.NOT_GROUP_MEMBER,
        )
        await refused(
            owner.rpc(
                "group/role/transfer_owner",
                {"group_id": g, "current_owner_id": m1.user_id, "new_owner_id": m2.user_id},
            ),
            ErrorCode.PERMISSION_DENIED,
        )
        reply = await owner.rpc(
            "group/role/transfer_owner",
            {"group_id": g, "current_owner_id": owner.user_id, "new_owner_id": m2.user_id},
        )
        assert reply["group_id"] == g and reply["new_owner_id"] == m2.user_id
        assert reply["transferred_at"].endswith("Z")
        info = await m1.rpc("group/group/info", {"group_id": g})
        assert info["owner_id"] == m2.user_id
        members = await m1.rpc("group/member/list", {"group_id": g})
        roles = {m["user_id"]: m["role"] for m in members["members"]}
        assert roles == {owner.user_id: "Admin", m1.user_id: "Admin", m2.user_id: "Owner"}
        # the old owner is an admin now: no longer the one who sets roles
        await refused(
            owner.rpc("group/role/set", {"group_id": g, "user_id": m1.user_id, "role": "member"}),
            ErrorCode.NOT_GROUP_OWNER,
        )
        reply = await m2.rpc(
            "group/role/set", {"group_id": g, "user_id": m1.user_id, "role": "member"}
        )
        assert reply["role"] == "member"
        await close_all(c)
        await outsider.close()

    run(main())


# ---- settings and invitations -------------------------------------------------------------------
def test_settings_get_and_update(server: ServerThread) -> None:
    async def main() -> None:
        g, c = await group_of(server.port, "owner", "m1")
        owner, m1 = c["owner"], c["m1"]
        got = await m1.rpc("group/settings/get", {"group_id": g})
        assert got["group_id"] == g
        s = got["settings"]
        assert (s["join_need_approval"], s["member_can_invite"], s["all_muted"]) == (
            False,
            True,
            False,
        )
        assert s["max_members"] == server.settings.max_group_members
        assert s["created_at"].endswith("Z") and s["updated_at"].endswith("Z")
        assert "announcement" not in s
        patch = {"announcement": "read the rules", "member_can_invite": False, "max_members": 10}
        await refused(
            m1.rpc("group/settings/update", {"group_id": g, "settings": patch}),
            ErrorCode.NOT_GROUP_ADMIN,
            Status.FORBIDDEN,
        )
        err = await refused(
            owner.rpc("group/settings/update", {"group_id": g, "settings": {"colour": "red"}}),
            ErrorCode.INVALID_PARAMS,
            Status.BAD_REQUEST,
        )
        assert "colour" in err.message
        await refused(
            owner.rpc("group/settings/update", {"group_id": g, "settings": {"max_members": 1}}),
            ErrorCode.PARAM_OUT_OF_RANGE,
        )
        await refused(
            owner.rpc("group/settings/update", {"group_id": g, "settings": {"all_muted": "yes"}}),
            ErrorCode.INVALID_PARAM_TYPE,
        )
        reply = await owner.rpc("group/settings/update", {"group_id": g, "settings": patch})
        assert reply["success"] is True and reply["group_id"] == str(g)
        assert reply["updated_count"] == 3 and reply["updated_at"].endswith("Z")
        note = (await notices(m1, "group_announcement_changed"))[0]
        assert note["announcement"] == "read the rules" and note["changed_by"] == owner.user_id
        s = (await m1.rpc("group/settings/get", {"group_id": g}))["settings"]
        assert s["announcement"] == "read the rules" and s["member_can_invite"] is False
        assert s["max_members"] == 10
        await close_all(c)

    run(main())


def test_member_can_invite(server: ServerThread) -> None:
    async def main() -> None:
        g, c = await group_of(server.port, "owner", "m1")
        owner, m1 = c["owner"], c["m1"]
        x, y = await user(server.port, "x"), await user(server.port, "y")
        await owner.rpc(
            "group/settings/update", {"group_id": g, "settings": {"member_can_invite": False}}
        )
        await refused(
            m1.rpc("group/member/add", {"group_id": g, "user_id": x.user_id}),
            ErrorCode.NOT_GROUP_ADMIN,
            Status.FORBIDDEN,
        )
        await refused(m1.rpc("group/qrcode/generate", {"group_id": g}), ErrorCode.NOT_GROUP_ADMIN)
        assert await owner.rpc("group/member/add", {"group_id": g, "user_id": x.user_id}) is True
        await owner.rpc(
            "group/settings/update", {"group_id": g, "settings": {"member_can_invite": True}}
        )
        assert await m1.rpc("group/member/add", {"group_id": g, "user_id": y.user_id}) is True
        members = await y.rpc("group/member/list", {"group_id": g})
        assert members["total"] == 4
        await close_all(c)
        await x.close()
        await y.close()

    run(main())


def test_join_approval_list_and_handle(server: ServerThread) -> None:
    async def main() -> None:
        g, c = await group_of(server.port, "owner", "m1")
        owner, m1 = c["owner"], c["m1"]
        x, y = await user(server.port, "x"), await user(server.port, "y")
        await owner.rpc(
            "group/settings/update", {"group_id": g, "settings": {"join_need_approval": True}}
        )
        # a member's invitation waits; the owner's needs no approval
        assert await m1.rpc("group/member/add", {"group_id": g, "user_id": x.user_id}) is False
        assert await m1.rpc("group/member/add", {"group_id": g, "user_id": y.user_id}) is False
        await refused(x.rpc("group/group/info", {"group_id": g}), ErrorCode.NOT_GROUP_MEMBER)
        await refused(m1.rpc("group/approval/list", {"group_id": g}), ErrorCode.NOT_GROUP_ADMIN)
        listed = await owner.rpc("group/approval/list", {"group_id": g})
        assert listed["group_id"] == str(g) and listed["total"] == 2
        first = listed["requests"][0]
        assert first["user_id"] == x.user_id
        assert first["method"] == {"MemberInvite": {"inviter_id": str(m1.user_id)}}
        assert first["created_at"].endswith("Z") and first["expires_at"].endswith("Z")
        rid = first["request_id"]
        assert isinstance(rid, str)
        await refused(
            m1.rpc("group/approval/handle", {"request_id": rid, "action": "approve"}),
            ErrorCode.NOT_GROUP_ADMIN,
        )
        await refused(
            owner.rpc("group/approval/handle", {"request_id": rid, "action": "maybe"}),
            ErrorCode.INVALID_PARAMS,
        )
        await refused(
            owner.rpc("group/approval/handle", {"request_id": "999999", "action": "approve"}),
            10201,
            Status.NOT_FOUND,
        )
        reply = await owner.rpc("group/approval/handle", {"request_id": rid, "action": "approve"})
        assert reply["success"] is True and reply["request_id"] == rid
        assert (reply["action"], reply["group_id"], reply["user_id"]) == ("approve", g, x.user_id)
        assert reply["handled_at"].endswith("Z") and "reject_reason" not in reply
        assert (await x.rpc("group/group/info", {"group_id": g}))["member_count"] == 3
        await refused(
            owner.rpc("group/approval/handle", {"request_id": rid, "action": "approve"}),
            ErrorCode.DUPLICATE_OPERATION,
            Status.CONFLICT,
        )
        other = listed["requests"][1]["request_id"]
        reply = await owner.rpc(
            "group/approval/handle",
            {"request_id": other, "action": "reject", "reject_reason": "full up"},
        )
        assert reply["action"] == "reject" and reply["reject_reason"] == "full up"
        await refused(y.rpc("group/group/info", {"group_id": g}), ErrorCode.NOT_GROUP_MEMBER)
        assert (await owner.rpc("group/approval/list", {"group_id": g}))["total"] == 0
        await close_all(c)
        await x.close()
        await y.close()

    run(main())


# ---- QR codes -----------------------------------------------------------------------------------
def test_group_qrcode_generate_and_join(server: ServerThread) -> None:
    async def main() -> None:
        g, c = await group_of(server.port, "owner", "m1")
        owner, m1 = c["owner"], c["m1"]
        x, y, z = [await user(server.port, n) for n in ("x", "y", "z")]
        await refused(x.rpc("group/qrcode/generate", {"group_id": g}), ErrorCode.NOT_GROUP_MEMBER)
        await refused(
            owner.rpc("group/qrcode/generate", {"group_id": g, "expire_seconds": 10**9}),
            ErrorCode.PARAM_OUT_OF_RANGE,
        )
        code = await m1.rpc(
            "group/qrcode/generate", {"group_id": g, "expire_seconds": 600, "max_usage": 1}
        )
        key = code["qr_key"]
        assert code["group_id"] == g and code["created_at"].endswith("Z")
        assert code["expire_at"].endswith("Z") and code["expire_at"] > code["created_at"]
        assert code["qr_code"].startswith(f"privchat://group/get?qrkey={key}&token=")
        token = code["qr_code"].rsplit("token=", 1)[1]
        await refused(
            x.rpc("group/join/qrcode", {"qr_key": key, "token": "wrong"}),
            QR_CODE_NOT_FOUND,
            Status.NOT_FOUND,
        )
        await refused(x.rpc("group/join/qrcode", {"qr_key": "nope"}), QR_CODE_NOT_FOUND)
        await refused(
            m1.rpc("group/join/qrcode", {"qr_key": key, "token": token}),
            ErrorCode.MEMBER_ALREADY_IN_GROUP,
            Status.CONFLICT,
        )
        joined = await x.rpc("group/join/qrcode", {"qr_key": key, "token": token})
        assert joined["status"] == "joined" and joined["group_id"] == g
        assert joined["user_id"] == x.user_id and joined["joined_at"].endswith("Z")
        assert joined["request_id"] is None
        assert (await x.rpc("group/group/info", {"group_id": g}))["member_count"] == 3
        # one use only
        await refused(
            y.rpc("group/join/qrcode", {"qr_key": key, "token": token}), QR_CODE_LIMIT_EXCEEDED
        )
        # a group that needs approval: the scan is a request, its method the QR code
        await owner.rpc(
            "group/settings/update", {"group_id": g, "settings": {"join_need_approval": True}}
        )
        code = await owner.rpc("group/qrcode/generate", {"group_id": g})
        pending = await z.rpc(
            "group/join/qrcode", {"qr_key": code["qr_key"], "message": "let me in"}
        )
        assert pending["status"] == "pending" and pending["joined_at"] is None
        assert pending["expires_at"].endswith("Z") and isinstance(pending["request_id"], str)
        listed = await owner.rpc("group/approval/list", {"group_id": g})
        (item,) = listed["requests"]
        assert item["method"] == {"QRCode": {"qr_code_id": code["qr_key"]}}
        assert item["message"] == "let me in" and item["request_id"] == pending["request_id"]
        await refused(z.rpc("group/group/info", {"group_id": g}), ErrorCode.NOT_GROUP_MEMBER)
        await close_all(c)
        for u in (x, y, z):
            await u.close()

    run(main())


# ---- the end of a group -------------------------------------------------------------------------
def test_the_last_member_leaving_dissolves_the_group(server: ServerThread) -> None:
    async def main() -> None:
        g, c = await group_of(server.port, "owner", "m1")
        owner, m1 = c["owner"], c["m1"]
        await refused(owner.rpc("group/member/leave", {"group_id": g}), ErrorCode.PERMISSION_DENIED)
        assert await m1.rpc("group/member/leave", {"group_id": g}) is True
        assert (await owner.rpc("group/group/info", {"group_id": g}))["member_count"] == 1
        assert await owner.rpc("group/member/leave", {"group_id": g}) is True
        for who in (owner, m1):
            await refused(
                who.rpc("group/group/info", {"group_id": g}),
                ErrorCode.GROUP_NOT_FOUND,
                Status.NOT_FOUND,
            )
        await refused(owner.rpc("group/member/leave", {"group_id": g}), ErrorCode.GROUP_NOT_FOUND)
        await refused(owner.send(g, "anyone?"), ErrorCode.NOT_GROUP_MEMBER)
        await close_all(c)

    run(main())


# ---- notices ------------------------------------------------------------------------------------
def test_members_are_told_of_joins_leaves_kicks_and_role_changes(server: ServerThread) -> None:
    async def main() -> None:
        g, c = await group_of(server.port, "owner", "m1", "m2")
        owner, m1, m2 = c["owner"], c["m1"], c["m2"]
        x = await user(server.port, "x")
        assert await owner.rpc("group/member/add", {"group_id": g, "user_id": x.user_id})
        for who in (owner, m1, x):
            (note,) = await notices(who, "group_member_joined")
            assert note["group_id"] == g and note["user_id"] == x.user_id
            assert note["invited_by"] == owner.user_id and note["username"] == "x_user"
        await owner.rpc("group/role/set", {"group_id": g, "user_id": m1.user_id, "role": "admin"})
        (note,) = await notices(m2, "group_admin_added")
        assert note["user_id"] == m1.user_id and note["added_by"] == owner.user_id
        await m1.rpc("group/member/remove", {"group_id": g, "user_id": x.user_id})
        for who in (owner, m2, x):  # the removed member is told too
            (note,) = await notices(who, "group_member_kicked")
            assert note["user_id"] == x.user_id and note["kicked_by"] == m1.user_id
        await m2.rpc("group/member/leave", {"group_id": g})
        for who in (owner, m1, m2):
            (note,) = await notices(who, "group_member_left")
            assert note["user_id"] == m2.user_id
        await owner.rpc("group/role/transfer_owner", {"group_id": g, "new_owner_id": m1.user_id})
        (note,) = await notices(m1, "group_owner_transferred")
        assert (note["old_owner_id"], note["new_owner_id"]) == (owner.user_id, m1.user_id)
        await m1.rpc("group/member/mute", {"group_id": g, "user_id": owner.user_id})
        (note,) = await notices(owner, "group_member_muted")
        assert note["duration_seconds"] == 0 and note["muted_by"] == m1.user_id
        # notices are in the log: a pull from 0 has them, in pts order
        diff = await owner.rpc("sync/get_difference", {"channel_id": g, "last_pts": 0})
        kinds = [
            cm["content"]["metadata"]["notification_type"]
            for cm in diff["commits"]
            if cm["message_type"] == "system"
        ]
        assert kinds == [
            "group_created",
            "group_member_joined",
            "group_admin_added",
            "group_member_kicked",
            "group_member_left",
            "group_owner_transferred",
            "group_member_muted",
        ]
        await close_all(c)
        await x.close()

    run(main())


# ---- what members see ---------------------------------------------------------------------------
def test_a_new_member_gets_nothing_from_before_joining(server: ServerThread) -> None:
    async def main() -> None:
        g, c = await group_of(server.port, "owner", "m1")
        owner = c["owner"]
        for i in range(3):
            await owner.send(g, f"before {i}")
        x = await user(server.port, "x")
        await owner.rpc("group/member/add", {"group_id": g, "user_id": x.user_id})
        after = await owner.send(g, "after")
        diff = await x.pull(g, 0)
        assert [m.message_seq for m in diff.messages] == [5, 6]  # the join notice, "after"
        assert diff.messages[-1].server_message_id == after.server_message_id
        gd = await x.rpc("sync/get_difference", {"channel_id": g, "last_pts": 0})
        assert [cm["pts"] for cm in gd["commits"]] == [5, 6]
        # a new device of the new member gets nothing from before the join either
        other = await new_device(server.port, "x_user", str(uuid.uuid4()))
        marker = await owner.send(g, "marker")
        seen: list[int] = []
        while marker.message_seq not in seen:
            push = await other.next_push(10)
            if push.command == Cmd.MPS and push.message.channel_id == g:
                seen.append(push.message.message_seq)
        assert seen and min(seen) > 4, seen
        info = await x.rpc("group/group/info", {"group_id": g})
        assert info["message_count"] == 7  # the created notice, three, the join notice, two
        await close_all(c)
        await x.close()
        await other.close()

    run(main())


def test_message_count_leaves_out_revoke_events(server: ServerThread) -> None:
    async def main() -> None:
        g, c = await group_of(server.port, "owner", "m1")
        owner = c["owner"]
        sent = await owner.send(g, "one")
        await owner.send(g, "two")
        await owner.revoke(g, sent.server_message_id)
        info = await owner.rpc("group/group/info", {"group_id": g})
        assert info["message_count"] == 3  # the GroupCreated notice, "one", "two"
        await close_all(c)

    run(main())


def test_a_removed_member_no_longer_gets_typing(server: ServerThread) -> None:
    async def main() -> None:
        g, c = await group_of(server.port, "owner", "m1", "m2")
        owner, m1, m2 = c["owner"], c["m1"], c["m2"]
        assert (await m2.subscribe(g, 1)).reason_code == 0
        await m1.rpc("presence/typing", {"channel_id": g, "channel_type": 2, "is_typing": True})
        push = await m2.next_push(10)
        while push.command != Cmd.PUB:
            push = await m2.next_push(10)
        assert push.message.topic == "typing"
        await owner.rpc("group/member/remove", {"group_id": g, "user_id": m2.user_id})
        await notices(m2, "group_member_kicked")
        await asyncio.sleep(server.settings.typing_interval)  # past the typing rate limit
        await m1.rpc("presence/typing", {"channel_id": g, "channel_type": 2, "is_typing": True})
        # a marker after it: whatever m2 receives before the marker has no typing in it
        dm = await owner.rpc("channel/direct/get_or_create", {"target_user_id": m2.user_id})
        await owner.send(dm["channel_id"], "marker")
        while True:
            push = await m2.next_push(10)
            assert push.command != Cmd.PUB, "a removed member got a typing event"
            if push.command == Cmd.MPS and push.message.channel_id == dm["channel_id"]:
                break
        # and its subscription is gone: subscribing again is refused
        assert (await m2.subscribe(g, 1)).reason_code == 4
        await close_all(c)

    run(main())


# ---- persistence --------------------------------------------------------------------------------
def test_group_state_survives_a_restart() -> None:
    data = tempfile.TemporaryDirectory(prefix="privchat-groups-")
    try:
        first = ServerThread(data_dir=data.name).start()
        try:

            async def setup() -> dict[str, Any]:
                g, c = await group_of(first.port, "owner", "admin", "m1")
                owner, admin, m1 = c["owner"], c["admin"], c["m1"]
                x, y = await user(first.port, "x"), await user(first.port, "y")
                await owner.rpc(
                    "group/role/set", {"group_id": g, "user_id": admin.user_id, "role": "admin"}
                )
                await admin.rpc("group/member/mute", {"group_id": g, "user_id": m1.user_id})
                patch = {"join_need_approval": True, "announcement": "hello", "max_members": 20}
                await owner.rpc("group/settings/update", {"group_id": g, "settings": patch})
                await owner.rpc("group/settings/mute_all", {"group_id": g, "muted": True})
                code = await owner.rpc("group/qrcode/generate", {"group_id": g, "max_usage": 1})
                pending = await x.rpc("group/join/qrcode", {"qr_key": code["qr_key"]})
                assert pending["status"] == "pending"
                out = {
                    "g": g,
                    "key": code["qr_key"],
                    "request": pending["request_id"],
                    "logins": {n: (cl.token, cl.device_id) for n, cl in c.items()}
                    | {"y": (y.token, y.device_id)},
                    "ids": {n: cl.user_id for n, cl in c.items()},
                }
                await close_all(c)
                await x.close()
                await y.close()
                return out

            state = run(setup())
        finally:
            first.stop()
        second = ServerThread(data_dir=data.name).start()
        try:

            async def check() -> None:
                g = state["g"]
                ids = state["ids"]
                owner = await again(second.port, state["logins"]["owner"])
                m1 = await again(second.port, state["logins"]["m1"])
                y = await again(second.port, state["logins"]["y"])
                s = (await owner.rpc("group/settings/get", {"group_id": g}))["settings"]
                assert s["join_need_approval"] and s["all_muted"] and s["max_members"] == 20
                assert s["announcement"] == "hello"
                members = await owner.rpc("group/member/list", {"group_id": g})
                by_id = {m["user_id"]: m for m in members["members"]}
                assert by_id[ids["admin"]]["role"] == "Admin"
                assert by_id[ids["m1"]]["is_muted"] is True
                await refused(m1.send(g, "still muted"), ErrorCode.MEMBER_MUTED)
                listed = await owner.rpc("group/approval/list", {"group_id": g})
                assert [r["request_id"] for r in listed["requests"]] == [state["request"]]
                # the code's one use was spent before the restart
                await refused(
                    y.rpc("group/join/qrcode", {"qr_key": state["key"]}), QR_CODE_LIMIT_EXCEEDED
                )
                for cl in (owner, m1, y):
                    await cl.close()

            run(check())
        finally:
            second.stop()
    finally:
        data.cleanup()


def test_a_dissolved_group_stays_dissolved_after_a_restart() -> None:
    data = tempfile.TemporaryDirectory(prefix="privchat-groups-")
    try:
        first = ServerThread(data_dir=data.name).start()
        try:

            async def setup() -> tuple[int, tuple[str, str]]:
                g, c = await group_of(first.port, "solo")
                assert await c["solo"].rpc("group/member/leave", {"group_id": g}) is True
                login = (c["solo"].token, c["solo"].device_id)
                await close_all(c)
                return g, login

            g, login = run(setup())
        finally:
            first.stop()
        second = ServerThread(data_dir=data.name).start()
        try:

            async def check() -> None:
                solo = await again(second.port, login)
                await refused(
                    solo.rpc("group/group/info", {"group_id": g}), ErrorCode.GROUP_NOT_FOUND
                )
                await solo.close()

            run(check())
        finally:
            second.stop()
    finally:
        data.cleanup()


# ---- the role matrix, in memory -----------------------------------------------------------------
@pytest.fixture
def h() -> Harness:
    return Harness()


def _code(dev: Device, route: str, body: dict[str, Any]) -> int:
    try:
        dev.rpc(route, body)
    except ServiceError as exc:
        return exc.code
    return 0


ROLES = ("owner", "admin", "m1", "m2", "outsider")


def _matrix_group(h: Harness) -> tuple[int, dict[str, int], dict[str, Device]]:
    users = {name: h.user(name) for name in ROLES}
    devs = {name: h.login(u) for name, u in users.items()}
    ids = {name: u.user_id for name, u in users.items()}
    g = devs["owner"].rpc(
        "group/group/create", {"name": "g", "member_ids": [ids["admin"], ids["m1"], ids["m2"]]}
    )["group_id"]
    devs["owner"].rpc("group/role/set", {"group_id": g, "user_id": ids["admin"], "role": "admin"})
    return g, ids, devs


NA, NM, NO, PD = (
    ErrorCode.NOT_GROUP_ADMIN,
    ErrorCode.NOT_GROUP_MEMBER,
    ErrorCode.NOT_GROUP_OWNER,
    ErrorCode.PERMISSION_DENIED,
)

MUTE = [  # operator, target, code (mute and unmute alike)
    ("owner", "admin", 0),
    ("owner", "m1", 0),
    ("owner", "owner", PD),
    ("admin", "m1", 0),
    ("admin", "admin", PD),
    ("admin", "owner", PD),
    ("m1", "m2", NA),
    ("m1", "m1", NA),
    ("outsider", "m1", NM),
    ("owner", "outsider", NM),
]


@pytest.mark.parametrize(("operator", "target", "code"), MUTE)
@pytest.mark.parametrize("route", ["group/member/mute", "group/member/unmute"])
def test_mute_matrix(h: Harness, route: str, operator: str, target: str, code: int) -> None:
    g, ids, devs = _matrix_group(h)
    got = _code(devs[operator], route, {"group_id": g, "user_id": ids[target]})
    assert got == code
    if route == "group/member/mute" and target != "outsider":
        member = h.core.services.groups.group(g).members[ids[target]]
        assert (member.mute_until == -1) == (code == 0)


ROLE_SET = [  # operator, target, role, code
    ("owner", "m1", "admin", 0),
    ("owner", "admin", "member", 0),
    ("owner", "owner", "member", PD),
    ("owner", "m1", "owner", ErrorCode.INVALID_PARAMS),
    ("owner", "outsider", "admin", NM),
    ("admin", "m1", "admin", NO),
    ("admin", "admin", "member", NO),
    ("m1", "m1", "admin", NO),
    ("outsider", "m1", "admin", NM),
]


@pytest.mark.parametrize(("operator", "target", "role", "code"), ROLE_SET)
def test_role_set_matrix(h: Harness, operator: str, target: str, role: str, code: int) -> None:
    g, ids, devs = _matrix_group(h)
    body = {"group_id": g, "user_id": ids[target], "role": role}
    assert _code(devs[operator], "group/role/set", body) == code


ADMIN_ACTIONS: list[tuple[str, dict[str, Any]]] = [
    ("group/settings/update", {"settings": {"announcement": "x"}}),
    ("group/settings/mute_all", {"muted": True}),
    ("group/approval/list", {}),
]


@pytest.mark.parametrize(("route", "extra"), ADMIN_ACTIONS)
@pytest.mark.parametrize(
    ("operator", "code"), [("owner", 0), ("admin", 0), ("m1", NA), ("outsider", NM)]
)
def test_admin_action_matrix(
    h: Harness, route: str, extra: dict[str, Any], operator: str, code: int
) -> None:
    g, _, devs = _matrix_group(h)
    assert _code(devs[operator], route, {"group_id": g, **extra}) == code


@pytest.mark.parametrize(
    ("operator", "code"), [("owner", 0), ("admin", NO), ("m1", NO), ("outsider", NM)]
)
def test_transfer_matrix(h: Harness, operator: str, code: int) -> None:
    g, ids, devs = _matrix_group(h)
    body = {"group_id": g, "new_owner_id": ids["m2"]}
    assert _code(devs[operator], "group/role/transfer_owner", body) == code


@pytest.mark.parametrize("can_invite", [True, False])
@pytest.mark.parametrize("operator", ["owner", "admin", "m1", "outsider"])
def test_invite_matrix(h: Harness, operator: str, can_invite: bool) -> None:
    g, _, devs = _matrix_group(h)
    devs["owner"].rpc(
        "group/settings/update", {"group_id": g, "settings": {"member_can_invite": can_invite}}
    )
    newcomer = h.user("newcomer").user_id
    expected = {"owner": 0, "admin": 0, "m1": 0 if can_invite else NA, "outsider": NM}[operator]
    add = _code(devs[operator], "group/member/add", {"group_id": g, "user_id": newcomer})
    assert add == expected
    qr = _code(devs[operator], "group/qrcode/generate", {"group_id": g})
    assert qr == expected


def test_admin_added_by_the_owner_only(h: Harness) -> None:
    g, _, devs = _matrix_group(h)
    a, b = h.user("a").user_id, h.user("b").user_id
    body = {"group_id": g, "user_id": a, "role": "admin"}
    assert _code(devs["admin"], "group/member/add", body) == NO
    assert _code(devs["owner"], "group/member/add", body) == 0
    body = {"group_id": g, "user_id": b, "role": "boss"}
    assert _code(devs["owner"], "group/member/add", body) == ErrorCode.INVALID_PARAMS
    assert h.core.services.groups.group(g).members[a].role == 1


def test_removal_matrix_tells_the_removed_member(h: Harness) -> None:
    g, ids, devs = _matrix_group(h)
    before = len(devs["m2"].pushes(Cmd.MPS))
    assert _code(devs["admin"], "group/member/remove", {"group_id": g, "user_id": ids["m2"]}) == 0
    h.turn()
    got = devs["m2"].pushes(Cmd.MPS)[before:]
    assert len(got) == 1
    payload = json.loads(pb.PushMessageRequest.FromString(got[0].body).payload)
    assert payload["metadata"]["notification_type"] == "group_member_kicked"


# ---- expiry, with the clock in the test's hand --------------------------------------------------
def test_qr_codes_and_join_requests_expire() -> None:
    now = [1_700_000_000_000]
    h = Harness(clock=lambda: now[0])
    g, ids, devs = _matrix_group(h)
    code = devs["owner"].rpc("group/qrcode/generate", {"group_id": g, "expire_seconds": 60})
    nc = h.user("newcomer")
    newcomer = h.login(nc)
    now[0] += 61_000
    body = {"qr_key": code["qr_key"]}
    assert _code(newcomer, "group/join/qrcode", body) == QR_CODE_EXPIRED
    # a join request expires after a week: it is no longer listed nor handled
    devs["owner"].rpc(
        "group/settings/update", {"group_id": g, "settings": {"join_need_approval": True}}
    )
    assert devs["m1"].rpc("group/member/add", {"group_id": g, "user_id": nc.user_id}) is False
    (req,) = devs["owner"].rpc("group/approval/list", {"group_id": g})["requests"]
    now[0] += 8 * 24 * 3600 * 1000
    assert devs["owner"].rpc("group/approval/list", {"group_id": g})["total"] == 0
    body = {"request_id": req["request_id"], "action": "approve"}
    assert _code(devs["owner"], "group/approval/handle", body) == ErrorCode.OPERATION_NOT_ALLOWED
    assert nc.user_id not in h.core.services.groups.group(g).members
    _ = ids


def test_entity_versions_move_with_group_changes(h: Harness) -> None:
    g, ids, devs = _matrix_group(h)
    store = h.store
    owner = ids["owner"] if "owner" in ids else next(iter(h.core.services.groups.group(g).members))
    group_fam, member_fam = group_family(owner), member_family(g)
    before = store.entity_version(group_fam)
    devs["owner"].rpc("group/member/remove", {"group_id": g, "user_id": ids["m2"]})
    assert store.entity_version(group_fam) > before
    tomb = [e for e in store.entities_since(member_fam, 0, 100) if e[0] == f"{g}:{ids['m2']}"]
    assert tomb and tomb[0][2] is True  # the removed member is a tombstone
    v = store.entity_version(member_fam)
    devs["owner"].rpc("group/member/mute", {"group_id": g, "user_id": ids["m1"]})
    assert store.entity_version(member_fam) == v + 1

"""Devices over TCP: ``device/list`` (last active time, the client address of the PROXY header),
push settings, kicking one device or all the others (their sessions end with LOGOUT flow 2 and
their logins are revoked), and persistence across a restart with SQLite."""

from __future__ import annotations

import asyncio
import pathlib
import uuid
from collections.abc import Callable
from typing import Any

from conftest import ServerThread, run, user

from privchat_tcp.client import Client, Push
from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.wire.commands import Cmd
from privchat_tcp.wire.proxy import encode_v1


async def refused(client: Client, route: str, body: dict[str, Any]) -> ServiceError:
    try:
        await client.rpc(route, body)
    except ServiceError as exc:
        return exc
    raise AssertionError(f"{route} {body} was accepted")


async def connect(port: int, source: str | None = None) -> Client:
    c = await Client.connect("127.0.0.1", port)
    if source is not None:
        assert c._proto is not None and c._proto.transport is not None
        c._proto.transport.write(encode_v1(source, 4444, "198.51.100.1", 9001))
    return c


async def first_device(port: int, name: str, source: str | None = None) -> Client:
    c = await connect(port, source)
    await c.register(name, "password-" + name)
    await c.login()
    await c.ready()
    return c


async def other_device(port: int, name: str, source: str | None = None) -> Client:
    """Another device of an existing account: a password login from a new device id."""
    c = await connect(port, source)
    await c.password_login(name, "password-" + name, str(uuid.uuid4()))
    await c.login()
    await c.ready()
    return c


async def logout_push(client: Client) -> Push:
    while True:
        push = await client.next_push(10)
        if push.command == Cmd.LOGOUT:
            return push


async def until(check: Callable[[], Any]) -> Any:
    """Poll ``check`` (a coroutine function) until it returns something true (bounded)."""
    for _ in range(500):
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def test_device_list_with_proxy_address_and_last_active(
    make_server: Callable[..., ServerThread],
) -> None:
    srv = make_server(proxy_protocol=True)

    async def main() -> None:
        a = await first_device(srv.port, "alice", "192.0.2.9")
        b = await other_device(srv.port, "alice", "203.0.113.5")
        listed = await a.rpc("device/list", {})
        assert listed["total"] == 2
        mine, other = listed["devices"]
        assert mine["device_id"] == a.device_id and mine["is_current"] is True
        assert other["device_id"] == b.device_id and other["is_current"] is False
        for d, ip in ((mine, "192.0.2.9"), (other, "203.0.113.5")):
            assert d["online"] is True and d["ip_address"] == ip
            assert d["device_type"] == "linux" and d["device_name"] == "privchat_tcp.client"
            assert d["last_active_at"] >= d["first_login_at"] > 0
            assert d["last_active"].endswith("Z")
        await b.close()

        async def b_offline() -> Any:
            devices = (await a.rpc("device/list", {}))["devices"]
            return devices[1] if not devices[1]["online"] else None

        gone = await until(b_offline)
        assert gone["ip_address"] == "203.0.113.5"  # the address of its last session
        assert gone["last_active_at"] >= other["first_login_at"]
        err = await refused(a, "device/list", {"device_id": b.device_id})
        assert err.code == ErrorCode.INVALID_PARAMS and "device_id" in str(err)
        await a.close()

    run(main())


def test_push_update_and_status(server: ServerThread) -> None:
    async def main() -> None:
        a = await first_device(server.port, "alice")
        b = await other_device(server.port, "alice")
        status = await a.rpc("device/push/status", {})
        assert status["user_push_enabled"] is False
        assert [d["device_id"] for d in status["devices"]] == [a.device_id, b.device_id]
        updated = await a.rpc(
            "device/push/update",
            {"device_id": b.device_id, "apns_armed": True, "push_token": "tok-1", "vendor": "fcm"},
        )
        assert updated == {"device_id": b.device_id, "apns_armed": True, "user_push_enabled": True}
        one = await a.rpc("device/push/status", {"device_id": b.device_id})
        assert one == {
            "devices": [
                {
                    "device_id": b.device_id,
                    "apns_armed": True,
                    "connected": True,
                    "platform": "linux",
                    "vendor": "fcm",
                }
            ],
            "user_push_enabled": True,
        }
        missing = str(uuid.uuid4())
        err = await refused(a, "device/push/update", {"device_id": missing, "apns_armed": True})
        assert err.code == ErrorCode.DEVICE_NOT_FOUND and err.status == Status.NOT_FOUND
        err = await refused(
            a, "device/push/update", {"device_id": a.device_id, "apns_armed": True, "vendor": "x"}
        )
        assert err.code == ErrorCode.INVALID_PARAMS
        err = await refused(a, "device/push/update", {"device_id": a.device_id})
        assert err.code == ErrorCode.MISSING_REQUIRED_PARAM
        err = await refused(a, "device/push/status", {"device_id": missing})
        assert err.code == ErrorCode.DEVICE_NOT_FOUND
        # another user's device is not found either
        c = await first_device(server.port, "carol")
        err = await refused(c, "device/push/status", {"device_id": a.device_id})
        assert err.code == ErrorCode.DEVICE_NOT_FOUND
        for client in (a, b, c):
            await client.close()

    run(main())


def test_kick_device_ends_its_session_and_revokes_its_login(server: ServerThread) -> None:
    async def main() -> None:
        a = await first_device(server.port, "alice")
        b = await other_device(server.port, "alice")
        bystander = await user(server.port, "bob")
        kicked = await a.rpc("device/kick_device", {"device_id": b.device_id})
        assert kicked == {"success": True, "device_id": b.device_id, "kicked_sessions": 1}
        push = await logout_push(b)
        assert push.status == Status.UNAUTHENTICATED
        assert push.message.code == ErrorCode.TOKEN_REVOKED
        await b.wait_closed()
        # its token is revoked: it cannot log in again with it
        again = await Client.connect("127.0.0.1", server.port)
        again.device_id = b.device_id
        try:
            await again.login(b.token)
        except ServiceError as exc:
            assert exc.code == ErrorCode.TOKEN_REVOKED
        else:
            raise AssertionError("a kicked device logged in with its token")
        await again.close()
        listed = await a.rpc("device/list", {})
        assert [d["device_id"] for d in listed["devices"]] == [a.device_id]
        err = await refused(a, "device/kick_device", {"device_id": a.device_id})
        assert err.code == ErrorCode.OPERATION_NOT_ALLOWED and err.status == Status.FORBIDDEN
        err = await refused(a, "device/kick_device", {"device_id": b.device_id})
        assert err.code == ErrorCode.DEVICE_NOT_FOUND
        err = await refused(bystander, "device/kick_device", {"device_id": a.device_id})
        assert err.code == ErrorCode.DEVICE_NOT_FOUND  # not bob's device
        assert await a.ping() and await bystander.ping()
        await a.close()
        await bystander.close()

    run(main())


def test_kick_other_devices(server: ServerThread) -> None:
    async def main() -> None:
        a = await first_device(server.port, "alice")
        b = await other_device(server.port, "alice")
        c = await other_device(server.port, "alice")
        result = await a.rpc("device/kick_other_devices", {})
        assert result["success"] is True and result["count"] == 2
        assert sorted(result["kicked_devices"]) == sorted([b.device_id, c.device_id])
        assert result["kicked_sessions"] == 2
        for kicked in (b, c):
            push = await logout_push(kicked)
            assert (push.status, push.message.code) == (
                Status.UNAUTHENTICATED,
                ErrorCode.TOKEN_REVOKED,
            )
            await kicked.wait_closed()
        assert (await a.rpc("device/list", {}))["total"] == 1
        none = await a.rpc("device/kick_other_devices", {})
        assert none["count"] == 0 and none["kicked_devices"] == []
        err = await refused(a, "device/kick_other_devices", {"all": True})
        assert err.code == ErrorCode.INVALID_PARAMS
        assert await a.ping()
        await a.close()

    run(main())


def test_devices_and_last_seen_survive_a_restart(tmp_path: pathlib.Path) -> None:
    data = str(tmp_path / "data")
    saved: dict[str, Any] = {}

    async def first(srv: ServerThread) -> None:
        a = await first_device(srv.port, "alice")
        saved["a"] = (a.token, a.device_id, a.user_id)
        await a.rpc("device/push/update", {"device_id": a.device_id, "apns_armed": True})
        listed = await a.rpc("device/list", {})
        saved["first_login_at"] = listed["devices"][0]["first_login_at"]
        await a.close()

    async def second(srv: ServerThread) -> None:
        token, device_id, uid = saved["a"]
        bob = await user(srv.port, "bob")
        seen = (await bob.rpc("presence/status/get", {"user_ids": [uid]}))["statuses"][str(uid)]
        assert seen["status"] == "Recently" and seen["last_seen"] > 0  # last seen persisted
        a = await Client.connect("127.0.0.1", srv.port)
        a.device_id = device_id
        await a.login(token)
        await a.ready()
        listed = await a.rpc("device/list", {})
        assert listed["total"] == 1
        d = listed["devices"][0]
        assert d["device_id"] == device_id and d["apns_armed"] is True
        assert d["first_login_at"] == saved["first_login_at"]
        status = await a.rpc("device/push/status", {})
        assert status["user_push_enabled"] is True
        await a.close()
        await bob.close()

    for step in (first, second):
        srv = ServerThread(data_dir=data).start()
        try:
            run(step(srv))
        finally:
            srv.stop()

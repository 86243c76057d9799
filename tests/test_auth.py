"""Authentication and login under attack, over TCP (issue 10): tokens of an earlier store,
logout, token expiry, password floods and encrypted-LOGIN floods."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Callable
from typing import Any

from conftest import ServerThread, run, user

from privchat_tcp.client import Client, Push
from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.wire.commands import Cmd


async def refused(coro: Any) -> tuple[int, int]:
    """(status, code) of a request that must fail."""
    try:
        await coro
    except ServiceError as exc:
        return exc.status, exc.code
    raise AssertionError("the request succeeded")


async def logout_push(client: Client, timeout: float = 10.0) -> Push:
    """The next LOGOUT flow 2 the server sends (pushes before it are skipped)."""
    while True:
        push = await client.next_push(timeout)
        if push.command == Cmd.LOGOUT:
            return push


async def login_with(port: int, token: str, device_id: str) -> Client:
    client = await Client.connect("127.0.0.1", port)
    client.device_id = device_id
    await client.login(token)
    return client


# ---- 1. a token names the store that issued it ---------------------------------------------------


def test_tokens_of_an_earlier_store_are_refused_after_a_restart(tmp_path: pathlib.Path) -> None:
    """Two servers in turn on one data directory: the JWT secret persists, the memory store
    (users, revocations) does not, and user ids start again at 100000000."""
    data = {"data_dir": str(tmp_path), "jwt_secret": ""}  # the secret lives in the data dir
    first = ServerThread(**data).start()
    try:

        async def before() -> dict[str, Any]:
            alice = await Client.connect("127.0.0.1", first.port)
            reg = await alice.register("alice", "password-alice")
            # a second login of hers, logged out (revoked) before the restart
            other = await Client.connect("127.0.0.1", first.port)
            again = await other.password_login("alice", "password-alice")
            await other.login()
            assert await other.rpc("account/auth/logout") is True
            await other.close()
            await alice.close()
            return {
                "user_id": reg["user_id"],
                "device": alice.device_id,
                "token": reg["token"],
                "refresh": reg["refresh_token"],
                "revoked": again["token"],
                "revoked_device": other.device_id,
            }

        old = run(before())
    finally:
        first.stop()
    assert (tmp_path / "jwt.secret").exists()

    second = ServerThread(**data).start()
    try:

        async def after() -> None:
            mallory = await Client.connect("127.0.0.1", second.port)
            reg = await mallory.register("mallory", "password-mallory")
            assert reg["user_id"] == old["user_id"]  # the id alice's tokens name is reused
            assert second.server is not None
            tokens = second.server.services.accounts.tokens
            assert tokens.verify(old["token"])["uid"] == reg["user_id"]  # the signature holds

            for token, device in (
                (old["token"], old["device"]),
                (old["revoked"], old["revoked_device"]),
            ):
                c = await Client.connect("127.0.0.1", second.port)
                c.device_id = device
                assert await refused(c.login(token)) == (
                    Status.UNAUTHENTICATED,
                    ErrorCode.INVALID_TOKEN,
                )
                assert await c.ping() > 0  # refused, the connection stays usable
                # her refresh token mints nothing for the newcomer either
                assert await refused(
                    c.rpc("account/auth/refresh", {"refresh_token": old["refresh"]})
                ) == (Status.UNAUTHENTICATED, ErrorCode.INVALID_TOKEN)
                await c.close()
            # the newcomer's own token works
            await mallory.login()
            await mallory.ready()
            assert await mallory.ping() > 0
            await mallory.close()

        run(after())
    finally:
        second.stop()


# ---- 7. logout ends its login; a session lives no longer than its token --------------------------


def test_logout_ends_the_login_and_revokes_its_refresh_token(server: ServerThread) -> None:
    async def main() -> None:
        c = await Client.connect("127.0.0.1", server.port)
        reg = await c.register("alice", "password-alice")
        # refreshing stays in the same login: the new pair is revoked by the logout too
        fresh = await c.rpc("account/auth/refresh", {"refresh_token": reg["refresh_token"]})
        await c.login(fresh["token"])
        await c.ready()
        # another login of hers, on another device: not ended by this logout
        d2 = str(uuid.uuid4())
        other = await Client.connect("127.0.0.1", server.port)
        kept = await other.password_login("alice", "password-alice", d2)
        await other.login()
        await other.ready()

        assert await c.rpc("account/auth/logout") is True  # the reply comes first ...
        push = await logout_push(c)  # ... then LOGOUT flow 2, then the close
        assert push.status == Status.UNAUTHENTICATED
        assert push.message.code == ErrorCode.TOKEN_REVOKED
        await c.wait_closed()
        assert not c.connected

        probe = await Client.connect("127.0.0.1", server.port)
        probe.device_id = c.device_id
        for token in (fresh["token"], reg["token"]):  # this access token and its predecessor
            assert await refused(probe.login(token)) == (
                Status.UNAUTHENTICATED,
                ErrorCode.TOKEN_REVOKED,
            )
        for refresh in (fresh["refresh_token"], reg["refresh_token"]):
            assert await refused(probe.rpc("account/auth/refresh", {"refresh_token": refresh})) == (
                Status.UNAUTHENTICATED,
                ErrorCode.TOKEN_REVOKED,
            )
        # refused, the probe's connection stays usable
        assert await probe.ping() > 0
        await probe.close()

        # the other login is untouched: its session works and its refresh token mints
        assert await other.ping() > 0
        assert other.closed_by_server is None
        renewed = await other.rpc("account/auth/refresh", {"refresh_token": kept["refresh_token"]})
        third = await login_with(server.port, renewed["token"], d2)  # replaces `other`
        assert (await logout_push(other)).status == Status.REPLACED
        await third.close()

    run(main())


def test_a_session_ends_when_its_token_expires(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(token_ttl=2)

    async def main() -> None:
        c = await user(srv.port, "carol")
        assert await c.ping() > 0
        push = await logout_push(c, timeout=10)
        assert (push.status, push.message.code) == (Status.UNAUTHENTICATED, ErrorCode.TOKEN_EXPIRED)
        await c.wait_closed()
        # the expired token logs in nowhere; a refreshed one does
        probe = await Client.connect("127.0.0.1", srv.port)
        probe.device_id = c.device_id
        assert await refused(probe.login(c.token)) == (
            Status.UNAUTHENTICATED,
            ErrorCode.TOKEN_EXPIRED,
        )
        await probe.close()

    run(main())

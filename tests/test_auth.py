"""Authentication and login under attack, over TCP (issue 10): tokens of an earlier store,
logout, token expiry, password floods and encrypted-LOGIN floods."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import pathlib
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from conftest import ServerThread, run, user

from privchat_tcp.client import Client, Push
from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.wire.commands import ENC_RSA, Cmd

HEADER = struct.Struct("!IBIBBB")
Frame = tuple[int, int, int, int, bytes]  # seq, command, flags, status, body
#: production argon2id cost (the defaults): a hash takes tens of milliseconds
ARGON2 = {"argon2_time_cost": 2, "argon2_memory_kib": 19456}
_NAMES = {Cmd.RPC: "RPC", Cmd.LOGOUT: "LOGOUT"}


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


def frame(seq: int, command: int, body: bytes, flags: int = 0) -> bytes:
    return HEADER.pack(len(body), 1, seq, command, flags, 0) + body


def rpc_body(route: str, body: dict[str, Any]) -> bytes:
    return pb.RpcRequest(route=route, body=json.dumps(body).encode()).SerializeToString()


def guess(name: str, password: str, device_id: str | None = None) -> dict[str, Any]:
    return {"username": name, "password": password, "device_id": device_id or str(uuid.uuid4())}


async def read_frame(reader: asyncio.StreamReader, timeout: float = 10.0) -> Frame | None:
    """The next frame, or None at EOF."""
    try:
        head = await asyncio.wait_for(reader.readexactly(12), timeout)
        length, _, seq, command, flags, status = HEADER.unpack(head)
        body = await asyncio.wait_for(reader.readexactly(length), timeout)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return seq, command, flags, status, body


async def dial(port: int, ip: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare connection from the loopback address ``ip`` (each is its own client address)."""
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(ip, 0))


async def password_login(
    client: Client, name: str, password: str, device_id: str | None = None
) -> tuple[dict[str, Any], int]:
    """A password login that retries what the server refuses for load (BUSY, RATE_LIMITED)
    every 0.1 s: (the reply, attempts it took)."""
    attempts = 0
    while True:
        attempts += 1
        try:
            return await client.password_login(name, password, device_id), attempts
        except ServiceError as exc:
            assert exc.status in (Status.BUSY, Status.RATE_LIMITED), (exc.status, exc.code)
        await asyncio.sleep(0.1)


async def login_with(port: int, token: str, device_id: str) -> Client:
    client = await Client.connect("127.0.0.1", port)
    client.device_id = device_id
    await client.login(token)
    return client


# ---- 1. a token names the store that issued it ---------------------------------------------------


def test_tokens_of_an_earlier_store_are_refused_after_a_restart(tmp_path: pathlib.Path) -> None:
    """Two servers in turn on one data directory: the JWT secret persists, the memory store
    (users, revocations) does not, and user ids start again at 100000000."""
    # the secret lives in the data dir; the store does not (``--memory-only``)
    data = {"data_dir": str(tmp_path), "jwt_secret": "", "memory_only": True}
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


def test_with_the_embedded_store_tokens_and_revocations_survive_a_restart(
    tmp_path: pathlib.Path,
) -> None:
    """The default store persists its epoch, users and revocations: after a restart a token
    still logs in as the user it was issued to, and a revoked one stays revoked."""
    data = {"data_dir": str(tmp_path), "jwt_secret": ""}
    first = ServerThread(**data).start()
    try:

        async def before() -> dict[str, Any]:
            alice = await Client.connect("127.0.0.1", first.port)
            reg = await alice.register("alice", "password-alice")
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
                "revoked": again["token"],
                "revoked_device": other.device_id,
            }

        old = run(before())
    finally:
        first.stop()
    second = ServerThread(**data).start()
    try:

        async def after() -> None:
            mallory = await Client.connect("127.0.0.1", second.port)
            reg = await mallory.register("mallory", "password-mallory")
            assert reg["user_id"] != old["user_id"]  # ids are never reused
            c = await Client.connect("127.0.0.1", second.port)
            c.device_id = old["revoked_device"]
            assert await refused(c.login(old["revoked"])) == (
                Status.UNAUTHENTICATED,
                ErrorCode.TOKEN_REVOKED,
            )
            await c.close()
            alice = await Client.connect("127.0.0.1", second.port)
            alice.device_id = old["device"]
            resp = await alice.login(old["token"])
            assert resp.user_id == old["user_id"]  # still alice, not the newcomer
            await alice.close()
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


# ---- 3. password floods: bounded hashing, per-address and per-account limits -------------------


async def attacker(port: int, ip: str, stop: asyncio.Event, seen: collections.Counter[str]) -> None:
    """Hammer account/auth/login (wrong passwords for alice) and account/user/register, 4 in
    flight per connection; every other connection leaves at once without reading."""
    n = 0
    while not stop.is_set():
        try:
            reader, writer = await dial(port, ip)
        except OSError:
            seen["connect failed"] += 1
            await asyncio.sleep(0.05)
            continue
        data = b""
        for seq in range(1, 5):
            n += 1
            if n % 2:
                body = rpc_body("account/auth/login", guess("alice", f"guess-{n}"))
            else:
                name = f"m{ip.rsplit('.', 1)[1]}x{n}"
                body = rpc_body("account/user/register", guess(name, "password-x"))
            data += frame(seq, Cmd.RPC, body)
        writer.write(data)
        if n % 8 == 4:
            seen["left at once"] += 1
            writer.transport.abort()
            await asyncio.sleep(0)
            continue
        for _ in range(4):
            f = await read_frame(reader)
            if f is None:
                break
            _, command, flags, status, _ = f
            seen[f"{_NAMES.get(command, command)} status {status}"] += 1
            if command == Cmd.LOGOUT and flags & 3 == 2:
                break  # refused as a connection (the per-address connection rate)
        writer.close()


@pytest.mark.parametrize("addresses", [4, 32])
def test_a_password_flood_does_not_block_a_legitimate_login(
    make_server: Callable[..., ServerThread], addresses: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Attackers (two connections on each of 4, or one on each of 32 client addresses: then
    their first bursts alone overfill the hash queue, BUSY) flood login and register
    while alice logs in by password, from her own address and a new device. She gets in
    (retrying what is refused for load, attempts counted, 20 s a hang guard), the attackers
    are refused by their address's bucket (and, as it happens, by alice's account bucket
    and the backoff), and once they have gone the next login is served at its first try."""
    srv = make_server(**ARGON2)
    assert srv.server is not None
    server = srv.server

    async def main() -> None:
        owner = await Client.connect("127.0.0.1", srv.port)
        await owner.register("alice", "password-alice")  # from 127.0.0.1: known to her account
        await owner.close()
        stop = asyncio.Event()
        seen: collections.Counter[str] = collections.Counter()
        ips = [f"127.0.1.{i}" for i in range(1, addresses + 1)]
        if addresses < 8:
            ips += ips
        attackers = [asyncio.ensure_future(attacker(srv.port, ip, stop, seen)) for ip in ips]
        try:
            await asyncio.sleep(1.5)  # the flood is on
            queued = srv.call(lambda: server.hash_pool.queued)
            assert queued <= server.settings.hash_queue
            alice = await Client.connect("127.0.0.1", srv.port)
            t0 = time.monotonic()
            reply, attempts = await asyncio.wait_for(
                password_login(alice, "alice", "password-alice"),
                20,  # a hang guard
            )
            took = time.monotonic() - t0
            await alice.login()
            await alice.ready()
            assert await alice.ping() > 0
            print(f"\nalice logged in during the flood: {attempts} attempt(s), {took:.2f}s")
        finally:
            stop.set()
            await asyncio.gather(*attackers)
        # the attackers have gone: the next login is served at once, nothing queued before it
        late = await Client.connect("127.0.0.1", srv.port)
        _, attempts_after = await asyncio.wait_for(
            password_login(late, "alice", "password-alice"), 20
        )
        assert attempts_after == 1
        for c in (alice, late):
            await c.close()
        assert reply["user_id"] == alice.user_id
        refused = srv.call(lambda: dict(server.limits.login.refused))
        pool = srv.call(lambda: (server.hash_pool.ran, server.hash_pool.dropped))
        print(f"attackers saw {dict(seen)}; refused {refused}; hashes ran, dropped {pool}")
        limited = sum(n for k, n in seen.items() if k.endswith(f"status {Status.RATE_LIMITED}"))
        assert limited > 0
        assert refused["address"] > 0  # (the other limits have their own tests below)
        assert seen[f"RPC status {Status.INTERNAL}"] == 0
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback

    run(main(), timeout=90)


def test_jobs_of_a_connection_that_left_are_dropped(
    make_server: Callable[..., ServerThread],
) -> None:
    """One hash thread, a slow hash: a connection queues four logins and leaves. The first
    was already running; the three others never run."""
    srv = make_server(hash_workers=1, argon2_time_cost=3, argon2_memory_kib=65536)
    assert srv.server is not None
    pool = srv.server.hash_pool

    async def main() -> None:
        reg = await Client.connect("127.0.0.1", srv.port)
        await reg.register("dave", "password-dave")
        await reg.close()
        before = srv.call(lambda: (pool.ran, pool.dropped))
        reader, writer = await dial(srv.port, "127.0.0.2")
        writer.write(
            b"".join(
                frame(i, Cmd.RPC, rpc_body("account/auth/login", guess("dave", f"x{i}")))
                for i in range(1, 5)
            )
        )
        await writer.drain()
        while srv.call(lambda: pool.running + pool.queued) < 4:
            await asyncio.sleep(0.005)
        writer.transport.abort()
        # a login queued behind them is served after the one that was running
        c = await Client.connect("127.0.0.1", srv.port)
        await password_login(c, "dave", "password-dave")
        await c.close()
        ran, dropped = srv.call(lambda: (pool.ran, pool.dropped))
        assert (ran - before[0], dropped - before[1]) == (2, 3)

    run(main())


def test_password_attempts_per_address(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(login_rate_per_ip=0.01, login_burst_per_ip=3)

    async def main() -> None:
        c = await Client.connect("127.0.0.1", srv.port, local_addr=("127.0.0.2", 0))
        await c.register("erin", "password-erin")  # 1
        for _ in range(2):  # 2, 3
            assert await refused(c.password_login("erin", "nope-nope")) == (
                Status.UNAUTHENTICATED,
                ErrorCode.AUTH_REQUIRED,
            )
        for call in (  # the bucket is empty: refused before any hashing, login or register
            c.password_login("erin", "password-erin"),
            c.register("erin2", "password-erin2"),
        ):
            assert await refused(call) == (Status.RATE_LIMITED, ErrorCode.RATE_LIMIT_EXCEEDED)
        assert await c.ping() > 0  # refused, the connection stays usable
        # another address has its own bucket
        other = await Client.connect("127.0.0.1", srv.port, local_addr=("127.0.0.3", 0))
        await other.password_login("erin", "password-erin")
        for x in (c, other):
            await x.close()

    run(main())


def test_failed_logins_back_off_per_address_not_for_the_victim(
    make_server: Callable[..., ServerThread],
) -> None:
    srv = make_server(login_free_failures=3, login_backoff_max=30.0, account_fail_rate=0.0)

    async def main() -> None:
        victim = await Client.connect("127.0.0.1", srv.port)
        await victim.register("fay", "password-fay")
        mallory = await Client.connect("127.0.0.1", srv.port, local_addr=("127.0.0.2", 0))
        for _ in range(4):  # three free failures, then the fourth starts the backoff
            assert (await refused(mallory.password_login("fay", "guess-it")))[0] == (
                Status.UNAUTHENTICATED
            )
        # even the right password waits now, from that address
        assert await refused(mallory.password_login("fay", "password-fay")) == (
            Status.RATE_LIMITED,
            ErrorCode.RATE_LIMIT_EXCEEDED,
        )
        # fay, from her own address and a new device, is not locked out
        phone = await Client.connect("127.0.0.1", srv.port)
        await phone.password_login("fay", "password-fay", str(uuid.uuid4()))
        await phone.login()
        assert await phone.ping() > 0
        await asyncio.sleep(1.1)  # the first wait is 1 s
        await mallory.password_login("fay", "password-fay")  # and a success resets it
        for x in (victim, mallory, phone):
            await x.close()

    run(main())


def test_an_account_under_attack_stays_open_to_its_known_clients(
    make_server: Callable[..., ServerThread],
) -> None:
    srv = make_server(account_fail_burst=3, account_fail_rate=1.0, login_free_failures=100)

    async def main() -> None:
        home = await Client.connect("127.0.0.1", srv.port)
        await home.register("gus", "password-gus")  # 127.0.0.1 and this device: known
        laptop = await Client.connect("127.0.0.1", srv.port, local_addr=("127.0.0.9", 0))
        await laptop.password_login("gus", "password-gus")  # 127.0.0.9 and the laptop: known
        laptop_device = laptop.device_id
        await laptop.close()
        # failures from three addresses empty the account's bucket
        for i, ip in enumerate(("127.0.0.2", "127.0.0.3", "127.0.0.4")):
            m = await Client.connect("127.0.0.1", srv.port, local_addr=(ip, 0))
            assert (await refused(m.password_login("gus", f"guess-{i}")))[0] == (
                Status.UNAUTHENTICATED
            )
            await m.close()
        # a new address and device may not try the password now, not even the right one
        stranger = await Client.connect("127.0.0.1", srv.port, local_addr=("127.0.0.5", 0))
        assert await refused(stranger.password_login("gus", "password-gus")) == (
            Status.RATE_LIMITED,
            ErrorCode.RATE_LIMIT_EXCEEDED,
        )
        # known places still can: a known address with a new device, a known device elsewhere
        await home.password_login("gus", "password-gus", str(uuid.uuid4()))
        roaming = await Client.connect("127.0.0.1", srv.port, local_addr=("127.0.0.6", 0))
        await roaming.password_login("gus", "password-gus", laptop_device)
        # once failures stop, one token refills in 1 / account_fail_rate seconds
        await asyncio.sleep(1.1)
        await stranger.password_login("gus", "password-gus")
        for x in (home, roaming, stranger):
            await x.close()

    run(main())


# ---- 10. encrypted LOGIN floods: limited per address before the RSA step -------------------------


def test_encrypted_login_flood_is_refused_before_the_rsa_step(
    make_server: Callable[..., ServerThread],
) -> None:
    srv = make_server(
        encrypted_login_rate_per_ip=0.05, encrypted_login_burst_per_ip=5, conn_rate_per_ip=0.0
    )
    assert srv.server is not None and srv.server.server_key is not None
    modulus = srv.server.server_key.modulus_bytes
    limits = srv.server.limits.login

    async def main() -> None:
        statuses: collections.Counter[int] = collections.Counter()
        bogus = os.urandom(modulus + 64)  # RSA-OAEP block + sealed body: opens to nothing
        for _ in range(12):  # one bogus LOGIN per connection: a failed one closes it
            reader, writer = await dial(srv.port, "127.0.0.2")
            writer.write(frame(1, Cmd.LOGIN, bogus, ENC_RSA))
            f = await read_frame(reader)
            assert f is not None and f[1] == Cmd.LOGIN
            statuses[f[3]] += 1
            if f[3] == Status.RATE_LIMITED:
                assert pb.Error.FromString(f[4]).code == ErrorCode.RATE_LIMIT_EXCEEDED
                # refused, not closed: a PING still answers
                writer.write(frame(2, Cmd.PING, b""))
                pong = await read_frame(reader)
                assert pong is not None and pong[1] == Cmd.PING and pong[3] == 0
            else:
                assert await read_frame(reader) is None  # CRYPTO closes
            writer.close()
        # many on one connection: each is a bucket check, none reaches RSA
        reader, writer = await dial(srv.port, "127.0.0.2")
        writer.write(b"".join(frame(i, Cmd.LOGIN, bogus, ENC_RSA) for i in range(1, 31)))
        for _ in range(30):
            f = await read_frame(reader)
            assert f is not None
            statuses[f[3]] += 1
        writer.close()
        assert statuses == {Status.CRYPTO: 5, Status.RATE_LIMITED: 37}, statuses
        assert srv.call(lambda: limits.refused["encrypted"]) == 37
        # another address logs in encrypted as usual
        c = await user(srv.port, "hana", encrypted=True, local_addr=("127.0.0.3", 0))
        assert c.cipher is not None and await c.ping() > 0
        await c.close()

    run(main())


def test_known_clients_go_ahead_of_a_full_queue_of_strangers(
    make_server: Callable[..., ServerThread],
) -> None:
    srv = make_server(hash_workers=1, hash_queue=2, argon2_time_cost=3, argon2_memory_kib=65536)
    assert srv.server is not None
    pool = srv.server.hash_pool

    async def main() -> None:
        ivy = await Client.connect("127.0.0.1", srv.port)
        reg = await ivy.register("ivy", "password-ivy")  # this address and device: known
        # strangers: one job running, the queue full, the rest refused BUSY at once
        reader, writer = await dial(srv.port, "127.0.0.2")
        writer.write(
            b"".join(
                frame(i, Cmd.RPC, rpc_body("account/auth/login", guess("nobody", f"x{i}")))
                for i in range(1, 5)
            )
        )
        await writer.drain()
        first = await read_frame(reader)  # the one refused at once
        assert first is not None and first[3] == Status.BUSY
        assert pb.Error.FromString(first[4]).code == ErrorCode.SYSTEM_BUSY
        assert srv.call(lambda: (pool.running, pool.queued)) == (1, 2)
        # ivy's login takes the place of the newest stranger's and runs next
        reply, attempts = await password_login(ivy, "ivy", "password-ivy")
        assert attempts == 1 and reply["user_id"] == reg["user_id"]
        statuses: collections.Counter[int] = collections.Counter()
        for _ in range(3):
            f = await read_frame(reader)
            assert f is not None
            statuses[f[3]] += 1
        assert statuses == {Status.BUSY: 1, Status.UNAUTHENTICATED: 2}, statuses
        writer.close()
        await ivy.close()

    run(main())


def test_login_limit_tables_are_bounded_and_swept(monkeypatch: pytest.MonkeyPatch) -> None:
    """What an attacker with many addresses and names can make the limits remember."""
    from privchat_tcp.config import Settings
    from privchat_tcp.net import limits

    monkeypatch.setattr(limits, "MAX_TRACKED", 50)
    login = limits.LoginLimits(Settings())
    now = 1000.0
    for i in range(500):
        ip, name = f"10.0.{i // 250}.{i % 250}", f"name-{i}" * 40  # 40 x longer than a name
        assert login.admit(ip, name, "device", now) == ("", False)
        login.failed(ip, name, now)
    assert login.sizes() == {"addresses": 50, "encrypted_addresses": 0, "pairs": 50, "accounts": 50}
    # once nothing limits any more (buckets full, failures old), the sweep forgets it all
    later = now + limits.FAILURE_MEMORY + 3600
    for _ in range(3):
        login.sweep(later)
    assert login.sizes() == {"addresses": 0, "encrypted_addresses": 0, "pairs": 0, "accounts": 0}
    # IPv6 clients are one address per /64
    assert limits.address_key("2001:db8:1:2:aaaa::1") == limits.address_key("2001:db8:1:2::9")
    assert limits.address_key("::ffff:192.0.2.7") == "192.0.2.7"

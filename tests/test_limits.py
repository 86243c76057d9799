"""Connection, device, rate and slow-consumer limits; login and heartbeat deadlines (over TCP)."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import uuid
from collections.abc import Callable

from conftest import ServerThread, run, user

from privchat_tcp.client import Client
from privchat_tcp.config import Settings
from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.wire.commands import Cmd

HEADER = struct.Struct("!IBIBBB")
Frame = tuple[int, int, int, int, bytes]  # seq, command, flags, status, body


def frame(seq: int, command: int, body: bytes = b"", flags: int = 0) -> bytes:
    return HEADER.pack(len(body), 1, seq, command, flags, 0) + body


class Raw:
    """A bare TCP connection that reads frames itself."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, rcvbuf: int = 0) -> Raw:
        if rcvbuf:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 22)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def read_frame(self, timeout: float = 5.0) -> Frame | None:
        """The next frame, or None at EOF."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(12), timeout)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        length, _, seq, command, flags, status = HEADER.unpack(head)
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return seq, command, flags, status, body

    async def until_logout(self, timeout: float = 10.0) -> tuple[Frame | None, int]:
        """Read until a LOGOUT push (returned) or EOF; also returns how many frames came first."""
        n = 0
        deadline = time.monotonic() + timeout
        while True:
            f = await self.read_frame(max(0.1, deadline - time.monotonic()))
            if f is None or (f[1] == Cmd.LOGOUT and f[2] & 3 == 2):
                return f, n
            n += 1

    async def at_eof(self, timeout: float = 5.0) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(1 << 20), timeout)
            while data:
                data = await asyncio.wait_for(self.reader.read(1 << 20), timeout)
        except ConnectionError:
            pass
        return True

    def close(self) -> None:
        self.writer.close()


def logout_reason(f: Frame | None) -> tuple[int, int]:
    assert f is not None, "connection closed without a LOGOUT push"
    _, command, flags, status, body = f
    assert command == Cmd.LOGOUT and flags & 3 == 2
    return status, pb.Error.FromString(body).code


async def still_fine(*clients: Client) -> None:
    for c in clients:
        assert await asyncio.wait_for(c.ping(), 5) > 0


def test_defaults() -> None:
    s = Settings()
    assert s.max_devices_per_user == 10
    assert s.max_connections > 0 and s.rate_per_connection > 0 and s.rate_per_user > 0
    assert 0 < s.push_high_water <= s.push_hard_limit
    assert s.slow_consumer_timeout == 10.0


def test_max_connections_busy(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(max_connections=3)

    async def main() -> None:
        clients = [await Client.connect("127.0.0.1", srv.port) for _ in range(3)]
        await still_fine(*clients)
        extra = await Raw.open(srv.port)
        status, code = logout_reason(await extra.read_frame())
        assert (status, code) == (Status.BUSY, ErrorCode.SYSTEM_BUSY)
        assert await extra.read_frame() is None  # closed
        extra.close()
        await still_fine(*clients)
        await clients[0].close()
        await asyncio.sleep(0.1)
        again = await Client.connect("127.0.0.1", srv.port)  # a slot is free again
        await still_fine(again, *clients[1:])
        for c in (again, *clients[1:]):
            await c.close()

    run(main())
    assert srv.call(lambda: srv.server.stats.rejected_busy) == 1  # type: ignore[union-attr]


def test_max_devices_per_user(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(max_devices_per_user=2)

    async def main() -> None:
        d1, d2, d3 = (str(uuid.uuid4()) for _ in range(3))
        first = await user(srv.port, "dora", d1)
        second = await Client.connect("127.0.0.1", srv.port)
        await second.password_login("dora", "password-dora", d2)
        await second.login()
        third = await Client.connect("127.0.0.1", srv.port)
        await third.password_login("dora", "password-dora", d3)
        try:
            await third.login()
        except ServiceError as exc:
            assert exc.status == Status.BUSY
            assert exc.code == ErrorCode.DEVICE_LIMIT_EXCEEDED
        else:
            raise AssertionError("a third device logged in")
        await still_fine(first, second, third)  # the refused connection stays usable
        # the same device again is a replacement, not one more device
        again = await Client.connect("127.0.0.1", srv.port)
        await again.login(second.token, d2)
        await still_fine(first, again)
        for c in (first, second, third, again):
            await c.close()

    run(main())


async def ping_burst(c: Client, n: int) -> list[int]:
    """Send n PINGs in one go on a logged-in client; the status of each reply, in order."""
    loop = asyncio.get_running_loop()
    futs = []
    for _ in range(n):
        seq = c.send_raw(Cmd.PING, b"")
        fut: asyncio.Future[tuple[int, int, bytes]] = loop.create_future()
        c._waiters[seq] = fut
        futs.append(fut)
    return [r[0] for r in await asyncio.wait_for(asyncio.gather(*futs), 10)]


def test_rate_limit_pauses_then_refuses(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(rate_per_connection=20.0, burst_per_connection=20, rate_limit_grace=0.5)

    async def main() -> None:
        other = await Client.connect("127.0.0.1", srv.port)
        raw = await Raw.open(srv.port)
        start = time.monotonic()
        raw.writer.write(b"".join(frame(i, Cmd.PING) for i in range(1, 101)))
        statuses: dict[int, int] = {}
        times: dict[int, float] = {}
        while len(statuses) < 100:
            f = await raw.read_frame(5)
            assert f is not None
            statuses[f[0]] = f[3]
            times[f[0]] = time.monotonic() - start
            if len(statuses) == 25:
                await still_fine(other)  # another connection is served meanwhile
        ok = [s for s in sorted(statuses) if statuses[s] == Status.OK]
        refused = [s for s in statuses if statuses[s] == Status.RATE_LIMITED]
        assert len(ok) + len(refused) == 100
        assert 20 <= len(ok) <= 35, len(ok)  # the burst, plus what fits in the grace period
        assert ok == list(range(1, len(ok) + 1))  # served in order
        assert max(times[s] for s in ok) >= 0.3  # the held ones waited for tokens
        assert min(refused) > max(ok)
        # after a pause the connection is served again
        await asyncio.sleep(1.2)
        raw.writer.write(frame(500, Cmd.PING))
        f = await raw.read_frame(5)
        assert f is not None and f[0] == 500 and f[3] == Status.OK
        await still_fine(other)
        raw.close()
        await other.close()

    run(main())


def test_rate_limit_encrypted_session_keeps_counters(
    make_server: Callable[..., ServerThread],
) -> None:
    srv = make_server(rate_per_connection=20.0, burst_per_connection=20, rate_limit_grace=0.2)
    key_pem = srv.call(lambda: srv.server.server_key.public_pem())  # type: ignore[union-attr]

    async def main() -> None:
        c = await Client.connect("127.0.0.1", srv.port)
        await c.register("erin", "password-erin")
        await c.login(server_key=key_pem)
        statuses = await ping_burst(c, 60)
        assert Status.RATE_LIMITED in statuses and Status.OK in statuses
        await asyncio.sleep(1.5)
        await still_fine(c)  # the counters are still in step
        await c.close()

    run(main())


def test_rate_per_user_is_shared_by_its_devices(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(
        rate_per_connection=0, rate_per_user=4.0, burst_per_user=20, rate_limit_grace=1.0
    )

    async def main() -> None:
        d1, d2 = str(uuid.uuid4()), str(uuid.uuid4())
        first = await user(srv.port, "fay", d1)
        second = await Client.connect("127.0.0.1", srv.port)
        await second.password_login("fay", "password-fay", d2)
        await second.login()
        other = await user(srv.port, "gus")
        # 2 x 30 frames of one user: over its bucket (20 + 4/s), though no connection limit
        both = await asyncio.gather(ping_burst(first, 30), ping_burst(second, 30))
        statuses = both[0] + both[1]
        ok = statuses.count(Status.OK)
        refused = statuses.count(Status.RATE_LIMITED)
        assert ok + refused == 60
        assert 15 <= ok <= 30, ok  # the burst plus what fits the grace period, no more
        assert refused >= 30
        # another user with the same limit is untouched: 20 frames fit its own bucket
        assert await ping_burst(other, 20) == [Status.OK] * 20
        # the drained bucket outlives a reconnect: a new connection of the user gets no fresh
        # burst (a fresh bucket would serve 20 of these at once, plus the grace period's)
        await first.close()
        again = await Client.connect("127.0.0.1", srv.port)
        await again.login(first.token, d1)
        assert (await ping_burst(again, 25)).count(Status.OK) < 20
        # the user is served again once the bucket refills
        await asyncio.sleep(4.0)
        assert await ping_burst(again, 3) == [Status.OK] * 3
        assert await ping_burst(second, 3) == [Status.OK] * 3
        for c in (second, other, again):
            await c.close()

    run(main())


def test_user_buckets_are_forgotten_once_offline_and_full(
    make_server: Callable[..., ServerThread],
) -> None:
    srv = make_server(rate_per_connection=0, rate_per_user=1000.0, burst_per_user=10)

    def buckets() -> int:
        return srv.server.limits.user_bucket_count()  # type: ignore[union-attr]

    async def main() -> None:
        clients = [await user(srv.port, f"hal{i}") for i in range(3)]
        for c in clients:
            await c.ping()
        assert srv.call(buckets) == 3  # one per online user
        await clients[0].close()
        deadline = time.monotonic() + 5
        while srv.call(buckets) != 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert srv.call(buckets) == 2  # the offline user's, once full again (the 1 s sweep)
        await still_fine(clients[1], clients[2])
        for c in clients[1:]:
            await c.close()
        while srv.call(buckets) and time.monotonic() < deadline + 5:
            await asyncio.sleep(0.1)
        assert srv.call(buckets) == 0

    run(main())


def test_conn_rate_per_ip(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(conn_rate_per_ip=0.5, conn_burst_per_ip=3)

    async def main() -> None:
        clients = [await Client.connect("127.0.0.1", srv.port) for _ in range(3)]
        await still_fine(*clients)
        extra = await Raw.open(srv.port)
        status, code = logout_reason(await extra.read_frame())
        assert (status, code) == (Status.RATE_LIMITED, ErrorCode.RATE_LIMIT_EXCEEDED)
        assert await extra.read_frame() is None
        extra.close()
        await still_fine(*clients)
        for c in clients:
            await c.close()

    run(main())


async def _flood(sender: Client, to_user: int, n: int, size: int) -> None:
    payload = b"x" * size
    for i in range(0, n, 20):
        await asyncio.gather(
            *(sender.send(to_user=to_user, payload=payload) for _ in range(min(20, n - i)))
        )


async def _stuck_receiver(port: int, name: str) -> tuple[Raw, int]:
    """A logged-in, READY session that reads nothing, with a small receive buffer."""
    reg = await Client.connect("127.0.0.1", port)
    await reg.register(name, "password-" + name, str(uuid.uuid4()))
    token, uid = reg.token, 0
    await reg.close()
    raw = await Raw.open(port, rcvbuf=4096)
    req = reg.login_request(token)
    raw.writer.write(frame(1, Cmd.LOGIN, req.SerializeToString()))
    f = await raw.read_frame()
    assert f is not None and f[3] == 0, f
    uid = pb.AuthorizationResponse.FromString(f[4]).user_id
    body = pb.RpcRequest(route="sync/session_ready", body=b"{}").SerializeToString()
    raw.writer.write(frame(2, Cmd.RPC, body))
    f = await raw.read_frame()
    assert f is not None and f[3] == 0, f
    raw.writer.transport.pause_reading()  # type: ignore[attr-defined]
    return raw, uid


def test_slow_consumer_hard_limit(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(
        push_high_water=64 << 10,
        push_hard_limit=256 << 10,
        rate_per_connection=100000.0,
        burst_per_connection=100000,
    )

    async def main() -> None:
        raw, uid = await _stuck_receiver(srv.port, "slowpoke")
        sender = await user(srv.port, "fastpoke")
        bystander = await user(srv.port, "bystander")
        # many megabytes more than the hard limit plus what the kernel buffers
        deadline = time.monotonic() + 20
        while srv.call(lambda: srv.server.stats.slow_consumers) == 0:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the slow consumer was never ended"
            await _flood(sender, uid, 100, 16 << 10)
            await still_fine(bystander)
        largest = srv.call(
            lambda: max(  # type: ignore[union-attr]
                (
                    s.transport.get_write_buffer_size()
                    for s in srv.server.connections
                    if s.transport is not None
                ),
                default=0,
            )
        )
        assert largest <= (256 << 10) + (64 << 10)
        raw.writer.transport.resume_reading()  # type: ignore[attr-defined]
        f, n = await raw.until_logout(10)
        assert logout_reason(f) == (Status.SLOW_CONSUMER, ErrorCode.SYSTEM_BUSY)
        assert n > 0
        assert await raw.at_eof()
        raw.close()
        # the sender and the bystander are unaffected
        await still_fine(sender, bystander)
        r = await sender.send(to_user=bystander.user_id, text="still here")
        push = await bystander.next_push(5)
        assert push.message.message_seq == r.message_seq
        await sender.close()
        await bystander.close()

    run(main())


def test_slow_consumer_soft_limit_timeout(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(
        push_high_water=16 << 10,
        push_hard_limit=64 << 20,
        slow_consumer_timeout=1.0,
        rate_per_connection=100000.0,
        burst_per_connection=100000,
    )

    async def main() -> None:
        raw, uid = await _stuck_receiver(srv.port, "snail")
        sender = await user(srv.port, "hare")
        deadline = time.monotonic() + 20
        while not srv.call(
            lambda: any(  # type: ignore[union-attr]
                s.slow_since for s in srv.server.connections
            )
        ):
            assert time.monotonic() < deadline, "never above the soft limit"
            await _flood(sender, uid, 60, 16 << 10)
        t0 = time.monotonic()
        while srv.call(lambda: srv.server.stats.slow_consumers) == 0:  # type: ignore[union-attr]
            assert time.monotonic() - t0 < 5, "not ended after slow_consumer_timeout"
            await asyncio.sleep(0.1)
        assert time.monotonic() - t0 >= 0.0
        raw.writer.transport.resume_reading()  # type: ignore[attr-defined]
        f, _ = await raw.until_logout(10)
        assert logout_reason(f)[0] == Status.SLOW_CONSUMER
        raw.close()
        await still_fine(sender)
        await sender.close()

    run(main())


def test_login_deadline(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(login_timeout=0.5)

    async def main() -> None:
        ok = await user(srv.port, "punctual")
        raw = await Raw.open(srv.port)
        raw.writer.write(frame(1, Cmd.PING))  # PING before login does not extend the deadline
        f = await raw.read_frame()
        assert f is not None and f[1] == Cmd.PING and f[3] == 0
        start = time.monotonic()
        status, code = logout_reason(await raw.read_frame(5))
        assert (status, code) == (Status.TIMEOUT, ErrorCode.TIMEOUT)
        assert time.monotonic() - start < 3
        assert await raw.read_frame() is None
        raw.close()
        await still_fine(ok)
        await ok.close()

    run(main())


def test_heartbeat_timeout(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(heartbeat_interval=1)

    async def main() -> None:
        silent = await user(srv.port, "silent")
        chatty = await user(srv.port, "chatty")
        start = time.monotonic()
        while silent.closed_by_server is None:
            assert time.monotonic() - start < 6, "no TIMEOUT"
            await chatty.ping()
            await asyncio.sleep(0.3)
        elapsed = time.monotonic() - start
        assert 1.5 <= elapsed <= 4.5, elapsed
        push = silent.closed_by_server
        assert push.status == Status.TIMEOUT and push.message.code == ErrorCode.TIMEOUT
        await silent.wait_closed()
        await still_fine(chatty)
        await chatty.close()

    run(main())


def test_slow_consumer_encrypted_session(make_server: Callable[..., ServerThread]) -> None:
    """No sealed frame is dropped before the LOGOUT: the client opens it (its cipher never
    fails). Were sealed frames dropped, the server would close without a LOGOUT instead."""
    srv = make_server(
        push_high_water=64 << 10,
        push_hard_limit=256 << 10,
        rate_per_connection=100000.0,
        burst_per_connection=100000,
    )
    key_pem = srv.call(lambda: srv.server.server_key.public_pem())  # type: ignore[union-attr]

    async def main() -> None:
        slow = await Client.connect("127.0.0.1", srv.port, track=False)
        await slow.register("cipherslow", "password-cipherslow")
        await slow.login(server_key=key_pem)
        await slow.ready()
        failures: list[BaseException] = []
        on_frame = slow._on_frame

        def checked(*args: object) -> None:
            try:
                on_frame(*args)  # type: ignore[arg-type]
            except Exception as exc:
                failures.append(exc)
                raise

        slow._on_frame = checked  # type: ignore[method-assign]
        assert slow._proto is not None and slow._proto.transport is not None
        slow._proto.transport.pause_reading()
        sender = await user(srv.port, "cipherfast")
        deadline = time.monotonic() + 30
        while srv.call(lambda: srv.server.stats.slow_consumers) == 0:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the slow consumer was never ended"
            await _flood(sender, slow.user_id, 100, 16 << 10)
        slow._proto.transport.resume_reading()
        await slow.wait_closed(10)
        assert not failures, failures
        # pushes wait unsealed (pending), so the LOGOUT is the next frame the client can open
        assert slow.closed_by_server is not None
        assert slow.closed_by_server.status == Status.SLOW_CONSUMER
        await still_fine(sender)
        await sender.close()

    run(main())

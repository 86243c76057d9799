"""Memory and output bounds (issue 10), over TCP: reply pages and the READY catch-up bounded by
bytes, the per-user message quotas (bytes per second, bytes stored), the frame deadline (whole
frames only are liveness), and the slow consumer's abort once its close grace is over.

The pipelined-MP attack against a server process, with its RSS, is in ``test_scale.py``."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable

import pytest
from conftest import ServerThread, device, run, user
from test_limits import Raw, _flood, _stuck_receiver, frame, logout_reason, still_fine

from privchat_tcp.client import Client
from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.net.tcp import TcpConnection
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.wire.commands import Cmd

PAGE = 64 << 10  # max_reply_bytes of these tests
SIZE = 20_000  # a message: three fit in a page (3 x (20,000 + 64) bytes), four do not


async def _store(sender: Client, to_user: int, n: int, size: int = SIZE) -> int:
    """``n`` messages of ``size`` bytes (payload b"<i>xxx...") to ``to_user``; the channel id."""
    channel = 0
    for i in range(n):
        payload = str(i).encode().ljust(size, b"x")
        channel = (await sender.send(to_user=to_user, payload=payload)).channel_id
    return channel


# ---- reply pages and the catch-up, bounded by bytes ----------------------------------------------


def test_mp_pages_are_bounded_by_bytes(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(max_reply_bytes=PAGE)

    async def main() -> None:
        a = await user(srv.port, "pager-a")
        b = await user(srv.port, "pager-b")
        channel = await _store(a, b.user_id, 10)
        huge = b"h" * 300_000  # larger than a page: alone on its page, whole
        await a.send(to_user=b.user_id, payload=huge)
        pages: list[list[int]] = []
        last = 0
        while True:
            diff = await a.pull(channel, last, 1000)
            seqs = [m.message_seq for m in diff.messages]
            pages.append(seqs)
            assert seqs == list(range(last + 1, last + 1 + len(seqs))), seqs
            if not diff.has_more:
                break
            last = seqs[-1]
        assert [len(p) for p in pages] == [3, 3, 3, 1, 1], pages
        assert diff.messages[0].payload == huge and diff.current_pts == 11
        # the count limit still applies below the byte bound
        assert len((await a.pull(channel, 0, 2)).messages) == 2
        await a.close()
        await b.close()

    run(main())


def test_get_difference_pages_are_bounded_by_bytes(
    make_server: Callable[..., ServerThread],
) -> None:
    srv = make_server(max_reply_bytes=PAGE)

    async def main() -> None:
        a = await user(srv.port, "jsonpager-a")
        b = await user(srv.port, "jsonpager-b")
        channel = await _store(a, b.user_id, 7)
        got: list[int] = []
        sizes: list[int] = []
        last = 0
        while True:
            reply = await a.rpc(
                "sync/get_difference",
                {"channel_id": channel, "channel_type": 1, "last_pts": last, "limit": 1000},
            )
            pts = [c["pts"] for c in reply["commits"]]
            sizes.append(len(pts))
            got += pts
            if not reply["has_more"]:
                break
            last = pts[-1]
        assert got == list(range(1, 8)) and sizes == [3, 3, 1], sizes
        await a.close()
        await b.close()

    run(main())


def test_catch_up_pushes_are_bounded_by_bytes(make_server: Callable[..., ServerThread]) -> None:
    """Ten missed messages of 20 KB: a page's worth is pushed at READY, an MN says the rest is
    there, and the client pulls it (in byte-bounded pages) and gets all ten, in order."""
    srv = make_server(max_reply_bytes=PAGE)

    async def main() -> None:
        a = await user(srv.port, "catchup-a")
        reg = await Client.connect("127.0.0.1", srv.port)
        b_id = int((await reg.register("catchup-b", "password-catchup-b"))["user_id"])
        token, b_dev = reg.token, reg.device_id
        await reg.close()
        await _store(a, b_id, 10)
        b = await device(srv.port, token, b_dev)  # READY: the catch-up
        pushed: list[int] = []
        notified = 0
        deadline = time.monotonic() + 10
        while len(pushed) < 10:
            assert time.monotonic() < deadline, (pushed, notified)
            push = await b.next_push(5)
            if push.command == Cmd.MN:
                notified += 1
            else:
                pushed.append(push.message.message_seq)
        assert pushed == list(range(1, 11))
        assert notified == 1  # the pushes stopped at a page, then one MN
        await a.close()
        await b.close()

    run(main())


# ---- per-user quotas -----------------------------------------------------------------------------


def _refused(exc: pytest.ExceptionInfo[ServiceError]) -> tuple[int, int]:
    return exc.value.status, exc.value.code


def test_message_bytes_rate_per_user(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(rate_bytes_per_user=10_000.0, burst_bytes_per_user=100_000)

    async def main() -> None:
        a = await user(srv.port, "byterate-a", str(uuid.uuid4()))
        b = await user(srv.port, "byterate-b")
        payload = b"r" * 40_000
        first = await a.send(to_user=b.user_id, payload=payload, local_message_id=1)
        await a.send(to_user=b.user_id, payload=payload, local_message_id=2)
        with pytest.raises(ServiceError) as refused:  # 80 KB of 100 KB spent, 40 KB more
            await a.send(to_user=b.user_id, payload=payload, local_message_id=3)
        assert _refused(refused) == (Status.RATE_LIMITED, ErrorCode.SEND_MESSAGE_TOO_FAST)
        # a retry of a committed message stores nothing: still answered, with the original
        again = await a.send(to_user=b.user_id, payload=payload, local_message_id=1)
        assert (again.server_message_id, again.message_seq) == (
            first.server_message_id,
            first.message_seq,
        )
        # sync/submit draws on the same bucket, and so does the user's other device
        with pytest.raises(ServiceError) as refused:
            await a.rpc(
                "sync/submit",
                {
                    "local_message_id": 4,
                    "channel_id": first.channel_id,
                    "channel_type": 1,
                    "payload": {"text": "t" * 40_000},
                },
            )
        assert _refused(refused) == (Status.RATE_LIMITED, ErrorCode.SEND_MESSAGE_TOO_FAST)
        other = await Client.connect("127.0.0.1", srv.port)
        await other.password_login("byterate-a", "password-byterate-a", str(uuid.uuid4()))
        await other.login()
        await other.ready()
        with pytest.raises(ServiceError) as refused:
            await other.send(to_user=b.user_id, payload=payload)
        assert _refused(refused)[1] == ErrorCode.SEND_MESSAGE_TOO_FAST
        # the connection stays up, other users are not limited by it
        await still_fine(a, other)
        await b.send(to_user=a.user_id, payload=payload)
        # and the bucket refills (10 KB/s): 40 KB fit again after 4 s
        await asyncio.sleep(4.2)
        await a.send(to_user=b.user_id, payload=payload)
        assert srv.call(lambda: srv.server.stats.errors_by_status[Status.RATE_LIMITED]) == 3  # type: ignore[union-attr]
        for c in (a, b, other):
            await c.close()

    run(main())


def test_stored_bytes_quota_per_user(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(max_stored_bytes_per_user=100_000)

    async def main() -> None:
        a = await user(srv.port, "quota-a", str(uuid.uuid4()))
        b = await user(srv.port, "quota-b")
        payload = b"q" * 30_000
        first = await a.send(to_user=b.user_id, payload=payload, local_message_id=1)
        for i in (2, 3):
            await a.send(to_user=b.user_id, payload=payload, local_message_id=i)
        with pytest.raises(ServiceError) as refused:  # 3 x (30,000 + the store's own) stored
            await a.send(to_user=b.user_id, payload=payload, local_message_id=4)
        assert _refused(refused) == (Status.TOO_LARGE, ErrorCode.STORAGE_QUOTA_EXCEEDED)
        with pytest.raises(ServiceError) as refused:
            await a.rpc(
                "sync/submit",
                {
                    "local_message_id": 5,
                    "channel_id": first.channel_id,
                    "channel_type": 1,
                    "payload": {"text": "s" * 20_000},
                },
            )
        assert _refused(refused) == (Status.TOO_LARGE, ErrorCode.STORAGE_QUOTA_EXCEEDED)
        # a retry of a stored message is answered; nothing new was stored
        again = await a.send(to_user=b.user_id, payload=payload, local_message_id=1)
        assert again.message_seq == first.message_seq
        diff = await b.pull(first.channel_id, 0, 100)
        assert [m.message_seq for m in diff.messages] == [1, 2, 3]
        # per user: b still has its quota; a small message of a's still fits
        await b.send(to_user=a.user_id, payload=payload)
        await a.send(to_user=b.user_id, text="small")
        assert srv.call(lambda: srv.server.store.user_bytes(a.user_id)) > 90_000  # type: ignore[union-attr]
        await still_fine(a, b)
        await a.close()
        await b.close()

    run(main())


# ---- the frame deadline: whole frames only are liveness ------------------------------------------


async def _raw_session(port: int, name: str) -> Raw:
    """A logged-in, READY session on a bare connection."""
    reg = await Client.connect("127.0.0.1", port)
    await reg.register(name, "password-" + name, str(uuid.uuid4()))
    token = reg.token
    await reg.close()
    raw = await Raw.open(port)
    raw.writer.write(frame(1, Cmd.LOGIN, reg.login_request(token).SerializeToString()))
    f = await raw.read_frame()
    assert f is not None and f[1] == Cmd.LOGIN and f[3] == 0, f
    body = pb.RpcRequest(route="sync/session_ready", body=b"{}").SerializeToString()
    raw.writer.write(frame(2, Cmd.RPC, body))
    f = await raw.read_frame()
    assert f is not None and f[3] == 0, f
    return raw


async def _trickle(raw: Raw, data: bytes, every: float) -> None:
    """Write ``data`` one byte at a time, ``every`` seconds apart, until the server closes."""
    try:
        for b in data:
            raw.writer.write(bytes([b]))
            await raw.writer.drain()
            await asyncio.sleep(every)
    except ConnectionError:
        pass


def test_frame_that_never_completes_times_out(make_server: Callable[..., ServerThread]) -> None:
    """Slowloris after login: a frame fed one byte per 0.2 s (well inside any heartbeat) is
    ended by the frame deadline with LOGOUT flow 2 TIMEOUT, then closed."""
    srv = make_server(frame_timeout=1.0, heartbeat_interval=300)

    async def main() -> None:
        ok = await user(srv.port, "loris-ok")
        raw = await _raw_session(srv.port, "loris")
        body = pb.PingRequest().SerializeToString().ljust(200, b"\0")
        start = time.monotonic()
        feeder = asyncio.ensure_future(_trickle(raw, frame(3, Cmd.PING, body), 0.2))
        f, _ = await raw.until_logout(10)
        elapsed = time.monotonic() - start
        assert logout_reason(f) == (Status.TIMEOUT, ErrorCode.TIMEOUT)
        assert pb.Error.FromString(f[4]).message == "frame not completed in time"  # type: ignore[index]
        assert 1.0 <= elapsed < 4.0, elapsed
        assert await raw.read_frame() is None  # closed
        feeder.cancel()
        raw.close()
        await still_fine(ok)
        await ok.close()

    run(main())


def test_partial_frame_bytes_are_not_heartbeats(make_server: Callable[..., ServerThread]) -> None:
    """With the frame deadline off, the heartbeat still ends the trickle: its bytes never make
    a whole frame, so they are not liveness."""
    srv = make_server(frame_timeout=0.0, heartbeat_interval=1)

    async def main() -> None:
        raw = await _raw_session(srv.port, "loris-hb")
        start = time.monotonic()
        feeder = asyncio.ensure_future(_trickle(raw, frame(3, Cmd.PING, b"\0" * 500), 0.2))
        f, _ = await raw.until_logout(10)
        assert logout_reason(f) == (Status.TIMEOUT, ErrorCode.TIMEOUT)
        assert pb.Error.FromString(f[4]).message == "heartbeat missed"  # type: ignore[index]
        assert time.monotonic() - start < 5.0
        feeder.cancel()
        raw.close()

    run(main())


def test_slow_but_whole_frames_keep_the_session(
    make_server: Callable[..., ServerThread],
) -> None:
    """The deadline is per frame: frames that each complete within it keep the session,
    even when no read ever ends on a frame boundary for longer than the deadline."""
    srv = make_server(frame_timeout=1.0, heartbeat_interval=300)

    async def main() -> None:
        raw = await _raw_session(srv.port, "steady")
        stream = b"".join(frame(10 + i, Cmd.PING) for i in range(12))
        step = 5  # 12-byte frames in 5-byte writes: most writes end inside a frame
        t0 = time.monotonic()
        for i in range(0, len(stream), step):
            raw.writer.write(stream[i : i + step])
            await asyncio.sleep(0.15)
        assert time.monotonic() - t0 > 2.0  # longer than the deadline, in all
        seqs = []
        while len(seqs) < 12:
            f = await raw.read_frame()
            assert f is not None, seqs
            assert not (f[1] == Cmd.LOGOUT and f[2] & 3 == 2), logout_reason(f)
            seqs.append(f[0])
        assert seqs == list(range(10, 22))
        raw.close()

    run(main())


# ---- the slow consumer's close ends in a real abort ---------------------------------------------

_FIN_WAIT1 = "04"


def _server_sockets(server_port: int, peer_port: int) -> list[tuple[str, int]]:
    """(state, send queue) of this process's server-side sockets for that peer port, from
    /proc/<pid>/net/tcp (the server runs in this process, in a thread)."""
    found = []
    with open(f"/proc/{os.getpid()}/net/tcp") as fh:
        next(fh)
        for line in fh:
            parts = line.split()
            local, remote, state, queues = parts[1], parts[2], parts[3], parts[4]
            if int(local.split(":")[1], 16) == server_port and (
                int(remote.split(":")[1], 16) == peer_port
            ):
                found.append((state, int(queues.split(":")[0], 16)))
    return found


def test_slow_consumer_close_ends_in_an_abort(
    make_server: Callable[..., ServerThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow consumer that never reads again: the LOGOUT cannot be written, so ``close``
    schedules ``abort`` after its 5 s grace; the abort resets the socket (SO_LINGER 0), so the
    kernel keeps no orphaned FIN-WAIT-1 socket with megabytes queued for it."""
    aborts: list[tuple[str, int]] = []
    real_abort = TcpConnection.abort

    def spy(self: TcpConnection, reset: bool = False) -> None:
        if not self.lost and self.transport is not None:
            aborts.append((self.peer, self.transport.get_write_buffer_size()))
        real_abort(self, reset)

    monkeypatch.setattr(TcpConnection, "abort", spy)
    srv = make_server(
        push_high_water=64 << 10,
        push_hard_limit=256 << 10,
        rate_per_connection=100000.0,
        burst_per_connection=100000,
        rate_bytes_per_user=0.0,
    )

    async def main() -> None:
        raw, uid = await _stuck_receiver(srv.port, "never-reads")
        peer_port = raw.writer.get_extra_info("sockname")[1]
        sender = await user(srv.port, "keeps-sending")
        deadline = time.monotonic() + 20
        while srv.call(lambda: srv.server.stats.slow_consumers) == 0:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the slow consumer was never ended"
            await _flood(sender, uid, 100, 16 << 10)
        ended = time.monotonic()
        # closing, with its LOGOUT and what the kernel would not take still queued
        sockets = _server_sockets(srv.port, peer_port)
        assert sockets and sockets[0][1] > 0, sockets
        assert not aborts
        while not aborts:
            assert time.monotonic() - ended < 8, "close() never aborted"
            await asyncio.sleep(0.1)
        assert time.monotonic() - ended >= 4.0  # after the grace, not at once
        assert aborts[0][1] > 0  # queued bytes were dropped with the reset
        await asyncio.sleep(0.2)
        # the kernel socket is gone: no FIN-WAIT-1 (or any state) for that peer
        assert _server_sockets(srv.port, peer_port) == []
        raw.writer.transport.resume_reading()  # type: ignore[attr-defined]
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            while True:  # what was in flight, then the reset
                await asyncio.wait_for(raw.reader.readexactly(1 << 16), 5)
        raw.close()
        await still_fine(sender)
        await sender.close()

    run(main(), timeout=60)

"""Scale and abuse over real loopback TCP, against a server subprocess.

The server runs as ``python -m privchat_tcp serve`` (through a ``-c`` wrapper that raises its fd
soft limit), so its RSS is read from ``/proc/<pid>/status`` and its descriptors do not count
against this process. ``PRIVCHAT_SCALE`` (default 10000) scales the session counts of the
slow-reader and reconnect-storm tests down for quick local runs.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import KEY_FILE, run

from privchat_tcp.client import Client
from privchat_tcp.errors import Status
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.service.auth import TokenIssuer
from privchat_tcp.wire.commands import Cmd
from privchat_tcp.wire.frame import encode_header, split_frames

HOST = "127.0.0.1"
SECRET = "scale-secret-" + "s" * 32
SCALE = int(os.environ.get("PRIVCHAT_SCALE", "10000"))

_WRAPPER = (
    "import resource, sys\n"
    "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\n"
    "from privchat_tcp.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``privchat-tcp serve`` in a subprocess with cheap settings plus ``args``."""

    def __init__(self, *args: str) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="privchat-scale-")
        self.admin_port = free_port()
        cmd = [
            sys.executable,
            "-c",
            _WRAPPER,
            "serve",
            "--port",
            "0",
            "--data-dir",
            self.tmp.name,
            "--rsa-key-file",
            KEY_FILE,
            "--jwt-secret",
            SECRET,
            "--argon2-time-cost",
            "1",
            "--argon2-memory-kib",
            "1024",
            "--welcome-message",
            "",  # no welcome message: these tests count every push
            "--rate-per-connection",
            "0",
            "--rate-per-user",
            "0",
            "--max-connections",
            "0",
            # thousands of clients from one loopback address: the per-address limits are off
            "--conn-rate-per-ip",
            "0",
            "--encrypted-login-rate-per-ip",
            "0",
            "--log-level",
            "WARNING",
            "--admin-port",
            str(self.admin_port),
            *args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert "listening on" in line, line
        self.port = int(line.strip().rsplit(":", 1)[1])
        # keep draining stdout so the server never blocks on a full pipe
        self.output: list[bytes] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def metrics(self) -> dict[str, float]:
        with socket.create_connection((HOST, self.admin_port), timeout=10) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        values: dict[str, float] = {}
        for line in data.partition(b"\r\n\r\n")[2].decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.tmp.cleanup()


@pytest.fixture
def spawn() -> Iterator[type[ServerProcess]]:
    _raise_fd_limit()
    made: list[ServerProcess] = []

    class Tracked(ServerProcess):
        def __init__(self, *args: str) -> None:
            super().__init__(*args)
            made.append(self)

    yield Tracked
    for srv in made:
        srv.stop()


def frame(command: int, body: bytes = b"", seq: int = 1) -> bytes:
    return encode_header(len(body), seq, command, 0, 0) + body


def login_body(token: str, device_id: str) -> bytes:
    return pb.AuthorizationRequest(
        auth_type="JWT",
        auth_token=token,
        device_info=pb.DeviceInfo(device_id=device_id, device_type="linux", device_name="scale"),
        client_info=pb.ClientInfo(client_type="privchat_tcp", version="0.1.0"),
        protocol_version="1",
    ).SerializeToString()


READY = frame(
    Cmd.RPC, pb.RpcRequest(route="sync/session_ready", body=b"{}").SerializeToString(), seq=2
)
PING_BODY = pb.PingRequest().SerializeToString()


# ---- 1. huge frames before login ----------------------------------------------------------------


def _recv_frame(sock: socket.socket) -> tuple[int, int, int, int, bytes]:
    buf = b""
    while True:
        chunk = sock.recv(65536)
        assert chunk, "closed"
        buf += chunk
        frames, _, violation, _, _ = split_frames(buf, 1 << 20, False)
        assert violation == 0
        if frames:
            return frames[0]


def _read_all(sock: socket.socket, timeout: float) -> tuple[bytes, str]:
    """Everything the server sends until it closes: (bytes, "eof" or "reset")."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data, "reset"
        if not chunk:
            return data, "eof"
        data += chunk


def test_huge_frames_before_login_are_dropped_without_buffering(
    spawn: type[ServerProcess],
) -> None:
    srv = spawn()
    n_conns, filler_total, chunk = 16, 100 << 20, b"\0" * (1 << 20)
    rss_before = srv.rss_kib()
    peak = [rss_before]
    stop = threading.Event()
    pongs: list[float] = []
    ping_errors: list[str] = []

    def pinger() -> None:
        """Another client pings every 20 ms throughout (before login: allowed)."""
        try:
            with socket.create_connection((HOST, srv.port), timeout=5) as s:
                seq = 0
                while not stop.is_set():
                    seq += 1
                    t0 = time.monotonic()
                    s.sendall(frame(Cmd.PING, PING_BODY, seq))
                    reply = _recv_frame(s)
                    assert reply[:2] == (seq, Cmd.PING) and reply[3] == 0, reply
                    pongs.append(time.monotonic() - t0)
                    peak[0] = max(peak[0], srv.rss_kib())
                    time.sleep(0.02)
        except (OSError, AssertionError) as exc:
            ping_errors.append(repr(exc))

    results: list[tuple[int, bytes, str] | str] = [""] * n_conns
    started = threading.Barrier(n_conns + 1)

    def abuser(i: int) -> None:
        try:
            with socket.create_connection((HOST, srv.port), timeout=10) as s:
                s.sendall(encode_header(1 << 30, 1, Cmd.RPC, 0, 0))
                sent = 0
                try:
                    s.sendall(chunk)
                    sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                started.wait(10)  # every abuser is streaming: the main thread pings now
                try:
                    while sent < filler_total:
                        s.sendall(chunk)
                        sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                data, how = _read_all(s, 10)
                results[i] = (sent, data, how)
        except OSError as exc:
            results[i] = repr(exc)

    ping_thread = threading.Thread(target=pinger)
    ping_thread.start()
    time.sleep(0.2)
    pongs_before = len(pongs)
    t0 = time.monotonic()
    threads = [threading.Thread(target=abuser, args=(i,)) for i in range(n_conns)]
    with socket.create_connection((HOST, srv.port), timeout=5) as probe:
        for t in threads:
            t.start()
        started.wait(10)
        # a ping while the 16 abusers stream their filler
        t_ping = time.monotonic()
        probe.sendall(frame(Cmd.PING, PING_BODY, 7))
        reply = _recv_frame(probe)
        during_ms = (time.monotonic() - t_ping) * 1000
        assert reply[:2] == (7, Cmd.PING) and reply[3] == 0, reply
        for t in threads:
            t.join(30)
    elapsed = time.monotonic() - t0
    pongs_during = len(pongs) - pongs_before
    time.sleep(0.5)  # and after
    stop.set()
    ping_thread.join(10)
    rss_after = srv.rss_kib()
    growth_mib = (max(peak[0], rss_after) - rss_before) / 1024
    sent_max = max((r[0] for r in results if isinstance(r, tuple)), default=0)
    print(
        f"\n[huge frames] {n_conns} conns closed in {elapsed:.2f}s; most filler written "
        f"before the close {sent_max / 1024:.0f} KiB; server RSS {rss_before} -> "
        f"{rss_after} KiB (peak {peak[0]}), growth {growth_mib:.1f} MiB; "
        f"{len(pongs)} pongs, worst {max(pongs) * 1000:.1f} ms; ping during the flood "
        f"{during_ms:.1f} ms"
    )
    assert not ping_errors, ping_errors
    for r in results:
        assert isinstance(r, tuple), r
        sent, data, how = r
        assert sent < filler_total, "the server read the whole 100 MB body"
        frames, _, violation, _, _ = split_frames(data, 1 << 20, False)
        assert violation == 0 and frames, (data[:64], how)
        seq, command, _, status, body = frames[0]
        assert (seq, command, status) == (1, Cmd.RPC, Status.TOO_LARGE), frames[0]
        assert how in ("eof", "reset")
    assert growth_mib <= 20, growth_mib
    assert len(pongs) > pongs_before + pongs_during  # and after
    assert srv.proc.poll() is None


# ---- lean sessions -------------------------------------------------------------------------------


class Lean(asyncio.Protocol):
    """A minimal session: LOGIN, READY, then counts pushed messages (MPS 1, MPB n)."""

    def __init__(self, login: bytes, ready: bool) -> None:
        self.login = login
        self.want_ready = ready
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.logged_in: asyncio.Future[int] = loop.create_future()
        self.is_ready: asyncio.Future[int] = loop.create_future()
        self.gone: asyncio.Future[None] = loop.create_future()
        self.buf = b""
        self.pushes = 0
        self.logout_status: int | None = None
        self.lost_exc: Exception | None = None
        self.eof = False
        self.login_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.login)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        frames, used, violation, _, _ = split_frames(buf, 1 << 30, False)
        assert violation == 0
        self.buf = buf[used:]
        for _, command, flags, status, body in frames:
            if command == Cmd.MPS:
                self.pushes += 1
            elif command == Cmd.MPB:
                self.pushes += len(pb.PushBatchRequest.FromString(body).messages)
            elif command == Cmd.LOGIN and not self.logged_in.done():
                self.login_at = time.monotonic()
                self.logged_in.set_result(status)
                if status == 0 and self.want_ready and self.transport is not None:
                    self.transport.write(READY)
            elif command == Cmd.RPC and not self.is_ready.done():
                code = pb.RpcResponse.FromString(body).code if status == 0 else -1
                self.is_ready.set_result(status or code)
            elif command == Cmd.LOGOUT and flags & 3 == 2:
                self.logout_status = status

    def eof_received(self) -> bool | None:
        self.eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_exc = exc
        for fut in (self.logged_in, self.is_ready):
            if not fut.done():
                fut.set_result(-1)
        if not self.gone.done():
            self.gone.set_result(None)


async def open_lean(
    port: int, token: str, device_id: str, ready: bool, small_window: bool = False
) -> Lean:
    """Connect one lean session. ``small_window`` gives the socket a small receive buffer and
    MSS, so that a peer that stops reading has little kernel buffering (the server's socket
    send buffer is sized from the MSS): its backlog lands in the server's own buffer soon."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if small_window:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    try:
        await loop.sock_connect(sock, (HOST, port))
    except OSError:
        sock.close()
        raise
    body = login_body(token, device_id)
    _, proto = await loop.create_connection(lambda: Lean(frame(Cmd.LOGIN, body), ready), sock=sock)
    return proto


async def register(port: int, name: str) -> Client:
    c = await Client.connect(HOST, port)
    await c.register(name, "password-" + name)
    await c.login()
    await c.ready()
    return c


def close_all(sessions: list[Lean]) -> None:
    for s in sessions:
        if s.transport is not None:
            s.transport.abort()


# ---- 2. slow readers -----------------------------------------------------------------------------

HIGH_WATER = 16 << 10
HARD_LIMIT = 64 << 10
SLOW_TIMEOUT = 2.0


def test_slow_readers_are_ended_and_others_get_every_push(spawn: type[ServerProcess]) -> None:
    n = SCALE
    n_slow = n // 10
    srv = spawn(
        "--max-devices-per-user",
        "0",
        "--push-high-water",
        str(HIGH_WATER),
        "--push-hard-limit",
        str(HARD_LIMIT),
        "--slow-consumer-timeout",
        str(SLOW_TIMEOUT),
        "--heartbeat-interval",
        "300",
    )
    issuer = TokenIssuer(SECRET, 3600, 7200)

    async def main() -> None:
        a = await register(srv.port, "scale-a")
        b = await register(srv.port, "scale-b")
        assert a.auth is not None  # tokens name the store that issues them, and a login
        epoch = a.auth.store_epoch
        tokens = [
            issuer.issue(a.user_id, f"dev-{i}", epoch=epoch, login_id=f"scale-{i}")[0]
            for i in range(n)
        ]
        sem = asyncio.Semaphore(500)

        async def one(i: int) -> Lean:
            async with sem:
                s = await open_lean(srv.port, tokens[i], f"dev-{i}", True, i < n_slow)
                assert await asyncio.wait_for(s.is_ready, 30) == 0
                return s

        t0 = time.monotonic()
        sessions = list(await asyncio.gather(*(one(i) for i in range(n))))
        print(f"\n[slow readers] {n} sessions LOGIN+READY in {time.monotonic() - t0:.1f}s")
        try:
            await body(a, b, sessions)
        finally:
            close_all(sessions)
            await a.close()
            await b.close()

    async def body(a: Client, b: Client, sessions: list[Lean]) -> None:
        loop = asyncio.get_running_loop()
        slow, readers = sessions[:n_slow], sessions[n_slow:]
        for s in slow:
            assert s.transport is not None
            s.transport.pause_reading()
        base = [s.pushes for s in sessions]
        m0 = await loop.run_in_executor(None, srv.metrics)
        slow_before = m0.get("privchat_slow_consumers_total", 0)
        rss_before = srv.rss_kib()
        rss_peak = rss_before
        payload = b"x" * (8 << 10)
        sent = 0
        t_start = time.monotonic()
        ended_at: float | None = None
        # send in pipelined batches until every slow reader has been ended (metrics), bounded
        while sent < 400:
            await asyncio.gather(*(b.send(to_user=a.user_id, payload=payload) for _ in range(4)))
            sent += 4
            rss_peak = max(rss_peak, srv.rss_kib())
            if sent % 8 == 0:
                m = await loop.run_in_executor(None, srv.metrics)
                if m["privchat_slow_consumers_total"] - slow_before >= n_slow:
                    ended_at = time.monotonic()
                    break
        t_sent = time.monotonic()
        deadline = t_sent + 15
        while ended_at is None and time.monotonic() < deadline:
            m = await loop.run_in_executor(None, srv.metrics)
            rss_peak = max(rss_peak, srv.rss_kib())
            if m["privchat_slow_consumers_total"] - slow_before >= n_slow:
                ended_at = time.monotonic()
            else:
                await asyncio.sleep(0.1)
        m = await loop.run_in_executor(None, srv.metrics)
        ended = int(m["privchat_slow_consumers_total"] - slow_before)
        sent_to_end = sent
        # the others keep getting everything after the slow readers are gone
        await asyncio.gather(*(b.send(to_user=a.user_id, payload=payload) for _ in range(8)))
        sent += 8
        # the slow readers resume: each reads what was buffered, the LOGOUT, then EOF
        for s in slow:
            assert s.transport is not None
            s.transport.resume_reading()
        await asyncio.wait([s.gone for s in slow], timeout=15)
        # the readers get every message
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rss_peak = max(rss_peak, srv.rss_kib())
            if all(s.pushes - base[n_slow + i] >= sent for i, s in enumerate(readers)):
                break
            await asyncio.sleep(0.2)
        t_done = time.monotonic()
        counts = [s.pushes - base[n_slow + i] for i, s in enumerate(readers)]
        sample = slow[:100]
        logouts = sum(1 for s in sample if s.logout_status == Status.SLOW_CONSUMER)
        growth_mib = (rss_peak - rss_before) / 1024
        print(
            f"[slow readers] sent {sent_to_end} x {len(payload)} B in {t_sent - t_start:.1f}s "
            f"(then {sent - sent_to_end} more); "
            f"{ended}/{n_slow} slow readers ended "
            f"{(ended_at or t_done) - t_start:.1f}s after the first send "
            f"({max(0.0, (ended_at or t_done) - t_sent):.1f}s after the last); "
            f"sample: {logouts}/{len(sample)} saw LOGOUT SLOW_CONSUMER; readers got "
            f"min {min(counts)} max {max(counts)} of {sent} ({t_done - t_start:.1f}s); "
            f"server RSS {rss_before} -> peak {rss_peak} KiB (+{growth_mib:.1f} MiB)"
        )
        assert ended_at is not None and ended == n_slow, (ended, n_slow)
        # ended within 10 s of falling behind: they are behind at the latest once sending ends
        assert ended_at - t_sent <= 10.0
        assert all(s.gone.done() for s in slow)
        for s in sample:
            assert s.logout_status == Status.SLOW_CONSUMER, (s.logout_status, s.lost_exc)
            assert s.eof or s.lost_exc is None
        assert min(counts) == max(counts) == sent
        # Bound on server-side buffering: /metrics has no per-connection buffered-bytes gauge,
        # so this asserts on the server's RSS: every slow connection may hold at most the hard
        # limit plus one frame, the readers at most about the high-water mark each; 100 MiB
        # covers the interpreter's and allocator's own growth on top.
        frame_size = len(payload) + 64
        bound = n_slow * (HARD_LIMIT + frame_size) + (n - n_slow) * HIGH_WATER + (100 << 20)
        assert rss_peak - rss_before <= bound / 1024, (growth_mib, bound >> 20)

    run(main(), timeout=240)


# ---- 3. reconnect storm --------------------------------------------------------------------------


def test_reconnect_storm(spawn: type[ServerProcess]) -> None:
    n = SCALE
    srv = spawn("--max-devices-per-user", "0", "--heartbeat-interval", "300")
    issuer = TokenIssuer(SECRET, 3600, 7200)

    async def main() -> None:
        a = await register(srv.port, "storm")
        assert a.auth is not None  # tokens name the store that issues them, and a login
        epoch = a.auth.store_epoch
        tokens = [
            issuer.issue(a.user_id, f"storm-{i}", epoch=epoch, login_id=f"storm-{i}")[0]
            for i in range(n)
        ]
        await a.close()
        sessions: list[Lean] = []
        failures: list[str] = []
        sem = asyncio.Semaphore(1000)

        async def one(i: int) -> None:
            async with sem:
                try:
                    s = await open_lean(srv.port, tokens[i], f"storm-{i}", False)
                except OSError as exc:
                    failures.append(repr(exc))
                    return
                sessions.append(s)
                await asyncio.wait_for(s.logged_in, 20)

        t0 = time.monotonic()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True), 60
            )
            elapsed = time.monotonic() - t0
            # counted, not timed (speed is benchmarks/'s business): every login is served
            ok = [s for s in sessions if s.logged_in.done() and s.logged_in.result() == 0]
            last = max((s.login_at for s in ok), default=t0) - t0
            print(
                f"\n[storm] {len(ok)}/{n} logged in ({elapsed:.2f}s for all, "
                f"last success at {last:.2f}s, {len(ok) / max(last, 1e-9):.0f} logins/s); "
                f"{len(failures)} connect failures"
            )
            assert not failures, failures[:5]
            assert len(ok) == n, len(ok)
        finally:
            close_all(sessions)
            await asyncio.sleep(0.2)

    run(main(), timeout=120)


# ---- 4. pipelined pulls without reading ----------------------------------------------------------


def test_pipelined_pulls_are_paused_not_buffered(spawn: type[ServerProcess]) -> None:
    """Ten MPs of ~40 bytes each over 30 messages of 1 MB, in one write, never read: before the
    output budget the server queued 10 x 30 MB (RSS +300 MB here, +1.9 GB with 100 messages:
    ``python -m benchmarks.bounds pipelined``). Now each page stops near ``max_reply_bytes``
    and the frames after the first replies wait, reading paused, until the client reads."""
    n_messages, size, n_pulls = 30, 1_000_000, 10
    srv = spawn("--rate-bytes-per-user", "0", "--heartbeat-interval", "300")

    async def main() -> None:
        a = await register(srv.port, "puller")
        b = await register(srv.port, "stored-to")
        payload = b"p" * size
        channel = 0
        for _ in range(n_messages // 5):
            sent = await asyncio.gather(
                *(a.send(to_user=b.user_id, payload=payload) for _ in range(5))
            )
            channel = sent[0].channel_id
        token, device_id = a.token, a.device_id
        await a.close()
        await b.close()
        loop = asyncio.get_running_loop()
        m0 = await loop.run_in_executor(None, srv.metrics)
        held_before = m0.get("privchat_output_held_total", 0)
        await asyncio.sleep(0.3)
        rss_before = srv.rss_kib()

        def attack() -> tuple[int, list[tuple[int, int, bool]]]:
            """Returns the peak RSS while not reading, then every MP reply (status, records,
            has_more) once it reads."""
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.connect((HOST, srv.port))
                s.settimeout(20)
                s.sendall(frame(Cmd.LOGIN, login_body(token, device_id)))
                login = _recv_frame(s)
                assert login[1] == Cmd.LOGIN and login[3] == 0, login
                body = pb.GetDifferenceRequest(
                    channel_id=channel, last_pts=0, limit=1000
                ).SerializeToString()
                s.sendall(b"".join(frame(Cmd.MP, body, 10 + i) for i in range(n_pulls)))
                peak = rss_before
                deadline = time.monotonic() + 2.0
                while time.monotonic() < deadline:  # read nothing for 2 s
                    peak = max(peak, srv.rss_kib())
                    time.sleep(0.02)
                replies: list[tuple[int, int, bool]] = []
                buf = b""
                while len(replies) < n_pulls:
                    chunk = s.recv(1 << 20)
                    assert chunk, "closed before every MP was answered"
                    buf += chunk
                    frames, used, violation, _, _ = split_frames(buf, 64 << 20, False)
                    assert violation == 0
                    buf = buf[used:]
                    for _, command, _, status, data in frames:
                        if command != Cmd.MP:
                            continue
                        diff = pb.GetDifferenceResponse.FromString(data) if not status else None
                        replies.append(
                            (status, len(diff.messages), diff.has_more)
                            if diff is not None
                            else (status, 0, False)
                        )
                return peak, replies

        peak, replies = await loop.run_in_executor(None, attack)
        m1 = await loop.run_in_executor(None, srv.metrics)
        growth_mib = (peak - rss_before) / 1024
        print(
            f"\n[pipelined pulls] {n_pulls} MPs over {n_messages} x {size} B, not read for 2 s: "
            f"server RSS +{growth_mib:.1f} MiB; replies (status, records, has_more) {replies[:3]}"
            f"...; reads held {m1['privchat_output_held_total'] - held_before:.0f}"
        )
        # served in pieces: every reply is a page of about max_reply_bytes (1 MiB): one record
        assert replies == [(0, 1, True)] * n_pulls, replies
        # paused, not buffered: the frames after the first replies waited for the client
        assert m1["privchat_output_held_total"] > held_before
        # the budget (push_high_water 1 MiB) plus a page or two, and the interpreter's own
        assert growth_mib < 32, growth_mib

    run(main(), timeout=120)

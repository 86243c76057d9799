"""uvloop load generator for privchat_tcp (loopback only).

Scenarios (each stops by itself: every loop is bounded by a frame/message count AND by time):

- ``ping``:   N connections x D pipelined PING frames in flight for T seconds -> frames/s.
              Works against the real server (PING is allowed before LOGIN) and the baseline.
- ``direct``: P pairs of logged-in users; each sender keeps W MS requests in flight (or, with
              ``--rate R``, sends R msgs/s in total, paced); receivers count MPS/MPB deliveries
              -> delivered msgs/s and send-to-delivery latency p50/p99.
- ``group``:  one sender, a group of M online members -> deliveries/s (MN notifications of large
              groups are followed by an MP pull, as a real client does, and those count too).
- ``idle``:   K logged-in, READY, idle sessions -> server RSS growth per session
              (``--server-pid``; read from /proc/<pid>/status VmRSS).
- ``redis`` / ``mqtt``: the same 1-to-F pub/sub delivery rate against redis-server (RESP) or
              mosquitto (MQTT 3.1.1, QoS 0), for comparison.

``direct`` and ``group`` also take ``--ack-latency`` (each MS timed to its reply: with the
embedded store, the time to durable), ``--max-messages N`` (stop once N are delivered: fills a
store) and ``--admin-port P`` (the server's /metrics read at the window's start and end: loop lag
p50/p99/p99.9 from its lag probe, commits, mean commit latency and batch size), for
``benchmarks/persistence.py``.

``--encrypt --server-key FILE`` (``ping``, ``direct``, ``group``, ``idle``): every session LOGINs
encrypted (PROTOCOL.md 5.2, RSA-OAEP with the server's public key from FILE, a public or private
PEM) and every later frame both ways is an AES-256-GCM session frame (5.3): the hot-loop protocols
seal what they send and open what they receive with the session's ``SessionCipher``. The sealed
protocols are subclasses chosen once per run, so the plaintext path is unchanged. ``ping
--encrypt`` registers and logs in its N connections first (a session needs a LOGIN), so it runs
only against the real server, not the baseline.

Output: a table on stdout, and JSON with ``--json FILE``.

Example: ``python -m benchmarks.loadgen ping --port 9001 --conns 100 --depth 32 --duration 5``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import struct
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import uvloop
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from privchat_tcp.client import Client
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.wire.crypto import CryptoError, SessionCipher, new_secret, seal_login
from privchat_tcp.wire.frame import encode_header, split_frames

PING, MS, MP, MN, MPS, MPB, RPC, ACK, LOGIN = 3, 4, 5, 6, 8, 9, 12, 13, 1
ENC_SESSION = 0x04  # flags: encryption = 1, an AES-256-GCM session frame (PROTOCOL.md 5.3)
ENC_RSA = 0x08  # flags: encryption = 2, the RSA key-transport LOGIN (5.2)
MAX_FRAMES = 1 << 31  # count bound of every hot loop (time is the other bound)
MAX_LAT_SAMPLES = 200_000
HOST = "127.0.0.1"

now_ns = time.perf_counter_ns
PING_BLOCK = 4096
_PING_FRAMES = b"".join(encode_header(0, i + 1, PING, 0, 0) for i in range(PING_BLOCK))


def raise_fd_limit(want: int = 1 << 20) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, want), hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds (0 when unknown)."""
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# a /16 of loopback source addresses of this run's own: ports still in TIME_WAIT from an
# earlier run (60 s after it closed its connections) cannot make this one's binds fail
_ADDR_BASE = random.randrange(1, 255)


def local_addr(i: int, per_addr: int = 10_000) -> tuple[str, int]:
    """Spread connections over 127.B.0.x source addresses so ephemeral ports do not run out."""
    return (f"127.{_ADDR_BASE}.0.{1 + i // per_addr}", 0)


def percentile(sorted_vals: Sequence[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return sorted_vals[k]


def load_server_key(path: str) -> rsa.RSAPublicKey:
    """The server's RSA public key from a PEM file holding the public or the private key."""
    with open(path, "rb") as fh:
        data = fh.read()
    key: Any
    if b"PRIVATE KEY" in data:
        key = serialization.load_pem_private_key(data, password=None).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise SystemExit(f"{path}: not an RSA key")
    return key


def public_pem(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def session_cipher(client: Client) -> SessionCipher:
    """The SessionCipher of a Client that logged in encrypted (shared: counters stay in step)."""
    if client.cipher is None:
        raise RuntimeError("the client's LOGIN was not encrypted")
    return client.cipher


class Stats:
    """Shared counters of one run."""

    def __init__(self) -> None:
        self.count = 0
        self.running = True
        self.deadline = 0.0
        self.latencies: list[int] = []  # ns
        self.ack_latencies: list[int] = []  # ns, MS sent -> its reply (senders with track_acks)
        self.errors = 0
        self.limit = MAX_FRAMES  # --max-messages: stop once this many are counted
        self.server_window: dict[str, Any] = {}  # --admin-port: loop lag, commits (measure)

    def active(self) -> bool:
        if not self.running:
            return False
        if self.count >= self.limit or time.monotonic() >= self.deadline:
            self.running = False
        return self.running


# ---- ping ----------------------------------------------------------------------------------------
Frame = tuple[int, int, int, int, bytes]


def open_frames(
    open_: Callable[[int, int, int, int, bytes], bytes],
    frames: list[Frame],
    stats: Stats,
    transport: asyncio.BaseTransport | None,
) -> list[Frame] | None:
    """The frames of an encrypted session with their bodies opened; None (and the connection
    closed, an error counted) when one does not open."""
    try:
        return [
            (seq, command, flags, status, open_(seq, command, flags, status, body))
            for seq, command, flags, status, body in frames
        ]
    except CryptoError:
        stats.errors += 1
        if transport is not None:
            transport.close()
        return None


class PingProto(asyncio.Protocol):
    def __init__(self, stats: Stats, depth: int) -> None:
        self.stats = stats
        self.depth = depth
        self.seq = 0
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def start(self) -> None:
        self._send(self.depth)

    def _send(self, n: int) -> None:
        # a pre-built block of PING frames (seq 1..PING_BLOCK, then again): one slice per write
        assert self.transport is not None
        write = self.transport.write
        while n > 0:
            k = min(n, PING_BLOCK - self.seq)
            write(_PING_FRAMES[self.seq * 12 : (self.seq + k) * 12])
            self.seq = (self.seq + k) % PING_BLOCK
            n -= k

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        frames, consumed, _, _, _ = split_frames(buf, 1 << 20, False)
        n = len(frames)
        self.buf = buf[consumed:] if consumed < len(buf) else b""
        if not n or not self._opened(frames):
            return
        stats = self.stats
        stats.count += n
        if stats.active():
            self._send(n)

    def _opened(self, frames: list[Frame]) -> bool:
        """Whether the replies are good (the sealed subclass opens each one)."""
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class SealedPingProto(PingProto):
    """PingProto on an encrypted session: each PING sealed (empty body), each reply opened."""

    def __init__(self, stats: Stats, depth: int, cipher: SessionCipher) -> None:
        super().__init__(stats, depth)
        self.seal = cipher.seal
        self.open = cipher.open

    def _send(self, n: int) -> None:
        assert self.transport is not None
        seal = self.seal
        seq = self.seq
        out: list[bytes] = []
        for _ in range(n):
            seq = (seq + 1) & 0xFFFFFFFF
            header, ct = seal(seq, PING, ENC_SESSION, 0, b"")
            out.append(header)
            out.append(ct)
        self.seq = seq
        self.transport.write(b"".join(out))

    def _opened(self, frames: list[Frame]) -> bool:
        if open_frames(self.open, frames, self.stats, self.transport) is None:
            self.stats.running = False
            return False
        return True


async def connect_many(
    factory: Callable[[], asyncio.Protocol],
    port: int,
    n: int,
    host: str = HOST,
    concurrency: int = 200,
    spread: bool = True,
) -> list[Any]:
    """``n`` connections; with ``spread`` from this run's own loopback source addresses
    (``local_addr``), else from the default one (redis-server's protected mode accepts only
    127.0.0.1 and ::1 as local clients)."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Any:
        async with sem:
            src = local_addr(i) if spread else None
            _, proto = await loop.create_connection(factory, host, port, local_addr=src)
            return proto

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def scenario_ping(args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    protos: list[PingProto]
    clients: list[Client] = []
    if args.encrypt:
        # an encrypted session needs a LOGIN: register + encrypted LOGIN + READY each connection
        tag = uuid.uuid4().hex[:6]
        clients = await make_users(
            args.port, f"pe{tag}_", args.conns, args.host, server_key=args.server_key_pem
        )
        protos = []
        for c in clients:
            proto = SealedPingProto(stats, args.depth, session_cipher(c))
            take_over(c, proto)
            protos.append(proto)
    else:
        protos = await connect_many(
            lambda: PingProto(stats, args.depth), args.port, args.conns, args.host
        )
    stats.deadline = time.monotonic() + args.warmup + args.duration + 5
    for p in protos:
        p.start()
    await asyncio.sleep(args.warmup)
    c0, t0, cpu0 = stats.count, time.monotonic(), cpu_seconds(args.server_pid)
    await asyncio.sleep(args.duration)
    c1, t1, cpu1 = stats.count, time.monotonic(), cpu_seconds(args.server_pid)
    stats.running = False
    for p in protos:
        assert p.transport is not None
        p.transport.close()
    rate = (c1 - c0) / (t1 - t0)
    return {
        "scenario": "ping",
        "encrypt": bool(args.encrypt),
        "conns": args.conns,
        "depth": args.depth,
        "duration_s": round(t1 - t0, 3),
        "frames": c1 - c0,
        "frames_per_s": round(rate),
        "errors": stats.errors,
        **cpu_figures(c1 - c0, t1 - t0, cpu1 - cpu0, args.server_pid),
    }


def cpu_figures(n: int, dt: float, cpu: float, pid: int) -> dict[str, Any]:
    """Server CPU use over the window, and the count per server CPU-second."""
    if not pid:
        return {}
    return {
        "server_cpu": round(cpu / dt, 3),
        "per_server_cpu_s": round(n / cpu) if cpu > 0 else None,
    }


# ---- privchat setup helpers ----------------------------------------------------------------------
async def make_user(
    port: int, name: str, host: str = HOST, server_key: bytes | None = None
) -> Client:
    """register + LOGIN (encrypted with ``server_key``, the server's public PEM) + READY."""
    client = await Client.connect(host, port, track=False, auto_ack=False)
    await client.register(name, "password-" + name)
    await client.login(server_key=server_key)
    await client.ready()
    return client


async def make_users(
    port: int,
    prefix: str,
    n: int,
    host: str = HOST,
    concurrency: int = 50,
    server_key: bytes | None = None,
) -> list[Client]:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Client:
        async with sem:
            return await make_user(port, f"{prefix}{i}", host, server_key)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def take_over(client: Client, proto: asyncio.Protocol) -> asyncio.Transport:
    """Move a set-up Client's transport to a raw protocol for the hot loop.

    A partial frame the Client had buffered is handed over too (on an encrypted session a lost
    frame would put the receive counter out of step). With an encrypted LOGIN the raw protocol
    must use ``client.cipher`` itself, whose counters already count the Client's frames.
    """
    assert client._proto is not None and client._proto.transport is not None
    transport = client._proto.transport
    leftover = client._proto.conn.take_buffered()
    transport.set_protocol(proto)
    proto.connection_made(transport)
    if leftover:
        proto.data_received(leftover)
    return transport


def close_all(clients: list[Client]) -> None:
    """Close taken-over clients (their own protocol no longer sees connection_lost)."""
    for c in clients:
        if c._proto is not None and c._proto.transport is not None:
            c._proto.transport.close()


class SenderProto(asyncio.Protocol):
    """Keeps ``window`` MS in flight (or is paced from outside); counts MS responses."""

    def __init__(self, stats: Stats, channel_id: int, channel_type: int, window: int) -> None:
        self.stats = stats
        self.channel_id = channel_id
        self.channel_type = channel_type
        self.window = window
        self.seq = 1000
        self.last_local = 0
        self.buf = b""
        self.acked = 0
        self.sent = 0
        self.transport: asyncio.Transport | None = None
        #: seq -> send time (ns) of the MS in flight, when acknowledgement latency is measured
        self.sent_at: dict[int, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, n: int) -> None:
        out = []
        sent_at = self.sent_at
        for _ in range(n):
            ts = now_ns()
            if ts <= self.last_local:
                ts = self.last_local + 1
            self.last_local = ts
            self.seq += 1
            if sent_at is not None:
                sent_at[self.seq & 0xFFFFFFFF] = ts
            body = pb.SendMessageRequest(
                client_seq=self.seq & 0xFFFFFFFF,
                local_message_id=ts,
                channel_id=self.channel_id,
                channel_type=self.channel_type,
                payload=b'{"content":"bench message"}',
            ).SerializeToString()
            out.append(self._frame(self.seq & 0xFFFFFFFF, body))
        self.sent += n
        assert self.transport is not None
        self.transport.write(b"".join(out))

    def _frame(self, seq: int, body: bytes) -> bytes:
        """One MS frame (the sealed subclass encrypts it)."""
        frame: bytes = encode_header(len(body), seq, MS, 0, 0) + body
        return frame

    def _opened(self, frames: list[Frame]) -> bool:
        """Whether the frames are good (the sealed subclass opens each one)."""
        return True

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        frames, consumed, _, _, _ = split_frames(buf, 1 << 24, False)
        self.buf = buf[consumed:]
        if not self._opened(frames):
            return
        n = 0
        sent_at = self.sent_at
        for seq, command, flags, status, _body in frames:
            if command == MS and flags & 3 == 1:
                n += 1
                if status:
                    self.stats.errors += 1
                if sent_at is not None:
                    t = sent_at.pop(seq, 0)
                    acks = self.stats.ack_latencies
                    if t and len(acks) < MAX_LAT_SAMPLES:
                        acks.append(now_ns() - t)
        self.acked += n
        if n and self.window and self.stats.active():
            self.send(n)

    def connection_lost(self, exc: Exception | None) -> None:
        pass


class SealedSenderProto(SenderProto):
    """SenderProto on an encrypted session: every MS sealed, every frame received opened."""

    def __init__(
        self,
        stats: Stats,
        channel_id: int,
        channel_type: int,
        window: int,
        cipher: SessionCipher,
    ) -> None:
        super().__init__(stats, channel_id, channel_type, window)
        self.seal = cipher.seal
        self.open = cipher.open

    def _frame(self, seq: int, body: bytes) -> bytes:
        header, ct = self.seal(seq, MS, ENC_SESSION, 0, body)
        return header + ct

    def _opened(self, frames: list[Frame]) -> bool:
        return open_frames(self.open, frames, self.stats, self.transport) is not None


class ReceiverProto(asyncio.Protocol):
    """Counts MPS/MPB deliveries (and MP pages after MN); samples latency; ACKs now and then."""

    def __init__(self, stats: Stats, sample_every: int = 1) -> None:
        self.stats = stats
        self.sample_every = sample_every
        self.buf = b""
        self.seq = 5000
        self.last_pts: dict[int, int] = {}
        self.pulling: set[int] = set()
        self.ack_due = False
        self.got = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def _messages(self, msgs: Any) -> None:
        t = now_ns()
        stats = self.stats
        lat = stats.latencies
        every = self.sample_every
        last = self.last_pts
        for m in msgs:
            self.got += 1
            stats.count += 1
            cid = m.channel_id
            if m.message_seq > last.get(cid, 0):
                last[cid] = m.message_seq
            if m.local_message_id and (self.got % every == 0) and len(lat) < MAX_LAT_SAMPLES:
                lat.append(t - m.local_message_id)
        if not self.ack_due:
            self.ack_due = True
            asyncio.get_running_loop().call_later(0.05, self._ack)

    def _ack(self) -> None:
        self.ack_due = False
        if self.transport is None or self.transport.is_closing():
            return
        body = pb.AckRequest(
            acks=[pb.ChannelAck(channel_id=c, pts=p) for c, p in self.last_pts.items()]
        ).SerializeToString()
        self.transport.write(self._frame(ACK, body))

    def _frame(self, command: int, body: bytes) -> bytes:
        """One request frame (ACK, MP: a few per second, not the hot path)."""
        self.seq += 1
        frame: bytes = encode_header(len(body), self.seq, command, 0, 0) + body
        return frame

    def _pull(self, channel_id: int) -> None:
        if channel_id in self.pulling or self.transport is None or self.transport.is_closing():
            return
        self.pulling.add(channel_id)
        body = pb.GetDifferenceRequest(
            channel_id=channel_id, last_pts=self.last_pts.get(channel_id, 0), limit=1000
        ).SerializeToString()
        self.transport.write(self._frame(MP, body))

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        frames, consumed, _, _, _ = split_frames(buf, 1 << 26, False)
        self.buf = buf[consumed:]
        self._handle(frames)

    def _handle(self, frames: list[tuple[int, int, int, int, bytes]]) -> None:
        for _seq, command, flags, status, body in frames:
            if command == MPS:
                self._messages((pb.PushMessageRequest.FromString(body),))
            elif command == MPB:
                self._messages(pb.PushBatchRequest.FromString(body).messages)
            elif command == MN:
                note = pb.MessageNotify.FromString(body)
                if note.pts > self.last_pts.get(note.channel_id, 0):
                    self._pull(note.channel_id)
            elif command == MP and flags & 3 == 1:
                if status:
                    self.stats.errors += 1
                    self.pulling.clear()
                    continue
                diff = pb.GetDifferenceResponse.FromString(body)
                self._messages(diff.messages)
                cid = diff.channel_id
                self.pulling.discard(cid)
                if diff.has_more and diff.messages and self.stats.running:
                    self._pull(cid)

    def connection_lost(self, exc: Exception | None) -> None:
        pass


class SealedReceiverProto(ReceiverProto):
    """ReceiverProto on an encrypted session: every frame opened, ACK and MP sealed."""

    def __init__(self, stats: Stats, cipher: SessionCipher, sample_every: int = 1) -> None:
        super().__init__(stats, sample_every)
        self.seal = cipher.seal
        self.open = cipher.open

    def _frame(self, command: int, body: bytes) -> bytes:
        self.seq += 1
        header, ct = self.seal(self.seq & 0xFFFFFFFF, command, ENC_SESSION, 0, body)
        return header + ct

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        frames, consumed, _, _, _ = split_frames(buf, 1 << 26, False)
        self.buf = buf[consumed:]
        opened = open_frames(self.open, frames, self.stats, self.transport)
        if opened is not None:
            self._handle(opened)


def latency_summary(stats: Stats) -> dict[str, float]:
    lat = sorted(stats.latencies)
    out = {
        "lat_p50_ms": round(percentile(lat, 0.50) / 1e6, 3),
        "lat_p99_ms": round(percentile(lat, 0.99) / 1e6, 3),
        "lat_samples": len(lat),
    }
    if stats.ack_latencies:  # --ack-latency: MS sent -> its reply (acknowledged = durable)
        acks = sorted(stats.ack_latencies)
        out["ack_p50_ms"] = round(percentile(acks, 0.50) / 1e6, 3)
        out["ack_p99_ms"] = round(percentile(acks, 0.99) / 1e6, 3)
        out["ack_max_ms"] = round(acks[-1] / 1e6, 3)
        out["ack_samples"] = len(acks)
    return out


# ---- the server's /metrics (--admin-port) -----------------------------------------------------
async def scrape(port: int, host: str = HOST) -> dict[str, float]:
    """The server's /metrics as ``{"name{labels}": value}`` ({} when the scrape fails)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    except (TimeoutError, OSError):
        return {}
    _, _, body = data.partition(b"\r\n\r\n")
    out: dict[str, float] = {}
    for line in body.decode(errors="replace").splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def histogram_delta(
    before: dict[str, float], after: dict[str, float], name: str
) -> list[tuple[float, float]]:
    """(upper bound, observations in that bucket or below) of histogram ``name`` over a window."""
    prefix = name + '_bucket{le="'
    rows = []
    for key, value in after.items():
        if key.startswith(prefix):
            bound = key[len(prefix) : -2]
            le = float("inf") if bound == "+Inf" else float(bound)
            rows.append((le, value - before.get(key, 0.0)))
    return sorted(rows)


def histogram_quantile(rows: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' ``histogram_quantile``: linear within the bucket that holds quantile ``q``."""
    if not rows or rows[-1][1] <= 0:
        return None
    rank = q * rows[-1][1]
    lower, below = 0.0, 0.0
    for le, n in rows:
        if n >= rank:
            if le == float("inf"):
                return lower  # past the last finite bound: that bound is all one can say
            return lower + (le - lower) * ((rank - below) / (n - below) if n > below else 1.0)
        lower, below = le, n
    return lower


def server_window(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Loop lag and commit figures of the measured window from two scrapes."""
    if not before or not after:
        return {}
    out: dict[str, Any] = {}
    lag = histogram_delta(before, after, "privchat_loop_lag_seconds")
    if lag and lag[-1][1] > 0:
        for name, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
            v = histogram_quantile(lag, q)
            out[f"loop_lag_{name}_ms"] = None if v is None else round(v * 1e3, 3)
        out["loop_lag_samples"] = int(lag[-1][1])
        within = dict(lag).get(0.002)
        if within is not None:
            out["loop_lag_over_2ms"] = int(lag[-1][1] - within)

    def d(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    commits = d("privchat_store_commits_total")
    if commits > 0:
        out["commits"] = int(commits)
        out["commit_mean_ms"] = round(d("privchat_store_commit_seconds_total") / commits * 1e3, 3)
        out["batch_mean_writes"] = round(d("privchat_store_committed_writes_total") / commits, 1)
        commit = histogram_delta(before, after, "privchat_store_commit_seconds")
        v = histogram_quantile(commit, 0.99)
        if v is not None:
            out["commit_p99_ms"] = round(v * 1e3, 3)
    return out


async def paced(senders: list[SenderProto], stats: Stats, rate: float) -> None:
    """Send ``rate`` msgs/s in total, spread over the senders, in 1 ms ticks."""
    t0 = time.monotonic()
    per = rate / len(senders)
    sent = 0
    while stats.active():
        due = int((time.monotonic() - t0) * per) - sent
        if due > 0:
            for s in senders:
                s.send(due)
            sent += due
        await asyncio.sleep(0.001)


async def measure(
    stats: Stats, args: argparse.Namespace, start: Callable[[], None]
) -> tuple[int, float, float]:
    stats.deadline = time.monotonic() + args.warmup + args.duration + 5
    start()
    await asyncio.sleep(args.warmup)
    stats.latencies.clear()
    stats.ack_latencies.clear()
    m0 = await scrape(args.admin_port, args.host) if args.admin_port else {}
    c0, t0, cpu0 = stats.count, time.monotonic(), cpu_seconds(args.server_pid)
    end = t0 + args.duration
    while stats.running and (left := end - time.monotonic()) > 0:  # --max-messages ends early
        await asyncio.sleep(min(left, 0.05))
    c1, t1, cpu1 = stats.count, time.monotonic(), cpu_seconds(args.server_pid)
    m1 = await scrape(args.admin_port, args.host) if args.admin_port else {}
    stats.running = False
    stats.server_window = server_window(m0, m1)
    return c1 - c0, t1 - t0, cpu1 - cpu0


def new_sender(
    args: argparse.Namespace,
    stats: Stats,
    client: Client,
    channel_id: int,
    channel_type: int,
    window: int,
) -> SenderProto:
    if args.encrypt:
        cipher = session_cipher(client)
        return SealedSenderProto(stats, channel_id, channel_type, window, cipher)
    return SenderProto(stats, channel_id, channel_type, window)


def new_receiver(
    args: argparse.Namespace, stats: Stats, client: Client, sample_every: int
) -> ReceiverProto:
    if args.encrypt:
        return SealedReceiverProto(stats, session_cipher(client), sample_every)
    return ReceiverProto(stats, sample_every)


async def scenario_direct(args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    tag = uuid.uuid4().hex[:6]
    key = args.server_key_pem
    senders_c = await make_users(args.port, f"ds{tag}_", args.pairs, args.host, server_key=key)
    receivers_c = await make_users(args.port, f"dr{tag}_", args.pairs, args.host, server_key=key)
    senders: list[SenderProto] = []
    receivers: list[ReceiverProto] = []
    if args.max_messages:
        stats.limit = args.max_messages
    for a, b in zip(senders_c, receivers_c, strict=True):
        resp = await a.send(text="hello", to_user=b.user_id)
        await b.next_push(timeout=10)
        window = 0 if args.rate else args.window
        s = new_sender(args, stats, a, resp.channel_id, 1, window)
        if args.ack_latency:
            s.sent_at = {}
        r = new_receiver(args, stats, b, args.sample_every)
        take_over(a, s)
        take_over(b, r)
        senders.append(s)
        receivers.append(r)
    pacer: asyncio.Task[None] | None = None

    def start() -> None:
        nonlocal pacer
        if args.rate:
            pacer = asyncio.get_running_loop().create_task(paced(senders, stats, args.rate))
        else:
            for s in senders:
                s.send(args.window)

    n, dt, cpu = await measure(stats, args, start)
    if pacer is not None:
        await pacer
    await asyncio.sleep(0.2)
    out: dict[str, Any] = {
        "scenario": "direct",
        "encrypt": bool(args.encrypt),
        "pairs": args.pairs,
        "window": 0 if args.rate else args.window,
        "rate": args.rate,
        "duration_s": round(dt, 3),
        "delivered": n,
        "msgs_per_s": round(n / dt),
        "errors": stats.errors,
    }
    out.update(latency_summary(stats))
    out.update(cpu_figures(n, dt, cpu, args.server_pid))
    out.update(stats.server_window)
    close_all(senders_c + receivers_c)
    return out


async def scenario_group(args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    tag = uuid.uuid4().hex[:6]
    key = args.server_key_pem
    sender_c = await make_user(args.port, f"gs{tag}", args.host, key)
    members_c = await make_users(args.port, f"gm{tag}_", args.members, args.host, server_key=key)
    group = await sender_c.rpc(
        "group/group/create", {"name": "bench", "member_ids": [m.user_id for m in members_c]}
    )
    gid = int(group["group_id"])
    await asyncio.sleep(0.2)
    window = 0 if args.rate else args.window
    sender = new_sender(args, stats, sender_c, gid, 2, window)
    if args.ack_latency:
        sender.sent_at = {}
    if args.max_messages:
        stats.limit = args.max_messages
    take_over(sender_c, sender)
    receivers = []
    for m in members_c:
        m.drain_pushes()
        r = new_receiver(args, stats, m, max(1, args.members // 10))
        take_over(m, r)
        receivers.append(r)
    pacer: asyncio.Task[None] | None = None

    def start() -> None:
        nonlocal pacer
        if args.rate:
            pacer = asyncio.get_running_loop().create_task(paced([sender], stats, args.rate))
        else:
            sender.send(args.window)

    n, dt, cpu = await measure(stats, args, start)
    if pacer is not None:
        await pacer
    await asyncio.sleep(0.2)
    out: dict[str, Any] = {
        "scenario": "group",
        "encrypt": bool(args.encrypt),
        "members": args.members,
        "window": window,
        "rate": args.rate,
        "duration_s": round(dt, 3),
        "deliveries": n,
        "deliveries_per_s": round(n / dt),
        "errors": stats.errors,
        "sent_acked": sender.acked,
    }
    out.update(latency_summary(stats))
    out.update(cpu_figures(n, dt, cpu, args.server_pid))
    out.update(stats.server_window)
    close_all([sender_c, *members_c])
    return out


# ---- idle ----------------------------------------------------------------------------------------
def _error_text(body: bytes) -> str:
    try:
        err = pb.Error.FromString(body)
        return f"{err.code} {err.message}"
    except Exception:  # noqa: BLE001 - a diagnostic only
        return repr(body[:60])


class IdleProto(asyncio.Protocol):
    """password login (RPC) -> LOGIN -> session_ready, then idle (a PING every 20 s)."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self.device_id = str(uuid.uuid4())
        self.buf = b""
        self.step = 0
        self.seq = 0
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.error = ""

    def _write(self, command: int, body: bytes) -> None:
        self.seq += 1
        assert self.transport is not None
        self.transport.write(encode_header(len(body), self.seq, command, 0, 0) + body)

    def _rpc(self, route: str, body: dict[str, Any]) -> None:
        self._write(
            RPC, pb.RpcRequest(route=route, body=json.dumps(body).encode()).SerializeToString()
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._rpc(
            "account/auth/login",
            {"username": self.username, "password": self.password, "device_id": self.device_id},
        )

    def _login(self, body: bytes) -> None:
        self._write(LOGIN, body)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        frames, consumed, _, _, _ = split_frames(buf, 1 << 26, False)
        self.buf = buf[consumed:]
        self._handle(frames)

    def _handle(self, frames: list[tuple[int, int, int, int, bytes]]) -> None:
        for _seq, _command, flags, status, body in frames:
            if flags & 3 != 1 or self.done.done():
                continue
            if status:
                self.error = f"step {self.step} status {status}: " + _error_text(body)
                self.done.set_result(False)
                return
            if self.step == 0:
                token = json.loads(pb.RpcResponse.FromString(body).data)["token"]
                req = pb.AuthorizationRequest(
                    auth_type="JWT",
                    auth_token=token,
                    device_info=pb.DeviceInfo(
                        device_id=self.device_id, device_type="linux", device_name="bench"
                    ),
                    client_info=pb.ClientInfo(client_type="bench", version="0.1.0"),
                    protocol_version="1",
                )
                self._login(req.SerializeToString())
            elif self.step == 1:
                self._rpc("sync/session_ready", {})
            elif self.step == 2:
                self.done.set_result(True)
                self._schedule()
            self.step += 1

    def _schedule(self) -> None:
        self.timer = asyncio.get_running_loop().call_later(20, self._ping)

    def _ping(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._write(PING, b"")
            self._schedule()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(False)
        if self.timer is not None:
            self.timer.cancel()


class SealedIdleProto(IdleProto):
    """IdleProto with an encrypted LOGIN (5.2); from then on every frame is sealed / opened."""

    def __init__(self, username: str, password: str, server_key: rsa.RSAPublicKey) -> None:
        super().__init__(username, password)
        self.server_key = server_key
        self.cipher: SessionCipher | None = None

    def _write(self, command: int, body: bytes) -> None:
        self.seq += 1
        assert self.transport is not None
        if self.cipher is None:  # the password RPC, before the LOGIN
            self.transport.write(encode_header(len(body), self.seq, command, 0, 0) + body)
        else:
            header, ct = self.cipher.seal(self.seq, command, ENC_SESSION, 0, body)
            self.transport.write(header + ct)

    def _login(self, body: bytes) -> None:
        secret = new_secret()
        self.seq += 1
        header, sealed = seal_login(self.server_key, secret, self.seq, LOGIN, ENC_RSA, 0, body)
        self.cipher = SessionCipher.client_side(secret)
        assert self.transport is not None
        self.transport.write(header + sealed)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        frames, consumed, _, _, _ = split_frames(buf, 1 << 26, False)
        self.buf = buf[consumed:]
        cipher = self.cipher
        if cipher is None:
            self._handle(frames)
            return
        opened = []
        for seq, command, flags, status, body in frames:
            if flags & 0x0C:
                try:
                    body = cipher.open(seq, command, flags, status, body)
                except CryptoError:
                    self.error = f"step {self.step}: a frame did not open"
                    break
            elif not (status and self.step == 1):  # only a refused LOGIN comes back plain
                self.error = f"step {self.step}: a plaintext frame on an encrypted session"
                break
            opened.append((seq, command, flags, status, body))
        self._handle(opened)
        if self.error and not self.done.done():
            self.done.set_result(False)
        if self.error:
            assert self.transport is not None
            self.transport.close()


async def scenario_idle(args: argparse.Namespace) -> dict[str, Any]:
    limit = raise_fd_limit(args.sessions + 1024)
    tag = uuid.uuid4().hex[:6]
    name = f"idle{tag}"
    password = "password-" + name
    first = await make_user(args.port, name, args.host, args.server_key_pem)
    pub: rsa.RSAPublicKey | None = args.server_key_obj

    def factory() -> IdleProto:
        if pub is not None:
            return SealedIdleProto(name, password, pub)
        return IdleProto(name, password)

    await asyncio.sleep(0.5)
    before = rss_kib(args.server_pid) if args.server_pid else 0
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(args.concurrency)
    protos: list[IdleProto] = []
    reasons: dict[str, int] = {}
    t0 = time.monotonic()
    deadline = t0 + args.setup_timeout

    async def one(i: int) -> bool:
        async with sem:
            if time.monotonic() > deadline:
                return False
            try:
                _, proto = await loop.create_connection(
                    factory,
                    args.host,
                    args.port,
                    local_addr=local_addr(i),
                )
            except OSError as exc:
                reasons[f"connect: {exc}"[:80]] = reasons.get(f"connect: {exc}"[:80], 0) + 1
                return False
            protos.append(proto)
            try:
                ok = await asyncio.wait_for(proto.done, 30)
            except TimeoutError:
                ok = False
                proto.error = proto.error or f"timeout at step {proto.step}"
            if not ok:
                why = proto.error or f"closed at step {proto.step}"
                reasons[why] = reasons.get(why, 0) + 1
            return ok

    results = await asyncio.gather(*(one(i) for i in range(args.sessions)))
    setup_s = time.monotonic() - t0
    ok = sum(results)
    await asyncio.sleep(1.0)
    after = rss_kib(args.server_pid) if args.server_pid else 0
    per = (after - before) / ok if ok and args.server_pid else float("nan")
    for p in protos:
        if p.transport is not None:
            p.transport.close()
    await first.close()
    await asyncio.sleep(0.2)
    return {
        "scenario": "idle",
        "encrypt": bool(args.encrypt),
        "sessions": ok,
        "failed": args.sessions - ok,
        "fd_limit": limit,
        "setup_s": round(setup_s, 2),
        "logins_per_s": round(ok / setup_s) if setup_s else 0,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_session": round(per, 2),
        "fail_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:5]),
    }


# ---- redis / mqtt comparison ---------------------------------------------------------------------
def resp_cmd(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


class RedisSub(asyncio.Protocol):
    """Counts ``message`` pushes by counting the ``$7\\r\\nmessage`` markers (no full parser)."""

    MARK = b"$7\r\nmessage\r\n"

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.tail = b""
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(resp_cmd(b"SUBSCRIBE", b"bench"))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self.tail + data
        n = buf.count(self.MARK)
        self.tail = buf[-(len(self.MARK) - 1) :]
        if not self.subscribed.done() and b"subscribe" in buf:
            self.subscribed.set_result(None)
        self.stats.count += n


class RedisPub(asyncio.Protocol):
    def __init__(self, stats: Stats, window: int) -> None:
        self.stats = stats
        self.window = window
        self.frame = resp_cmd(b"PUBLISH", b"bench", b'{"content":"bench message"}')
        self.tail = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, n: int) -> None:
        assert self.transport is not None
        self.transport.write(self.frame * n)

    def data_received(self, data: bytes) -> None:
        n = data.count(b":")  # integer replies ":<receivers>\r\n"
        if n and self.stats.active():
            self.send(n)


def mqtt_str(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


def mqtt_packet(ptype: int, body: bytes) -> bytes:
    rem = len(body)
    enc = bytearray()
    while True:
        b = rem % 128
        rem //= 128
        enc.append(b | 0x80 if rem else b)
        if not rem:
            break
    return bytes((ptype,)) + bytes(enc) + body


def mqtt_connect(client_id: bytes) -> bytes:
    # protocol name, level 4 (3.1.1), flags: clean session, keepalive 60
    return mqtt_packet(0x10, mqtt_str(b"MQTT") + b"\x04\x02\x00\x3c" + mqtt_str(client_id))


class MqttSub(asyncio.Protocol):
    """Counts PUBLISH packets with a small incremental parser."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.buf = b""
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sub = mqtt_packet(0x82, b"\x00\x01" + mqtt_str(b"bench") + b"\x00")
        transport.write(mqtt_connect(uuid.uuid4().hex[:16].encode()) + sub)  # type: ignore

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, end, n = 0, len(buf), 0
        while end - pos >= 2:
            ptype = buf[pos]
            mult, rem, i = 1, 0, pos + 1
            while i < end:
                b = buf[i]
                rem += (b & 0x7F) * mult
                mult *= 128
                i += 1
                if not b & 0x80:
                    break
            else:
                break
            if i + rem > end:
                break
            if ptype & 0xF0 == 0x30:
                n += 1
            elif ptype == 0x90 and not self.subscribed.done():
                self.subscribed.set_result(None)
            pos = i + rem
        self.buf = buf[pos:]
        self.stats.count += n


class MqttPub(asyncio.Protocol):
    """QoS 0 has no reply: a PINGREQ after every ``window`` PUBLISHes paces the sender."""

    def __init__(self, stats: Stats, window: int) -> None:
        self.stats = stats
        self.window = window
        self.publish = mqtt_packet(0x30, mqtt_str(b"bench") + b'{"content":"bench message"}')
        self.chunk = self.publish * window + b"\xc0\x00"
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(mqtt_connect(uuid.uuid4().hex[:16].encode()))  # type: ignore

    def send(self, n: int) -> None:
        assert self.transport is not None
        self.transport.write(self.chunk * n)

    def data_received(self, data: bytes) -> None:
        if not self.connected.done() and data[:1] == b"\x20":
            self.connected.set_result(None)
            data = data[4:]
        n = data.count(b"\xd0\x00")  # PINGRESP
        if n and self.stats.active():
            self.send(n)


async def scenario_pubsub(args: argparse.Namespace) -> dict[str, Any]:
    """1-to-F pub/sub against redis-server or mosquitto."""
    stats = Stats()
    loop = asyncio.get_running_loop()
    kind = args.scenario
    sub_cls: Any = RedisSub if kind == "redis" else MqttSub
    subs = await connect_many(
        lambda: sub_cls(stats), args.port, args.members, args.host, spread=False
    )
    await asyncio.wait_for(asyncio.gather(*(s.subscribed for s in subs)), 10)
    pub: RedisPub | MqttPub
    if kind == "redis":
        _, pub = await loop.create_connection(
            lambda: RedisPub(stats, args.window), args.host, args.port
        )
        depth = args.window
    else:
        _, mpub = await loop.create_connection(lambda: MqttPub(stats, 8), args.host, args.port)
        await asyncio.wait_for(mpub.connected, 10)
        pub = mpub
        depth = max(1, args.window // 8)
    n, dt, cpu = await measure(stats, args, lambda: pub.send(depth))
    if pub.transport is not None:
        pub.transport.close()
    for s in subs:
        s_tr = getattr(s, "transport", None)
        if s_tr is not None:
            s_tr.close()
    return {
        "scenario": kind,
        "members": args.members,
        "window": args.window,
        "duration_s": round(dt, 3),
        "deliveries": n,
        "deliveries_per_s": round(n / dt),
        **cpu_figures(n, dt, cpu, args.server_pid),
    }


# ---- CLI -----------------------------------------------------------------------------------------
SCENARIOS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "ping": scenario_ping,
    "direct": scenario_direct,
    "group": scenario_group,
    "idle": scenario_idle,
    "redis": scenario_pubsub,
    "mqtt": scenario_pubsub,
}
ENCRYPTED_SCENARIOS = ("ping", "direct", "group", "idle")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="privchat_tcp load generator (loopback only)")
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--host", default=HOST)
    p.add_argument("--port", type=int, default=9001)
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring")
    p.add_argument("--conns", type=int, default=100, help="ping: connections")
    p.add_argument("--depth", type=int, default=32, help="ping: frames in flight per conn")
    p.add_argument("--pairs", type=int, default=10, help="direct: sender/receiver pairs")
    p.add_argument("--window", type=int, default=32, help="direct/group: MS in flight/sender")
    p.add_argument("--rate", type=float, default=0.0, help="direct/group: paced msgs/s total")
    p.add_argument("--members", type=int, default=100, help="group/redis/mqtt: receivers")
    p.add_argument("--sample-every", type=int, default=1, help="latency: sample 1 of N")
    p.add_argument("--sessions", type=int, default=10_000, help="idle: sessions")
    p.add_argument("--concurrency", type=int, default=200, help="idle: logins in flight")
    p.add_argument("--setup-timeout", type=float, default=120.0, help="idle: setup bound, s")
    p.add_argument(
        "--server-pid", type=int, default=0, help="server pid: RSS (idle), CPU use (others)"
    )
    p.add_argument(
        "--encrypt",
        action="store_true",
        help="ping/direct/group/idle: encrypted LOGIN, AES-256-GCM session frames (--server-key)",
    )
    p.add_argument(
        "--server-key", default="", help="--encrypt: the server's RSA key, public or private PEM"
    )
    p.add_argument(
        "--ack-latency",
        action="store_true",
        help="direct/group: also time each MS to its reply (acknowledgement latency p50/p99)",
    )
    p.add_argument(
        "--max-messages",
        type=int,
        default=0,
        help="direct/group: stop once this many deliveries are counted (0: only --duration)",
    )
    p.add_argument(
        "--admin-port",
        type=int,
        default=0,
        help="the server's admin port: scrape /metrics at the window's start and end (loop lag "
        "p50/p99, commits, batch size)",
    )
    p.add_argument("--json", default="", help="write the result as JSON here")
    return p


def print_table(rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    cells = [[str(r.get(k, "")) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))


async def run_scenario(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit()
    limit = args.duration + args.warmup + args.setup_timeout + 120
    result: dict[str, Any] = await asyncio.wait_for(SCENARIOS[args.scenario](args), limit)
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("loopback only", file=sys.stderr)
        return 2
    args.server_key_obj = None
    args.server_key_pem = None
    if args.encrypt:
        if args.scenario not in ENCRYPTED_SCENARIOS:
            print(f"--encrypt: only {', '.join(ENCRYPTED_SCENARIOS)}", file=sys.stderr)
            return 2
        if not args.server_key:
            print("--encrypt needs --server-key FILE (the server's PEM key)", file=sys.stderr)
            return 2
        args.server_key_obj = load_server_key(args.server_key)
        args.server_key_pem = public_pem(args.server_key_obj)
    result = uvloop.run(run_scenario(args))
    print_table([result])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

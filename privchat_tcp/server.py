"""The IO adapter: asyncio/uvloop transports <-> sessions, plus the server's lifecycle.

``data_received`` hands the bytes to the sans-IO connection, dispatches every complete frame,
and makes one write with everything it answered. A one-second sweep enforces the login deadline,
the heartbeat timeout, the PROXY header deadline and the slow-consumer timeout for all sessions
at once (no timer per connection). The per-connection limits live in ``ServerProtocol``; the
server accepts from its own listening sockets, every pending connection per loop turn
(``_accept_ready``); ``drain()`` is the SIGTERM path; operations: docs/operations.md.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import pathlib
import signal
import socket
from bisect import bisect_left as _bisect
from collections.abc import Coroutine
from time import perf_counter as _perf
from typing import Any

from .admin import LATENCY_BUCKETS, AdminServer
from .auth import PasswordHasher, TokenIssuer, load_or_create_secret
from .config import Settings
from .crypto import ServerKey
from .errors import ErrorCode, ProtocolViolation, Status
from .frame import Frame
from .hub import Hub
from .proxy import ProxyError, ProxyParser
from .service import Service
from .session import Context, Session
from .store import MemoryStore, Store

__all__ = ["Server", "serve", "run"]

log = logging.getLogger("privchat_tcp.server")

BACKLOG = 4096
_INF = float("inf")


class TokenBucket:
    """A token bucket: ``tokens`` as of ``at``; the rate and size are the caller's settings.

    One per connection (frames), per user (frames, ``UserBucket``) and per client address (new
    connections). ``tokens`` may go below 0: tokens reserved ahead (``ServerProtocol._limit``).
    """

    __slots__ = ("tokens", "at")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.at = now

    def refill(self, now: float, rate: float, burst: float) -> float:
        """Add what ``rate`` gave since the last refill, up to ``burst``; the tokens now."""
        tokens = self.tokens + (now - self.at) * rate
        self.at = now
        self.tokens = tokens = tokens if tokens < burst else burst
        return tokens

    def full(self, now: float, rate: float, burst: float) -> bool:
        """Whether it would be full by ``now`` (nothing left to remember)."""
        return self.tokens + (now - self.at) * rate >= burst


class UserBucket(TokenBucket):
    """The frame token bucket that all online sessions of one user share."""

    __slots__ = ("sessions",)

    def __init__(self, tokens: float, now: float) -> None:
        super().__init__(tokens, now)
        self.sessions = 0


class ServerProtocol(Session, asyncio.Protocol):
    """One connection. Besides the session it enforces the per-connection limits:

    - a token bucket on frames read (``rate_per_connection``): frames over it are held and
      reading pauses until the bucket refills; what cannot be served within
      ``rate_limit_grace``, or arrives while the connection has been over its rate for longer
      than that, is answered RATE_LIMITED (in order, so encrypted sessions keep their counters);
      after LOGIN a second bucket, shared by all sessions of the user (``rate_per_user``),
      limits the same way: a frame needs a token from both;
    - write backpressure: above ``push_high_water`` (the transport's ``pause_writing``) output
      waits in the session (pending pushes and queued frames) and reading pauses; more than
      ``push_hard_limit`` buffered in all, or ``slow_consumer_timeout`` seconds above the soft
      limit, ends the session with SLOW_CONSUMER;
    - an optional PROXY protocol header before the first frame (``proxy.py``).
    """

    __slots__ = (
        "transport",
        "server",
        "peer_ip",
        "bucket",
        "throttled_since",
        "held",
        "held_ok",
        "read_paused",
        "slow_since",
        "lost",
        "proxy",
        "ubucket",
    )

    def __init__(self, server: Server) -> None:
        super().__init__(server.ctx, server.clock())
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer_ip = ""
        self.bucket = TokenBucket(server.burst, self.connected_at)
        self.throttled_since = 0.0
        self.held: list[Frame] = []
        self.held_ok = 0
        self.read_paused = 0  # bit 1: rate limit, bit 2: write backpressure
        self.slow_since = 0.0
        self.lost = False
        self.proxy: ProxyParser | None = None
        self.ubucket: UserBucket | None = None

    # ---- connection lifecycle ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        s = server.settings
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer_ip = str(peer[0])
            self.peer = f"{peer[0]}:{peer[1]}"
        else:
            self.peer = self.peer_ip = str(peer)
        server.connections.add(self)
        server.stats.accepted += 1
        transport.set_write_buffer_limits(high=s.push_high_water)  # type: ignore[attr-defined]
        if s.max_connections and len(server.connections) > s.max_connections:
            server.stats.rejected_busy += 1
            self.reject(Status.BUSY, ErrorCode.SYSTEM_BUSY, "too many connections")
            return
        if s.proxy_protocol:
            if not server.proxy_source_allowed(self.peer_ip):
                log.warning("PROXY header expected from %s, which is not allowed", self.peer)
                server.stats.proxy_rejected += 1
                self._abort()
                return
            self.proxy = ProxyParser()
            return
        self._peer_known()

    def _peer_known(self) -> None:
        if not self.server.allow_new_connection(self.peer_ip):
            self.server.stats.rejected_rate += 1
            self.reject(
                Status.RATE_LIMITED,
                ErrorCode.RATE_LIMIT_EXCEEDED,
                "too many new connections from this address",
            )

    def reject(self, status: int, code: int, message: str) -> None:
        """Answer LOGOUT flow 2 with the reason and close (before any frame was read)."""
        self.conn.end_session(status, code, message)
        self.flush()

    def eof_received(self) -> bool | None:
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.lost = True
        self._unregister()
        self.pending.clear()
        self.conn.out.clear()
        self.held = []

    def _close(self) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            self.closed = True
            self._unregister()
            transport.close()
            if transport.get_write_buffer_size():
                # a peer that does not read would keep the socket forever
                self.server.loop.call_later(5.0, self._abort)

    def _abort(self) -> None:
        if not self.lost and self.transport is not None:
            self.closed = True
            self._unregister()
            self.transport.abort()

    def _unregister(self) -> None:
        """Leave the server's connections, the hub and the user's rate bucket (idempotent)."""
        self.server.connections.discard(self)
        if self.user_id:
            self.ctx.hub.unregister(self)
        if self.ubucket is not None:
            self.server.release_user_bucket(self.user_id)
            self.ubucket = None

    # ---- input ---------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        server = self.server
        self.last_rx = server.now
        if self.proxy is not None:
            data = self._proxy_header(data)
            if not data:
                return
        frames = self.conn.receive_data(data)
        if frames:
            stats = server.stats
            n = len(frames)
            stats.frames_in += n
            by_cmd = stats.frames_in_by_command
            if n == 1:
                by_cmd[frames[0][1]] += 1
            else:
                for f in frames:
                    by_cmd[f[1]] += 1
            if server.rate or (self.user_id and server.user_rate):
                # token buckets; the slow path holds or refuses what is over them
                now = server.clock()
                if self.user_id and server.user_rate and self.ubucket is None:
                    self.ubucket = server.user_bucket(self.user_id)
                if self._refill(now) >= n and not self.held:
                    self._take(n)
                    self.throttled_since = 0.0
                else:
                    frames = self._limit(frames, now)
            if frames:
                stats.reads += 1
                if stats.reads & 15 != 1:
                    self.handle(frames)
                else:  # the latency histogram samples one read in 16
                    t0 = _perf()
                    self.handle(frames)
                    dt = _perf() - t0
                    stats.latency_sum += dt
                    stats.latency_buckets[_bisect(LATENCY_BUCKETS, dt)] += 1
        self._send_out()

    def _proxy_header(self, data: bytes) -> bytes:
        assert self.proxy is not None
        try:
            result = self.proxy.feed(data)
        except ProxyError as exc:
            log.info("closing %s: %s", self.peer, exc)
            self.server.stats.proxy_rejected += 1
            self._abort()
            return b""
        if result is None:
            return b""
        self.proxy = None
        if result.source is not None:
            host, port = result.source
            self.peer_ip = host
            self.peer = f"{host}:{port}"
        self._peer_known()
        if self.closed:
            return b""
        return result.rest

    def _limit(self, frames: list[Frame], now: float) -> list[Frame]:
        """Over the rate (the bucket was refilled): return the frames to handle now; hold
        the rest (reading pauses) or refuse it."""
        server = self.server
        grace = server.settings.rate_limit_grace
        if self.held:  # already throttled: keep the order; these are refused at release
            self.held.extend(frames)
            return frames[:0]
        k = max(0, int(self._available()))
        self._take(k)
        over = frames[k:]
        # the rate of the bucket that limits (the user's is shared: other sessions draw on it)
        rate = server.rate
        ub = self.ubucket
        if ub is not None and (not rate or ub.tokens < self.bucket.tokens):
            rate = server.user_rate
        left = self._available()  # below 1; below 0 where other sessions reserved tokens
        if not self.throttled_since:
            self.throttled_since = now
        if now - self.throttled_since > grace:
            ok = 0  # over the rate for too long: refuse what is over it
        else:  # hold what can be served within the grace period, refuse the rest
            ok = min(len(over), max(0, int(rate * grace + left)))
        # the held frames that will be served take their tokens now (a reservation: the
        # bucket goes below 0 and refills by the release), so that sessions sharing the
        # user's bucket do not count the same tokens twice
        self._take(ok)
        self.held = over
        self.held_ok = ok
        self._pause(1)
        delay = max(0.0, (ok - left) / rate if ok else (1 - left) / rate)
        server.loop.call_later(delay, self._release)
        return frames[:k]

    def _refill(self, now: float) -> float:
        """Refill the connection's and the user's bucket; the tokens both allow."""
        server = self.server
        avail = self.bucket.refill(now, server.rate, server.burst) if server.rate else _INF
        ub = self.ubucket
        if ub is not None:
            tokens = ub.refill(now, server.user_rate, server.user_burst)
            if tokens < avail:
                avail = tokens
        return avail

    def _available(self) -> float:
        avail = self.bucket.tokens if self.server.rate else _INF
        ub = self.ubucket
        return ub.tokens if ub is not None and ub.tokens < avail else avail

    def _take(self, n: int) -> None:
        if self.server.rate:
            self.bucket.tokens -= n
        if self.ubucket is not None:
            self.ubucket.tokens -= n  # may go below 0 at release: the user's other sessions wait

    def _release(self) -> None:
        if self.closed:
            return
        held, ok = self.held, self.held_ok
        self.held = []
        server = self.server
        now = server.clock()
        self._refill(now)  # the served ones took their tokens when they were held
        if ok:
            self.handle(held[:ok])
        if len(held) > ok and not self.conn.closing:
            self._refuse(held[ok:])
        self._unpause(1)
        self._send_out()

    def _refuse(self, frames: list[Frame]) -> None:
        conn = self.conn
        self.server.stats.rate_limited += len(frames)
        for seq, command, flags, status, body in frames:
            if conn.cipher is not None:  # keep the receive counter in step
                try:
                    conn.open_body(seq, command, flags, status, body)
                except ProtocolViolation as exc:
                    self._error(seq, command, exc.status, exc.code, exc.message)
                    if exc.close:
                        conn.closing = True
                        return
                except Exception:  # noqa: BLE001 - the frame is refused anyway
                    pass
            self._error(
                seq,
                command,
                Status.RATE_LIMITED,
                ErrorCode.RATE_LIMIT_EXCEEDED,
                "rate limit exceeded",
            )

    def _pause(self, bit: int) -> None:
        if not self.read_paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.read_paused |= bit

    def _unpause(self, bit: int) -> None:
        if self.read_paused & bit:
            self.read_paused &= ~bit
            if not self.read_paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    # ---- output --------------------------------------------------------------------------
    def _error(self, seq: int, command: int, status: int, code: int, message: str) -> None:
        self.server.stats.errors_by_status[status] += 1
        super()._error(seq, command, status, code, message)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def flush(self) -> None:
        if not self.closed:
            self._send_out()

    def _send_out(self) -> None:
        """Write what the session queued, unless the peer is not reading (then hold it)."""
        if self.closed:
            return
        conn = self.conn
        if conn.pending_violation is not None and not self.held:
            conn.finish_violation()
        if self.slow_since and not conn.closing:
            self._check_held()
            return
        pending = self.pending
        out = conn.out
        if pending or out:
            transport = self.transport
            assert transport is not None
            buffered = transport.get_write_buffer_size()
            if buffered and not conn.closing:
                # the peer is behind: check the hard limit before sealing anything, so the
                # LOGOUT of an encrypted session is the next frame the client can open
                size = buffered + sum(map(len, out))
                if pending:
                    size += sum(map(len, pending)) + 12 * len(pending)
                if size > self.server.hard_limit:
                    self._slow_end()
                    return
            if pending:
                self._materialize()
            data = out[0] if len(out) == 1 else b"".join(out)
            stats = self.server.stats
            by_cmd = stats.frames_out_by_command
            if len(out) == 1:  # one element per frame (protocol.Connection.send)
                by_cmd[data[9]] += 1
            else:
                for f in out:
                    by_cmd[f[9]] += 1
            out.clear()
            stats.bytes_out += len(data)
            stats.writes += 1
            transport.write(data)
        if conn.closing:
            self._close()

    def _check_held(self) -> None:
        transport = self.transport
        assert transport is not None
        held = sum(map(len, self.pending)) + 12 * len(self.pending) + sum(map(len, self.conn.out))
        if transport.get_write_buffer_size() + held > self.server.settings.push_hard_limit:
            self._slow_end()

    def _slow_end(self) -> None:
        """End the session with SLOW_CONSUMER, dropping what it did not read."""
        if self.closed:
            return
        self.server.stats.slow_consumers += 1
        log.info("%s (user %d) ends: slow consumer", self.peer, self.user_id)
        conn = self.conn
        self.pending.clear()
        sealed_dropped = conn.cipher is not None and bool(conn.out)
        conn.out.clear()
        self.slow_since = 0.0
        if conn.closing or sealed_dropped:
            # frames sealed with s2c counters were dropped: a LOGOUT sealed after them could
            # not be opened by the client, so the connection just closes
            conn.closing = True
            self._close()
            return
        self.end(Status.SLOW_CONSUMER, ErrorCode.SYSTEM_BUSY, "pushes were not read fast enough")

    def pause_writing(self) -> None:
        self.slow_since = self.server.clock()
        self._pause(2)

    def resume_writing(self) -> None:
        self.slow_since = 0.0
        self._unpause(2)
        self._send_out()


class ServerStats:
    """Plain counters, bumped on the hot path and exported at scrape time (admin.py)."""

    __slots__ = (
        "accepted",
        "rejected_busy",
        "rejected_rate",
        "proxy_rejected",
        "frames_in",
        "frames_in_by_command",
        "frames_out_by_command",
        "bytes_out",
        "writes",
        "errors_by_status",
        "rate_limited",
        "slow_consumers",
        "timeouts",
        "latency_buckets",
        "latency_sum",
        "reads",
    )

    def __init__(self) -> None:
        self.accepted = 0
        self.rejected_busy = 0
        self.rejected_rate = 0
        self.proxy_rejected = 0
        self.frames_in = 0
        self.frames_in_by_command = [0] * 256
        self.frames_out_by_command = [0] * 256
        self.bytes_out = 0
        self.writes = 0
        self.errors_by_status = [0] * 256
        self.rate_limited = 0
        self.slow_consumers = 0
        self.timeouts = 0
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.reads = 0


class Server:
    """One listening server. ``await Server(settings).start()``; ``await server.stop()``."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self.clock = self.loop.time
        self.now = self.clock()
        self.connections: set[ServerProtocol] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._listeners: list[socket.socket] = []
        self._sweeper: asyncio.TimerHandle | None = None
        self.stats = ServerStats()
        self._port: int | None = None
        self.admin: AdminServer | None = None
        self._ip_buckets: dict[str, TokenBucket] = {}
        self._proxy_networks = settings.proxy_networks()
        # hot-path copies of settings
        self.rate = float(settings.rate_per_connection)
        self.burst = float(settings.burst_per_connection)
        self.user_rate = float(settings.rate_per_user)
        self.user_burst = float(settings.burst_per_user)
        self._user_buckets: dict[int, UserBucket] = {}
        self._offline_buckets: dict[int, None] = {}  # users whose last session ended
        self.hard_limit = settings.push_hard_limit
        secret = settings.jwt_secret or load_or_create_secret(settings.data_path)
        self.store = store or MemoryStore()
        self._store_closed = False
        self.hub = Hub(settings, self.loop.call_soon)
        self.service = Service(settings, self.store, self.hub)
        server_key = None
        if settings.encryption:
            path = (
                pathlib.Path(settings.rsa_key_file)
                if settings.rsa_key_file
                else settings.data_path / "server_key.pem"
            )
            server_key = ServerKey.load_or_create(path)
        self.ctx = Context(
            settings,
            self.service,
            self.hub,
            TokenIssuer(secret, settings.token_ttl, settings.refresh_token_ttl),
            PasswordHasher(settings.argon2_time_cost, settings.argon2_memory_kib),
            server_key,
            self._spawn,
            self._run_blocking,
        )

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_blocking(self, fn: Any, *args: Any) -> Any:
        return await self.loop.run_in_executor(None, fn, *args)

    @property
    def port(self) -> int:
        assert self._port is not None, "not started"
        return self._port

    @property
    def draining(self) -> bool:
        """True from the start of a drain (``/readyz`` answers 503)."""
        return bool(self.ctx.draining)

    async def start(self) -> Server:
        if self.settings.accept_batch:
            self._listeners = _listen(self.settings.host, self.settings.port, BACKLOG)
            for sock in self._listeners:
                self.loop.add_reader(sock.fileno(), self._accept_ready, sock)
            self._port = int(self._listeners[0].getsockname()[1])
        else:
            self._server = await self.loop.create_server(
                lambda: ServerProtocol(self),
                self.settings.host,
                self.settings.port,
                backlog=BACKLOG,
                reuse_address=True,
            )
            self._port = int(self._server.sockets[0].getsockname()[1])
        self._sweeper = self.loop.call_later(1.0, self._sweep)
        if self.settings.admin_port:
            self.admin = await AdminServer(
                self, self.settings.admin_host, self.settings.admin_port
            ).start()
        key = self.ctx.server_key
        log.info(
            "privchat-tcp listening on %s:%d (store epoch %s)",
            self.settings.host,
            self.port,
            self.store.epoch,
        )
        if key is not None:
            log.info("server key fingerprint (SHA-256): %s", key.fingerprint())
        return self

    def _accept_ready(self, sock: socket.socket) -> None:
        """Accept every pending connection now, up to ``accept_batch`` (uvloop's own server
        accepts one per loop turn, so a busy loop admits a burst of reconnects slowly)."""
        loop = self.loop
        for _ in range(self.settings.accept_batch):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # out of descriptors: stop accepting for a moment, the backlog waits
                    log.warning("accept failed (%s); pausing accepts for 100 ms", exc)
                    loop.remove_reader(sock.fileno())
                    loop.call_later(0.1, self._resume_accepting, sock)
                return  # ECONNABORTED and the like: the next readiness tries again
            conn.setblocking(False)
            if conn.family != socket.AF_UNIX:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._spawn(self._adopt(conn))

    def _resume_accepting(self, sock: socket.socket) -> None:
        if sock in self._listeners and sock.fileno() >= 0:
            self.loop.add_reader(sock.fileno(), self._accept_ready, sock)

    async def _adopt(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: ServerProtocol(self), conn)
        except OSError as exc:
            log.debug("accepted socket failed: %s", exc)
            conn.close()

    def _close_listeners(self) -> None:
        if self._server is not None:
            self._server.close()
        for sock in self._listeners:
            if sock.fileno() >= 0:
                self.loop.remove_reader(sock.fileno())
                sock.close()
        self._listeners = []

    def allow_new_connection(self, ip: str) -> bool:
        """Per-address token bucket on new connections (``conn_rate_per_ip``)."""
        rate = self.settings.conn_rate_per_ip
        if not rate:
            return True
        now = self.clock()
        burst = float(self.settings.conn_burst_per_ip)
        bucket = self._ip_buckets.get(ip)
        if bucket is None:
            bucket = self._ip_buckets[ip] = TokenBucket(burst, now)
        if bucket.refill(now, rate, burst) < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def user_bucket(self, user_id: int) -> UserBucket:
        """The rate bucket of a user's online sessions, made full for the first of them."""
        bucket = self._user_buckets.get(user_id)
        if bucket is None:
            bucket = self._user_buckets[user_id] = UserBucket(self.user_burst, self.clock())
        bucket.sessions += 1
        self._offline_buckets.pop(user_id, None)
        return bucket

    def release_user_bucket(self, user_id: int) -> None:
        """A session of the user ended. The bucket stays until the sweep finds it unused and
        full again, so that reconnecting does not refill it."""
        bucket = self._user_buckets.get(user_id)
        if bucket is not None:
            bucket.sessions -= 1
            if bucket.sessions <= 0:
                self._offline_buckets[user_id] = None

    def proxy_source_allowed(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._proxy_networks)

    def _sweep(self) -> None:
        self.now = now = self.clock()
        s = self.settings
        login_deadline = now - s.login_timeout
        idle_deadline = now - 2 * s.heartbeat_interval
        proxy_deadline = now - s.proxy_timeout
        slow_deadline = now - s.slow_consumer_timeout
        if self._ip_buckets:  # forget addresses whose bucket is full again
            rate, burst = s.conn_rate_per_ip, s.conn_burst_per_ip
            for ip, bucket in list(self._ip_buckets.items()):
                if not rate or bucket.full(now, rate, burst):
                    del self._ip_buckets[ip]
        if self._offline_buckets:  # forget users offline whose bucket is full again
            urate, uburst = self.user_rate, self.user_burst
            for uid in list(self._offline_buckets):
                ub = self._user_buckets.get(uid)
                if ub is None or (ub.sessions <= 0 and ub.full(now, urate, uburst)):
                    self._user_buckets.pop(uid, None)
                    del self._offline_buckets[uid]
        for session in list(self.connections):
            if session.closed:
                continue
            if session.proxy is not None:
                if session.connected_at < proxy_deadline:
                    log.info("closing %s: no PROXY header in time", session.peer)
                    self.stats.proxy_rejected += 1
                    session._abort()
                continue
            if session.slow_since and session.slow_since < slow_deadline:
                session._slow_end()
                continue
            if not session.user_id:
                if session.connected_at < login_deadline:
                    self.stats.timeouts += 1
                    session.conn.send_push(
                        2, _timeout_body("login deadline passed"), Status.TIMEOUT
                    )
                    session.conn.closing = True
                    session.flush()
            elif session.last_rx < idle_deadline:
                self.stats.timeouts += 1
                session.end(Status.TIMEOUT, ErrorCode.TIMEOUT, "heartbeat missed")
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    async def drain(self) -> None:
        """Graceful shutdown (SIGTERM), PROTOCOL.md section 9.

        ``/readyz`` fails at once while the listener stays open for ``drain_grace`` seconds (the
        load balancer notices and stops sending); then the listener closes and the sessions end
        with LOGOUT flow 2 GOING_AWAY, spread evenly over ``drain_window`` seconds so their
        reconnects do not land on the other servers all at once; then ``stop()``.
        """
        s = self.settings
        self.ctx.draining = True
        log.info(
            "draining: %d connections, grace %.1fs, window %.1fs",
            len(self.connections),
            s.drain_grace,
            s.drain_window,
        )
        if s.drain_grace > 0:
            await asyncio.sleep(s.drain_grace)
        self._close_listeners()
        sessions = sorted(
            (c for c in self.connections if not c.closed), key=lambda c: c.connected_at
        )
        n = len(sessions)
        window = s.drain_window
        start = self.clock()
        done = 0
        while done < n:
            elapsed = self.clock() - start
            target = n if window <= 0 else min(n, int(n * elapsed / window) + 1)
            while done < target:
                session = sessions[done]
                done += 1
                if not session.closed:
                    session.end(
                        Status.GOING_AWAY,
                        ErrorCode.SERVICE_UNAVAILABLE,
                        "server going away; reconnect",
                    )
            if done < n:
                await asyncio.sleep(min(0.05, window / n))
        # let the LOGOUT frames reach the clients before the process goes
        deadline = self.clock() + 2.0
        while any(not c.lost for c in sessions) and self.clock() < deadline:
            await asyncio.sleep(0.02)
        await self.stop()

    async def stop(self, grace: float = 0.0) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._close_listeners()
        self.ctx.draining = True
        self.hub.end_all()
        for session in list(self.connections):
            session._close()
        if grace:
            await asyncio.sleep(grace)
        for task in list(self._tasks):
            task.cancel()
        self._close_store()
        if self.admin is not None:
            await self.admin.stop()
        if self._server is not None:
            await self._server.wait_closed()

    def _close_store(self) -> None:
        """Flush what the store persists, then close it (once; every session has ended)."""
        if self._store_closed:
            return
        self._store_closed = True
        try:
            self.store.flush()
        except Exception:
            log.exception("flushing the store failed")
        try:
            self.store.close()
        except Exception:
            log.exception("closing the store failed")


def _listen(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Non-blocking listening sockets for every address of ``host`` (as create_server binds)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(socks) > 1:  # one free port for every address
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


def _timeout_body(message: str) -> bytes:
    from .protocol import error_body

    return error_body(ErrorCode.TIMEOUT, message)


async def serve(settings: Settings) -> None:
    """Run until SIGINT (stop now) or SIGTERM (drain, then stop; a second signal: stop now)."""
    server = await Server(settings).start()
    received: list[int] = []
    got_signal = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: int) -> None:
        received.append(sig)
        got_signal.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    print(f"privchat-tcp listening on {settings.host}:{server.port}", flush=True)
    if server.admin is not None:
        print(f"admin HTTP on {server.admin.host}:{server.admin.port}", flush=True)
    if server.ctx.server_key is not None:
        print(
            f"server key fingerprint (SHA-256): {server.ctx.server_key.fingerprint()}", flush=True
        )
    await got_signal.wait()
    if received[0] == signal.SIGTERM:
        log.info("SIGTERM: draining")
        got_signal.clear()
        drain = loop.create_task(server.drain())
        second = loop.create_task(got_signal.wait())
        budget = max(0.1, settings.shutdown_timeout - 1.0)
        await asyncio.wait((drain, second), timeout=budget, return_when=asyncio.FIRST_COMPLETED)
        second.cancel()
        if not drain.done():
            log.warning("drain did not finish in time; stopping now")
            drain.cancel()
    log.info("stopping")
    await asyncio.wait_for(server.stop(), 5.0)


def run(settings: Settings) -> None:
    if settings.use_uvloop:
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed; using the stdlib event loop")
        else:
            uvloop.run(serve(settings))
            return
    asyncio.run(serve(settings))

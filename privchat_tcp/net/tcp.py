"""The TCP adapter: an asyncio/uvloop Protocol that holds a Session (websockets' pattern).

``data_received`` hands the bytes to the sans-IO connection, dispatches every complete frame
through the session, and makes one write with everything it answered (``transmit``). Besides
that it enforces the per-connection limits:

- a token bucket on frames read (``rate_per_connection``, ``limits.py``): frames over it are
  held and reading pauses until the bucket refills; what cannot be served within
  ``rate_limit_grace``, or arrives while the connection has been over its rate for longer than
  that, is answered RATE_LIMITED (in order, so encrypted sessions keep their counters); after
  LOGIN a second bucket, shared by all sessions of the user (``rate_per_user``), limits the same
  way: a frame needs a token from both;
- write backpressure: above ``push_high_water`` (the transport's ``pause_writing``) output waits
  in the session (pending pushes and queued frames) and reading pauses; more than
  ``push_hard_limit`` buffered in all, or ``slow_consumer_timeout`` seconds above the soft limit
  (``deadlines.py``), ends the session with SLOW_CONSUMER;
- replies count against the same budget: once what a read's frames queued, plus what the
  transport still buffers, passes ``push_high_water``, the rest of the read's frames wait in
  ``backlog`` and reading pauses; they are handled on a later loop turn if the kernel took the
  output, else when the peer has read it (``resume_writing``). A client that pipelines large
  pulls without reading is paused, not buffered;
- only whole frames count as liveness (``last_rx``, the heartbeat), and a frame started must
  complete within ``frame_timeout`` while reading is not paused (``partial_since``, swept by
  ``deadlines.py``);
- an optional PROXY protocol header before the first frame (``wire/proxy.py``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from bisect import bisect_left as _bisect
from collections.abc import Callable
from time import perf_counter as _perf

from ..config import Settings
from ..errors import ErrorCode, Status
from ..session.session import FAILURES, Session, SessionDeps
from ..wire.connection import count_in as _count_in
from ..wire.connection import count_out as _count_out
from ..wire.frame import Frame
from ..wire.proxy import ProxyError, ProxyParser
from .limits import RateLimits, TokenBucket, UserBucket
from .metrics import LATENCY_BUCKETS, ServerStats

__all__ = ["TcpContext", "TcpConnection"]

log = logging.getLogger("privchat_tcp.server")

_INF = float("inf")
_LINGER_0 = struct.pack("ii", 1, 0)


class TcpContext:
    """What every TCP connection of one server shares (built by the composition root)."""

    def __init__(
        self,
        settings: Settings,
        deps: SessionDeps,
        loop: asyncio.AbstractEventLoop,
        stats: ServerStats,
        limits: RateLimits,
        proxy_source_allowed: Callable[[str], bool],
    ) -> None:
        self.settings = settings
        self.deps = deps
        self.loop = loop
        self.clock = loop.time
        #: the time of the last sweep (``deadlines.py``): cheap "now" for the hot path
        self.now = self.clock()
        self.stats = stats
        self.limits = limits
        self.proxy_source_allowed = proxy_source_allowed
        self.connections: set[TcpConnection] = set()
        self.hard_limit = settings.push_hard_limit
        self.high_water = settings.push_high_water
        #: the store's ``Durability.poll``, run before each read is handled
        self.poll_durable = deps.services.durability.poll


class TcpConnection(asyncio.Protocol):
    """One connection: the transport, the session it holds, and the connection's limits."""

    __slots__ = (
        "ctx",
        "session",
        "transport",
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
        "bucket_user",
        "waiting_durable",
        "backlog",
        "backlog_refused",
        "backlog_scheduled",
        "partial_since",
    )

    def __init__(self, ctx: TcpContext) -> None:
        self.ctx = ctx
        now = ctx.clock()
        self.session = Session(ctx.deps, self, now)
        self.transport: asyncio.Transport | None = None
        self.peer_ip = ""
        self.bucket = TokenBucket(ctx.limits.burst, now)
        self.throttled_since = 0.0
        self.held: list[Frame] = []
        self.held_ok = 0
        self.read_paused = 0  # bit 1: rate limit, bit 2: write backpressure
        self.slow_since = 0.0
        self.lost = False
        self.proxy: ProxyParser | None = None
        self.ubucket: UserBucket | None = None
        self.bucket_user = 0
        self.waiting_durable = False
        #: frames read but not handled yet: their replies would pass the output budget
        self.backlog: list[Frame] = []
        #: frames over the rate limit released while a backlog waited: refused after it
        self.backlog_refused: list[Frame] = []
        self.backlog_scheduled = False
        #: when the partial frame in the receive buffer was started (0: at a frame boundary)
        self.partial_since = 0.0

    @property
    def peer(self) -> str:
        return self.session.peer

    @property
    def closed(self) -> bool:
        return self.session.closed

    # ---- connection lifecycle ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        ctx = self.ctx
        s = ctx.settings
        session = self.session
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer_ip = str(peer[0])
            session.peer = f"{peer[0]}:{peer[1]}"
        else:
            session.peer = self.peer_ip = str(peer)
        ctx.connections.add(self)
        ctx.stats.accepted += 1
        transport.set_write_buffer_limits(high=s.push_high_water)  # type: ignore[attr-defined]
        if s.max_connections and len(ctx.connections) > s.max_connections:
            ctx.stats.rejected_busy += 1
            self.reject(Status.BUSY, ErrorCode.SYSTEM_BUSY, "too many connections")
            return
        if s.proxy_protocol:
            if not ctx.proxy_source_allowed(self.peer_ip):
                log.warning("PROXY header expected from %s, which is not allowed", self.peer)
                ctx.stats.proxy_rejected += 1
                self.abort()
                return
            self.proxy = ProxyParser()
            return
        self._peer_known()

    def _peer_known(self) -> None:
        if not self.ctx.limits.allow_new_connection(self.peer_ip, self.ctx.clock()):
            self.ctx.stats.rejected_rate += 1
            self.reject(
                Status.RATE_LIMITED,
                ErrorCode.RATE_LIMIT_EXCEEDED,
                "too many new connections from this address",
            )

    def reject(self, status: int, code: int, message: str) -> None:
        """Answer LOGOUT flow 2 with the reason and close (before any frame was read)."""
        self.session.end(status, code, message)

    def eof_received(self) -> bool | None:
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.session.lost()
        self._unregister()
        self.held = []
        self.backlog = []
        self.backlog_refused = []

    def close(self) -> None:
        """Close after the queued output; abort if the peer does not read it within 5 s."""
        transport = self.transport
        if transport is not None and not self.session.closed:
            self.session.mark_closed()
            self._unregister()
            transport.close()
            if transport.get_write_buffer_size():
                # a peer that does not read would keep the socket forever: reset it
                self.ctx.loop.call_later(5.0, self.abort, True)

    def abort(self, reset: bool = False) -> None:
        """Drop the connection now, queued bytes and all. ``reset``: with SO_LINGER 0, so the
        kernel sends a RST and frees the socket at once instead of keeping an orphan with the
        unread bytes queued (a slow consumer's end)."""
        transport = self.transport
        if not self.lost and transport is not None:
            self.session.mark_closed()
            self._unregister()
            sock = transport.get_extra_info("socket") if reset else None
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
                except OSError:
                    pass
            transport.abort()

    def _unregister(self) -> None:
        """Leave the server's connections, the hub and the user's rate bucket (idempotent)."""
        if self in self.ctx.connections:
            self.ctx.connections.discard(self)
            session = self.session
            if session.user_id:
                log.info(
                    "session end: user %d device %s from %s (session %s): %s",
                    session.user_id,
                    session.device_id,
                    session.peer,
                    session.session_id,
                    session.end_reason or ("closed" if session.conn.closing else "connection lost"),
                )
        session = self.session
        if session.user_id:
            self.ctx.deps.deliverer.session_ended(session)
            self.ctx.deps.hub.unregister(session)
        if self.ubucket is not None:
            self.ctx.limits.release_user_bucket(self.bucket_user)
            self.ubucket = None

    # ---- input ---------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        """Split, limit and dispatch what arrived, then write the answers once. Nothing
        raised here escapes to the event loop (which would drop the connection with a
        traceback): frames are guarded one by one in ``Session.handle``; past that, the
        failure is logged once per kind, what was answered is written, and the connection
        closes."""
        try:
            ctx = self.ctx
            poll = ctx.poll_durable
            if poll is not None:  # (its own failures are logged, never raised)
                poll()
            session = self.session
            if self.proxy is not None:
                data = self._proxy_header(data)
                if not data:
                    return
            conn = session.conn
            frames = conn.receive_data(data)
            if conn.closing or conn.pending_violation is not None:  # a broken header
                session.end_reason = session.end_reason or "broken frame header"
            if conn.buffered:  # a frame is started: its deadline runs from its first read
                if frames or not self.partial_since:
                    self.partial_since = ctx.clock()
            else:
                self.partial_since = 0.0
            if frames:
                session.last_rx = ctx.now  # whole frames only are liveness (the heartbeat)
                stats = ctx.stats
                n = len(frames)
                stats.frames_in += n
                if n == 1:
                    stats.frames_in_by_command[frames[0][1]] += 1
                else:
                    _count_in(frames, stats.frames_in_by_command)
                limits = ctx.limits
                if limits.rate or (session.user_id and limits.user_rate):
                    # token buckets; the slow path holds or refuses what is over them
                    now = ctx.clock()
                    if session.user_id and limits.user_rate and self.ubucket is None:
                        self.bucket_user = session.user_id
                        self.ubucket = limits.user_bucket(session.user_id, now)
                    if self._refill(now) >= n and not self.held:
                        self._take(n)
                        self.throttled_since = 0.0
                    else:
                        frames = self._limit(frames, now)
                if frames:
                    stats.reads += 1
                    if stats.reads & 15 != 1:
                        self._handle(frames)
                    else:  # the latency histogram samples one read in 16
                        t0 = _perf()
                        self._handle(frames)
                        dt = _perf() - t0
                        stats.latency_sum += dt
                        stats.latency_buckets[_bisect(LATENCY_BUCKETS, dt)] += 1
            self.transmit()
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        FAILURES.report("reading a connection", exc)
        try:
            self.session.close()
            self.transmit()
        except Exception as again:  # noqa: BLE001 - the connection cannot be trusted
            FAILURES.report("closing a connection", again)
            self.abort()

    def _handle(self, frames: list[Frame]) -> None:
        """Hand frames to the session in order, within the output budget: what the session
        leaves unhandled (its replies passed the budget) waits in ``backlog``, reading paused."""
        if self.backlog:  # behind frames that still wait: keep the order
            self.backlog.extend(frames)
            return
        transport = self.transport
        assert transport is not None
        session = self.session
        session.out_room = self.ctx.high_water - transport.get_write_buffer_size()
        rest = session.handle(frames)
        if rest and not session.conn.closing:
            self.ctx.stats.output_held += 1
            self.backlog = rest
            self._pause(4)

    def _schedule_backlog(self) -> None:
        """The output went to the kernel and the socket takes more: handle the backlog on the
        next loop turn (other connections run in between)."""
        if not self.backlog_scheduled:
            self.backlog_scheduled = True
            self.ctx.loop.call_soon(self._run_backlog)

    def _run_backlog(self) -> None:
        self.backlog_scheduled = False
        session = self.session
        if session.closed or self.read_paused & 2:
            return  # resume_writing calls transmit, which schedules it again
        frames, self.backlog = self.backlog, []
        self._handle(frames)
        if not self.backlog:
            refused, self.backlog_refused = self.backlog_refused, []
            if refused and not session.conn.closing:
                self._refuse(refused)
            self._unpause(4)
        self.transmit()

    def _refuse(self, frames: list[Frame]) -> None:
        self.ctx.stats.rate_limited += len(frames)
        self.session.refuse(
            frames, Status.RATE_LIMITED, ErrorCode.RATE_LIMIT_EXCEEDED, "rate limit exceeded"
        )

    def _proxy_header(self, data: bytes) -> bytes:
        assert self.proxy is not None
        try:
            result = self.proxy.feed(data)
        except ProxyError as exc:
            log.info("closing %s: %s", self.peer, exc)
            self.ctx.stats.proxy_rejected += 1
            self.abort()
            return b""
        if result is None:
            return b""
        self.proxy = None
        if result.source is not None:
            host, port = result.source
            self.peer_ip = host
            self.session.peer = f"{host}:{port}"
        self._peer_known()
        if self.session.closed:
            return b""
        return result.rest

    def _limit(self, frames: list[Frame], now: float) -> list[Frame]:
        """Over the rate (the bucket was refilled): return the frames to handle now; hold
        the rest (reading pauses) or refuse it."""
        ctx = self.ctx
        limits = ctx.limits
        grace = ctx.settings.rate_limit_grace
        if self.held:  # already throttled: keep the order; these are refused at release
            self.held.extend(frames)
            return frames[:0]
        k = max(0, int(self._available()))
        self._take(k)
        over = frames[k:]
        # the rate of the bucket that limits (the user's is shared: other sessions draw on it)
        rate = limits.rate
        ub = self.ubucket
        if ub is not None and (not rate or ub.tokens < self.bucket.tokens):
            rate = limits.user_rate
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
        ctx.loop.call_later(delay, self._release)
        return frames[:k]

    def _refill(self, now: float) -> float:
        """Refill the connection's and the user's bucket; the tokens both allow."""
        limits = self.ctx.limits
        avail = self.bucket.refill(now, limits.rate, limits.burst) if limits.rate else _INF
        ub = self.ubucket
        if ub is not None:
            tokens = ub.refill(now, limits.user_rate, limits.user_burst)
            if tokens < avail:
                avail = tokens
        return avail

    def _available(self) -> float:
        avail = self.bucket.tokens if self.ctx.limits.rate else _INF
        ub = self.ubucket
        return ub.tokens if ub is not None and ub.tokens < avail else avail

    def _take(self, n: int) -> None:
        if self.ctx.limits.rate:
            self.bucket.tokens -= n
        if self.ubucket is not None:
            self.ubucket.tokens -= n  # may go below 0 at release: the user's other sessions wait

    def _release(self) -> None:
        session = self.session
        if session.closed:
            return
        held, ok = self.held, self.held_ok
        self.held = []
        self._refill(self.ctx.clock())  # the served ones took their tokens when they were held
        if ok:
            self._handle(held[:ok])
        if len(held) > ok and not session.conn.closing:
            if self.backlog:  # refused in order, once the frames before them are answered
                self.backlog_refused.extend(held[ok:])
            else:
                self._refuse(held[ok:])
        self._unpause(1)
        self.transmit()

    def _pause(self, bit: int) -> None:
        if not self.read_paused and self.transport is not None and not self.session.closed:
            self.transport.pause_reading()
        self.read_paused |= bit

    def _unpause(self, bit: int) -> None:
        if self.read_paused & bit:
            self.read_paused &= ~bit
            if not self.read_paused and self.transport is not None and not self.session.closed:
                if self.partial_since:  # the peer could not send the rest while we did not read
                    self.partial_since = self.ctx.clock()
                self.transport.resume_reading()

    # ---- output (the session's Link) -----------------------------------------------------------
    def transmit(self) -> None:
        """Write what the session queued, unless the peer is not reading (then hold it)."""
        session = self.session
        if session.closed:
            return
        hold = session.hold
        if hold:  # acknowledged means durable: nothing goes out before the write it shows
            durability = self.ctx.deps.services.durability
            if hold > durability.durable_seq:
                if not self.waiting_durable:
                    self.waiting_durable = True
                    durability.when_durable(hold, self._durable)
                return
            session.hold = 0
        conn = session.conn
        if conn.pending_violation is not None and not self.held and not self.backlog:
            conn.finish_violation()
        if self.slow_since and not conn.closing:
            self._check_held()
            return
        pending = session.pending
        out = conn.frames
        if pending or out:
            transport = self.transport
            assert transport is not None
            buffered = transport.get_write_buffer_size()
            if buffered and not conn.closing:
                # the peer is behind: check the hard limit before sealing anything, so the
                # LOGOUT of an encrypted session is the next frame the client can open
                if buffered + session.pending_size() > self.ctx.hard_limit:
                    self.slow_end()
                    return
            if pending:
                session.materialize()
            stats = self.ctx.stats
            # one element per frame (wire.connection.Connection.send): by command, and the
            # error responses by status
            _count_out(out, stats.frames_out_by_command, stats.errors_by_status)
            data = conn.data_to_send()
            stats.bytes_out += len(data)
            stats.writes += 1
            transport.write(data)
        if conn.closing:
            self.close()
        elif self.backlog and not self.read_paused & 2:
            self._schedule_backlog()

    def _durable(self) -> None:
        self.waiting_durable = False
        self.transmit()

    def _check_held(self) -> None:
        transport = self.transport
        assert transport is not None
        held = self.session.pending_size()
        if transport.get_write_buffer_size() + held > self.ctx.settings.push_hard_limit:
            self.slow_end()

    def slow_end(self) -> None:
        """End the session with SLOW_CONSUMER, dropping what it did not read."""
        session = self.session
        if session.closed:
            return
        session.end_reason = "slow_consumer"  # its live pushes did not all arrive
        self.ctx.stats.slow_consumers += 1
        log.info("%s (user %d) ends: slow consumer", self.peer, session.user_id)
        sealed_dropped = session.drop_output()
        self.slow_since = 0.0
        if session.conn.closing or sealed_dropped:
            # frames sealed with s2c counters were dropped: a LOGOUT sealed after them could
            # not be opened by the client, so the connection just closes
            session.close()
            self.close()
            return
        session.end(Status.SLOW_CONSUMER, ErrorCode.SYSTEM_BUSY, "pushes were not read fast enough")

    def pause_writing(self) -> None:
        self.slow_since = self.ctx.clock()
        self._pause(2)

    def resume_writing(self) -> None:
        self.slow_since = 0.0
        self._unpause(2)
        self.transmit()

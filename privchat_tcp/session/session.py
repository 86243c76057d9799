"""One connection's application state: the per-frame dispatch and what the session owns.

``Session.handle(frames)`` applies PROTOCOL.md section 4's order to each frame (header rules
were applied by the splitter): decryption, a command a client may send, authentication, body
decoding, then the command's handler (``commands.py``). Handlers call the services and queue
replies on the sans-IO connection; the adapter (``net/tcp.py``) writes once per read. Nothing
here awaits and nothing here touches a socket: the adapter is reached through ``Link``, and the
only asynchronous work, RPC routes that hash passwords, runs through ``deps.spawn``.

No exception escapes one frame's handling: the expected ones (``ServiceError``,
``ProtocolViolation``, a body that does not decode) are answered with their status; anything
else, raised by a handler or while answering, is logged by ``FAILURES`` (a traceback once per
kind, then a line a minute) and that frame alone is answered INTERNAL.

States (``SessionState``)::

    ANONYMOUS --login()--> AUTHENTICATED --session_ready()--> READY
    any --closed by the adapter--> CLOSED

``ready`` and ``closed`` mirror the state as plain attributes for the fan-out's hot loop; only
the methods of this class change them.
"""

from __future__ import annotations

import enum
import itertools
import logging
import secrets
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from google.protobuf.message import DecodeError

from ..errors import STATUS_NAMES, AuthRequired, ErrorCode, ProtocolViolation, ServiceError, Status
from ..proto import privchat_pb2 as pb
from ..rpc.safejson import dumps as _json_dumps
from ..rpc.table import PasswordGuard, RpcContext, UnlimitedPasswords
from ..wire import pbwire
from ..wire.commands import ENC_MASK, ENC_RSA, FLOW_RESPONSE, TRANSFORM_MASK, Cmd
from ..wire.connection import Connection
from ..wire.frame import Frame
from ..wire.frame import encode_header as _encode_header

if TYPE_CHECKING:
    from ..config import Settings
    from ..rpc.table import RouteTable, ServerInfo
    from ..service import Services
    from ..service.model import Channel, Record
    from ..wire.crypto import ServerKey

__all__ = [
    "Session",
    "SessionDeps",
    "SessionState",
    "Link",
    "CommandTable",
    "HubPort",
    "DeliveryPolicy",
    "LoginGuard",
    "UnlimitedLogins",
    "MPB_MAX_BYTES",
    "FailureLog",
    "FAILURES",
    "rpc_ok",
    "pong",
]

log = logging.getLogger("privchat_tcp.session")

MPB_MAX_BYTES = 256 << 10
MAX_ASYNC_RPC = 4
_UNBOUNDED = 1 << 62


class FailureLog:
    """Unexpected exceptions, logged without a flood: the first of each kind (the exception's
    type and the line that raised it) with its traceback (the frames and their source lines),
    repeats as one line per kind at most every ``interval`` seconds, with how many there were.
    Never the exception's message or arguments, which may quote hostile input."""

    MAX_KINDS = 256

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.total = 0
        #: kind -> [when last logged, repeats since]
        self._kinds: dict[tuple[str, str, int], list[float]] = {}

    def report(self, what: str, exc: BaseException) -> None:
        self.total += 1
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = (tb.tb_frame.f_code.co_filename, tb.tb_lineno) if tb is not None else ("?", 0)
        kind = (type(exc).__qualname__, *where)
        now = self.clock()
        seen = self._kinds.get(kind)
        if seen is None:
            if len(self._kinds) >= self.MAX_KINDS:
                self._kinds.clear()
            self._kinds[kind] = [now, 0]
            self.logger.error(
                "%s failed: %s (the first of its kind; repeats are counted)\n"
                "Traceback (most recent call last):\n%s%s",
                what,
                kind[0],
                "".join(traceback.format_tb(exc.__traceback__)),
                kind[0],
            )
            return
        seen[1] += 1
        if now - seen[0] >= self.interval:
            self.logger.error(
                "%s failed: %s at %s:%d, %d times since last logged",
                what,
                kind[0],
                kind[1],
                kind[2],
                seen[1],
            )
            seen[0], seen[1] = now, 0


#: the process's log of unexpected exceptions in handling frames
FAILURES = FailureLog(log)


class SessionState(enum.IntEnum):
    ANONYMOUS = 0
    AUTHENTICATED = 1
    READY = 2
    CLOSED = 3


class Link(Protocol):
    """The adapter under a session (``net/tcp.py``; a test harness in memory)."""

    def transmit(self) -> None:
        """Write what the session queued, now or when the peer reads again; close the
        connection if the sans-IO connection is closing."""


class HubPort(Protocol):
    """The hub (``hub.py``) as sessions and commands use it."""

    def register(self, session: Session) -> Session | None: ...

    def unregister(self, session: Session) -> None: ...

    def user_sessions(self, user_id: int) -> list[Session]: ...

    def device_count(self, user_id: int) -> int: ...

    def has_device(self, user_id: int, device_id: str) -> bool: ...

    def subscribe(self, session: Session, channel_id: int) -> bool: ...

    def unsubscribe(self, session: Session, channel_id: int) -> None: ...

    def touch(self, session: Session) -> None: ...


class DeliveryPolicy(Protocol):
    """The delivery policy (``delivery.py``) as sessions and commands use it."""

    def catch_up(self, session: Session) -> None: ...

    def session_ended(self, session: Session) -> None: ...

    def difference(
        self, channel: Channel, records: list[Record], current: int, has_more: bool
    ) -> tuple[bytes, bool]: ...


class LoginGuard(PasswordGuard, Protocol):
    """The limits on anonymous authentication work (``net/hashing.py``): the password work of
    the ``account/*`` routes (``PasswordGuard``) and the RSA step of an encrypted LOGIN."""

    def allow_encrypted_login(self, address: str) -> bool:
        """Whether an encrypted LOGIN from ``address`` may take the RSA step now (a cheap
        token-bucket check; False: answer RATE_LIMITED)."""


class UnlimitedLogins(UnlimitedPasswords):
    """A ``LoginGuard`` without limits (the in-memory harness, and the default)."""

    __slots__ = ()

    def allow_encrypted_login(self, address: str) -> bool:
        return True


class CommandTable(NamedTuple):
    """The command handlers (``commands.COMMANDS``): ``handlers[command](session, seq, flags,
    body)`` for an opened body; ``login_encrypted(session, seq, flags, status, body)`` for an
    encryption-2 LOGIN, whose body only the server key opens."""

    handlers: Mapping[int, Callable[[Session, int, int, bytes], None]]
    login_encrypted: Callable[[Session, int, int, int, bytes], None]


class SessionDeps:
    """What every session of one server shares; built by the composition root."""

    def __init__(
        self,
        settings: Settings,
        services: Services,
        hub: HubPort,
        deliverer: DeliveryPolicy,
        routes: RouteTable,
        commands: CommandTable,
        server: ServerInfo,
        server_key: ServerKey | None,
        spawn: Callable[[Coroutine[Any, Any, Any]], object],
        run_blocking: Callable[..., Awaitable[Any]],
        guard: LoginGuard | None = None,
    ) -> None:
        self.settings = settings
        self.services = services
        self.hub = hub
        self.deliverer = deliverer
        self.routes = routes
        self.commands = commands
        self.server = server
        self.server_key = server_key
        self.spawn = spawn
        self.run_blocking = run_blocking
        #: limits on anonymous authentication work: password hashing, the encrypted LOGIN
        self.guard: LoginGuard = UnlimitedLogins(run_blocking) if guard is None else guard
        #: session ids are "<node>-<n>": unique across the processes of a deployment
        self.node_id = secrets.token_hex(4)
        self._counter = itertools.count(1)

    def new_session_id(self) -> str:
        return f"session-{self.node_id}-{next(self._counter)}"


class Session:
    """One connection's application state. The adapter holds it and gives it a ``Link``."""

    __slots__ = (
        "deps",
        "link",
        "conn",
        "state",
        "user_id",
        "device_id",
        "session_id",
        "ready",
        "closed",
        "pending",
        "enqueue",
        "last_rx",
        "connected_at",
        "peer",
        "token_jti",
        "login_id",
        "token_exp",
        "ending_login",
        "async_rpcs",
        "hold",
        "ack_span",
        "end_reason",
        "out_room",
        "_rpc",
        "_durability",
        "_server",
        "_handlers",
        "__weakref__",
    )

    def __init__(self, deps: SessionDeps, link: Link, now: float) -> None:
        self.deps = deps
        self.link = link
        self._durability = deps.services.durability  # ``handle`` reads it every read
        self._server = deps.server  # ``handle`` reads ``draining`` every read of PINGs
        self._handlers = deps.commands.handlers
        self.conn = Connection(deps.settings.max_body_prelogin)
        self.state = SessionState.ANONYMOUS
        self.user_id = 0
        self.device_id = ""
        self.session_id = ""
        self.ready = False
        self.closed = False
        #: push bodies queued this turn, sent as one MPS or MPB frames at the next write
        self.pending: list[bytes] = []
        #: queue one push body (the bound ``append``: the fan-out calls it per recipient)
        self.enqueue: Callable[[bytes], None] = self.pending.append
        self.last_rx = now
        self.connected_at = now
        self.peer: str = ""
        self.token_jti = ""
        #: the login of the session's token (its ``lid``) and the token's expiry, unix seconds
        self.login_id = ""
        self.token_exp = 0
        #: a route asked to end this login's sessions after its reply (``end_login``)
        self.ending_login = False
        self.async_rpcs = 0
        #: the store write (``Durability.write_seq``) that the queued output acknowledges or
        #: reveals: the adapter writes nothing before it is durable (0: nothing to wait for)
        self.hold = 0
        #: the store writes (``write_seq`` before, after) of the ACKs handled last: writes
        #: that acknowledge nothing, so a read of only ACKs holds no output (``handle``)
        self.ack_span = (0, 0)
        #: why the session ended, for the log ("" while it runs)
        self.end_reason = ""
        #: ``handle`` stops once the connection's queued output passes this many bytes (the
        #: adapter's output budget, set before each call; unbounded by default)
        self.out_room = _UNBOUNDED
        self._rpc: RpcContext | None = None  # made at the first RPC

    @property
    def address(self) -> str:
        """The client's address without the port (``peer`` is "host:port"; from the PROXY
        header when present)."""
        peer = self.peer
        host, sep, port = peer.rpartition(":")
        return host if sep and port.isdigit() else peer

    # ---- state changes -------------------------------------------------------------------------
    def logged_in(
        self, user_id: int, device_id: str, token_jti: str, login_id: str = "", token_exp: int = 0
    ) -> None:
        self.state = SessionState.AUTHENTICATED
        self.session_id = self.deps.new_session_id()
        self.user_id = user_id
        self.device_id = device_id
        self.token_jti = token_jti
        self.login_id = login_id
        self.token_exp = token_exp

    def session_ready(self) -> None:
        """Mark the session READY and push what the device missed (first time only)."""
        if self.ready:
            return
        self.ready = True
        self.state = SessionState.READY
        self.deps.deliverer.catch_up(self)
        self.hold_for_pending_writes()
        self.deps.hub.touch(self)

    def end_login(self) -> None:
        """(``Caller``) End this login's sessions once the reply is queued: ``after_reply``."""
        self.ending_login = True

    def after_reply(self) -> None:
        """The reply of a route that called ``end_login`` is queued: end every live session
        of this login (LOGOUT flow 2 UNAUTHENTICATED, ``TOKEN_REVOKED``), this one last. A
        login's tokens name one device, so today that is this session; the loop keeps the
        rule true if a login ever spans sessions."""
        if not self.ending_login:
            return
        self.ending_login = False
        login_id = self.login_id
        for other in self.deps.hub.user_sessions(self.user_id):
            if other is not self and login_id and other.login_id == login_id:
                other.end(Status.UNAUTHENTICATED, ErrorCode.TOKEN_REVOKED, "logged out")
        self.end(Status.UNAUTHENTICATED, ErrorCode.TOKEN_REVOKED, "logged out")

    def end_devices(self, device_ids: Iterable[str]) -> int:
        """(``Caller``) End this user's sessions on ``device_ids`` now, not this one: LOGOUT
        flow 2 UNAUTHENTICATED (``TOKEN_REVOKED``), then close (``device/kick_*``)."""
        ids = set(device_ids)
        ended = 0
        for other in self.deps.hub.user_sessions(self.user_id):
            if other is not self and other.device_id in ids:
                other.end(Status.UNAUTHENTICATED, ErrorCode.TOKEN_REVOKED, "signed out")
                ended += 1
        return ended

    def lost(self) -> None:
        """The connection is gone: forget what was queued (the adapter calls it once)."""
        if not self.end_reason and (self.pending or self.conn.output_size()):
            self.end_reason = "output_lost"  # queued pushes never left: not delivered
        self.closed = True
        self.state = SessionState.CLOSED
        self.pending.clear()
        self.conn.drop_output()

    def mark_closed(self) -> None:
        self.closed = True
        self.state = SessionState.CLOSED

    # ---- output --------------------------------------------------------------------------------
    def materialize(self) -> None:
        """Turn queued push bodies into MPS / MPB frames, in order."""
        pending = self.pending
        if len(pending) == 1:
            self.conn.send_push(_MPS, pending[0])
        else:
            start = 0
            size = 0
            for i, body in enumerate(pending):
                size += len(body) + 6
                if size > MPB_MAX_BYTES and i > start:
                    self._send_batch(pending[start:i])
                    start, size = i, len(body) + 6
            self._send_batch(pending[start:])
        del pending[:]

    def _send_batch(self, bodies: list[bytes]) -> None:
        if len(bodies) == 1:
            self.conn.send_push(Cmd.MPS, bodies[0])
        else:
            self.conn.send_push(Cmd.MPB, pbwire.batch(bodies))

    def push_now(self, command: int, body: bytes, e2e: bool = False) -> None:
        """Queue a push frame behind whatever is pending (the hub flushes it this turn)."""
        if self.pending:
            self.materialize()
        self.conn.send_push(command, body, e2e=e2e)

    def pending_size(self) -> int:
        """Bytes the pending pushes and the queued frames will take on the wire (about)."""
        pending = self.pending
        size = self.conn.output_size()
        if pending:
            size += sum(map(len, pending)) + 12 * len(pending)
        return size

    def drop_output(self) -> bool:
        """Forget what the peer did not read; True if sealed frames were among it."""
        self.pending.clear()
        return self.conn.drop_output()

    def flush(self) -> None:
        if not self.closed:
            self.link.transmit()

    def end(self, status: int, code: int, message: str) -> None:
        """End the session with LOGOUT flow 2 (REPLACED, TIMEOUT, GOING_AWAY ...)."""
        if self.closed or self.conn.closing:
            return
        self.end_reason = STATUS_NAMES.get(status, str(status)).lower()
        if self.pending:
            self.materialize()
        self.conn.end_session(status, code, message)
        self.flush()

    def close(self) -> None:
        """Close after what is queued (the adapter writes it, then closes)."""
        self.conn.close()

    def reply(self, seq: int, command: int, body: bytes, e2e: bool = False) -> None:
        if self.pending:
            self.materialize()
        self.conn.send_response(seq, command, body, e2e)

    def error(self, seq: int, command: int, status: int, code: int, message: str) -> None:
        if self.pending:
            self.materialize()
        if not message.isascii():  # a lone surrogate cannot be encoded: send "?" instead
            message = message.encode("utf-8", "replace").decode()
        self.conn.send_error(seq, command, status, code, message)

    def internal_error(self, seq: int, command: int, exc: BaseException) -> None:
        """The last resort for a frame whose handling failed unexpectedly: log it (``FAILURES``)
        and answer that frame INTERNAL; if even that fails, close the connection."""
        FAILURES.report(f"command {command}", exc)
        try:
            self.error(seq, command, Status.INTERNAL, ErrorCode.INTERNAL_ERROR, "internal error")
        except Exception as again:  # noqa: BLE001 - nothing else can be sent
            FAILURES.report("answering INTERNAL", again)
            self.conn.close()

    # ---- dispatch ------------------------------------------------------------------------------
    def handle(self, frames: list[Frame]) -> list[Frame]:
        """Handle ``frames`` in order; what they wrote to the store holds the output.

        Return those left unhandled because the replies queued passed ``out_room`` bytes (the
        adapter keeps them and hands them back once the peer has read). At least one frame is
        handled per call, so a single large reply gets through."""
        durability = self._durability
        before = durability.write_seq
        conn = self.conn
        head = tail = b""  # the PONG frame around the seq, set at the first PING
        fast_ping = True  # False: the handler answers PINGs, not the fast path
        rest: list[Frame] = []
        it = iter(frames)
        for seq, command, flags, status, body in it:
            if conn.closing:
                break
            if command == 3 and fast_ping and not flags and not body and conn.cipher is None:
                # PING with an empty body (health checks, heartbeats): the hot, trivial frame.
                # The reply differs only in seq: its bytes around the seq are cached (``pong``).
                if head:  # the reply's bytes are set for this read
                    conn.queue_frame(head + seq.to_bytes(4, "big") + tail)
                    continue
                ms = _time_ns() // 1_000_000
                cache = _pong_cache
                if ms != cache[0]:
                    _pong_refresh(ms)
                if self._server.draining or (
                    conn.compression and len(cache[1]) >= conn.compress_threshold
                ):
                    fast_ping = False  # the handler answers (draining: GOING_AWAY)
                else:
                    if self.pending:
                        self.materialize()
                    head, tail = cache[2], cache[3]
                    conn.queue_frame(head + seq.to_bytes(4, "big") + tail)
                    continue
            try:
                try:
                    if flags & TRANSFORM_MASK or conn.cipher is not None:
                        if (
                            command == Cmd.LOGIN
                            and flags & ENC_MASK == ENC_RSA
                            and conn.cipher is None
                            and not conn.encrypted
                        ):
                            self.deps.commands.login_encrypted(self, seq, flags, status, body)
                            continue
                        body = conn.open_body(seq, command, flags, status, body)
                    handler = self._handlers.get(command)
                    if handler is None:
                        raise ServiceError(
                            ErrorCode.UNSUPPORTED_PROTOCOL, "unknown command", Status.UNSUPPORTED
                        )
                    if not self.user_id and command not in _PRELOGIN:
                        raise AuthRequired()
                    handler(self, seq, flags, body)
                except ServiceError as exc:
                    self.error(seq, command, exc.status, exc.code, exc.message)
                except ProtocolViolation as exc:
                    self.error(seq, command, exc.status, exc.code, exc.message)
                    if exc.close:
                        self.end_reason = self.end_reason or _violation_reason(exc.status)
                        conn.close()
                        break
                except DecodeError:
                    self.error(
                        seq,
                        command,
                        Status.BAD_REQUEST,
                        ErrorCode.DECODING_ERROR,
                        "body does not decode",
                    )
            except Exception as exc:  # a handler failed, or answering it did: this frame only
                self.internal_error(seq, command, exc)
            if conn.out_bytes > self.out_room:
                rest = list(it)
                break
        after = durability.write_seq
        if after != before:
            span = self.ack_span  # a read whose only writes were ACKs holds nothing
            if span[1] != after or span[0] > before:
                self.hold = after
        return rest

    def hold_for_pending_writes(self) -> None:
        """Hold the queued output until every write so far is durable (what it shows may
        depend on them: a catch-up, an asynchronous RPC's reply)."""
        durability = self.deps.services.durability
        if durability.write_seq > durability.durable_seq:
            self.hold = durability.write_seq

    def refuse(self, frames: list[Frame], status: int, code: int, message: str) -> None:
        """Answer each frame with an error without handling it (the rate limit). On an
        encrypted session each is opened first, to keep the receive counter in step."""
        conn = self.conn
        for seq, command, flags, fstatus, body in frames:
            if conn.cipher is not None:
                try:
                    conn.open_body(seq, command, flags, fstatus, body)
                except ProtocolViolation as exc:
                    self.error(seq, command, exc.status, exc.code, exc.message)
                    if exc.close:
                        conn.close()
                        return
                except Exception:  # noqa: BLE001 - the frame is refused anyway
                    pass
            self.error(seq, command, status, code, message)

    # ---- RPC -----------------------------------------------------------------------------------
    def rpc_context(self) -> RpcContext:
        """What this session's routes are called with (the session is their ``Caller``)."""
        ctx = self._rpc
        if ctx is None:
            deps = self.deps
            ctx = self._rpc = RpcContext(
                deps.services, deps.settings, deps.server, deps.run_blocking, self, deps.guard
            )
        return ctx

    # ---- async RPC -----------------------------------------------------------------------------
    def spawn_rpc(self, seq: int, coro: Coroutine[Any, Any, Any]) -> None:
        """Answer an RPC when ``coro`` (the route's work off the loop) returns its JSON."""
        self.spawn_reply(seq, Cmd.RPC, coro, lambda result: (rpc_ok(result), False))

    def spawn_reply(
        self,
        seq: int,
        command: int,
        coro: Coroutine[Any, Any, Any],
        encode: Callable[[Any], tuple[bytes, bool]],
    ) -> None:
        """Answer ``command`` when ``coro`` returns: ``encode(result)`` gives the reply body and
        whether it is end-to-end. At most ``MAX_ASYNC_RPC`` per session are in flight."""
        if self.async_rpcs >= MAX_ASYNC_RPC:
            coro.close()
            raise ServiceError(ErrorCode.CONCURRENT_LIMIT_EXCEEDED, "too many requests in flight")
        self.async_rpcs += 1
        self.deps.spawn(self._run_async(seq, command, coro, encode))

    async def _run_async(
        self,
        seq: int,
        command: int,
        coro: Coroutine[Any, Any, Any],
        encode: Callable[[Any], tuple[bytes, bool]],
    ) -> None:
        try:
            try:
                result = await coro
                body, e2e = encode(result)
            except ServiceError as exc:
                if not self.closed:
                    self.error(seq, command, exc.status, exc.code, exc.message)
            else:
                if not self.closed:
                    self.reply(seq, command, body, e2e)
                    self.hold_for_pending_writes()
                    self.after_reply()
        except Exception as exc:  # the route failed, or encoding its answer did
            if self.closed:
                FAILURES.report(f"command {command}", exc)
            else:
                self.internal_error(seq, command, exc)
        finally:
            self.async_rpcs -= 1
        if not self.closed:
            self.deps.hub.touch(self)


_PRELOGIN = frozenset((Cmd.LOGIN, Cmd.PING, Cmd.RPC))
_MPS = int(Cmd.MPS)


def _violation_reason(status: int) -> str:
    """The log's reason for a session closed by a frame that broke the contract."""
    return f"protocol violation ({STATUS_NAMES.get(status, str(status)).lower()})"


#: the PONG of the current millisecond: [ms, body, the plain frame's 5 bytes before the seq,
#: its bytes after the seq (the rest of the header and the body)]
_pong_cache: list[Any] = [-1, b"", b"", b""]
_time_ns = time.time_ns


def _pong_refresh(ms: int) -> None:
    body = pbwire.pong(ms)
    header = _encode_header(len(body), 0, Cmd.PING, FLOW_RESPONSE, 0)
    _pong_cache[:] = (ms, body, header[:5], header[9:] + body)


def pong() -> bytes:
    """PongResponse{timestamp: now ms}, built without protobuf objects, once per millisecond.

    Measured (100 connections x 32 PINGs in flight, one core): encoding the varint per frame
    took ~40% of the server's time; the cache and the inline fast path in ``handle`` doubled
    PING frames/s."""
    ms = _time_ns() // 1_000_000
    if ms != _pong_cache[0]:
        _pong_refresh(ms)
    body: bytes = _pong_cache[1]
    return body


def rpc_ok(data: Any) -> bytes:
    """RpcResponse{0, "OK", data}; the JSON never fails on a string (``safejson.dumps``)."""
    return pb.RpcResponse(code=0, message="OK", data=_json_dumps(data)).SerializeToString()

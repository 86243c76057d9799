"""One connection's application state: the per-frame dispatch and what the session owns.

``Session.handle(frames)`` applies PROTOCOL.md section 4's order to each frame (header rules
were applied by the splitter): decryption, a command a client may send, authentication, body
decoding, then the command's handler (``commands.py``). Handlers call the services and queue
replies on the sans-IO connection; the adapter (``net/tcp.py``) writes once per read. Nothing
here awaits and nothing here touches a socket: the adapter is reached through ``Link``, and the
only asynchronous work, RPC routes that hash passwords, runs through ``deps.spawn``.

States (``SessionState``)::

    ANONYMOUS --login()--> AUTHENTICATED --session_ready()--> READY
    any --closed by the adapter--> CLOSED

``ready`` and ``closed`` mirror the state as plain attributes for the fan-out's hot loop; only
the methods of this class change them.
"""

from __future__ import annotations

import enum
import itertools
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from google.protobuf.message import DecodeError

from ..errors import AuthRequired, ErrorCode, ProtocolViolation, ServiceError, Status
from ..proto import privchat_pb2 as pb
from ..rpc.table import RpcContext
from ..wire import pbwire
from ..wire.commands import ENC_MASK, ENC_RSA, TRANSFORM_MASK, Cmd
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
    "MPB_MAX_BYTES",
    "rpc_ok",
    "pong",
]

log = logging.getLogger("privchat_tcp.session")

MPB_MAX_BYTES = 256 << 10
MAX_ASYNC_RPC = 4
_UNBOUNDED = 1 << 62


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

    def subscribe(self, session: Session, channel_id: int) -> bool: ...

    def unsubscribe(self, session: Session, channel_id: int) -> None: ...

    def touch(self, session: Session) -> None: ...


class DeliveryPolicy(Protocol):
    """The delivery policy (``delivery.py``) as sessions and commands use it."""

    def catch_up(self, session: Session) -> None: ...

    def difference(
        self, channel: Channel, records: list[Record], current: int, has_more: bool
    ) -> tuple[bytes, bool]: ...


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
        "async_rpcs",
        "out_room",
        "_rpc",
        "__weakref__",
    )

    def __init__(self, deps: SessionDeps, link: Link, now: float) -> None:
        self.deps = deps
        self.link = link
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
        self.async_rpcs = 0
        #: ``handle`` stops once the connection's queued output passes this many bytes (the
        #: adapter's output budget, set before each call; unbounded by default)
        self.out_room = _UNBOUNDED
        self._rpc: RpcContext | None = None  # made at the first RPC

    # ---- state changes -------------------------------------------------------------------------
    def logged_in(self, user_id: int, device_id: str, token_jti: str) -> None:
        self.state = SessionState.AUTHENTICATED
        self.session_id = self.deps.new_session_id()
        self.user_id = user_id
        self.device_id = device_id
        self.token_jti = token_jti

    def session_ready(self) -> None:
        """Mark the session READY and push what the device missed (first time only)."""
        if self.ready:
            return
        self.ready = True
        self.state = SessionState.READY
        self.deps.deliverer.catch_up(self)
        self.deps.hub.touch(self)

    def lost(self) -> None:
        """The connection is gone: forget what was queued (the adapter calls it once)."""
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
            self.conn.send_push(Cmd.MPS, pending[0])
        else:
            start = 0
            size = 0
            for i, body in enumerate(pending):
                size += len(body) + 6
                if size > MPB_MAX_BYTES and i > start:
                    self._send_batch(pending[start:i])
                    start, size = i, len(body) + 6
            self._send_batch(pending[start:])
        pending.clear()

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
        self.conn.send_error(seq, command, status, code, message)

    # ---- dispatch ------------------------------------------------------------------------------
    def handle(self, frames: list[Frame]) -> list[Frame]:
        """Handle ``frames`` in order; return those left unhandled because the replies queued
        passed ``out_room`` bytes (the adapter holds them and hands them back once the peer has
        read). At least one frame is handled per call, so a single large reply gets through."""
        conn = self.conn
        commands = self.deps.commands
        handlers = commands.handlers
        head = tail = b""
        queue = conn.queue_frame
        it = iter(frames)
        for seq, command, flags, status, body in it:
            if conn.closing:
                return []
            if command == 3 and not flags and not body and conn.cipher is None:
                # PING with an empty body (health checks, heartbeats): the hot, trivial frame.
                # The reply differs only in seq, so it is built once per batch.
                if not head:
                    pong_body = pong()
                    if conn.compression and len(pong_body) >= conn.compress_threshold:
                        handlers[Cmd.PING](self, seq, flags, body)
                        continue
                    if self.pending:
                        self.materialize()
                    header = _encode_header(len(pong_body), 0, 3, 1, 0)
                    head, tail = header[:5], header[9:] + pong_body
                queue(head + seq.to_bytes(4, "big") + tail)
                continue
            try:
                if flags & TRANSFORM_MASK or conn.cipher is not None:
                    if (
                        command == Cmd.LOGIN
                        and flags & ENC_MASK == ENC_RSA
                        and conn.cipher is None
                        and not conn.encrypted
                    ):
                        commands.login_encrypted(self, seq, flags, status, body)
                        continue
                    body = conn.open_body(seq, command, flags, status, body)
                handler = handlers.get(command)
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
                    conn.close()
                    return []
            except DecodeError:
                self.error(
                    seq,
                    command,
                    Status.BAD_REQUEST,
                    ErrorCode.DECODING_ERROR,
                    "body does not decode",
                )
            except Exception:
                log.exception("handler for command %d failed", command)
                self.error(
                    seq, command, Status.INTERNAL, ErrorCode.INTERNAL_ERROR, "internal error"
                )
            if conn.out_bytes > self.out_room:
                return list(it)
        return []

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
                deps.services, deps.settings, deps.server, deps.run_blocking, self
            )
        return ctx

    # ---- async RPC -----------------------------------------------------------------------------
    def spawn_rpc(self, seq: int, coro: Coroutine[Any, Any, Any]) -> None:
        if self.async_rpcs >= MAX_ASYNC_RPC:
            coro.close()
            raise ServiceError(ErrorCode.CONCURRENT_LIMIT_EXCEEDED, "too many requests in flight")
        self.async_rpcs += 1
        self.deps.spawn(self._run_async(seq, coro))

    async def _run_async(self, seq: int, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            result = await coro
        except ServiceError as exc:
            if not self.closed:
                self.error(seq, Cmd.RPC, exc.status, exc.code, exc.message)
        except Exception:
            log.exception("RPC failed")
            if not self.closed:
                self.error(
                    seq, Cmd.RPC, Status.INTERNAL, ErrorCode.INTERNAL_ERROR, "internal error"
                )
        else:
            if not self.closed:
                self.reply(seq, Cmd.RPC, rpc_ok(result))
        finally:
            self.async_rpcs -= 1
        if not self.closed:
            self.deps.hub.touch(self)


_PRELOGIN = frozenset((Cmd.LOGIN, Cmd.PING, Cmd.RPC))

_pong_cache: list[Any] = [0, b""]


def pong() -> bytes:
    """PongResponse{timestamp: now ms}, built without protobuf objects, once per millisecond.

    Measured (100 connections x 32 PINGs in flight, one core): encoding the varint per frame
    took ~40% of the server's time; the cache and the inline fast path in ``handle`` doubled
    PING frames/s."""
    ms = time.time_ns() // 1_000_000
    if ms != _pong_cache[0]:
        _pong_cache[0] = ms
        _pong_cache[1] = pbwire.pong(ms)
    body: bytes = _pong_cache[1]
    return body


def rpc_ok(data: Any) -> bytes:
    return pb.RpcResponse(
        code=0,
        message="OK",
        data=json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode(),
    ).SerializeToString()

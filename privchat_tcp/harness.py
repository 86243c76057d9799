"""An in-memory harness: real sessions, commands, routes and services, no sockets, no loop.

Rule matrices run in microseconds (aioquic's ``client_and_server`` pattern): the harness is
composed exactly as the server is (``app.compose``), each session's ``Link`` keeps what the
session wrote, and the end of an event-loop turn is ``turn()``. Frames are the wire bytes; a
client-side sans-IO ``Connection`` splits them back::

    h = Harness()
    alice = h.user("alice")
    dev = h.login(alice)
    reply = dev.rpc("group/group/create", {"name": "g"})
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from .app import Core, compose
from .config import Settings
from .errors import ServiceError
from .proto import privchat_pb2 as pb
from .service.model import User
from .service.ports import Store
from .session.session import Session
from .store.memory import MemoryStore
from .wire.commands import FLOW_MASK, FLOW_RESPONSE, Cmd
from .wire.connection import CLIENT_MAX_BODY, Connection, Side
from .wire.frame import Frame

__all__ = ["Harness", "Device", "Received"]


class Received:
    """One frame a device received: header fields and its (plaintext) body."""

    __slots__ = ("seq", "command", "flags", "status", "body")

    def __init__(self, seq: int, command: int, flags: int, status: int, body: bytes) -> None:
        self.seq = seq
        self.command = command
        self.flags = flags
        self.status = status
        self.body = body

    @property
    def is_response(self) -> bool:
        return self.flags & FLOW_MASK == FLOW_RESPONSE

    def __repr__(self) -> str:
        return f"Received(seq={self.seq}, command={self.command}, status={self.status})"


class _Info:
    draining = False
    encryption = False


class Device:
    """One session and the client side of its connection, in memory."""

    def __init__(self, harness: Harness, now: float, decode: bool = True) -> None:
        self.harness = harness
        self.decode = decode  # False: only count the bytes written (benchmarks)
        self.session = Session(harness.core.deps, self, now)
        self.client = Connection(CLIENT_MAX_BODY, Side.CLIENT)
        self.received: list[Received] = []
        self.closed = False
        self.written = 0

    # ---- the session's Link -------------------------------------------------------------------
    def transmit(self) -> None:
        session = self.session
        durability = self.harness.core.services.durability
        if session.hold > durability.durable_seq:
            durability.when_durable(session.hold, self.transmit)
            return
        session.hold = 0
        conn = session.conn
        if conn.pending_violation is not None:
            conn.finish_violation()
        if session.pending:
            session.materialize()
        data = conn.data_to_send()
        if data:
            self.written += len(data)
            if not self.decode:
                pass
            else:
                for frame in self.client.receive_data(data):
                    self.received.append(Received(*frame))
        if conn.closing and not self.closed:
            self.closed = True
            session.mark_closed()
            if session.user_id:
                self.harness.core.deliverer.session_ended(session)
                self.harness.core.hub.unregister(session)

    # ---- sending ------------------------------------------------------------------------------
    def feed(self, frames: list[Frame]) -> None:
        """What the adapter does with one read: dispatch, then write."""
        self.session.handle(frames)
        self.transmit()

    def send(self, command: int, body: bytes, flags: int = 0) -> list[Received]:
        """Send one request, run the turn, and return what arrived meanwhile."""
        start = len(self.received)
        seq = self.client.send_request(command, body, flags)
        self.feed([(seq, command, flags, 0, body)])
        self.harness.turn()
        _ = seq
        return self.received[start:]

    def request(self, command: int, body: bytes, flags: int = 0) -> Received:
        """Send one request; its response (ServiceError for an error status)."""
        for rec in self.send(command, body, flags):
            if rec.is_response and rec.command == command:
                if rec.status:
                    err = pb.Error.FromString(rec.body)
                    raise ServiceError(err.code, err.message, rec.status)
                return rec
        raise AssertionError("no response")

    def rpc(self, route: str, body: dict[str, Any] | None = None) -> Any:
        req = pb.RpcRequest(route=route, body=json.dumps(body or {}).encode())
        rec = self.request(Cmd.RPC, req.SerializeToString())
        resp = pb.RpcResponse.FromString(rec.body)
        return json.loads(resp.data) if resp.data else None

    def pushes(self, command: int | None = None) -> list[Received]:
        return [
            r
            for r in self.received
            if not r.is_response and (command is None or r.command == command)
        ]


class Harness:
    """The server's core over a store (a new ``MemoryStore`` by default), without I/O."""

    def __init__(
        self,
        settings: Settings | None = None,
        store: Store | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.settings = settings or Settings(jwt_secret="harness-secret-" + "0" * 32)
        self._scheduled: list[Callable[[], None]] = []
        self.spawned: list[Coroutine[Any, Any, Any]] = []
        self.now = time.monotonic()
        kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
        self.core: Core = compose(
            self.settings,
            store or MemoryStore(),
            self.settings.jwt_secret or "harness-secret-" + "0" * 32,
            self._scheduled.append,
            _Info(),
            None,
            self.spawned.append,
            self._run_blocking,
            **kwargs,
        )

    @property
    def store(self) -> Store:
        return self.core.store

    async def _run_blocking(self, fn: Any, *args: Any) -> Any:
        return fn(*args)

    def turn(self) -> None:
        """The end of an event-loop turn: run what was scheduled (the hub's flush), and drive
        spawned coroutines (blocking work runs inline here) to completion."""
        while self._scheduled or self.spawned:
            scheduled, spawned = self._scheduled, self.spawned
            while spawned:
                coro = spawned.pop(0)
                try:
                    coro.send(None)
                except StopIteration:
                    pass
                else:  # pragma: no cover - the harness's run_blocking never suspends
                    raise AssertionError("a spawned coroutine suspended")
            while scheduled:
                scheduled.pop(0)()

    def user(self, name: str) -> User:
        """A user created directly in the store (no password hashing)."""
        return self.core.services.accounts.create(name, "", name, None, None)

    def device(self, decode: bool = True) -> Device:
        return Device(self, self.now, decode)

    def login(
        self, user: User, device_id: str | None = None, ready: bool = True, decode: bool = True
    ) -> Device:
        """A device logged in over a real LOGIN frame with a token issued for it."""
        device_id = device_id or str(uuid.uuid4())
        token, _, _ = self.core.services.accounts.issue(user.user_id, device_id)
        dev = self.device()
        dev.decode = True
        req = pb.AuthorizationRequest(
            auth_type="JWT",
            auth_token=token,
            device_info=pb.DeviceInfo(device_id=device_id, device_type="harness"),
        )
        dev.request(Cmd.LOGIN, req.SerializeToString())
        if ready:
            dev.rpc("sync/session_ready", {})
        dev.decode = decode
        return dev

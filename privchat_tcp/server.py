"""The IO adapter: asyncio/uvloop transports <-> sessions, plus the server's lifecycle.

``data_received`` hands the bytes to the sans-IO connection, dispatches every complete frame,
and makes one write with everything it answered. A one-second sweep enforces the login deadline
and the heartbeat timeout for all sessions at once (no timer per connection).
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import signal
from collections.abc import Coroutine
from typing import Any

from .auth import PasswordHasher, TokenIssuer, load_or_create_secret
from .config import Settings
from .crypto import ServerKey
from .errors import ErrorCode, Status
from .hub import Hub
from .service import Service
from .session import Context, Session
from .store import MemoryStore, Store

__all__ = ["Server", "serve", "run"]

log = logging.getLogger("privchat_tcp.server")


class ServerProtocol(Session, asyncio.Protocol):
    __slots__ = ("transport", "server")

    def __init__(self, server: Server) -> None:
        super().__init__(server.ctx, server.clock())
        self.server = server
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_rx = self.server.now
        conn = self.conn
        frames = conn.receive_data(data)
        if frames:
            self.handle(frames)
        if self.pending:
            self._materialize()
        out = conn.out
        if out:
            assert self.transport is not None
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        if conn.closing:
            self._close()

    def eof_received(self) -> bool | None:
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.user_id:
            self.ctx.hub.unregister(self)
        self.pending.clear()
        self.conn.out.clear()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.server.connections.discard(self)
            if self.user_id:
                self.ctx.hub.unregister(self)
            self.transport.close()


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
        self._sweeper: asyncio.TimerHandle | None = None
        secret = settings.jwt_secret or load_or_create_secret(settings.data_path)
        self.store = store or MemoryStore()
        self.hub = Hub(settings, self.loop.call_soon)
        self.service = Service(settings, self.store, self.hub)
        server_key = None
        if settings.encryption:
            path = (pathlib.Path(settings.rsa_key_file) if settings.rsa_key_file
                    else settings.data_path / "server_key.pem")
            server_key = ServerKey.load_or_create(path)
        self.ctx = Context(
            settings, self.service, self.hub,
            TokenIssuer(secret, settings.token_ttl, settings.refresh_token_ttl),
            PasswordHasher(settings.argon2_time_cost, settings.argon2_memory_kib),
            server_key, self._spawn, self._run_blocking,
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
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> Server:
        self._server = await self.loop.create_server(
            lambda: ServerProtocol(self), self.settings.host, self.settings.port,
            backlog=4096, reuse_address=True,
        )
        self._sweeper = self.loop.call_later(1.0, self._sweep)
        key = self.ctx.server_key
        log.info("privchat-tcp listening on %s:%d (store epoch %s)", self.settings.host,
                 self.port, self.store.epoch)
        if key is not None:
            log.info("server key fingerprint (SHA-256): %s", key.fingerprint())
        return self

    def _sweep(self) -> None:
        self.now = now = self.clock()
        s = self.settings
        login_deadline = now - s.login_timeout
        idle_deadline = now - 2 * s.heartbeat_interval
        for session in list(self.connections):
            if session.closed:
                continue
            if not session.user_id:
                if session.connected_at < login_deadline:
                    session.conn.send_push(2, _timeout_body("login deadline passed"),
                                           Status.TIMEOUT)
                    session.conn.closing = True
                    session.flush()
            elif session.last_rx < idle_deadline:
                session.end(Status.TIMEOUT, ErrorCode.TIMEOUT, "heartbeat missed")
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    async def stop(self, grace: float = 0.0) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        self.ctx.draining = True
        self.hub.end_all()
        for session in list(self.connections):
            session._close()
        if grace:
            await asyncio.sleep(grace)
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()


def _timeout_body(message: str) -> bytes:
    from .protocol import error_body

    return error_body(ErrorCode.TIMEOUT, message)


async def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM."""
    server = await Server(settings).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"privchat-tcp listening on {settings.host}:{server.port}", flush=True)
    if server.ctx.server_key is not None:
        print(f"server key fingerprint (SHA-256): {server.ctx.server_key.fingerprint()}",
              flush=True)
    await stop.wait()
    log.info("stopping")
    await server.stop()


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



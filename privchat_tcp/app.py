"""The composition root: the one place that picks a store, builds the services, the hub and the
route table, and starts (and drains, and stops) the listeners. Operations: docs/operations.md.

``await Server(settings).start()``; ``await server.drain()`` (SIGTERM); ``await server.stop()``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import pathlib
import secrets
import shutil
import signal
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .config import Settings
from .net.accept import Acceptor, listen
from .net.admin import AdminServer
from .net.deadlines import sweep
from .net.drain import drain_sessions
from .net.hashing import Guard, HashPool
from .net.limits import RateLimits
from .net.looplag import LoopLagProbe
from .net.metrics import ServerStats, render_metrics
from .net.tcp import TcpConnection, TcpContext
from .rpc.routes import all_routes
from .rpc.table import RouteTable, ServerInfo
from .service import Services, now_ms
from .service.auth import PasswordHasher, TokenIssuer
from .service.ports import Store
from .service.stickers import StickerCatalogue
from .session.commands import COMMANDS
from .session.delivery import Deliverer
from .session.hub import Hub
from .session.presence import PresenceLink
from .session.session import LoginGuard, SessionDeps
from .store.memory import MemoryStore
from .store.sqlite import SQLiteStore
from .wire.crypto import ServerKey

if TYPE_CHECKING:  # aiohttp is imported only when the file listener is on
    from .net.files_http import FileServer

__all__ = [
    "Server",
    "Core",
    "compose",
    "open_store",
    "serve",
    "run",
    "load_or_create_secret",
]

log = logging.getLogger("privchat_tcp.server")

BACKLOG = 4096


def load_or_create_secret(data_dir: pathlib.Path) -> str:
    """The JWT secret kept in ``data_dir/jwt.secret`` (created with mode 0600)."""
    path = data_dir / "jwt.secret"
    try:
        text = path.read_text().strip()
        if text:
            return text
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    text = secrets.token_urlsafe(48)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(text + "\n")
    tmp.replace(path)
    return text


class Core:
    """Everything but the listeners: store, services, hub, delivery policy, routes, and what
    sessions share. ``compose`` builds it; ``Server`` and the in-memory harness use it."""

    def __init__(
        self,
        store: Store,
        services: Services,
        hub: Hub,
        deliverer: Deliverer,
        routes: RouteTable,
        deps: SessionDeps,
    ) -> None:
        self.store = store
        self.services = services
        self.hub = hub
        self.deliverer = deliverer
        self.routes = routes
        self.deps = deps


def compose(
    settings: Settings,
    store: Store,
    jwt_secret: str,
    schedule: Callable[[Callable[[], None]], object],
    server: ServerInfo,
    server_key: ServerKey | None,
    spawn: Callable[[Coroutine[Any, Any, Any]], object],
    run_blocking: Callable[..., Awaitable[Any]],
    clock: Callable[[], int] = now_ms,
    guard: LoginGuard | None = None,
) -> Core:
    """Wire the layers together over ``store``; ``schedule`` runs a callback at the end of
    the event loop's turn (the hub flushes sessions then). ``guard`` limits anonymous
    authentication work (None: no limits, password work through ``run_blocking``)."""
    hub = Hub(settings, schedule)
    deliverer = Deliverer(settings, hub, store)
    services = Services(
        settings,
        store,
        deliverer,
        TokenIssuer(jwt_secret, settings.token_ttl, settings.refresh_token_ttl),
        PasswordHasher(settings.argon2_time_cost, settings.argon2_memory_kib),
        clock,
    )
    presence = PresenceLink(services, hub)
    hub.on_unregister = presence.session_ended
    services.presence.push = presence
    services.devices.schedule = schedule  # LOGIN's device records: written after its turn
    routes = all_routes()
    deps = SessionDeps(
        settings,
        services,
        hub,
        deliverer,
        routes,
        COMMANDS,
        server,
        server_key,
        spawn,
        run_blocking,
        guard,
    )
    return Core(store, services, hub, deliverer, routes, deps)


def open_store(settings: Settings, loop: asyncio.AbstractEventLoop | None = None) -> Store:
    """The store the settings name: in memory (``memory_only``) or SQLite in the data
    directory. Raises ``StoreOpenError`` for a store that cannot be used."""
    if settings.memory_only:
        return MemoryStore()
    store = SQLiteStore(
        settings.data_path,
        settings.sqlite_synchronous,
        settings.memory_window,
        settings.dedup_retention,
    )
    if loop is not None:
        call = loop.call_soon_threadsafe

        def notify(fn: Callable[..., None], args: tuple[Any, ...]) -> None:
            try:
                call(fn, *args)
            except RuntimeError:  # the loop is closed: the store is being closed too
                pass

        store.attach(notify, loop.call_soon)
    return store


class Server:
    """One server process: its store, services, sessions and listeners."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self.clock = self.loop.time
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._acceptor: Acceptor | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._port: int | None = None
        self._draining = False
        self.admin: AdminServer | None = None
        self.stats = ServerStats()
        self.limits = RateLimits(settings)
        #: password hashing: its own threads and a bounded queue (``net/hashing.py``)
        self.hash_pool = HashPool(self.loop, settings.hash_workers, settings.hash_queue)
        self.guard = Guard(self.limits.login, self.hash_pool, self.clock)
        self._proxy_networks = settings.proxy_networks()
        secret = settings.jwt_secret or load_or_create_secret(settings.data_path)
        self.server_key: ServerKey | None = None
        if settings.encryption:
            path = (
                pathlib.Path(settings.rsa_key_file)
                if settings.rsa_key_file
                else settings.data_path / "server_key.pem"
            )
            self.server_key = ServerKey.load_or_create(path)
        self.core = core = compose(
            settings,
            store or open_store(settings, self.loop),
            secret,
            self.loop.call_soon,
            self,
            self.server_key,
            self._spawn,
            self._run_blocking,
            guard=self.guard,
        )
        self.store = core.store
        self._store_closed = False
        self.hub = core.hub
        self.services = core.services
        self.routes = core.routes
        self.deps = core.deps
        self.tcp = TcpContext(
            settings, self.deps, self.loop, self.stats, self.limits, self.proxy_source_allowed
        )
        # files and stickers: the data directory's catalogue, the file listener's directory
        self.services.stickers = StickerCatalogue.load(settings.data_path, settings.file_base_url)
        self.files: FileServer | None = None
        self._files_tmp: str | None = None
        self.loop_lag = LoopLagProbe(self.loop, settings.loop_lag_interval, self.stats)

    # ---- what the routes, metrics and admin listener read --------------------------------------
    @property
    def draining(self) -> bool:
        """True from the start of a drain (``/readyz`` answers 503)."""
        return self._draining

    @property
    def encryption(self) -> bool:
        return self.server_key is not None

    @property
    def connections(self) -> set[TcpConnection]:
        return self.tcp.connections

    @property
    def connection_count(self) -> int:
        return len(self.tcp.connections)

    @property
    def sessions_total(self) -> int:
        return self.hub.sessions_total

    def render_metrics(self) -> str:
        return render_metrics(self)

    @property
    def port(self) -> int:
        assert self._port is not None, "not started"
        return self._port

    def proxy_source_allowed(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._proxy_networks)

    # ---- tasks ---------------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_blocking(self, fn: Any, *args: Any) -> Any:
        return await self.loop.run_in_executor(None, fn, *args)

    def _protocol(self) -> TcpConnection:
        return TcpConnection(self.tcp)

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> Server:
        s = self.settings
        if s.accept_batch:
            socks = listen(s.host, s.port, BACKLOG)
            self._acceptor = Acceptor(self.loop, socks, self._protocol, s.accept_batch, self._spawn)
            self._acceptor.start()
            self._port = int(socks[0].getsockname()[1])
        else:
            self._server = await self.loop.create_server(
                self._protocol, s.host, s.port, backlog=BACKLOG, reuse_address=True
            )
            self._port = int(self._server.sockets[0].getsockname()[1])
        self._sweeper = self.loop.call_later(1.0, self._sweep)
        self.loop_lag.start()
        if s.admin_port:
            self.admin = await AdminServer(self, s.admin_host, s.admin_port).start()
        if s.file_port:
            from .net.files_http import FileServer

            self.files = await FileServer(self.services, s, self._files_root()).start()
        log.info(
            "privchat-tcp listening on %s:%d (store epoch %s)", s.host, self.port, self.store.epoch
        )
        if self.server_key is not None:
            log.info("server key fingerprint (SHA-256): %s", self.server_key.fingerprint())
        return self

    def _files_root(self) -> pathlib.Path:
        """Where uploaded files live: DATA_DIR/files, or with ``memory_only`` a temporary
        directory removed at stop (the files are forgotten with the rest)."""
        if self.settings.memory_only:
            self._files_tmp = tempfile.mkdtemp(prefix="privchat-files-")
            return pathlib.Path(self._files_tmp)
        return self.settings.data_path / "files"

    def _sweep(self) -> None:
        sweep(self.tcp, self.clock())
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    def _close_listeners(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._acceptor is not None:
            self._acceptor.close()

    async def drain(self) -> None:
        """Graceful shutdown (SIGTERM), PROTOCOL.md section 9 (``net/drain.py``), then stop."""
        self._draining = True
        await drain_sessions(self.tcp, self._close_listeners)
        await self.stop()

    async def stop(self, grace: float = 0.0) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.loop_lag.stop()
        self._close_listeners()
        self._draining = True
        self.hub.end_all()
        for conn in list(self.tcp.connections):
            conn.close()
        if grace:
            await asyncio.sleep(grace)
        for task in list(self._tasks):
            task.cancel()
        if self.files is not None:  # before the store closes: no upload writes after it
            await self.files.stop()
            self.files = None
        self.hash_pool.close()
        self._close_store()
        if self._files_tmp is not None:
            shutil.rmtree(self._files_tmp, ignore_errors=True)
            self._files_tmp = None
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
            self.services.devices.flush()
        except Exception:
            log.exception("writing the device records failed")
        try:
            self.store.flush()
        except Exception:
            log.exception("flushing the store failed")
        try:
            self.store.close()
        except Exception:
            log.exception("closing the store failed")


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
    if server.files is not None:
        print(f"file HTTP on {server.files.host}:{server.files.port}", flush=True)
    if server.server_key is not None:
        print(f"server key fingerprint (SHA-256): {server.server_key.fingerprint()}", flush=True)
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

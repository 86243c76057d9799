"""Shared fixtures: a real server on a loopback port, in its own thread and event loop."""

from __future__ import annotations

import asyncio
import os
import pathlib
import tempfile
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator
from types import ModuleType
from typing import Any, TypeVar

import pytest

from privchat_tcp.app import Server
from privchat_tcp.client import Client
from privchat_tcp.config import load_settings
from privchat_tcp.service.ports import Store
from privchat_tcp.wire.crypto import ServerKey

T = TypeVar("T")

USE_UVLOOP = os.environ.get("PRIVCHAT_TEST_LOOP", "uvloop") == "uvloop"

_KEY_DIR = tempfile.TemporaryDirectory(prefix="privchat-key-")
KEY_FILE = os.path.join(_KEY_DIR.name, "server_key.pem")
SERVER_KEY = ServerKey.load_or_create(pathlib.Path(KEY_FILE))
PUBLIC_PEM = SERVER_KEY.public_pem()


REQUIRE_EXT = bool(os.environ.get("PRIVCHAT_REQUIRE_EXT"))


def twin_params(py: ModuleType, c: ModuleType | None, name: str) -> list[Any]:
    """pytest params for a module and its compiled twin ``privchat_tcp.<name>``: the compiled
    one is skipped when it is not built, unless ``PRIVCHAT_REQUIRE_EXT=1`` (CI), where the test
    gets None and ``twin`` fails it."""
    marks: list[pytest.MarkDecorator] = []
    if c is None and not REQUIRE_EXT:
        marks.append(pytest.mark.skip(reason=f"privchat_tcp.{name} is not built"))
    return [pytest.param(py, id="py"), pytest.param(c, id="c", marks=marks)]


def twin(request: pytest.FixtureRequest, name: str) -> ModuleType:
    """The module of a ``twin_params`` fixture."""
    mod = request.param
    if mod is None:
        pytest.fail(f"PRIVCHAT_REQUIRE_EXT=1 but privchat_tcp.{name} did not import")
    assert isinstance(mod, ModuleType)
    return mod


def new_loop() -> asyncio.AbstractEventLoop:
    if USE_UVLOOP:
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


_LIVE: weakref.WeakSet[Client] = weakref.WeakSet()
_dial = Client._dial


async def _tracked_dial(self: Client) -> None:
    await _dial(self)
    _LIVE.add(self)


Client._dial = _tracked_dial  # type: ignore[method-assign]


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run a test coroutine to completion on a fresh loop, bounded in time.

    Whatever happens, the clients it opened are closed before the loop is, so a failing
    assertion is reported as itself (a loop closed with live transports would mask it)."""
    loop = new_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        for client in list(_LIVE):
            proto = client._proto
            if proto is not None and proto.transport is not None:
                proto.transport.abort()
        _LIVE.clear()
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0.01))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class ServerThread:
    def __init__(self, store: Store | None = None, **overrides: Any) -> None:
        self.store = store
        self.tmp = tempfile.TemporaryDirectory(prefix="privchat-test-")
        base: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "data_dir": self.tmp.name,
            "jwt_secret": "test-secret-" + "x" * 32,
            "argon2_time_cost": 1,
            "argon2_memory_kib": 1024,
            "log_level": "WARNING",
            "rsa_key_file": KEY_FILE,
            # no welcome message unless a test asks for one: tests count what they receive
            "welcome_message": "",
        }
        base.update(overrides)
        self.settings = load_settings(environ={}, overrides=base)
        self.loop = new_loop()
        self.server: Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.server = await Server(self.settings, store=self.store).start()

        try:
            self.loop.run_until_complete(start())
        except BaseException as exc:  # surface in the test thread
            self.error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(10)
        if self.error is not None:
            raise self.error
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop and return its result (for inspection)."""
        result: list[Any] = []
        done = threading.Event()

        def wrapper() -> None:
            try:
                result.append(fn())
            except BaseException as exc:
                result.append(exc)
            done.set()

        self.loop.call_soon_threadsafe(wrapper)
        done.wait(10)
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.server is not None:
            fut = asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop)
            fut.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.tmp.cleanup()


@pytest.fixture
def server() -> Iterator[ServerThread]:
    srv = ServerThread().start()
    yield srv
    srv.stop()


@pytest.fixture
def make_server() -> Iterator[Callable[..., ServerThread]]:
    made: list[ServerThread] = []

    def factory(**overrides: Any) -> ServerThread:
        srv = ServerThread(**overrides).start()
        made.append(srv)
        return srv

    yield factory
    for srv in made:
        srv.stop()


async def user(
    port: int, name: str, device_id: str | None = None, encrypted: bool = False, **kw: Any
) -> Client:
    """A registered, logged-in, READY client."""
    client = await Client.connect("127.0.0.1", port, **kw)
    await client.register(name, "password-" + name, device_id)
    await client.login(server_key=PUBLIC_PEM if encrypted else None)
    await client.ready()
    return client


async def device(
    port: int, token: str, device_id: str, ready: bool = True, encrypted: bool = False, **kw: Any
) -> Client:
    """Another connection for an existing account's token."""
    client = await Client.connect("127.0.0.1", port, **kw)
    client.device_id = device_id
    await client.login(token, server_key=PUBLIC_PEM if encrypted else None)
    if ready:
        await client.ready()
    return client

"""Route tables as values (aiohttp's RouteTableDef), and what a route is called with.

A route is a function ``(ctx: RpcContext, body: dict) -> JSON value``, or a coroutine function
for routes that do blocking work (password hashing, through ``ctx.passwords``). It raises
``ServiceError`` to fail; the session turns that into the status class and ``Error`` body of
PROTOCOL.md section 4. Each ``routes/<prefix>.py`` declares its own ``RouteTable``; the
composition root merges them (``RouteTable.merge``): nothing is registered by importing.

The RPC layer never sees bytes, a socket or a session object: the caller is the ``Caller``
protocol (ids, and what a route may ask of its session: ``session_ready``, ``end_login``).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ErrorCode, ServiceError

if TYPE_CHECKING:
    from ..config import Settings
    from ..service import Services

__all__ = [
    "Route",
    "RouteTable",
    "RpcContext",
    "Caller",
    "ServerInfo",
    "Handler",
    "PasswordGuard",
    "UnlimitedPasswords",
]

Handler = Callable[["RpcContext", dict[str, Any]], Any]


class Caller(Protocol):
    """The session a request came from, as the routes may see it."""

    @property
    def user_id(self) -> int: ...

    @property
    def device_id(self) -> str: ...

    @property
    def session_id(self) -> str:
        """A value unique across processes: the origin of the events this request causes."""

    @property
    def token_jti(self) -> str: ...

    @property
    def login_id(self) -> str:
        """The login the session's token belongs to (its ``lid`` claim)."""

    @property
    def address(self) -> str:
        """The client's address, without the port (from the PROXY header when present)."""

    @property
    def closed(self) -> bool:
        """True once the connection is gone (work for it is no longer wanted)."""

    def session_ready(self) -> None:
        """Mark the session READY (``sync/session_ready``): it starts receiving pushes."""

    def end_login(self) -> None:
        """After this request's reply, end every live session of the caller's login
        (``account/auth/logout``: LOGOUT flow 2 UNAUTHENTICATED, then close)."""

    def end_devices(self, device_ids: Iterable[str]) -> int:
        """End the live sessions of the caller's user on those devices, never the caller's own
        (``device/kick_*``: LOGOUT flow 2 UNAUTHENTICATED, 10003, then close); how many."""


class ServerInfo(Protocol):
    """What ``system/*`` routes report about the server."""

    @property
    def draining(self) -> bool: ...

    @property
    def encryption(self) -> bool: ...


class PasswordGuard(Protocol):
    """Where password work runs and what limits the attempts (``account/*``). The server's
    (``net/hashing.py``) keeps per-address and per-account buckets and a bounded pool of hash
    threads; each refusal is a ``ServiceError`` with its PROTOCOL.md section 4 class."""

    def admit(self, caller: Caller, account: str | None, device_id: str) -> bool:
        """Before any password work: raise RATE_LIMITED (10300) when the caller's address,
        or for a login that account (``account``: a key the route picks), may not try a
        password now; None for a registration (the address alone). Returns whether the
        caller is known to the account (its work may then go ``first``)."""

    def settle(self, caller: Caller, account: str, device_id: str, ok: bool) -> None:
        """The outcome of a password login (or a registration, ``ok``): failures back off,
        a success makes the caller's address and device known to the account."""

    def run(
        self, caller: Caller, fn: Callable[..., Any], *args: Any, first: bool = False
    ) -> Awaitable[Any]:
        """Run blocking password work (``fn(*args)``) off the event loop, ``first``: ahead
        of strangers' work. BUSY (2) at once when the queue is full; never started once the
        caller's connection is gone."""


class UnlimitedPasswords:
    """A ``PasswordGuard`` without limits that runs the work through ``run_blocking`` (the
    in-memory harness, and the default)."""

    __slots__ = ("run_blocking",)

    def __init__(self, run_blocking: Callable[..., Awaitable[Any]]) -> None:
        self.run_blocking = run_blocking

    def admit(self, caller: Caller, account: str | None, device_id: str) -> bool:
        return False

    def settle(self, caller: Caller, account: str, device_id: str, ok: bool) -> None:
        return None

    def run(
        self, caller: Caller, fn: Callable[..., Any], *args: Any, first: bool = False
    ) -> Awaitable[Any]:
        return self.run_blocking(fn, *args)


class RpcContext:
    """One session's view of the server for its routes: services, settings, and the caller."""

    __slots__ = ("services", "settings", "server", "run_blocking", "caller", "passwords")

    def __init__(
        self,
        services: Services,
        settings: Settings,
        server: ServerInfo,
        run_blocking: Callable[..., Awaitable[Any]],
        caller: Caller,
        passwords: PasswordGuard | None = None,
    ) -> None:
        self.services = services
        self.settings = settings
        self.server = server
        self.run_blocking = run_blocking
        self.caller = caller
        #: password work and its limits (``account/*``)
        self.passwords: PasswordGuard = (
            UnlimitedPasswords(run_blocking) if passwords is None else passwords
        )

    @property
    def user_id(self) -> int:
        return self.caller.user_id

    @property
    def device_id(self) -> str:
        return self.caller.device_id

    @property
    def origin(self) -> str:
        return self.caller.session_id


class Route:
    """A route: its handler, whether it is served before login, and the body keys it reads
    (``keys``; None: not declared). A body with another key is refused before the handler
    runs (``check_keys``), so a typo never silently does less than asked."""

    __slots__ = ("name", "handler", "anonymous", "is_async", "keys")

    def __init__(
        self,
        name: str,
        handler: Handler,
        anonymous: bool,
        keys: Iterable[str] | None = None,
    ) -> None:
        self.name = name
        self.handler = handler
        self.anonymous = anonymous
        self.is_async = inspect.iscoroutinefunction(handler)
        self.keys: frozenset[str] | None = None if keys is None else frozenset(keys)

    def check_keys(self, body: dict[str, Any]) -> None:
        keys = self.keys
        if keys is None:
            return
        for key in body:
            if key not in keys:
                raise ServiceError(ErrorCode.INVALID_PARAMS, f"unknown parameter: {_safe(key)}")


def _safe(key: str) -> str:
    """A key fit to name in an error: short printable ASCII, else a placeholder."""
    if len(key) <= 64 and key.isascii() and key.isprintable():
        return key
    return "(a key that is not printable ASCII)"


class RouteTable:
    """Routes by name. ``@routes.route("a/b")`` declares one; ``merge`` joins tables."""

    __slots__ = ("_routes",)

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}

    def route(
        self, name: str, anonymous: bool = False, keys: Iterable[str] | None = None
    ) -> Callable[[Handler], Handler]:
        """Declare a route; ``keys``: every body key it accepts (others are refused)."""

        def register(handler: Handler) -> Handler:
            self.add(Route(name, handler, anonymous, keys))
            return handler

        return register

    def add(self, route: Route) -> None:
        if route.name in self._routes:
            raise ValueError(f"route {route.name} declared twice")
        self._routes[route.name] = route

    @classmethod
    def merge(cls, *tables: RouteTable) -> RouteTable:
        out = cls()
        for table in tables:
            for route in table:
                out.add(route)
        return out

    def get(self, name: str) -> Route | None:
        return self._routes.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._routes

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes.values())

    def __len__(self) -> int:
        return len(self._routes)

    def names(self) -> list[str]:
        return sorted(self._routes)

"""Targets that drive the real server core through the in-memory harness (``privchat_tcp.harness``:
sessions, commands, routes and services as the server composes them, no sockets).

- ``rpc``: one RPC frame to a route of the table (every route the server serves), on a logged-in
  user, through the session's dispatch (the route's parameter parsing and its handler).
- ``connection``: raw bytes fed to a server session's sans-IO connection and dispatch, before
  login or after one, in one read or one byte per read.

A finding is any exception the session's last resort catches (``FAILURES.report``: the frame
would be answered INTERNAL), an INTERNAL answer, or server output the client side cannot split.
The harness is rebuilt every ``REBUILD`` inputs (bounded state); the ``rpc`` target keeps its
device while it stays logged in, so a campaign finding may need the inputs before it: ``repro``
runs it on a new harness and says when it does not reproduce alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from privchat_tcp.config import Settings
from privchat_tcp.errors import Status
from privchat_tcp.harness import Device, Harness
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.service.model import User
from privchat_tcp.session import session as _session
from privchat_tcp.wire.commands import Cmd

from . import Finding, Target
from .seeds import frames_of, session_bytes

REBUILD = 2000


def _report(what: str, exc: BaseException) -> None:
    raise Finding(f"unexpected exception in {what}: {type(exc).__name__}: {exc}") from exc


class World:
    """A harness with two users, a direct channel and a group, and alice's device."""

    def __init__(self) -> None:
        _session.FAILURES.report = _report  # type: ignore[method-assign]
        settings = Settings(
            jwt_secret="fuzz-secret-" + "0" * 32,
            argon2_time_cost=1,
            argon2_memory_kib=8,
        )
        self.h = Harness(settings)
        self.alice: User = self.h.user("alice")
        self.bob: User = self.h.user("bob")
        self.uses = 0
        self._dev: Device | None = None
        dev = self.device()
        dev.rpc("channel/direct/get_or_create", {"target_user_id": self.bob.user_id})
        dev.rpc("group/group/create", {"name": "g"})
        self.routes = sorted(self.h.core.deps.routes.names())

    def device(self) -> Device:
        """Alice's logged-in, ready device (a new one once the last was closed)."""
        dev = self._dev
        if dev is None or dev.closed or dev.session.conn.closing:
            dev = self._dev = self.h.login(self.alice, device_id="fuzz-device")
        return dev


_world: World | None = None


def world() -> World:
    global _world
    w = _world
    if w is None or w.uses >= REBUILD:
        w = _world = World()
    w.uses += 1
    return w


def _check(dev: Device, start: int = 0) -> None:
    for rec in dev.received[start:]:
        if rec.status == Status.INTERNAL:
            err = pb.Error.FromString(rec.body) if rec.body else None
            raise Finding(f"answered INTERNAL: command {rec.command}, {err!r}")
    if dev.client.closing:
        raise Finding("the server wrote bytes the client side cannot split")


def _close(w: World, dev: Device) -> None:
    if not dev.closed:
        dev.session.close()
        dev.transmit()
    w.h.turn()


# ---- 3. RPC JSON through every route -----------------------------------------------------------
def rpc_one(data: bytes) -> None:
    if not data:
        return
    w = world()
    index, body = data[0], data[1:]
    route = w.routes[index] if index < len(w.routes) else f"fuzz/{index}"
    dev = w.device()
    start = len(dev.received)
    req = pb.RpcRequest(route=route, body=body).SerializeToString()
    dev.send(Cmd.RPC, req)
    _check(dev, start)
    if len(dev.received) > 256:
        del dev.received[:]


def rpc_seeds() -> Iterator[bytes]:
    routes = World().routes
    index = {name: i for i, name in enumerate(routes)}
    seen: set[str] = set()
    for _, data in session_bytes("post"):
        for _, command, _, _, body in frames_of(data):
            if command != Cmd.RPC:
                continue
            try:
                req = pb.RpcRequest.FromString(body)
            except Exception:  # noqa: BLE001 - a malformed request is no seed here
                continue
            if req.route in index:
                seen.add(req.route)
                yield bytes((index[req.route],)) + req.body
    for name in routes:  # every route, even one the table has no case for
        yield bytes((index[name],)) + b"{}"
    yield from _listed_bodies(index)
    yield bytes((250,)) + b"{}"


def _listed_bodies(index: dict[str, int]) -> Iterator[bytes]:
    """Each route's body as ``tests/test_hostile_input.py`` lists it (every key it reads, a
    valid value each), and with its ids set to the world's (bob, the direct channel, the
    group): valid requests, for the fuzzer to start deep in the handlers."""
    import test_hostile_input

    ids = (100000001, 1000, 1001)  # bob, the direct channel, the group (World's, in order)
    for route, keys in test_hostile_input.ROUTE_KEYS.items():
        if route not in index:
            continue
        body = {key: value for key, (_, value) in keys.items()}
        yield bytes((index[route],)) + json.dumps(body).encode()
        for some in ids:
            real = {k: some if kind == "id" else v for k, (kind, v) in keys.items()}
            yield bytes((index[route],)) + json.dumps(real).encode()


TARGET_RPC = Target(
    "rpc",
    "one RPC to a route (every route of the table) on a logged-in user: never INTERNAL",
    rpc_one,
    rpc_seeds,
    max_len=2048,
)


# ---- 7. the whole sans-IO connection, server side ----------------------------------------------
def feed(w: World, dev: Device, chunks: list[bytes]) -> None:
    """What the TCP adapter does with each read: split, dispatch (the frames left over once
    the output budget is passed go again), write."""
    conn = dev.session.conn
    for chunk in chunks:
        if conn.closing or dev.closed:
            break
        frames: list[Any] = conn.receive_data(chunk)
        while True:
            rest = dev.session.handle(frames)
            dev.transmit()
            w.h.turn()
            if not rest or conn.closing:
                break
            frames = rest


def connection_one(data: bytes) -> None:
    if not data:
        return
    ctl, stream = data[0], data[1:]
    w = world()
    if ctl & 1:
        dev = w.h.login(w.alice, device_id="fuzz-conn", ready=bool(ctl & 4))
    else:
        dev = w.h.device()
    start = len(dev.received)
    chunks = [stream[i : i + 1] for i in range(len(stream))] if ctl & 2 else [stream]
    try:
        feed(w, dev, chunks)
        _check(dev, start)
    finally:
        _close(w, dev)


def connection_seeds() -> Iterator[bytes]:
    for session, data in session_bytes("pre", "post"):
        yield (b"\x05" if session == "post" else b"\x00") + data


TARGET_CONNECTION = Target(
    "connection",
    "bytes into a server session (connection, dispatch, commands), before and after LOGIN",
    connection_one,
    connection_seeds,
    max_len=4096,
)

__all__ = ["TARGET_RPC", "TARGET_CONNECTION", "World", "world", "feed"]

"""Malformed input never crashes the server: every answer is a documented status, never INTERNAL.

h11's invariant, over TCP: random bodies for every command and random JSON for every route, on a
logged-in session; after each batch the server still serves this and other sessions.
"""

from __future__ import annotations

import json
import random

from conftest import ServerThread, run, user

from privchat_tcp.errors import Status
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.rpc.routes import all_routes
from privchat_tcp.wire.commands import Cmd

SEED = 20261122
VALUES: list[object] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**64,
    2**64 - 1,
    2**63,
    1.5,
    "",
    "x",
    "1",
    "-5",
    "00000000",
    [],
    [1, 2],
    ["a"],
    {},
    {"a": 1},
    "00000000-0000-0000-0000-000000000000",
    "\u0000",
    "é" * 70,
]
KEYS = [
    "channel_id",
    "channel_type",
    "group_id",
    "user_id",
    "target_user_id",
    "username",
    "password",
    "device_id",
    "name",
    "member_ids",
    "last_pts",
    "limit",
    "server_message_id",
    "local_message_id",
    "payload",
    "command_type",
    "channels",
    "refresh_token",
    "role",
    "description",
    "is_typing",
    "action_type",
    "entity_type",
    "nickname",
    "email",
]


def random_body(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randrange(64))
    if kind == 1:  # a valid tag stream with random values
        out = bytearray()
        for _ in range(rng.randrange(8)):
            field = rng.randrange(1, 21)
            wire = rng.choice((0, 2))
            out += bytes([(field << 3) | wire])
            if wire == 0:
                out += bytes([rng.randrange(128)])
            else:
                data = rng.randbytes(rng.randrange(12))
                out += bytes([len(data)]) + data
        return bytes(out)
    if kind == 2:
        return b"\x08" + b"\xff" * rng.randrange(1, 12)  # over-long varints
    return b""


def random_json(rng: random.Random) -> dict[str, object]:
    return {rng.choice(KEYS): rng.choice(VALUES) for _ in range(rng.randrange(6))}


def test_random_bodies_and_rpc_json_never_crash(server: ServerThread) -> None:
    async def main() -> None:
        rng = random.Random(SEED)
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        g = await alice.rpc("group/group/create", {"name": "g", "member_ids": [bob.user_id]})
        VALUES.extend([g["group_id"], bob.user_id, alice.user_id])
        statuses: dict[int, int] = {}
        commands = (Cmd.MS, Cmd.MP, Cmd.MR, Cmd.SUB, Cmd.RPC, Cmd.ACK, Cmd.PING)
        for _ in range(600):
            command = rng.choice(commands)
            body = random_body(rng)
            if command == Cmd.ACK:
                alice.send_raw(command, body)
                continue
            status, _, data = await alice.request(command, body, timeout=10)
            statuses[status] = statuses.get(status, 0) + 1
            assert status != Status.INTERNAL, (command, body)
            if status:
                pb.Error.FromString(data)
        routes = [r for r in all_routes().names() if r not in ("account/auth/logout",)]
        for _ in range(1500):
            route = rng.choice(routes)
            body = random_json(rng)
            req = pb.RpcRequest(route=route, body=json.dumps(body).encode())
            status, _, data = await alice.request(Cmd.RPC, req.SerializeToString(), timeout=10)
            statuses[status] = statuses.get(status, 0) + 1
            assert status != Status.INTERNAL, (route, body)
        assert await alice.ping() and await bob.ping()
        assert statuses.get(Status.BAD_REQUEST, 0) > 100  # the inputs really were bad
        await alice.close()
        await bob.close()

    run(main(), timeout=120)


def test_random_byte_streams_are_answered_or_closed(server: ServerThread) -> None:
    import asyncio

    async def main() -> None:
        rng = random.Random(SEED + 1)
        for _ in range(60):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(rng.randbytes(rng.randrange(1, 400)))
            writer.write_eof()
            data = await asyncio.wait_for(reader.read(), 10)  # the server closes or answers
            assert isinstance(data, bytes)
            writer.close()
        bystander = await user(server.port, "carol")
        assert await bystander.ping()
        await bystander.close()

    run(main(), timeout=120)

"""Crash test: acknowledged means durable, across SIGKILL at a random moment.

Each round starts ``privchat-tcp serve`` on the same data directory, has every client send
messages with ``local_message_id``s (pipelined, to the group of all of them and to a direct
channel), revoke some of its acknowledged messages and create small groups, and kills the
server with SIGKILL at a random moment; the next round's clients first resend everything that
was not acknowledged (and some that was). At the end: every acknowledged message is there
exactly once with its original id and pts, no (sender, device, local_message_id) is stored twice,
a resend of an acknowledged message answers its original id and pts, every channel's pts run is
contiguous, acknowledged revokes and groups are there, accounts and tokens still work, the epoch
is unchanged, and ``PRAGMA integrity_check`` says ok.

CI runs ``PRIVCHAT_CRASH_ROUNDS`` (default 3) rounds of ``PRIVCHAT_CRASH_CLIENTS`` (default 50)
clients; the full size is one command::

    PRIVCHAT_CRASH_ROUNDS=20 python -m pytest -q tests/test_crash.py -s
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import KEY_FILE, run

from privchat_tcp.client import Client
from privchat_tcp.errors import InvalidState, ServiceError

ROUNDS = int(os.environ.get("PRIVCHAT_CRASH_ROUNDS", "3"))
CLIENTS = int(os.environ.get("PRIVCHAT_CRASH_CLIENTS", "50"))
RATE = 2500  # messages/s offered in all, paced
WINDOW = 8  # MS in flight per client
SEED = int(os.environ.get("PRIVCHAT_CRASH_SEED", str(int(time.time()))))
SECRET = "crash-secret-" + "c" * 32


class Server:
    def __init__(self, data_dir: str) -> None:
        cmd = [
            sys.executable,
            "-m",
            "privchat_tcp",
            "serve",
            "--port",
            "0",
            "--data-dir",
            data_dir,
            "--rsa-key-file",
            KEY_FILE,
            "--jwt-secret",
            SECRET,
            "--argon2-time-cost",
            "1",
            "--argon2-memory-kib",
            "1024",
            "--rate-per-connection",
            "0",
            "--rate-per-user",
            "0",
            "--conn-rate-per-ip",
            "0",
            # dozens of accounts register from one loopback address
            "--login-rate-per-ip",
            "0",
            "--max-devices-per-user",
            "0",
            "--memory-window",
            "64",  # small: pulls of the whole history cross into the database
            "--log-level",
            "WARNING",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert "listening on" in line, line
        self.port = int(line.strip().rsplit(":", 1)[1])
        self.output: list[bytes] = []
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close_pipe()

    def _close_pipe(self) -> None:
        self._drainer.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_pipe()
        text = b"".join(self.output).decode(errors="replace")
        assert "Traceback" not in text, text[-3000:]


@dataclass
class Account:
    name: str
    user_id: int
    token: str
    device_id: str
    direct: int = 0
    next_local: int = 1
    acked: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # local -> id, pts, ch
    unacked: dict[int, int] = field(default_factory=dict)  # local -> channel
    revoked: set[int] = field(default_factory=set)  # message ids whose revoke was acknowledged
    groups: list[int] = field(default_factory=list)  # acknowledged group creations


async def _login(port: int, acct: Account) -> Client:
    c = await Client.connect("127.0.0.1", port, track=False, auto_ack=False)
    c.device_id = acct.device_id
    await c.login(acct.token)
    return c


async def _setup(port: int) -> tuple[list[Account], int]:
    accounts = []
    for i in range(CLIENTS):
        c = await Client.connect("127.0.0.1", port)
        device = str(uuid.uuid4())
        auth = await c.register(f"crash{i}", "password-crash", device)
        accounts.append(Account(f"crash{i}", auth["user_id"], auth["token"], device))
        await c.close()
    owner = await _login(port, accounts[0])
    group = await owner.rpc(
        "group/group/create",
        {"name": "everyone", "member_ids": [a.user_id for a in accounts[1:]]},
    )
    for i, acct in enumerate(accounts):  # each client's direct channel with its neighbour
        c = await _login(port, acct)
        peer = accounts[(i + 1) % len(accounts)]
        acct.direct = (
            await c.rpc("channel/direct/get_or_create", {"target_user_id": peer.user_id})
        )["channel_id"]
        await c.close()
    await owner.close()
    return accounts, group["group_id"]


async def _send(c: Client, acct: Account, local: int, channel: int) -> None:
    acct.unacked[local] = channel
    resp = await c.send(channel, f"m{local}", local_message_id=local)
    acct.unacked.pop(local, None)
    seen = acct.acked.get(local)
    got = (resp.server_message_id, resp.message_seq, resp.channel_id)
    assert seen is None or seen == got, ("a resend answered differently", local, seen, got)
    acct.acked[local] = got


def _done(inflight: set[asyncio.Task[None]]) -> Any:
    def done(task: asyncio.Task[None]) -> None:
        inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, (OSError, ConnectionError, TimeoutError, InvalidState)):
                raise exc  # an assertion of _send: reported by the loop, and found below

    return done


async def _client(port: int, acct: Account, group: int, rng: random.Random, stop: float) -> None:
    try:
        c = await _login(port, acct)
    except (OSError, ConnectionError, ServiceError, TimeoutError):
        return
    try:
        # first the resends: every unacknowledged message, and a few acknowledged ones
        for local, channel in list(acct.unacked.items()):
            await _send(c, acct, local, channel)
        for local in rng.sample(sorted(acct.acked), min(3, len(acct.acked))):
            await _send(c, acct, local, acct.acked[local][2])
        period = CLIENTS / RATE
        inflight: set[asyncio.Task[None]] = set()
        while time.monotonic() < stop and c.connected:
            roll = rng.random()
            if roll < 0.01 and acct.acked:  # revoke one of its own acknowledged messages
                local = rng.choice(sorted(acct.acked))
                mid, _, channel = acct.acked[local]
                if mid not in acct.revoked:
                    try:
                        await c.revoke(channel, mid)
                        acct.revoked.add(mid)
                    except ServiceError:
                        pass  # e.g. already revoked before a crash took the acknowledgement
            elif roll < 0.012:  # a state-changing RPC
                g = await c.rpc("group/group/create", {"name": f"g{acct.next_local}"})
                acct.groups.append(g["group_id"])
            local = acct.next_local
            acct.next_local += 1
            channel = group if rng.random() < 0.5 else acct.direct
            task = asyncio.ensure_future(_send(c, acct, local, channel))
            inflight.add(task)
            task.add_done_callback(_done(inflight))
            while len(inflight) >= WINDOW:
                await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(period * rng.uniform(0.5, 1.5))
        if inflight:
            await asyncio.wait(inflight, timeout=10)
    except (OSError, ConnectionError, TimeoutError, InvalidState, asyncio.CancelledError):
        pass  # the server was killed under it
    finally:
        await c.close()


def _pull_all(c: Client, channel: int) -> Any:
    async def pull() -> list[Any]:
        out: list[Any] = []
        last = 0
        while True:
            diff = await c.pull(channel, last, 1000)
            out.extend(diff.messages)
            if not diff.messages or not diff.has_more:
                return out
            last = diff.messages[-1].message_seq

    return pull()


@pytest.mark.timeout(90 + 20 * ROUNDS)
def test_acknowledged_messages_survive_sigkill() -> None:
    rng = random.Random(SEED)
    tmp = tempfile.TemporaryDirectory(prefix="privchat-crash-")
    data = tmp.name
    srv = Server(data)
    try:
        accounts, group = run(_setup(srv.port))
        epoch = run(_epoch(srv.port, accounts[0]))
        srv.stop()
        sent_total = 0
        t_total = 0.0
        for rnd in range(ROUNDS):
            srv = Server(data)
            kill_after = rng.uniform(1.0, 2.5)
            before = sum(len(a.acked) for a in accounts)
            t0 = time.monotonic()

            async def go(srv: Server = srv, kill_after: float = kill_after) -> None:
                port = srv.port
                stop = time.monotonic() + 3600
                tasks = [
                    asyncio.ensure_future(
                        _client(port, a, group, random.Random(rng.random()), stop)
                    )
                    for a in accounts
                ]
                await asyncio.sleep(kill_after)
                srv.kill()  # SIGKILL, mid-traffic
                await asyncio.wait(tasks, timeout=30)

            run(go(), timeout=120)
            t_total += time.monotonic() - t0
            sent_total += sum(len(a.acked) for a in accounts) - before
            print(
                f"\n[crash] round {rnd + 1}/{ROUNDS}: killed after {kill_after:.2f}s; "
                f"{sum(len(a.acked) for a in accounts) - before} acknowledged this round, "
                f"{sum(len(a.unacked) for a in accounts)} unacknowledged to resend"
            )
        srv = Server(data)
        run(_resend_and_verify(srv.port, accounts, group, epoch), timeout=300)
        srv.stop()
        print(
            f"[crash] seed {SEED}: {sent_total} messages acknowledged over {ROUNDS} rounds "
            f"({sent_total / max(t_total, 1e-9):.0f}/s offered {RATE}/s)"
        )
        db = sqlite3.connect(os.path.join(data, "privchat.db"))
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        dupes = db.execute(
            "SELECT sender_id, sender_device, local_message_id, count(*) FROM messages"
            " WHERE kind = 0 AND local_message_id != '0'"
            " GROUP BY sender_id, sender_device, local_message_id HAVING count(*) > 1"
        ).fetchall()
        db.close()
        assert dupes == []
    finally:
        if srv.proc.poll() is None:
            srv.kill()
        tmp.cleanup()


async def _epoch(port: int, acct: Account) -> str:
    c = await _login(port, acct)
    info = await c.rpc("system/info")
    await c.close()
    return str(info["store_epoch"])


async def _resend_and_verify(port: int, accounts: list[Account], group: int, epoch: str) -> None:
    assert await _epoch(port, accounts[0]) == epoch
    for acct in accounts:  # what was never acknowledged, once more; and every acknowledged one
        c = await _login(port, acct)
        for local, channel in list(acct.unacked.items()):
            await _send(c, acct, local, channel)
        for local in sorted(acct.acked)[:20]:
            await _send(c, acct, local, acct.acked[local][2])  # asserts the same id and pts
        for gid in acct.groups:
            info = await c.rpc("group/group/info", {"group_id": gid})
            assert info["owner_id"] == acct.user_id
        await c.close()
    logs: dict[int, list[Any]] = {}
    for acct in accounts:  # each channel pulled whole by a member, across the memory window
        reader = await _login(port, acct)
        for ch in (group, acct.direct):
            if ch in logs:
                continue
            msgs = await _pull_all(reader, ch)
            assert [m.message_seq for m in msgs] == list(range(1, len(msgs) + 1)), ch
            logs[ch] = msgs
        await reader.close()
    by_id = {m.server_message_id: m for msgs in logs.values() for m in msgs if not m.deleted}
    revoked = {
        json.loads(m.payload)["message_id"]
        for msgs in logs.values()
        for m in msgs
        if m.topic == "message.revoke"
    }
    for acct in accounts:
        for local, (mid, pts, ch) in acct.acked.items():
            found = [m for m in logs[ch] if m.server_message_id == mid and not m.topic]
            assert len(found) == 1, (acct.name, local, mid)
            assert found[0].message_seq == pts and found[0].local_message_id == local
        for mid in acct.revoked:
            assert mid in revoked, (acct.name, mid)
    assert by_id
    # accounts still log in with their passwords, and tokens still work
    c = await Client.connect("127.0.0.1", port)
    auth = await c.password_login(accounts[1].name, "password-crash", accounts[1].device_id)
    assert auth["user_id"] == accounts[1].user_id
    await c.close()

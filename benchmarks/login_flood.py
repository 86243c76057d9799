"""Password logins during an anonymous login/register flood (issue 10, finding 3).

    python -m benchmarks.login_flood                       # 60 attackers x 15 s, this tree
    python -m benchmarks.login_flood --src /tmp/before     # the same against another tree
    python -m benchmarks.login_flood --attackers 60 --addresses 1 --duration 15
    python -m benchmarks.login_flood --rsa --attackers 8 --addresses 1 --duration 10

Starts ``privchat-tcp serve`` (production argon2id cost: the defaults) pinned to CPU 0, and
from CPU 1 runs ``--attackers`` connections on ``--addresses`` loopback client addresses
(127.0.1.x) that hammer ``account/auth/login`` (wrong passwords, for alice and for names that
do not exist) and ``account/user/register``, 4 requests in flight per connection, every other
connection leaving at once without reading. Meanwhile legitimate password logins are probed
every ``--probe-interval`` seconds, each retrying what is refused for load (BUSY,
RATE_LIMITED) every 0.1 s until it succeeds or ``--probe-timeout`` passes:

- ``known``: alice from 127.0.0.1, where she registered (an address known to her account);
- ``stranger``: bob from a fresh address and a new device (known to nothing).

The figure is each probe's latency, first attempt to success, and its attempts. When the flood
stops, one probe of each kind measures how soon logins work again (the issue: 164 s after the
attackers left). Every loop is bounded by time. Output: a table on stderr, JSON on stdout (and
to ``--json FILE``).

``--rsa`` floods bogus encrypted LOGINs instead (finding 10: each costs the server an RSA
decryption unless refused before it): every attacker connection sends 16 at once and reads the
answers; it reports the LOGINs that reached the RSA step per second (answered CRYPTO), those
refused before it (RATE_LIMITED), and the server's CPU use (``/proc/<pid>/stat``).

``--src DIR`` runs the server from another source tree (e.g. ``git archive <rev>`` of the code
before the fix, extracted to DIR); the server is given only the options it knows.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.loadgen import cpu_seconds
from benchmarks.run import free_port, log, pinned
from privchat_tcp.client import Client
from privchat_tcp.errors import ServiceError, Status
from privchat_tcp.proto import privchat_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
HEADER = struct.Struct("!IBIBBB")
RPC, LOGOUT, LOGIN = 12, 2, 1
ENC_RSA = 0x08


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def rpc_frame(seq: int, route: str, body: dict[str, Any]) -> bytes:
    data = pb.RpcRequest(route=route, body=json.dumps(body).encode()).SerializeToString()
    return HEADER.pack(len(data), 1, seq, RPC, 0, 0) + data


def start_server(src: Path, port: int, data_dir: Path, rsa: bool) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(src), PYTHONDONTWRITEBYTECODE="1")
    argv = [sys.executable, "-m", "privchat_tcp", "serve", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--data-dir", str(data_dir), "--log-level", "ERROR"]
    argv += ["--jwt-secret", "flood-secret-" + "x" * 32]
    if rsa:  # the key is generated into the data dir at start
        argv += ["--encryption"]
    else:
        argv += ["--no-encryption"]
    proc = subprocess.Popen(
        pinned("0", argv), cwd=src, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not listen")


async def attacker(
    port: int, ip: str, tag: str, stop: asyncio.Event, seen: collections.Counter[str]
) -> None:
    n = 0
    while not stop.is_set():
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(ip, 0)), 5
            )
        except (OSError, TimeoutError):
            seen["connect failed"] += 1
            await asyncio.sleep(0.05)
            continue
        data = b""
        for seq in range(1, 5):
            n += 1
            device = str(uuid.uuid4())
            if n % 4 == 1:
                body = {"username": "alice", "password": f"guess{n}", "device_id": device}
                data += rpc_frame(seq, "account/auth/login", body)
            elif n % 4 == 3:
                body = {"username": f"nobody{tag}{n}", "password": "guess", "device_id": device}
                data += rpc_frame(seq, "account/auth/login", body)
            else:
                body = {"username": f"f{tag}x{n}", "password": "password-x", "device_id": device}
                data += rpc_frame(seq, "account/user/register", body)
        try:
            writer.write(data)
            if n % 8 == 4:  # leave at once: what was queued for this connection is not wanted
                seen["left at once"] += 1
                writer.transport.abort()
                continue
            for _ in range(4):  # a reply not within 2 s: leave and come again
                head = await asyncio.wait_for(reader.readexactly(12), 2)
                length, _, _, command, flags, status = HEADER.unpack(head)
                await asyncio.wait_for(reader.readexactly(length), 2)
                seen[f"{'RPC' if command == RPC else command} status {status}"] += 1
                if command == LOGOUT and flags & 3 == 2:
                    break
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            seen["dropped"] += 1
        finally:
            writer.transport.abort()


async def rsa_attacker(
    port: int, ip: str, stop: asyncio.Event, seen: collections.Counter[str]
) -> None:
    """Bogus encrypted LOGINs (random bytes the size of an RSA-2048 block and more), 16 per
    connection; a CRYPTO answer means the server ran the RSA step (and closes)."""
    bogus = os.urandom(256 + 64)
    frames = b"".join(
        HEADER.pack(len(bogus), 1, seq, LOGIN, ENC_RSA, 0) + bogus for seq in range(1, 17)
    )
    while not stop.is_set():
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(ip, 0)), 5
            )
        except (OSError, TimeoutError):
            seen["connect failed"] += 1
            await asyncio.sleep(0.05)
            continue
        try:
            writer.write(frames)
            for _ in range(16):
                head = await asyncio.wait_for(reader.readexactly(12), 2)
                length, _, _, command, flags, status = HEADER.unpack(head)
                await asyncio.wait_for(reader.readexactly(length), 2)
                seen[f"{'LOGIN' if command == LOGIN else command} status {status}"] += 1
                if status == Status.CRYPTO or (command == LOGOUT and flags & 3 == 2):
                    break  # CRYPTO closes; a LOGOUT push is the connection refused
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            seen["dropped"] += 1
        finally:
            writer.transport.abort()


async def rsa_flood(args: argparse.Namespace, port: int, pid: int) -> dict[str, Any]:
    stop = asyncio.Event()
    seen: collections.Counter[str] = collections.Counter()
    await asyncio.sleep(0.5)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    attackers = [
        asyncio.ensure_future(rsa_attacker(port, f"127.0.1.{1 + i % args.addresses}", stop, seen))
        for i in range(args.attackers)
    ]
    await asyncio.sleep(args.duration)
    stop.set()
    elapsed, cpu = time.monotonic() - t0, cpu_seconds(pid) - cpu0
    for task in attackers:
        task.cancel()
    await asyncio.gather(*attackers, return_exceptions=True)
    crypto = seen[f"LOGIN status {Status.CRYPTO}"]
    limited = seen[f"LOGIN status {Status.RATE_LIMITED}"]
    return {
        "scenario": "rsa",
        "attackers": args.attackers,
        "addresses": args.addresses,
        "duration_s": round(elapsed, 2),
        "rsa_steps_per_s": round(crypto / elapsed, 1),
        "refused_before_rsa_per_s": round(limited / elapsed, 1),
        "server_cpu": round(cpu / elapsed, 3),
        "attacker_replies": dict(seen),
    }


async def probe(
    port: int, ip: str, name: str, password: str, device: str | None, timeout: float
) -> dict[str, Any]:
    """One legitimate password login, retried every 0.1 s on BUSY / RATE_LIMITED, and on a
    new connection when the server ends this one (the login deadline) or it fails."""
    t0 = time.monotonic()
    attempts = 0
    refused: collections.Counter[str] = collections.Counter()
    device = device or str(uuid.uuid4())
    while time.monotonic() - t0 < timeout:
        client: Client | None = None
        try:
            client = await asyncio.wait_for(
                Client.connect("127.0.0.1", port, local_addr=(ip, 0)), 5
            )
            while client.connected and time.monotonic() - t0 < timeout:
                attempts += 1
                left = max(0.1, timeout - (time.monotonic() - t0))
                try:
                    await asyncio.wait_for(client.password_login(name, password, device), left)
                    return {"ok": True, "s": time.monotonic() - t0, "attempts": attempts}
                except ServiceError as exc:
                    if exc.status not in (Status.BUSY, Status.RATE_LIMITED):
                        raise
                    refused[f"status {exc.status}"] += 1
                await asyncio.sleep(0.1)
        except (OSError, TimeoutError, ConnectionError):
            refused["connection ended"] += 1
        finally:
            if client is not None:
                await client.close()
        await asyncio.sleep(0.1)
    return {"ok": False, "s": time.monotonic() - t0, "attempts": attempts, "refused": dict(refused)}


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r["s"] for r in rows if r["ok"]]
    return {
        "probes": len(rows),
        "ok": len(ok),
        "p50_s": round(percentile(ok, 0.5), 3),
        "p95_s": round(percentile(ok, 0.95), 3),
        "max_s": round(max(ok), 3) if ok else None,
        "max_attempts": max((r["attempts"] for r in rows), default=0),
    }


async def main_async(args: argparse.Namespace, port: int) -> dict[str, Any]:
    owner = await Client.connect("127.0.0.1", port)
    await owner.register("alice", "password-alice")
    await owner.close()
    other = await Client.connect("127.0.0.1", port, local_addr=("127.0.0.250", 0))
    await other.register("bob", "password-bob")
    await other.close()

    stop = asyncio.Event()
    seen: collections.Counter[str] = collections.Counter()
    attackers = [
        asyncio.ensure_future(
            attacker(port, f"127.0.1.{1 + i % args.addresses}", str(i), stop, seen)
        )
        for i in range(args.attackers)
    ]
    log(f"flood: {args.attackers} attackers on {args.addresses} addresses for {args.duration}s")
    t_start = time.monotonic()
    known: list[asyncio.Future[dict[str, Any]]] = []
    strangers: list[asyncio.Future[dict[str, Any]]] = []
    k = 0
    while time.monotonic() - t_start < args.duration:
        k += 1
        known.append(
            asyncio.ensure_future(
                probe(port, "127.0.0.1", "alice", "password-alice", None, args.probe_timeout)
            )
        )
        strangers.append(
            asyncio.ensure_future(
                probe(
                    port,
                    f"127.0.2.{k % 250 + 1}",
                    "bob",
                    "password-bob",
                    str(uuid.uuid4()),
                    args.probe_timeout,
                )
            )
        )
        await asyncio.sleep(args.probe_interval)
    stop.set()
    t_stop = time.monotonic()
    # the attackers leave now (each ends within its current connection)
    for task in attackers:
        task.cancel()
    await asyncio.gather(*attackers, return_exceptions=True)
    after = await asyncio.gather(
        probe(port, "127.0.0.1", "alice", "password-alice", None, args.after_timeout),
        probe(port, "127.0.3.1", "bob", "password-bob", str(uuid.uuid4()), args.after_timeout),
    )
    during_known = await asyncio.gather(*known)
    during_strangers = await asyncio.gather(*strangers)
    return {
        "attackers": args.attackers,
        "addresses": args.addresses,
        "duration_s": args.duration,
        "flood_s": round(t_stop - t_start, 2),
        "during_known": summary(during_known),
        "during_stranger": summary(during_strangers),
        "after_known": {k: round(v, 3) if isinstance(v, float) else v for k, v in after[0].items()},
        "after_stranger": {
            k: round(v, 3) if isinstance(v, float) else v for k, v in after[1].items()
        },
        "attacker_replies": dict(seen),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--src", default=str(ROOT), help="source tree the server runs from")
    p.add_argument("--attackers", type=int, default=60)
    p.add_argument("--addresses", type=int, default=60, help="attacker client addresses")
    p.add_argument("--duration", type=float, default=15.0, help="seconds of flood")
    p.add_argument("--probe-interval", type=float, default=1.0)
    p.add_argument("--probe-timeout", type=float, default=60.0)
    p.add_argument("--after-timeout", type=float, default=240.0)
    p.add_argument("--json", default="", help="also write the result here")
    p.add_argument("--rsa", action="store_true", help="flood bogus encrypted LOGINs instead")
    args = p.parse_args(argv)
    args.addresses = max(1, min(args.addresses, 250))
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="privchat-flood-") as tmp:
        proc = start_server(Path(args.src), port, Path(tmp), args.rsa)
        try:
            import uvloop

            if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
                os.sched_setaffinity(0, {1})
            if args.rsa:
                result = uvloop.run(rsa_flood(args, port, proc.pid))
            else:
                result = uvloop.run(main_async(args, port))
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    result["src"] = args.src
    for key in ("during_known", "during_stranger", "after_known", "after_stranger"):
        if key in result:
            log(f"{key:16} {result[key]}")
    for key in ("rsa_steps_per_s", "refused_before_rsa_per_s", "server_cpu"):
        if key in result:
            log(f"{key:25} {result[key]}")
    log(f"attacker replies {result['attacker_replies']}")
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

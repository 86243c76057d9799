"""Memory and output bounds under abuse (issue 10, findings 2 and 12), against a server process.

Three scenarios, each on a fresh ``python -m privchat_tcp serve``:

- ``pipelined``: one user stores ``--messages`` messages of ``--size`` bytes in a direct
  channel, then a second connection of that user sends ``--pipelined`` MP requests (limit
  1000, from pts 0) in one write and reads nothing for ``--hold`` seconds. Reported: the
  server's peak RSS growth (sampled every 20 ms) over that time and until the client has read
  every reply, and how the replies arrived (replies, records per reply, has_more).
- ``bystander``: the same stored messages; a puller reads the whole channel ``--pulls`` times
  with ``sync/get_difference`` (or MP, ``--pull mp``), limit 100, paging on ``has_more``,
  back to back, while a bystander on another connection PINGs every 10 ms. Reported: the
  bystander's PING round trips (median, p99, worst) while the pulls run.
- ``stored``: RSS growth per stored message (``--small`` messages of 1,000 bytes, then
  ``--messages`` of ``--size``): what one message costs the in-memory store.

``--src DIR`` runs the server from another checkout (e.g. the code before a change: ``git
worktree add`` or ``git archive`` it, build its extensions, pass the directory); the client side
is this tree's. Settings the server does not know (older checkouts) are left out::

    python -m benchmarks.bounds                     # all three against this tree
    python -m benchmarks.bounds pipelined --src /tmp/privchat-before
    python -m benchmarks.bounds bystander --pull mp

No timing targets: the figures go into the issue note and ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from privchat_tcp.client import Client
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.wire.commands import Cmd

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SECRET = "bounds-secret-" + "b" * 32
HEADER = struct.Struct("!IBIBBB")

#: limits that would throttle the setup (storing 100 MB quickly); only those the server knows
SETUP_LIMITS_OFF = {
    "--rate-per-connection": "0",
    "--rate-per-user": "0",
    "--max-connections": "0",
    "--max-devices-per-user": "0",
    "--rate-bytes-per-user": "0",
    "--max-stored-bytes-per-user": "0",
    "--slow-consumer-timeout": "600",
    "--push-hard-limit": str(1 << 30),
}


def log(msg: str) -> None:
    print(f"[bounds {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class ServerProc:
    """``privchat-tcp serve`` from ``src`` on a free port, memory only, no encryption."""

    def __init__(self, src: Path, *extra: str) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="privchat-bounds-")
        env = dict(os.environ, PYTHONPATH=str(src), PYTHONDONTWRITEBYTECODE="1")
        base = [sys.executable, "-m", "privchat_tcp", "serve"]
        helptext = subprocess.run(
            [*base, "--help"], cwd=src, env=env, capture_output=True, text=True, timeout=60
        ).stdout
        argv = [
            *base,
            "--port",
            "0",
            "--data-dir",
            self.tmp.name,
            "--jwt-secret",
            SECRET,
            "--argon2-time-cost",
            "1",
            "--argon2-memory-kib",
            "1024",
            "--no-encryption",
            "--log-level",
            "WARNING",
        ]
        for opt, value in SETUP_LIMITS_OFF.items():
            if opt in helptext:
                argv += [opt, value]
        argv += list(extra)
        self.proc = subprocess.Popen(
            argv, cwd=src, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if "listening on" not in line:
            raise RuntimeError(f"server did not start: {line!r}")
        self.port = int(line.strip().rsplit(":", 1)[1])
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.tmp.cleanup()


class Sampler:
    """The server's peak RSS, sampled every 20 ms in a thread."""

    def __init__(self, srv: ServerProc) -> None:
        self.srv = srv
        self.base = srv.rss_kib()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.srv.rss_kib())
            except (OSError, RuntimeError):
                return
            time.sleep(0.02)

    def stop(self) -> int:
        """The peak growth over the base, KiB."""
        self._stop.set()
        self._thread.join(5)
        return self.peak - self.base


# ---- raw frames over a blocking socket -----------------------------------------------------------


def frame(seq: int, command: int, body: bytes) -> bytes:
    return HEADER.pack(len(body), 1, seq, command, 0, 0) + body


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], min(n - got, 1 << 20))
        if not k:
            raise ConnectionError("closed")
        got += k
    return bytes(buf)


def recv_frame(sock: socket.socket) -> tuple[int, int, int, int, bytes]:
    length, _, seq, command, flags, status = HEADER.unpack(recv_exact(sock, 12))
    return seq, command, flags, status, recv_exact(sock, length)


def raw_session(port: int, token: str, device_id: str, rcvbuf: int = 0) -> socket.socket:
    """A logged-in (not READY) plaintext session on a blocking socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((HOST, port))
    sock.settimeout(30)
    req = pb.AuthorizationRequest(
        auth_type="JWT",
        auth_token=token,
        device_info=pb.DeviceInfo(device_id=device_id, device_type="linux", device_name="bench"),
        client_info=pb.ClientInfo(client_type="privchat_tcp", version="0.1.0"),
        protocol_version="1",
    )
    sock.sendall(frame(1, Cmd.LOGIN, req.SerializeToString()))
    _, command, _, status, _ = recv_frame(sock)
    if command != Cmd.LOGIN or status:
        raise RuntimeError(f"LOGIN failed: status {status}")
    return sock


# ---- setup ---------------------------------------------------------------------------------------


async def store_messages(port: int, n: int, size: int) -> tuple[str, str, int, str, str]:
    """Register a sender and a peer; the sender stores ``n`` messages of ``size`` bytes in
    their direct channel. Returns (sender token, sender device, channel id, peer token, peer
    device); both clients are closed."""
    a_dev, b_dev = str(uuid.uuid4()), str(uuid.uuid4())
    a = await Client.connect(HOST, port, track=False)
    await a.register("bounds-a", "password-a", a_dev)
    await a.login()
    b = await Client.connect(HOST, port, track=False)
    reg = await b.register("bounds-b", "password-b", b_dev)
    b_token, b_id = b.token, int(reg["user_id"])
    await b.close()
    payload = b"x" * size
    channel = 0
    sent = 0
    while sent < n:
        k = min(8, n - sent)
        replies = await asyncio.gather(*(a.send(to_user=b_id, payload=payload) for _ in range(k)))
        channel = replies[0].channel_id
        sent += k
    token = a.token
    await a.close()
    return token, a_dev, channel, b_token, b_dev


def mp_body(channel: int, last_pts: int, limit: int) -> bytes:
    return pb.GetDifferenceRequest(
        channel_id=channel, last_pts=last_pts, limit=limit
    ).SerializeToString()


def rpc_body(route: str, args: dict[str, Any]) -> bytes:
    return pb.RpcRequest(route=route, body=json.dumps(args).encode()).SerializeToString()


# ---- scenarios -----------------------------------------------------------------------------------


def pipelined(args: argparse.Namespace) -> dict[str, Any]:
    srv = ServerProc(args.src)
    try:
        token, dev, channel, _, _ = asyncio.run(store_messages(srv.port, args.messages, args.size))
        time.sleep(0.5)
        sock = raw_session(srv.port, token, dev, rcvbuf=4096)
        sampler = Sampler(srv)
        body = mp_body(channel, 0, 1000)
        sock.sendall(b"".join(frame(10 + i, Cmd.MP, body) for i in range(args.pipelined)))
        time.sleep(args.hold)
        growth_kib = sampler.peak - sampler.base
        t0 = time.monotonic()
        replies: list[tuple[int, int, bool]] = []  # (status, records, has_more)
        nbytes = 0
        while len(replies) < args.pipelined:
            seq, command, flags, status, data = recv_frame(sock)
            nbytes += 12 + len(data)
            if command != Cmd.MP:
                continue
            if status:
                replies.append((status, 0, False))
                continue
            diff = pb.GetDifferenceResponse.FromString(data)
            replies.append((0, len(diff.messages), diff.has_more))
        read_s = time.monotonic() - t0
        total_kib = sampler.stop()
        sock.close()
        result = {
            "scenario": "pipelined",
            "messages": args.messages,
            "size": args.size,
            "pipelined": args.pipelined,
            "rss_peak_growth_mib_while_not_reading": round(growth_kib / 1024, 1),
            "rss_peak_growth_mib_until_all_read": round(total_kib / 1024, 1),
            "replies": len(replies),
            "records_per_reply": sorted({r[1] for r in replies}),
            "has_more": sorted({r[2] for r in replies}),
            "statuses": sorted({r[0] for r in replies}),
            "bytes_read": nbytes,
            "read_seconds": round(read_s, 2),
        }
        return result
    finally:
        srv.stop()


def bystander(args: argparse.Namespace) -> dict[str, Any]:
    srv = ServerProc(args.src)
    try:
        token, dev, channel, b_token, b_dev = asyncio.run(
            store_messages(srv.port, args.messages, args.size)
        )
        puller = raw_session(srv.port, token, dev)
        pinger = raw_session(srv.port, b_token, b_dev)
        rtts: list[float] = []
        stop = threading.Event()
        errors: list[str] = []

        def ping_loop() -> None:
            seq = 0
            try:
                while not stop.is_set():
                    seq += 1
                    t0 = time.perf_counter()
                    pinger.sendall(frame(seq, Cmd.PING, b""))
                    while True:
                        rseq, command, _, _, _ = recv_frame(pinger)
                        if command == Cmd.PING and rseq == seq:
                            break
                    rtts.append(time.perf_counter() - t0)
                    time.sleep(0.01)
            except OSError as exc:
                errors.append(repr(exc))

        thread = threading.Thread(target=ping_loop, daemon=True)
        thread.start()
        time.sleep(0.5)
        idle = list(rtts)
        rtts.clear()
        t0 = time.monotonic()
        records = 0
        nbytes = 0
        last = 0
        requests = 0
        target = args.pulls * args.messages
        while records < target:
            i = requests
            requests += 1
            if args.pull == "mp":
                puller.sendall(frame(100 + i, Cmd.MP, mp_body(channel, last, 100)))
            else:
                args_ = {"channel_id": channel, "channel_type": 1, "last_pts": last, "limit": 100}
                puller.sendall(frame(100 + i, Cmd.RPC, rpc_body("sync/get_difference", args_)))
            _, command, _, status, data = recv_frame(puller)
            nbytes += len(data)
            if status:
                raise RuntimeError(f"pull failed with status {status}")
            if args.pull == "mp":
                diff = pb.GetDifferenceResponse.FromString(data)
                got = [m.message_seq for m in diff.messages]
                more = diff.has_more
            else:
                reply = json.loads(pb.RpcResponse.FromString(data).data)
                got = [c["pts"] for c in reply["commits"]]
                more = reply["has_more"]
            records += len(got)
            last = got[-1] if more and got else 0  # page on, then start over
        pull_s = time.monotonic() - t0
        during = list(rtts)
        stop.set()
        thread.join(5)
        puller.close()
        pinger.close()
        if errors:
            raise RuntimeError(errors[0])
        during.sort()

        def ms(x: float) -> float:
            return round(x * 1000, 1)

        return {
            "scenario": "bystander",
            "pull": args.pull,
            "messages": args.messages,
            "size": args.size,
            "pulls": args.pulls,
            "requests": requests,
            "records_pulled": records,
            "mib_pulled": round(nbytes / (1 << 20), 1),
            "pull_seconds": round(pull_s, 2),
            "idle_ping_ms_median": ms(statistics.median(idle)) if idle else None,
            "pings_during": len(during),
            "ping_ms_median": ms(statistics.median(during)) if during else None,
            "ping_ms_p99": ms(during[int(len(during) * 0.99)]) if during else None,
            "ping_ms_max": ms(during[-1]) if during else None,
        }
    finally:
        srv.stop()


def stored(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"scenario": "stored"}
    for label, n, size in (("small", args.small, 1000), ("large", args.messages, args.size)):
        srv = ServerProc(args.src)
        try:
            # warm the server up (imports, first allocations) with one tiny exchange
            asyncio.run(store_messages(srv.port, 1, 10))
            time.sleep(0.3)
            before = srv.rss_kib()
            asyncio.run(_more(srv.port, n, size))
            time.sleep(0.3)
            after = srv.rss_kib()
            per = (after - before) * 1024 / n
            out[label] = {
                "messages": n,
                "payload_bytes": size,
                "rss_growth_mib": round((after - before) / 1024, 1),
                "bytes_per_message": round(per),
                "overhead_per_message": round(per - size),
            }
        finally:
            srv.stop()
    return out


async def _more(port: int, n: int, size: int) -> None:
    a = await Client.connect(HOST, port, track=False)
    await a.register("stored-a", "password-a", str(uuid.uuid4()))
    await a.login()
    b = await Client.connect(HOST, port, track=False)
    b_id = int((await b.register("stored-b", "password-b", str(uuid.uuid4())))["user_id"])
    await b.close()
    payload = b"y" * size
    sent = 0
    while sent < n:
        k = min(64, n - sent)
        await asyncio.gather(*(a.send(to_user=b_id, payload=payload) for _ in range(k)))
        sent += k
    await a.close()


SCENARIOS = {"pipelined": pipelined, "bystander": bystander, "stored": stored}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", nargs="*", help=f"of {', '.join(SCENARIOS)} (default: all)")
    p.add_argument("--src", type=Path, default=ROOT, help="checkout to run the server from")
    p.add_argument("--messages", type=int, default=100, help="large messages stored")
    p.add_argument("--size", type=int, default=1_000_000, help="payload bytes of each")
    p.add_argument("--pipelined", type=int, default=10, help="MP requests in one write")
    p.add_argument("--hold", type=float, default=3.0, help="seconds the attacker reads nothing")
    p.add_argument("--pulls", type=int, default=5, help="times the puller reads the channel")
    p.add_argument("--pull", choices=("rpc", "mp"), default="rpc")
    p.add_argument("--small", type=int, default=20_000, help="small messages stored")
    p.add_argument("--json", type=Path, help="append the result rows to this file")
    args = p.parse_args(argv)
    args.src = args.src.resolve()
    unknown = set(args.scenario) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario {sorted(unknown)}")
    for name in args.scenario or list(SCENARIOS):
        log(f"{name} (server from {args.src})")
        result = SCENARIOS[name](args)
        result["src"] = str(args.src)
        print(json.dumps(result), flush=True)
        if args.json:
            with args.json.open("a") as fh:
                fh.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The admin HTTP listener and the drain (SIGTERM) over real sockets."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import pytest
from conftest import ServerThread, run, user

from privchat_tcp.app import Server
from privchat_tcp.client import Client
from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.store import MemoryStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body.decode()


def test_admin_off_by_default(server: ServerThread) -> None:
    assert server.settings.admin_port == 0
    assert server.server is not None and server.server.admin is None


def test_healthz_readyz_metrics(make_server: Callable[..., ServerThread]) -> None:
    admin = free_port()
    srv = make_server(admin_port=admin)
    assert http_get(admin, "/healthz") == (200, "ok\n")
    assert http_get(admin, "/readyz")[0] == 200
    assert http_get(admin, "/nope")[0] == 404

    async def main() -> None:
        a = await user(srv.port, "metric-a")
        b = await user(srv.port, "metric-b")
        await a.send(to_user=b.user_id, text="hi")
        await a.ping()
        await a.close()
        await b.close()

    run(main())
    status, text = http_get(admin, "/metrics")
    assert status == 200
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values['privchat_frames_in_total{command="PING"}'] >= 1
    assert values['privchat_frames_in_total{command="MS"}'] == 1
    assert values['privchat_frames_in_total{command="LOGIN"}'] == 2
    assert values['privchat_frames_out_total{command="LOGIN"}'] == 2
    assert values['privchat_frames_out_total{command="MPS"}'] >= 1
    assert values["privchat_connections_accepted_total"] >= 2
    assert values['privchat_store_items{kind="users"}'] == 2
    assert values['privchat_store_items{kind="messages"}'] == 1
    assert values["privchat_ready"] == 1
    assert (
        values['privchat_request_batch_seconds_bucket{le="+Inf"}']
        == values["privchat_request_batch_seconds_count"]
        > 0
    )
    assert "privchat_connections" in values and "privchat_sessions" in values
    for line in text.splitlines():  # well-formed exposition lines
        assert line.startswith("# ") or re.match(r"^[a-z_]+(\{[^}]*\})? [0-9.e+-]+$", line), line


def test_errors_counted_by_status(make_server: Callable[..., ServerThread]) -> None:
    admin = free_port()
    srv = make_server(admin_port=admin)

    async def main() -> None:
        c = await Client.connect("127.0.0.1", srv.port)
        status, _, _ = await c.request(4, b"")  # MS before LOGIN: UNAUTHENTICATED
        assert status == Status.UNAUTHENTICATED
        await c.close()

    run(main())
    _, text = http_get(admin, "/metrics")
    assert 'privchat_errors_total{status="UNAUTHENTICATED"} 1' in text


def test_drain_in_process(make_server: Callable[..., ServerThread]) -> None:
    admin = free_port()
    srv = make_server(admin_port=admin, drain_grace=0.5, drain_window=0.5)

    async def main() -> None:
        clients = [await user(srv.port, f"drain{i}") for i in range(4)]
        assert srv.server is not None
        fut = asyncio.run_coroutine_threadsafe(srv.server.drain(), srv.loop)
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        assert (await loop.run_in_executor(None, http_get, admin, "/readyz"))[0] == 503
        # the listener is still open during the grace period, and PING (the balancer's health
        # check) answers GOING_AWAY, so the balancer takes the server out before it closes
        late = await Client.connect("127.0.0.1", srv.port)
        with pytest.raises(ServiceError) as err:
            await late.ping()
        assert err.value.status == Status.GOING_AWAY
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(bytes.fromhex("000000000100000001030000"))  # the HAProxy check's bytes
        head = await asyncio.wait_for(reader.readexactly(12), 5)
        assert head[4:11] != bytes.fromhex("0100000001030100")  # the check's expect fails
        assert head[11] == Status.GOING_AWAY
        writer.close()
        for c in (*clients, late):
            await c.wait_closed(5)
            assert c.closed_by_server is not None
            assert c.closed_by_server.status == Status.GOING_AWAY
            assert c.closed_by_server.message.code == ErrorCode.SERVICE_UNAVAILABLE
        await loop.run_in_executor(None, fut.result, 10)
        with pytest.raises(OSError):
            await Client.connect("127.0.0.1", srv.port)

    run(main())


class DurableStore(MemoryStore):
    """The memory store, reporting a persistence lag and recording when the server flushes
    and closes it: what the server owes a store that persists (the memory store itself has
    nothing to write)."""

    def __init__(self, server: list[Server]) -> None:
        super().__init__()
        self.server = server
        self.calls: list[tuple[str, int]] = []

    def persistence_lag(self) -> float | None:
        return 0.25

    def flush(self) -> None:
        self.calls.append(("flush", len(self.server[0].connections)))

    def close(self) -> None:
        self.calls.append(("close", len(self.server[0].connections)))


def test_drain_flushes_the_store_after_the_last_session(
    make_server: Callable[..., ServerThread],
) -> None:
    admin = free_port()
    holder: list[Server] = []
    store = DurableStore(holder)
    srv = make_server(store=store, admin_port=admin, drain_grace=0.1, drain_window=0.3)
    assert srv.server is not None
    holder.append(srv.server)
    metrics = http_get(admin, "/metrics")[1]
    assert "privchat_persistence_lag_seconds 0.25" in metrics

    async def main() -> None:
        clients = [await user(srv.port, f"flush{i}") for i in range(3)]
        assert srv.server is not None
        fut = asyncio.run_coroutine_threadsafe(srv.server.drain(), srv.loop)
        for c in clients:
            await c.wait_closed(5)
        await asyncio.get_running_loop().run_in_executor(None, fut.result, 10)

    run(main())
    # flushed once, then closed once, with no connection left
    assert store.calls == [("flush", 0), ("close", 0)]
    asyncio.run_coroutine_threadsafe(srv.server.stop(), srv.loop).result(10)  # again: no-op
    assert store.calls == [("flush", 0), ("close", 0)]


def test_memory_store_has_no_persistence_lag(make_server: Callable[..., ServerThread]) -> None:
    admin = free_port()
    make_server(admin_port=admin, memory_only=True)
    assert "privchat_persistence_lag_seconds" not in http_get(admin, "/metrics")[1]


def test_the_embedded_store_reports_its_commits(make_server: Callable[..., ServerThread]) -> None:
    admin = free_port()
    srv = make_server(admin_port=admin)

    async def main() -> None:
        alice = await user(srv.port, "alice")  # a registration: a committed write
        await alice.close()

    run(main())
    text = http_get(admin, "/metrics")[1]
    assert "privchat_persistence_lag_seconds 0.0" in text
    commits = [ln for ln in text.splitlines() if ln.startswith("privchat_store_commits_total ")]
    assert commits and float(commits[0].split()[1]) >= 1, commits


def test_sigterm_drains_subprocess() -> None:
    port, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(
            os.environ,
            PRIVCHAT_JWT_SECRET="test-secret-" + "x" * 32,
            PRIVCHAT_ARGON2_TIME_COST="1",
            PRIVCHAT_ARGON2_MEMORY_KIB="1024",
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "privchat_tcp",
                "serve",
                "--port",
                str(port),
                "--admin-port",
                str(admin),
                "--data-dir",
                tmp,
                "--drain-grace",
                "1",
                "--drain-window",
                "1",
                "--shutdown-timeout",
                "6",
                "--log-level",
                "WARNING",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode()
            assert "listening" in line, line
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert http_get(admin, "/readyz")[0] == 200
                    break
                except OSError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)

            async def main() -> float:
                clients = [await user(port, f"sig{i}") for i in range(5)]
                start = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                loop = asyncio.get_running_loop()
                status = 200
                while status == 200 and time.monotonic() - start < 1.0:
                    status = (await loop.run_in_executor(None, http_get, admin, "/readyz"))[0]
                    await asyncio.sleep(0.05)
                assert status == 503
                for c in clients:
                    await c.wait_closed(6)
                    assert c.closed_by_server is not None
                    assert c.closed_by_server.status == Status.GOING_AWAY
                return time.monotonic() - start

            elapsed = run(main())
            assert elapsed >= 1.0  # the grace period came first
            proc.wait(6)
            assert proc.returncode == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()

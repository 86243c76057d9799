"""The gaps found behind a real HAProxy (issue 13), over TCP.

- During a drain PING answers GOING_AWAY, so HAProxy's binary PING check (docs/operations.md's
  configuration) marks the server DOWN while its listener is still open, before any
  connection is refused; an encrypted session's PING and a PING with a body answer the same.
- Each login is logged at INFO with the user, the device and the real client address (from the
  PROXY header), and each session's end with its reason; no token or password is logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable

import pytest
from conftest import PUBLIC_PEM, ServerThread, run, user
from test_limits import Raw, frame
from test_proxy import _free_port, _haproxy

from privchat_tcp.client import Client
from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.wire.commands import Cmd
from privchat_tcp.wire.proxy import encode_v2


def _haproxy_state(sock_path: str) -> str:
    """The status of backend be / server s1 from HAProxy's stats socket ("UP", "DOWN" ...)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(sock_path)
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    head = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(head, line.split(","), strict=False))
        if row.get("pxname") == "be" and row.get("svname") == "s1":
            return row["status"]
    return ""


def test_haproxy_takes_a_draining_server_out_before_its_listener_closes(
    make_server: Callable[..., ServerThread],
) -> None:
    haproxy = _haproxy()
    if haproxy is None:
        pytest.skip("haproxy is not installed and `apt-get install haproxy` failed")
    srv = make_server(proxy_protocol=True, drain_grace=4.0, drain_window=0.2)
    front = _free_port()
    tmp = tempfile.mkdtemp(prefix="privchat-haproxy-")
    stats = os.path.join(tmp, "stats.sock")
    # the check of docs/operations.md: a PING, and the pong's header (version 1, seq 1, PING,
    # flow 1, status OK) expected
    config = f"""
global
    maxconn 100
    stats socket {stats} level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    timeout check 1s
frontend fe
    bind 127.0.0.1:{front}
    default_backend be
backend be
    option tcp-check
    tcp-check send-binary 000000000100000001030000
    tcp-check expect binary 0100000001030100
    server s1 127.0.0.1:{srv.port} send-proxy-v2 check-send-proxy check inter 200ms rise 1 fall 2
"""
    cfg = os.path.join(tmp, "haproxy.cfg")
    with open(cfg, "w") as fh:
        fh.write(config)
    proc = subprocess.Popen(
        [haproxy, "-f", cfg, "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 15
        while True:  # HAProxy is up and its check passed
            try:
                if _haproxy_state(stats) == "UP":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "HAProxy never marked the server UP"
            time.sleep(0.1)
        assert srv.server is not None
        started = time.monotonic()
        fut = asyncio.run_coroutine_threadsafe(srv.server.drain(), srv.loop)
        went_down = None
        while time.monotonic() - started < 3.5:
            if _haproxy_state(stats).startswith("DOWN"):
                went_down = time.monotonic() - started
                break
            time.sleep(0.05)
        assert went_down is not None, "HAProxy kept the draining server UP for the whole grace"
        # the listener is still open: HAProxy took the server out before any refusal
        with socket.create_connection(("127.0.0.1", srv.port), timeout=2):
            pass
        assert not fut.done()
        fut.result(15)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)


def test_every_kind_of_ping_answers_going_away_during_a_drain(
    make_server: Callable[..., ServerThread],
) -> None:
    srv = make_server(drain_grace=2.0, drain_window=0.2)

    async def main() -> None:
        sealed = await user(srv.port, "sealed-pinger", encrypted=True)
        plain = await user(srv.port, "plain-pinger")
        assert srv.server is not None
        fut = asyncio.run_coroutine_threadsafe(srv.server.drain(), srv.loop)
        await asyncio.sleep(0.2)
        for c in (sealed, plain):  # logged-in sessions, sealed and plaintext
            with pytest.raises(ServiceError) as err:
                await c.ping()
            assert err.value.status == Status.GOING_AWAY
            assert err.value.code == ErrorCode.SERVICE_UNAVAILABLE
        raw = await Raw.open(srv.port)
        # several PINGs in one read (the fast path), one with a body, before login
        raw.writer.write(frame(1, Cmd.PING) + frame(2, Cmd.PING) + frame(3, Cmd.PING, b"\x08\x01"))
        for seq in (1, 2, 3):
            f = await raw.read_frame()
            assert f is not None and f[0] == seq and f[3] == Status.GOING_AWAY, f
        raw.close()
        await asyncio.get_running_loop().run_in_executor(None, fut.result, 10)

    run(main())


def test_logins_and_session_ends_are_logged_with_the_real_address_and_no_secret(
    make_server: Callable[..., ServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    srv = make_server(proxy_protocol=True)
    caplog.set_level(logging.INFO, logger="privchat_tcp")

    async def through_balancer(src: str, sport: int) -> Client:
        c = await Client.connect("127.0.0.1", srv.port)
        assert c._proto is not None and c._proto.transport is not None
        dst = "2001:db8::1" if ":" in src else "198.51.100.1"
        c._proto.transport.write(encode_v2(src, sport, dst, 9001))
        return c

    async def main() -> tuple[list[str], list[str]]:
        a = await through_balancer("203.0.113.7", 5555)
        auth = await a.register("carol", "password-carol-secret")
        await a.login(server_key=PUBLIC_PEM)
        # the same device again, from elsewhere: the first session ends REPLACED
        b = await through_balancer("2001:db8::9", 6666)
        b.device_id = a.device_id
        await b.login(auth["token"])
        await a.wait_closed(5)
        await b.close()
        deadline = time.monotonic() + 5
        while caplog.text.count("session end") < 2:
            assert time.monotonic() < deadline, caplog.text
            await asyncio.sleep(0.02)
        return [str(auth["token"]), str(auth.get("refresh_token", ""))], [a.device_id]

    secrets, devices = run(main())
    logins = [r.getMessage() for r in caplog.records if r.getMessage().startswith("login:")]
    ends = [r.getMessage() for r in caplog.records if r.getMessage().startswith("session end")]
    assert len(logins) == 2 and len(ends) == 2, (logins, ends)
    assert "203.0.113.7:5555" in logins[0] and devices[0] in logins[0] and "encrypted" in logins[0]
    assert "2001:db8::9" in logins[1] and devices[0] in logins[1]
    by_addr = {("203" if "203.0.113.7" in e else "v6"): e for e in ends}
    assert by_addr["203"].endswith(": replaced"), ends
    assert by_addr["v6"].endswith(": connection lost") or by_addr["v6"].endswith(": closed"), ends
    for r in caplog.records:
        text = r.getMessage()
        for secret in (*secrets, "password-carol-secret"):
            if secret:
                assert secret not in text, text


def test_a_session_closed_for_a_broken_contract_says_why_in_the_log(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="privchat_tcp")

    async def main() -> tuple[int, int]:
        sealed = await user(server.port, "dave", encrypted=True)
        plain = await user(server.port, "erin")
        for c, data in (
            (sealed, frame(77, Cmd.PING)),  # plaintext on an encrypted session: CRYPTO
            (plain, b"\x00\x00\x00\x00\x02" + b"\x00" * 7),  # version 2: a broken header
        ):
            assert c._proto is not None and c._proto.transport is not None
            c._proto.transport.write(data)
            await c.wait_closed(5)
        deadline = time.monotonic() + 5
        while caplog.text.count("session end") < 2:
            assert time.monotonic() < deadline, caplog.text
            await asyncio.sleep(0.02)
        return sealed.user_id, plain.user_id

    dave, erin = run(main())
    ends = {
        int(m.split()[3]): m
        for r in caplog.records
        if (m := r.getMessage()).startswith("session end")
    }
    assert ends[dave].endswith(": protocol violation (crypto)"), ends
    assert ends[erin].endswith(": broken frame header"), ends

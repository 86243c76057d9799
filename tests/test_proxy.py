"""PROXY protocol v1/v2: the sans-IO parser, over TCP, and behind a real HAProxy if present."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable

import pytest
from conftest import ServerThread, run
from test_limits import Raw, frame, logout_reason

from privchat_tcp.client import Client
from privchat_tcp.errors import ErrorCode, Status
from privchat_tcp.wire.commands import Cmd
from privchat_tcp.wire.proxy import V1_MAX, ProxyError, ProxyParser, encode_v1, encode_v2

PING = frame(7, Cmd.PING)


# ---- the parser ------------------------------------------------------------------------------
def test_v1_tcp4_and_tcp6() -> None:
    r = ProxyParser().feed(encode_v1("192.0.2.7", 5555, "198.51.100.1", 9001) + PING)
    assert r is not None and r.version == 1 and r.source == ("192.0.2.7", 5555)
    assert r.rest == PING
    r = ProxyParser().feed(b"PROXY TCP6 2001:db8::1 2001:db8::2 40000 9001\r\n")
    assert r is not None and r.source == ("2001:db8::1", 40000) and r.rest == b""
    r = ProxyParser().feed(b"PROXY UNKNOWN\r\n" + PING)
    assert r is not None and r.source is None and r.rest == PING


def test_v2_tcp4_tcp6_local() -> None:
    r = ProxyParser().feed(encode_v2("203.0.113.9", 1234, "10.0.0.1", 9001) + PING)
    assert r is not None and r.version == 2 and r.source == ("203.0.113.9", 1234)
    assert r.rest == PING
    r = ProxyParser().feed(encode_v2("2001:db8::5", 4321, "2001:db8::1", 9001, b"\x04\x00\x01x"))
    assert r is not None and r.source == ("2001:db8::5", 4321)
    r = ProxyParser().feed(encode_v2() + PING)
    assert r is not None and r.source is None and r.rest == PING


@pytest.mark.parametrize(
    "header",
    [
        encode_v1("192.0.2.7", 5555, "198.51.100.1", 9001),
        encode_v2("203.0.113.9", 1234, "10.0.0.1", 9001, b"\x01\x00\x02h2"),
    ],
)
def test_split_at_every_byte(header: bytes) -> None:
    data = header + PING
    for cut in range(1, len(data)):
        p = ProxyParser()
        first = p.feed(data[:cut])
        if cut < len(header):
            assert first is None
            result = p.feed(data[cut:])
        else:
            result = first
        assert result is not None and result.source is not None
        assert result.rest + (data[cut:] if cut >= len(header) else b"") == PING
    p = ProxyParser()
    results = [p.feed(data[i : i + 1]) for i in range(len(header))]
    assert all(r is None for r in results[:-1]) and results[-1] is not None


@pytest.mark.parametrize(
    "data",
    [
        PING,  # no header at all
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # LF only
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",  # a field missing
        b"PROXY TCP4 ::1 ::1 1 2\r\n",  # family mismatch
        b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n",  # port out of range
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",  # not canonical
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY " + b"x" * (V1_MAX + 10),  # too long, no CRLF
        b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + bytes(12),  # version 3
        b"\r\n\r\n\x00\r\nQUIT\n\x22\x11\x00\x0c" + bytes(12),  # command 2
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04" + bytes(4),  # address block too short
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff",  # oversized
        b"\r\n\r\n\x00\r\nQUIX",  # bad signature
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(ProxyError):
        ProxyParser().feed(data)


def test_v1_limit_is_107_bytes() -> None:
    addr = b"ffff:" * 7 + b"ffff"
    longest = b"PROXY UNKNOWN " + addr + b" " + addr + b" 65535 65535\r\n"
    assert len(longest) == V1_MAX
    r = ProxyParser().feed(longest + PING)
    assert r is not None and r.source is None and r.rest == PING
    tcp6 = b"PROXY TCP6 " + addr + b" " + addr + b" 65535 65535\r\n"
    r = ProxyParser().feed(tcp6)
    assert r is not None and r.source == ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)
    with pytest.raises(ProxyError):
        ProxyParser().feed(b"PROXY UNKNOWN " + addr + b" " + addr + b" 65535 655350\r\n")


# ---- over TCP --------------------------------------------------------------------------------
def _peers(srv: ServerThread) -> list[str]:
    assert srv.server is not None
    return srv.call(lambda: sorted(c.peer for c in srv.server.connections))  # type: ignore


async def _pong(raw: Raw, seq: int = 7) -> None:
    f = await raw.read_frame()
    assert f is not None and f[0] == seq and f[1] == Cmd.PING and f[3] == 0, f


def test_tcp_v1_and_v2_carry_the_client_address(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(proxy_protocol=True)

    async def main() -> None:
        a = await Raw.open(srv.port)
        a.writer.write(encode_v1("192.0.2.7", 5555, "198.51.100.1", 9001) + PING)
        await _pong(a)
        b = await Raw.open(srv.port)
        header = encode_v2("2001:db8::5", 4321, "2001:db8::1", 9001)
        for i in range(0, len(header), 5):  # split over several reads
            b.writer.write(header[i : i + 5])
            await b.writer.drain()
            await asyncio.sleep(0.02)
        b.writer.write(PING)
        await _pong(b)
        assert _peers(srv) == ["192.0.2.7:5555", "2001:db8::5:4321"]
        a.close()
        b.close()

    run(main())


def test_tcp_v2_local_health_check(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(proxy_protocol=True)

    async def main() -> None:
        raw = await Raw.open(srv.port)
        raw.writer.write(encode_v2() + PING)
        await _pong(raw)
        assert _peers(srv)[0].startswith("127.0.0.1:")
        raw.close()

    run(main())


@pytest.mark.parametrize(
    "data", [PING, b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n" + PING, b"PROXY " + b"9" * 200]
)
def test_tcp_bad_header_closes_before_any_frame(
    make_server: Callable[..., ServerThread], data: bytes
) -> None:
    srv = make_server(proxy_protocol=True)

    async def main() -> None:
        ok = await Raw.open(srv.port)
        ok.writer.write(encode_v1("192.0.2.1", 1, "192.0.2.2", 2) + PING)
        await _pong(ok)
        raw = await Raw.open(srv.port)
        raw.writer.write(data)
        assert await raw.read_frame() is None  # closed, nothing answered
        raw.close()
        ok.writer.write(PING)
        await _pong(ok)  # others unaffected
        ok.close()

    run(main())


def test_tcp_header_deadline(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(proxy_protocol=True, proxy_timeout=0.3)

    async def main() -> None:
        raw = await Raw.open(srv.port)
        raw.writer.write(b"PROXY TCP4 ")  # and then nothing
        start = time.monotonic()
        assert await raw.read_frame(5) is None
        assert time.monotonic() - start < 2.5
        raw.close()

    run(main())


def test_tcp_source_not_allowed(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(proxy_protocol=True, proxy_allowed="10.0.0.0/8")

    async def main() -> None:
        raw = await Raw.open(srv.port)
        raw.writer.write(encode_v1("192.0.2.7", 5555, "198.51.100.1", 9001) + PING)
        assert await raw.read_frame() is None
        raw.close()

    run(main())


def test_tcp_limits_use_the_carried_address(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(proxy_protocol=True, conn_rate_per_ip=0.1, conn_burst_per_ip=1)

    async def main() -> None:
        a = await Raw.open(srv.port)
        a.writer.write(encode_v1("192.0.2.7", 1000, "198.51.100.1", 9001) + PING)
        await _pong(a)
        b = await Raw.open(srv.port)  # same balancer address, another client
        b.writer.write(encode_v1("192.0.2.8", 1000, "198.51.100.1", 9001) + PING)
        await _pong(b)
        c = await Raw.open(srv.port)  # the first client again: over its rate
        c.writer.write(encode_v1("192.0.2.7", 1001, "198.51.100.1", 9001) + PING)
        status, code = logout_reason(await c.read_frame())
        assert (status, code) == (Status.RATE_LIMITED, ErrorCode.RATE_LIMIT_EXCEEDED)
        assert await c.read_frame() is None
        for r in (a, b, c):
            r.close()

    run(main())


def test_proxy_header_without_the_setting_is_a_bad_frame(server: ServerThread) -> None:
    async def main() -> None:
        raw = await Raw.open(server.port)
        raw.writer.write(encode_v2("203.0.113.9", 1234, "10.0.0.1", 9001) + PING)
        while (f := await raw.read_frame()) is not None:
            assert f[3] != 0  # an error at most, then closed
        raw.close()

    run(main())


# ---- behind a real HAProxy ---------------------------------------------------------------------
def _haproxy() -> str | None:
    path = shutil.which("haproxy")
    if path or os.environ.get("PRIVCHAT_NO_APT"):
        return path
    try:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "haproxy"],
            check=True,
            timeout=90,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return shutil.which("haproxy")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_behind_haproxy(make_server: Callable[..., ServerThread]) -> None:
    haproxy = _haproxy()
    if haproxy is None:
        pytest.skip("haproxy is not installed and `apt-get install haproxy` failed")
    srv = make_server(proxy_protocol=True)
    front = _free_port()
    ping_hex = frame(1, Cmd.PING).hex()
    pong_hex = bytes([1, 0, 0, 0, 1, Cmd.PING, 1, 0]).hex()  # version, seq 1, PING, flow 1, OK
    config = f"""
global
    maxconn 100
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:{front}
    default_backend be
backend be
    option tcp-check
    tcp-check send-binary {ping_hex}
    tcp-check expect binary {pong_hex}
    server s1 127.0.0.1:{srv.port} send-proxy-v2 check-send-proxy check inter 200ms rise 1 fall 2
"""
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as fh:
        fh.write(config)
    proc = subprocess.Popen(
        [haproxy, "-f", fh.name, "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:

        async def main() -> None:
            deadline = time.monotonic() + 10
            while True:  # until HAProxy listens and its health check marked the server up
                try:
                    raw = await Raw.open(front)
                    raw.writer.write(PING)
                    f = await raw.read_frame(2)
                    if f is not None:
                        break
                    raw.close()
                except OSError:
                    pass
                assert time.monotonic() < deadline, "HAProxy never forwarded"
                await asyncio.sleep(0.2)
            assert f[1] == Cmd.PING and f[3] == 0
            peers = _peers(srv)
            assert any(p.startswith("127.0.0.1:") for p in peers)
            assert srv.call(lambda: srv.server.stats.proxy_rejected) == 0  # type: ignore
            # the health checks arrived (LOCAL headers) and were answered
            assert srv.call(lambda: srv.server.stats.frames_in_by_command[Cmd.PING]) >= 2  # type: ignore
            raw.close()

        run(main())
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        assert proc.stderr is not None
        proc.stderr.close()
        os.unlink(fh.name)


def test_login_and_session_end_are_logged_with_the_real_address(
    make_server: Callable[..., ServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    srv = make_server(proxy_protocol=True)
    caplog.set_level(logging.INFO, logger="privchat_tcp")

    async def main() -> None:
        c = await Client.connect("127.0.0.1", srv.port)
        assert c._proto is not None and c._proto.transport is not None
        c._proto.transport.write(encode_v1("192.0.2.9", 4444, "198.51.100.1", 9001))
        await c.register("alice", "password-alice")
        await c.login()
        await c.logout()
        await c.wait_closed(5)
        deadline = time.monotonic() + 5
        while "session end" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            await asyncio.sleep(0.02)

    run(main())
    login = [r.getMessage() for r in caplog.records if r.getMessage().startswith("login:")]
    assert login and "192.0.2.9:4444" in login[0] and "device" in login[0], login
    end = [r.getMessage() for r in caplog.records if r.getMessage().startswith("session end")]
    assert end and "192.0.2.9:4444" in end[0] and end[0].endswith(": logout"), end

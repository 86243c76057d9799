"""The command line: serve as a real process, the chat client against it, keygen."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from conftest import run

from privchat_tcp.client import Client

ENV = {
    **os.environ,
    "PRIVCHAT_JWT_SECRET": "cli-test-secret-" + "y" * 32,
    "PRIVCHAT_ARGON2_TIME_COST": "1",
    "PRIVCHAT_ARGON2_MEMORY_KIB": "1024",
    "PRIVCHAT_DRAIN_GRACE": "0",
    "PRIVCHAT_DRAIN_WINDOW": "0",
    "PRIVCHAT_WELCOME_MESSAGE": "",  # no system channel: the chat script names channel ids
}


@pytest.fixture
def served(tmp_path: pathlib.Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "privchat_tcp",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "data"),
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on [\d.]+:(\d+)", line)
    assert match, line + (proc.stderr.read() if proc.stderr else "")
    fingerprint = proc.stdout.readline()
    assert re.search(r"fingerprint \(SHA-256\): [0-9a-f]{64}", fingerprint), fingerprint
    assert (tmp_path / "data" / "server_key.pem").exists()
    yield proc, int(match.group(1))
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=10)  # reap and close the pipes


def test_serve_answers_and_stops_on_sigterm(served: tuple[subprocess.Popen[str], int]) -> None:
    proc, port = served

    async def main() -> None:
        client = await Client.connect("127.0.0.1", port)
        assert await client.ping() > 0
        await client.close()

    run(main())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_chat_client_registers_and_sends(served: tuple[subprocess.Popen[str], int]) -> None:
    _, port = served
    script = (
        "/register carol secret1\n/whoami\n/group friends\n/channels\n/send friends hello\n"
        "/send 1000 again\n/send\n/nonsense\n/quit\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "privchat_tcp", "chat", "--port", str(port)],
        input=script,
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r"logged in as carol \(user 1000000\d\d\)", out.stdout), out.stdout
    assert re.search(r"carol \(user 1000000\d\d\)", out.stdout), out.stdout
    assert "group #friends created with 1 member(s)" in out.stdout
    assert "[#friends] 1: carol created the group friends" in out.stdout, out.stdout
    assert "  #friends (group 1000, 1 unread)" in out.stdout, out.stdout  # the notice
    # pts 1 of the group is its GroupCreated notice
    assert "sent to #friends (pts 2)" in out.stdout, out.stdout
    assert "sent to #friends (pts 3)" in out.stdout, out.stdout
    assert "usage: /send CHANNEL TEXT" in out.stdout, out.stdout
    assert "commands (USER:" in out.stdout
    assert "Traceback" not in out.stderr


def test_chat_client_history_and_read_state(served: tuple[subprocess.Popen[str], int]) -> None:
    _, port = served

    async def other() -> int:
        dave = await Client.connect("127.0.0.1", port)
        registered = await dave.register("dave", "secret-dave")
        await dave.close()
        return int(registered["user_id"])

    dave = run(other())
    script = (
        f"/register erin secret1\n/dm {dave} one\n/dm {dave} two\n/unread\n"
        f"/history @{dave}\n/read @{dave}\n/unread\n/history @nobody\n/quit\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "privchat_tcp", "chat", "--port", str(port)],
        input=script,
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r"sent to @\S+ \(pts 1\)", out.stdout), out.stdout
    assert re.search(r"sent to @\S+ \(pts 2\)", out.stdout), out.stdout
    assert re.search(r"  erin: one\n  erin: two\n", out.stdout), out.stdout
    assert "read up to pts 2" in out.stdout
    assert out.stdout.count("0 unread") == 2  # erin's own messages are never unread
    assert "error: " in out.stdout  # @nobody: no such user
    assert "Traceback" not in out.stderr


def test_help_lists_settings() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "privchat_tcp", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0
    for flag in ("--port", "--memory-only", "--heartbeat-interval", "--max-body", "--config"):
        assert flag in out.stdout


def test_keygen(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "key.pem"
    out = subprocess.run(
        [sys.executable, "-m", "privchat_tcp", "keygen", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert path.stat().st_mode & 0o077 == 0
    again = subprocess.run(
        [sys.executable, "-m", "privchat_tcp", "keygen", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2  # never overwrites

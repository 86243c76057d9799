"""A full disk (a small tmpfs): state changes get a clear status, nothing is acknowledged that
is not durable, reads and PING keep working, and writes resume when space returns."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import ServerThread, device, run, user

from privchat_tcp.client import Client
from privchat_tcp.errors import ErrorCode, ServiceError, Status


@pytest.fixture
def small_disk() -> Iterator[pathlib.Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = pathlib.Path(tempfile.mkdtemp(prefix="privchat-full-"))
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True
    )
    if proc.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def _fill(path: pathlib.Path, leave: int) -> None:
    """Fill the file system but ``leave`` bytes."""
    with open(path, "wb") as fh:
        chunk = b"\0" * (64 << 10)
        try:
            while True:
                fh.write(chunk)
                fh.flush()
        except OSError:
            pass
    size = path.stat().st_size
    os.truncate(path, max(0, size - leave))


def test_a_full_disk_refuses_writes_and_recovers(
    small_disk: pathlib.Path, make_server: Callable[..., ServerThread]
) -> None:
    srv = make_server(data_dir=str(small_disk / "data"), memory_window=16)
    filler = small_disk / "filler"

    async def main() -> None:
        alice = await user(srv.port, "alice")
        bob = await user(srv.port, "bob")
        dm = (await alice.rpc("channel/direct/get_or_create", {"target_user_id": bob.user_id}))[
            "channel_id"
        ]
        acked = [await alice.send(dm, "before", local_message_id=1)]
        _fill(filler, 64 << 10)
        # send until a write cannot be made durable: it is never acknowledged (its reply, and
        # everything after it on that connection, waits for the disk)
        local = 2
        unacked: list[int] = []
        deadline = time.monotonic() + 60
        big = "x" * (32 << 10)

        def failing() -> bool:
            return bool(srv.call(lambda: srv.server.store.failing))  # type: ignore[union-attr]

        while not failing():
            assert time.monotonic() < deadline, "the disk never filled up"
            try:
                acked.append(await asyncio.wait_for(alice.send(dm, big, local_message_id=local), 2))
            except TimeoutError:
                unacked.append(local)  # not acknowledged (held, or just slow): resent below
                # what the store frees meanwhile (a checkpoint, the WAL truncated) is taken
                # too: full stays full until the test frees it
                _fill(small_disk / f"top-{local}", 0)
            except ServiceError as exc:  # the store failed between ``failing()`` and this send
                assert exc.status == Status.BUSY and exc.code == ErrorCode.SYSTEM_BUSY
                unacked.append(local)  # refused, so not stored: resent below too
                break
            local += 1
        # an ACK (bob's client acknowledges what it was pushed, here and in the fill above)
        # holds none of bob's output: a cursor acknowledges nothing, and one queued just
        # before the disk filled would never be durable (``Session.ack_span``)
        bob.ack(dm, 1)
        # other sessions: state changes are refused at once with a clear status ...
        with pytest.raises(ServiceError) as err:
            await asyncio.wait_for(bob.send(dm, "refused", local_message_id=5), 5)
        assert err.value.status == Status.BUSY and err.value.code == ErrorCode.SYSTEM_BUSY
        with pytest.raises(ServiceError) as err:
            await asyncio.wait_for(bob.rpc("group/group/create", {"name": "g"}), 5)
        assert err.value.status == Status.BUSY
        # ... and reads and PING keep working
        assert await bob.ping()
        diff = await bob.pull(dm, 0, 10)
        assert diff.messages and diff.messages[0].message_seq == 1
        carol = await Client.connect("127.0.0.1", srv.port)
        assert await carol.ping()
        await carol.close()
        for path in [filler, *small_disk.glob("top-*")]:  # space returns: the writer
            path.unlink()  # retries, what was held goes out
        alice2 = await device(srv.port, alice.token, alice.device_id)  # the resend, as a client
        for local_id in unacked:  # would after a timeout: the original id and pts, or new ones
            resp = await asyncio.wait_for(alice2.send(dm, big, local_message_id=local_id), 30)
            acked.append(resp)
        alice = alice2
        after = await asyncio.wait_for(alice.send(dm, "after", local_message_id=10_000), 30)
        acked.append(after)
        pts = sorted(r.message_seq for r in acked)
        assert pts == list(range(1, len(pts) + 1))  # contiguous, nothing lost or doubled
        await alice.close()
        await bob.close()

    run(main(), timeout=180)

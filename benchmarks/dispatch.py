"""In-process command dispatch: the server's per-frame Python path without sockets or a loop.

Two logged-in sessions of two users share a direct channel, over the real services, hub and
``MemoryStore`` (``privchat_tcp.harness``, composed as the server is); ``Bench.ms(n)`` hands
the sender's session a read of ``n`` MS frames and
flushes the hub as the event loop would at the end of the turn, so one call is what the server
does for one read (minus the syscalls). Used by ``bench_micro.py`` and, for a quick figure::

    python -m benchmarks.dispatch          # microseconds per MS and per PING, 1 and 8 per read
    python -m benchmarks.dispatch --pure   # the same on the pure-Python twins, on purpose

It measures the compiled twins, and stops saying why when they are not built (``--pure`` runs the
pure ones); the first line printed says which ran (``benchmarks/compare.py`` parses the output).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import impl
from privchat_tcp.harness import Device, Harness
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.wire.commands import Cmd

Frame = tuple[int, int, int, int, bytes]


class _CountingLink:
    """The receiver's link while measuring: what the session hands its adapter (the pending
    pushes materialized, the connection's bytes taken), counted and dropped. The same stub
    the pre-restructure benchmark wrote to (its ``_Session._write``), so that a before/after
    comparison measures the same work; the adapter's own write path (``net/tcp.py``) is
    measured end to end by ``benchmarks/run.py``."""

    def __init__(self, device: Device) -> None:
        self.session = device.session
        self.written = 0

    def transmit(self) -> None:
        session = self.session
        if session.pending:
            session.materialize()
        self.written += len(session.conn.data_to_send())


class Bench:
    def __init__(self) -> None:
        self.harness = h = Harness()
        users = [h.user(f"u{i}") for i in range(2)]
        self.channel, _ = h.core.services.channels.direct(users[0].user_id, users[1].user_id)
        self.sender, receiver = (h.login(u, decode=False) for u in users)
        self.receiver = _CountingLink(receiver)
        receiver.session.link = self.receiver
        self.seq = 0
        self.local = 0

    def ms_frames(self, n: int) -> list[Frame]:
        out = []
        for _ in range(n):
            self.seq += 1
            self.local += 1
            body = pb.SendMessageRequest(
                client_seq=self.seq,
                local_message_id=self.local,
                channel_id=self.channel.channel_id,
                channel_type=self.channel.channel_type,
                payload=b'{"content":"bench message"}',
            ).SerializeToString()
            out.append((self.seq, Cmd.MS, 0, 0, body))
        return out

    def run(self, frames: list[Frame]) -> None:
        """What the server does with one read: dispatch, take the replies' bytes, and flush
        the pushes at the end of the turn (the pre-restructure benchmark's ``run``)."""
        session = self.sender.session
        session.handle(frames)
        session.conn.data_to_send()
        self.harness.turn()

    def ping_frames(self, n: int) -> list[Frame]:
        return [(i + 1, Cmd.PING, 0, 0, b"") for i in range(n)]


def _per_frame_us(bench: Bench, make: Callable[[int], list[Frame]], per_read: int) -> float:
    reads = [make(per_read) for _ in range(20_000 // per_read)]
    t0 = time.perf_counter()
    for frames in reads:
        bench.run(frames)
    return (time.perf_counter() - t0) / (len(reads) * per_read) * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="in-process MS and PING dispatch cost")
    parser.add_argument("--pure", action="store_true", help="the pure-Python twins, on purpose")
    args = parser.parse_args(argv)
    if args.pure:
        impl.reexec_pure()
    info = impl.require(args.pure, "benchmarks.dispatch")
    print(f"implementation: {impl.summary(info)}")
    bench = Bench()
    assert bench.receiver.written == 0
    for per_read in (1, 8):
        ms = _per_frame_us(bench, bench.ms_frames, per_read)
        ping = _per_frame_us(bench, bench.ping_frames, per_read)
        print(f"{per_read} per read: MS {ms:.2f} us/frame, PING {ping:.2f} us/frame")
    assert bench.receiver.written > 0


if __name__ == "__main__":
    main()

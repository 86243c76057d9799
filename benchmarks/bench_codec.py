"""Cost of per-frame compression and encryption through the real sans-IO path.

Every compression (none, gzip, lz4) x encryption (plaintext, AES-256-GCM session) combination at
64 B, 1 KiB and 64 KiB bodies: a sending ``protocol.Connection`` ``send``s one frame (compress,
seal, header) and ``data_to_send``; the peer ``Connection``, configured the other way (the
matching ``SessionCipher`` side), ``receive_data``s the bytes and ``open_body``s the frame
(open, inflate). Reported: frames/s, microseconds per frame (send + receive), the bytes on the
wire, and the cost as a ratio to plaintext without compression at the same size, measured in the
same run. Then the server's cost of an encrypted LOGIN's key transport (``crypto.open_login``:
RSA-OAEP unwrap, HKDF, AES-GCM open) per second of CPU.

Bodies are message-like text (seeded random words: compressible about 2-3x, as chat JSON is).
The sender's ``compress_threshold`` is 0 here, so the codec runs at every size; the server's
default (1024) leaves 64 B bodies uncompressed, i.e. at the "none" cost.

Run: ``python benchmarks/bench_codec.py`` (about a minute) or ``--quick`` (a few seconds). It
measures the compiled twins and stops saying why when they are not built; ``--pure`` runs the
pure-Python ones on purpose. The first line says which ran.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from collections.abc import Callable

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import impl
from privchat_tcp.wire import crypto
from privchat_tcp.wire.commands import FLOW_REQUEST, Cmd
from privchat_tcp.wire.connection import Connection
from privchat_tcp.wire.crypto import ServerKey, SessionCipher, new_secret, open_login, seal_login

SIZES = (64, 1024, 64 * 1024)
COMPRESSIONS = ((0, "none"), (1, "gzip"), (2, "lz4"))
ENCRYPTIONS = ((False, "plain"), (True, "aes-gcm"))
MAX_BODY = 1 << 20

_WORDS = (
    "the a to and of in is you that it for on with hello message channel group send sync "
    "ok yes no see later tomorrow meeting lunch photo video link thanks please call back "
    "privchat server client frame encrypted compressed delivered read typing online"
).split()


def make_body(size: int, seed: int = 1) -> bytes:
    """``size`` bytes of message-like text (deterministic)."""
    rng = random.Random(seed * 1_000_003 + size)
    out = bytearray(b'{"content":"')
    while len(out) < size - 2:
        out += rng.choice(_WORDS).encode() + b" "
    del out[size - 2 :]
    out += b'"}'
    return bytes(out)


def pair(algo: int, encrypted: bool) -> tuple[Connection, Connection]:
    """A client-side sender and the server-side receiver it talks to."""
    sender = Connection(MAX_BODY)
    receiver = Connection(MAX_BODY)
    sender.compression = algo
    sender.compress_threshold = 0
    if encrypted:
        secret = new_secret()
        sender.cipher = SessionCipher.client_side(secret)
        receiver.cipher = SessionCipher.server_side(secret)
        sender.encrypted = receiver.encrypted = True
    return sender, receiver


def one_way(algo: int, encrypted: bool, body: bytes) -> tuple[Callable[[int], None], int]:
    """A function sending and receiving ``n`` frames, and the wire size of one frame."""
    sender, receiver = pair(algo, encrypted)
    send, drain = sender.send, sender.data_to_send
    receive, open_body = receiver.receive_data, receiver.open_body
    ms = Cmd.MS

    # check the path once, and measure the wire size
    send(1, ms, FLOW_REQUEST, 0, body)
    data = drain()
    ((seq, command, flags, status, sealed),) = receive(data)
    assert open_body(seq, command, flags, status, sealed) == body
    assert (flags >> 4) & 3 == (algo if len(data) - 12 < len(body) else 0)

    def run(n: int) -> None:
        for seq in range(2, n + 2):
            send(seq, ms, FLOW_REQUEST, 0, body)
            for f in receive(drain()):
                open_body(*f)

    return run, len(data)


def calibrate(fn: Callable[[int], None], target: float) -> int:
    """How many frames take about ``target`` seconds."""
    n = 1
    while True:
        t0 = time.perf_counter()
        fn(n)
        dt = time.perf_counter() - t0
        if dt >= target / 4 or n >= 1 << 22:
            return max(1, int(n * target / max(dt, 1e-9)))
        n *= 2


def bench_frames(target: float, repeats: int) -> list[tuple[str, str, int, float, int, float]]:
    rows = []
    for size in SIZES:
        body = make_body(size)
        cases = []
        for algo, _ in COMPRESSIONS:
            for encrypted, _ in ENCRYPTIONS:
                fn, wire = one_way(algo, encrypted, body)
                cases.append(((algo, encrypted), fn, calibrate(fn, target), wire))
        best = {key: float("inf") for key, _, _, _ in cases}
        for _ in range(repeats):  # round robin, so drift and noise hit every case alike
            for key, fn, n, _ in cases:
                t0 = time.perf_counter()
                fn(n)
                best[key] = min(best[key], (time.perf_counter() - t0) / n)
        base = best[(0, False)]
        wires = {key: wire for key, _, _, wire in cases}
        for algo, cname in COMPRESSIONS:
            for encrypted, ename in ENCRYPTIONS:
                per = best[(algo, encrypted)]
                rows.append((cname, ename, size, per, wires[(algo, encrypted)], per / base))
    return rows


def bench_login(bits: int, target: float) -> tuple[float, float, float]:
    """(opens per CPU second, ms of CPU per open, ms of CPU per client seal)."""
    key = ServerKey.generate(bits)
    public = key.public_key
    login = make_body(200)  # an AuthorizationRequest is ~200-400 bytes with its JWT
    sealed: list[bytes] = []
    t0 = time.process_time()
    while time.process_time() - t0 < target / 2 or len(sealed) < 20:
        header, body = seal_login(public, new_secret(), 1, Cmd.LOGIN, 0x08, 0, login)
        sealed.append(body)
    seal_cpu = (time.process_time() - t0) / len(sealed)
    secret, plain = open_login(key, 1, Cmd.LOGIN, 0x08, 0, sealed[0])
    assert plain == login and len(secret) == crypto.SECRET_SIZE
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        for body in sealed:
            open_login(key, 1, Cmd.LOGIN, 0x08, 0, body)
        best = min(best, (time.process_time() - t0) / len(sealed))
    return 1.0 / best, best * 1e3, seal_cpu * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a few seconds)")
    parser.add_argument("--rsa-bits", type=int, default=2048, help="server key size (2048)")
    parser.add_argument("--pure", action="store_true", help="the pure-Python twins, on purpose")
    args = parser.parse_args(argv)
    if args.pure:
        impl.reexec_pure()
    info = impl.require(args.pure, "bench_codec")
    target, repeats = (0.02, 3) if args.quick else (0.2, 7)

    import lz4

    print(
        f"privchat-tcp codec benchmark: Python {platform.python_version()} "
        f"({platform.machine()}, {os.cpu_count()} CPUs), implementation {impl.summary(info)}, "
        f"lz4 {lz4.__version__}, {'quick' if args.quick else 'full'} run"
    )
    rows = bench_frames(target, repeats)
    print()
    print(
        "send + receive_data + open_body, one frame at a time (best of "
        f"{repeats}; ratio = cost / plain none at the same size)"
    )
    head = (
        f"{'body':>7} {'compress':>8} {'encrypt':>8} {'frames/s':>11} {'us/frame':>9} "
        f"{'wire B':>7} {'x plain':>8}"
    )
    print(head)
    print("-" * len(head))
    last = None
    for cname, ename, size, per, wire, ratio in rows:
        if last is not None and size != last:
            print()
        last = size
        label = f"{size // 1024} KiB" if size >= 1024 else f"{size} B"
        print(
            f"{label:>7} {cname:>8} {ename:>8} {1 / per:>11,.0f} {per * 1e6:>9.2f} "
            f"{wire:>7} {ratio:>8.2f}"
        )
    opens, ms, seal_ms = bench_login(args.rsa_bits, target * 4)
    print()
    print(f"encrypted LOGIN key transport, RSA-{args.rsa_bits} OAEP-SHA256 + HKDF + AES-GCM:")
    print(f"  server open_login: {opens:,.0f} per CPU second ({ms:.3f} ms CPU each)")
    print(f"  client seal_login: {seal_ms:.3f} ms CPU each")
    print()
    print(
        "reproduce: python benchmarks/bench_codec.py"
        + "".join(" " + a for a in (argv or sys.argv[1:]))
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""CPU per message of the server, by thread, for store modes and source trees run alternately.

    python -m benchmarks.cpu_ab --rounds 3 memory full normal
    python -m benchmarks.cpu_ab --tree before=/path/to/checkout --tree now=. full
    python -m benchmarks.cpu_ab --scenario group memory full

Each run starts one server (``benchmarks.persistence``'s command line for the mode, pinned to
CPU 0) on a fresh data directory, drives it for ``--duration`` seconds with ``benchmarks.loadgen``
(direct: 10 pairs x 32 in flight; group: 100 members, 32 in flight; pinned to CPU 1), and
reads the server's threads' CPU time from /proc over the middle of the window. It prints
messages/s and microseconds of server CPU per message: the whole process, the event loop's
thread, and the others (the SQLite writer, syncer, checkpointer). The machine is noisy:
compare runs of the same round, and take medians.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.persistence import mode_argv, wait_accepting
from benchmarks.run import env_for, free_port, pinned

SCENARIOS = {
    "direct": ["direct", "--pairs", "10", "--window", "32"],
    "group": ["group", "--members", "100", "--window", "32"],
}


def thread_cpu(pid: int) -> dict[int, float]:
    """Seconds of CPU (user + system) per thread of ``pid``."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def one(tree: Path, mode: str, scenario: str, duration: float) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="privchat-cpu-ab-"))
    port, admin = free_port(), free_port()
    argv = pinned("0", mode_argv(tree, mode, port, admin, tmp / "data"))
    server = subprocess.Popen(argv, cwd=tree, env=env_for(tree), stderr=subprocess.DEVNULL)
    try:
        wait_accepting(port, server, time.monotonic())
        out = tmp / "lg.json"
        lg = [sys.executable, "-m", "benchmarks.loadgen", *SCENARIOS[scenario]]
        lg += ["--port", str(port), "--duration", str(duration), "--warmup", "1"]
        lg += ["--server-pid", str(server.pid), "--json", str(out)]
        window: dict[str, dict[int, float]] = {}

        def sample() -> None:  # the middle of the measured window
            time.sleep(1 + duration * 0.25 + 1.0)
            window["a"] = thread_cpu(server.pid)
            time.sleep(duration * 0.5)
            window["b"] = thread_cpu(server.pid)

        sampler = threading.Thread(target=sample)
        sampler.start()
        subprocess.run(pinned("1", lg), cwd=tree, env=env_for(tree), check=True, timeout=300)
        sampler.join()
        result = json.loads(out.read_text())
    finally:
        server.terminate()
        server.wait(30)
    rate = result.get("msgs_per_s") or result["deliveries_per_s"] / 100
    seconds = duration * 0.5
    a, b = window["a"], window["b"]
    used = {tid: b[tid] - a.get(tid, 0.0) for tid in b}
    main = used.get(server.pid, 0.0) / seconds
    others = sum(v for tid, v in used.items() if tid != server.pid) / seconds
    return {
        "msgs_per_s": round(rate),
        "us_per_msg": round(1e6 / result["per_server_cpu_s"], 2),
        "loop_us": round(main / rate * 1e6, 2),
        "others_us": round(others / rate * 1e6, 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modes", nargs="+", help="memory, full, normal (each run in every round)")
    ap.add_argument("--tree", action="append", default=[], help="NAME=PATH of a source tree")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), default="direct")
    args = ap.parse_args(argv)
    trees = [t.split("=", 1) for t in args.tree] or [["here", "."]]
    for r in range(args.rounds):
        for name, path in trees:
            for mode in args.modes:
                got = one(Path(path).resolve(), mode, args.scenario, args.duration)
                print(f"round {r + 1} {name} {mode}: {got}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

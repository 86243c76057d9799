"""The embedded store against the memory-only server, in one sitting (issue 11's "Done when").

    python -m benchmarks.persistence            # 3 interleaved rounds, 5 s per figure, 1,000,000
                                                # stored messages for the restart (~10 minutes)
    python -m benchmarks.persistence --quick    # 1 round, 1 s per figure, 100,000 messages

Each round starts one server per mode, memory-only, SQLite ``synchronous=FULL`` and ``NORMAL``
(the order rotates from round to round), each on a fresh data directory, pinned to CPU 0 with the
load generator on CPU 1 (``benchmarks/run.py``'s helpers), and measures on it:

- ``direct``: 10 pairs x 32 MS in flight: delivered messages/s (every MS reply held until its
  commit is durable, every push sent once it is);
- ``group100``: one sender, 32 in flight, a group of 100 online members: deliveries/s;
- ``paced``: direct at 5,000 messages/s in all (1 ms ticks): the acknowledgement latency (MS sent
  to its reply, ``loadgen --ack-latency``) and the event-loop lag while the writer commits
  (the server's lag probe, ``--loop-lag-interval 0.005``, read from /metrics at the window's
  start and end), with the commit latency and batch size of the same window.

Each persistent figure is reported as a ratio against the memory-only server of the same round;
the summary is the median over the rounds. Then the history phase: the memory-only server and a
FULL one are each sent the same N messages (``--history``, over TCP, with local message ids, so
every message also has its idempotency key); the memory-only server's RSS is the reference;
the FULL one is stopped (SIGTERM: flush and close) and started again on the same directory,
once with FULL and once with NORMAL: the time from the process start to its port accepting,
the store's own load time (its log line), and the RSS once started; and the disk bytes per
stored message.

Results: benchmarks/results/persistence.json (persistence-quick.json with --quick); the table
in benchmarks/README.md says which command made it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks import impl
from benchmarks.loadgen import rss_kib
from benchmarks.run import (
    RESULTS,
    SERVER_CPU,
    Procs,
    env_for,
    free_port,
    implementation,
    loadgen,
    log,
    pinned,
    raised_fd_limit,
    ratio,
    server_argv,
    snapshot,
)

MODES = ("memory", "full", "normal")
PACED_RATE = 5000
PAIRS = 10
LAG_INTERVAL = "0.005"

TARGETS = {
    "direct_full_vs_memory": (">=", 0.6),
    "group100_full_vs_memory": (">=", 0.8),
    "paced_ack_p99_ms_full": ("<", 5.0),
    "paced_loop_lag_p99_ms_full": ("<", 2.0),
    "restart_s_full": ("<", 10.0),
    "rss_restarted_vs_memory": ("<", 0.5),
}
# NORMAL's figures beside FULL's, against the same bounds (no target of their own)
ALSO = {
    "direct_normal_vs_memory": "direct_full_vs_memory",
    "group100_normal_vs_memory": "group100_full_vs_memory",
    "paced_ack_p99_ms_normal": "paced_ack_p99_ms_full",
    "paced_loop_lag_p99_ms_normal": "paced_loop_lag_p99_ms_full",
    "restart_s_normal": "restart_s_full",
}

# the history phase sends far more than the per-user byte bucket and quota would let one user
HISTORY_LIMITS_OFF = ["--rate-bytes-per-user", "0", "--max-stored-bytes-per-user", "0"]


def mode_argv(
    src: Path, mode: str, port: int, admin: int, data_dir: Path, *extra: str
) -> list[str]:
    """The server's command line for ``mode`` (run.py's, limits off, plus the admin listener,
    the lag probe, a fast drain, and the store the mode names)."""
    argv = server_argv(src, port, data_dir)
    if mode != "memory":
        argv = [a for a in argv if a != "--memory-only"]
        argv += ["--sqlite-synchronous", mode.upper()]
    argv += ["--admin-port", str(admin), "--loop-lag-interval", LAG_INTERVAL]
    argv += ["--drain-grace", "0", "--drain-window", "0", *extra]
    return argv


def metrics(admin: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
    return out


def stored_messages(admin: int) -> int:
    return int(metrics(admin).get('privchat_store_items{kind="messages"}', 0))


def wait_accepting(
    port: int, proc: subprocess.Popen[bytes], t0: float, timeout: float = 120.0
) -> float:
    """Seconds from ``t0`` until ``port`` accepts (polled every 10 ms); raises if the process
    exits."""
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return time.monotonic() - t0
        time.sleep(0.01)
    raise RuntimeError(f"port {port} did not open in {timeout} s")


def settle_rss(pid: int, wait: float = 1.0) -> int:
    time.sleep(wait)
    return rss_kib(pid)


def disk_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("privchat.db*") if p.is_file())


# ---- the rounds ------------------------------------------------------------------------------
def one_server(
    src: Path, tmp: Path, procs: Procs, mode: str, tag: str, common: list[str]
) -> dict[str, Any]:
    port, admin = free_port(), free_port()
    data = tmp / f"data-{tag}-{mode}"
    proc = procs.start(mode_argv(src, mode, port, admin, data), port, f"{tag}-{mode}", True)
    spid = ["--server-pid", str(proc.pid), "--admin-port", str(admin)]
    out: dict[str, Any] = {}
    try:
        out["direct"] = loadgen(
            src, tmp, "direct", port, "--pairs", str(PAIRS), "--window", "32", *spid, *common
        )
        out["group100"] = loadgen(
            src, tmp, "group", port, "--members", "100", "--window", "32", *spid, *common
        )
        out["paced"] = loadgen(
            src,
            tmp,
            "direct",
            port,
            "--pairs",
            str(PAIRS),
            "--rate",
            str(PACED_RATE),
            "--ack-latency",
            *spid,
            *common,
        )
        if mode != "memory":
            out["disk"] = {"bytes": disk_bytes(data), "messages": stored_messages(admin)}
    finally:
        procs.stop(proc)
    return out


def rounds(
    src: Path, tmp: Path, procs: Procs, n: int, common: list[str]
) -> list[dict[str, dict[str, Any]]]:
    out = []
    for r in range(n):
        order = MODES[r % 3 :] + MODES[: r % 3]  # rotate: no mode always runs first
        log(f"round {r + 1}/{n}: {' -> '.join(order)}")
        out.append({mode: one_server(src, tmp, procs, mode, f"r{r}", common) for mode in order})
    return out


# ---- the history -----------------------------------------------------------------------------
def fill(src: Path, tmp: Path, port: int, pid: int, admin: int, n: int) -> dict[str, Any]:
    """Send ``n`` messages (10 pairs x 32 in flight) and wait until they are delivered."""
    return loadgen(
        src,
        tmp,
        "direct",
        port,
        "--pairs",
        str(PAIRS),
        "--window",
        "32",
        "--server-pid",
        str(pid),
        "--admin-port",
        str(admin),
        "--max-messages",
        str(n),
        "--duration",
        "1800",
        "--warmup",
        "0",
        timeout=2400.0,
    )


def start_timed(src: Path, tmp: Path, argv: list[str], port: int, name: str) -> dict[str, Any]:
    """Start a server and time it: to the port accepting, and the store's load (its log)."""
    logf = tmp / f"{name}.log"
    with open(logf, "wb") as fh:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            pinned(SERVER_CPU, argv), cwd=src, env=env_for(src), stdout=fh, stderr=subprocess.STDOUT
        )
    try:
        start_s = wait_accepting(port, proc, t0)
        rss = settle_rss(proc.pid)
        text = logf.read_text(errors="replace")
        m = re.search(
            r"loaded (\d+) users, (\d+) channels, (\d+) recent messages .* in ([\d.]+)s", text
        )
        out: dict[str, Any] = {
            "start_s": round(start_s, 3),
            "rss_kib": rss,
            "spawn_to_accept_includes": "interpreter start, imports, store open and load",
        }
        if m:
            out["load_s"] = float(m.group(4))
            out["messages_in_memory"] = int(m.group(3))
        return {"proc": proc, **out}
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise


def stop_timed(proc: subprocess.Popen[bytes]) -> float:
    t0 = time.monotonic()
    proc.terminate()
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    return round(time.monotonic() - t0, 3)


def history(src: Path, tmp: Path, procs: Procs, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"messages_sent": n}
    # memory-only: the reference RSS for the same history
    port, admin = free_port(), free_port()
    argv = mode_argv(src, "memory", port, admin, tmp / "hist-memory", *HISTORY_LIMITS_OFF)
    proc = procs.start(argv, port, "hist-memory", True)
    try:
        rss0 = settle_rss(proc.pid, 0.5)
        out["memory_fill"] = fill(src, tmp, port, proc.pid, admin, n)
        out["memory_messages"] = stored_messages(admin)
        out["memory_rss_kib"] = settle_rss(proc.pid)
        out["memory_rss_empty_kib"] = rss0
    finally:
        procs.stop(proc)
    # FULL: fill, stop, start again (FULL, then NORMAL) on the same directory
    data = tmp / "hist-sqlite"
    port, admin = free_port(), free_port()
    argv = mode_argv(src, "full", port, admin, data, *HISTORY_LIMITS_OFF)
    proc = procs.start(argv, port, "hist-full", True)
    try:
        out["sqlite_rss_empty_kib"] = settle_rss(proc.pid, 0.5)
        out["full_fill"] = fill(src, tmp, port, proc.pid, admin, n)
        out["sqlite_messages"] = stored_messages(admin)
        out["sqlite_rss_after_fill_kib"] = settle_rss(proc.pid)
    finally:
        out["stop_s"] = stop_timed(proc)
    out["disk_bytes"] = disk_bytes(data)
    for mode in ("full", "normal"):
        port, admin = free_port(), free_port()
        argv = mode_argv(src, mode, port, admin, data, *HISTORY_LIMITS_OFF)
        argv[argv.index("--log-level") + 1] = "INFO"  # the store's "loaded ... in Xs" line
        started = start_timed(src, tmp, argv, port, f"hist-restart-{mode}")
        proc = started.pop("proc")
        try:
            started["messages"] = stored_messages(admin)
        finally:
            started["stop_s"] = stop_timed(proc)
        out[f"restart_{mode}"] = started
    return out


# ---- the report ------------------------------------------------------------------------------
def median(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if isinstance(v, int | float)]
    return round(statistics.median(vals), 3) if vals else None


def summarize(rs: list[dict[str, dict[str, Any]]], hist: dict[str, Any] | None) -> dict[str, Any]:
    def per_round(mode: str, row: str, field: str) -> list[Any]:
        return [r[mode].get(row, {}).get(field) for r in rs]

    def ratios(mode: str, row: str, field: str) -> list[Any]:
        return [
            ratio(r[mode].get(row, {}).get(field), r["memory"].get(row, {}).get(field)) for r in rs
        ]

    fig: dict[str, Any] = {}
    for mode in MODES:
        fig[f"direct_msgs_per_s_{mode}"] = median(per_round(mode, "direct", "msgs_per_s"))
        fig[f"group100_deliveries_per_s_{mode}"] = median(
            per_round(mode, "group100", "deliveries_per_s")
        )
        for field in ("ack_p50_ms", "ack_p99_ms", "lat_p99_ms", "loop_lag_p99_ms"):
            fig[f"paced_{field}_{mode}"] = median(per_round(mode, "paced", field))
        fig[f"direct_loop_lag_p99_ms_{mode}"] = median(per_round(mode, "direct", "loop_lag_p99_ms"))
        if mode != "memory":
            for field in ("commit_mean_ms", "commit_p99_ms", "batch_mean_writes"):
                fig[f"paced_{field}_{mode}"] = median(per_round(mode, "paced", field))
                fig[f"direct_{field}_{mode}"] = median(per_round(mode, "direct", field))
            fig[f"direct_{mode}_vs_memory"] = median(ratios(mode, "direct", "msgs_per_s"))
            fig[f"direct_{mode}_vs_memory_rounds"] = ratios(mode, "direct", "msgs_per_s")
            fig[f"group100_{mode}_vs_memory"] = median(ratios(mode, "group100", "deliveries_per_s"))
            fig[f"group100_{mode}_vs_memory_rounds"] = ratios(mode, "group100", "deliveries_per_s")
            disks = [r[mode].get("disk", {}) for r in rs]
            per = [d["bytes"] / d["messages"] for d in disks if d.get("messages")]
            fig[f"disk_bytes_per_message_{mode}_rounds"] = median(per)
    if hist:
        msgs = hist.get("sqlite_messages") or 0
        fig["history_messages"] = msgs
        fig["history_memory_rss_mib"] = round(hist["memory_rss_kib"] / 1024, 1)
        fig["history_sqlite_rss_after_fill_mib"] = round(
            hist["sqlite_rss_after_fill_kib"] / 1024, 1
        )
        fig["disk_bytes_per_message"] = round(hist["disk_bytes"] / msgs, 1) if msgs else None
        fig["history_fill_msgs_per_s_memory"] = hist.get("memory_fill", {}).get("msgs_per_s")
        fig["history_fill_msgs_per_s_full"] = hist.get("full_fill", {}).get("msgs_per_s")
        fig["stop_s_full"] = hist.get("stop_s")
        for mode in ("full", "normal"):
            rst = hist.get(f"restart_{mode}", {})
            fig[f"restart_s_{mode}"] = rst.get("start_s")
            fig[f"restart_load_s_{mode}"] = rst.get("load_s")
            fig[f"restart_rss_mib_{mode}"] = round(rst.get("rss_kib", 0) / 1024, 1)
            fig[f"restart_messages_{mode}"] = rst.get("messages")
        fig["rss_restarted_vs_memory"] = ratio(
            hist.get("restart_full", {}).get("rss_kib"), hist.get("memory_rss_kib")
        )
    return fig


def verdict(name: str, value: Any) -> str:
    target = TARGETS.get(name) or TARGETS.get(ALSO.get(name, ""))
    if target is None or not isinstance(value, int | float):
        return ""
    op, bound = target
    ok = value >= bound if op == ">=" else value < bound
    tail = "PASS" if ok else "FAIL"
    return f"{op} {bound}: {tail}" if name in TARGETS else f"({op} {bound}: {tail}, no target)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the embedded store vs memory-only, same sitting")
    p.add_argument("--quick", action="store_true", help="1 round, 1 s per figure, 100,000 msgs")
    p.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 3, quick 1)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per figure")
    p.add_argument(
        "--history", type=int, default=0, help="stored messages to restart with (1,000,000)"
    )
    p.add_argument("--no-history", action="store_true", help="skip the restart/RSS phase")
    p.add_argument("--no-snapshot", action="store_true", help="run the working tree as is")
    p.add_argument("--out", default="", help="JSON file (default results/persistence.json)")
    args = p.parse_args(argv)
    args.pure = False
    n_rounds = args.rounds or (1 if args.quick else 3)
    n_hist = args.history or (100_000 if args.quick else 1_000_000)
    dur = "1" if args.quick else str(args.duration)
    common = ["--duration", dur, "--warmup", "0.3" if args.quick else "0.5"]
    out = Path(args.out or RESULTS / f"persistence{'-quick' if args.quick else ''}.json")
    tmp = Path(tempfile.mkdtemp(prefix="privchat-persist-", dir=os.environ.get("BENCH_TMP")))
    with raised_fd_limit():
        src = snapshot(args.no_snapshot, tmp)
        impls = implementation(src, tmp, args)
        procs = Procs(src, tmp)
        procs.twins = impls["server"]["twins"]
        try:
            rs = rounds(src, tmp, procs, n_rounds, common)
            hist = None if args.no_history else history(src, tmp, procs, n_hist)
        finally:
            procs.stop_all()
    figures = summarize(rs, hist)
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m benchmarks.persistence " + " ".join(sys.argv[1:]),
        **impl.record(impls["server"]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "data_dir_fs": fs_type(tmp),
        },
        "setup": {
            "rounds": n_rounds,
            "duration_s": float(dur),
            "pairs": PAIRS,
            "paced_rate": PACED_RATE,
            "loop_lag_interval": float(LAG_INTERVAL),
            "history": n_hist,
        },
        "figures": figures,
        "targets": {k: list(v) for k, v in TARGETS.items()},
        "rounds": rs,
        "history": hist,
    }
    print("\nfigures (medians over the rounds; ratios against memory-only of the same round)")
    for name, value in figures.items():
        print(f"  {name:42} {value!s:>24}  {verdict(name, value)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {out}")
    with contextlib.suppress(Exception):
        shutil.rmtree(tmp)
    return 0


def fs_type(path: Path) -> str:
    """The file system the data directories are on (a tmpfs would make fsync free)."""
    with contextlib.suppress(OSError, ValueError):
        best = ("", "")
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, kind, *_ = line.split()
            if str(path.resolve()).startswith(mount) and len(mount) > len(best[0]):
                best = (mount, kind)
        return best[1]
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())

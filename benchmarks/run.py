"""Run the whole suite: baseline + real server (pinned to CPU 0) vs the load generator (CPU 1).

    python -m benchmarks.run            # ~5 s per scenario
    python -m benchmarks.run --quick    # ~1 s per scenario, 2,000 idle sessions
    python -m benchmarks.run --setup    # apt-get install mosquitto redis-server first

Every figure is printed as a ratio against a reference measured in the same run (the bare uvloop
baseline for PING, mosquitto for messaging when it is installed) and written, with the raw numbers,
to benchmarks/results/latest.json (results/quick.json with --quick).

The real server gets an RSA key generated for the run (``privchat_tcp keygen`` into the run's
temporary directory), and PING 100 x 32, direct (windowed), group of 100 and idle are measured a
second time encrypted (``loadgen --encrypt``: encrypted LOGIN, AES-256-GCM session frames), each
reported next to its plaintext row as ``<figure>_encrypted_vs_plain`` (no target).

The package is copied to a temporary directory first, so that files edited while the suite runs
do not change the code under test half-way (``--no-snapshot`` runs the working tree as is).

The server under test runs the compiled twins of the hot modules (``ext/*.pyx``): the runner asks
the copy's interpreter which twins it imports (``benchmarks/impl.py``), compiles them into the
copy when the checkout has no fresh in-place build (a clone after ``pip install .`` has none), and
stops with the reason and the fix when it cannot. ``--pure`` measures the pure-Python twins on
purpose (``PRIVCHAT_NO_EXTENSIONS=1`` for the server; results/latest-pure.json). Every report says
which ran (``implementation``: "compiled" or "pure", and ``twins``: module -> "c" or "py").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import impl

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SERVER_CPU = "0"
LOADGEN_CPU = "1"

# server options that turn off the per-connection limits a benchmark would otherwise measure
LIMITS_OFF = {
    "--rate-per-connection": "0",
    "--rate-per-user": "0",
    "--max-connections": "0",
    "--max-devices-per-user": "0",
    "--conn-rate-per-ip": "0",
    # the idle scenario logs thousands of sessions in by password from one address, 200 at once
    "--login-rate-per-ip": "0",
    "--encrypted-login-rate-per-ip": "0",
    "--hash-queue": "100000",
    "--push-hard-limit": str(256 << 20),
    "--slow-consumer-timeout": "600",
}

TARGETS = {
    "ping_100x32_vs_baseline": (">=", 0.3),
    "ping_1000x1_vs_baseline": (">=", 0.5),
    "direct_vs_mosquitto_1to1": (">=", 0.25),
    "direct_paced_p99_ms": ("<", 5.0),
    "group100_vs_mosquitto_1to100": (">=", 0.5),
    "idle_kib_per_session": ("<=", 8.0),
}


def log(msg: str) -> None:
    print(f"[run {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def pinned(cpu: str, argv: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", cpu, *argv]
    return argv


def snapshot(no_snapshot: bool, tmp: Path) -> Path:
    """Copy privchat_tcp and benchmarks (and what builds the compiled twins: ext/, setup.py,
    pyproject.toml) into ``tmp`` until the copy imports cleanly."""
    if no_snapshot:
        return ROOT
    src = tmp / "src"
    for attempt in range(10):
        if src.exists():
            shutil.rmtree(src)
        src.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "results", "*.c", "*.html")
        for name in ("privchat_tcp", "benchmarks", "ext"):
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, src / name, ignore=ignore)
        for name in ("setup.py", "pyproject.toml", "MANIFEST.in"):
            if (ROOT / name).exists():
                shutil.copy2(ROOT / name, src / name)
        check = subprocess.run(
            [
                sys.executable,
                "-c",
                "import privchat_tcp.app, privchat_tcp.cli, benchmarks.loadgen",
            ],
            cwd=src,
            env=env_for(src),
            capture_output=True,
            timeout=60,
        )
        err = check.stderr.decode()[-300:]
        if check.returncode == 0:
            try:  # imports the server's modules too
                impl.probe_tree(src)
                return src
            except RuntimeError as exc:
                err = str(exc)[-300:]
        log(f"snapshot does not import yet (attempt {attempt + 1}): {err}")
        time.sleep(3)
    raise RuntimeError("could not take an importable snapshot of privchat_tcp")


def implementation(src: Path, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Make ``src`` run the compiled twins, or stop saying why; what the server and the load
    generator will run (``impl.probe()`` of each, as ``{"server": ..., "loadgen": ..., ...}``).

    The load generator imports the same package, always compiled when it can be (also with
    ``--pure``, so that only the server changes)."""
    built = "in-place build of the working tree" if args.no_snapshot else "copied from the tree"
    info = impl.probe_tree(src)
    problem = impl.problem(info, "compiled")
    reasons = [problem] if problem else impl.stale(ROOT)
    if reasons:
        why = "; ".join(reasons)
        if args.no_snapshot:
            msg = f"--no-snapshot: the working tree does not run the compiled twins: {why}"
            if not args.pure:
                raise SystemExit(
                    f"{msg}.\nFix: `PRIVCHAT_BUILD_EXT=yes python setup.py build_ext --inplace` "
                    "(make build) in the tree, or leave out --no-snapshot: the runner then builds "
                    "them in its copy. --pure measures the pure-Python twins on purpose."
                )
            log(f"{msg} (the load generator runs them too)")
        else:
            log(f"compiling the twins into the snapshot ({why})")
            for stale_so in impl.compiled_files(src):
                stale_so.unlink()
            t0 = time.monotonic()
            try:
                built = impl.build_tree(src, log=tmp / "build-ext.log")
                log(f"  built with {built} in {time.monotonic() - t0:.0f} s")
                built = f"built in the snapshot: {built}"
            except RuntimeError as exc:
                if not args.pure:
                    raise SystemExit(str(exc)) from None
                log(f"{exc}\n--pure: going on, the load generator runs the pure twins too")
                built = "none (the build failed)"
            info = impl.probe_tree(src)
            if not args.pure and (err := impl.problem(info, "compiled")):
                raise SystemExit(f"after the build, {err}.\nFix: {impl.FIX}.")
    server = impl.probe_tree(src, pure=True) if args.pure else info
    if err := impl.problem(server, "pure" if args.pure else "compiled"):
        raise SystemExit(f"the server would not run what was asked: {err}")
    log(f"server runs the {impl.summary(server)} twins; load generator {info['implementation']}")
    return {"server": server, "loadgen": info, "build": built}


def env_for(src: Path, pure: bool = False) -> dict[str, str]:
    """The environment of every process run on ``src``; ``pure``: PRIVCHAT_NO_EXTENSIONS=1."""
    return impl.tree_env(src, pure)


def mapped_twins(pid: int, src: Path) -> list[str]:
    """The compiled twins mapped into process ``pid`` (from /proc/<pid>/maps; [] elsewhere),
    with the directory of any that does not come from ``src``."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return []
    out = set()
    for line in maps.splitlines():
        path = Path(line.split(maxsplit=5)[-1])
        name = path.name.partition(".")[0]
        if name.startswith("_") and name.endswith("_c") and path.suffix in (".so", ".pyd"):
            out.add(name if src.resolve() in path.parents else f"{name} (from {path.parent})")
    return sorted(out)


class Procs:
    """Subprocesses this run started; stopped by their own pid at the end."""

    def __init__(self, src: Path, tmp: Path, pure: bool = False) -> None:
        self.src = src
        self.tmp = tmp
        self.pure = pure  # the privchat servers run the pure twins
        self.procs: list[subprocess.Popen[bytes]] = []
        self.mapped: dict[str, list[str]] = {}  # server name -> compiled twins in its memory
        self.twins: dict[str, str] = {}  # what the probe said the servers run

    def start(
        self, argv: list[str], port: int, name: str, privchat: bool = False
    ) -> subprocess.Popen[bytes]:
        logf = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            pinned(SERVER_CPU, argv),
            cwd=self.src,
            env=env_for(self.src, pure=privchat and self.pure),
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        wait_port(port, proc)
        if privchat:
            self.mapped[name] = mapped_twins(proc.pid, self.src)
            expected = {f"_{stem}_c" for stem, kind in self.twins.items() if kind == "c"}
            if missing := sorted(expected - set(self.mapped[name])):
                log(f"warning: {name} (pid {proc.pid}) did not load {missing} from {self.src}")
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def stop_all(self) -> None:
        for proc in self.procs:
            self.stop(proc)


def make_key(src: Path, tmp: Path) -> Path | None:
    """An RSA server key for this run (PEM, private), or None when keygen fails."""
    path = tmp / "server_key.pem"
    proc = subprocess.run(
        [sys.executable, "-m", "privchat_tcp", "keygen", str(path)],
        cwd=src,
        env=env_for(src),
        capture_output=True,
        timeout=120,
        text=True,
    )
    if proc.returncode != 0 or not path.exists():
        log(f"keygen failed, no encrypted rows: {proc.stderr.strip()[-300:]}")
        return None
    return path


def server_argv(src: Path, port: int, data_dir: Path, key: Path | None = None) -> list[str]:
    helptext = subprocess.run(
        [sys.executable, "-m", "privchat_tcp", "serve", "--help"],
        cwd=src,
        env=env_for(src),
        capture_output=True,
        timeout=60,
        text=True,
    ).stdout
    argv = [
        sys.executable,
        "-m",
        "privchat_tcp",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--jwt-secret",
        "bench-secret-" + "x" * 32,
        "--argon2-time-cost",
        "1",
        "--argon2-memory-kib",
        "1024",
        "--log-level",
        "WARNING",
    ]
    for opt, value in LIMITS_OFF.items():
        if opt in helptext:
            argv += [opt, value]
    if "--memory-only" in helptext:  # the suite measures the wire and fan-out, in memory
        argv.append("--memory-only")  # (benchmarks/persistence.py measures the store)
    if "--welcome-message" in helptext:  # no System message per new account: the scenarios
        argv += ["--welcome-message", ""]  # take a user's first push as their peer's message
    if key is not None and "--rsa-key-file" in helptext:
        argv += ["--rsa-key-file", str(key)]
    return argv


def loadgen(
    src: Path, tmp: Path, scenario: str, port: int, *extra: str, timeout: float = 300.0
) -> dict[str, Any]:
    out = tmp / f"lg-{time.monotonic_ns()}.json"
    argv = pinned(
        LOADGEN_CPU,
        [
            sys.executable,
            "-m",
            "benchmarks.loadgen",
            scenario,
            "--port",
            str(port),
            "--json",
            str(out),
            *extra,
        ],
    )
    log(" ".join(argv[argv.index("benchmarks.loadgen") + 1 :]))
    try:
        proc = subprocess.run(
            argv, cwd=src, env=env_for(src), capture_output=True, timeout=timeout, text=True
        )
    except subprocess.TimeoutExpired:
        log(f"{scenario} timed out after {timeout} s")
        return {"scenario": scenario, "error": "timeout"}
    if proc.returncode != 0 or not out.exists():
        err = proc.stderr.strip().splitlines()[-3:]
        log(f"{scenario} failed: {err}")
        return {"scenario": scenario, "error": " | ".join(err)}
    result: dict[str, Any] = json.loads(out.read_text())
    log(f"  -> {result}")
    return result


def ratio(a: Any, b: Any) -> float | None:
    try:
        return round(float(a) / float(b), 3) if b else None
    except (TypeError, ValueError):
        return None


@contextlib.contextmanager
def raised_fd_limit() -> Iterator[int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 20), hard))
    yield resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def large_idle_sessions(want: int = 50_000) -> int:
    """``want`` idle sessions, or as many as one process's descriptor limit allows (the server
    holds one socket per session; where RLIMIT_NOFILE's hard limit is below ``want`` and the
    process may not raise it, e.g. 20,000 in a container, that is the bound)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return want
    return max(1000, min(want, hard - 1000))


def setup_packages() -> None:
    log("apt-get update && apt-get install -y mosquitto redis-server")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], check=False, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "mosquitto", "redis-server"], check=False, env=env, timeout=900
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    dur = "1" if args.quick else str(args.duration)
    warm = "0.3" if args.quick else "0.5"
    common = ["--duration", dur, "--warmup", warm]
    sessions = str(args.sessions or (2000 if args.quick else 10_000))
    raw: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="privchat-bench-"))
    src = snapshot(args.no_snapshot, tmp)
    impls = implementation(src, tmp, args)
    procs = Procs(src, tmp, args.pure)
    procs.twins = impls["server"]["twins"]
    key = make_key(src, tmp)
    # loadgen options of the encrypted rows (none when there is no key)
    enc = ["--encrypt", "--server-key", str(key)] if key is not None else []
    try:
        # ---- PING: baseline vs server -------------------------------------------------------
        bport, sport = free_port(), free_port()
        baseline = procs.start(
            [sys.executable, "-m", "benchmarks.baseline_server", "--port", str(bport)],
            bport,
            "baseline",
        )
        server = procs.start(server_argv(src, sport, tmp / "data", key), sport, "server", True)
        spid = ["--server-pid", str(server.pid)]
        for conns, depth in (("100", "32"), ("1000", "1")):
            shape = f"{conns}x{depth}"
            raw[f"ping_baseline_{shape}"] = loadgen(
                src,
                tmp,
                "ping",
                bport,
                "--conns",
                conns,
                "--depth",
                depth,
                "--server-pid",
                str(baseline.pid),
                *common,
            )
            raw[f"ping_server_{shape}"] = loadgen(
                src, tmp, "ping", sport, "--conns", conns, "--depth", depth, *spid, *common
            )
        procs.stop(baseline)
        if enc:  # register + encrypted LOGIN of 100 users, then the same sealed PING loop
            raw["ping_server_100x32_encrypted"] = loadgen(
                src, tmp, "ping", sport, "--conns", "100", "--depth", "32", *spid, *common, *enc
            )
        # ---- messaging on the real server ---------------------------------------------------
        direct = ["--pairs", str(args.pairs), "--window", "32", *spid, *common]
        raw["direct"] = loadgen(src, tmp, "direct", sport, *direct)
        if enc:
            raw["direct_encrypted"] = loadgen(src, tmp, "direct", sport, *direct, *enc)
        group100 = ["--members", "100", "--window", "32", *spid, *common]
        raw["group100"] = loadgen(src, tmp, "group", sport, *group100)
        if enc:
            raw["group100_encrypted"] = loadgen(src, tmp, "group", sport, *group100, *enc)
        if not args.quick:
            raw["group1000"] = loadgen(
                src, tmp, "group", sport, "--members", "1000", "--window", "32", *spid, *common
            )
        procs.stop(server)
        # ---- references: mosquitto, redis ---------------------------------------------------
        for kind, binary in (("mqtt", "mosquitto"), ("redis", "redis-server")):
            path = shutil.which(binary) or (
                f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None
            )
            if path is None:
                log(f"{binary} not installed: skipped (use --setup)")
                continue
            port = free_port()
            argv = (
                [path, "-p", str(port)]
                if kind == "mqtt"
                else [
                    path,
                    "--port",
                    str(port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--bind",
                    "127.0.0.1",
                ]
            )
            try:
                ref = procs.start(argv, port, binary)
            except RuntimeError as exc:
                log(f"{binary} did not start: {exc}")
                continue
            rpid = ["--server-pid", str(ref.pid)]
            raw[f"{kind}_1to1"] = loadgen(
                src, tmp, kind, port, "--members", "1", "--window", "32", *rpid, *common
            )
            raw[f"{kind}_1to100"] = loadgen(
                src, tmp, kind, port, "--members", "100", "--window", "32", *rpid, *common
            )
            procs.stop(ref)
        # ---- direct, paced: latency ----------------------------------------------------------
        # The target (issue "Benchmarks suite"): at least 0.25 of mosquitto's 1-to-1 rate, "with
        # p99 under 5 ms at half that rate", i.e. paced at 0.125 x mosquitto 1-to-1. Two more
        # paced rows, no target: at half mosquitto's own rate (the strictest reading) and at
        # half of this server's windowed direct rate (half its measured capacity).
        mqtt_rate = raw.get("mqtt_1to1", {}).get("deliveries_per_s")
        own_rate = raw["direct"].get("msgs_per_s") or 1000
        paced_rows = {
            "direct_paced": int(mqtt_rate * 0.125) if mqtt_rate else int(own_rate) // 2,
            "direct_paced_half_capacity": int(own_rate) // 2,
        }
        if mqtt_rate:
            paced_rows["direct_paced_half_mosquitto"] = int(mqtt_rate) // 2
        sport = free_port()
        server = procs.start(server_argv(src, sport, tmp / "data2", key), sport, "server2", True)
        for row, rate in paced_rows.items():
            raw[row] = loadgen(
                src,
                tmp,
                "direct",
                sport,
                "--pairs",
                str(args.pairs),
                "--rate",
                str(max(100, rate)),
                "--server-pid",
                str(server.pid),
                *common,
            )
        procs.stop(server)
        paced_rate = paced_rows["direct_paced"]
        # ---- idle sessions on a fresh server (and, encrypted, on another fresh one) -----------
        idle_rows: list[tuple[str, list[str]]] = [("idle", ["--sessions", sessions])]
        if enc:
            idle_rows.append(("idle_encrypted", ["--sessions", sessions, *enc]))
        if not args.quick:  # the issue asks for 50,000 too: as many as the fd limit allows
            large = large_idle_sessions()
            idle_rows.append(("idle_large", ["--sessions", str(large)]))
        for n, (row, extra) in enumerate(idle_rows, start=3):
            sport = free_port()
            server = procs.start(
                server_argv(src, sport, tmp / f"data{n}", key), sport, f"server{n}", True
            )
            raw[row] = loadgen(
                src,
                tmp,
                "idle",
                sport,
                "--server-pid",
                str(server.pid),
                *extra,
                timeout=600,
            )
            procs.stop(server)
    finally:
        procs.stop_all()
    g = raw.get

    def ratio_of(row: str, field: str, ref_row: str, ref_field: str | None = None) -> float | None:
        return ratio(g(row, {}).get(field), g(ref_row, {}).get(ref_field or field))

    fps, cpu, msgs, dps = "frames_per_s", "per_server_cpu_s", "msgs_per_s", "deliveries_per_s"
    figures = {
        "ping_100x32_vs_baseline": ratio_of("ping_server_100x32", fps, "ping_baseline_100x32"),
        "ping_1000x1_vs_baseline": ratio_of("ping_server_1000x1", fps, "ping_baseline_1000x1"),
        "direct_vs_mosquitto_1to1": ratio_of("direct", msgs, "mqtt_1to1", dps),
        "direct_vs_redis_1to1": ratio_of("direct", msgs, "redis_1to1", dps),
        "ping_100x32_per_cpu_vs_baseline": ratio_of(
            "ping_server_100x32", cpu, "ping_baseline_100x32"
        ),
        "ping_1000x1_per_cpu_vs_baseline": ratio_of(
            "ping_server_1000x1", cpu, "ping_baseline_1000x1"
        ),
        "direct_paced_rate": paced_rate,
        "direct_paced_basis": "0.125 x mosquitto 1-to-1" if mqtt_rate else "half own capacity",
        "direct_paced_p99_ms": g("direct_paced", {}).get("lat_p99_ms"),
        "direct_paced_half_capacity_rate": paced_rows["direct_paced_half_capacity"],
        "direct_paced_half_capacity_p99_ms": g("direct_paced_half_capacity", {}).get("lat_p99_ms"),
        "direct_paced_half_mosquitto_rate": paced_rows.get("direct_paced_half_mosquitto"),
        "direct_paced_half_mosquitto_p99_ms": g("direct_paced_half_mosquitto", {}).get(
            "lat_p99_ms"
        ),
        "group100_vs_mosquitto_1to100": ratio_of("group100", dps, "mqtt_1to100"),
        "group100_vs_redis_1to100": ratio_of("group100", dps, "redis_1to100"),
        "idle_kib_per_session": g("idle", {}).get("kib_per_session"),
        "idle_large_sessions": g("idle_large", {}).get("sessions"),
        "idle_large_kib_per_session": g("idle_large", {}).get("kib_per_session"),
        # encrypted sessions (encrypted LOGIN + AES-256-GCM frames) / plaintext, same run
        "ping_100x32_encrypted_vs_plain": ratio_of(
            "ping_server_100x32_encrypted", fps, "ping_server_100x32"
        ),
        "ping_100x32_encrypted_vs_plain_per_cpu": ratio_of(
            "ping_server_100x32_encrypted", cpu, "ping_server_100x32"
        ),
        "direct_encrypted_vs_plain": ratio_of("direct_encrypted", msgs, "direct"),
        "direct_encrypted_vs_plain_per_cpu": ratio_of("direct_encrypted", cpu, "direct"),
        "group100_encrypted_vs_plain": ratio_of("group100_encrypted", dps, "group100"),
        "group100_encrypted_vs_plain_per_cpu": ratio_of("group100_encrypted", cpu, "group100"),
        "idle_kib_per_session_encrypted": g("idle_encrypted", {}).get("kib_per_session"),
        "idle_kib_per_session_encrypted_vs_plain": ratio_of(
            "idle_encrypted", "kib_per_session", "idle"
        ),
        "idle_logins_per_s_encrypted_vs_plain": ratio_of("idle_encrypted", "logins_per_s", "idle"),
    }
    with contextlib.suppress(Exception):
        shutil.rmtree(tmp)
    server_impl = impls["server"]
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m benchmarks.run " + " ".join(sys.argv[1:]),
        # what the privchat server ran: "compiled" or "pure", and module -> "c" | "py"
        **impl.record(server_impl),
        "implementation_detail": {
            "build": impls["build"],
            "loadgen": impl.record(impls["loadgen"]),
            "server_mapped_compiled": procs.mapped,
            "how": server_impl["how"],
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "figures": figures,
        "targets": {k: list(v) for k, v in TARGETS.items()},
        "raw": raw,
    }


def verdict(name: str, value: Any) -> str:
    if name not in TARGETS or value is None:
        return ""
    op, target = TARGETS[name]
    ok = {">=": value >= target, "<": value < target, "<=": value <= target}[op]
    return f"{op} {target}: {'PASS' if ok else 'FAIL'}"


def implementation_line(report: dict[str, Any]) -> str:
    twins = ", ".join(f"{k} {v}" for k, v in report.get("twins", {}).items())
    return f"server implementation: {report.get('implementation', 'unknown')} ({twins})"


def print_report(report: dict[str, Any]) -> None:
    raw = report["raw"]
    print(f"\n{implementation_line(report)}")
    print("\nraw figures")
    for key, res in raw.items():
        main = {
            k: v
            for k, v in res.items()
            if k.endswith("_per_s")
            or k.startswith("lat_p")
            or k
            in ("kib_per_session", "error", "errors", "sessions", "server_cpu", "per_server_cpu_s")
        }
        print(f"  {key:28} {main}")
    print(f"\nratios (same run; {implementation_line(report)})")
    for name, value in report["figures"].items():
        print(f"  {name:40} {value!s:>10}  {verdict(name, value)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="privchat_tcp benchmark suite")
    p.add_argument("--quick", action="store_true", help="~1 s per scenario, 2,000 idle sessions")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per scenario")
    p.add_argument("--pairs", type=int, default=10, help="direct: sender/receiver pairs")
    p.add_argument("--sessions", type=int, default=0, help="idle sessions (default 10,000)")
    p.add_argument("--setup", action="store_true", help="apt-get install mosquitto redis-server")
    p.add_argument("--no-snapshot", action="store_true", help="run the working tree as is")
    p.add_argument(
        "--pure",
        action="store_true",
        help="the server runs the pure-Python twins (PRIVCHAT_NO_EXTENSIONS=1), on purpose",
    )
    p.add_argument(
        "--out",
        default="",
        help="JSON file (default results/latest.json, results/quick.json with --quick; "
        "latest-pure.json, quick-pure.json with --pure)",
    )
    args = p.parse_args(argv)
    if not args.out:
        name = "quick" if args.quick else "latest"
        args.out = str(RESULTS / f"{name}{'-pure' if args.pure else ''}.json")
    if os.environ.get(impl.NO_EXT_ENV) and not args.pure:
        log(f"{impl.NO_EXT_ENV} is set here but not passed on: the server runs the compiled twins")
        log("  (--pure measures the pure-Python ones)")
    if args.setup:
        setup_packages()
    with raised_fd_limit():
        report = run(args)
    print_report(report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

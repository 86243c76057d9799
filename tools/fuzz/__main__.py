"""``python -m tools.fuzz list | smoke | campaign | run TARGET | repro TARGET FILE...``

- ``list``: the targets.
- ``run TARGET``: fuzz one target in this process (atheris/libFuzzer) over a corpus directory
  (default ``tools/fuzz/corpus/TARGET``), seeded from the malformed-input table when empty;
  ``--runs N`` and/or ``--time S``; arguments after ``--`` go to libFuzzer.
- ``smoke``: every target for ``--runs`` executions (default 100000), each in its own subprocess
  (``--jobs`` at a time, default the CPU count) over a fresh seeded corpus; prints executions and
  exec/s per target; exits 1 on a finding (the crash input is written under
  ``tools/fuzz/findings/``).
- ``campaign``: the long run: ``--time`` seconds per target (default 600), corpus kept under
  ``--dir`` (default ``tools/fuzz/corpus``, gitignored).
- ``repro TARGET FILE...``: run the target's one-input function on each file, without
  libFuzzer; prints the traceback of a finding and exits 1.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

from . import NAMES, get

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CORPUS = HERE / "corpus"
FINDINGS = HERE / "findings"


def _seed(target_name: str, directory: pathlib.Path) -> int:
    """Write the target's seeds into ``directory`` unless it already holds inputs."""
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        return 0
    target = get(target_name)
    written: set[str] = set()
    for data in target.seeds():
        data = data[: target.max_len]
        name = hashlib.sha1(data).hexdigest()
        if name not in written:
            written.add(name)
            (directory / name).write_bytes(data)
    return len(written)


def cmd_list(_: argparse.Namespace) -> int:
    for name in NAMES:
        print(f"{name:12} {get(name).doc}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import atheris

    with atheris.instrument_imports(include=["privchat_tcp"]):
        target = get(args.target)  # imports privchat_tcp, instrumented
    corpus = pathlib.Path(args.dir) if args.dir else CORPUS / target.name
    seeded = _seed(target.name, corpus)
    FINDINGS.mkdir(parents=True, exist_ok=True)
    print(f"fuzz {target.name}: {seeded} seeds written to {corpus}", file=sys.stderr, flush=True)
    argv = [
        sys.argv[0],
        f"-max_len={target.max_len}",
        "-timeout=30",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={FINDINGS}/{target.name}-",
    ]
    if args.runs is not None:
        argv.append(f"-runs={args.runs}")
    if args.time is not None:
        argv.append(f"-max_total_time={args.time}")
    if args.seed is not None:
        argv.append(f"-seed={args.seed}")
    argv += [*args.libfuzzer, str(corpus)]
    atheris.Setup(argv, _counted(target.one, args.runs))
    atheris.Fuzz()
    return 0


def _counted(one: Callable[[bytes], None], runs: int | None) -> Callable[[bytes], None]:
    """``one``, printing "fuzz-stat: N executions in T s" at each power of two and at ``runs``
    (libFuzzer's own exec/s is whole executions over whole seconds)."""
    count = 0
    start = 0.0
    clock = time.perf_counter

    def counted(data: bytes) -> None:
        nonlocal count, start
        if not count:
            start = clock()
        count += 1
        if count == runs or not count & (count - 1):
            print(f"fuzz-stat: {count} executions in {clock() - start:.3f} s", file=sys.stderr)
        one(data)

    return counted


def _child(name: str, argv: list[str]) -> tuple[str, int, str, float]:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tools.fuzz", "run", name, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        errors="replace",
    )
    return name, proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start


def _stat(output: str, key: str) -> str:
    m = re.findall(rf"stat::{key}:\s*(\d+)", output)
    return m[-1] if m else "?"


def _many(names: list[str], argv_for: dict[str, list[str]], jobs: int) -> int:
    start = time.monotonic()
    failed = []
    print(f"{'target':12} {'executions':>10} {'exec/s':>8} {'wall s':>7}  result", flush=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_child, name, argv_for[name]) for name in names]
        for future in concurrent.futures.as_completed(futures):
            name, rc, output, wall = future.result()
            execs = _stat(output, "number_of_executed_units")
            rate = "?"
            stats = re.findall(r"fuzz-stat: (\d+) executions in ([0-9.]+) s", output)
            if stats:
                n, secs = int(stats[-1][0]), float(stats[-1][1])
                rate = f"{n / secs:.0f}" if secs else "?"
            result = "ok" if rc == 0 else f"FINDING (exit {rc})"
            print(f"{name:12} {execs:>10} {rate:>8} {wall:7.1f}  {result}", flush=True)
            if rc != 0:
                failed.append((name, output))
    print(f"total {time.monotonic() - start:.1f}s for {len(names)} targets", flush=True)
    for name, output in failed:
        print(f"\n==== {name} ====\n{output[-6000:]}", flush=True)
    return 1 if failed else 0


def cmd_smoke(args: argparse.Namespace) -> int:
    names = args.targets or list(NAMES)
    with tempfile.TemporaryDirectory(prefix="privchat-fuzz-") as tmp:
        argv_for = {
            n: ["--runs", str(args.runs), "--dir", f"{tmp}/{n}", "--seed", str(args.seed)]
            for n in names
        }
        return _many(names, argv_for, args.jobs)


def cmd_campaign(args: argparse.Namespace) -> int:
    names = args.targets or list(NAMES)
    base = pathlib.Path(args.dir)
    argv_for = {n: ["--time", str(args.time), "--dir", str(base / n)] for n in names}
    return _many(names, argv_for, args.jobs)


def cmd_repro(args: argparse.Namespace) -> int:
    target = get(args.target)
    bad = 0
    for path in args.files:
        data = pathlib.Path(path).read_bytes()
        try:
            target.one(data)
        except Exception:  # noqa: BLE001 - a finding: show it
            bad += 1
            print(f"{path}: FINDING")
            traceback.print_exc()
        else:
            print(f"{path}: ok")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.fuzz", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the targets").set_defaults(fn=cmd_list)

    run = sub.add_parser("run", help="fuzz one target in this process")
    run.add_argument("target", choices=NAMES)
    run.add_argument("--runs", type=int)
    run.add_argument("--time", type=int, help="seconds")
    run.add_argument("--dir", help="corpus directory (default tools/fuzz/corpus/TARGET)")
    run.add_argument("--seed", type=int, help="libFuzzer's -seed (default: random)")
    run.add_argument("libfuzzer", nargs="*", help="after --: libFuzzer options")
    run.set_defaults(fn=cmd_run)

    jobs = os.cpu_count() or 1
    smoke = sub.add_parser("smoke", help="every target for --runs executions")
    smoke.add_argument("targets", nargs="*", choices=[[], *NAMES], default=[])
    smoke.add_argument("--runs", type=int, default=100_000)
    smoke.add_argument("--jobs", type=int, default=jobs)
    smoke.add_argument(
        "--seed",
        type=int,
        default=1,
        help="libFuzzer's -seed (default 1: CI runs the same inputs each time; 0: random)",
    )
    smoke.set_defaults(fn=cmd_smoke)

    campaign = sub.add_parser("campaign", help="the long run, corpus kept")
    campaign.add_argument("targets", nargs="*", choices=[[], *NAMES], default=[])
    campaign.add_argument("--time", type=int, default=600, help="seconds per target")
    campaign.add_argument("--dir", default=str(CORPUS))
    campaign.add_argument("--jobs", type=int, default=jobs)
    campaign.set_defaults(fn=cmd_campaign)

    repro = sub.add_parser("repro", help="run one target on input files")
    repro.add_argument("target", choices=NAMES)
    repro.add_argument("files", nargs="+")
    repro.set_defaults(fn=cmd_repro)

    args = parser.parse_args(argv)
    code: int = args.fn(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Before/after comparison of two checkouts, both on their compiled twins, in one sitting.

    python -m benchmarks.compare --before ../before --after .            # ~8 minutes
    python -m benchmarks.compare --before A --after B --rounds 2 --dispatch-runs 3

Each checkout is copied to a temporary directory (the checkouts are only read; their own builds,
caches and results are left out) and its compiled twins are built there from its own ``ext/``
(``benchmarks/impl.py``: ``setup.py build_ext --inplace``, or ``pip wheel`` without Cython); a
side that does not then run all its compiled twins stops the comparison. Then, ``--rounds``
times, in the order before, after / after, before / ... (so that a drift of the machine hits both
alike), it runs on each copy:

* ``python -m benchmarks.dispatch`` ``--dispatch-runs`` times, pinned to CPU 0: the in-process
  cost in microseconds of one MS and one PING frame, 1 and 8 frames per read (the lines
  ``N per read: MS X us/frame, PING Y us/frame``);
* ``python -m benchmarks.run --quick`` (``--run-args``) once: its ``figures`` (ratios against
  the baseline and mosquitto of the same run, p99 latency, KiB per idle session) from its JSON.

Each copy runs its own ``benchmarks/`` (module paths differ across a restructuring), with one
interpreter (``--python``, default this one) that has both checkouts' dependencies. Printed: per
figure, the median over the runs of each side with the range, and after/before of the medians;
for the dispatch costs lower is better (also after/before of the best, i.e. lowest, runs), for the
throughput ratios higher; "ranges" says "noise" where the two sides' ranges overlap. Everything,
with each run's figures, goes to ``--out`` (default benchmarks/results/compare.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import impl

ROOT = Path(__file__).resolve().parent.parent
DISPATCH_LINE = re.compile(r"^(\d+) per read: MS ([\d.]+) us/frame, PING ([\d.]+) us/frame\s*$")
SKIP = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.so",
    "*.pyd",
    "*.c",
    "*.html",
    ".*_cache",
    ".hypothesis",
    ".benchmarks",
    "results",
    "privchat-data",
)


def log(msg: str) -> None:
    print(f"[compare {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pinned(argv: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", "0", *argv]
    return argv


def git_state(tree: Path) -> str:
    """``abc1234`` (``+ changes`` when the work tree differs), without writing to ``tree``."""
    head = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    if head.returncode != 0:
        return "not a git checkout"
    dirty = subprocess.run(
        # results are not copied, so a fresh result file does not count as a change
        ["git", "--no-optional-locks", "-C", str(tree), "status", "--porcelain", "--", "."]
        + [":(exclude)benchmarks/results"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return head.stdout.strip() + (" + uncommitted changes" if dirty else "")


def prepare(name: str, tree: Path, tmp: Path, python: str) -> tuple[Path, dict[str, Any]]:
    """A copy of ``tree`` with its compiled twins built, and what it runs."""
    copy = tmp / name
    shutil.copytree(tree, copy, ignore=SKIP)
    t0 = time.monotonic()
    try:
        how = impl.build_tree(copy, python, log=tmp / f"{name}-build.log")
    except RuntimeError as exc:
        raise SystemExit(f"{name} ({tree}): {exc}") from None
    info = impl.probe_tree(copy, python=python)
    if err := impl.problem(info, "compiled"):
        raise SystemExit(f"{name} ({tree}): {err}.\nFix: {impl.FIX}.")
    info["git"] = git_state(tree)  # as copied
    log(f"{name}: {tree} ({info['git']}) built with {how} in {time.monotonic() - t0:.0f} s")
    log(f"  runs {impl.summary(info)}")
    return copy, info


def dispatch(copy: Path, python: str) -> dict[str, float]:
    """One ``python -m benchmarks.dispatch``: {"MS 1/read": us, "PING 1/read": us, ...}."""
    proc = subprocess.run(
        pinned([python, "-m", "benchmarks.dispatch"]),
        cwd=copy,
        env=impl.tree_env(copy),
        capture_output=True,
        text=True,
        timeout=600,
    )
    out: dict[str, float] = {}
    for line in proc.stdout.splitlines():
        if m := DISPATCH_LINE.match(line):
            out[f"MS, {m[1]} per read"] = float(m[2])
            out[f"PING, {m[1]} per read"] = float(m[3])
    if proc.returncode != 0 or not out:
        tail = (proc.stdout + proc.stderr).strip()[-800:]
        raise RuntimeError(f"benchmarks.dispatch in {copy} (exit {proc.returncode}): {tail}")
    return out


def suite(copy: Path, python: str, run_args: list[str], out: Path, logf: Path) -> dict[str, Any]:
    """One ``python -m benchmarks.run`` on ``copy``: its report (the JSON it wrote)."""
    with open(logf, "w") as err:
        proc = subprocess.run(
            [python, "-m", "benchmarks.run", *run_args, "--out", str(out)],
            cwd=copy,
            env=impl.tree_env(copy),
            stdout=err,
            stderr=subprocess.STDOUT,
            timeout=3600,
        )
    if proc.returncode != 0 or not out.exists():
        tail = logf.read_text().strip()[-800:]
        raise RuntimeError(f"benchmarks.run in {copy} (exit {proc.returncode}, log {logf}): {tail}")
    report: dict[str, Any] = json.loads(out.read_text())
    said = report.get("implementation")  # runners from before the field existed do not say
    if said not in (None, "compiled"):
        raise RuntimeError(f"benchmarks.run in {copy} ran the {said} twins ({out})")
    return report


def numeric_figures(report: dict[str, Any]) -> dict[str, float]:
    """The report's figures that compare: numbers, less the paced rates and session counts."""
    return {
        k: float(v)
        for k, v in report.get("figures", {}).items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and not k.endswith(("_rate", "_sessions"))
    }


def seen(before: list[float], after: list[float]) -> str:
    """ "noise" when the two sides' ranges overlap, else which side is higher."""
    if not before or not after:
        return "-"
    if min(after) > max(before):
        return "after higher"
    if max(after) < min(before):
        return "after lower"
    return "noise"


def chance(n: int) -> float:
    """How often two sides of ``n`` runs each, all from one distribution, do not overlap."""
    return 2 / math.comb(2 * n, n)


def summarize(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """figure -> {"before": [..], "after": [..], medians, "ratio": after/before of the medians}."""
    names: list[str] = []
    for side in ("before", "after"):
        for row in runs[side]:
            names += [n for n in row if n not in names]
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        entry: dict[str, Any] = {}
        for side in ("before", "after"):
            values = [row[name] for row in runs[side] if name in row]
            entry[side] = values
            entry[f"{side}_median"] = statistics.median(values) if values else None
        b, a = entry["before_median"], entry["after_median"]
        entry["ratio"] = round(a / b, 3) if a is not None and b else None
        if entry["before"] and entry["after"] and min(entry["before"]):
            entry["ratio_of_best"] = round(min(entry["after"]) / min(entry["before"]), 3)
        entry["seen"] = seen(entry["before"], entry["after"])
        out[name] = entry
    return out


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"


def print_table(title: str, rows: dict[str, dict[str, Any]], best: bool = False) -> None:
    """One line per figure; ``best``: also after/before of the lowest values (costs)."""

    def cell(entry: dict[str, Any], side: str) -> str:
        values = entry[side]
        if not values:
            return "-"
        spread = f" ({fmt(min(values))}-{fmt(max(values))})" if len(values) > 1 else ""
        return fmt(entry[f"{side}_median"]) + spread

    print(f"\n{title}")
    width = max([len(n) for n in rows] + [6])
    head = f"  {'':{width}}  {'before: median (range)':>24}  {'after: median (range)':>24}  a/b"
    print(head + ("  best a/b" if best else "") + "  ranges")
    for name, entry in rows.items():
        ratio = "-" if entry["ratio"] is None else f"{entry['ratio']:.3f}"
        line = f"  {name:{width}}  {cell(entry, 'before'):>24}  {cell(entry, 'after'):>24}  {ratio}"
        if best:
            line += f"  {entry.get('ratio_of_best', '-'):>9}"
        print(f"{line}  {entry['seen']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="before/after benchmark comparison of two checkouts")
    p.add_argument("--before", required=True, type=Path, help="the checkout before the change")
    p.add_argument("--after", required=True, type=Path, help="the checkout after it")
    p.add_argument("--rounds", type=int, default=3, help="rounds, alternating the order (3)")
    p.add_argument(
        "--dispatch-runs", type=int, default=5, help="benchmarks.dispatch runs per side a round"
    )
    p.add_argument(
        "--run-args", default="--quick", help="arguments of benchmarks.run (default --quick)"
    )
    p.add_argument("--python", default=sys.executable, help="interpreter for both checkouts")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "compare.json")
    p.add_argument("--keep", action="store_true", help="keep the copies and logs")
    args = p.parse_args(argv)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    for name, tree in trees.items():
        if not (tree / "benchmarks" / "dispatch.py").exists() or not (tree / "setup.py").exists():
            raise SystemExit(f"--{name} {tree}: not a privchat_tcp checkout")
    run_args = args.run_args.split()
    tmp = Path(tempfile.mkdtemp(prefix="privchat-compare-"))
    log(f"copies and logs in {tmp}")
    copies: dict[str, Path] = {}
    infos: dict[str, dict[str, Any]] = {}
    for name, tree in trees.items():
        copies[name], infos[name] = prepare(name, tree, tmp, args.python)
    d_runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    s_runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    reports: dict[str, list[str]] = {"before": [], "after": []}
    t0 = time.monotonic()
    for r in range(args.rounds):
        order = ("before", "after") if r % 2 == 0 else ("after", "before")
        log(f"round {r + 1} of {args.rounds}: {', '.join(order)}")
        for side in order:
            for _ in range(args.dispatch_runs):
                d_runs[side].append(dispatch(copies[side], args.python))
            log(f"  dispatch {side}: {d_runs[side][-1]}")
        for side in order:
            out = tmp / f"{side}-run{r + 1}.json"
            report = suite(copies[side], args.python, run_args, out, tmp / f"{side}-run{r + 1}.log")
            s_runs[side].append(numeric_figures(report))
            reports[side].append(str(out))
            figs = report.get("figures", {})
            log(
                f"  benchmarks.run {side}: direct/mosquitto {figs.get('direct_vs_mosquitto_1to1')}"
                f", ping 100x32/baseline {figs.get('ping_100x32_vs_baseline')}"
            )
    minutes = (time.monotonic() - t0) / 60
    dispatch_rows, suite_rows = summarize(d_runs), summarize(s_runs)
    print()
    for side in ("before", "after"):
        print(f"{side + ':':7} {trees[side]} ({infos[side]['git']}): {impl.summary(infos[side])}")
    print(
        f"{args.rounds} rounds in {minutes:.1f} min, order alternating; per round and side "
        f"{args.dispatch_runs} x benchmarks.dispatch and 1 x benchmarks.run {args.run_args}"
    )
    print_table(
        "benchmarks.dispatch, us per frame in process (lower is better)", dispatch_rows, best=True
    )
    print_table(
        f"benchmarks.run {args.run_args} figures (ratios to the same run's baseline/mosquitto/"
        "plain: higher is better; *_p99_ms, *_kib_*: lower is better)",
        suite_rows,
    )
    nd, ns = args.rounds * args.dispatch_runs, args.rounds
    print(
        f"\nranges: were the runs independent, two sides of equal code would not overlap with "
        f"p = {chance(nd):.2g} per figure for {nd} runs a side (dispatch; runs of one round are "
        f"not independent), {chance(ns):.2g} for {ns} (benchmarks.run): about "
        f"{chance(ns) * len(suite_rows):.1f} of its {len(suite_rows)} figures flagged by chance"
    )
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m benchmarks.compare "
        + " ".join(sys.argv[1:] if argv is None else argv),
        **{
            side: {"tree": str(trees[side]), "git": infos[side]["git"]} | impl.record(infos[side])
            for side in ("before", "after")
        },
        "rounds": args.rounds,
        "dispatch_runs": args.dispatch_runs,
        "run_args": args.run_args,
        "dispatch_us_per_frame": dispatch_rows,
        "run_figures": suite_rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    if args.keep:
        print(f"copies, logs and each run's JSON kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Machine instructions per MS and per PING on the in-process dispatch path, counted by valgrind's
callgrind: like ``opcount.py`` a cost the machine's load does not move, but one that also sees
the C underneath (the interpreter, the compiled twins, protobuf).

    python -m benchmarks.callgrind                             # this checkout
    cd ../before && python ../main/benchmarks/callgrind.py     # another checkout, same counter

For each kind it runs that checkout's ``benchmarks.dispatch.Bench`` under callgrind twice, with
``--small`` (500) and ``--large`` (2,500) reads of one frame, and prints
(large - small) / (large - small reads): what start-up, the warm-up and the loop's own edges
cost drops out. In each run the frames are built first; collection is zeroed at a marker call
(``os.getpgrp``) just before the loop and dumped at another (``os.getppid``) just after, so
building them is not counted either. ``PYTHONHASHSEED=0`` for both runs. ``--per-read 8``:
reads of 8 frames (with, say, ``--small 100 --large 400``), still per frame. Needs
``valgrind`` (``apt-get install -y valgrind``); about a minute per kind.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile

#: run in the checkout (cwd) under valgrind: warm up, build the frames, mark, run, mark
CHILD = """
import os, sys
sys.path.insert(0, os.getcwd())
from benchmarks.dispatch import Bench
kind, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
bench = Bench()
for _ in range(300):
    bench.run(bench.ms_frames(1))
make = bench.ms_frames if kind == "MS" else bench.ping_frames
for _ in range(50):
    bench.run(make(1))
reads = [make(k) for _ in range(n)]
run = bench.run
os.getpgrp()
for read in reads:
    run(read)
os.getppid()
"""


def instructions(
    kind: str, reads: int, python: str, per_read: int = 1, keep: str | None = None
) -> int:
    """Instructions callgrind counts between the markers of one run of ``reads`` reads of
    ``per_read`` frames each."""
    with tempfile.TemporaryDirectory(prefix="privchat-cg-") as tmp:
        out = os.path.join(tmp, "cg.out")
        env = dict(os.environ, PYTHONHASHSEED="0")
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                "--zero-before=getpgrp",
                "--dump-before=getppid",
                python,
                "-c",
                CHILD,
                kind,
                str(reads),
                str(per_read),
            ],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        dumps = sorted(p for p in glob.glob(out + ".*") if not p.endswith(".0"))
        if not dumps:
            raise SystemExit(f"callgrind wrote no dump at the marker: {glob.glob(out + '*')}")
        if keep:
            shutil.copy(dumps[0], f"{keep}.{kind}.{per_read}x{reads}")
        with open(dumps[0]) as f:
            for line in f:
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
    raise SystemExit("no totals in the callgrind dump")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="instructions per MS and PING (callgrind)")
    parser.add_argument("--small", type=int, default=500, help="reads of the short run")
    parser.add_argument("--large", type=int, default=2500, help="reads of the long run")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to run")
    parser.add_argument("--kind", choices=("MS", "PING"), action="append", help="default both")
    parser.add_argument("--per-read", type=int, default=1, help="frames per read (default 1)")
    parser.add_argument(
        "--keep", metavar="PREFIX", help="keep the dumps as PREFIX.KIND.<per read>xREADS"
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install -y valgrind")
    for kind in args.kind or ["MS", "PING"]:
        k = args.per_read
        small = instructions(kind, args.small, args.python, k, args.keep)
        large = instructions(kind, args.large, args.python, k, args.keep)
        per = (large - small) / ((args.large - args.small) * k)
        print(f"{kind}: {per:,.0f} instructions per frame ({k} per read; {small:,} / {large:,})")


if __name__ == "__main__":
    main()

"""Python bytecodes executed per MS and per PING on the in-process dispatch path: a cost that
does not move with the machine's load (``benchmarks/dispatch.py`` times the same path).

    python -m benchmarks.opcount                       # this checkout
    cd ../before && python ../main/benchmarks/opcount.py   # another checkout, same counter

It runs that checkout's ``benchmarks.dispatch.Bench`` (before and after the restructure alike:
``ms_frames``, ``ping_frames``, ``run``) with ``sys.settrace`` opcode events on, after a warm-up,
and prints bytecodes per frame with the functions that execute the most. Bytecodes are not time
(a C call counts one, whatever it costs), so read it beside the timed figures.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

sys.path.insert(0, os.getcwd())  # the checkout it is run from


def count(
    run: Callable[[list[Any]], None], reads: list[list[Any]]
) -> tuple[float, list[tuple[str, float]]]:
    """Bytecodes per frame of ``run(read)`` over ``reads``, and the top functions (per frame)."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[(os.path.basename(code.co_filename), code.co_name)] += 1
        return trace

    sys.settrace(trace)
    try:
        for read in reads:
            run(read)
    finally:
        sys.settrace(None)
    n = sum(map(len, reads))
    top = [(f"{f}:{name}", c / n) for (f, name), c in counts.most_common(15)]
    return sum(counts.values()) / n, top


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="bytecodes per MS and PING, in process")
    parser.add_argument("-n", type=int, default=200, help="reads counted (after 300 warm-up)")
    parser.add_argument("--per-read", type=int, default=1, help="frames per read (default 1)")
    args = parser.parse_args(argv)
    from benchmarks.dispatch import Bench

    bench = Bench()
    for _ in range(300):
        bench.run(bench.ms_frames(1))
    for kind, make in (("MS", bench.ms_frames), ("PING", bench.ping_frames)):
        k = args.per_read
        per, top = count(bench.run, [make(k) for _ in range(args.n)])
        print(f"{kind}: {per:.{0 if k == 1 else 1}f} bytecodes per frame ({k} per read)")
        for name, c in top:
            print(f"  {c:8.1f}  {name}")


if __name__ == "__main__":
    main()

"""The fuzz targets themselves (tools/fuzz): each target's one-input function over its whole seed
corpus (the malformed-input table's cases), under whichever twins this run uses (the suite runs
once with the compiled extensions, once with the pure ones), and the inputs of the findings so
far. The fuzzing is ``python -m tools.fuzz smoke`` (tools/test.sh) and ``campaign``."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("atheris")

from tools.fuzz import NAMES, Finding, get  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_there_are_enough_targets() -> None:
    assert len(NAMES) >= 8
    assert {"frame", "pbwire", "rpc", "compression", "proxy", "aead", "connection"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_target_over_its_seeds(name: str) -> None:
    target = get(name)
    seeds = [data[: target.max_len] for data in target.seeds()]
    assert len(seeds) >= 10, "a target without seeds from the table"
    for data in seeds:
        target.one(data)
    for data in (b"", b"\x00", b"\xff" * 64):
        target.one(data)


def test_rpc_seeds_cover_every_route() -> None:
    from tools.fuzz.sessions import World

    routes = World().routes
    seen = {data[0] for data in get("rpc").seeds() if data[0] < len(routes)}
    assert seen == set(range(len(routes)))


#: (target, input) of each finding: the bug is fixed, the input must pass
FINDINGS = [
    # the client library let a push whose body protobuf refuses (here a LOGOUT flow 2 with a
    # truncated Error) escape _on_frame as DecodeError, out of data_received: it now drops the
    # connection, as for a frame that does not open
    (
        "client",
        bytes.fromhex("000000000201000000010202020880"),
    ),
]


@pytest.mark.parametrize(("name", "data"), FINDINGS)
def test_finding_is_fixed(name: str, data: bytes) -> None:
    get(name).one(data)


def test_a_broken_twin_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    from privchat_tcp.wire import frame

    if frame.impl_c is None:
        pytest.skip("no compiled twin to compare")

    class Broken:
        __name__ = "broken"

        def __getattr__(self, name: str) -> object:
            return getattr(frame.impl_c, name)

        @staticmethod
        def split_frames(buf: bytes, max_body: int, from_client: bool = True) -> object:
            frames, consumed, violation, vseq, vcmd = frame.impl_py.split_frames(
                buf, max_body, from_client
            )
            return frames[:-1], consumed, violation, vseq, vcmd

    monkeypatch.setattr(frame, "impl_c", Broken())
    with pytest.raises(Finding):
        get("frame").one(b"\x00" + frame.encode_header(0, 1, 3, 0, 0))


def test_cli_list_and_repro(tmp_path: pathlib.Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tools.fuzz", "list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert all(name in out for name in NAMES)
    case = tmp_path / "input"
    case.write_bytes(b"\x00" + bytes(12))
    done = subprocess.run(
        [sys.executable, "-m", "tools.fuzz", "repro", "frame", str(case)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr

"""The benchmark load generator still drives the server it measures.

``benchmarks/loadgen.py`` takes logged-in clients' transports over for its hot loop; when the
client library changes shape that hand-over breaks and the benchmarks stop measuring anything.
Each scenario runs briefly against a real server over loopback and must deliver frames with no
errors (the figures themselves belong to ``benchmarks/``, not to this test).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ServerThread

ROOT = Path(__file__).resolve().parent.parent

COUNTED = {"ping": "frames", "direct": "delivered", "group": "deliveries"}


@pytest.mark.parametrize(
    "scenario,extra",
    [
        ("ping", ["--conns", "4", "--depth", "4"]),
        ("direct", ["--pairs", "2", "--window", "4"]),
        ("group", ["--members", "5", "--window", "4"]),
    ],
)
def test_loadgen_scenario_delivers_without_errors(
    make_server: Callable[..., ServerThread], scenario: str, extra: list[str], tmp_path: Path
) -> None:
    srv = make_server(
        rate_per_connection=0.0,
        rate_per_user=0.0,
        conn_rate_per_ip=0.0,
        login_rate_per_ip=0.0,
        max_devices_per_user=0,
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.loadgen",
            scenario,
            "--port",
            str(srv.port),
            "--duration",
            "0.5",
            "--warmup",
            "0.1",
            "--json",
            str(tmp_path / "result.json"),
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["scenario"] == scenario
    assert result.get("errors", 0) == 0
    assert result[COUNTED[scenario]] > 0


def test_loadgen_times_acknowledgements_and_reads_the_servers_window(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    """``--ack-latency`` and ``--admin-port`` (benchmarks/persistence.py) against the embedded
    store: every MS reply is timed, and the window's loop lag and commits come from /metrics."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        admin = int(s.getsockname()[1])
    srv = make_server(
        rate_per_connection=0.0,
        rate_per_user=0.0,
        conn_rate_per_ip=0.0,
        login_rate_per_ip=0.0,
        max_devices_per_user=0,
        admin_port=admin,
        loop_lag_interval=0.005,
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.loadgen",
            "direct",
            "--port",
            str(srv.port),
            "--pairs",
            "2",
            "--rate",
            "400",
            "--ack-latency",
            "--admin-port",
            str(admin),
            "--duration",
            "0.5",
            "--warmup",
            "0.1",
            "--json",
            str(tmp_path / "result.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["errors"] == 0 and result["delivered"] > 0
    assert result["ack_samples"] > 0
    assert 0 < result["ack_p50_ms"] <= result["ack_p99_ms"] <= result["ack_max_ms"]
    assert result["loop_lag_samples"] > 0 and result["loop_lag_p99_ms"] is not None
    assert result["commits"] > 0 and result["batch_mean_writes"] >= 1

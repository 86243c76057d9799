"""The event-loop lag probe and the embedded store's commit histograms, read from /metrics.

Counts, not times: a test waits for a number of probe ticks, and checks that a stall it causes
on the server's loop lands in the buckets a stall that long must land in.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from conftest import ServerThread, run, user

from privchat_tcp.config import load_settings
from privchat_tcp.errors import ConfigError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metrics(port: int) -> dict[str, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    values = {}
    for line in data.partition(b"\r\n\r\n")[2].decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def wait_for(admin: int, key: str, at_least: float, limit: int = 400) -> dict[str, float]:
    """Scrape until ``key`` reaches ``at_least`` (a bounded number of scrapes)."""
    for _ in range(limit):
        values = metrics(admin)
        if values.get(key, 0.0) >= at_least:
            return values
        time.sleep(0.02)
    raise AssertionError(f"{key} stayed below {at_least}: {values.get(key)}")


def buckets(values: dict[str, float], name: str) -> list[tuple[float, float]]:
    prefix = name + '_bucket{le="'
    rows = [
        (float("inf") if k[len(prefix) : -2] == "+Inf" else float(k[len(prefix) : -2]), v)
        for k, v in values.items()
        if k.startswith(prefix)
    ]
    return sorted(rows)


def test_the_probe_counts_ticks_into_a_histogram(make_server: Callable[..., ServerThread]) -> None:
    admin = free_port()
    make_server(admin_port=admin, loop_lag_interval=0.005, memory_only=True)
    values = wait_for(admin, "privchat_loop_lag_seconds_count", 20)
    rows = buckets(values, "privchat_loop_lag_seconds")
    assert rows[-1][0] == float("inf")
    assert rows[-1][1] == values["privchat_loop_lag_seconds_count"]
    counts = [n for _, n in rows]
    assert counts == sorted(counts)  # cumulative
    assert values["privchat_loop_lag_seconds_sum"] >= 0.0


def test_a_stalled_loop_shows_in_the_histogram(make_server: Callable[..., ServerThread]) -> None:
    admin = free_port()
    srv = make_server(admin_port=admin, loop_lag_interval=0.005, memory_only=True)
    wait_for(admin, "privchat_loop_lag_seconds_count", 5)
    before = metrics(admin)
    for _ in range(3):  # three stalls of 60 ms on the server's loop, each ticks late once
        srv.call(lambda: time.sleep(0.06))
        time.sleep(0.02)
    after = wait_for(
        admin, "privchat_loop_lag_seconds_count", before["privchat_loop_lag_seconds_count"] + 10
    )
    late = dict(buckets(after, "privchat_loop_lag_seconds"))
    early = dict(buckets(before, "privchat_loop_lag_seconds"))
    total = after["privchat_loop_lag_seconds_count"] - before["privchat_loop_lag_seconds_count"]
    within_25ms = late[0.025] - early[0.025]
    # a tick due during a 60 ms stall ran at least 5 ms late: it is over the 25 ms bound
    # unless it fell due in the stall's last 25 ms (each stall has one such tick at most)
    assert total - within_25ms >= 3, (total, within_25ms)
    lag_sum = after["privchat_loop_lag_seconds_sum"] - before["privchat_loop_lag_seconds_sum"]
    assert lag_sum >= 3 * 0.025


def test_the_probe_is_off_at_zero(make_server: Callable[..., ServerThread]) -> None:
    admin = free_port()
    srv = make_server(admin_port=admin, loop_lag_interval=0, memory_only=True)

    async def main() -> None:
        c = await user(srv.port, "lagless")
        await c.ping()
        await c.close()

    run(main())
    assert not any(k.startswith("privchat_loop_lag_seconds") for k in metrics(admin))


def test_a_bad_interval_is_refused() -> None:
    for bad in ("-1", "61"):
        try:
            load_settings(environ={"PRIVCHAT_LOOP_LAG_INTERVAL": bad}, overrides={})
        except ConfigError as exc:
            assert "loop_lag_interval" in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")


def test_the_store_reports_commit_latency_and_batch_histograms(
    make_server: Callable[..., ServerThread],
) -> None:
    admin = free_port()
    srv = make_server(admin_port=admin)

    async def main() -> None:
        a = await user(srv.port, "hist-a")
        b = await user(srv.port, "hist-b")
        for i in range(20):
            await a.send(to_user=b.user_id, text=f"m{i}", local_message_id=1000 + i)
        await a.close()
        await b.close()

    run(main())
    values = metrics(admin)
    commits = values["privchat_store_commits_total"]
    assert commits >= 20  # each acknowledged MS waited for its own commit at least
    for name in ("privchat_store_commit_seconds", "privchat_store_batch_writes"):
        rows = buckets(values, name)
        assert rows[-1][1] == values[f"{name}_count"] == commits, name
        counts = [n for _, n in rows]
        assert counts == sorted(counts), name
    assert (
        values["privchat_store_batch_writes_sum"] == values["privchat_store_committed_writes_total"]
    )
    # a commit under a microsecond is not a commit: the first bucket (0.5 ms) may hold them
    # all on a fast disk, but the sum is positive
    assert values["privchat_store_commit_seconds_sum"] > 0


def test_memory_only_has_no_store_histograms(make_server: Callable[..., ServerThread]) -> None:
    admin = free_port()
    make_server(admin_port=admin, memory_only=True)
    assert not any(k.startswith("privchat_store_commit_seconds") for k in metrics(admin))

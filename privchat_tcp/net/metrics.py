"""Metrics: the plain counters the hot path bumps (``ServerStats``), and their Prometheus text.

The hot path only bumps plain integers; ``render_metrics`` reads them when scraped
(``admin.py``), so a scrape costs the server nothing between scrapes.
"""

from __future__ import annotations

import logging
from typing import Protocol

from ..errors import STATUS_NAMES
from ..service.ports import Durability

__all__ = [
    "ServerStats",
    "MetricsSource",
    "render_metrics",
    "LATENCY_BUCKETS",
    "LOOP_LAG_BUCKETS",
]

log = logging.getLogger("privchat_tcp.admin")

#: upper bounds (seconds) of the request-handling latency histogram, per read
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)

#: upper bounds (seconds) of the event-loop lag histogram (``net/looplag.py``)
LOOP_LAG_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)

_COMMANDS = {
    1: "LOGIN",
    2: "LOGOUT",
    3: "PING",
    4: "MS",
    5: "MP",
    6: "MN",
    7: "MR",
    8: "MPS",
    9: "MPB",
    10: "SUB",
    11: "PUB",
    12: "RPC",
    13: "ACK",
}


def _by_command(counts: list[int]) -> list[tuple[str, float | int]]:
    """Label and value of each command's non-zero counter."""
    return [(f'{{command="{_COMMANDS.get(c, str(c))}"}}', n) for c, n in enumerate(counts) if n]


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class ServerStats:
    """Plain counters, bumped on the hot path and exported at scrape time."""

    __slots__ = (
        "accepted",
        "rejected_busy",
        "rejected_rate",
        "proxy_rejected",
        "frames_in",
        "frames_in_by_command",
        "frames_out_by_command",
        "bytes_out",
        "writes",
        "errors_by_status",
        "rate_limited",
        "slow_consumers",
        "timeouts",
        "latency_buckets",
        "latency_sum",
        "reads",
        "output_held",
        "loop_lag_buckets",
        "loop_lag_sum",
    )

    def __init__(self) -> None:
        self.accepted = 0
        self.rejected_busy = 0
        self.rejected_rate = 0
        self.proxy_rejected = 0
        self.frames_in = 0
        self.frames_in_by_command = [0] * 256
        self.frames_out_by_command = [0] * 256
        self.bytes_out = 0
        self.writes = 0
        self.errors_by_status = [0] * 256
        self.rate_limited = 0
        self.slow_consumers = 0
        self.timeouts = 0
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.reads = 0
        #: reads whose later frames waited: the replies before them passed the output budget
        self.output_held = 0
        #: the event-loop lag probe's ticks, by LOOP_LAG_BUCKETS (the last: over the last bound)
        self.loop_lag_buckets = [0] * (len(LOOP_LAG_BUCKETS) + 1)
        self.loop_lag_sum = 0.0


class MetricsSource(Protocol):
    """What the metrics are read from (the composition root's ``Server``)."""

    @property
    def stats(self) -> ServerStats: ...

    @property
    def connection_count(self) -> int: ...

    @property
    def sessions_total(self) -> int: ...

    @property
    def draining(self) -> bool: ...

    @property
    def store(self) -> Durability: ...


def render_metrics(server: MetricsSource) -> str:
    st = server.stats
    out: list[str] = []

    def metric(
        name: str, kind: str, help_text: str, samples: list[tuple[str, float | int]]
    ) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            out.append(f"{name}{labels} {value}")

    metric(
        "privchat_connections", "gauge", "Open TCP connections.", [("", server.connection_count)]
    )
    metric("privchat_sessions", "gauge", "Logged-in sessions.", [("", server.sessions_total)])
    metric(
        "privchat_ready",
        "gauge",
        "1 while the server accepts new connections.",
        [("", 0 if server.draining else 1)],
    )
    metric(
        "privchat_connections_accepted_total",
        "counter",
        "Connections accepted.",
        [("", st.accepted)],
    )
    metric(
        "privchat_connections_rejected_total",
        "counter",
        "Connections refused by a limit or a bad PROXY header.",
        [
            ('{reason="busy"}', st.rejected_busy),
            ('{reason="rate"}', st.rejected_rate),
            ('{reason="proxy"}', st.proxy_rejected),
        ],
    )
    metric(
        "privchat_frames_in_total",
        "counter",
        "Frames read, by command.",
        _by_command(st.frames_in_by_command),
    )
    metric(
        "privchat_frames_out_total",
        "counter",
        "Frames written (responses and pushes), by command.",
        _by_command(st.frames_out_by_command),
    )
    metric(
        "privchat_writes_total",
        "counter",
        "Socket writes (one per read or flush).",
        [("", st.writes)],
    )
    metric("privchat_bytes_out_total", "counter", "Bytes written to clients.", [("", st.bytes_out)])
    metric(
        "privchat_errors_total",
        "counter",
        "Error responses, by status.",
        [
            (f'{{status="{_esc(STATUS_NAMES.get(s, str(s)))}"}}', n)
            for s, n in enumerate(st.errors_by_status)
            if n
        ],
    )
    metric(
        "privchat_rate_limited_frames_total",
        "counter",
        "Frames answered RATE_LIMITED.",
        [("", st.rate_limited)],
    )
    metric(
        "privchat_slow_consumers_total",
        "counter",
        "Sessions ended with SLOW_CONSUMER.",
        [("", st.slow_consumers)],
    )
    metric(
        "privchat_timeouts_total",
        "counter",
        "Sessions ended for a missed login deadline, heartbeat or frame deadline.",
        [("", st.timeouts)],
    )
    metric(
        "privchat_output_held_total",
        "counter",
        "Reads whose remaining frames waited (reading paused) because the replies queued "
        "passed the output budget (push_high_water).",
        [("", st.output_held)],
    )
    try:
        store_stats = server.store.stats()
    except Exception:  # noqa: BLE001 - a scrape must not fail on the store
        log.exception("store.stats() failed")
        store_stats = {}
    metric(
        "privchat_store_items",
        "gauge",
        "Store sizes, by kind.",
        [(f'{{kind="{_esc(k)}"}}', v) for k, v in sorted(store_stats.items())],
    )
    try:
        lag = server.store.persistence_lag()
    except Exception:  # noqa: BLE001 - a scrape must not fail on the store
        log.exception("store.persistence_lag() failed")
        lag = None
    if lag is not None:  # only a store that persists has a lag
        metric(
            "privchat_persistence_lag_seconds",
            "gauge",
            "How long the oldest commit not yet durable has waited.",
            [("", lag)],
        )
    try:
        durability = server.store.durability_stats()
    except Exception:  # noqa: BLE001 - a scrape must not fail on the store
        log.exception("store.durability_stats() failed")
        durability = {}
    for key, value in sorted(durability.items()):
        kind = "counter" if key.endswith("_total") else "gauge"
        metric(
            f"privchat_store_{key}", kind, f"The store's {key.replace('_', ' ')}.", [("", value)]
        )
    try:
        histograms = server.store.durability_histograms()
    except Exception:  # noqa: BLE001 - a scrape must not fail on the store
        log.exception("store.durability_histograms() failed")
        histograms = {}
    for key, (bounds, counts, total) in sorted(histograms.items()):
        histogram(
            out, f"privchat_store_{key}", f"The store's {key.replace('_', ' ')}.", bounds, counts
        )
        out.append(f"privchat_store_{key}_sum {total}")
    histogram(
        out,
        "privchat_request_batch_seconds",
        "Time to handle the frames of one read (one read in 16).",
        LATENCY_BUCKETS,
        st.latency_buckets,
    )
    out.append(f"privchat_request_batch_seconds_sum {st.latency_sum}")
    if any(st.loop_lag_buckets):  # the probe runs (loop_lag_interval > 0)
        histogram(
            out,
            "privchat_loop_lag_seconds",
            "How late the event loop ran the lag probe's timer (loop_lag_interval).",
            LOOP_LAG_BUCKETS,
            st.loop_lag_buckets,
        )
        out.append(f"privchat_loop_lag_seconds_sum {st.loop_lag_sum}")
    return "\n".join(out) + "\n"


def histogram(
    out: list[str], name: str, help_text: str, bounds: tuple[float, ...], counts: list[int]
) -> None:
    """A histogram's HELP, TYPE, cumulative buckets and count (``counts`` has one more entry
    than ``bounds``: observations over the last bound); the caller appends ``_sum``."""
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} histogram")
    cumulative = 0
    for bound, n in zip(bounds, counts, strict=False):
        cumulative += n
        out.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
    cumulative += counts[-1]
    out.append(f'{name}_bucket{{le="+Inf"}} {cumulative}')
    out.append(f"{name}_count {cumulative}")

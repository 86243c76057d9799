"""The admin HTTP listener: ``/healthz``, ``/readyz`` and ``/metrics`` (Prometheus text format).

A tiny HTTP/1.1 server on asyncio streams (``admin_host:admin_port``; off when the port is 0). The
hot path only bumps plain integers in ``ServerStats``; this module reads them when scraped, so a
scrape costs the server nothing between scrapes. ``/readyz`` answers 503 from the start of a drain
(and before the listener is up), so a load balancer stops sending new connections.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .errors import STATUS_NAMES

if TYPE_CHECKING:
    from .server import Server

__all__ = ["AdminServer", "render_metrics", "LATENCY_BUCKETS"]

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
_MAX_REQUEST = 8192


def _by_command(counts: list[int]) -> list[tuple[str, float | int]]:
    """Label and value of each command's non-zero counter."""
    return [(f'{{command="{_COMMANDS.get(c, str(c))}"}}', n) for c, n in enumerate(counts) if n]


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(server: Server) -> str:
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
        "privchat_connections", "gauge", "Open TCP connections.", [("", len(server.connections))]
    )
    metric("privchat_sessions", "gauge", "Logged-in sessions.", [("", server.hub.sessions_total)])
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
        "Sessions ended for a missed login deadline or heartbeat.",
        [("", st.timeouts)],
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
    name = "privchat_request_batch_seconds"
    out.append(f"# HELP {name} Time to handle the frames of one read (one read in 16).")
    out.append(f"# TYPE {name} histogram")
    cumulative = 0
    for bound, n in zip(LATENCY_BUCKETS, st.latency_buckets, strict=False):
        cumulative += n
        out.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
    cumulative += st.latency_buckets[-1]
    out.append(f'{name}_bucket{{le="+Inf"}} {cumulative}')
    out.append(f"{name}_sum {st.latency_sum}")
    out.append(f"{name}_count {cumulative}")
    return "\n".join(out) + "\n"


class AdminServer:
    def __init__(self, server: Server, host: str, port: int) -> None:
        self.server = server
        self.host = host
        self.port = port
        self._srv: asyncio.Server | None = None

    async def start(self) -> AdminServer:
        self._srv = await asyncio.start_server(
            self._client, self.host, self.port, reuse_address=True
        )
        self.port = int(self._srv.sockets[0].getsockname()[1])
        log.info("admin HTTP listener on %s:%d", self.host, self.port)
        return self

    async def stop(self) -> None:
        if self._srv is not None:
            self._srv.close()
            await self._srv.wait_closed()
            self._srv = None

    def respond(self, method: str, path: str) -> tuple[int, str, str]:
        path = path.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", "method not allowed\n"
        if path == "/healthz":
            return 200, "text/plain", "ok\n"
        if path == "/readyz":
            if self.server.draining:
                return 503, "text/plain", "draining\n"
            return 200, "text/plain", "ready\n"
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(self.server)
        return 404, "text/plain", "not found\n"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                except (
                    TimeoutError,
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                    ConnectionError,
                ):
                    return
                if len(head) > _MAX_REQUEST:
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                    writer.write(
                        b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
                        b"Content-Length: 0\r\n\r\n"
                    )
                    return
                method, path, version = parts
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                if headers.get("content-length", "0") not in ("", "0"):
                    return  # no request bodies here
                status, ctype, body = self.respond(method, path)
                data = body.encode()
                keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
                reason = {
                    200: "OK",
                    404: "Not Found",
                    405: "Method Not Allowed",
                    503: "Service Unavailable",
                }.get(status, "OK")
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(data)}\r\nCache-Control: no-store\r\n"
                    f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n".encode()
                    + (b"" if method == "HEAD" else data)
                )
                await writer.drain()
                if not keep:
                    return
        except ConnectionError:
            pass
        finally:
            writer.close()

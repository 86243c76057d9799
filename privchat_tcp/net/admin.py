"""The admin HTTP listener: ``/healthz``, ``/readyz`` and ``/metrics`` (Prometheus text format).

A tiny HTTP/1.1 server on asyncio streams (``admin_host:admin_port``; off when the port is 0).
``/readyz`` answers 503 from the start of a drain (and before the listener is up), so a load
balancer stops sending new connections. It knows the server only as ``AdminSource``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

__all__ = ["AdminServer", "AdminSource"]

log = logging.getLogger("privchat_tcp.admin")

_MAX_REQUEST = 8192


class AdminSource(Protocol):
    @property
    def draining(self) -> bool: ...

    def render_metrics(self) -> str: ...


class AdminServer:
    def __init__(self, server: AdminSource, host: str, port: int) -> None:
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
            return 200, "text/plain; version=0.0.4; charset=utf-8", self.server.render_metrics()
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

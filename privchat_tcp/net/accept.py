"""Listening sockets, and accepting every pending connection per loop turn.

uvloop's own server accepts one connection per loop turn, so a busy loop admits a burst of
reconnects slowly; ``Acceptor`` accepts up to ``accept_batch`` at each readiness.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["listen", "Acceptor"]

log = logging.getLogger("privchat_tcp.server")


def listen(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Non-blocking listening sockets for every address of ``host`` (as create_server binds)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(socks) > 1:  # one free port for every address
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


class Acceptor:
    """Accepts from its own listening sockets and hands each socket to ``protocol_factory``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        socks: list[socket.socket],
        protocol_factory: Callable[[], asyncio.Protocol],
        batch: int,
        spawn: Callable[[Coroutine[Any, Any, Any]], object],
    ) -> None:
        self.loop = loop
        self.socks = socks
        self.factory = protocol_factory
        self.batch = batch
        self.spawn = spawn

    def start(self) -> None:
        for sock in self.socks:
            self.loop.add_reader(sock.fileno(), self._accept_ready, sock)

    def close(self) -> None:
        for sock in self.socks:
            if sock.fileno() >= 0:
                self.loop.remove_reader(sock.fileno())
                sock.close()
        self.socks = []

    def _accept_ready(self, sock: socket.socket) -> None:
        """Accept every pending connection now, up to ``batch``."""
        loop = self.loop
        for _ in range(self.batch):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # out of descriptors: stop accepting for a moment, the backlog waits
                    log.warning("accept failed (%s); pausing accepts for 100 ms", exc)
                    loop.remove_reader(sock.fileno())
                    loop.call_later(0.1, self._resume_accepting, sock)
                return  # ECONNABORTED and the like: the next readiness tries again
            conn.setblocking(False)
            if conn.family != socket.AF_UNIX:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.spawn(self._adopt(conn))

    def _resume_accepting(self, sock: socket.socket) -> None:
        if sock in self.socks and sock.fileno() >= 0:
            self.loop.add_reader(sock.fileno(), self._accept_ready, sock)

    async def _adopt(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.factory, conn)
        except OSError as exc:
            log.debug("accepted socket failed: %s", exc)
            conn.close()

"""The drain (SIGTERM), PROTOCOL.md section 9: leave the load balancer, then end the sessions
spread over a window so that their reconnects do not land on the other servers all at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..errors import ErrorCode, Status
from .tcp import TcpContext

__all__ = ["drain_sessions"]

log = logging.getLogger("privchat_tcp.server")


async def drain_sessions(ctx: TcpContext, close_listeners: Callable[[], None]) -> None:
    """Wait ``drain_grace`` seconds (``/readyz`` already fails), close the listeners, then end
    every session with LOGOUT flow 2 GOING_AWAY, evenly over ``drain_window`` seconds, and wait
    (up to 2 s) for the LOGOUT frames to reach the clients."""
    s = ctx.settings
    log.info(
        "draining: %d connections, grace %.1fs, window %.1fs",
        len(ctx.connections),
        s.drain_grace,
        s.drain_window,
    )
    if s.drain_grace > 0:
        await asyncio.sleep(s.drain_grace)
    close_listeners()
    conns = sorted(
        (c for c in ctx.connections if not c.closed), key=lambda c: c.session.connected_at
    )
    n = len(conns)
    window = s.drain_window
    start = ctx.clock()
    done = 0
    while done < n:
        elapsed = ctx.clock() - start
        target = n if window <= 0 else min(n, int(n * elapsed / window) + 1)
        while done < target:
            conn = conns[done]
            done += 1
            if not conn.closed:
                conn.session.end(
                    Status.GOING_AWAY, ErrorCode.SERVICE_UNAVAILABLE, "server going away; reconnect"
                )
        if done < n:
            await asyncio.sleep(min(0.05, window / n))
    deadline = ctx.clock() + 2.0
    while any(not c.lost for c in conns) and ctx.clock() < deadline:
        await asyncio.sleep(0.02)

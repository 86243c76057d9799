"""Deadlines, swept once a second for every connection at once (no timer per connection):
the PROXY header deadline, the slow-consumer timeout, the frame deadline, the login deadline,
the heartbeat and the expiry of the session's access token."""

from __future__ import annotations

import logging
import time

from ..errors import ErrorCode, Status
from .tcp import TcpContext

__all__ = ["sweep"]

log = logging.getLogger("privchat_tcp.server")


def sweep(ctx: TcpContext, now: float) -> None:
    """Apply every deadline as of ``now`` (the loop's clock)."""
    ctx.now = now
    s = ctx.settings
    login_deadline = now - s.login_timeout
    idle_deadline = now - 2 * s.heartbeat_interval
    proxy_deadline = now - s.proxy_timeout
    slow_deadline = now - s.slow_consumer_timeout
    wall = time.time()  # token expiry is in unix seconds
    frame_deadline = now - s.frame_timeout if s.frame_timeout else -1.0
    ctx.limits.sweep(now)
    stats = ctx.stats
    for conn in list(ctx.connections):
        session = conn.session
        if session.closed:
            continue
        if conn.proxy is not None:
            if session.connected_at < proxy_deadline:
                log.info("closing %s: no PROXY header in time", session.peer)
                stats.proxy_rejected += 1
                conn.abort()
            continue
        if conn.slow_since and conn.slow_since < slow_deadline:
            conn.slow_end()
            continue
        if 0.0 < conn.partial_since < frame_deadline and not conn.read_paused:
            # a frame started and never finished (slowloris): its bytes are not liveness
            stats.timeouts += 1
            log.info(
                "%s (user %d) ends: frame not completed in time", session.peer, session.user_id
            )
            session.end(Status.TIMEOUT, ErrorCode.TIMEOUT, "frame not completed in time")
            continue
        if not session.user_id:
            if session.connected_at < login_deadline:
                stats.timeouts += 1
                session.end(Status.TIMEOUT, ErrorCode.TIMEOUT, "login deadline passed")
        elif session.last_rx < idle_deadline:
            stats.timeouts += 1
            session.end(Status.TIMEOUT, ErrorCode.TIMEOUT, "heartbeat missed")
        elif session.token_exp and session.token_exp <= wall:
            # the session lives no longer than its token: the client refreshes and logs in
            session.end(Status.UNAUTHENTICATED, ErrorCode.TOKEN_EXPIRED, "token expired")

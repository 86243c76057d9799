"""Password work off the event loop, bounded: the hash pool and the login guard.

An argon2id hash costs tens of milliseconds of CPU and megabytes of memory, and anyone may ask
for one (``account/auth/login`` and ``account/user/register`` are anonymous). Run on the
loop's default executor with no bound, a flood of them queued minutes of work that kept
running after the attackers had gone, and every password login waited behind it. So:

- ``HashPool`` has its own ``hash_workers`` threads and a queue of at most ``hash_queue``
  jobs; a job over that is refused at once with BUSY (2), so a client never waits behind more
  than a bounded backlog. A job whose connection is gone when its turn comes is dropped, not
  run. The logins of clients known to their account (an address or device that logged in to
  it before) go first, so a flood from strangers cannot keep them out. The queue lives on the
  event loop's thread (only the hash itself runs in a thread).
- ``Guard`` is the session layer's ``LoginGuard`` (and the routes' ``PasswordGuard``): it asks
  ``limits.LoginLimits`` before any password work or RSA step (RATE_LIMITED, 10300) and hands
  the work to the pool.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import ErrorCode, ServiceError, Status
from ..rpc.table import Caller
from .limits import LoginLimits

__all__ = ["HashPool", "Guard"]

log = logging.getLogger("privchat_tcp.server")

_Job = tuple["asyncio.Future[Any]", Callable[[], bool], Callable[..., Any], tuple[Any, ...]]

_MESSAGES = {
    "address": "too many password attempts from this address; retry later",
    "backoff": "too many failed logins; retry later",
    "account": "too many failed logins for this account; retry later",
}


def _busy(message: str) -> ServiceError:
    return ServiceError(ErrorCode.SYSTEM_BUSY, message, Status.BUSY)


class HashPool:
    """``hash_workers`` threads for password hashing and a bounded queue in front of them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, workers: int, queue_limit: int) -> None:
        self._loop = loop
        self.workers = workers
        self.queue_limit = queue_limit
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="privchat-hash"
        )
        #: jobs of clients known to the account they log in to, served before ``_queue``
        self._first: collections.deque[_Job] = collections.deque()
        self._queue: collections.deque[_Job] = collections.deque()
        self._running = 0
        self._closed = False
        #: jobs run, dropped (their connection was gone before they started), refused (full)
        self.ran = 0
        self.dropped = 0
        self.refused = 0

    @property
    def queued(self) -> int:
        return len(self._first) + len(self._queue)

    @property
    def running(self) -> int:
        return self._running

    def submit(
        self, alive: Callable[[], bool], fn: Callable[..., Any], *args: Any, first: bool = False
    ) -> asyncio.Future[Any]:
        """Queue ``fn(*args)``; its result (or exception) arrives in the future. ``first``:
        ahead of every other job (a client known to the account), taking the place of the
        newest other job when the queue is full. Raises BUSY (2) when every thread is busy
        and the queue is full, GOING_AWAY once closed. The job is dropped (the future fails
        with BUSY) if ``alive()`` is False when it would start."""
        if self._closed:
            raise ServiceError(ErrorCode.SERVICE_UNAVAILABLE, "server going away")
        if self._running >= self.workers and self.queued >= self.queue_limit:
            self._purge()  # jobs of connections that are gone do not hold places
            if self.queued >= self.queue_limit:
                if not first or not self._queue:
                    self.refused += 1
                    raise _busy("server busy, retry later")
                self.refused += 1
                self._queue.pop()[0].set_exception(_busy("server busy, retry later"))
        fut: asyncio.Future[Any] = self._loop.create_future()
        (self._first if first else self._queue).append((fut, alive, fn, args))
        self._pump()
        return fut

    def _purge(self) -> None:
        """Drop the queued jobs whose connection is gone (or whose awaiter went away)."""
        for lane in (self._first, self._queue):
            kept = [job for job in lane if self._wanted(job)]
            lane.clear()
            lane.extend(kept)

    def _wanted(self, job: _Job) -> bool:
        """Whether a queued job is still wanted; fails the future of one that is not."""
        fut, alive = job[0], job[1]
        if fut.done():  # its awaiter went away (cancelled)
            return False
        if not alive():
            self.dropped += 1
            fut.set_exception(_busy("connection closed"))
            return False
        return True

    def _pump(self) -> None:
        first, queue = self._first, self._queue
        while self._running < self.workers and (first or queue):
            job = first.popleft() if first else queue.popleft()
            if not self._wanted(job):
                continue
            fut, _, fn, args = job
            self._running += 1
            try:
                work = self._executor.submit(fn, *args)
            except RuntimeError:  # shut down meanwhile
                self._running -= 1
                fut.cancel()
                continue
            work.add_done_callback(functools.partial(self._from_thread, fut))

    def _from_thread(self, fut: asyncio.Future[Any], work: concurrent.futures.Future[Any]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._finish, fut, work)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def _finish(self, fut: asyncio.Future[Any], work: concurrent.futures.Future[Any]) -> None:
        self._running -= 1
        self.ran += 1
        if not fut.done():
            if work.cancelled():
                fut.cancel()
            else:
                exc = work.exception()
                if exc is None:
                    fut.set_result(work.result())
                else:
                    fut.set_exception(exc)
        if not self._closed:
            self._pump()

    def close(self) -> None:
        """Refuse new jobs, forget the queued ones, stop the threads (without waiting)."""
        self._closed = True
        for lane in (self._first, self._queue):
            while lane:
                fut = lane.popleft()[0]
                if not fut.done():
                    fut.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


class Guard:
    """The ``session.LoginGuard`` of a server: ``LoginLimits`` in front of a ``HashPool``."""

    def __init__(self, limits: LoginLimits, pool: HashPool, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.pool = pool
        self.clock = clock

    def admit(self, caller: Caller, account: str | None, device_id: str) -> bool:
        reason, known = self.limits.admit(caller.address, account, device_id, self.clock())
        if reason:
            raise ServiceError(ErrorCode.RATE_LIMIT_EXCEEDED, _MESSAGES[reason])
        return known

    def settle(self, caller: Caller, account: str, device_id: str, ok: bool) -> None:
        if ok:
            self.limits.succeeded(caller.address, account, device_id, self.clock())
        else:
            self.limits.failed(caller.address, account, self.clock())

    def run(
        self, caller: Caller, fn: Callable[..., Any], *args: Any, first: bool = False
    ) -> Awaitable[Any]:
        return self.pool.submit(lambda: not caller.closed, fn, *args, first=first)

    def allow_encrypted_login(self, address: str) -> bool:
        return self.limits.allow_encrypted_login(address, self.clock())

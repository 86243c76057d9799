"""``SendQuota``'s twins (``service/_quota_py.py``, ``ext/_quota_c.pyx``) against the same clock
and the same stored bytes: every step admits or refuses alike (status and code), and the
buckets they remember are the same."""

from __future__ import annotations

import os
import random
from types import ModuleType

import pytest

from privchat_tcp.config import Settings
from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.service import _quota_py, quotas

REQUIRE_EXT = bool(os.environ.get("PRIVCHAT_REQUIRE_EXT"))
try:
    from privchat_tcp.service import _quota_c
except ImportError:
    _quota_c = None  # type: ignore[assignment]
IMPLS = [
    pytest.param(_quota_py, id="py"),
    pytest.param(
        _quota_c,
        id="c",
        marks=pytest.mark.skipif(
            _quota_c is None and not REQUIRE_EXT, reason="_quota_c is not built"
        ),
    ),
]


class _Log:
    """The stored bytes of each user (``MessageLog.user_bytes``)."""

    def __init__(self) -> None:
        self.stored: dict[int, int] = {}

    def user_bytes(self, user_id: int) -> int:
        return self.stored.get(user_id, 0)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _settings(rate: float, burst: int, stored: int) -> Settings:
    return Settings(
        jwt_secret="quota-secret-" + "0" * 32,
        rate_bytes_per_user=rate,
        burst_bytes_per_user=burst,
        max_stored_bytes_per_user=stored,
    )


def _outcome(quota: object, user_id: int, nbytes: int) -> tuple[int, int]:
    try:
        quota.take(user_id, nbytes)  # type: ignore[attr-defined]
    except ServiceError as exc:
        return exc.status, exc.code
    return 0, 0


def test_the_facade_picks_a_twin() -> None:
    assert quotas.SendQuota in (_quota_py.SendQuota, getattr(_quota_c, "SendQuota", None))
    if REQUIRE_EXT:
        assert quotas.IMPL == "c"
    assert quotas.SWEEP_INTERVAL == _quota_py.SWEEP_INTERVAL


@pytest.mark.parametrize("impl", IMPLS)
def test_rate_burst_debt_and_stored_bytes(impl: ModuleType) -> None:
    assert impl is not None, "PRIVCHAT_REQUIRE_EXT=1 but _quota_c did not import"
    log, clock = _Log(), _Clock()
    q = impl.SendQuota(_settings(1000.0, 5000, 20_000), log, clock)
    assert _outcome(q, 1, 8000) == (0, 0)  # a full bucket admits more than itself: debt
    assert _outcome(q, 1, 1) == (Status.RATE_LIMITED, ErrorCode.SEND_MESSAGE_TOO_FAST)
    clock.now += 3.0  # -3000 + 3000: empty
    assert _outcome(q, 1, 1) == (Status.RATE_LIMITED, ErrorCode.SEND_MESSAGE_TOO_FAST)
    clock.now += 1.0
    assert _outcome(q, 1, 1000) == (0, 0)
    assert _outcome(q, 2, 100) == (0, 0)  # per user
    assert q.bucket_count() == 2
    log.stored[1] = 19_500
    assert _outcome(q, 1, 600) == (Status.TOO_LARGE, ErrorCode.STORAGE_QUOTA_EXCEEDED)
    clock.now += 100.0  # both full again: swept at the next take
    assert _outcome(q, 3, 10) == (0, 0)
    assert q.bucket_count() == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_no_rate_means_only_the_stored_bytes(impl: ModuleType) -> None:
    assert impl is not None
    log = _Log()
    q = impl.SendQuota(_settings(0.0, 5000, 0), log, _Clock())
    for _ in range(100):
        assert _outcome(q, 1, 10**6) == (0, 0)
    assert q.bucket_count() == 0


def test_the_twins_agree_step_by_step() -> None:
    if _quota_c is None:
        pytest.skip("_quota_c is not built")
    rng = random.Random(9)
    for rate, burst, stored in ((1000.0, 5000, 50_000), (10.5, 300, 0), (1e6, 10, 1000)):
        logs, clocks = (_Log(), _Log()), (_Clock(), _Clock())
        py = _quota_py.SendQuota(_settings(rate, burst, stored), logs[0], clocks[0])
        c = _quota_c.SendQuota(_settings(rate, burst, stored), logs[1], clocks[1])
        for _ in range(3000):
            dt = rng.choice((0.0, 0.001, 0.05, 0.7, 2.5))
            uid = rng.randrange(1, 6)
            nbytes = rng.choice((0, 1, 10, 250, 4000, 9000))
            stored_now = rng.randrange(0, 60_000)
            for log, clock in zip(logs, clocks, strict=True):
                clock.now += dt
                log.stored[uid] = stored_now
            assert _outcome(py, uid, nbytes) == _outcome(c, uid, nbytes)
            assert py.bucket_count() == c.bucket_count()

"""``Snowflake``'s twins (``service/_ids_py.py``, ``ext/_ids_c.pyx``) draw the same ids from the
same times: bursts in one millisecond (past 4096, borrowing the next), a clock that steps
back, and times outside the compiled twin's 64-bit range."""

from __future__ import annotations

import os
import random

import pytest

from privchat_tcp.service import _ids_py, ids

REQUIRE_EXT = bool(os.environ.get("PRIVCHAT_REQUIRE_EXT"))
try:
    from privchat_tcp.service import _ids_c
except ImportError:
    if REQUIRE_EXT:
        raise
    _ids_c = None  # type: ignore[assignment]

EPOCH = _ids_py.Snowflake.EPOCH_MS


def test_the_facade_picks_a_twin() -> None:
    assert ids.Snowflake in (_ids_py.Snowflake, getattr(_ids_c, "Snowflake", None))
    if REQUIRE_EXT:
        assert ids.IMPL == "c"


def test_ids_are_unique_and_rising_within_a_millisecond() -> None:
    s = ids.Snowflake(1, 1)
    now = EPOCH + 10**9
    drawn = [s.next(now) for _ in range(5000)]  # past 4096: the next ms is borrowed
    assert drawn == sorted(drawn) and len(set(drawn)) == 5000
    assert drawn[0] >> 22 == now - EPOCH and (drawn[0] >> 12) & 0x3FF == (1 << 5) | 1


@pytest.mark.skipif(_ids_c is None, reason="_ids_c is not built")
@pytest.mark.parametrize(("datacenter", "machine"), [(1, 1), (0, 0), (31, 31), (40, 3)])
def test_the_twins_draw_the_same_ids(datacenter: int, machine: int) -> None:
    rng = random.Random(datacenter * 100 + machine)
    py, c = _ids_py.Snowflake(datacenter, machine), _ids_c.Snowflake(datacenter, machine)
    assert c.EPOCH_MS == py.EPOCH_MS
    now = EPOCH - 2000  # before the epoch, then after it
    for _ in range(20_000):
        now += rng.choice((0, 0, 0, 1, 5, -3, 1000))
        assert py.next(now) == c.next(now)
    for far in (EPOCH - 5, 0, EPOCH + (1 << 41) - 1, EPOCH + (1 << 41), EPOCH + (1 << 50)):
        assert py.next(far) == c.next(far), far
    assert py.next(now) == c.next(now)

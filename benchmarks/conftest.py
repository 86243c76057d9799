"""pytest header for ``bench_micro.py``: which twins the cases without a ``py`` / ``c`` id ran."""

from __future__ import annotations

from typing import Any

from benchmarks import impl


def pytest_report_header(config: Any) -> str:
    return f"privchat_tcp implementation: {impl.summary(impl.probe())}"

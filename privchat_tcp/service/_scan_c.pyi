"""Type stub for the compiled ``privchat_tcp.service._scan_c`` (ext/_scan_c.pyx).

It mirrors _scan_py."""

from ._scan_py import MARKERS as MARKERS
from ._scan_py import TEXT as TEXT
from ._scan_py import needs_check as needs_check
from ._scan_py import plain as plain

__all__ = ["MARKERS", "TEXT", "needs_check", "plain"]

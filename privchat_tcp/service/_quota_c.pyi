"""Type stub for the compiled ``privchat_tcp.service._quota_c`` (ext/_quota_c.pyx).

It mirrors _quota_py."""

from ._quota_py import SWEEP_INTERVAL as SWEEP_INTERVAL
from ._quota_py import SendQuota as SendQuota

__all__ = ["SendQuota", "SWEEP_INTERVAL"]

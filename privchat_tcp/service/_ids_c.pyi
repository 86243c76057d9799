"""Type stub for the compiled ``privchat_tcp.service._ids_c`` (ext/_ids_c.pyx).

It mirrors _ids_py."""

from ._ids_py import Snowflake as Snowflake

__all__ = ["Snowflake"]

"""Type stub for the compiled ``privchat_tcp.session._push_c`` (ext/_push_c.pyx).

It mirrors _push_py."""

from ._push_py import push_body as push_body

__all__ = ["push_body"]

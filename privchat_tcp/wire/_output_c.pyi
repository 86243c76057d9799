"""Type stub for the compiled ``privchat_tcp.wire._output_c`` (ext/_output_c.pyx).

It mirrors _output_py."""

from ._output_py import count_in as count_in
from ._output_py import count_out as count_out
from ._output_py import data_to_send as data_to_send
from ._output_py import send_push as send_push
from ._output_py import send_response as send_response

__all__ = ["send_response", "send_push", "data_to_send", "count_out", "count_in"]

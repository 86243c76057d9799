"""Type stub for the compiled ``privchat_tcp.wire._frame_c`` (ext/_frame_c.pyx).

It mirrors _frame_py."""

from typing import Final

HEADER_SIZE: Final[int]
VERSION: Final[int]

V_NONE: Final[int]
V_RESERVED: Final[int]
V_VERSION: Final[int]
V_TOO_LARGE: Final[int]
V_FLOW: Final[int]
V_COMPRESSION: Final[int]

def encode_header(length: int, seq: int, command: int, flags: int, status: int) -> bytes: ...
def decode_header(data: bytes | bytearray) -> tuple[int, int, int, int, int, int]: ...
def split_frames(
    buf: bytes | bytearray, max_body: int, from_client: bool = True
) -> tuple[list[tuple[int, int, int, int, bytes]], int, int, int, int]: ...

"""Command numbers and the flag bits of the header (PROTOCOL.md sections 2 and 3).

``flags``: bits 0-1 flow, bits 2-3 encryption, bits 4-5 compression, bits 6-7 reserved.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "Cmd",
    "COMMAND_NAMES",
    "FLOW_MASK",
    "FLOW_REQUEST",
    "FLOW_RESPONSE",
    "FLOW_PUSH",
    "ENC_MASK",
    "ENC_SESSION",
    "ENC_RSA",
    "ENC_E2E",
    "COMP_MASK",
    "COMP_SHIFT",
    "TRANSFORM_MASK",
    "RESERVED_MASK",
]

FLOW_MASK: Final = 0x03
FLOW_REQUEST: Final = 0
FLOW_RESPONSE: Final = 1
FLOW_PUSH: Final = 2

ENC_MASK: Final = 0x0C
ENC_SESSION: Final = 0x04  # session AES-GCM (encryption 1)
ENC_RSA: Final = 0x08  # an RSA-sealed LOGIN (encryption 2)
ENC_E2E: Final = 0x0C  # session AES-GCM around an end-to-end body (encryption 3)

COMP_MASK: Final = 0x30
COMP_SHIFT: Final = 4
TRANSFORM_MASK: Final = ENC_MASK | COMP_MASK  # a body that must be opened before it is read
RESERVED_MASK: Final = 0xC0


class Cmd:
    RESERVED: Final = 0
    LOGIN: Final = 1
    LOGOUT: Final = 2
    PING: Final = 3
    MS: Final = 4
    MP: Final = 5
    MN: Final = 6
    MR: Final = 7
    MPS: Final = 8
    MPB: Final = 9
    SUB: Final = 10
    PUB: Final = 11
    RPC: Final = 12
    ACK: Final = 13


COMMAND_NAMES: Final[dict[int, str]] = {
    v: k for k, v in vars(Cmd).items() if not k.startswith("_") and isinstance(v, int) and v
}

"""The sans-IO connection: bytes in, frames out; frames in, bytes out. No asyncio, no clock.

Theory of operation
-------------------
``receive_data(data)`` appends to a bounded receive buffer and returns every complete frame as a
``(seq, command, flags, status, body)`` tuple, using one call of the (compiled) splitter per read.
A header that breaks a rule stops parsing and reading; the frames before it are still returned,
and once they are answered ``finish_violation`` answers the broken header (PROTOCOL.md section 4)
and marks the connection closing. The
buffer never holds more than one frame header plus one body of at most ``max_body`` bytes beyond
what was already split, so it is bounded by ``max_body + 12 + one read``.

``open_body`` undoes a frame's encryption and compression, in that order. ``send`` builds a frame:
compress (when the peer accepted it and the body is over the threshold), encrypt (when the session
is encrypted), write the header with the final length, and queue it. ``data_to_send`` returns all
queued bytes as one buffer, so the adapter makes one write per read however many frames it
answered.

States: pre-login (``max_body`` is the pre-login limit, plaintext or an encryption-2 LOGIN),
logged in (limit raised; if the LOGIN was encrypted every frame both ways is encrypted), closing
(``closing`` set: the adapter writes what is queued and closes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import frame as _frame
from .compression import compress, decompress
from .errors import ErrorCode, ProtocolViolation, ServiceError, Status
from .frame import V_COMPRESSION, V_FLOW, V_RESERVED, V_TOO_LARGE, V_VERSION, Frame
from .proto import privchat_pb2 as pb

if TYPE_CHECKING:
    from .crypto import SessionCipher

__all__ = ["Connection", "Cmd", "FLOW_REQUEST", "FLOW_RESPONSE", "FLOW_PUSH", "error_body"]

FLOW_REQUEST = 0
FLOW_RESPONSE = 1
FLOW_PUSH = 2
ENC_SESSION = 0x04
ENC_RSA = 0x08
ENC_E2E = 0x0C


class Cmd:
    RESERVED = 0
    LOGIN = 1
    LOGOUT = 2
    PING = 3
    MS = 4
    MP = 5
    MN = 6
    MR = 7
    MPS = 8
    MPB = 9
    SUB = 10
    PUB = 11
    RPC = 12
    ACK = 13


_split = _frame.split_frames
_encode_header = _frame.encode_header

_VIOLATIONS = {
    V_RESERVED: None,  # close without a reply
    V_VERSION: (Status.UNSUPPORTED, ErrorCode.UNSUPPORTED_PROTOCOL, "unsupported protocol version"),
    V_TOO_LARGE: (Status.TOO_LARGE, ErrorCode.PACKET_TOO_LARGE, "frame too large"),
    V_FLOW: (Status.BAD_REQUEST, ErrorCode.INVALID_PACKET, "invalid flow"),
    V_COMPRESSION: (Status.BAD_REQUEST, ErrorCode.INVALID_PACKET, "invalid compression"),
}


def error_body(code: int, message: str) -> bytes:
    return pb.Error(code=code, message=message).SerializeToString()


class Connection:
    __slots__ = (
        "_buf",
        "max_body",
        "cipher",
        "compression",
        "compress_threshold",
        "push_seq",
        "out",
        "closing",
        "stopped",
        "pending_violation",
        "encrypted",
    )

    def __init__(self, max_body: int) -> None:
        # empty bytes, or a bytearray while holding a partial frame
        self._buf: bytes | bytearray = b""
        self.max_body = max_body
        self.cipher: SessionCipher | None = None
        self.encrypted = False
        self.compression = 0  # what we compress our frames with, 0 = none
        self.compress_threshold = 1024
        self.push_seq = 0
        self.out: list[bytes] = []
        self.closing = False
        self.stopped = False
        # (V_* code, seq, command) of a broken header that followed frames still to answer
        self.pending_violation: tuple[int, int, int] | None = None

    # ---- receiving --------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[Frame]:
        if self.closing or self.stopped:
            return []
        buf: bytes | bytearray = self._buf
        if buf:
            buf += data  # bytearray: in place
        else:
            buf = data
        frames: list[Frame]
        frames, consumed, violation, vseq, vcmd = _split(buf, self.max_body, True)
        if violation:
            self._buf = b""
            self.stopped = True  # nothing after a broken header is read
            if frames:  # answer them first; the adapter then calls finish_violation()
                self.pending_violation = (violation, vseq, vcmd)
            else:
                self._violate(violation, vseq, vcmd)
            return frames
        if consumed == len(buf):
            self._buf = b""
        elif isinstance(buf, bytearray):
            del buf[:consumed]
            self._buf = buf
        else:
            self._buf = bytearray(buf[consumed:]) if consumed else bytearray(buf)
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def finish_violation(self) -> None:
        """Answer the broken header that followed the frames just handled, and close."""
        if self.pending_violation is not None:
            violation, seq, command = self.pending_violation
            self.pending_violation = None
            if not self.closing:  # an earlier frame may have ended the connection already
                self._violate(violation, seq, command)

    def _violate(self, violation: int, seq: int, command: int) -> None:
        self.closing = True
        answer = _VIOLATIONS[violation]
        if answer is None:
            return
        status, code, message = answer
        if self.encrypted:  # on an encrypted session a broken header is tampering
            status, code, message = Status.CRYPTO, ErrorCode.PROTOCOL_ERROR, "decryption failed"
        self.send_error(seq, command, status, code, message)

    def open_body(self, seq: int, command: int, flags: int, status: int, body: bytes) -> bytes:
        """Decrypt then decompress one request body.

        Raises ProtocolViolation (CRYPTO, close) or ServiceError (BAD_REQUEST / TOO_LARGE)."""
        cipher = self.cipher
        if cipher is not None:
            if not flags & 0x0C:
                raise ProtocolViolation(
                    Status.CRYPTO,
                    ErrorCode.PROTOCOL_ERROR,
                    "plaintext frame on an encrypted session",
                    True,
                )
            enc = flags & 0x0C
            if enc == ENC_RSA:
                raise ProtocolViolation(
                    Status.CRYPTO, ErrorCode.PROTOCOL_ERROR, "decryption failed", True
                )
            body = cipher.open(seq, command, flags, status, body)
            if enc == ENC_E2E and command != Cmd.MS:
                raise ServiceError(
                    ErrorCode.INVALID_PACKET, "end-to-end encryption is allowed on MS only"
                )
        elif flags & 0x0C:
            # encryption 2 is handled by the LOGIN handler before this is called
            if self.encrypted or (flags & 0x0C) != ENC_RSA or command != Cmd.LOGIN:
                raise ProtocolViolation(
                    Status.CRYPTO, ErrorCode.PROTOCOL_ERROR, "no session keys", True
                )
        if flags & 0x30:
            if command == Cmd.LOGIN:
                raise ServiceError(ErrorCode.INVALID_PACKET, "compression is not allowed on LOGIN")
            body = decompress((flags >> 4) & 0x03, body, self.max_body)
        return body

    # ---- sending -----------------------------------------------------------------------
    def send(
        self, seq: int, command: int, flow: int, status: int, body: bytes, e2e: bool = False
    ) -> None:
        flags = flow
        if self.compression and len(body) >= self.compress_threshold:
            packed = compress(self.compression, body)
            if len(packed) < len(body):
                body = packed
                flags |= self.compression << 4
        cipher = self.cipher
        if cipher is not None:
            flags |= ENC_E2E if e2e else ENC_SESSION
            header, body = cipher.seal(seq, command, flags, status, body)
            self.out.append(header + body)
        else:
            self.out.append(_encode_header(len(body), seq, command, flags, status) + body)

    def send_response(self, seq: int, command: int, body: bytes) -> None:
        if self.cipher is None and not self.compression:  # the common case, inline
            self.out.append(_encode_header(len(body), seq, command, FLOW_RESPONSE, 0) + body)
        else:
            self.send(seq, command, FLOW_RESPONSE, 0, body)

    def send_error(self, seq: int, command: int, status: int, code: int, message: str) -> None:
        self.send(seq, command, FLOW_RESPONSE, status, error_body(code, message))

    def send_push(self, command: int, body: bytes, status: int = 0, e2e: bool = False) -> None:
        self.push_seq = seq = (self.push_seq + 1) & 0xFFFFFFFF
        self.send(seq, command, FLOW_PUSH, status, body, e2e)

    def end_session(self, status: int, code: int, message: str) -> None:
        """LOGOUT flow 2 with the reason, then close (PROTOCOL.md section 8)."""
        if not self.closing:
            self.send_push(Cmd.LOGOUT, error_body(code, message), status)
            self.closing = True

    def data_to_send(self) -> bytes:
        out = self.out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

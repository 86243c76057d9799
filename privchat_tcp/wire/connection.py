"""The sans-IO connection, for both sides: bytes in, frames out; frames in, bytes out.

No asyncio, no clock, no store, no JSON. The server's session and the client library each hold
one (``Side.SERVER`` / ``Side.CLIENT``); their adapters feed it what the socket read and write
what it queued, and never write its fields: every state change is a method of this class.

Theory of operation
-------------------
``receive_data(data)`` appends to a bounded receive buffer and returns every complete frame as a
``(seq, command, flags, status, body)`` tuple, using one call of the (compiled) splitter per read.
A header that breaks a rule stops parsing and reading (state ``STOPPED``); the frames before it
are still returned, and once they are answered ``finish_violation`` answers the broken header
(PROTOCOL.md section 4, server side) and moves to ``CLOSING``. The buffer never holds more than
one frame header plus one body of at most ``max_body`` bytes beyond what was already split, so
it is bounded by ``max_body + 12 + one read``.

``open_body`` (server) / ``open_incoming`` (client) undo a frame's encryption and compression,
in that order. ``send`` builds a frame: compress (when the peer accepted it and the body is over
the threshold), encrypt (when the session is encrypted), write the header with the final length,
and queue it. ``data_to_send`` returns all queued bytes as one buffer, so the adapter makes one
write per read however many frames it answered; ``out_bytes`` is what ``send`` and its callers
queued since (not the frames queued with ``queue_frame``: the PING fast path's pongs, bounded by
the frames read), so the adapter can stop handling a read's frames once their replies pass its
output budget.

States (``State``)::

    PRELOGIN --accept_login()/client_logged_in()--> OPEN
    PRELOGIN | OPEN --broken header--> STOPPED --finish_violation()--> CLOSING
    any --close()/end_session()--> CLOSING

``PRELOGIN``: ``max_body`` is the pre-login limit; plaintext, or an encryption-2 LOGIN.
``OPEN``: the limit is raised; if the LOGIN was encrypted every frame both ways is encrypted.
``CLOSING``: the adapter writes what is queued and closes; nothing more is read.
``closing`` is ``state is CLOSING``, kept as a plain attribute because the hot path reads it
once per frame.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from .._ext import twins
from ..errors import ErrorCode, ProtocolViolation, ServiceError, Status
from ..proto import privchat_pb2 as pb
from . import frame as _frame
from .commands import (
    COMP_MASK,
    COMP_SHIFT,
    ENC_E2E,
    ENC_MASK,
    ENC_RSA,
    ENC_SESSION,
    FLOW_RESPONSE,
    Cmd,
)
from .compression import compress, decompress
from .frame import V_COMPRESSION, V_FLOW, V_RESERVED, V_TOO_LARGE, V_VERSION, Frame

if TYPE_CHECKING:
    from collections.abc import Callable

    from .crypto import SessionCipher

__all__ = [
    "Connection",
    "Side",
    "State",
    "error_body",
    "count_in",
    "count_out",
    "CLIENT_MAX_BODY",
]

#: what a client accepts from the server in one frame
CLIENT_MAX_BODY = 64 << 20

_split = _frame.split_frames
_encode_header = _frame.encode_header

# the output path of the replies and pushes (``send_response``, ``send_push``, ``data_to_send``,
# bound as ``Connection``'s methods): a compiled twin (``ext/_output_c.pyx``) picked by
# ``_ext``, the pure one (``_output_py.py``) its spec
_output_twins = twins("privchat_tcp.wire", "output")
_output = _output_twins.impl
#: the adapter's per-frame counters (frames out by command and errors by status, frames in by
#: command): one call per write and per read, not a loop per frame
count_out = _output.count_out
count_in = _output.count_in

_VIOLATIONS = {
    V_RESERVED: None,  # close without a reply
    V_VERSION: (Status.UNSUPPORTED, ErrorCode.UNSUPPORTED_PROTOCOL, "unsupported protocol version"),
    V_TOO_LARGE: (Status.TOO_LARGE, ErrorCode.PACKET_TOO_LARGE, "frame too large"),
    V_FLOW: (Status.BAD_REQUEST, ErrorCode.INVALID_PACKET, "invalid flow"),
    V_COMPRESSION: (Status.BAD_REQUEST, ErrorCode.INVALID_PACKET, "invalid compression"),
}


class Side(enum.Enum):
    SERVER = "server"
    CLIENT = "client"


class State(enum.IntEnum):
    PRELOGIN = 0
    OPEN = 1
    STOPPED = 2
    CLOSING = 3


def error_body(code: int, message: str) -> bytes:
    return pb.Error(code=code, message=message).SerializeToString()


class Connection:
    __slots__ = (
        "side",
        "state",
        "_buf",
        "_from_client",
        "max_body",
        "cipher",
        "compression",
        "compress_threshold",
        "push_seq",
        "request_seq",
        "_out",
        "queue_frame",
        "out_bytes",
        "closing",
        "pending_violation",
        "encrypted",
    )

    def __init__(self, max_body: int, side: Side = Side.SERVER) -> None:
        self.side = side
        self.state = State.PRELOGIN
        # empty bytes, or a bytearray while holding a partial frame
        self._buf: bytes | bytearray = b""
        self._from_client = side is Side.SERVER  # which flows the splitter accepts
        self.max_body = max_body
        self.cipher: SessionCipher | None = None
        #: the LOGIN was encrypted: every later frame both ways must be
        self.encrypted = False
        self.compression = 0  # what we compress our frames with, 0 = none
        self.compress_threshold = 1024
        self.push_seq = 0
        self.request_seq = 0
        self._out: list[bytes] = []
        #: queue one whole encoded frame (the bound ``append`` of the output list: the hot
        #: paths call it once per frame without a Python-level call in between)
        self.queue_frame: Callable[[bytes], None] = self._out.append
        #: bytes queued by ``send`` and its callers since the last ``data_to_send``
        self.out_bytes = 0
        self.closing = False
        # (V_* code, seq, command) of a broken header that followed frames still to answer
        self.pending_violation: tuple[int, int, int] | None = None

    # ---- state changes -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop reading; the adapter writes what is queued, then closes."""
        self.state = State.CLOSING
        self.closing = True

    def accept_login(
        self,
        seq: int,
        reply: bytes,
        max_body: int,
        compression: int,
        compress_threshold: int,
        cipher: SessionCipher | None,
    ) -> None:
        """Server side: queue the LOGIN reply and open the session.

        The reply goes out uncompressed and, for an encrypted LOGIN, sealed with s2c counter 0
        (PROTOCOL.md 5.2); the negotiated compression applies from the next frame on."""
        self.max_body = max_body
        if cipher is not None:
            self.encrypted = True
            self.cipher = cipher
        self.send(seq, Cmd.LOGIN, FLOW_RESPONSE, 0, reply, compressible=False)
        self.compression = compression
        self.compress_threshold = compress_threshold
        if self.state is State.PRELOGIN:
            self.state = State.OPEN

    def client_logged_in(self, cipher: SessionCipher | None, compression: int = 0) -> None:
        """Client side: the server accepted the LOGIN (with ``cipher`` if it was encrypted)."""
        self.cipher = cipher
        self.encrypted = cipher is not None
        self.compression = compression
        if self.state is State.PRELOGIN:
            self.state = State.OPEN

    def set_cipher(self, cipher: SessionCipher | None) -> None:
        """Client side: seal (or stop sealing) from the next frame on, before the LOGIN reply."""
        self.cipher = cipher

    def set_compression(self, algo: int) -> None:
        """What our frames are compressed with from now on (0: none)."""
        self.compression = algo

    def drop_output(self) -> bool:
        """Forget every queued frame; True if any of them was sealed (its counter is spent)."""
        sealed = self.cipher is not None and bool(self._out)
        self._out.clear()
        self.out_bytes = 0
        return sealed

    # ---- receiving -----------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[Frame]:
        if self.state >= State.STOPPED:
            return []
        buf: bytes | bytearray = self._buf
        if buf:
            buf += data  # bytearray: in place
        else:
            buf = data
        frames: list[Frame]
        frames, consumed, violation, vseq, vcmd = _split(buf, self.max_body, self._from_client)
        if violation:
            self._buf = b""
            self.state = State.STOPPED  # nothing after a broken header is read
            if self.side is Side.CLIENT:
                self.close()
            elif frames:  # answer them first; the adapter then calls finish_violation()
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
        """Bytes of a frame started but not complete (0 at a frame boundary): the adapter
        times a started frame against its deadline (``frame_timeout``) while this is not 0."""
        return len(self._buf)

    def take_buffered(self) -> bytes:
        """Hand over the bytes of a frame started but not complete, and forget them.

        For a caller that moves the byte stream to another parser (the benchmark load
        generator takes a logged-in client's transport over for its hot loop).
        """
        data = bytes(self._buf)
        self._buf = b""
        return data

    def finish_violation(self) -> None:
        """Answer the broken header that followed the frames just handled, and close."""
        if self.pending_violation is not None:
            violation, seq, command = self.pending_violation
            self.pending_violation = None
            if not self.closing:  # an earlier frame may have ended the connection already
                self._violate(violation, seq, command)

    def _violate(self, violation: int, seq: int, command: int) -> None:
        self.close()
        answer = _VIOLATIONS[violation]
        if answer is None:
            return
        status, code, message = answer
        if self.encrypted:  # on an encrypted session a broken header is tampering
            status, code, message = Status.CRYPTO, ErrorCode.PROTOCOL_ERROR, "decryption failed"
        self.send_error(seq, command, status, code, message)

    def open_body(self, seq: int, command: int, flags: int, status: int, body: bytes) -> bytes:
        """Server side: decrypt then decompress one request body.

        Raises ProtocolViolation (CRYPTO, close) or ServiceError (BAD_REQUEST / TOO_LARGE)."""
        cipher = self.cipher
        if cipher is not None:
            enc = flags & ENC_MASK
            if not enc:
                raise ProtocolViolation(
                    Status.CRYPTO,
                    ErrorCode.PROTOCOL_ERROR,
                    "plaintext frame on an encrypted session",
                    True,
                )
            if enc == ENC_RSA:
                raise ProtocolViolation(
                    Status.CRYPTO, ErrorCode.PROTOCOL_ERROR, "decryption failed", True
                )
            body = cipher.open(seq, command, flags, status, body)
            if enc == ENC_E2E and command != Cmd.MS:
                raise ServiceError(
                    ErrorCode.INVALID_PACKET, "end-to-end encryption is allowed on MS only"
                )
        elif flags & ENC_MASK:
            # encryption 2 is handled by the LOGIN handler before this is called
            if self.encrypted or (flags & ENC_MASK) != ENC_RSA or command != Cmd.LOGIN:
                raise ProtocolViolation(
                    Status.CRYPTO, ErrorCode.PROTOCOL_ERROR, "no session keys", True
                )
        if flags & COMP_MASK:
            if command == Cmd.LOGIN:
                raise ServiceError(ErrorCode.INVALID_PACKET, "compression is not allowed on LOGIN")
            body = decompress((flags & COMP_MASK) >> COMP_SHIFT, body, self.max_body)
        return body

    def open_incoming(self, seq: int, command: int, flags: int, status: int, body: bytes) -> bytes:
        """Client side: decrypt then decompress a frame from the server.

        Raises ProtocolViolation (the frame does not open, or a plaintext frame arrived after an
        encrypted LOGIN: the client must close) or ServiceError (a bad compressed body)."""
        cipher = self.cipher
        if cipher is not None and flags & ENC_MASK:
            body = cipher.open(seq, command, flags, status, body)
        elif self.encrypted and not flags & ENC_MASK:
            # PROTOCOL.md 5.3: after an encrypted LOGIN every frame is encrypted
            raise ProtocolViolation(
                Status.CRYPTO, ErrorCode.PROTOCOL_ERROR, "plaintext frame on a sealed session", True
            )
        if flags & COMP_MASK:
            body = decompress((flags & COMP_MASK) >> COMP_SHIFT, body, self.max_body)
        return body

    # ---- sending -------------------------------------------------------------------------------
    def send(
        self,
        seq: int,
        command: int,
        flow: int,
        status: int,
        body: bytes,
        e2e: bool = False,
        compressible: bool = True,
    ) -> None:
        flags = flow
        if compressible and self.compression and len(body) >= self.compress_threshold:
            packed = compress(self.compression, body)
            if len(packed) < len(body):
                body = packed
                flags |= self.compression << COMP_SHIFT
        cipher = self.cipher
        if cipher is not None:
            flags |= ENC_E2E if e2e else ENC_SESSION
            header, body = cipher.seal(seq, command, flags, status, body)
            self._out.append(header + body)
        else:
            self._out.append(_encode_header(len(body), seq, command, flags, status) + body)
        self.out_bytes += len(body) + 12

    if TYPE_CHECKING:

        def send_response(self, seq: int, command: int, body: bytes, e2e: bool = False) -> None:
            """Queue the response frame to request ``seq`` (``_output_py.send_response``)."""

    else:
        send_response = _output.send_response

    def send_error(self, seq: int, command: int, status: int, code: int, message: str) -> None:
        self.send(seq, command, FLOW_RESPONSE, status, error_body(code, message))

    if TYPE_CHECKING:

        def send_push(self, command: int, body: bytes, status: int = 0, e2e: bool = False) -> None:
            """Queue a push frame with the next push seq (``_output_py.send_push``)."""

    else:
        send_push = _output.send_push

    def end_session(self, status: int, code: int, message: str) -> None:
        """LOGOUT flow 2 with the reason, then close (PROTOCOL.md section 8)."""
        if not self.closing:
            self.send_push(Cmd.LOGOUT, error_body(code, message), status)
            self.close()

    def send_request(
        self, command: int, body: bytes, flags: int = 0, seq: int | None = None, status: int = 0
    ) -> int:
        """Client side: queue a request; returns its seq (the next one unless given).

        The body is compressed with ``compression`` (never a LOGIN, never one whose ``flags``
        already say it is compressed) and sealed when a cipher is set (encryption 1 unless
        ``flags`` names another)."""
        if seq is None:
            self.request_seq = seq = (self.request_seq + 1) & 0xFFFFFFFF
        if self.compression and not flags & COMP_MASK and command != Cmd.LOGIN:
            body = compress(self.compression, body)
            flags |= self.compression << COMP_SHIFT
        cipher = self.cipher
        if cipher is not None:
            if not flags & ENC_MASK:
                flags |= ENC_SESSION
            header, body = cipher.seal(seq, command, flags, status, body)
            self._out.append(header + body)
        else:
            self._out.append(_encode_header(len(body), seq, command, flags, status) + body)
        return seq

    def next_request_seq(self) -> int:
        """Client side: take the next request seq (for a frame built outside, e.g. a sealed
        LOGIN, queued with ``queue_frame``)."""
        self.request_seq = seq = (self.request_seq + 1) & 0xFFFFFFFF
        return seq

    @property
    def frames(self) -> list[bytes]:
        """The frames queued, one element each (read only: the adapter counts them)."""
        return self._out

    def output_size(self) -> int:
        return sum(map(len, self._out))

    if TYPE_CHECKING:

        def data_to_send(self) -> bytes:
            """Every queued frame as one buffer (``_output_py.data_to_send``)."""

    else:
        data_to_send = _output.data_to_send

"""Targets of the wire layer: the frame splitter, pbwire and the bodies the commands decode, the
AEAD twins, decompression, the PROXY parser and the client side of the connection.

Where a compiled twin exists (``impl_c``) the target is differential: both twins get the same
input and must give the same answer, exception types included. Without a compiled build the
target checks the pure twin alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import atheris
from cryptography.exceptions import InvalidTag
from google.protobuf.message import DecodeError

from privchat_tcp.client import Client
from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.wire import aead, frame, pbwire
from privchat_tcp.wire.commands import COMP_MASK, COMP_SHIFT, Cmd
from privchat_tcp.wire.compression import GZIP, LZ4, NONE, compress, decompress
from privchat_tcp.wire.connection import Connection, Side
from privchat_tcp.wire.crypto import SessionCipher
from privchat_tcp.wire.proxy import V2_MAX, ProxyError, ProxyParser, ProxyResult

from . import Finding, Target
from .seeds import cases, frames_of, session_bytes, strip_proxy


def _impls(facade: ModuleType) -> list[ModuleType]:
    out: list[ModuleType] = [facade.impl_py]
    if facade.impl_c is not None:
        out.append(facade.impl_c)
    return out


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    """("ok", result) or ("raise", the exception's type name): what a differential compares."""
    try:
        return "ok", fn(*args)
    except (ValueError, TypeError, OverflowError, InvalidTag) as exc:
        return "raise", type(exc).__name__


# ---- 1. the frame splitter, compiled vs pure -------------------------------------------------
_MAX_BODIES = (16384, 0, 1, 12, 255, 65536, 1 << 20, 0xFFFFFFFF)


def _reads(stream: bytes) -> list[bytes]:
    """The reads that feed ``stream`` "byte by byte": every header byte on its own, and of each
    body its first byte, the run up to its last byte, and its last byte (a run of body bytes in
    between takes the same path in both twins, and one read per byte of a 16 KiB body would make
    the target slow). Streams of at most 128 bytes: one read per byte."""
    n = len(stream)
    if n <= 128:
        return [stream[i : i + 1] for i in range(n)]
    cuts: list[int] = []
    pos = 0
    while pos < n:
        cuts += range(pos + 1, min(pos + 12, n) + 1)
        if pos + 12 > n:
            break
        end = pos + 12 + int.from_bytes(stream[pos : pos + 4], "big")
        cuts += [c for c in (pos + 13, end - 1, end) if pos + 12 < c <= n]
        pos = end
    ends = sorted(set(cuts) | {n})
    return [stream[a:b] for a, b in zip([0, *ends], ends, strict=False) if b > a]


def _bytewise(impl: ModuleType, reads: list[bytes], max_body: int, from_client: bool) -> Any:
    """Feed the reads one at a time, as a connection buffers them."""
    frames: list[Any] = []
    buf = bytearray()
    dropped = 0
    for chunk in reads:
        buf += chunk
        got, consumed, violation, vseq, vcmd = impl.split_frames(buf, max_body, from_client)
        frames += got
        if violation:
            return frames, dropped + consumed, violation, vseq, vcmd
        del buf[:consumed]
        dropped += consumed
    return frames, dropped, 0, 0, 0


def frame_one(data: bytes) -> None:
    if not data:
        return
    ctl, stream = data[0], data[1:]
    from_client = not ctl & 1
    max_body = _MAX_BODIES[(ctl >> 1) & 7]
    impls = _impls(frame)
    want = frame.impl_py.split_frames(stream, max_body, from_client)
    reads = _reads(stream)
    for impl in impls:
        for buf in (stream, bytearray(stream)):
            got = impl.split_frames(buf, max_body, from_client)
            if got != want:
                raise Finding(f"{impl.__name__}.split_frames differs: {got!r} != {want!r}")
        got = _bytewise(impl, reads, max_body, from_client)
        if got != want:
            raise Finding(f"{impl.__name__} byte by byte differs: {got!r} != {want!r}")
    head = _outcome(frame.impl_py.decode_header, stream)
    for impl in impls[1:]:
        if _outcome(impl.decode_header, stream) != head:
            raise Finding("decode_header differs")
    if head[0] == "ok":
        length, _, seq, command, flags, status = head[1]
        encoded = {impl.encode_header(length, seq, command, flags, status) for impl in impls}
        again = (length, frame.VERSION, seq, command, flags, status)
        if len(encoded) != 1 or frame.impl_py.decode_header(encoded.pop()) != again:
            raise Finding("encode_header does not give the header back")


def frame_seeds() -> Iterator[bytes]:
    for session, data in session_bytes("pre", "post", "proxy"):
        yield b"\x00" + (strip_proxy(data) if session == "proxy" else data)
    yield b"\x01" + frame.encode_header(2, 1, 3, 1, 0) + b"\x08\x01"


TARGET_FRAME = Target(
    "frame",
    "split_frames compiled vs pure: the same frames and violation, whole and byte by byte",
    frame_one,
    frame_seeds,
    max_len=4096,
)


# ---- 2. pbwire twins and the protobuf bodies the commands decode ------------------------------
#: what the server's commands (and the client library) decode, by the first input byte
MESSAGES: tuple[Any, ...] = (
    pb.SendMessageRequest,
    pb.AuthorizationRequest,
    pb.PingRequest,
    pb.DisconnectRequest,
    pb.GetDifferenceRequest,
    pb.MessageRevokeRequest,
    pb.AckRequest,
    pb.SubscribeRequest,
    pb.RpcRequest,
    pb.MessageContent,
    pb.PushMessageRequest,
    pb.PushBatchRequest,
    pb.MessageNotify,
    pb.PublishRequest,
    pb.Error,
    pb.AuthorizationResponse,
    pb.RpcResponse,
)
_BY_COMMAND = {
    Cmd.MS: 0,
    Cmd.LOGIN: 1,
    Cmd.PING: 2,
    Cmd.LOGOUT: 3,
    Cmd.MP: 4,
    Cmd.MR: 5,
    Cmd.ACK: 6,
    Cmd.SUB: 7,
    Cmd.RPC: 8,
}
_U64 = (1 << 64) - 1


def _send_fields(msg: Any) -> tuple[int, int, int, int, int, bytes]:
    return (
        msg.client_seq,
        msg.local_message_id,
        msg.channel_id,
        msg.channel_type,
        msg.message_type,
        msg.payload,
    )


def _encoders(impls: list[ModuleType], body: bytes) -> None:
    """The encoders twins on values read from the input: the same bytes, and protobuf's."""
    fdp = atheris.FuzzedDataProvider(hashlib.sha256(body).digest() * 2)
    a, b, c = (fdp.ConsumeIntInRange(0, _U64) for _ in range(3))
    small = fdp.ConsumeIntInRange(0, 0xFFFFFFFF)
    results = {
        (
            impl.varint(a),
            impl.field_varint(1 + small % 29, b),
            impl.field_bytes(1 + small % 29, body[:64]),
            impl.notify(a, small, c),
            impl.send_response(small, a, b, c, small, a),
        )
        for impl in impls
    }
    if len(results) != 1:
        raise Finding("pbwire encoders differ between the twins")
    notify = pb.MessageNotify(channel_id=a, channel_type=small, pts=c).SerializeToString()
    if results.pop()[3] != notify:
        raise Finding("pbwire.notify is not protobuf's encoding")


def pbwire_one(data: bytes) -> None:
    if not data:
        return
    sel, body = data[0] % len(MESSAGES), data[1:]
    impls = _impls(pbwire)
    fast = [impl.decode_send_request(body) for impl in impls]
    if any(f != fast[0] for f in fast):
        raise Finding(f"decode_send_request differs between the twins: {fast!r}")
    if fast[0] is not None:
        try:
            msg = pb.SendMessageRequest.FromString(body)
        except DecodeError:
            raise Finding("decode_send_request accepts what protobuf refuses") from None
        if _send_fields(msg) != fast[0]:
            raise Finding("decode_send_request is not protobuf's answer")
    try:
        msg = MESSAGES[sel].FromString(body)
    except DecodeError:
        pass
    else:
        again = msg.SerializeToString()
        if MESSAGES[sel].FromString(again) != msg:
            raise Finding("a decoded body does not encode back to itself")
    _encoders(impls, body)


def pbwire_seeds() -> Iterator[bytes]:
    for _, data in session_bytes("pre", "post"):
        for _, command, _, _, body in frames_of(data):
            if command in _BY_COMMAND:
                yield bytes((_BY_COMMAND[command],)) + body
    yield b"\x00" + bytes.fromhex("1001180228033004380a5a027b7d")


TARGET_PBWIRE = Target(
    "pbwire",
    "decode_send_request twins vs protobuf; every body the commands decode; encoder twins",
    pbwire_one,
    pbwire_seeds,
    max_len=2048,
)


# ---- 6. the AEAD open path, twins differential ----------------------------------------------
def aead_one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    key = fdp.ConsumeBytes(32 if fdp.ConsumeIntInRange(0, 15) else fdp.ConsumeIntInRange(0, 40))
    nonce = fdp.ConsumeBytes(12 if fdp.ConsumeIntInRange(0, 15) else fdp.ConsumeIntInRange(0, 20))
    aad = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 32))
    flip = fdp.ConsumeIntInRange(0, 1 << 16)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    impls = _impls(aead)
    openers = [_outcome(impl.Opener, key) for impl in impls]
    sealers = [_outcome(impl.Sealer, key) for impl in impls]
    if {o[0] for o in openers + sealers} != {openers[0][0]}:
        raise Finding("the twins disagree on the key")
    if openers[0][0] != "ok":
        if len({o[1] for o in openers + sealers}) != 1:
            raise Finding("the twins refuse the key differently")
        return
    opened = [_outcome(o[1].decrypt, nonce, body, aad) for o in openers]
    if any(o != opened[0] for o in opened):
        raise Finding(f"Opener.decrypt differs between the twins: {opened!r}")
    sealed = [_outcome(s[1].encrypt, nonce, body, aad) for s in sealers]
    if any(s != sealed[0] for s in sealed):
        raise Finding("Sealer.encrypt differs between the twins")
    if sealed[0][0] != "ok":
        return
    ct: bytes = sealed[0][1]
    if len(ct) != len(body) + 16:
        raise Finding("a sealed body is not the plaintext and a 16-byte tag")
    for o in openers:
        if o[1].decrypt(nonce, ct, aad) != body:
            raise Finding("a sealed body does not open")
    bad = bytearray(ct)
    bad[flip % len(bad)] ^= 1 << ((flip >> 13) & 7)
    for o in openers:
        if _outcome(o[1].decrypt, nonce, bytes(bad), aad) != ("raise", "InvalidTag"):
            raise Finding("a tampered body opened")


def aead_seeds() -> Iterator[bytes]:
    key = bytes(range(32))
    for n in (0, 1, 15, 16, 17, 64, 300):
        yield b"\x01" + key + b"\x01" + bytes(12) + b"\x04" + b"head" + b"\x00\x00" + b"x" * n
    for _, data in session_bytes("post"):
        if len(data) < 200:
            yield b"\x01" + key + b"\x01" + bytes(12) + b"\x0c" + data


TARGET_AEAD = Target(
    "aead",
    "AES-256-GCM Opener/Sealer twins: same plaintext or same error; seal opens, tamper fails",
    aead_one,
    aead_seeds,
    max_len=1024,
)


# ---- 4. decompression ------------------------------------------------------------------------
_LIMITS = (16384, 0, 100, 1 << 20)
_DECOMPRESS_CODES = {
    ErrorCode.PACKET_TOO_LARGE: Status.TOO_LARGE,
    ErrorCode.DECODING_ERROR: Status.BAD_REQUEST,
}


def compression_one(data: bytes) -> None:
    if not data:
        return
    ctl, body = data[0], data[1:]
    algo, limit = ctl & 3, _LIMITS[(ctl >> 2) & 3]
    try:
        out = decompress(algo, body, limit)
    except ServiceError as exc:
        if _DECOMPRESS_CODES.get(exc.code) != exc.status:
            raise Finding(f"decompress failed with {exc.code}/{exc.status}") from exc
        return
    if len(out) > limit:
        raise Finding(f"decompress gave {len(out)} bytes past its limit {limit}")
    if algo == 3:
        raise Finding("compression 3 decompressed")
    if algo in (GZIP, LZ4):
        if decompress(algo, compress(algo, out), limit) != out:
            raise Finding("compress then decompress is not the identity")


def compression_seeds() -> Iterator[bytes]:
    for _, data in session_bytes("pre", "post"):
        for _, _, flags, _, body in frames_of(data, 1 << 26):
            algo = (flags & COMP_MASK) >> COMP_SHIFT
            if algo:
                yield bytes((algo,)) + body
                yield bytes((algo | 4,)) + body
    yield bytes((GZIP | 8,)) + compress(GZIP, b"\0" * 200_000)
    yield bytes((LZ4 | 8,)) + compress(LZ4, b"\0" * 200_000)
    yield bytes((NONE,)) + b"x" * 100


TARGET_COMPRESSION = Target(
    "compression",
    "gzip and lz4 decompress: bounded by the limit, only DECODING_ERROR/PACKET_TOO_LARGE",
    compression_one,
    compression_seeds,
    max_len=16384,
)


# ---- 5. the PROXY v1/v2 parser ---------------------------------------------------------------
_PROXY_MAX = (V2_MAX, 16, 28, 52, 300)


def _proxy_feed(chunks: list[bytes], max_v2: int) -> tuple[str, Any]:
    """Feed the chunks until the header is complete: ("done", version, source, rest + what
    followed), ("error", None), or ("more", None)."""
    parser = ProxyParser(max_v2)
    for i, chunk in enumerate(chunks):
        try:
            result = parser.feed(chunk)
        except ProxyError:
            return "error", None
        if result is not None:
            if not isinstance(result, ProxyResult):
                raise Finding("feed returned something else than a ProxyResult")
            after = result.rest + b"".join(chunks[i + 1 :])
            return "done", (result.version, result.source, after)
    return "more", None


def proxy_one(data: bytes) -> None:
    if len(data) < 2:
        return
    max_v2, cut, stream = _PROXY_MAX[data[0] % len(_PROXY_MAX)], data[1], data[2:]
    whole = _proxy_feed([stream], max_v2)
    if whole[0] == "done":
        version, source, _ = whole[1]
        if version not in (1, 2):
            raise Finding(f"PROXY version {version}")
        if source is not None and not (isinstance(source[0], str) and 0 <= source[1] <= 65535):
            raise Finding(f"PROXY source {source!r}")
    splits = (
        [stream[i : i + 1] for i in range(len(stream))],
        [stream[:cut], stream[cut:]],
        [b"", stream],
    )
    for chunks in splits:
        got = _proxy_feed(chunks, max_v2)
        if got != whole:
            raise Finding(f"fed in {len(chunks)} reads: {got!r}, whole: {whole!r}")


def proxy_seeds() -> Iterator[bytes]:
    for _, data in session_bytes("proxy"):
        yield b"\x00\x10" + data
        yield b"\x00\x05" + data[:120]
    yield b"\x00\x08" + b"PROXY TCP4 192.0.2.1 198.51.100.1 4444 9001\r\n"


TARGET_PROXY = Target(
    "proxy",
    "ProxyParser v1/v2: only ProxyError; the same answer whole, byte by byte and in two reads",
    proxy_one,
    proxy_seeds,
    max_len=1024,
)


# ---- 8. the client side: its Connection and the client library's frame handling ---------------
#: the fuzz session secret (the client target's and the crypto target's encrypted sessions)
SECRET = bytes(range(100, 132))


class _Proto:
    """What ``Client._on_frame`` reads of its adapter: the connection, no transport."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.transport = None


def client_one(data: bytes) -> None:
    if not data:
        return
    ctl, stream = data[0], data[1:]
    conn = Connection(1 << 20, Side.CLIENT)
    if ctl & 1:
        conn.client_logged_in(SessionCipher(*_client_keys()), compression=ctl >> 1 & 3)
    client = Client("fuzz.invalid", 0, track=False, auto_ack=False)
    client._proto = _Proto(conn)  # type: ignore[assignment]
    chunks = [stream] if not ctl & 8 else [stream[i : i + 1] for i in range(len(stream))]
    for chunk in chunks:
        for seq, command, flags, status, body in conn.receive_data(chunk):
            client._on_frame(seq, command, flags, status, body)
        if conn.closing:
            break


def _client_keys() -> tuple[bytes, bytes, int, int]:
    from privchat_tcp.wire.crypto import derive_keys

    k_c2s, k_s2c = derive_keys(SECRET)
    return k_c2s, k_s2c, 1, 0


def _server_frames() -> Iterator[bytes]:
    """Frames a server sends: pushes and responses, plaintext and sealed."""
    server = Connection(1 << 20, Side.SERVER)
    server.send_push(
        Cmd.MPS, pb.PushMessageRequest(channel_id=1, message_seq=1).SerializeToString()
    )
    server.send_push(Cmd.MN, pb.MessageNotify(channel_id=1, pts=2).SerializeToString())
    server.send_push(Cmd.PUB, pb.PublishRequest(topic="t").SerializeToString())
    server.send_push(Cmd.LOGOUT, pb.Error(code=1, message="x").SerializeToString(), 2)
    server.send_response(5, Cmd.PING, b"\x08\x01")
    yield b"\x00" + server.data_to_send()
    k_c2s, k_s2c = _client_keys()[:2]
    sealed = Connection(1 << 20, Side.SERVER)
    sealed.accept_login(1, b"", 1 << 20, 0, 1024, SessionCipher(k_s2c, k_c2s, 0, 1))
    sealed.send_push(Cmd.MPB, pb.PushBatchRequest().SerializeToString())
    yield b"\x01" + sealed.data_to_send()


def client_seeds() -> Iterator[bytes]:
    yield from _server_frames()
    for _, _, data in cases()[:400]:
        yield b"\x00" + data


TARGET_CLIENT = Target(
    "client",
    "the client library fed server bytes: its Connection (plaintext and sealed) and _on_frame",
    client_one,
    client_seeds,
    max_len=2048,
)

__all__ = [
    "TARGET_FRAME",
    "TARGET_PBWIRE",
    "TARGET_AEAD",
    "TARGET_COMPRESSION",
    "TARGET_PROXY",
    "TARGET_CLIENT",
    "MESSAGES",
    "SECRET",
]

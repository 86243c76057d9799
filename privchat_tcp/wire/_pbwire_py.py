"""Hand-built protobuf encodings for the hot frames (pure-Python twin of ``_pbwire_c``).

Building a protobuf object costs several microseconds; these helpers write the same bytes
directly (fields are emitted in field-number order, as protobuf itself does, and zero values are
omitted, as proto3 does), so PONG, SendMessageResponse, MPB and MP replies need no objects.
A test checks each one against the generated classes.
"""

from __future__ import annotations

__all__ = [
    "varint",
    "field_varint",
    "field_bytes",
    "pong",
    "send_response",
    "batch",
    "difference",
    "notify",
    "push",
    "decode_send_request",
]


def varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    if not value:
        return b""
    return varint(number << 3) + varint(value)


def field_bytes(number: int, value: bytes) -> bytes:
    return varint((number << 3) | 2) + varint(len(value)) + value


def pong(now_ms: int) -> bytes:
    """PongResponse{timestamp}."""
    return field_varint(1, now_ms)


def send_response(
    client_seq: int, message_id: int, pts: int, channel_id: int, channel_type: int, timestamp: int
) -> bytes:
    """SendMessageResponse with reason_code 0."""
    return b"".join(
        (
            field_varint(1, client_seq),
            field_varint(2, message_id),
            field_varint(3, pts),
            field_varint(5, channel_id),
            field_varint(6, channel_type),
            field_varint(7, timestamp),
        )
    )


def batch(pushes: list[bytes]) -> bytes:
    """PushBatchRequest from serialized PushMessageRequests."""
    return b"".join([b"\x0a" + varint(len(p)) + p for p in pushes])


def difference(pushes: list[bytes], current_pts: int, has_more: bool, channel_id: int) -> bytes:
    """GetDifferenceResponse from serialized PushMessageRequests."""
    return b"".join([b"\x0a" + varint(len(p)) + p for p in pushes]) + (
        field_varint(2, current_pts) + field_varint(3, int(has_more)) + field_varint(4, channel_id)
    )


def notify(channel_id: int, channel_type: int, pts: int) -> bytes:
    """MessageNotify."""
    return field_varint(1, channel_id) + field_varint(2, channel_type) + field_varint(3, pts)


def _field_str(number: int, value: str) -> bytes:
    return field_bytes(number, value.encode()) if value else b""


def push(
    msg_key: str,
    server_message_id: int,
    message_seq: int,
    local_message_id: int,
    timestamp: int,
    channel_id: int,
    channel_type: int,
    message_type: int,
    topic: str,
    from_uid: int,
    payload: bytes,
    deleted: bool,
    content: bytes,
    e2e: bool,
    from_device: str,
) -> bytes:
    """PushMessageRequest (fields 1, 6, 7, 8 and 13 are always default here)."""
    return b"".join(
        (
            _field_str(2, msg_key),
            field_varint(3, server_message_id),
            field_varint(4, message_seq),
            field_varint(5, local_message_id),
            field_varint(9, timestamp),
            field_varint(10, channel_id),
            field_varint(11, channel_type),
            field_varint(12, message_type),
            _field_str(14, topic),
            field_varint(15, from_uid),
            field_bytes(16, payload) if payload else b"",
            field_varint(17, int(deleted)),
            field_bytes(18, content) if content else b"",
            field_varint(19, int(e2e)),
            _field_str(20, from_device),
        )
    )


_SEND_UINT32 = {0x10: 0, 0x30: 3, 0x38: 4}  # tag -> index: client_seq, channel_type, message_type
_SEND_UINT64 = {0x18: 1, 0x28: 2}  # local_message_id, channel_id


def decode_send_request(body: bytes) -> tuple[int, int, int, int, int, bytes] | None:
    """SendMessageRequest holding only client_seq (2), local_message_id (3), channel_id (5),
    channel_type (6), message_type (7) and payload (11), each well formed: the tuple of them.
    Anything else (another field, a malformed or oversized value): None, and the caller parses
    it with protobuf (whose answer then stands, errors included). The hot MS needs no object."""
    fields = [0, 0, 0, 0, 0]
    payload = b""
    n = len(body)
    i = 0
    while i < n:
        tag = body[i]
        i += 1
        value = 0
        shift = 0
        while True:  # a varint: at most 10 bytes, the 10th at most 1 (64 bits)
            if i >= n or shift > 63:
                return None
            b = body[i]
            i += 1
            if shift == 63 and b > 1:
                return None
            value |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        index = _SEND_UINT32.get(tag)
        if index is not None:
            if value > 0xFFFFFFFF:
                return None
            fields[index] = value
            continue
        index = _SEND_UINT64.get(tag)
        if index is not None:
            fields[index] = value
        elif tag == 0x5A:
            if value > n - i:
                return None
            payload = body[i : i + value]
            i += value
        else:
            return None
    return (fields[0], fields[1], fields[2], fields[3], fields[4], payload)

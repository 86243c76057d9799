"""The rules of a message's envelope (PrivChat reference sections 9 and 10): replies, mentions
and the metadata each content type carries.

The caller parses the payload envelope (the session layer, with ``rpc.safejson``, only when a
rule can apply: ``needs_check``) and hands the JSON object here; an end-to-end payload is never
parsed. Failures are ``ServiceError``s: a reply to a message that is not in the channel 20000,
``@all`` from a member that is neither owner nor admin 10004, anything else 20006.

What passes may add to the push payload the server builds (reference 10.2: ``reply_to``
``{message_id, sender_id, content (at most 50 characters), message_type}`` and
``is_mention_all``): ``check_content`` returns those keys, ``push_payload`` merges them into the
sender's envelope. A message with neither is relayed as sent (the hot path).
"""

from __future__ import annotations

import json
import math
import re
from types import ModuleType
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError

from .._ext import twins
from ..errors import ErrorCode, MessageNotFound, ServiceError
from ..proto import privchat_pb2 as pb
from . import _scan_py
from .channels import ChannelService
from .model import GROUP, KIND_MESSAGE, ROLE_ADMIN, ROLE_OWNER, Channel, Record
from .ports import MessageLog

__all__ = [
    "check_content",
    "needs_check",
    "plain",
    "push_payload",
    "text_of",
    "CONTENT_TYPE_NAMES",
    "MENTION_ALL",
    "MAX_MENTIONS",
    "MAX_FORWARDED",
    "REPLY_PREVIEW_CHARS",
]

#: the texts that mention everyone (reference section 9); "@alliance" is not one
MENTION_ALL = ("@all", "@全体成员", "@everyone")
_MENTION_ALL = re.compile(r"@(?:all|everyone)(?![A-Za-z0-9_])|@全体成员", re.IGNORECASE)
MAX_MENTIONS = 100
MAX_FORWARDED = 100
U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1

# ContentMessageType, 0.1.1 numbering (reference 10.1; ``rpc.views.CONTENT_TYPES``)
TEXT, IMAGE, FILE, VOICE, VIDEO, SYSTEM, AUDIO, LOCATION, CONTACT_CARD, STICKER, FORWARD = range(11)
_FILE_LIKE = (FILE, VOICE, VIDEO, AUDIO)
#: ``ContentMessageType.as_str()`` by number (0.1.1)
CONTENT_TYPE_NAMES = (
    "text",
    "image",
    "file",
    "voice",
    "video",
    "system",
    "audio",
    "location",
    "contact_card",
    "sticker",
    "forward",
)
#: how much of the replied-to message's text a reply's push carries (reference 10.2)
REPLY_PREVIEW_CHARS = 50

#: bytes whose presence in a payload may make a rule apply (a text message without any of
#: them needs no parse: the MS hot path)
_MARKERS = _scan_py.MARKERS
assert _scan_py.TEXT == TEXT

# the payload scans of the MS hot path: a compiled twin (``ext/_scan_c.pyx``) picked by
# ``_ext``, the pure one (``_scan_py.py``) its spec
_twins = twins("privchat_tcp.service", "scan")
impl_py: ModuleType = _twins.impl_py
impl_c: ModuleType | None = _twins.impl_c
IMPL = _twins.name

if TYPE_CHECKING:
    from ._scan_py import needs_check, plain
else:
    #: whether a payload's envelope must be parsed for the rules (``_scan_py.needs_check``)
    needs_check = _twins.impl.needs_check
    #: whether an MS payload is plain text that needs no rule and no JSON check
    #: (``_scan_py.plain``)
    plain = _twins.impl.plain


def _invalid(message: str) -> ServiceError:
    return ServiceError(ErrorCode.MESSAGE_CONTENT_INVALID, message)


def _u64(value: Any, what: str) -> int:
    """A u64 as PrivChat sends ids: a number or a string of digits."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= U64_MAX:
        raise _invalid(f"{what} must be a positive integer id")
    return value


def _number(value: Any, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(f"{what} must be a number")
    if not math.isfinite(value) or not low <= value <= high:
        raise _invalid(f"{what} out of range")
    return float(value)


def _opt_str(meta: dict[str, Any], key: str, required: bool = False) -> None:
    value = meta.get(key)
    if value is None:
        if required:
            raise _invalid(f"metadata.{key} is required")
        return
    if not isinstance(value, str) or (required and not value):
        raise _invalid(f"metadata.{key} must be a string")


def _opt_u32(meta: dict[str, Any], key: str) -> None:
    value = meta.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U32_MAX:
        raise _invalid(f"metadata.{key} must be an unsigned 32-bit integer")


def _check_metadata(channels: ChannelService, message_type: int, metadata: Any) -> None:
    """Per-type metadata (reference 10.2, the 0.1.1 structs)."""
    if message_type in (TEXT, SYSTEM) or message_type > FORWARD:
        return  # no metadata struct: whatever it is, the views leave out what is not JSON
    if not isinstance(metadata, dict):
        raise _invalid("this message type needs its metadata object")
    if message_type == IMAGE or message_type in _FILE_LIKE:
        if metadata.get("file_id") is None:
            raise _invalid("metadata.file_id is required")
        _u64(metadata["file_id"], "metadata.file_id")
        if message_type == IMAGE:
            _opt_str(metadata, "url")
            _opt_u32(metadata, "width")
            _opt_u32(metadata, "height")
    elif message_type == LOCATION:
        _number(metadata.get("latitude"), "metadata.latitude", -90.0, 90.0)
        _number(metadata.get("longitude"), "metadata.longitude", -180.0, 180.0)
    elif message_type == CONTACT_CARD:
        if metadata.get("user_id") is None:
            raise _invalid("metadata.user_id is required")
        if channels.find_user(_u64(metadata["user_id"], "metadata.user_id")) is None:
            raise _invalid("metadata.user_id names no user")
    elif message_type == STICKER:
        _opt_str(metadata, "sticker_id", required=True)
        _opt_str(metadata, "image_url", required=True)
    elif message_type == FORWARD:
        items = metadata.get("messages")
        if not isinstance(items, list) or not 0 < len(items) <= MAX_FORWARDED:
            raise _invalid(f"metadata.messages must be a list of 1-{MAX_FORWARDED} messages")
        for item in items:
            if not isinstance(item, dict):
                raise _invalid("each forwarded message must be an object")
            if item.get("message_id") is not None:
                _u64(item["message_id"], "metadata.messages[].message_id")
            if item.get("content") is not None and not isinstance(item["content"], str):
                raise _invalid("metadata.messages[].content must be a string")


def text_of(record: Record) -> str:
    """A stored message's text: its envelope's ``content``, its plain-text payload, or its
    MessageContent's ``searchable_content``; "" when revoked or end-to-end. The payload was
    checked within the JSON bounds when it was sent (``rpc.safejson.check_stored``)."""
    if record.revoked or record.e2e:
        return ""
    payload = record.payload
    if payload:
        if payload[:1] == b"{":
            try:
                value = json.loads(payload)
            except ValueError:
                value = None
            if isinstance(value, dict):
                text = value.get("content")
                return text if isinstance(text, str) else ""
        return payload.decode("utf-8", "replace")
    try:
        return pb.MessageContent.FromString(record.content).searchable_content
    except DecodeError:
        return ""


def push_payload(env: dict[str, Any], extra: dict[str, Any]) -> bytes:
    """The payload receivers get: the sender's envelope with what the server adds."""
    merged = dict(env)
    merged.update(extra)
    return json.dumps(merged, ensure_ascii=False, separators=(",", ":")).encode()


def check_content(
    log: MessageLog,
    channels: ChannelService,
    sender: int,
    channel: Channel,
    message_type: int,
    env: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """Check a message's envelope (``env``: the parsed payload object; None: plain text)
    against the rules of reference sections 9 and 10 before it is committed. Returns what
    the push payload adds (``reply_to``, ``is_mention_all``), or None."""
    if env is None:
        _check_metadata(channels, message_type, None)
        return None
    extra: dict[str, Any] = {}
    _check_metadata(channels, message_type, env.get("metadata"))
    reply = env.get("reply_to_message_id")
    if reply is not None:
        try:
            reply_id = _u64(reply, "reply_to_message_id")
        except ServiceError:
            raise MessageNotFound("reply_to_message_id names no message") from None
        target = log.find_message(channel.channel_id, reply_id)
        member = channel.members.get(sender)
        floor = 0 if member is None else member.join_pts
        if target is None or target.kind != KIND_MESSAGE or target.pts <= floor:
            raise MessageNotFound("reply_to_message_id names no message of this channel")
        names = CONTENT_TYPE_NAMES
        extra["reply_to"] = {
            "message_id": target.message_id,
            "sender_id": target.sender_id,
            "content": text_of(target)[:REPLY_PREVIEW_CHARS],
            "message_type": names[target.message_type]
            if target.message_type < len(names)
            else "text",
        }
    mentioned = env.get("mentioned_user_ids")
    if mentioned is not None:
        if not isinstance(mentioned, list) or len(mentioned) > MAX_MENTIONS:
            raise _invalid(f"mentioned_user_ids must be a list of at most {MAX_MENTIONS} ids")
        for uid in mentioned:
            if _u64(uid, "mentioned_user_ids") not in channel.members:
                raise _invalid("mentioned_user_ids names a user who is not a member")
    if channel.channel_type != GROUP:
        return extra or None
    text = env.get("content")
    mention_all = env.get("is_mention_all") is True or (
        isinstance(text, str) and "@" in text and _MENTION_ALL.search(text) is not None
    )
    if mention_all:
        member = channel.members.get(sender)
        if member is None or member.role not in (ROLE_OWNER, ROLE_ADMIN):
            raise ServiceError(
                ErrorCode.PERMISSION_DENIED, "only the owner or an admin may mention everyone"
            )
        extra["is_mention_all"] = True
    return extra or None

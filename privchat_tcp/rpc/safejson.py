"""JSON from the network, parsed without trusting it, and JSON to the network that always encodes.

Python's ``json`` recurses once per nesting level (2,000 levels of ``[`` raise RecursionError,
not ValueError), converts any number of digits to an int (past 4,300 digits that raises), reads
``NaN``/``Infinity``, decodes bytes with ``surrogatepass`` (raw ``ED A0 80`` becomes a lone
surrogate) and keeps ``"\\ud800"`` escapes as lone surrogates, which no UTF-8 reply can carry.
``loads`` refuses all of these, checking the nesting first with a scan that does not recurse,
and raises ``JsonRefused`` (10105 INVALID_JSON, BAD_REQUEST), whose ``kind`` says why.

``check_stored`` is the cheap check of JSON the server stores without parsing (an MS payload
envelope, ``MessageContent.metadata``); ``dumps`` encodes a reply and never fails on a string.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

from ..errors import ErrorCode, ServiceError

__all__ = [
    "MAX_DEPTH",
    "MAX_NUMBER_LEN",
    "JsonRefused",
    "loads",
    "too_deep",
    "has_lone_surrogate",
    "check_stored",
    "is_envelope",
    "dumps",
]

#: default nesting limit (settings.json_max_depth)
MAX_DEPTH: Final = 32
#: characters of the longest number literal: a u64 has 20 digits, and a sign
MAX_NUMBER_LEN: Final = 21

SYNTAX: Final = "syntax"
UTF8: Final = "utf8"
DEPTH: Final = "depth"
SURROGATE: Final = "surrogate"
NUMBER: Final = "number"

_MESSAGES: Final = {
    SYNTAX: "is not valid JSON",
    UTF8: "is not valid UTF-8",
    DEPTH: "nests deeper than {} levels",
    SURROGATE: "has a lone surrogate (not valid Unicode)",
    NUMBER: "has a number that is too long or not finite",
}


class JsonRefused(ServiceError):
    """JSON refused: 10105 INVALID_JSON. ``kind`` is one of syntax, utf8, depth, surrogate,
    number. The message names what was refused (``what``), never the text."""

    def __init__(self, kind: str, what: str = "body", max_depth: int = MAX_DEPTH) -> None:
        super().__init__(ErrorCode.INVALID_JSON, f"{what} {_MESSAGES[kind].format(max_depth)}")
        self.kind = kind


class _NumberRefused(ValueError):
    pass


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_LEN:
        raise _NumberRefused(text[:8])
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > 64:
        raise _NumberRefused(text[:8])
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise _NumberRefused(text[:8])
    return value


def _parse_constant(text: str) -> Any:
    raise _NumberRefused(text)  # NaN, Infinity, -Infinity


_DECODER: Final = json.JSONDecoder(
    parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant
)

_STRING: Final = re.compile(rb'"[^"]*"')  # a string, once the escapes are gone
_NOT_BRACKET: Final = bytes(b for b in range(256) if b not in b"[]{}")
_SQUARE: Final = bytes.maketrans(b"{}", b"[]")
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_ENVELOPE: Final = re.compile(rb"[ \t\r\n]*\{")
_JSON_SPACE: Final = b" \t\r\n"


def too_deep(data: bytes, max_depth: int) -> bool:
    """Whether JSON text nests (or leaves open) more than ``max_depth`` arrays and objects.

    Linear and without recursion: brackets inside strings are not counted (escaped quotes are
    removed first, then the strings), then matched pairs are removed one level per pass, at most
    ``max_depth`` passes. Once the text has more than ``max_depth`` opening brackets, any that
    never match (a ``]`` with no ``[`` before it, a ``[`` left open) make it too deep too: such
    text is not JSON, and ``json`` would recurse on the open ones before failing."""
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return False  # the common case: fewer opening brackets than the limit
    rest = data
    if b"\\" in rest:  # escapes pair from the left: drop escaped backslashes, then quotes
        rest = rest.replace(b"\\\\", b"").replace(b'\\"', b"")
    if b'"' in rest:
        rest = _STRING.sub(b"", rest).split(b'"', 1)[0]  # a string left open runs to the end
    rest = rest.translate(_SQUARE, _NOT_BRACKET)
    for _ in range(max_depth):
        if not rest:
            return False
        shorter = rest.replace(b"[]", b"")
        if len(shorter) == len(rest):
            break
        rest = shorter
    return bool(rest)


def has_lone_surrogate(value: Any) -> bool:
    """Whether a parsed JSON value holds a lone surrogate in any string, key or value
    (iterative: the value may be as deep as the limit allows)."""
    stack = [value]
    search = _SURROGATE.search
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if search(item):
                return True
        elif isinstance(item, dict):
            for key, val in item.items():
                if search(key):
                    return True
                stack.append(val)
        elif isinstance(item, list):
            stack.extend(item)
    return False


def loads(data: bytes | str, max_depth: int = MAX_DEPTH, what: str = "body") -> Any:
    """Parse JSON from the network (``what`` names it in the error): strict UTF-8, at most
    ``max_depth`` levels, numbers of at most 21 characters, finite; no lone surrogates."""
    if isinstance(data, str):
        text = data
        try:
            raw = text.encode()
        except UnicodeEncodeError:
            raise JsonRefused(SURROGATE, what) from None
    else:
        raw = data
        try:
            text = raw.decode()  # strict: refuses raw surrogates (ED A0 80) too
        except UnicodeDecodeError:
            raise JsonRefused(UTF8, what) from None
    if too_deep(raw, max_depth):
        raise JsonRefused(DEPTH, what, max_depth)
    try:
        value = _DECODER.decode(text)
    except _NumberRefused:
        raise JsonRefused(NUMBER, what) from None
    except (ValueError, RecursionError):
        raise JsonRefused(SYNTAX, what) from None
    if _SURROGATE_ESCAPE.search(raw) and has_lone_surrogate(value):
        raise JsonRefused(SURROGATE, what)
    return value


def is_envelope(payload: bytes) -> bool:
    """Whether a message payload is a PrivChat envelope (its text starts with ``{``)."""
    first = payload[:1]
    if first == b"{":
        return True
    return first in _JSON_SPACE and first != b"" and _ENVELOPE.match(payload) is not None


def check_stored(data: bytes, max_depth: int = MAX_DEPTH, what: str = "payload") -> None:
    """Refuse JSON the server stores as given and parses later for its views, if it could
    not be rendered as itself: not UTF-8, nested deeper than ``max_depth``, or holding a lone
    surrogate. Text that is not JSON at all, or whose numbers are refused, is accepted (the
    views show it as text); the common case costs a few C-level scans and no parse."""
    if not data.isascii():
        try:
            data.decode()
        except UnicodeDecodeError:
            raise JsonRefused(UTF8, what) from None
    if data.count(b"[") + data.count(b"{") > max_depth and too_deep(data, max_depth):
        raise JsonRefused(DEPTH, what, max_depth)
    if b"\\u" in data and _SURROGATE_ESCAPE.search(data):  # a pair (an emoji) or lone: parse
        try:
            loads(data, max_depth, what)
        except JsonRefused as exc:
            if exc.kind == SURROGATE:
                raise


def dumps(value: Any) -> bytes:
    """A reply's JSON as UTF-8. Strings holding a lone surrogate (which no validated input
    can produce) are sent with ``?`` in its place instead of failing the reply. NaN and
    infinities raise ValueError (no parsed input holds them)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")

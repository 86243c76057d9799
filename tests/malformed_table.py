"""The malformed-input table: the case format of ``tests/malformed/*.cases`` and its reader.

The format is described in ``tests/malformed/README.md``. This module only reads it: ``load()``
gives every case, ``Case.build(ctx)`` the byte writes of one case for a session's context
(tokens, ids and the session cipher). It imports nothing of the server but the wire helpers a
client has, so a fuzz harness can seed its corpora with ``seed_inputs()``.
"""

from __future__ import annotations

import gzip as _gzip
import pathlib
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

TABLE_DIR = pathlib.Path(__file__).with_name("malformed")

SESSIONS = ("pre", "post", "enc", "proxy")

COMMANDS = {
    "RESERVED": 0,
    "LOGIN": 1,
    "LOGOUT": 2,
    "PING": 3,
    "MS": 4,
    "MP": 5,
    "MN": 6,
    "MR": 7,
    "MPS": 8,
    "MPB": 9,
    "SUB": 10,
    "PUB": 11,
    "RPC": 12,
    "ACK": 13,
}

_HEADER = struct.Struct("!IBIBBB")
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>'(?:[^'\\]|\\.)*')
    | (?P<call>[a-z][a-z0-9]*)\(
    | (?P<open>\()
    | (?P<close>\))
    | (?P<rep>\*[0-9]+)
    | (?P<kv>[a-z]+=[^\s()]+)
    | (?P<var>\$[a-z]+)
    | (?P<word>[A-Za-z0-9_.+-]+)
    )""",
    re.VERBOSE,
)
_ESC = {"\\": "\\", "'": "'", "n": "\n", "r": "\r", "t": "\t", "0": "\0"}


class FormatError(ValueError):
    pass


# ---- the notation: tokens -> a tree ----------------------------------------------------------
@dataclass
class Node:
    kind: str  # "bytes", "call", "group", "var", "word", "kv"
    value: Any = None
    args: list[Node] = field(default_factory=list)
    times: int = 1
    text: str = ""  # the token as written (a decimal number reads like hex bytes)


def _unquote(text: str) -> bytes:
    out = bytearray()
    i = 1
    end = len(text) - 1
    while i < end:
        ch = text[i]
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        nxt = text[i + 1]
        if nxt in _ESC:
            out += _ESC[nxt].encode()
            i += 2
        elif nxt == "x":
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        elif nxt == "u" and text[i + 2] == "{":
            close = text.index("}", i)
            out += chr(int(text[i + 3 : close], 16)).encode("utf-8", "surrogatepass")
            i = close + 1
        else:
            raise FormatError(f"bad escape \\{nxt}")
    return bytes(out)


def parse_items(text: str) -> list[Node]:
    pos = 0
    stack: list[list[Node]] = [[]]
    calls: list[Node] = []
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            raise FormatError(f"cannot read {text[pos : pos + 30]!r}")
        pos = m.end()
        kind = m.lastgroup
        tok = m.group(kind or "")
        items = stack[-1]
        if kind == "str":
            items.append(Node("bytes", _unquote(tok)))
        elif kind in ("call", "open"):
            node = Node("call", tok) if kind == "call" else Node("group")
            items.append(node)
            calls.append(node)
            stack.append(node.args)
        elif kind == "close":
            if len(stack) == 1:
                raise FormatError("unbalanced )")
            stack.pop()
            calls.pop()
        elif kind == "rep":
            if not items:
                raise FormatError("repetition of nothing")
            items[-1].times *= int(tok[1:])
        elif kind == "kv":
            key, _, value = tok.partition("=")
            items.append(Node("kv", (key, value)))
        elif kind == "var":
            items.append(Node("var", tok[1:]))
        else:
            if re.fullmatch(r"(?:[0-9a-f]{2})+", tok):
                items.append(Node("bytes", bytes.fromhex(tok), text=tok))
            else:
                items.append(Node("word", tok))
    if len(stack) != 1:
        raise FormatError("unbalanced (")
    return stack[0]


# ---- evaluation ------------------------------------------------------------------------------
class Context:
    """What a case's placeholders and sealed frames need from its session."""

    def __init__(self, values: dict[str, Any] | None = None, cipher: Any = None) -> None:
        self.values = values or {}
        self.cipher = cipher  # a SessionCipher (client side) on an ``enc`` session
        self.seq = 1  # the last seq used on the connection (the LOGIN's on a logged-in one)
        self.last_seq: int | None = None  # the seq of the last frame the case built
        self.routes: list[str] = []  # the routes of its RPC bodies
        self.held: list[bytes] = []
        self.last_sealed = b""
        self.rsa: Callable[..., tuple[bytes, bytes]] | None = None  # seal_login(key, ...)
        self.rsa_key: Any = None
        self.other_key: Any = None
        self.secret: bytes | None = None

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


def varint(n: int) -> bytes:
    if n < 0:
        n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _number(word: str, ctx: Context) -> int:
    if word.startswith("$"):
        return int(ctx.values[word[1:]])
    return int(word, 0)


def _kv(args: list[Node]) -> tuple[dict[str, str], list[Node], set[str]]:
    keys: dict[str, str] = {}
    rest: list[Node] = []
    words: set[str] = set()
    for a in args:
        if a.kind == "kv":
            keys[a.value[0]] = a.value[1]
        elif a.kind == "word" and a.value in ("hold",):
            words.add(a.value)
        else:
            rest.append(a)
    return keys, rest, words


def _scalar(node: Node, ctx: Context) -> int:
    if node.kind == "var":
        return int(ctx.values[node.value])
    if node.kind == "word":
        return _number(node.value, ctx)
    if node.kind == "bytes" and node.text.isdigit():
        return int(node.text)
    raise FormatError(f"expected a number, got {node.kind}")


def _command(word: str) -> int:
    return COMMANDS[word] if word in COMMANDS else int(word, 0)


def _header_fields(keys: dict[str, str], ctx: Context, default_flags: int) -> dict[str, int]:
    seq = int(keys["seq"], 0) if "seq" in keys else ctx.next_seq()
    ctx.last_seq = seq
    return {
        "cmd": _command(keys.get("cmd", "PING")),
        "seq": seq,
        "flags": int(keys.get("flags", str(default_flags)), 0),
        "ver": int(keys.get("ver", "1"), 0),
        "status": int(keys.get("status", "0"), 0),
    }


def _tamper(frame: bytes, keys: dict[str, str]) -> bytes:
    if "flip" in keys:  # BYTE.BIT of the whole frame (header included)
        byte, _, bit = keys["flip"].partition(".")
        b = bytearray(frame)
        b[int(byte)] ^= 1 << int(bit or "0")
        frame = bytes(b)
    if "cut" in keys:  # drop the last N body bytes and say so in len
        n = int(keys["cut"])
        length = struct.unpack_from("!I", frame)[0] - n
        frame = struct.pack("!I", length) + frame[4:-n]
    return frame


def _sent_seq(frame: bytes, ctx: Context) -> bytes:
    """Note the seq the frame carries as sent (a flip may have changed it): it is echoed."""
    if len(frame) >= 9:
        ctx.last_seq = struct.unpack_from("!I", frame, 5)[0]
    return frame


def _call(node: Node, ctx: Context) -> bytes:
    name = node.value
    args = node.args
    if name == "frame":
        keys, rest, _ = _kv(args)
        h = _header_fields(keys, ctx, 0)
        body = evaluate(rest, ctx)
        length = int(keys["len"], 0) if "len" in keys else len(body)
        head = _HEADER.pack(length, h["ver"], h["seq"], h["cmd"], h["flags"], h["status"])
        return _sent_seq(_tamper(head + body, keys), ctx)
    if name == "sealed":
        keys, rest, words = _kv(args)
        h = _header_fields(keys, ctx, 0x04)
        body = evaluate(rest, ctx)
        if ctx.cipher is None:
            raise FormatError("sealed() needs an enc session")
        head, sealed = ctx.cipher.seal(h["seq"], h["cmd"], h["flags"], h["status"], body)
        frame = _sent_seq(_tamper(head + sealed, keys), ctx)
        if "hold" in words:
            ctx.held.append(frame)
            return b""
        ctx.last_sealed = frame
        return frame
    if name == "rsa":  # an encryption-2 LOGIN of the body (the LoginRequest plaintext)
        keys, rest, words = _kv(args)
        h = _header_fields(keys | {"cmd": keys.get("cmd", "LOGIN")}, ctx, 0x08)
        body = evaluate(rest, ctx)
        assert ctx.rsa is not None and ctx.secret is not None
        key = ctx.other_key if keys.get("key") == "other" else ctx.rsa_key
        head, sealed = ctx.rsa(key, ctx.secret, h["seq"], h["cmd"], h["flags"], h["status"], body)
        return _sent_seq(_tamper(head + sealed, keys), ctx)
    if name == "v":  # a varint field: v(FIELD VALUE)
        return varint(_scalar(args[0], ctx) << 3) + varint(_scalar(args[1], ctx))
    if name == "s":  # a length-delimited field: s(FIELD ITEMS...)
        data = evaluate(args[1:], ctx)
        return varint((_scalar(args[0], ctx) << 3) | 2) + varint(len(data)) + data
    if name == "f32":
        return varint((_scalar(args[0], ctx) << 3) | 5) + struct.pack("<I", _scalar(args[1], ctx))
    if name == "f64":
        return varint((_scalar(args[0], ctx) << 3) | 1) + struct.pack("<Q", _scalar(args[1], ctx))
    if name == "varint":
        return varint(_scalar(args[0], ctx))
    if name == "rpc":  # RpcRequest{route, body}: rpc('route' JSON...)
        route = evaluate(args[:1], ctx)
        ctx.routes.append(route.decode("utf-8", "replace"))
        data = evaluate(args[1:], ctx)
        return varint(10) + varint(len(route)) + route + varint(18) + varint(len(data)) + data
    if name == "gzip":
        return _gzip.compress(evaluate(args, ctx), 6, mtime=0)
    if name == "zlib":
        return zlib.compress(evaluate(args, ctx))
    if name == "deflate":
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(evaluate(args, ctx)) + c.flush()
    if name == "lz4":
        import lz4.frame

        return bytes(lz4.frame.compress(evaluate(args, ctx)))
    if name == "cut":  # cut(N ITEMS...): the items without their last N bytes
        n = _scalar(args[0], ctx)
        data = evaluate(args[1:], ctx)
        return data[:-n] if n else data
    if name == "flip":  # flip(BYTE ITEMS...): bit 0 of byte BYTE (negative: from the end)
        i = _scalar(args[0], ctx)
        b = bytearray(evaluate(args[1:], ctx))
        b[i] ^= 1
        return bytes(b)
    if name == "held":
        out = b"".join(ctx.held)
        ctx.held.clear()
        return out
    if name == "again":
        return ctx.last_sealed
    raise FormatError(f"unknown function {name}()")


_STATEFUL = frozenset(("frame", "sealed", "rsa", "held", "again"))


def evaluate(items: list[Node], ctx: Context) -> bytes:
    out = bytearray()
    for node in items:
        if node.kind == "bytes":
            data = node.value
        elif node.kind == "group":
            data = evaluate(node.args, ctx)
        elif node.kind == "call":
            if node.value in _STATEFUL:  # each repetition is a new frame
                out += b"".join(_call(node, ctx) for _ in range(node.times))
                continue
            data = _call(node, ctx)
        elif node.kind == "var":
            data = str(ctx.values[node.value]).encode()
        else:
            raise FormatError(f"unexpected {node.kind} {node.value!r}")
        out += data * node.times
    return bytes(out)


# ---- cases -----------------------------------------------------------------------------------
@dataclass
class Expect:
    status: int | None  # None: no answer at all
    code: str  # "" any code; a number; or a range like "101xx"

    def code_ok(self, code: int) -> bool:
        c = self.code
        if not c:
            return True
        if c.endswith("xx"):
            return str(code).startswith(c[:-2]) and len(str(code)) == len(c)
        return code == int(c)


@dataclass
class Case:
    id: str
    session: str
    expect: Expect
    stays_open: bool
    split: str
    items: list[Node]
    file: str
    line: int
    category: str

    def build(self, ctx: Context) -> list[bytes]:
        """The writes of this case on a session described by ``ctx``."""
        data = evaluate(self.items, ctx)
        if self.split == "bytes":
            return [data[i : i + 1] for i in range(len(data))]
        if self.split:
            cuts = [0, *(int(x) for x in self.split.split(",")), len(data)]
            return [data[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if b > a]
        return [data]


def _expect(text: str, status_names: dict[str, int], codes: dict[str, int]) -> Expect:
    if text == "none":
        return Expect(None, "")
    name, _, code = text.partition(":")
    if name not in status_names:
        raise FormatError(f"unknown status {name}")
    if code and not code[0].isdigit():
        if code not in codes:
            raise FormatError(f"unknown error code {code}")
        code = str(codes[code])
    return Expect(status_names[name], code)


def parse_line(
    line: str, status_names: dict[str, int], codes: dict[str, int], file: str = "", lineno: int = 0
) -> Case:
    head, sep, body = line.partition("::")
    if not sep:
        raise FormatError("missing ::")
    fields = head.split()
    if len(fields) not in (4, 5):
        raise FormatError("want: ID SESSION EXPECT open|close [split=...] :: ITEMS")
    cid, session, expect, then = fields[:4]
    split = ""
    if len(fields) == 5:
        if not fields[4].startswith("split="):
            raise FormatError(f"unknown option {fields[4]}")
        split = fields[4][6:]
    if session not in SESSIONS:
        raise FormatError(f"unknown session {session}")
    if then not in ("open", "close"):
        raise FormatError(f"want open or close, not {then}")
    return Case(
        cid,
        session,
        _expect(expect, status_names, codes),
        then == "open",
        split,
        parse_items(body),
        file,
        lineno,
        cid.split(".", 1)[0],
    )


def load(directory: pathlib.Path = TABLE_DIR) -> list[Case]:
    from privchat_tcp.errors import STATUS_NAMES, ErrorCode

    status_names = {v: k for k, v in STATUS_NAMES.items()}
    codes = {k: v for k, v in vars(ErrorCode).items() if isinstance(v, int) and k.isupper()}
    cases: list[Case] = []
    seen: set[str] = set()
    for path in sorted(directory.glob("*.cases")):
        for lineno, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                case = parse_line(line, status_names, codes, path.name, lineno)
            except (FormatError, ValueError, KeyError) as exc:
                raise FormatError(f"{path.name}:{lineno}: {exc}") from exc
            if case.id in seen:
                raise FormatError(f"{path.name}:{lineno}: duplicate id {case.id}")
            seen.add(case.id)
            cases.append(case)
    return cases


def seed_inputs(directory: pathlib.Path = TABLE_DIR) -> Iterator[tuple[str, bytes]]:
    """(id, bytes) of every case that needs no live session (no tokens, no cipher): the
    concatenated writes with placeholders filled with fixed values. For fuzz corpora."""
    values = {"token": "x.y.z", "device": "d", "user": 100000001, "peer": 100000002}
    values |= {"channel": 1, "message": 1}
    for case in load(directory):
        if case.session == "enc":
            continue
        ctx = Context(values)
        try:
            yield case.id, b"".join(case.build(ctx))
        except (FormatError, AssertionError):
            continue

"""The JSON the server reads from the network: ``safejson`` and ``params.parse_body``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from privchat_tcp.errors import ErrorCode, ServiceError
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.rpc import safejson
from privchat_tcp.rpc.params import parse_body
from privchat_tcp.wire.commands import Cmd

from . import Finding, Target
from .seeds import frames_of, session_bytes

_DEPTHS = (safejson.MAX_DEPTH, 1, 2, 3, 8, 64, 256, 0)


def _depth(value: Any) -> int:
    """How many arrays and objects nest in ``value`` (iterative)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item)
    return deepest


def safejson_one(data: bytes) -> None:
    if not data:
        return
    max_depth, text = _DEPTHS[data[0] & 7] or 1, data[1:]
    try:
        value = safejson.loads(text, max_depth)
    except safejson.JsonRefused as exc:
        if exc.code != ErrorCode.INVALID_JSON:
            raise Finding(f"JsonRefused with code {exc.code}") from exc
        value = exc
    if not isinstance(value, safejson.JsonRefused):
        if _depth(value) > max_depth:
            raise Finding(f"loads accepted {_depth(value)} levels (limit {max_depth})")
        out = safejson.dumps(value)
        if safejson.loads(out, max(max_depth, 1)) != value:
            raise Finding("dumps then loads is not the identity")
        try:
            safejson.check_stored(text, max_depth)
        except safejson.JsonRefused as exc:
            raise Finding("check_stored refuses what loads accepts") from exc
    else:
        try:
            safejson.check_stored(text, max_depth)
        except safejson.JsonRefused:
            pass
    try:
        body = parse_body(text, max_depth)
    except ServiceError as exc:
        if exc.code not in (ErrorCode.INVALID_JSON, ErrorCode.INVALID_PARAMS):
            raise Finding(f"parse_body failed with {exc.code}") from exc
    else:
        if not isinstance(body, dict):
            raise Finding("parse_body gave something else than an object")
    if not isinstance(safejson.is_envelope(text), bool):
        raise Finding("is_envelope gave something else than a bool")
    try:
        as_text = text.decode()
    except UnicodeDecodeError:
        return
    try:
        safejson.loads(as_text, max_depth)
    except safejson.JsonRefused:
        pass


def safejson_seeds() -> Iterator[bytes]:
    for _, data in session_bytes("pre", "post"):
        for _, command, _, _, body in frames_of(data):
            if command == Cmd.RPC:
                try:
                    yield b"\x00" + pb.RpcRequest.FromString(body).body
                except Exception:  # noqa: BLE001 - a malformed request is no seed
                    continue
    yield b"\x00" + b'{"a":[1,2.5,"\\ud83d\\ude00",null,true,{"b":-1e3}]}'


TARGET_SAFEJSON = Target(
    "safejson",
    "safejson.loads/check_stored/dumps and parse_body: only JsonRefused; loads bounded",
    safejson_one,
    safejson_seeds,
    max_len=4096,
)

__all__ = ["TARGET_SAFEJSON"]

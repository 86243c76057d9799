"""The command handlers: one function per client command, ``(session, seq, flags, body)``.

Each decodes its body, calls the services, and queues the reply on the session. ``COMMANDS`` is
the table the composition root hands to every session (``SessionDeps.commands``).
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..errors import ErrorCode, ProtocolViolation, ServiceError, Status
from ..proto import privchat_pb2 as pb
from ..rpc.params import parse_body
from ..rpc.safejson import check_stored, is_envelope, loads
from ..service.content import needs_check, plain
from ..service.model import Channel, Record
from ..wire import compression as _compression
from ..wire import pbwire
from ..wire.commands import COMP_MASK, ENC_E2E, ENC_MASK, Cmd
from ..wire.crypto import SessionCipher, open_login
from .delivery import check_subscribe
from .presence import device_info
from .session import CommandTable, DeliveryPolicy, Session, pong, rpc_ok

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["COMMANDS", "CLIENT_COMMANDS"]

log = logging.getLogger("privchat_tcp.session")

_COMPRESSION_NAMES = {0: "", 1: "gzip", 2: "lz4"}

CLIENT_COMMANDS = frozenset(
    (Cmd.LOGIN, Cmd.LOGOUT, Cmd.PING, Cmd.MS, Cmd.MP, Cmd.MR, Cmd.SUB, Cmd.RPC, Cmd.ACK)
)


# ---- LOGIN / LOGOUT / PING --------------------------------------------------------------------
def ping(session: Session, seq: int, flags: int, body: bytes) -> None:
    if body:
        pb.PingRequest.FromString(body)  # the body must decode (it carries nothing we use)
    if session.deps.server.draining:  # a health check must fail before the listener closes
        raise ServiceError(ErrorCode.SERVICE_UNAVAILABLE, "server draining", Status.GOING_AWAY)
    session.reply(seq, Cmd.PING, pong())


def login_encrypted(session: Session, seq: int, flags: int, status: int, body: bytes) -> None:
    key = session.deps.server_key
    if key is None:
        raise ServiceError(
            ErrorCode.UNSUPPORTED_PROTOCOL, "encryption is not enabled", Status.UNSUPPORTED
        )
    if flags & COMP_MASK:
        raise ServiceError(ErrorCode.INVALID_PACKET, "compression is not allowed on LOGIN")
    if not session.deps.guard.allow_encrypted_login(session.address):
        # before the RSA step: a flood of bogus encrypted LOGINs costs a bucket check each
        raise ServiceError(
            ErrorCode.RATE_LIMIT_EXCEEDED, "too many encrypted logins from this address"
        )
    secret, plaintext = open_login(key, seq, Cmd.LOGIN, flags, status, body)
    _login(session, seq, plaintext, SessionCipher.server_side(secret))


def login_plain(session: Session, seq: int, flags: int, body: bytes) -> None:
    if session.deps.settings.require_encryption:
        raise ProtocolViolation(
            Status.CRYPTO, ErrorCode.PROTOCOL_ERROR, "encryption required", True
        )
    _login(session, seq, body, None)


def _login(session: Session, seq: int, body: bytes, cipher: SessionCipher | None) -> None:
    deps = session.deps
    settings = deps.settings
    if session.user_id:
        raise ServiceError(ErrorCode.INVALID_PACKET, "already logged in")
    req = pb.AuthorizationRequest.FromString(body)
    device_id = req.device_info.device_id if req.HasField("device_info") else ""
    user, claims = deps.services.accounts.check_token(req.auth_token, device_id)
    hub = deps.hub
    limit = settings.max_devices_per_user
    # O(1), not a copy of the user's sessions: a user with thousands of devices online made
    # every LOGIN cost as much as all of them
    if (
        limit
        and hub.device_count(user.user_id) >= limit
        and not hub.has_device(user.user_id, device_id)
    ):
        raise ServiceError(ErrorCode.DEVICE_LIMIT_EXCEEDED, "too many devices online", Status.BUSY)
    session.logged_in(user.user_id, device_id, claims["jti"], claims["lid"], claims["exp"])
    deps.services.messages.session_started(session.session_id, user.user_id, device_id)
    compression = _compression.pick(req.accept_compression)
    reply = pb.AuthorizationResponse(
        success=True,
        session_id=session.session_id,
        user_id=user.user_id,
        connection_id=f"conn_{session.session_id}",
        server_info=pb.ServerInfo(
            version=__version__,
            name="privchat-tcp",
            features=["chat", "sync"],
            max_message_size=settings.max_body,
            connection_timeout=settings.heartbeat_interval * 2,
        ),
        heartbeat_interval=settings.heartbeat_interval,
        store_epoch=deps.services.epoch,
        server_time=time.time_ns() // 1_000_000,
        compression=_COMPRESSION_NAMES[compression],
    ).SerializeToString()
    if session.pending:
        session.materialize()
    session.conn.accept_login(
        seq, reply, settings.max_body, compression, settings.compress_threshold, cipher
    )
    log.info(
        "login: user %d device %s from %s (session %s%s)",
        user.user_id,
        device_id,
        session.peer,
        session.session_id,
        ", encrypted" if cipher is not None else "",
    )
    old = hub.register(session)
    if old is not None and old is not session:
        old.end(
            Status.REPLACED,
            ErrorCode.SESSION_EXPIRED,
            "this device logged in on another connection",
        )
    deps.services.devices.connected(
        user.user_id, device_id, device_info(req), session.address, claims["lid"]
    )


def logout(session: Session, seq: int, flags: int, body: bytes) -> None:
    pb.DisconnectRequest.FromString(body)
    session.reply(seq, Cmd.LOGOUT, pb.DisconnectResponse(acknowledged=True).SerializeToString())
    session.end_reason = "logout"
    session.close()


# ---- messages ---------------------------------------------------------------------------------
_FAST_MS = pbwire.DECODE_SEND_IS_FAST
_decode_send = pbwire.decode_send_request
_send_response = pbwire.send_response
_MS = int(Cmd.MS)
_plain = plain
_needs_check = needs_check


def ms(session: Session, seq: int, flags: int, body: bytes) -> None:
    services = session.deps.services
    e2e = flags & ENC_MASK == ENC_E2E
    # the usual MS without a protobuf object (compiled only: the pure decoder is slower)
    fast = _decode_send(body) if _FAST_MS else None
    if fast is not None and fast[2]:  # addressed by channel id, a payload and no MessageContent
        client_seq, local_id, channel_id, channel_type, message_type, payload = fast
        channel = services.channels.resolve_target(session.user_id, channel_id, channel_type, 0, 0)
        content = b""
        if e2e or _plain(message_type, payload, session.deps.settings.json_max_depth):
            # plain text (``content.plain``, the usual MS): no rule applies, the JSON check
            # passes, no parse, as ``check_stored`` and ``_rules_envelope`` would say
            check, env = False, None
        else:
            if payload and (payload[:1] == b"{" or is_envelope(payload)):
                check_stored(payload, session.deps.settings.json_max_depth)  # what views parse
            if not _needs_check(message_type, payload):  # no parse, as ``_rules_envelope``
                check, env = False, None
            else:
                check, env = _rules_envelope(message_type, payload, None, session.deps.settings)
    else:
        req = pb.SendMessageRequest.FromString(body)
        client_seq, local_id, message_type = req.client_seq, req.local_message_id, req.message_type
        payload = req.payload
        channel_id = req.channel_id
        if channel_id:  # the usual addressing; a Conversation is only read without it
            channel = services.channels.resolve_target(
                session.user_id, channel_id, req.channel_type, 0, 0
            )
        else:
            conv = req.conversation
            channel = services.conversations.resolve_target(
                session.user_id, 0, req.channel_type, conv.type, conv.target_id
            )
        if req.HasField("content"):
            if req.content.metadata and not e2e:
                check_stored(
                    req.content.metadata.encode(), session.deps.settings.json_max_depth, "metadata"
                )
            content = req.content.SerializeToString()
        else:
            content = b""
        if not e2e and payload and (payload[:1] == b"{" or is_envelope(payload)):
            check_stored(payload, session.deps.settings.json_max_depth)  # what the views parse
        if e2e:
            check, env = False, None
        else:
            check, env = _rules_envelope(
                message_type,
                payload,
                req.content if req.HasField("content") else None,
                session.deps.settings,
            )
    result = services.messages.send(
        session.user_id,
        session.device_id,
        channel,
        local_id,
        message_type,
        payload,
        content,
        e2e,
        session.session_id,
        check=check,
        env=env,
    )
    if session.pending:  # ``Session.reply``, inline
        session.materialize()
    session.conn.send_response(
        seq,
        _MS,
        _send_response(
            client_seq,
            result.message_id,
            result.pts,
            result.channel_id,
            channel.channel_type,
            result.timestamp,
        ),
    )


def _rules_envelope(
    message_type: int, payload: bytes, c: pb.MessageContent | None, settings: Settings
) -> tuple[bool, Any]:
    """Whether an MS's envelope rules apply (``service.content``) and the envelope they read:
    the payload's JSON object (the text when it is not one) or, without a payload, the
    MessageContent's fields. A plain text message without a reply, a mention or metadata is
    not parsed (the hot path)."""
    depth = settings.json_max_depth
    if payload:
        if not needs_check(message_type, payload):
            return False, None
        value = None
        if is_envelope(payload):
            try:
                value = loads(payload, depth, "payload")
            except ServiceError:
                value = None
        if isinstance(value, dict):
            return True, value
        return True, {"content": payload.decode("utf-8", "replace")}
    if c is None:
        return False, None
    if not (
        message_type
        or c.reply_to_message_id
        or c.mentioned_targets
        or c.mentioned_type
        or c.metadata
        or "@" in c.searchable_content
    ):
        return False, None
    env: dict[str, Any] = {"content": c.searchable_content}
    if c.metadata:
        try:
            env["metadata"] = loads(c.metadata, depth, "metadata")
        except ServiceError:
            env["metadata"] = c.metadata  # not JSON: the rules refuse it where it matters
    if c.reply_to_message_id:
        env["reply_to_message_id"] = c.reply_to_message_id
    if c.mentioned_targets:
        env["mentioned_user_ids"] = list(c.mentioned_targets)
    if c.mentioned_type == 2:
        env["is_mention_all"] = True
    return True, env


def mp(session: Session, seq: int, flags: int, body: bytes) -> None:
    req = pb.GetDifferenceRequest.FromString(body)
    messages = session.deps.services.messages
    deliverer = session.deps.deliverer
    sealed = session.conn.cipher is not None
    args = (
        session.user_id,
        req.channel_id,
        req.last_pts,
        req.limit,
        req.channel_type,
        session.session_id,
    )
    if not messages.in_memory(req.channel_id, req.last_pts):  # old history: off the loop
        session.spawn_reply(
            seq,
            Cmd.MP,
            messages.pull_async(*args),
            lambda page: _difference(deliverer, page, sealed),
        )
        return
    data, e2e = _difference(deliverer, messages.pull(*args), sealed)
    session.reply(seq, Cmd.MP, data, e2e)


def _difference(
    deliverer: DeliveryPolicy, page: tuple[Channel, list[Record], int, bool], sealed: bool
) -> tuple[bytes, bool]:
    data, e2e = deliverer.difference(*page)
    return data, e2e and sealed


def mr(session: Session, seq: int, flags: int, body: bytes) -> None:
    req = pb.MessageRevokeRequest.FromString(body)
    event = session.deps.services.messages.revoke(
        session.user_id,
        session.device_id,
        req.channel_id,
        req.server_message_id,
        session.session_id,
    )
    session.reply(
        seq, Cmd.MR, pb.MessageRevokeResponse(success=True, pts=event.pts).SerializeToString()
    )


def ack(session: Session, seq: int, flags: int, body: bytes) -> None:
    req = pb.AckRequest.FromString(body)
    services = session.deps.services
    messages = services.messages
    start = services.durability.write_seq
    for item in req.acks:
        messages.ack(session.user_id, session.device_id, item.channel_id, item.pts)
    # a cursor acknowledges nothing to anyone: the output need not wait for it to be durable
    # (with the disk full it never is: the session's replies would wait for ever)
    first, last = session.ack_span
    session.ack_span = (first if last == start else start, services.durability.write_seq)


def sub(session: Session, seq: int, flags: int, body: bytes) -> None:
    req = pb.SubscribeRequest.FromString(body)
    deps = session.deps
    reason = 0
    if req.action not in (1, 2):
        reason = 3
    elif req.channel_type not in (0, 1, 2):
        reason = 2
    elif req.action == 2:
        deps.hub.unsubscribe(session, req.channel_id)
    else:
        reason = check_subscribe(deps.services, session.user_id, req.channel_id, req.channel_type)
        if reason == 0 and not deps.hub.subscribe(session, req.channel_id):
            reason = 8
    session.reply(
        seq,
        Cmd.SUB,
        pb.SubscribeResponse(
            local_message_id=req.local_message_id,
            channel_id=req.channel_id,
            channel_type=req.channel_type,
            action=req.action,
            reason_code=reason,
        ).SerializeToString(),
    )


# ---- RPC --------------------------------------------------------------------------------------
def rpc(session: Session, seq: int, flags: int, body: bytes) -> None:
    req = pb.RpcRequest.FromString(body)
    deps = session.deps
    route = deps.routes.get(req.route)
    if route is None:
        raise ServiceError(ErrorCode.RESOURCE_NOT_FOUND, "route not found", Status.UNSUPPORTED)
    if not route.anonymous and not session.user_id:
        raise ServiceError(ErrorCode.AUTH_REQUIRED, "login required")
    args = parse_body(req.body, deps.settings.json_max_depth)
    route.check_keys(args)
    result = route.handler(session.rpc_context(), args)
    if inspect.iscoroutine(result):  # an async route, or one that must read off the loop
        session.spawn_rpc(seq, result)
        return
    session.reply(seq, Cmd.RPC, rpc_ok(result))
    if session.ending_login:
        session.after_reply()


HANDLERS = {
    Cmd.LOGIN: login_plain,
    Cmd.LOGOUT: logout,
    Cmd.PING: ping,
    Cmd.MS: ms,
    Cmd.MP: mp,
    Cmd.MR: mr,
    Cmd.SUB: sub,
    Cmd.RPC: rpc,
    Cmd.ACK: ack,
}
assert set(HANDLERS) == CLIENT_COMMANDS

COMMANDS = CommandTable(HANDLERS, login_encrypted)

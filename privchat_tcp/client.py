"""An asyncio client for privchat-tcp: requests by seq, pushes as an async iterator.

    client = await Client.connect("127.0.0.1", 9001)
    auth = await client.register("alice", "secret1")
    await client.login(auth["token"])
    await client.ready()
    resp = await client.send(channel_id, "hello")
    async for push in client.pushes():   # Push(command, message, pts ...)
        ...

The client keeps, per channel, the highest pts it has handed out; pushes at or below it are
dropped (``duplicates`` counts them), a jump past it triggers an MP pull of the gap, an MN
triggers a pull, and every delivered message is acknowledged (ACK) in batches.
"""

from __future__ import annotations

import asyncio
import collections
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.message import DecodeError

from .errors import InvalidState, ProtocolViolation, ServiceError
from .proto import privchat_pb2 as pb
from .wire.commands import ENC_E2E, ENC_MASK, ENC_RSA, FLOW_MASK, FLOW_RESPONSE, Cmd
from .wire.connection import CLIENT_MAX_BODY, Connection, Side
from .wire.crypto import SessionCipher, new_secret, seal_login

__all__ = ["Client", "Push"]

MAX_QUEUE = 100_000


class Push:
    """One delivered event: a message (MPS/MPB/MP), a notify (MN), a PUB or a LOGOUT."""

    __slots__ = ("command", "message", "status", "e2e")

    def __init__(self, command: int, message: Any, status: int = 0, e2e: bool = False) -> None:
        self.command = command
        self.message = message
        self.status = status
        self.e2e = e2e

    def __repr__(self) -> str:
        return f"Push(command={self.command}, status={self.status})"


class _Protocol(asyncio.Protocol):
    """The adapter: the transport and the client side of the sans-IO connection."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.conn = Connection(CLIENT_MAX_BODY, Side.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        for seq, command, flags, status, body in conn.receive_data(data):
            if self.transport is not None and self.transport.is_closing():
                break  # the client dropped the connection (a frame that did not open)
            self.client._on_frame(seq, command, flags, status, body)
        if conn.closing and self.transport is not None:  # the server broke the framing
            self.transport.close()

    def write_out(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self.client._on_lost()


class Client:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        track: bool = True,
        auto_ack: bool = True,
        local_addr: tuple[str, int] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        #: the local (address, port) to connect from (None: the system picks)
        self.local_addr = local_addr
        self.track = track
        self.auto_ack = auto_ack
        self._proto: _Protocol | None = None
        self._waiters: dict[int, asyncio.Future[tuple[int, int, bytes]]] = {}
        self._queue: collections.deque[Push] = collections.deque()
        self._queue_event = asyncio.Event()
        self._paused = False
        self.last_pts: dict[int, int] = {}
        self.duplicates = 0
        self._pulling: set[int] = set()
        self._repull: set[int] = set()  # an MN or gap arrived while its channel was being pulled
        self._acks: dict[int, int] = {}
        self._ack_scheduled = False
        self.token = ""
        self.device_id = ""
        self.user_id = 0
        self.auth: pb.AuthorizationResponse | None = None
        self.closed_by_server: Push | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # compress every request body with this (1 gzip, 2 lz4); LOGIN never is
        self.compression = 0
        self.server_key: bytes | None = None

    # ---- connection ----------------------------------------------------------------------------
    @classmethod
    async def connect(cls, host: str = "127.0.0.1", port: int = 9001, **kw: Any) -> Client:
        client = cls(host, port, **kw)
        await client._dial()
        return client

    async def _dial(self) -> None:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(
            lambda: _Protocol(self), self.host, self.port, local_addr=self.local_addr
        )
        self._proto = proto

    @property
    def cipher(self) -> SessionCipher | None:
        """The session's AES-GCM state once an encrypted LOGIN was sent (None: plaintext)."""
        return self._proto.conn.cipher if self._proto is not None else None

    @property
    def connected(self) -> bool:
        return self._proto is not None and not self._proto.closed.done()

    async def close(self) -> None:
        proto = self._proto
        if proto is not None and proto.transport is not None:
            proto.transport.close()
            await proto.closed
        for task in list(self._tasks):
            task.cancel()

    async def wait_closed(self, timeout: float = 5.0) -> None:
        assert self._proto is not None
        await asyncio.wait_for(asyncio.shield(self._proto.closed), timeout)

    def _on_lost(self) -> None:
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection closed"))
        self._waiters.clear()
        self._queue_event.set()

    # ---- frames --------------------------------------------------------------------------------
    def next_seq(self) -> int:
        """Take the next request seq (for a frame built by hand)."""
        if self._proto is None:
            raise InvalidState("not connected")
        return self._proto.conn.next_request_seq()

    def pack(self, command: int, body: bytes, flags: int = 0, seq: int | None = None) -> bytes:
        """The bytes ``send_raw`` would write (same seq, compression and sealing), unsent."""
        if self._proto is None:
            raise InvalidState("not connected")
        conn = self._proto.conn
        conn.set_compression(self.compression)
        conn.send_request(command, body, flags, seq)
        return conn.data_to_send()

    def send_raw(
        self, command: int, body: bytes, flags: int = 0, seq: int | None = None, status: int = 0
    ) -> int:
        """Send one frame as given (compressed and sealed as the session requires)."""
        if not self.connected:
            raise InvalidState("not connected")
        proto = self._proto
        assert proto is not None
        conn = proto.conn
        conn.set_compression(self.compression)
        seq = conn.send_request(command, body, flags, seq, status)
        proto.write_out()
        return seq

    async def request(
        self, command: int, body: bytes, flags: int = 0, timeout: float = 30.0
    ) -> tuple[int, int, bytes]:
        """Send a request; returns (status, flags, body) of the response."""
        seq = self.send_raw(command, body, flags)
        fut: asyncio.Future[tuple[int, int, bytes]] = asyncio.get_running_loop().create_future()
        self._waiters[seq] = fut
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiters.pop(seq, None)

    async def call(self, command: int, message: Any, reply_type: Any, flags: int = 0) -> Any:
        status, _, body = await self.request(command, message.SerializeToString(), flags)
        if status:
            err = pb.Error.FromString(body)
            raise ServiceError(err.code, err.message, status)
        return reply_type.FromString(body) if reply_type is not None else None

    def _on_frame(self, seq: int, command: int, flags: int, status: int, body: bytes) -> None:
        assert self._proto is not None
        try:
            body = self._proto.conn.open_incoming(seq, command, flags, status, body)
        except (ProtocolViolation, ServiceError):
            self._drop()  # a frame that does not open: the connection can't be trusted
            return
        try:
            self._dispatch(seq, command, flags, status, body)
        except DecodeError:  # a push whose body does not decode: the same (tools/fuzz, client)
            self._drop()

    def _dispatch(self, seq: int, command: int, flags: int, status: int, body: bytes) -> None:
        """Handle one frame from the server, its body already opened."""
        if flags & FLOW_MASK == FLOW_RESPONSE:
            fut = self._waiters.get(seq)
            if fut is not None and not fut.done():
                fut.set_result((status, flags, body))
            return
        e2e = flags & ENC_MASK == ENC_E2E
        if command == Cmd.MPS:
            self._deliver([pb.PushMessageRequest.FromString(body)], e2e)
        elif command == Cmd.MPB:
            self._deliver(list(pb.PushBatchRequest.FromString(body).messages), e2e)
        elif command == Cmd.MN:
            note = pb.MessageNotify.FromString(body)
            self._enqueue(Push(command, note))
            if self.track:
                self._spawn(self._catch_up(note.channel_id))
        elif command == Cmd.PUB:
            self._enqueue(Push(command, pb.PublishRequest.FromString(body)))
        elif command == Cmd.LOGOUT:
            push = Push(command, pb.Error.FromString(body), status)
            self.closed_by_server = push
            self._enqueue(push)

    def _drop(self) -> None:
        """A frame from the server failed to open: the connection can't be trusted, close it."""
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()

    def _deliver(self, messages: list[pb.PushMessageRequest], e2e: bool = False) -> None:
        for msg in messages:
            cid = msg.channel_id
            if self.track and msg.message_seq:  # a notice (a read receipt) has no pts
                last = self.last_pts.get(cid, 0)
                if msg.message_seq <= last:
                    self.duplicates += 1
                    continue
                if msg.message_seq > last + 1:
                    self._spawn(self._catch_up(cid))
                    continue  # the pull delivers it in order
                self.last_pts[cid] = msg.message_seq
                self._ack(cid, msg.message_seq)
            self._enqueue(Push(Cmd.MPS, msg, e2e=e2e or msg.e2e))

    def _enqueue(self, push: Push) -> None:
        self._queue.append(push)
        self._queue_event.set()
        if len(self._queue) > MAX_QUEUE and not self._paused and self._proto is not None:
            assert self._proto.transport is not None
            self._proto.transport.pause_reading()  # bounded: the server sees back-pressure
            self._paused = True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ack(self, channel_id: int, pts: int) -> None:
        if not self.auto_ack:
            return
        self._acks[channel_id] = pts
        if not self._ack_scheduled:
            self._ack_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_acks)

    def _flush_acks(self) -> None:
        self._ack_scheduled = False
        if not self._acks or not self.connected:
            return
        req = pb.AckRequest(
            acks=[pb.ChannelAck(channel_id=c, pts=p) for c, p in self._acks.items()]
        )
        self._acks.clear()
        self.send_raw(Cmd.ACK, req.SerializeToString())

    async def _catch_up(self, channel_id: int) -> None:
        if channel_id in self._pulling:
            # the pull in flight may have been answered before this message was committed:
            # pull once more when it ends, or the message would wait for the next one
            self._repull.add(channel_id)
            return
        self._pulling.add(channel_id)
        try:
            while self.connected:
                self._repull.discard(channel_id)
                last = self.last_pts.get(channel_id, 0)
                diff = await self.pull(channel_id, last, 500)
                if diff.messages and diff.messages[0].message_seq > last + 1:
                    # what the server leaves out of a pull (before a member joined) is not a gap
                    self.last_pts[channel_id] = diff.messages[0].message_seq - 1
                self._deliver(list(diff.messages))
                if (not diff.has_more or not diff.messages) and channel_id not in self._repull:
                    break
        except (TimeoutError, ConnectionError, ServiceError):
            pass
        finally:
            self._pulling.discard(channel_id)
            self._repull.discard(channel_id)

    # ---- pushes --------------------------------------------------------------------------------
    async def next_push(self, timeout: float | None = None) -> Push:
        while not self._queue:
            if not self.connected:
                raise ConnectionError("connection closed")
            self._queue_event.clear()
            await asyncio.wait_for(self._queue_event.wait(), timeout)
        push = self._queue.popleft()
        if self._paused and len(self._queue) < MAX_QUEUE // 2 and self._proto is not None:
            assert self._proto.transport is not None
            self._proto.transport.resume_reading()
            self._paused = False
        return push

    async def pushes(self) -> AsyncIterator[Push]:
        while True:
            try:
                yield await self.next_push()
            except ConnectionError:
                return

    def drain_pushes(self) -> list[Push]:
        out = list(self._queue)
        self._queue.clear()
        return out

    # ---- sessions ------------------------------------------------------------------------------
    async def rpc(self, route: str, body: dict[str, Any] | None = None) -> Any:
        req = pb.RpcRequest(route=route, body=json.dumps(body or {}).encode())
        resp = await self.call(Cmd.RPC, req, pb.RpcResponse)
        return json.loads(resp.data) if resp.data else None

    async def register(
        self, username: str, password: str, device_id: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        self.device_id = device_id or self.device_id or str(uuid.uuid4())
        result: dict[str, Any] = await self.rpc(
            "account/user/register",
            {"username": username, "password": password, "device_id": self.device_id, **extra},
        )
        self.token = result["token"]
        return result

    async def password_login(
        self, username: str, password: str, device_id: str | None = None
    ) -> dict[str, Any]:
        self.device_id = device_id or self.device_id or str(uuid.uuid4())
        result: dict[str, Any] = await self.rpc(
            "account/auth/login",
            {"username": username, "password": password, "device_id": self.device_id},
        )
        self.token = result["token"]
        return result

    def login_request(
        self, token: str | None = None, accept_compression: tuple[str, ...] = ()
    ) -> pb.AuthorizationRequest:
        return pb.AuthorizationRequest(
            auth_type="JWT",
            auth_token=token or self.token,
            device_info=pb.DeviceInfo(
                device_id=self.device_id, device_type="linux", device_name="privchat_tcp.client"
            ),
            client_info=pb.ClientInfo(client_type="privchat_tcp", version="0.1.0"),
            protocol_version="1",
            accept_compression=list(accept_compression),
        )

    async def login(
        self,
        token: str | None = None,
        device_id: str | None = None,
        accept_compression: tuple[str, ...] = (),
        server_key: bytes | None = None,
    ) -> pb.AuthorizationResponse:
        """LOGIN with the token; with ``server_key`` (the server's public PEM) encrypted."""
        if device_id:
            self.device_id = device_id
        if token:
            self.token = token
        body = self.login_request(accept_compression=accept_compression).SerializeToString()
        if server_key is None:
            status, _, data = await self.request(Cmd.LOGIN, body)
        else:
            # encryption 2: RSA-OAEP key transport; every later frame is sealed (section 5)
            secret = new_secret()
            assert self._proto is not None
            conn = self._proto.conn
            seq = conn.next_request_seq()
            header, sealed = seal_login(server_key, secret, seq, Cmd.LOGIN, ENC_RSA, 0, body)
            fut: asyncio.Future[tuple[int, int, bytes]] = asyncio.get_running_loop().create_future()
            self._waiters[seq] = fut
            conn.set_cipher(SessionCipher.client_side(secret))
            conn.queue_frame(header + sealed)
            self._proto.write_out()
            try:
                status, _, data = await asyncio.wait_for(fut, 30)
            except BaseException:
                conn.set_cipher(None)
                raise
            finally:
                self._waiters.pop(seq, None)
            if status:  # refused: the server holds no keys for this connection
                conn.set_cipher(None)
        if status:
            err = pb.Error.FromString(data)
            raise ServiceError(err.code, err.message, status)
        resp = pb.AuthorizationResponse.FromString(data)
        self.user_id = resp.user_id
        self.auth = resp
        self.server_key = server_key
        assert self._proto is not None
        conn = self._proto.conn
        conn.client_logged_in(conn.cipher if server_key is not None else None)
        return resp

    async def ready(self) -> None:
        await self.rpc("sync/session_ready", {})

    async def ping(self) -> int:
        resp = await self.call(Cmd.PING, pb.PingRequest(), pb.PongResponse)
        return int(resp.timestamp)

    async def logout(self) -> None:
        await self.call(
            Cmd.LOGOUT, pb.DisconnectRequest(reason="UserInitiated"), pb.DisconnectResponse
        )

    async def reconnect(self) -> pb.AuthorizationResponse:
        """Dial again, LOGIN with the saved token, READY: the server pushes what was missed."""
        await self.close()
        await self._dial()
        resp = await self.login(server_key=self.server_key)
        await self.ready()
        return resp

    # ---- messages ------------------------------------------------------------------------------
    async def send(
        self,
        channel_id: int = 0,
        text: str = "",
        *,
        local_message_id: int = 0,
        to_user: int = 0,
        to_group: int = 0,
        payload: bytes | None = None,
        message_type: int = 0,
        e2e: bool = False,
    ) -> pb.SendMessageResponse:
        """MS; ``e2e`` marks the payload as end-to-end ciphertext (encryption 3)."""
        req = pb.SendMessageRequest(
            client_seq=1,
            local_message_id=local_message_id,
            channel_id=channel_id,
            message_type=message_type,
            payload=payload
            if payload is not None
            else json.dumps({"content": text}, ensure_ascii=False).encode(),
        )
        if to_user:
            req.conversation.type = pb.Conversation.SINGLE
            req.conversation.target_id = to_user
        elif to_group:
            req.conversation.type = pb.Conversation.GROUP
            req.conversation.target_id = to_group
        resp: pb.SendMessageResponse = await self.call(
            Cmd.MS, req, pb.SendMessageResponse, ENC_E2E if e2e else 0
        )
        if self.track and resp.message_seq == self.last_pts.get(resp.channel_id, 0) + 1:
            self.last_pts[resp.channel_id] = resp.message_seq
        return resp

    async def pull(
        self, channel_id: int, last_pts: int = 0, limit: int = 100
    ) -> pb.GetDifferenceResponse:
        result: pb.GetDifferenceResponse = await self.call(
            Cmd.MP,
            pb.GetDifferenceRequest(channel_id=channel_id, last_pts=last_pts, limit=limit),
            pb.GetDifferenceResponse,
        )
        return result

    async def revoke(self, channel_id: int, message_id: int) -> pb.MessageRevokeResponse:
        result: pb.MessageRevokeResponse = await self.call(
            Cmd.MR,
            pb.MessageRevokeRequest(channel_id=channel_id, server_message_id=message_id),
            pb.MessageRevokeResponse,
        )
        return result

    async def subscribe(
        self, channel_id: int, channel_type: int = 1, action: int = 1
    ) -> pb.SubscribeResponse:
        result: pb.SubscribeResponse = await self.call(
            Cmd.SUB,
            pb.SubscribeRequest(channel_id=channel_id, channel_type=channel_type, action=action),
            pb.SubscribeResponse,
        )
        return result

    def ack(self, channel_id: int, pts: int) -> None:
        self.send_raw(
            Cmd.ACK,
            pb.AckRequest(acks=[pb.ChannelAck(channel_id=channel_id, pts=pts)]).SerializeToString(),
        )

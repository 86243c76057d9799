"""PROTOCOL.md section 4, every row of the violation table, over real TCP."""

from __future__ import annotations

import asyncio
import json

from conftest import ServerThread, run, user

from privchat_tcp.errors import ErrorCode, Status
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.wire.commands import Cmd
from privchat_tcp.wire.frame import IMPL, encode_header, split_frames

HOST = "127.0.0.1"


async def raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(HOST, port)


def frame(
    command: int,
    body: bytes = b"",
    seq: int = 1,
    flags: int = 0,
    version: int = 1,
    status: int = 0,
    length: int | None = None,
) -> bytes:
    header = bytearray(
        encode_header(len(body) if length is None else length, seq, command, flags, status)
    )
    header[4] = version
    return bytes(header) + body


async def read_frame(
    reader: asyncio.StreamReader, timeout: float = 5.0
) -> tuple[int, int, int, int, bytes]:
    header = await asyncio.wait_for(reader.readexactly(12), timeout)
    length = int.from_bytes(header[:4], "big")
    body = await asyncio.wait_for(reader.readexactly(length), timeout)
    frames, _, violation, _, _ = split_frames(header + body, 1 << 30, False)
    assert violation == 0 and len(frames) == 1
    return frames[0]


async def closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    data = await asyncio.wait_for(reader.read(1 << 20), timeout)
    return data == b""


def error_of(body: bytes) -> pb.Error:
    return pb.Error.FromString(body)


def rpc_body(route: str, body: object) -> bytes:
    return pb.RpcRequest(route=route, body=json.dumps(body).encode()).SerializeToString()


def test_decoder_in_use_is_reported() -> None:
    assert IMPL in ("c", "py")


def test_reserved_flag_bits_close_without_reply(server: ServerThread) -> None:
    async def main() -> None:
        for bits in (0x40, 0x80):
            reader, writer = await raw(server.port)
            writer.write(frame(Cmd.PING, flags=bits))
            assert await closed(reader)
            writer.close()

    run(main())


def test_version_other_than_1_is_unsupported_and_closes(server: ServerThread) -> None:
    async def main() -> None:
        for version in (0, 2, 255):
            reader, writer = await raw(server.port)
            writer.write(frame(Cmd.PING, seq=42, version=version))
            seq, command, flags, status, body = await read_frame(reader)
            assert (seq, command, status) == (42, Cmd.PING, Status.UNSUPPORTED)
            assert flags & 3 == 1
            assert error_of(body).code == ErrorCode.UNSUPPORTED_PROTOCOL
            assert await closed(reader)
            writer.close()

    run(main())


def test_len_over_limit_is_too_large_before_the_body(server: ServerThread) -> None:
    async def main() -> None:
        # before login the limit is 16 KiB; the body is never sent
        reader, writer = await raw(server.port)
        writer.write(frame(Cmd.RPC, seq=5, length=16 * 1024 + 1))
        seq, command, _, status, body = await read_frame(reader)
        assert (seq, command, status) == (5, Cmd.RPC, Status.TOO_LARGE)
        assert error_of(body).code == ErrorCode.PACKET_TOO_LARGE
        assert await closed(reader)
        writer.close()
        # exactly at the limit is fine (the body is bad JSON, so BAD_REQUEST, still open)
        reader, writer = await raw(server.port)
        body16 = pb.RpcRequest(route="system/health", body=b"x" * (16 * 1024 - 20))
        data = body16.SerializeToString()
        assert len(data) <= 16 * 1024
        writer.write(frame(Cmd.RPC, data, seq=6))
        _, _, _, status, _ = await read_frame(reader)
        assert status == Status.BAD_REQUEST
        writer.close()

    run(main())


def test_len_limit_after_login_is_1mib(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        # 1 MiB after login is allowed by the header rules
        status, _, _ = await alice.request(Cmd.MP, b"\x00" * 100)
        assert status == Status.BAD_REQUEST  # bad protobuf, connection stays open
        assert await alice.ping()
        seq = alice.send_raw(Cmd.MS, b"", seq=77)
        assert seq == 77
        # over 1 MiB: TOO_LARGE and closed
        assert alice._proto is not None and alice._proto.transport is not None
        fut = asyncio.get_running_loop().create_future()
        alice._waiters[99] = fut
        alice._proto.transport.write(frame(Cmd.MS, seq=99, length=(1 << 20) + 1))
        status, _, body = await asyncio.wait_for(fut, 5)
        assert status == Status.TOO_LARGE
        await alice.wait_closed()

    run(main())


def test_bad_flow_and_compression_3_are_bad_request_and_close(server: ServerThread) -> None:
    async def main() -> None:
        for flags in (0x01, 0x02, 0x03, 0x30):
            reader, writer = await raw(server.port)
            writer.write(frame(Cmd.PING, seq=9, flags=flags))
            seq, _, _, status, body = await read_frame(reader)
            assert (seq, status) == (9, Status.BAD_REQUEST), flags
            assert error_of(body).code == ErrorCode.INVALID_PACKET
            assert await closed(reader)
            writer.close()

    run(main())


def test_unknown_and_server_only_commands_are_unsupported_and_stay_open(
    server: ServerThread,
) -> None:
    async def main() -> None:
        reader, writer = await raw(server.port)
        for i, command in enumerate((0, 14, 200, 255, Cmd.MN, Cmd.MPS, Cmd.MPB, Cmd.PUB)):
            writer.write(frame(command, seq=100 + i))
            seq, cmd, _, status, body = await read_frame(reader)
            assert (seq, cmd, status) == (100 + i, command, Status.UNSUPPORTED)
        writer.write(frame(Cmd.PING, seq=1))
        seq, _, _, status, body = await read_frame(reader)
        assert (seq, status) == (1, 0) and pb.PongResponse.FromString(body).timestamp > 0
        writer.close()

    run(main())


def test_unknown_route_is_unsupported_and_stays_open(server: ServerThread) -> None:
    async def main() -> None:
        reader, writer = await raw(server.port)
        writer.write(frame(Cmd.RPC, rpc_body("no/such/route", {}), seq=3))
        seq, _, _, status, body = await read_frame(reader)
        assert (seq, status) == (3, Status.UNSUPPORTED)
        assert error_of(body).code == ErrorCode.RESOURCE_NOT_FOUND
        writer.write(frame(Cmd.RPC, rpc_body("system/health", {}), seq=4))
        seq, _, _, status, body = await read_frame(reader)
        assert (seq, status) == (4, 0)
        assert json.loads(pb.RpcResponse.FromString(body).data)["status"] == "ok"
        writer.close()

    run(main())


def test_bodies_that_do_not_decode_are_bad_request_and_stay_open(server: ServerThread) -> None:
    async def main() -> None:
        reader, writer = await raw(server.port)
        cases = [
            (Cmd.RPC, b"\xff\xff\xff"),  # protobuf
            (Cmd.RPC, rpc_body("system/health", None)[:-1] + b"{"),  # JSON (truncated)
            (Cmd.RPC, pb.RpcRequest(route="system/health", body=b"{not json").SerializeToString()),
            (Cmd.RPC, pb.RpcRequest(route="system/health", body=b"[1,2]").SerializeToString()),
            (Cmd.LOGIN, b"\x0a\x05ab"),  # truncated protobuf
        ]
        for i, (command, body) in enumerate(cases):
            writer.write(frame(command, body, seq=10 + i))
            seq, _, _, status, _ = await read_frame(reader)
            assert (seq, status) == (10 + i, Status.BAD_REQUEST), i
        # a compressed body that is not a valid stream (after login compression is allowed)
        writer.write(frame(Cmd.PING, seq=20))
        seq, _, _, status, _ = await read_frame(reader)
        assert status == 0
        writer.close()

        alice = await user(server.port, "alice")
        for flags in (0x10, 0x20):
            status, _, body = await alice.request(Cmd.MP, b"garbage-not-compressed", flags)
            assert status == Status.BAD_REQUEST
            assert error_of(body).code == ErrorCode.DECODING_ERROR
        assert await alice.ping()
        # compression on LOGIN is refused
        status, _, _ = await alice.request(Cmd.LOGIN, b"", 0x20)
        assert status == Status.BAD_REQUEST
        await alice.close()

    run(main())


def test_requests_before_login_are_unauthenticated_and_stay_open(server: ServerThread) -> None:
    async def main() -> None:
        reader, writer = await raw(server.port)
        for i, command in enumerate((Cmd.LOGOUT, Cmd.MS, Cmd.MP, Cmd.MR, Cmd.SUB, Cmd.ACK)):
            writer.write(frame(command, seq=30 + i))
            seq, cmd, _, status, body = await read_frame(reader)
            assert (seq, cmd, status) == (30 + i, command, Status.UNAUTHENTICATED)
            assert error_of(body).code == ErrorCode.AUTH_REQUIRED
        # an authenticated route over RPC
        writer.write(frame(Cmd.RPC, rpc_body("group/group/create", {"name": "x"}), seq=40))
        seq, _, _, status, body = await read_frame(reader)
        assert (seq, status) == (40, Status.UNAUTHENTICATED)
        assert error_of(body).code == ErrorCode.AUTH_REQUIRED
        # anonymous routes and PING still work
        writer.write(frame(Cmd.PING, seq=41))
        assert (await read_frame(reader))[3] == 0
        writer.close()

    run(main())


def test_encrypted_frames_without_session_keys_are_crypto_and_close(server: ServerThread) -> None:
    async def main() -> None:
        for flags in (0x04, 0x0C):
            reader, writer = await raw(server.port)
            writer.write(frame(Cmd.PING, b"x" * 20, seq=2, flags=flags))
            seq, _, _, status, _ = await read_frame(reader)
            assert (seq, status) == (2, Status.CRYPTO)
            assert await closed(reader)
            writer.close()

    run(main())


def test_plaintext_frame_after_encrypted_login_is_crypto_and_closes(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice", encrypted=True)
        bob = await user(server.port, "bob", encrypted=True)
        assert await alice.ping()
        assert alice.cipher is not None and alice._proto is not None
        seq = alice.next_seq()  # a plaintext PING, written past the client's sealing
        fut: asyncio.Future[tuple[int, int, bytes]] = asyncio.get_running_loop().create_future()
        alice._waiters[seq] = fut
        assert alice._proto.transport is not None
        alice._proto.transport.write(encode_header(0, seq, Cmd.PING, 0, 0))
        status, _, body = await asyncio.wait_for(fut, 5)
        assert status == Status.CRYPTO
        await alice.wait_closed()
        assert await bob.ping()  # other sessions are untouched
        await bob.close()

    run(main())


def test_frames_split_at_every_byte_and_many_in_one_read(server: ServerThread) -> None:
    async def main() -> None:
        reader, writer = await raw(server.port)
        stream = b"".join(
            frame(Cmd.PING, pb.PingRequest(timestamp=i).SerializeToString(), seq=i + 1)
            for i in range(50)
        )
        for i in range(len(stream)):  # one byte at a time
            writer.write(stream[i : i + 1])
            await writer.drain()
        for i in range(50):
            seq, _, _, status, _ = await read_frame(reader)
            assert (seq, status) == (i + 1, 0)
        writer.write(stream * 20)  # 1,000 frames in one write
        for i in range(1000):
            seq, _, _, status, _ = await read_frame(reader)
            assert (seq, status) == (i % 50 + 1, 0)
        writer.close()

    run(main())


def test_second_login_on_a_connection_is_bad_request(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        status, _, body = await alice.request(Cmd.LOGIN, alice.login_request().SerializeToString())
        assert status == Status.BAD_REQUEST
        assert await alice.ping()
        await alice.close()

    run(main())


def test_login_with_a_bad_token_is_unauthenticated(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        from privchat_tcp.client import Client

        other = await Client.connect(HOST, server.port)
        other.device_id = alice.device_id
        req = other.login_request(alice.token[:-4] + "AAAA")
        status, _, body = await other.request(Cmd.LOGIN, req.SerializeToString())
        assert status == Status.UNAUTHENTICATED
        assert error_of(body).code == ErrorCode.INVALID_TOKEN
        assert "AAAA" not in error_of(body).message
        # the token is bound to its device
        other.device_id = "00000000-0000-0000-0000-000000000000"
        status, _, body = await other.request(
            Cmd.LOGIN, other.login_request(alice.token).SerializeToString()
        )
        assert status == Status.UNAUTHENTICATED
        await other.close()
        await alice.close()

    run(main())


def test_frames_before_a_broken_header_are_answered_first(server: ServerThread) -> None:
    async def main() -> None:
        # reserved bits: the PINGs before it are answered, then the connection closes silently
        reader, writer = await raw(server.port)
        writer.write(frame(Cmd.PING, seq=1) + frame(Cmd.PING, seq=2) + frame(Cmd.PING, flags=0x80))
        assert [(await read_frame(reader))[0] for _ in range(2)] == [1, 2]
        assert await closed(reader)
        writer.close()
        # a bad version: the PING is answered, then UNSUPPORTED, then the connection closes
        reader, writer = await raw(server.port)
        writer.write(frame(Cmd.PING, seq=3) + frame(Cmd.PING, seq=4, version=9) + frame(Cmd.PING))
        seq, _, _, status, _ = await read_frame(reader)
        assert (seq, status) == (3, 0)
        seq, _, _, status, _ = await read_frame(reader)
        assert (seq, status) == (4, Status.UNSUPPORTED)
        assert await closed(reader)
        writer.close()

    run(main())

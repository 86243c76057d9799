"""The bare uvloop baseline: parse every 12-byte header, answer each frame with a 12-byte pong.

All replies of one ``data_received`` are joined into one write. No protobuf, no sessions: this is
the ceiling for a Python server on this stack (uvloop + asyncio.Protocol).

Run: ``python -m benchmarks.baseline_server --port 9100``
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import struct

import uvloop

_HEADER = struct.Struct("!IBIBBB")
_unpack_from = _HEADER.unpack_from
_pack = _HEADER.pack
HEADER_SIZE = 12
MAX_BODY = 1 << 20


class BaselineProtocol(asyncio.Protocol):
    __slots__ = ("buf", "transport")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        if buf:
            buf += data
            view: bytes | bytearray = buf
        else:
            view = data
        pos = 0
        end = len(view)
        out: list[bytes] = []
        append = out.append
        while end - pos >= HEADER_SIZE:
            length, version, seq, command, flags, status = _unpack_from(view, pos)
            if length > MAX_BODY or version != 1:
                assert self.transport is not None
                self.transport.close()
                return
            stop = pos + HEADER_SIZE + length
            if stop > end:
                break
            append(_pack(0, 1, seq, command, (flags & 0xFC) | 1, 0))
            pos = stop
        if view is buf:
            del buf[:pos]
        elif pos < end:
            buf += data[pos:]
        if out:
            assert self.transport is not None
            self.transport.write(b"".join(out))


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        BaselineProtocol, host, port, backlog=4096, reuse_address=True
    )
    stop: asyncio.Future[None] = loop.create_future()

    def on_signal() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    print(f"baseline listening on {host}:{port}", flush=True)
    await stop
    server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()

"""``privchat-tcp``: serve, chat (an interactive terminal client), backup, keygen."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import pathlib
import sys
from collections.abc import Sequence

from ._version import __version__
from .config import add_arguments, load_settings
from .errors import ConfigError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privchat-tcp", description="privchat-tcp instant-messaging server"
    )
    parser.add_argument("--version", action="version", version=f"privchat-tcp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Every setting is also read from PRIVCHAT_<NAME> "
        "environment variables and from a TOML file (--config).",
    )
    add_arguments(serve)
    chat = sub.add_parser("chat", help="interactive terminal client")
    chat.add_argument("--host", default="127.0.0.1")
    chat.add_argument("--port", type=int, default=9001)
    backup = sub.add_parser(
        "backup",
        help="copy the store online and consistently (while a server may run)",
        description="Write a consistent copy of DATA_DIR/privchat.db to DEST with SQLite's "
        "backup API; a running server keeps serving. Restore: stop the server, replace "
        "DATA_DIR/privchat.db with the copy (delete privchat.db-wal and -shm), start it.",
    )
    backup.add_argument("dest", help="the file to write (must not exist)")
    backup.add_argument("--data-dir", default="./privchat-data", help="the server's data dir")
    keygen = sub.add_parser("keygen", help="write a new RSA server key (PEM)")
    keygen.add_argument("path", help="where to write the private key")
    keygen.add_argument("--bits", type=int, default=2048)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        try:
            settings = load_settings(args)
        except ConfigError as exc:
            print(f"privchat-tcp: {exc}", file=sys.stderr)
            return 2
        # The store's records and dedup entries are invisible to the cyclic GC (compiled, see
        # _record_py), so what a collection walks is young, short-lived objects: a young
        # generation of 10,000 keeps each pause near a millisecond (50,000 held the loop ~5 ms),
        # and the rarer older collections find little. With the pure-Python records (no
        # compiler) the records are GC objects and older collections grow with the store.
        gc.freeze()
        gc.set_threshold(10_000, 50, 100)
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        from .app import run
        from .store.sqlite import StoreOpenError

        try:
            run(settings)
        except StoreOpenError as exc:
            print(f"privchat-tcp: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "backup":
        from .store.sqlite import StoreOpenError, backup

        try:
            size = backup(pathlib.Path(args.data_dir), pathlib.Path(args.dest))
        except (StoreOpenError, OSError) as exc:
            print(f"privchat-tcp: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {args.dest} ({size} bytes, integrity ok)")
        return 0
    if args.command == "keygen":
        from .wire.crypto import ServerKey

        path = pathlib.Path(args.path)
        if path.exists():
            print(f"privchat-tcp: {path} exists; not overwriting", file=sys.stderr)
            return 2
        key = ServerKey.generate(args.bits)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_bytes(key.private_pem())
        print(f"wrote {path}\nfingerprint (SHA-256): {key.fingerprint()}")
        return 0
    try:
        asyncio.run(chat(args.host, args.port))
    except (KeyboardInterrupt, EOFError):
        pass
    return 0


async def chat(host: str, port: int) -> None:
    """Read lines from the terminal and run them (``privchat_tcp.chat.Shell``); print pushes
    as they come."""
    from .chat import HELP, Shell
    from .client import Client

    client = await Client.connect(host, port)
    shell = Shell(client)
    loop = asyncio.get_running_loop()
    print(f"connected to {host}:{port}\n{HELP}")

    async def watch() -> None:
        async for push in client.pushes():
            line = await shell.describe_push(push.command, push.message)
            print(f"\r{line}\n> ", end="", flush=True)

    watcher = loop.create_task(watch())
    try:
        while True:
            line = (await loop.run_in_executor(None, input, "> ")).strip()
            if line == "/quit":
                break
            try:
                out = await shell.run(line)
            except ConnectionError:
                print("connection closed")
                break
            for text in out:
                print(text)
    finally:
        watcher.cancel()
        await client.close()


if __name__ == "__main__":
    sys.exit(main())

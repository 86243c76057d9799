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
from .errors import ConfigError, PrivchatError

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


HELP = """commands:
  /register USER PASS      create an account and log in
  /login USER PASS         log in
  /channels                list your channels
  /dm USER_ID TEXT         send a direct message
  /send CHANNEL_ID TEXT    send to a channel
  /group NAME [USER_ID..]  create a group
  /add GROUP_ID USER_ID    add a member
  /history CHANNEL_ID      the channel's last 20 messages (message/history/get)
  /read CHANNEL_ID         mark the channel read up to its last message
  /unread [CHANNEL_ID]     unread messages (in one channel, or in all)
  /quit"""


async def chat(host: str, port: int) -> None:
    from .client import Client
    from .rpc import safejson
    from .wire.commands import Cmd

    client = await Client.connect(host, port)
    loop = asyncio.get_running_loop()
    print(f"connected to {host}:{port}\n{HELP}")

    def show(msg: object) -> None:
        print(f"\r{msg}\n> ", end="", flush=True)

    def text_of(m: object) -> str:
        """A message's text; the payload is another user's input (any depth, any bytes)."""
        payload = getattr(m, "payload", b"")
        if not isinstance(payload, bytes):
            return ""
        try:
            value = safejson.loads(payload, what="payload")
        except PrivchatError:
            value = None
        text = (
            str(value.get("content", ""))
            if isinstance(value, dict)
            else payload.decode("utf-8", "replace")
        )
        return text.encode("utf-8", "replace").decode()  # printable whatever it holds

    def printable(text: object) -> str:
        return str(text).encode("utf-8", "replace").decode()

    async def watch() -> None:
        async for push in client.pushes():
            m = push.message
            if push.command == Cmd.MPS:
                kind = "revoked" if m.deleted else "message"
                show(
                    f"[{kind}] channel {m.channel_id} pts {m.message_seq} from {m.from_uid}: "
                    f"{text_of(m)}"
                )
            elif push.command == Cmd.LOGOUT:
                show(f"[server ended the session] {m.message}")
            else:
                show(f"[push {push.command}] {m}")

    watcher = loop.create_task(watch())
    try:
        while True:
            line = (await loop.run_in_executor(None, input, "> ")).strip()
            if not line:
                continue
            parts = line.split(" ", 2)
            cmd = parts[0]
            try:
                if cmd == "/quit":
                    break
                if cmd in ("/register", "/login"):
                    if cmd == "/register":
                        await client.register(parts[1], parts[2])
                    else:
                        await client.password_login(parts[1], parts[2])
                    auth = await client.login()
                    await client.ready()
                    print(f"logged in as user {auth.user_id}")
                elif cmd == "/channels":
                    data = await client.rpc("entity/sync_entities", {"entity_type": "channel"})
                    for item in data["items"]:
                        p = item["payload"]
                        kind = "direct" if p["channel_type"] == 1 else "group"
                        print(f"  {p['channel_id']} {kind} {p['name']!r} pts {p['current_pts']}")
                elif cmd == "/dm":
                    r = await client.send(to_user=int(parts[1]), text=parts[2])
                    print(f"sent: channel {r.channel_id} pts {r.message_seq}")
                elif cmd == "/send":
                    r = await client.send(int(parts[1]), parts[2])
                    print(f"sent: pts {r.message_seq}")
                elif cmd == "/group":
                    rest = line.split()[1:]
                    g = await client.rpc(
                        "group/group/create",
                        {"name": rest[0], "member_ids": [int(x) for x in rest[1:]]},
                    )
                    print(f"group {g['group_id']} created")
                elif cmd == "/add":
                    await client.rpc(
                        "group/member/add", {"group_id": int(parts[1]), "user_id": int(parts[2])}
                    )
                    print("added")
                elif cmd == "/history":
                    page = await client.rpc(
                        "message/history/get", {"channel_id": int(parts[1]), "limit": 20}
                    )
                    for m in page["messages"]:
                        body = "(revoked)" if m["revoked"] else printable(m["content"])
                        print(f"  pts {m['pts']} {m['timestamp']} from {m['sender_id']}: {body}")
                    if page["has_more"]:
                        print("  (older messages not shown)")
                elif cmd == "/read":
                    cid = int(parts[1])
                    pts = (await client.rpc("sync/get_channel_pts", {"channel_id": cid}))[
                        "current_pts"
                    ]
                    r = await client.rpc(
                        "message/status/read_pts", {"channel_id": cid, "read_pts": pts}
                    )
                    print(f"read up to pts {r['last_read_pts']}")
                elif cmd == "/unread":
                    which = {"channel_id": int(parts[1])} if len(parts) > 1 else {}
                    n = await client.rpc("message/status/count", which)
                    print(f"unread: {n['unread_count']}")
                else:
                    print(HELP)
            except (IndexError, ValueError):
                print(HELP)
            except PrivchatError as exc:
                print(f"error: {exc}")
            except ConnectionError:
                print("connection closed")
                break
    finally:
        watcher.cancel()
        await client.close()


if __name__ == "__main__":
    sys.exit(main())

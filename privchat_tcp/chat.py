"""``privchat-tcp chat``: an interactive terminal client, by names rather than numeric ids.

``Shell`` holds one client's session and turns a typed line into the requests it stands for
(``await shell.run(line)`` returns the lines to print); ``describe_push`` renders what the
server pushes. Users are named by username (or a numeric id); channels by a group's name, a
user's name (their direct chat) or an id. Names seen are cached; a name not seen yet is looked
up with ``account/search/query``. Everything another user typed is printed through ``_clean``
(any bytes, any depth).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from .client import Client
from .errors import PrivchatError
from .rpc import safejson
from .wire.commands import Cmd

__all__ = ["HELP", "Shell", "UsageError", "text_of"]

HELP = """commands (USER: a username or id; CHANNEL: a group name or #name, @USER for the
direct chat (or a bare username), or a channel id):
  /register USER PASS       create an account and log in
  /login USER PASS          log in
  /whoami                   who you are logged in as
  /find TEXT                search users
  /befriend USER [MESSAGE]  ask USER to be your friend
  /requests                 friend requests waiting for you
  /accept USER              accept USER's friend request
  /friends                  your friends
  /dm USER TEXT             send USER a direct message
  /send CHANNEL TEXT        send to a channel
  /group NAME [USER ...]    create a group with these members
  /add GROUP USER           add a member to a group
  /members GROUP            a group's members and their roles
  /channels                 your channels, with unread counts
  /history CHANNEL [N]      the last N messages of a channel (20)
  /read CHANNEL             mark a channel read up to its last message
  /unread                   unread messages across your channels
  /help
  /quit"""

_TYPE_NAMES = {1: "direct", 2: "group"}


class UsageError(Exception):
    """A line that does not say what to do (the shell prints the usage)."""


def _clean(value: object) -> str:
    """Text another user chose, printable whatever it holds (lone surrogates, controls)."""
    text = str(value)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return text.encode("utf-8", "replace").decode()


def text_of(payload: object) -> str:
    """A message's text: the ``content`` of a PrivChat envelope, else the payload as text."""
    if not isinstance(payload, bytes):
        return ""
    try:
        value = safejson.loads(payload, what="payload")
    except PrivchatError:
        value = None
    if isinstance(value, dict):
        return _clean(value.get("content", ""))
    return _clean(payload.decode("utf-8", "replace"))


class Shell:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.names: dict[int, str] = {}  # user id -> username
        self.ids: dict[str, int] = {}  # username (lowercase) -> user id
        self.groups: dict[str, int] = {}  # group name (lowercase) -> channel id
        self.channel_names: dict[int, str] = {}  # channel id -> what to call it
        self.directs: dict[int, int] = {}  # peer user id -> direct channel id
        self._commands: dict[str, Callable[[list[str]], Awaitable[list[str]]]] = {
            "/register": self._register,
            "/login": self._login,
            "/whoami": self._whoami,
            "/find": self._find,
            "/befriend": self._befriend,
            "/requests": self._requests,
            "/accept": self._accept,
            "/friends": self._friends,
            "/dm": self._dm,
            "/send": self._send,
            "/group": self._group,
            "/add": self._add,
            "/members": self._members,
            "/channels": self._channels,
            "/history": self._history,
            "/read": self._read,
            "/unread": self._unread,
        }

    # ---- the loop's entry points ------------------------------------------------------------
    async def run(self, line: str) -> list[str]:
        """The lines to print for one typed line (errors included; never raises for a
        refusal of the server or a malformed line)."""
        line = line.strip()
        if not line:
            return []
        cmd, _, rest = line.partition(" ")
        handler = self._commands.get(cmd)
        if handler is None:
            return [HELP]
        try:
            return await handler(rest.split())
        except (UsageError, IndexError, ValueError):
            return [f"usage: {_usage(cmd)}"]
        except PrivchatError as exc:
            return [f"error: {_clean(exc)}"]

    async def describe_push(self, command: int, message: Any) -> str:
        """A push as a line: who wrote what where."""
        if command == Cmd.MPS:
            who = await self.name_of(message.from_uid) if message.from_uid else "server"
            where = await self.channel_label(message.channel_id, message.channel_type)
            if message.deleted:
                return f"[{where}] {who} revoked a message"
            return f"[{where}] {who}: {text_of(message.payload)}"
        if command == Cmd.LOGOUT:
            return f"[the server ended the session] {_clean(message.message)}"
        if command == Cmd.MN:
            where = await self.channel_label(message.channel_id, message.channel_type)
            return f"[{where}] new messages (/history to read them)"
        return f"[push {command}]"

    # ---- names --------------------------------------------------------------------------------
    def _learn(self, user_id: int, username: str) -> None:
        self.names[user_id] = username
        self.ids[username.lower()] = user_id

    async def name_of(self, user_id: int) -> str:
        name = self.names.get(user_id)
        if name is None:
            try:
                detail = await self.client.rpc("account/user/detail", {"target_user_id": user_id})
                name = _clean(detail.get("username") or user_id)
            except PrivchatError:
                name = str(user_id)
            self._learn(user_id, name)
        return name

    async def user_id(self, who: str) -> int:
        """A user by username (exact, case-insensitive) or by a numeric id."""
        if who.isascii() and who.isdigit():
            return int(who)
        known = self.ids.get(who.lower())
        if known is not None:
            return known
        found = await self.client.rpc("account/search/query", {"query": who})
        for user in found.get("users", []):
            self._learn(int(user["user_id"]), str(user["username"]))
        known = self.ids.get(who.lower())
        if known is None:
            raise PrivchatError(f"no user named {who}")
        return known

    async def channel_id(self, what: str) -> int:
        """A channel by id, group name (``#name``) or a user (``@name`` or ``@id``: the direct
        chat; a bare name that is no group's too)."""
        if what.startswith("@"):
            return await self._direct(await self.user_id(what[1:]))
        what = what.removeprefix("#")
        if what.isascii() and what.isdigit():
            return int(what)
        group = self.groups.get(what.lower())
        if group is None:
            await self._load_channels()
            group = self.groups.get(what.lower())
        if group is not None:
            return group
        peer = await self.user_id(what)
        return await self._direct(peer)

    async def _direct(self, peer: int) -> int:
        channel = self.directs.get(peer)
        if channel is None:
            reply = await self.client.rpc("channel/direct/get_or_create", {"target_user_id": peer})
            channel = self.directs[peer] = int(reply["channel_id"])
            self.channel_names[channel] = "@" + await self.name_of(peer)
        return channel

    async def channel_label(self, channel_id: int, channel_type: int = 0) -> str:
        label = self.channel_names.get(channel_id)
        if label is None:
            await self._load_channels()
            label = self.channel_names.get(channel_id)
        return label or f"channel {channel_id}"

    async def _load_channels(self) -> list[dict[str, Any]]:
        """Every channel of the user (entity sync, all pages), names learnt on the way."""
        items: list[dict[str, Any]] = []
        since = 0
        for _ in range(64):
            page = await self.client.rpc(
                "entity/sync_entities",
                {"entity_type": "channel", "since_version": since, "limit": 200},
            )
            items.extend(i for i in page.get("items", []) if not i.get("deleted"))
            if not page.get("has_more") or int(page.get("next_version", 0)) <= since:
                break
            since = int(page["next_version"])
        channels = [i["payload"] for i in items if isinstance(i.get("payload"), dict)]
        for p in channels:
            cid = int(p["channel_id"])
            name = _clean(p.get("name") or "")
            if int(p.get("channel_type", 0)) == 2:
                self.groups[name.lower()] = cid
                self.channel_names[cid] = "#" + name
            else:
                peer = str(p.get("channel_name") or "")
                if peer.isdigit():
                    self.directs[int(peer)] = cid
                    self.channel_names[cid] = "@" + await self.name_of(int(peer))
                else:
                    self.channel_names[cid] = "@" + name
        return channels

    # ---- commands -----------------------------------------------------------------------------
    async def _register(self, args: list[str]) -> list[str]:
        await self.client.register(args[0], args[1])
        return await self._start(args[0])

    async def _login(self, args: list[str]) -> list[str]:
        await self.client.password_login(args[0], args[1])
        return await self._start(args[0])

    async def _start(self, username: str) -> list[str]:
        auth = await self.client.login()
        await self.client.ready()
        self._learn(auth.user_id, username)
        return [f"logged in as {username} (user {auth.user_id})"]

    async def _whoami(self, args: list[str]) -> list[str]:
        uid = self.client.user_id
        if not uid:
            return ["not logged in"]
        return [f"{await self.name_of(uid)} (user {uid})"]

    async def _find(self, args: list[str]) -> list[str]:
        if not args:
            raise UsageError
        found = await self.client.rpc("account/search/query", {"query": " ".join(args)})
        lines = []
        for user in found.get("users", []):
            self._learn(int(user["user_id"]), str(user["username"]))
            friend = " (friend)" if user.get("is_friend") else ""
            lines.append(
                f"  {_clean(user['username'])} {_clean(user.get('nickname') or '')} "
                f"user {user['user_id']}{friend}"
            )
        return lines or ["nobody found"]

    async def _befriend(self, args: list[str]) -> list[str]:
        target = await self.user_id(args[0])
        body: dict[str, Any] = {"target_user_id": target, "source": "search"}
        if len(args) > 1:
            body["message"] = " ".join(args[1:])
        reply = await self.client.rpc("contact/friend/apply", body)
        return [f"friend request to {await self.name_of(target)}: {reply.get('status', 'sent')}"]

    async def _requests(self, args: list[str]) -> list[str]:
        pending = await self.client.rpc("contact/friend/pending", {})
        lines = []
        for r in pending.get("requests", []):
            who = await self.name_of(int(r["from_user_id"]))
            note = f": {_clean(r['message'])}" if r.get("message") else ""
            lines.append(f"  {who}{note} (/accept {who})")
        return lines or ["no friend requests"]

    async def _accept(self, args: list[str]) -> list[str]:
        applicant = await self.user_id(args[0])
        channel = await self.client.rpc("contact/friend/accept", {"from_user_id": applicant})
        name = await self.name_of(applicant)
        if isinstance(channel, int):
            self.directs[applicant] = channel
            self.channel_names[channel] = "@" + name
        return [f"you and {name} are friends"]

    async def _friends(self, args: list[str]) -> list[str]:
        page = await self.client.rpc("entity/sync_entities", {"entity_type": "friend"})
        lines = []
        for item in page.get("items", []):
            p = item.get("payload")
            if item.get("deleted") or not isinstance(p, dict):
                continue
            uid = int(p.get("user_id") or p.get("uid") or item["entity_id"])
            user = p.get("user")
            if isinstance(user, dict) and user.get("username"):
                self._learn(uid, _clean(user["username"]))
            lines.append(f"  {await self.name_of(uid)} (user {uid})")
        return lines or ["no friends yet (/find, /befriend)"]

    async def _dm(self, args: list[str]) -> list[str]:
        if len(args) < 2:
            raise UsageError
        peer = await self.user_id(args[0])
        channel = await self._direct(peer)
        return await self._post(channel, " ".join(args[1:]))

    async def _send(self, args: list[str]) -> list[str]:
        if len(args) < 2:
            raise UsageError
        return await self._post(await self.channel_id(args[0]), " ".join(args[1:]))

    async def _post(self, channel: int, text: str) -> list[str]:
        r = await self.client.send(channel, text)
        return [f"sent to {await self.channel_label(r.channel_id)} (pts {r.message_seq})"]

    async def _group(self, args: list[str]) -> list[str]:
        name = args[0]
        members = [await self.user_id(who) for who in args[1:]]
        g = await self.client.rpc("group/group/create", {"name": name, "member_ids": members})
        gid = int(g["group_id"])
        self.groups[name.lower()] = gid
        self.channel_names[gid] = "#" + name
        return [f"group #{name} created with {g.get('member_count', 1)} member(s)"]

    async def _group_id(self, what: str) -> int:
        if what.isascii() and what.isdigit():
            return int(what)
        gid = self.groups.get(what.lower().lstrip("#"))
        if gid is None:
            await self._load_channels()
            gid = self.groups.get(what.lower().lstrip("#"))
        if gid is None:
            raise PrivchatError(f"no group named {what}")
        return gid

    async def _add(self, args: list[str]) -> list[str]:
        gid = await self._group_id(args[0])
        uid = await self.user_id(args[1])
        await self.client.rpc("group/member/add", {"group_id": gid, "user_id": uid})
        return [f"added {await self.name_of(uid)} to {await self.channel_label(gid)}"]

    async def _members(self, args: list[str]) -> list[str]:
        gid = await self._group_id(args[0])
        listing = await self.client.rpc("group/member/list", {"group_id": gid})
        lines = []
        for m in listing.get("members", []):
            uid = int(m["user_id"])
            if m.get("username"):
                self._learn(uid, _clean(m["username"]))
            muted = " (muted)" if m.get("is_muted") else ""
            lines.append(f"  {await self.name_of(uid)} {_clean(m.get('role', ''))}{muted}")
        return lines

    async def _channels(self, args: list[str]) -> list[str]:
        channels = await self._load_channels()
        lines = []
        for p in channels:
            cid = int(p["channel_id"])
            unread = await self._unread_in(cid)
            kind = _TYPE_NAMES.get(int(p.get("channel_type", 0)), "channel")
            extra = f", {unread} unread" if unread else ""
            lines.append(f"  {await self.channel_label(cid)} ({kind} {cid}{extra})")
        return lines or ["no channels yet (/dm, /group)"]

    async def _unread_in(self, channel: int) -> int:
        try:
            count = await self.client.rpc("message/status/count", {"channel_id": channel})
        except PrivchatError:
            return 0
        return int(count.get("unread_count", 0)) if isinstance(count, dict) else 0

    async def _history(self, args: list[str]) -> list[str]:
        channel = await self.channel_id(args[0])
        limit = int(args[1]) if len(args) > 1 else 20
        page = await self.client.rpc(
            "message/history/get", {"channel_id": channel, "limit": max(1, min(limit, 100))}
        )
        lines = []
        for m in page.get("messages", []):
            who = await self.name_of(int(m["sender_id"]))
            if m.get("revoked"):
                lines.append(f"  {who}: (revoked)")
            else:
                lines.append(f"  {who}: {_message_text(m.get('content'))}")
        if page.get("has_more"):
            lines.append(f"  (older messages: /history {args[0]} {limit * 2})")
        return lines or ["no messages"]

    async def _read(self, args: list[str]) -> list[str]:
        channel = await self.channel_id(args[0])
        pts = await self.client.rpc("sync/get_channel_pts", {"channel_id": channel})
        current = int(pts.get("current_pts", 0)) if isinstance(pts, dict) else 0
        await self.client.rpc(
            "message/status/read_pts", {"channel_id": channel, "read_pts": current}
        )
        return [f"{await self.channel_label(channel)} read up to pts {current}"]

    async def _unread(self, args: list[str]) -> list[str]:
        count = await self.client.rpc("message/status/count", {})
        return [f"{int(count.get('unread_count', 0))} unread"]


def _message_text(content: object) -> str:
    """A history item's ``content``: the envelope's text when it is one."""
    if isinstance(content, str):
        try:
            value = json.loads(content)
        except ValueError:
            return _clean(content)
        if isinstance(value, dict) and "content" in value:
            return _clean(value["content"])
        return _clean(content)
    return _clean(content if content is not None else "")


def _usage(cmd: str) -> str:
    for line in HELP.splitlines():
        if line.strip().startswith(cmd + " ") or line.strip() == cmd:
            return line.strip()
    return cmd

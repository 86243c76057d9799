"""A state-machine model of messaging (issue 13): Hypothesis drives 2-4 users with two devices
each against a real server (real loopback sockets, the real SQLite store on a temporary data
directory, restarted on the same directory), and compares what the server answers with a model
of what it must hold.

Rules: register, create a group, open a direct channel, send (MS or ``sync/submit``, direct and
in a group), resend with the same ``local_message_id``, revoke (MR or ``message/revoke``), a
refused revoke, pull (MP or ``sync/get_difference``, from any pts, in pages), ACK, read
(``message/status/read_pts`` or ``message/status/read``), disconnect, reconnect (the saved
token), login (a password login, then LOGIN), replace (a second LOGIN of an online device ends
the first session with REPLACED), add a member, remove one, leave a group (a notice in the log,
the history starting at the join) and restart the server. One Hypothesis rule draws the step by
weight among those that apply (sends the most, restarts at most once an example).

Checked after every step: every push a device got names a record of the model (same id, pts
and kind; a tombstone only for a revoked message), pts strictly increasing within a session,
never an echo of the device's own send; the catch-up at READY never redelivers what the device
acknowledged and ends at the channel's pts (or an MN); the channels the step changed (or, for a
step that changed none, one in turn) are pulled by a member device from pts 0 and must be the
model's log exactly (pts 1..n without gaps, the same ids, revokes seen as revoked); a member's
unread count (``message/status/count``) is the model's. A resend returns the original id and
pts and commits nothing. When an example ends every device of every user (offline ones log in
again) pulls every channel of its user, and each user's total unread count is checked.

One server and one data directory serve all examples (each example registers fresh users and
starts with an empty model); an example restarts it at most once, so restarts stay cheap.

CI runs ``PRIVCHAT_SM_EXAMPLES`` (default 200) derandomized examples of ``PRIVCHAT_SM_STEPS``
(default 50) steps; ``PRIVCHAT_SM_RANDOM=1`` draws random examples instead (a long run)::

    PRIVCHAT_SM_RANDOM=1 PRIVCHAT_SM_EXAMPLES=5000 PRIVCHAT_SM_STEPS=100 \\
        python -m pytest -q tests/test_state_machine.py
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import pytest
from conftest import ServerThread, new_loop
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from privchat_tcp.client import Client, Push
from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.service.model import SYSTEM_USER_ID
from privchat_tcp.wire.commands import Cmd

T = TypeVar("T")

EXAMPLES = int(os.environ.get("PRIVCHAT_SM_EXAMPLES", "200"))
STEPS = int(os.environ.get("PRIVCHAT_SM_STEPS", "50"))
RANDOM = os.environ.get("PRIVCHAT_SM_RANDOM", "") == "1"

MAX_USERS = 4
DEVICES = 2
MAX_GROUPS = 2
RESTARTS_PER_EXAMPLE = 1
EXAMPLES_PER_DIRECTORY = 20
REVOKE_TOPIC = "message.revoke"

SERVER_SETTINGS: dict[str, Any] = {
    # a small window: pulls of the whole history read the database, off the loop
    "memory_window": 8,
    # many accounts and logins from one address, as fast as the model goes
    "login_rate_per_ip": 0,
    "conn_rate_per_ip": 0,
    "rate_per_connection": 0,
    "rate_per_user": 0,
    "max_devices_per_user": 0,
    # WAL without an fsync per commit: the restarts are clean stops, the writes still go through
    # the writer and the database
    "sqlite_synchronous": "NORMAL",
    # plaintext logins only: no RSA key to load at every start
    "encryption": False,
}


# ---- the world: one server, one data directory, one client loop for all examples -------------
class World:
    """The server, its data directory and the client loop, shared by the examples. Every
    ``EXAMPLES_PER_DIRECTORY`` examples the server starts over on a new directory: a start
    loads the whole store, so a directory that grew with every example would make the
    restarts slow."""

    def __init__(self) -> None:
        self.loop = new_loop()
        self.data = tempfile.TemporaryDirectory(prefix="privchat-sm-")
        self.server = self._start()
        self.names = itertools.count(1)
        self.counts: Counter[str] = Counter()
        self.examples_here = 0

    def _start(self) -> ServerThread:
        return ServerThread(data_dir=self.data.name, **SERVER_SETTINGS).start()

    def new_example(self) -> None:
        self.examples_here += 1
        if self.examples_here > EXAMPLES_PER_DIRECTORY:
            self.server.stop()
            self.data.cleanup()
            self.data = tempfile.TemporaryDirectory(prefix="privchat-sm-")
            self.server = self._start()
            self.examples_here = 1

    @property
    def port(self) -> int:
        return self.server.port

    def restart(self) -> None:
        """Stop the server and start a new one on the same data directory."""
        self.server.stop()
        self.server = self._start()
        self.counts["restarts"] += 1

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def close(self) -> None:
        try:
            self.server.stop()
        finally:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.run_until_complete(asyncio.sleep(0.01))
            self.loop.close()
            self.data.cleanup()


_WORLD: World | None = None


def world() -> World:
    assert _WORLD is not None, "the state machine runs inside test_state_machine"
    return _WORLD


# ---- the model --------------------------------------------------------------------------------
@dataclass
class Entry:
    """One record of a channel's log: a message or a revoke event."""

    pts: int
    message_id: int  # a revoke event: the revoked message's id (as the server shows it)
    sender: int  # user id (a revoke event: the revoker)
    device: str = ""
    local_id: int = 0
    event: bool = False  # a revoke event
    revoked: bool = False  # a message that was revoked


@dataclass(eq=False)
class Chan:
    cid: int
    group: bool
    owner: int
    members: dict[int, int]  # user id -> its join pts (its history starts after it)
    #: user id -> its memberships, [join pts, the pts of its leave notice (0: a member)]:
    #: what it may be pushed
    spans: dict[int, list[list[int]]] = field(default_factory=dict)
    log: list[Entry] = field(default_factory=list)

    @classmethod
    def new(cls, cid: int, group: bool, owner: int, uids: list[int]) -> Chan:
        return cls(cid, group, owner, dict.fromkeys(uids, 0), {u: [[0, 0]] for u in uids})

    @property
    def pts(self) -> int:
        return len(self.log)

    def floor(self, uid: int) -> int:
        return self.members[uid]

    def may_see(self, uid: int, pts: int) -> bool:
        return any(j < pts and (not end or pts <= end) for j, end in self.spans.get(uid, []))

    def unread(self, uid: int, read: int) -> int:
        after = max(read, self.floor(uid))
        return sum(1 for e in self.log[after:] if not e.event and not e.revoked and e.sender != uid)

    def notice(self) -> None:
        """A group notice (the creation, a join, a leave) at the next pts; its id is learnt
        when seen."""
        self.log.append(Entry(self.pts + 1, 0, SYSTEM_USER_ID))

    def learn(self, e: Entry, message_id: int) -> None:
        if not e.message_id:  # a notice: the first sight of it names it
            assert all(x.message_id != message_id for x in self.log), (self.cid, message_id)
            e.message_id = message_id


@dataclass(eq=False)
class Dev:
    user: User
    device_id: str
    token: str = ""
    client: Client | None = None
    acked: dict[int, int] = field(default_factory=dict)  # cid -> pts the device ACKed
    pushed: dict[int, int] = field(default_factory=dict)  # this session: cid -> last pts pushed
    #: cid -> the highest pts the server gave the device (pushed, pulled, its own, ACKed)
    given: dict[int, int] = field(default_factory=dict)
    sent: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # local -> cid, id, pts
    next_local: int = 1
    #: channels an MN at a new device's catch-up named: it starts where its user is, which the
    #: model does not know, until it pulls the channel to its end or ACKs it
    vague: set[int] = field(default_factory=set)
    trace: list[str] = field(default_factory=list)  # what happened to it (a failure shows it)

    @property
    def online(self) -> bool:
        return self.client is not None

    def label(self) -> str:
        return f"{self.user.name}/{self.device_id[:8]}"

    def got(self, cid: int, pts: int, how: str = "") -> None:
        if how:
            self.trace.append(f"{how} {cid}:{pts}")
        if pts > self.given.get(cid, 0):
            self.given[cid] = pts


@dataclass(eq=False)
class User:
    name: str
    user_id: int = 0
    devices: list[Dev] = field(default_factory=list)
    reads: dict[int, int] = field(default_factory=dict)  # cid -> read position (pts)

    @property
    def password(self) -> str:
        return "password-" + self.name


@dataclass
class Seen:
    """One record as a pull shows it."""

    pts: int
    message_id: int
    sender: int
    event: bool
    revoked: bool


def _from_push(m: Any) -> Seen:
    event = m.topic == REVOKE_TOPIC
    return Seen(
        m.message_seq, m.server_message_id, m.from_uid, event, bool(m.deleted) and not event
    )


def _from_commit(c: dict[str, Any]) -> Seen:
    content = c["content"]
    event = isinstance(content, dict) and content.get("event") == REVOKE_TOPIC
    revoked = isinstance(content, dict) and content.get("revoked") is True
    return Seen(int(c["pts"]), int(c["server_msg_id"]), int(c["sender_id"]), event, revoked)


def _some(items: Iterator[object]) -> bool:
    return next(items, None) is not None


class ChatMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.w = world()
        self.w.new_example()
        self.users: list[User] = []
        self.chans: dict[int, Chan] = {}
        self.directs: dict[frozenset[int], int] = {}
        self.focus: list[int] = []  # the channels the last step changed
        self.turn = 0
        self.restarts = 0
        self.clean = False  # the last invariant check passed (teardown checks everything)
        self.counts_moved = False
        #: after a read: (the reader, the channel) whose count moved (not its log)
        self.counted: tuple[Dev, Chan] | None = None

    # ---- helpers -------------------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.w.run(coro)

    def step(self, name: str) -> None:
        self.clean = False
        self.focus = []
        self.counts_moved = False  # the step changed what is unread (a send, a revoke, a read)
        self.counted = None
        self.w.counts["steps"] += 1
        self.w.counts[name] += 1

    def devices(self) -> list[Dev]:
        return [d for u in self.users for d in u.devices]

    def online(self) -> list[Dev]:
        return [d for d in self.devices() if d.online]

    def chans_of(self, u: User) -> list[Chan]:
        return [c for c in self.chans.values() if u.user_id in c.members]

    def talkers(self) -> list[Dev]:
        """Online devices whose user is in a channel."""
        return [d for d in self.online() if self.chans_of(d.user)]

    def client(self, d: Dev) -> Client:
        assert d.client is not None
        return d.client

    def user_of(self, uid: int) -> User:
        return next(u for u in self.users if u.user_id == uid)

    # ---- pushes --------------------------------------------------------------------------------
    def absorb(self, d: Dev, catch_up: bool = False, ended: bool = False) -> None:
        """Check every push the device's session got against the model (``ended``: the
        server ended the session, a LOGOUT is expected; ``catch_up``: what READY pushed)."""
        client = self.client(d)
        pushes = client.drain_pushes()
        notified: set[int] = set()
        runs: dict[int, list[int]] = {}
        for p in pushes:
            if p.command == Cmd.MN:
                cid = p.message.channel_id
                assert cid in self.chans and d.user.user_id in self.chans[cid].members, p
                assert p.message.pts <= self.chans[cid].pts, (p.message, self.chans[cid].pts)
                notified.add(cid)
                d.trace.append(f"MN {cid}:{p.message.pts}")
            elif p.command == Cmd.MPS and p.message.message_seq:
                self.check_push(d, p, catch_up)
                runs.setdefault(p.message.channel_id, []).append(p.message.message_seq)
            elif p.command == Cmd.LOGOUT:
                assert ended, f"{d.label()} was logged out: {p.message} {p.status}"
        if catch_up:
            self.check_catch_up(d, runs, notified)

    def check_catch_up(self, d: Dev, runs: dict[int, list[int]], notified: set[int]) -> None:
        """What READY pushed: per channel a run of pts without a hole, after what the device
        acknowledged and its join, up to the channel's pts (or an MN to pull the rest). A
        device the server knows (it ACKed one of its channels: not new, so not started where
        its user is) is pushed everything after what it was given."""
        uid = d.user.user_id
        self.w.counts["catch_up_pushes"] += sum(len(r) for r in runs.values())
        for cid, run in runs.items():
            chan = self.chans[cid]
            start = run[0]
            assert run == list(range(start, run[-1] + 1)), (d.label(), cid, run)
            assert start > max(d.acked.get(cid, 0), chan.floor(uid)), (d.label(), cid, run, d)
            if cid not in notified:
                assert run[-1] == chan.pts, (d.label(), cid, run, chan.pts)
        chans = self.chans_of(d.user)
        # a device the server knows (it ACKed one of its channels) starts each channel after
        # what it has; a new one where its user is (the other devices' cursors, the read
        # position), which the model does not follow: it is not checked
        known = any(d.acked.get(c.cid, 0) for c in chans)
        for chan in chans:
            cid = chan.cid
            if cid in notified:
                if not known:  # it starts where its user is: what it has is not known
                    d.vague.add(cid)
                continue
            have = max(d.given.get(cid, 0), chan.floor(uid))
            if known and chan.pts > have and cid not in d.vague:
                run = runs.get(cid, [])
                assert run and run[0] <= have + 1, (
                    d.label(),
                    cid,
                    run,
                    have,
                    chan.pts,
                    self.server_marks(d, chan),
                )
                self.w.counts["catch_up_checked"] += 1
            # a complete catch-up (or none: nothing was missing): the server counts the
            # channel as the device's up to its pts
            d.got(cid, chan.pts, "caught up")
            d.vague.discard(cid)

    def server_marks(self, d: Dev, chan: Chan) -> dict[str, object]:
        """What the server holds of the device in ``chan`` (for a failure's message)."""
        messages = self.w.server.server.services.messages
        uid = d.user.user_id
        cursors = messages._cursors
        reads = messages._reads
        return {
            "cursor": cursors.get_ack(uid, d.device_id, chan.cid),
            "user_cursor": cursors.get_user_ack(uid, chan.cid),
            "read": reads.get_read(uid, chan.cid) if reads is not None else None,
            "model_acked": d.acked,
            "model_given": d.given,
            "model_read": d.user.reads.get(chan.cid, 0),
            "trace": d.trace[-30:],
        }

    def check_push(self, d: Dev, p: Push, catch_up: bool) -> None:
        m = p.message
        cid, pts = m.channel_id, m.message_seq
        chan = self.chans.get(cid)
        assert chan is not None and chan.may_see(d.user.user_id, pts), (d.label(), m)
        assert 1 <= pts <= chan.pts, (d.label(), m, chan.pts)
        entry = chan.log[pts - 1]
        seen = _from_push(m)
        chan.learn(entry, seen.message_id)
        assert seen.message_id == entry.message_id and seen.event == entry.event, (m, entry)
        assert seen.sender == entry.sender, (m, entry)
        if seen.revoked:
            assert entry.revoked, (m, entry)
        assert pts > d.pushed.get(cid, 0), (d.label(), "pushed twice or out of order", m, d.pushed)
        d.pushed[cid] = pts
        d.got(cid, pts, "catch-up" if catch_up else "push")
        if not catch_up and not entry.event:
            # a session is not pushed its own messages
            assert (entry.sender, entry.device) != (d.user.user_id, d.device_id), (d.label(), m)
        self.w.counts["pushes"] += 1

    def absorb_all(self) -> None:
        for d in self.online():
            self.absorb(d)

    # ---- reading the log -----------------------------------------------------------------------
    async def fetch(self, d: Dev, chan: Chan, after: int, limit: int, rpc: bool) -> list[Seen]:
        client = self.client(d)
        out: list[Seen] = []
        last = after
        while True:
            if rpc:
                page = await client.rpc(
                    "sync/get_difference",
                    {
                        "channel_id": chan.cid,
                        "channel_type": 2 if chan.group else 1,
                        "last_pts": last,
                        "limit": limit,
                    },
                )
                got = [_from_commit(c) for c in page["commits"]]
                current, more = int(page["current_pts"]), bool(page["has_more"])
            else:
                diff = await client.pull(chan.cid, last, limit)
                got = [_from_push(m) for m in diff.messages]
                current, more = diff.current_pts, diff.has_more
            assert current == chan.pts, (chan.cid, current, chan.pts)
            assert len(got) <= limit
            d.got(chan.cid, min(max([last, *(g.pts for g in got)]), current), "pull")
            out.extend(got)
            if not more:
                d.vague.discard(chan.cid)  # it has the channel to its pts
                return out
            assert got, "has_more with an empty page"
            last = got[-1].pts

    def compare(self, chan: Chan, got: list[Seen], after: int) -> None:
        """A pull after ``after`` by a member (whose history starts after its join)."""
        assert [s.pts for s in got] == list(range(after + 1, chan.pts + 1)), (
            chan.cid,
            [s.pts for s in got],
            chan.pts,
        )
        for s in got:
            e = chan.log[s.pts - 1]
            chan.learn(e, s.message_id)
            want = Seen(e.pts, e.message_id, e.sender, e.event, e.revoked)
            assert s == want, (chan.cid, s, want)

    def check_log(self, d: Dev, chan: Chan, after: int = 0, limit: int = 100) -> None:
        rpc = self.turn % 2 == 1
        got = self.run(self.fetch(d, chan, after, limit, rpc))
        self.compare(chan, got, max(after, chan.floor(d.user.user_id)))
        self.w.counts["pulls"] += 1

    def check_unread(self, d: Dev, chan: Chan | None) -> None:
        u = d.user
        body = {"channel_id": chan.cid} if chan is not None else {}
        got = self.run(self.client(d).rpc("message/status/count", body))["unread_count"]
        chans = [chan] if chan is not None else self.chans_of(u)
        want = sum(c.unread(u.user_id, u.reads.get(c.cid, 0)) for c in chans)
        assert got == want, (u.name, chan.cid if chan else "all", got, want)
        self.w.counts["unread_checks"] += 1

    # ---- sessions ------------------------------------------------------------------------------
    async def _open(self, d: Dev, password: bool) -> Client:
        client = await Client.connect("127.0.0.1", self.w.port, track=False, auto_ack=False)
        client.device_id = d.device_id
        if password or not d.token:
            await client.password_login(d.user.name, d.user.password, d.device_id)
        else:
            client.token = d.token
        await client.login()
        await client.ready()  # what READY pushed comes before its reply
        return client

    def connect(self, d: Dev, password: bool) -> None:
        assert not d.online
        d.trace.append(f"connect password={password} turn={self.turn}")
        client = self.run(self._open(d, password))
        d.client, d.token, d.pushed = client, client.token, {}
        self.absorb(d, catch_up=True)

    def drop(self, d: Dev) -> None:
        client = self.client(d)
        self.run(client.ping())  # what was pushed before has arrived
        self.absorb(d)
        self.run(client.close())
        d.client = None
        d.trace.append(f"dropped turn={self.turn}")

    # ---- rules ---------------------------------------------------------------------------------
    def _register(self) -> User:
        u = User(f"sm{next(self.w.names)}")
        first = Dev(u, str(uuid.uuid4()))
        u.devices = [first, Dev(u, str(uuid.uuid4()))]

        async def go() -> Client:
            client = await Client.connect("127.0.0.1", self.w.port, track=False, auto_ack=False)
            await client.register(u.name, u.password, first.device_id)
            await client.login()
            await client.ready()
            return client

        client = self.run(go())
        u.user_id, first.client, first.token = client.user_id, client, client.token
        assert u.user_id and all(u.user_id != v.user_id for v in self.users)
        self.users.append(u)
        return u

    @initialize()
    def start(self) -> None:
        self.step("register")
        self._register()
        self._register()

    def register(self, data: st.DataObject) -> None:
        self.step("register")
        self._register()

    def create_group(self, data: st.DataObject) -> None:
        self.step("create_group")
        d = data.draw(st.sampled_from(self.online()), "owner")
        others = [u for u in self.users if u is not d.user]
        members = data.draw(st.lists(st.sampled_from(others), min_size=1, unique=True), "members")
        got = self.run(
            self.client(d).rpc(
                "group/group/create",
                {"name": f"g{len(self.chans)}", "member_ids": [u.user_id for u in members]},
            )
        )
        cid = int(got["group_id"])
        assert cid not in self.chans
        uids = [d.user.user_id, *(u.user_id for u in members)]
        self.chans[cid] = Chan.new(cid, True, d.user.user_id, uids)
        self.chans[cid].notice()  # pts 1: the GroupCreated notice
        self.focus = [cid]

    def new_pairs(self) -> list[tuple[Dev, User]]:
        """(an online device, a user it has no direct channel with)."""
        return [
            (d, u)
            for d in self.online()
            for u in self.users
            if u is not d.user and frozenset((d.user.user_id, u.user_id)) not in self.directs
        ]

    def open_direct(self, data: st.DataObject) -> None:
        """channel/direct/get_or_create: a new channel (``again``: asked twice, the same one,
        from either side)."""
        again: bool = data.draw(st.booleans(), "again")
        self.step("open_direct")
        d, peer = data.draw(st.sampled_from(self.new_pairs()), "pair")
        pair = frozenset((d.user.user_id, peer.user_id))
        cid = self._direct(d, peer.user_id)
        assert cid not in self.chans
        self.directs[pair] = cid
        self.chans[cid] = Chan.new(cid, False, 0, sorted(pair))
        if again:
            back = next((p for p in peer.devices if p.online), None)
            asker, target = (back, d.user.user_id) if back else (d, peer.user_id)
            assert self._direct(asker, target) == cid
        self.focus = [cid]

    def _direct(self, d: Dev, peer: int) -> int:
        got = self.run(self.client(d).rpc("channel/direct/get_or_create", {"target_user_id": peer}))
        return int(got["channel_id"])

    async def _send(self, d: Dev, chan: Chan, local: int, submit: bool) -> tuple[int, int]:
        client = self.client(d)
        text = f"m{local} from {d.label()}"
        if submit:
            got = await client.rpc(
                "sync/submit",
                {
                    "local_message_id": local,
                    "channel_id": chan.cid,
                    "channel_type": 2 if chan.group else 1,
                    "payload": {"content": text},
                },
            )
            return int(got["server_msg_id"]), int(got["pts"])
        resp = await client.send(chan.cid, text, local_message_id=local)
        assert resp.channel_id == chan.cid
        return resp.server_message_id, resp.message_seq

    def senders(self, group: bool) -> list[tuple[Dev, Chan]]:
        return [(d, c) for d in self.online() for c in self.chans_of(d.user) if c.group == group]

    def send_direct(self, data: st.DataObject) -> None:
        submit: bool = data.draw(st.booleans(), "submit")
        self.send(data.draw(st.sampled_from(self.senders(False)), "channel"), submit)

    def send_group(self, data: st.DataObject) -> None:
        submit: bool = data.draw(st.booleans(), "submit")
        self.send(data.draw(st.sampled_from(self.senders(True)), "channel"), submit)

    def send(self, target: tuple[Dev, Chan], submit: bool) -> None:
        """A new message (MS, or ``sync/submit``): the next pts, a new id."""
        self.step("send")
        d, chan = target
        local = d.next_local
        d.next_local += 1
        message_id, pts = self.run(self._send(d, chan, local, submit))
        assert pts == chan.pts + 1, (chan.cid, pts, chan.pts)
        assert all(e.message_id != message_id for e in chan.log)
        chan.log.append(Entry(pts, message_id, d.user.user_id, d.device_id, local))
        d.sent[local] = (chan.cid, message_id, pts)
        d.got(chan.cid, pts, "sent")
        self.focus = [chan.cid]
        self.counts_moved = True

    def resendable(self) -> Iterator[tuple[Dev, int]]:
        """(device, a local id it sent) in a channel its user is still a member of."""
        for d in self.online():
            for local, (cid, _, _) in sorted(d.sent.items()):
                if d.user.user_id in self.chans[cid].members:
                    yield d, local

    def resend(self, data: st.DataObject) -> None:
        """The same local_message_id again (from any session of the device): the original."""
        submit: bool = data.draw(st.booleans(), "submit")
        self.step("resend")
        d, local = data.draw(st.sampled_from(list(self.resendable())), "sent")
        cid, message_id, pts = d.sent[local]
        chan = self.chans[cid]
        assert self.run(self._send(d, chan, local, submit)) == (message_id, pts)
        self.focus = [cid]  # the invariant pulls it: nothing was added
        others = [c for c in self.chans_of(d.user) if c is not chan]
        elsewhere: bool = data.draw(st.booleans(), "elsewhere")
        if others and elsewhere:
            # the key names that message: in another channel it is refused, nothing committed
            other = data.draw(st.sampled_from(others), "other channel")
            try:
                self.run(self._send(d, other, local, submit))
            except ServiceError as exc:
                assert exc.code == ErrorCode.DUPLICATE_OPERATION, (exc.code, exc.message)
            else:
                raise AssertionError(f"local id {local} of {d.label()} reused in {other.cid}")
            self.focus.append(other.cid)

    # ---- group membership ----------------------------------------------------------------------
    def owners(self) -> list[tuple[Dev, Chan]]:
        return [
            (d, c) for d in self.online() for c in self.chans.values() if c.owner == d.user.user_id
        ]

    def invitable(self) -> list[tuple[Dev, Chan, User]]:
        return [
            (d, c, u) for d, c in self.owners() for u in self.users if u.user_id not in c.members
        ]

    def removable(self) -> list[tuple[Dev, Chan, User]]:
        return [
            (d, c, u)
            for d, c in self.owners()
            for u in self.users
            if u.user_id in c.members and u.user_id != c.owner
        ]

    def leavers(self) -> list[tuple[Dev, Chan]]:
        return [
            (d, c)
            for d in self.online()
            for c in self.chans_of(d.user)
            if c.group and c.owner != d.user.user_id
        ]

    def add_member(self, data: st.DataObject) -> None:
        """The owner adds a user (again, after it left): its history starts at the join,
        whose notice is its first message."""
        self.step("add_member")
        d, chan, u = data.draw(st.sampled_from(self.invitable()), "invitation")
        body = {"group_id": chan.cid, "user_id": u.user_id}
        assert self.run(self.client(d).rpc("group/member/add", body)) is True
        chan.members[u.user_id] = chan.pts
        chan.spans.setdefault(u.user_id, []).append([chan.pts, 0])
        chan.notice()
        self.focus = [chan.cid]
        self.counts_moved = True

    def _gone(self, chan: Chan, u: User) -> None:
        """``u`` left ``chan`` (or was removed): a notice, which it is told too; then nothing."""
        chan.notice()
        del chan.members[u.user_id]
        chan.spans[u.user_id][-1][1] = chan.pts
        for d in u.devices:
            if d.online:  # its pulls are refused now
                try:
                    self.run(self.client(d).pull(chan.cid, 0, 10))
                except ServiceError as exc:
                    assert exc.code == ErrorCode.NOT_GROUP_MEMBER, (exc.code, exc.message)
                else:
                    raise AssertionError(f"{d.label()} pulled {chan.cid} after leaving it")
                break
        self.focus = [chan.cid]
        self.counts_moved = True

    def remove_member(self, data: st.DataObject) -> None:
        self.step("remove_member")
        d, chan, u = data.draw(st.sampled_from(self.removable()), "removal")
        body = {"group_id": chan.cid, "user_id": u.user_id}
        assert self.run(self.client(d).rpc("group/member/remove", body)) is True
        self._gone(chan, u)

    def leave(self, data: st.DataObject) -> None:
        self.step("leave")
        d, chan = data.draw(st.sampled_from(self.leavers()), "member")
        assert self.run(self.client(d).rpc("group/member/leave", {"group_id": chan.cid})) is True
        self._gone(chan, d.user)

    def revocable(self) -> Iterator[tuple[Dev, Chan, Entry]]:
        for d in self.online():
            uid = d.user.user_id
            for chan in self.chans_of(d.user):
                for e in chan.log[chan.floor(uid) :]:
                    if e.event or e.revoked or e.sender == SYSTEM_USER_ID:
                        continue
                    if e.sender == uid or chan.owner == uid:
                        yield d, chan, e

    def revoke(self, data: st.DataObject) -> None:
        rpc: bool = data.draw(st.booleans(), "rpc")
        self.step("revoke")
        d, chan, e = data.draw(st.sampled_from(list(self.revocable())), "target")
        client = self.client(d)
        if rpc:
            body = {"channel_id": chan.cid, "server_message_id": e.message_id}
            assert self.run(client.rpc("message/revoke", body)) is True
            pts = chan.pts + 1
        else:
            resp = self.run(client.revoke(chan.cid, e.message_id))
            assert resp.success
            pts = resp.pts
        assert pts == chan.pts + 1
        e.revoked = True
        chan.log.append(Entry(pts, e.message_id, d.user.user_id, event=True))
        d.got(chan.cid, pts, "revoked")
        self.focus = [chan.cid]
        self.counts_moved = True

    def refusable(self) -> Iterator[tuple[Dev, Chan, Entry, int]]:
        """(device, channel, message, the code): a revoked message, or another's message."""
        for d in self.online():
            uid = d.user.user_id
            for chan in self.chans_of(d.user):
                for e in chan.log[chan.floor(uid) :]:
                    if e.event or e.sender == SYSTEM_USER_ID:
                        continue
                    if e.revoked:
                        yield d, chan, e, ErrorCode.INVALID_PARAMS
                    elif e.sender != uid and chan.owner != uid:
                        yield d, chan, e, ErrorCode.PERMISSION_DENIED

    def revoke_refused(self, data: st.DataObject) -> None:
        self.step("revoke_refused")
        d, chan, e, code = data.draw(st.sampled_from(list(self.refusable())), "target")
        try:
            self.run(self.client(d).revoke(chan.cid, e.message_id))
        except ServiceError as exc:
            assert exc.code == code, (exc.code, exc.message, code)
        else:
            raise AssertionError(f"revoke of {e} by {d.label()} accepted")
        self.focus = [chan.cid]

    def pull(self, data: st.DataObject) -> None:
        """A pull from any pts, in pages of ``limit``."""
        rpc: bool = data.draw(st.booleans(), "rpc")
        limit: int = data.draw(st.sampled_from((4, 16, 100)), "limit")
        self.step("pull")
        d = data.draw(st.sampled_from(self.talkers()), "device")
        chan = data.draw(st.sampled_from(self.chans_of(d.user)), "channel")
        after = data.draw(st.integers(0, chan.pts), "last_pts")
        got = self.run(self.fetch(d, chan, after, limit, rpc))
        self.compare(chan, got, max(after, chan.floor(d.user.user_id)))

    def history(self, data: st.DataObject) -> None:
        """message/history/get, newest first in pages of ``limit``: the messages (no revoke
        events) since the member joined, revoked ones blanked; and the channel's pts."""
        limit: int = data.draw(st.sampled_from((4, 16, 100)), "limit")
        self.step("history")
        d = data.draw(st.sampled_from(self.talkers()), "device")
        chan = data.draw(st.sampled_from(self.chans_of(d.user)), "channel")
        client = self.client(d)

        async def pages() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            body: dict[str, Any] = {"channel_id": chan.cid, "limit": limit}
            while True:
                page = await client.rpc("message/history/get", body)
                assert len(page["messages"]) <= limit
                out[:0] = page["messages"]
                if not page["has_more"] or not page["messages"]:
                    return out
                body["before_server_message_id"] = page["messages"][0]["message_id"]

        got = self.run(pages())
        want = [e for e in chan.log[chan.floor(d.user.user_id) :] if not e.event]
        assert [m["pts"] for m in got] == [e.pts for e in want], (chan.cid, got, want)
        for m, e in zip(got, want, strict=True):
            chan.learn(e, m["message_id"])
            seen = (m["message_id"], m["sender_id"], m["revoked"], m["content"] == "")
            assert seen == (e.message_id, e.sender, e.revoked, e.revoked), (m, e)
        pts = self.run(client.rpc("sync/get_channel_pts", {"channel_id": chan.cid}))
        assert pts["current_pts"] == chan.pts

    def ackable(self) -> list[tuple[Dev, Chan]]:
        return [(d, c) for d in self.online() for c in self.chans_of(d.user) if c.pts]

    def ack(self, data: st.DataObject) -> None:
        """ACK up to a pts (past the log: cut to it); a PING after it: it was read."""
        self.step("ack")
        d, chan = data.draw(st.sampled_from(self.ackable()), "channel")
        pts = data.draw(st.integers(1, chan.pts + 1), "pts")
        client = self.client(d)
        client.ack(chan.cid, pts)
        self.run(client.ping())
        d.acked[chan.cid] = max(d.acked.get(chan.cid, 0), min(pts, chan.pts))
        d.got(chan.cid, min(pts, chan.pts), "ack")
        if pts >= chan.pts:
            d.vague.discard(chan.cid)

    def read(self, data: st.DataObject) -> None:
        """Move the read position: to a pts (read_pts) or to a message (status/read)."""
        by_message: bool = data.draw(st.booleans(), "by_message")
        self.step("read")
        d, chan = data.draw(st.sampled_from(self.ackable()), "channel")
        u, client = d.user, self.client(d)
        before = u.reads.get(chan.cid, 0)
        floor = chan.floor(u.user_id)
        messages = [e for e in chan.log[floor:] if not e.event and e.message_id]
        if by_message and messages:
            e = data.draw(st.sampled_from(messages), "message")
            body = {"channel_id": chan.cid, "message_id": e.message_id}
            assert self.run(client.rpc("message/status/read", body)) is True
            u.reads[chan.cid] = max(before, e.pts)
        else:
            pts = data.draw(st.integers(0, chan.pts + 2), "read_pts")
            body = {"channel_id": chan.cid, "read_pts": pts}
            got = self.run(client.rpc("message/status/read_pts", body))
            u.reads[chan.cid] = max(before, min(pts, chan.pts))
            assert got["accepted_read_pts"] == min(pts, chan.pts), (got, chan.pts)
            assert got["last_read_pts"] == u.reads[chan.cid], (got, u.reads)
        for other in u.devices:
            other.trace.append(f"user read {chan.cid}:{u.reads[chan.cid]} by {d.label()}")
        self.counted = (d, chan)  # the log is as it was: only the count moved

    def disconnect(self, data: st.DataObject) -> None:
        self.step("disconnect")
        self.drop(data.draw(st.sampled_from(self.online()), "device"))

    def reconnect(self, data: st.DataObject) -> None:
        """Dial again, LOGIN with the saved token, READY."""
        self.step("reconnect")
        offline = [d for d in self.devices() if not d.online and d.token]
        self.connect(data.draw(st.sampled_from(offline), "device"), password=False)

    def login(self, data: st.DataObject) -> None:
        """A password login (a new token; a device's first), LOGIN, READY."""
        self.step("login")
        offline = [d for d in self.devices() if not d.online]
        self.connect(data.draw(st.sampled_from(offline), "device"), password=True)

    def replace(self, data: st.DataObject) -> None:
        """A second LOGIN of an online device: the first session ends with REPLACED."""
        self.step("replace")
        d = data.draw(st.sampled_from(self.online()), "device")
        old = self.client(d)
        self.absorb(d)
        d.client = None
        new = self.run(self._open(d, password=False))
        self.run(old.wait_closed(10))
        end = old.closed_by_server
        assert end is not None and end.status == Status.REPLACED, end
        d.client = old
        self.absorb(d, ended=True)  # what the old session got before its end
        self.run(old.close())
        d.client, d.pushed = new, {}
        d.trace.append(f"replaced turn={self.turn}")
        self.absorb(d, catch_up=True)

    def restart(self, data: st.DataObject) -> None:
        """Stop the server (every session ends) and start it again on the same directory."""
        self.step("restart")
        self.restarts += 1
        self.absorb_all()
        online = self.online()
        self.w.restart()
        for d in online:
            client = self.client(d)
            self.run(client.wait_closed(10))
            self.absorb(d, ended=True)
            self.run(client.close())
            d.client = None
            d.trace.append(f"restart turn={self.turn}")

    # ---- the steps: (rule, weight, when it applies) -------------------------------------------
    #: One Hypothesis rule draws the step by weight among those that apply. (As separate
    #: rules Hypothesis picks them uniformly and switches whole rules off for an example, so
    #: many examples were all replaces or all reconnects and sends were a few per cent.)
    ACTIONS: ClassVar[tuple[tuple[str, int, Callable[[ChatMachine], object]], ...]] = (
        ("register", 1, lambda m: len(m.users) < MAX_USERS),
        (
            "create_group",
            1,
            lambda m: sum(c.group for c in m.chans.values()) < MAX_GROUPS and m.online(),
        ),
        ("open_direct", 2, lambda m: m.new_pairs()),
        ("send_direct", 5, lambda m: m.senders(False)),
        ("send_group", 5, lambda m: m.senders(True)),
        ("resend", 3, lambda m: _some(m.resendable())),
        ("add_member", 2, lambda m: m.invitable()),
        ("remove_member", 1, lambda m: m.removable()),
        ("leave", 1, lambda m: m.leavers()),
        ("revoke", 3, lambda m: _some(m.revocable())),
        ("revoke_refused", 1, lambda m: _some(m.refusable())),
        ("pull", 3, lambda m: m.talkers()),
        ("history", 2, lambda m: m.talkers()),
        ("ack", 3, lambda m: m.ackable()),
        ("read", 3, lambda m: m.ackable()),
        ("disconnect", 2, lambda m: m.online()),
        ("reconnect", 2, lambda m: any(not d.online and d.token for d in m.devices())),
        ("login", 1, lambda m: any(not d.online for d in m.devices())),
        ("replace", 1, lambda m: m.online()),
        (
            "restart",
            1,
            # once there is something to lose
            lambda m: (
                m.restarts < RESTARTS_PER_EXAMPLE and sum(c.pts for c in m.chans.values()) >= 8
            ),
        ),
    )

    @rule(data=st.data())
    def act(self, data: st.DataObject) -> None:
        names = [name for name, weight, when in self.ACTIONS if when(self) for _ in range(weight)]
        getattr(self, data.draw(st.sampled_from(names), "step"))(data)

    # ---- invariants ----------------------------------------------------------------------------
    @invariant()
    def pushes_agree(self) -> None:
        self.absorb_all()

    @invariant()
    def log_and_unread_agree(self) -> None:
        """The channels the step changed (after every other step that changed none, one in
        turn) pulled by a member device, and a member's unread count (of the channel, or of all
        its channels), are the model's (the count every other step that moved one, and every
        fifth step)."""
        self.turn += 1
        chans = [self.chans[c] for c in self.focus]
        if not chans and self.chans and self.turn % 2:
            ordered = sorted(self.chans)
            chans = [self.chans[ordered[self.turn % len(ordered)]]]
        for chan in chans:
            readers = [d for d in self.online() if d.user.user_id in chan.members]
            if not readers or not chan.pts:  # an empty log: nothing to compare
                continue
            d = readers[self.turn % len(readers)]
            # the whole log every third step (its older records come from the database),
            # otherwise its recent part (the store's memory)
            self.check_log(d, chan, 0 if self.turn % 3 == 0 else max(0, chan.pts - 6))
            if (self.counts_moved and self.turn % 2 == 0) or self.turn % 5 == 0:
                self.check_unread(d, chan if self.turn % 3 else None)
        if self.counted is not None:  # the reader's count
            d, chan = self.counted
            self.check_unread(d, chan if self.turn % 3 else None)
        self.clean = True

    def teardown(self) -> None:
        """Every device of every user (offline ones log in again: their catch-up is checked)
        pulls every channel of its user; each user's total unread count. A device that never
        logged in is not one yet. Then every connection closes."""
        try:
            if self.clean:
                for u in self.users:
                    for d in u.devices:
                        if not d.online and d.token:
                            self.connect(d, password=False)
                        if not d.online:
                            continue
                        for chan in self.chans_of(u):
                            self.check_log(d, chan)
                    self.check_unread(u.devices[0], None)  # registered: a token, online
                    self.absorb_all()
                self.w.counts["examples"] += 1
        finally:
            for d in self.online():
                client = self.client(d)
                d.client = None
                self.run(client.close())


# ---- the test -----------------------------------------------------------------------------------
@pytest.fixture
def the_world() -> Iterator[World]:
    global _WORLD
    _WORLD = World()
    try:
        yield _WORLD
    finally:
        _WORLD.close()
        _WORLD = None


# generous: a long run (PRIVCHAT_SM_EXAMPLES, PRIVCHAT_SM_STEPS) must not hit the default 120 s
@pytest.mark.timeout(max(120, EXAMPLES * STEPS // 50))
def test_state_machine(the_world: World) -> None:
    run_state_machine_as_test(
        ChatMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            derandomize=not RANDOM,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            print_blob=RANDOM,
        ),
        # every example runs all its steps (Hypothesis otherwise ends some early at random)
        _min_steps=STEPS,
    )
    counts = the_world.counts
    print(dict(counts))
    # the model ran: every example to its end, nearly every step (a step is a rule)
    assert counts["examples"] >= EXAMPLES
    assert counts["steps"] >= EXAMPLES * STEPS * 0.9, dict(counts)
    for name in ("send", "resend", "revoke", "pull", "ack", "read", "disconnect", "reconnect"):
        assert counts[name] >= EXAMPLES, (name, dict(counts))
    for name in ("login", "replace", "restart", "create_group", "open_direct", "register"):
        assert counts[name] > 0, (name, dict(counts))
    for name in ("add_member", "remove_member", "leave", "revoke_refused", "history"):
        assert counts[name] > 0, (name, dict(counts))
    assert counts["pushes"] and counts["catch_up_pushes"] and counts["pulls"]

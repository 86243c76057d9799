"""The embedded SQLite store beyond the shared contract: what survives a restart, the window of
recent messages, and refusing stores it must not use."""

from __future__ import annotations

import pathlib
import sqlite3
import subprocess
import sys

import pytest
from store_contract import NOW, record

from privchat_tcp.service.model import (
    DIRECT,
    FILE_UPLOADED,
    KIND_REVOKE,
    ROLE_ADMIN,
    ROLE_MEMBER,
    ChannelPrefs,
    DedupEntry,
    DeviceRecord,
    FriendRequest,
    GroupQR,
    QRCode,
    Record,
)
from privchat_tcp.store.sqlite import DB_NAME, SQLiteStore, StoreOpenError, backup


def _fill(store: SQLiteStore) -> tuple[int, int]:
    a = store.create_user("alice", "h", "Alice", None, "a@x.org", NOW)
    g = store.create_group(a.user_id, "g", None, [a.user_id + 1], NOW, 50)
    for i in range(30):
        store.commit(record(g.channel_id, 1000 + i))
    store.dedup_put(a.user_id, "dev", 7, DedupEntry(1000, 1, g.channel_id, NOW * 10))
    store.set_ack(a.user_id, "dev", g.channel_id, 12)
    store.revoke_token("jti-x", 2**40)
    store.mark_revoked(g.channel_id, 1003, a.user_id, NOW + 1)
    store.bump_entity("friend:1", "x")
    store.bump_entity("friend:1", "y", deleted=True)
    return a.user_id, g.channel_id


def test_everything_survives_a_restart(tmp_path: pathlib.Path) -> None:
    store = SQLiteStore(tmp_path, window=8)
    uid, cid = _fill(store)
    epoch = store.epoch
    store.flush()
    store.close()
    again = SQLiteStore(tmp_path, window=8)
    try:
        assert again.epoch == epoch
        assert again.user_bytes(uid + 1) == store.user_bytes(uid + 1) > 0  # the quota's count
        user = again.find_user("a@x.org")
        assert user is not None and user.user_id == uid and user.nickname == "Alice"
        assert again.create_user("bob", "h", "Bob", None, None, NOW).user_id == uid + 1
        channel = again.get_channel(cid)
        assert channel is not None and set(channel.members) == {uid, uid + 1}
        assert again.user_channels(uid) == [cid]
        assert again.current_pts(cid) == 30
        assert [r.pts for r in again.read_log(cid, 0, 100)] == list(range(1, 31))
        assert again.read_log(cid, 0, 100)[3].revoked  # from disk, below the window
        assert not again.in_window(cid, 0) and again.in_window(cid, 25)
        dedup = again.dedup_get(uid, "dev", 7)
        assert dedup is not None and dedup.message_id == 1000
        assert again.get_ack(uid, "dev", cid) == 12
        assert again.is_token_revoked("jti-x")
        assert again.entities_since("friend:1", 0, 9) == [("x", 1, False), ("y", 2, True)]
        assert again.bump_entity("friend:1", "x") == 3
        assert again.commit(record(cid, 2000)).pts == 31  # pts go on, no reuse
        assert again.find_message(cid, 1001) is not None  # below the window: from disk
    finally:
        again.close()


def test_groups_and_messages_state_survives_a_restart(tmp_path: pathlib.Path) -> None:
    """Issue 12: settings, roles, mutes, join pts, requests, QR codes, reads, reactions and
    revoke counts are written, and read back by a new process."""
    store = SQLiteStore(tmp_path, window=4)
    g = store.create_group(1, "g", None, [2], NOW, 50).channel_id
    for i in range(6):
        store.commit(record(g, 100 + i))
    store.commit(record(g, 200, KIND_REVOKE))
    store.add_member(g, 3, ROLE_MEMBER, NOW)
    store.update_group(g, {"all_muted": True, "announcement": "a", "join_need_approval": True}, NOW)
    store.set_member_role(g, 2, ROLE_ADMIN, NOW)
    store.set_member_mute(g, 3, -1)
    req = store.add_join_request(g, 4, 2, "", "hi", NOW, 2**50)
    done = store.add_join_request(g, 5, 0, "k", None, NOW, 2**50)
    store.resolve_join_request(done.request_id, False, 1, NOW + 1)
    store.put_group_qr(GroupQR("k", g, "tok", 1, NOW, 2**50))
    store.set_read_pts(2, g, 5, NOW + 2)
    store.add_reaction(101, "x", 2, NOW)
    store.add_reaction(101, "x", 3, NOW)
    store.add_reaction(101, "y", 2, NOW)
    store.remove_reaction(101, "y", 2)
    store.set_ack(3, "d1", g, 4)
    h = store.create_group(1, "h", None, [], NOW, 50).channel_id
    store.dissolve_group(h, NOW)
    store.flush()
    store.close()
    again = SQLiteStore(tmp_path, window=4)
    try:
        channel = again.get_channel(g)
        assert channel is not None
        assert channel.all_muted and channel.announcement == "a" and channel.join_need_approval
        assert channel.members[2].role == ROLE_ADMIN and channel.members[3].mute_until == -1
        assert channel.members[3].join_pts == 7 and channel.members[2].join_pts == 0
        assert [r.request_id for r in again.pending_join_requests(g, 9)] == [req.request_id]
        rejected = again.get_join_request(done.request_id)
        assert rejected is not None and rejected.status == 2
        assert again.add_join_request(g, 6, 0, "", None, NOW, 2**50).request_id > done.request_id
        qr = again.get_group_qr("k")
        assert qr is not None and qr.token == "tok"
        assert again.get_read(2, g) == (5, NOW + 2)
        assert again.reactions(101) == {"x": [2, 3]}
        assert again.message_count(g) == 6
        assert again.get_user_ack(3, g) == 4
        dissolved = again.get_channel(h)
        assert dissolved is not None and dissolved.dissolved and not dissolved.members
    finally:
        again.close()


def test_memory_holds_a_window_per_channel(tmp_path: pathlib.Path) -> None:
    store = SQLiteStore(tmp_path, window=8)
    try:
        _, cid = _fill(store)
        store.flush()  # records leave memory once they are durable
        stats = store.stats()
        assert stats["messages"] == 30
        assert stats["messages_in_memory"] <= 8 + 8 // 4
    finally:
        store.close()


def test_one_server_per_data_directory(tmp_path: pathlib.Path) -> None:
    store = SQLiteStore(tmp_path)
    try:
        with pytest.raises(StoreOpenError, match="in use"):
            SQLiteStore(tmp_path)
    finally:
        store.close()
    SQLiteStore(tmp_path).close()  # free again once closed


def test_a_newer_schema_is_refused(tmp_path: pathlib.Path) -> None:
    SQLiteStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreOpenError, match="newer"):
        SQLiteStore(tmp_path)


def test_a_corrupt_file_is_refused_not_replaced(tmp_path: pathlib.Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreOpenError, match="corrupt"):
        SQLiteStore(tmp_path)
    assert (tmp_path / DB_NAME).read_bytes().startswith(b"this is not")


def test_the_server_refuses_a_corrupt_store_with_a_clear_exit(tmp_path: pathlib.Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"garbage" * 1000)
    proc = subprocess.run(
        [sys.executable, "-m", "privchat_tcp", "serve", "--port", "0", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "corrupt" in proc.stderr and "Traceback" not in proc.stderr


def test_backup_is_a_consistent_copy(tmp_path: pathlib.Path) -> None:
    store = SQLiteStore(tmp_path / "data", window=8)
    try:
        _, cid = _fill(store)
        store.flush()
        size = backup(tmp_path / "data", tmp_path / "copy.db")  # while it is open
        assert size > 0
    finally:
        store.close()
    restored = tmp_path / "restored"
    restored.mkdir()
    (tmp_path / "copy.db").rename(restored / DB_NAME)
    again = SQLiteStore(restored, window=8)
    try:
        assert again.current_pts(cid) == 30
    finally:
        again.close()


def test_text_utf8_cannot_hold_is_stored_repaired_not_fatal(tmp_path: pathlib.Path) -> None:
    """A lone surrogate that reached the store by a path skipping the boundary's checks does
    not stop the writer (every later write would never become durable): it is stored with
    U+FFFD in its place, and the writes after it are durable too."""
    store = SQLiteStore(tmp_path, window=8)
    bad = store.create_user("mallory", "h", "bad\ud800nick", None, None, NOW)
    good = store.create_user("bob", "h", "Bob?", None, None, NOW)
    cid = store.get_or_create_direct(bad.user_id, good.user_id, NOW)[0].channel_id
    # a message's Record is queued as is: its device text is repaired the same way
    sent = store.commit(
        Record(0, 10**15, cid, DIRECT, bad.user_id, "ph\ud800one", 9, 1, NOW, b"p", b"", False, 0)
    )
    after = store.commit(
        Record(0, 10**15 + 1, cid, DIRECT, good.user_id, "tab", 10, 1, NOW, b"q", b"", False, 0)
    )
    store.flush()
    assert store.durable_seq == store.write_seq
    store.close()
    again = SQLiteStore(tmp_path, window=8)
    try:
        user = again.find_user("mallory")
        assert user is not None and user.user_id == bad.user_id
        assert user.nickname == "bad\ufffdnick"
        bob = again.find_user("bob")
        assert bob is not None and bob.user_id == good.user_id and bob.nickname == "Bob?"
        log_ = again.read_log(cid, 0, 10)
        assert [(r.pts, r.sender_device) for r in log_] == [
            (sent.pts, "ph\ufffdone"),
            (after.pts, "tab"),
        ]
    finally:
        again.close()


def test_accounts_and_contacts_survive_a_restart(tmp_path: pathlib.Path) -> None:
    store = SQLiteStore(tmp_path)
    a = store.create_user("ann", "h", "Ann", "+15551234", None, NOW)
    store.update_user(a.user_id, "Annie", "https://x.org/a.png")
    store.put_doc(a.user_id, "privacy", {"allow_search_by_phone": False})
    store.put_friend_request(FriendRequest(5, a.user_id, "hi", "search", "77", NOW))
    store.put_friend_request(FriendRequest(6, a.user_id, None, None, None, NOW + 1))
    store.put_friend_request(FriendRequest(5, a.user_id, "again", None, None, NOW + 2))
    store.delete_friend_request(6, a.user_id)
    store.add_friends(a.user_id, 7, NOW)
    store.add_friends(a.user_id, 8, NOW + 1)
    store.remove_friends(8, a.user_id)
    store.block(a.user_id, 9, NOW)
    store.block(a.user_id, 10, NOW + 1)
    store.unblock(a.user_id, 9)
    store.put_qrcode(QRCode("key", "user", a.user_id, a.user_id, "tok", NOW, max_usage=3))
    store.put_qrcode(QRCode("key", "user", a.user_id, a.user_id, "tok", NOW, 0, 3, 1, NOW + 5))
    store.put_search_session(99, a.user_id, 7, 2**50)
    store.flush()
    store.close()
    again = SQLiteStore(tmp_path)
    try:
        user = again.find_by_phone("+15551234")
        assert user is not None and (user.nickname, user.avatar_url) == (
            "Annie",
            "https://x.org/a.png",
        )
        assert again.get_doc(a.user_id, "privacy") == {"allow_search_by_phone": False}
        assert [(r.from_user_id, r.message) for r in again.friend_requests_to(a.user_id)] == [
            (5, "again")
        ]
        assert again.friends_of(a.user_id) == [(7, NOW)] and again.friends_since(7, a.user_id)
        assert again.blacklist(a.user_id) == [(10, NOW + 1)]
        code = again.get_qrcode("key")
        assert code is not None and (code.used_count, code.revoked_at, code.token) == (
            1,
            NOW + 5,
            "tok",
        )
        assert again.get_search_session(99) == (a.user_id, 7, 2**50)
        again.put_friend_request(FriendRequest(11, a.user_id, None, None, None, NOW + 9))
        assert [r.from_user_id for r in again.friend_requests_to(a.user_id)] == [5, 11]
    finally:
        again.close()


def test_channel_prefs_sources_and_broadcasts_survive_a_restart(tmp_path: pathlib.Path) -> None:
    """Issue 12 (channels): pin/mute/hide, a direct channel's source, broadcast channels with
    their subscribers and posts are written, and read back by a new process; a new channel
    after the restart does not take a broadcast channel's id."""
    store = SQLiteStore(tmp_path, window=4)
    d, _ = store.get_or_create_direct(1, 2, NOW)
    store.put_channel_prefs(ChannelPrefs(1, d.channel_id, NOW, True, 3, NOW))
    store.set_direct_source(d.channel_id, "group", "77")
    bc = store.create_broadcast(1, "news", "daily", "https://x/a.png", NOW)
    store.subscribe_broadcast(bc.channel_id, 2, NOW + 1)
    posts = [store.publish_post(bc.channel_id, 1, f"p{i}", "t", "text", NOW + i) for i in range(3)]
    store.bump_entity("channel:1", str(d.channel_id))
    store.flush()
    store.close()
    again = SQLiteStore(tmp_path, window=4)
    try:
        assert again.get_channel_prefs(1, d.channel_id) == ChannelPrefs(
            1, d.channel_id, NOW, True, 3, NOW
        )
        assert again.direct_source(d.channel_id) == ("group", "77")
        got = again.get_broadcast(bc.channel_id)
        assert got is not None and (got.name, got.description) == ("news", "daily")
        assert got.subscribers == {1: NOW, 2: NOW + 1}
        assert [p.content for p in again.posts(bc.channel_id, 0, 9)] == ["p2", "p1", "p0"]
        later = again.publish_post(bc.channel_id, 1, "p3", None, "text", NOW)
        assert later.content_id > posts[-1].content_id
        g = again.create_group(1, "g", None, [], NOW, 50)
        assert g.channel_id > bc.channel_id  # ids are never reused
        assert again.entities_since("channel:1", 0, 9) == [(str(d.channel_id), 1, False)]
    finally:
        again.close()


def test_files_devices_and_last_seen_survive_a_restart(tmp_path: pathlib.Path) -> None:
    store = SQLiteStore(tmp_path)
    f = store.create_file(5, "a.pdf", "application/pdf", "file", "message", 99, "h", NOW + 1, NOW)
    g = store.create_file(5, "b.png", "image/png", "image", "avatar", 10, "h2", NOW + 2, NOW)
    store.update_file(f.file_id, {"status": FILE_UPLOADED, "size": 98, "sha256": "s"})
    store.put_device(DeviceRecord(5, "d1", device_type="ios", login_ids=("l1", "l2")))
    store.put_device(DeviceRecord(5, "d2", address="192.0.2.9", last_active=NOW))
    store.put_device(DeviceRecord(5, "d1", device_type="ios", apns_armed=True, vendor="apns"))
    store.put_device(DeviceRecord(5, "d3"))
    store.delete_device(5, "d3")
    store.set_last_seen(5, NOW)
    store.flush()
    store.close()
    again = SQLiteStore(tmp_path)
    try:
        got = again.get_file(f.file_id)
        assert got is not None and (got.status, got.size, got.sha256) == (FILE_UPLOADED, 98, "s")
        assert (got.filename, got.mime_type, got.max_size) == ("a.pdf", "application/pdf", 99)
        pending = again.get_file(g.file_id)
        assert pending is not None and pending.business_type == "avatar"
        assert pending.token_hash == "h2" and pending.expires_at == NOW + 2
        nxt = again.create_file(5, "c", "text/plain", "file", "message", 1, "h3", NOW, NOW)
        assert nxt.file_id > g.file_id  # ids are never reused
        devices = again.devices_of(5)
        assert [d.device_id for d in devices] == ["d1", "d2"]
        assert devices[0].apns_armed and devices[0].vendor == "apns"
        assert devices[0].login_ids == ()
        assert devices[1].address == "192.0.2.9" and devices[1].last_active == NOW
        again.put_device(DeviceRecord(5, "d4", login_ids=("x",)))
        assert [d.device_id for d in again.devices_of(5)] == ["d1", "d2", "d4"]
        assert again.last_seen(5) == NOW
    finally:
        again.close()
    third = SQLiteStore(tmp_path)
    try:
        assert [d.device_id for d in third.devices_of(5)] == ["d1", "d2", "d4"]
        d4 = third.get_device(5, "d4")
        assert d4 is not None and d4.login_ids == ("x",)
    finally:
        third.close()


def test_a_store_from_before_the_files_tables_gains_them(tmp_path: pathlib.Path) -> None:
    store = SQLiteStore(tmp_path)
    store.create_user("ann", "h", "Ann", None, None, NOW)
    store.flush()
    store.close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.executescript("DROP TABLE files; DROP TABLE devices; DROP TABLE last_seen;")
    db.close()
    again = SQLiteStore(tmp_path)
    try:
        assert again.find_user("ann") is not None
        f = again.create_file(1, "a", "text/plain", "file", "message", 1, "h", NOW, NOW)
        again.set_last_seen(1, NOW)
        again.flush()
        assert again.get_file(f.file_id) is not None
    finally:
        again.close()

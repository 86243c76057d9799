"""The store contract suite: every store implementation runs all of it.

Each test checks one sentence of a docstring in ``privchat_tcp/service/ports.py``. A store joins
by subclassing ``StoreContract`` with a ``store`` fixture (``test_store_contract.py``); a store
that persists also provides ``reopen`` (the same data, a new process's view of it).
"""

from __future__ import annotations

import asyncio

import pytest

from privchat_tcp.service.model import (
    DIRECT,
    FILE_PENDING,
    FILE_UPLOADED,
    GROUP,
    KIND_MESSAGE,
    KIND_REVOKE,
    ROLE_ADMIN,
    ROLE_MEMBER,
    ROLE_OWNER,
    ChannelPrefs,
    DedupEntry,
    DeviceRecord,
    FileRecord,
    FriendRequest,
    GroupQR,
    QRCode,
    Record,
)
from privchat_tcp.service.ports import Store

NOW = 1_700_000_000_000


def record(channel_id: int, message_id: int, kind: int = KIND_MESSAGE, pts: int = 0) -> Record:
    return Record(
        pts,
        message_id,
        channel_id,
        DIRECT,
        100_000_001,
        "dev",
        message_id,
        0,
        NOW + message_id,
        b"payload-%d" % message_id,
        b"",
        False,
        kind,
    )


class StoreContract:
    """Subclasses provide the ``store`` fixture."""

    # ---- accounts ---------------------------------------------------------------------------
    def test_users_get_new_increasing_ids(self, store: Store) -> None:
        a = store.create_user("alice", "h1", "Alice", None, "a@example.com", NOW)
        b = store.create_user("bob", "h2", "Bob", "+1", None, NOW)
        assert b.user_id > a.user_id > 0
        got = store.get_user(a.user_id)
        assert got is not None
        assert (got.username, got.password_hash, got.nickname, got.email, got.created_at) == (
            "alice",
            "h1",
            "Alice",
            "a@example.com",
            NOW,
        )
        assert store.get_user(b.user_id + 1000) is None

    def test_logins_are_case_insensitive_by_username_and_email(self, store: Store) -> None:
        a = store.create_user("Alice", "h", "Alice", None, "Alice@Example.com", NOW)
        for login in ("alice", "alice@example.com"):
            found = store.find_user(login)
            assert found is not None and found.user_id == a.user_id
        assert store.find_user("nobody") is None

    # ---- tokens -------------------------------------------------------------------------------
    def test_revoked_tokens_stay_revoked_and_revoking_is_idempotent(self, store: Store) -> None:
        assert not store.is_token_revoked("jti-1")
        store.revoke_token("jti-1", NOW // 1000 + 60)
        store.revoke_token("jti-1", NOW // 1000 + 60)
        assert store.is_token_revoked("jti-1")
        assert not store.is_token_revoked("jti-2")

    # ---- channels -----------------------------------------------------------------------------
    def test_one_direct_channel_per_pair_in_either_order(self, store: Store) -> None:
        a = store.create_user("a1", "", "a", None, None, NOW).user_id
        b = store.create_user("b1", "", "b", None, None, NOW).user_id
        ch, created = store.get_or_create_direct(a, b, NOW)
        again, created2 = store.get_or_create_direct(b, a, NOW + 1)
        assert created and not created2
        assert again.channel_id == ch.channel_id and ch.channel_type == DIRECT
        assert set(ch.members) == {a, b}
        assert store.user_channels(a) == [ch.channel_id] == store.user_channels(b)
        got = store.get_channel(ch.channel_id)
        assert got is not None and set(got.members) == {a, b}
        assert store.get_channel(ch.channel_id + 10_000) is None

    def test_groups_have_one_owner_and_each_member_once(self, store: Store) -> None:
        g = store.create_group(1, "team", "desc", [2, 3, 3, 1], NOW, 50)
        assert g.channel_type == GROUP and g.name == "team" and g.description == "desc"
        assert g.owner_id == 1 and g.max_members == 50
        assert {u: m.role for u, m in g.members.items()} == {
            1: ROLE_OWNER,
            2: ROLE_MEMBER,
            3: ROLE_MEMBER,
        }
        assert all(m.joined_at == NOW for m in g.members.values())
        assert store.current_pts(g.channel_id) == 0
        other = store.create_group(1, "other", None, [], NOW, 50)
        assert other.channel_id != g.channel_id

    def test_members_join_and_leave(self, store: Store) -> None:
        g = store.create_group(1, "team", None, [2], NOW, 50)
        m = store.add_member(g.channel_id, 4, ROLE_ADMIN, NOW + 5)
        assert (m.user_id, m.role, m.joined_at) == (4, ROLE_ADMIN, NOW + 5)
        got = store.get_channel(g.channel_id)
        assert got is not None and got.members[4].role == ROLE_ADMIN
        assert g.channel_id in store.user_channels(4)
        store.remove_member(g.channel_id, 2)
        store.remove_member(g.channel_id, 99)  # a non-member: a no-op
        got = store.get_channel(g.channel_id)
        assert got is not None and set(got.members) == {1, 4}
        assert g.channel_id not in store.user_channels(2)

    def test_user_channels_in_the_order_joined(self, store: Store) -> None:
        ids = [store.create_group(7, f"g{i}", None, [], NOW, 50).channel_id for i in range(5)]
        assert store.user_channels(7) == ids
        assert store.user_channels(12345) == []

    # ---- the message log ----------------------------------------------------------------------
    def _channel(self, store: Store) -> int:
        return store.create_group(1, "log", None, [2], NOW, 50).channel_id

    def test_commit_numbers_pts_without_gap_and_ignores_the_pts_passed(self, store: Store) -> None:
        cid = self._channel(store)
        pts = [store.commit(record(cid, 1000 + i, pts=77)).pts for i in range(10)]
        assert pts == list(range(1, 11))
        assert store.current_pts(cid) == 10
        other = self._channel(store)
        assert store.commit(record(other, 5000)).pts == 1  # per channel
        assert store.current_pts(cid + other + 1000) == 0

    def test_read_log_is_exclusive_ordered_and_bounded(self, store: Store) -> None:
        cid = self._channel(store)
        for i in range(10):
            store.commit(record(cid, 1000 + i))
        assert [r.pts for r in store.read_log(cid, 0, 3)] == [1, 2, 3]
        assert [r.pts for r in store.read_log(cid, 3, 100)] == list(range(4, 11))
        assert store.read_log(cid, 10, 5) == []
        assert store.read_log(cid, -1, 5) == []
        assert store.read_log(cid + 999, 0, 5) == []
        r = store.read_log(cid, 4, 1)[0]
        assert (r.message_id, r.payload) == (1004, b"payload-1004")

    def test_a_committed_record_is_visible_at_once(self, store: Store) -> None:
        cid = self._channel(store)
        out = store.commit(record(cid, 42))
        assert store.read_log(cid, 0, 1)[0].message_id == 42 == out.message_id

    def test_find_message_by_channel_and_id_not_revoke_events(self, store: Store) -> None:
        cid = self._channel(store)
        store.commit(record(cid, 42))
        store.commit(record(cid, 43, kind=KIND_REVOKE))
        found = store.find_message(cid, 42)
        assert found is not None and found.pts == 1
        assert store.find_message(cid, 43) is None
        assert store.find_message(cid + 1, 42) is None

    def test_mark_revoked_keeps_the_place_and_later_reads_see_it(self, store: Store) -> None:
        cid = self._channel(store)
        store.commit(record(cid, 42))
        store.commit(record(cid, 43))
        out = store.mark_revoked(cid, 42, 2, NOW + 9)
        assert (out.revoked, out.revoked_by, out.revoked_at, out.pts) == (True, 2, NOW + 9, 1)
        first = store.read_log(cid, 0, 2)[0]
        assert first.revoked and first.pts == 1
        assert store.current_pts(cid) == 2

    def test_load_log_answers_as_read_log(self, store: Store) -> None:
        cid = self._channel(store)
        for i in range(5):
            store.commit(record(cid, 1000 + i))
        loaded = asyncio.run(store.load_log(cid, 1, 3))
        assert [r.pts for r in loaded] == [r.pts for r in store.read_log(cid, 1, 3)] == [2, 3, 4]

    # ---- dedup --------------------------------------------------------------------------------
    def test_dedup_keys_are_per_sender_device_and_local_id(self, store: Store) -> None:
        e = DedupEntry(42, 1, 1001, NOW)
        store.dedup_put(1, "d", 7, e)
        got = store.dedup_get(1, "d", 7)
        assert got is not None and (got.message_id, got.pts, got.channel_id) == (42, 1, 1001)
        assert store.dedup_get(1, "other", 7) is None
        assert store.dedup_get(2, "d", 7) is None
        assert store.dedup_get(1, "d", 8) is None

    def test_dedup_sweep_drops_only_older_entries_eventually(self, store: Store) -> None:
        for i in range(200):
            store.dedup_put(1, "d", i, DedupEntry(i, i + 1, 1, NOW + i))
        dropped = 0
        for _ in range(5000):  # a store may sweep in steps
            dropped += store.dedup_sweep(NOW + 100)
            if dropped >= 100:
                break
        assert dropped == 100
        assert store.dedup_get(1, "d", 99) is None
        assert store.dedup_get(1, "d", 100) is not None

    # ---- delivery cursors ---------------------------------------------------------------------
    def test_cursors_only_move_forward(self, store: Store) -> None:
        assert store.get_ack(1, "d", 1001) == 0
        store.set_ack(1, "d", 1001, 5)
        store.set_ack(1, "d", 1001, 3)
        assert store.get_ack(1, "d", 1001) == 5
        assert store.get_ack(1, "other", 1001) == 0
        assert store.get_ack(1, "d", 1002) == 0

    # ---- entity versions ----------------------------------------------------------------------
    def test_entity_versions_are_per_family_and_each_entity_once(self, store: Store) -> None:
        assert store.entity_version("friend:1") == 0
        assert store.entities_since("friend:1", 0, 10) == []
        assert [store.bump_entity("friend:1", e) for e in ("a", "b", "c")] == [1, 2, 3]
        assert store.bump_entity("friend:2", "a") == 1  # another family counts on its own
        assert store.bump_entity("friend:1", "a", deleted=True) == 4  # a tombstone
        assert store.entities_since("friend:1", 0, 10) == [
            ("b", 2, False),
            ("c", 3, False),
            ("a", 4, True),
        ]
        assert store.entities_since("friend:1", 2, 10) == [("c", 3, False), ("a", 4, True)]
        assert store.entities_since("friend:1", 0, 1) == [("b", 2, False)]
        assert store.entities_since("friend:1", 4, 10) == []
        assert store.entity_version("friend:1") == 4
        assert store.entity_of("friend:1", "a") == (4, True)
        assert store.entity_of("friend:1", "b") == (2, False)
        assert store.entity_of("friend:1", "z") is None and store.entity_of("x", "a") is None

    # ---- groups and messages (issue 12) -------------------------------------------------------
    def _group(self, store: Store) -> int:
        return store.create_group(1, "g", None, [2, 3], NOW, 10).channel_id

    def test_a_member_added_later_joins_at_the_current_pts(self, store: Store) -> None:
        g = self._group(store)
        channel = store.get_channel(g)
        assert channel is not None and channel.members[2].join_pts == 0
        store.commit(record(g, 1))
        store.commit(record(g, 2))
        assert store.add_member(g, 4, ROLE_MEMBER, NOW).join_pts == 2
        assert channel.members[4].join_pts == 2

    def test_message_count_leaves_out_revoke_events(self, store: Store) -> None:
        cid = self._channel(store)
        assert store.message_count(cid) == 0 and store.message_count(999_999) == 0
        store.commit(record(cid, 1))
        store.commit(record(cid, 2))
        store.mark_revoked(cid, 1, 7, NOW)
        store.commit(record(cid, 3, KIND_REVOKE))
        assert store.current_pts(cid) == 3
        assert store.message_count(cid) == 2

    def test_find_message_in_any_channel_with_channel_0(self, store: Store) -> None:
        cid = self._channel(store)
        store.commit(record(cid, 5))
        found = store.find_message(0, 5)
        assert found is not None and found.channel_id == cid
        assert store.find_message(0, 6) is None

    def test_user_ack_is_the_highest_of_the_users_devices(self, store: Store) -> None:
        assert store.get_user_ack(1, 1001) == 0
        store.set_ack(1, "a", 1001, 4)
        store.set_ack(1, "b", 1001, 9)
        store.set_ack(1, "a", 1001, 6)
        assert store.get_user_ack(1, 1001) == 9
        assert store.get_user_ack(2, 1001) == 0

    def test_update_group_sets_the_named_fields_only(self, store: Store) -> None:
        g = self._group(store)
        got = store.update_group(g, {"all_muted": True, "announcement": "hi"}, NOW + 5)
        assert got.all_muted and got.announcement == "hi" and got.updated_at == NOW + 5
        assert got.name == "g" and got.member_can_invite and not got.join_need_approval
        with pytest.raises(KeyError):
            store.update_group(g, {"channel_type": 1}, NOW)
        assert got.channel_type == GROUP

    def test_roles_and_mutes_keep_the_member_order(self, store: Store) -> None:
        g = self._group(store)
        store.set_member_role(g, 2, ROLE_ADMIN, NOW + 1)
        store.set_member_mute(g, 3, -1)
        channel = store.get_channel(g)
        assert channel is not None
        assert list(channel.members) == [1, 2, 3]
        assert channel.members[2].role == ROLE_ADMIN and channel.members[3].mute_until == -1

    def test_a_dissolved_group_has_no_members(self, store: Store) -> None:
        g = self._group(store)
        store.dissolve_group(g, NOW + 1)
        channel = store.get_channel(g)
        assert channel is not None and channel.dissolved and not channel.members
        assert g not in store.user_channels(2)
        assert store.create_group(1, "h", None, [], NOW, 10).channel_id != g

    def test_join_requests_pend_until_resolved(self, store: Store) -> None:
        g = self._group(store)
        a = store.add_join_request(g, 5, 2, "", "please", NOW, NOW + 10)
        b = store.add_join_request(g, 6, 0, "qk", None, NOW, NOW + 10)
        assert b.request_id > a.request_id
        assert [r.request_id for r in store.pending_join_requests(g, 10)] == [
            a.request_id,
            b.request_id,
        ]
        assert store.pending_join_requests(g, 1) == [a]
        done = store.resolve_join_request(a.request_id, True, 1, NOW + 3)
        assert done.status == 1 and done.handled_by == 1 and done.handled_at == NOW + 3
        assert store.pending_join_requests(g, 10) == [b]
        got = store.get_join_request(a.request_id)
        assert got is not None and got.status == 1
        assert store.get_join_request(999_999) is None

    def test_group_qr_codes_by_key(self, store: Store) -> None:
        g = self._group(store)
        store.put_group_qr(GroupQR("k1", g, "t1", 1, NOW, NOW + 1000))
        got = store.get_group_qr("k1")
        assert got is not None and got.group_id == g and got.token == "t1"
        assert store.get_group_qr("k2") is None

    def test_read_positions_only_move_forward(self, store: Store) -> None:
        assert store.get_read(1, 1001) == (0, 0)
        assert store.set_read_pts(1, 1001, 5, NOW)
        assert not store.set_read_pts(1, 1001, 5, NOW + 1)
        assert not store.set_read_pts(1, 1001, 3, NOW + 2)
        assert store.get_read(1, 1001) == (5, NOW)
        assert store.get_read(2, 1001) == (0, 0)

    def test_reactions_once_per_user_and_emoji_in_order(self, store: Store) -> None:
        assert store.reactions(1) == {}
        assert store.add_reaction(1, "👍", 7, NOW)
        assert not store.add_reaction(1, "👍", 7, NOW)
        assert store.add_reaction(1, "👍", 8, NOW)
        assert store.add_reaction(1, "❤", 7, NOW)
        assert store.reactions(1) == {"👍": [7, 8], "❤": [7]}
        assert store.remove_reaction(1, "❤", 7)
        assert not store.remove_reaction(1, "❤", 7)
        assert store.reactions(1) == {"👍": [7, 8]}
        assert store.reactions(2) == {}

    # ---- durability ---------------------------------------------------------------------------
    def test_user_bytes_count_each_committed_record_of_its_sender(self, store: Store) -> None:
        assert store.user_bytes(100_000_001) == 0
        cid = store.create_group(100_000_001, "g", None, [], NOW, 50).channel_id
        one = store.commit(record(cid, 1))
        after_one = store.user_bytes(100_000_001)
        assert after_one >= len(one.payload) + len(one.content)
        two = store.commit(record(cid, 2))
        assert store.user_bytes(100_000_001) - after_one >= len(two.payload)
        store.mark_revoked(cid, 1, 100_000_001, NOW + 5)  # a revoked record stays stored
        assert store.user_bytes(100_000_001) >= after_one + len(two.payload)
        assert store.user_bytes(100_000_002) == 0

    # ---- accounts and contacts ----------------------------------------------------------------
    def test_update_user_sets_only_what_is_given(self, store: Store) -> None:
        u = store.create_user("pat", "h", "Pat", "+15550001", None, NOW)
        assert store.update_user(u.user_id, "Patty", None).nickname == "Patty"
        user = store.update_user(u.user_id, None, "https://x.org/a.png")
        assert (user.nickname, user.avatar_url) == ("Patty", "https://x.org/a.png")
        got = store.get_user(u.user_id)
        assert got is not None and got.nickname == "Patty"

    def test_find_by_phone_is_exact(self, store: Store) -> None:
        u = store.create_user("ph", "h", "Ph", "+15550002", None, NOW)
        found = store.find_by_phone("+15550002")
        assert found is not None and found.user_id == u.user_id
        assert store.find_by_phone("15550002") is None
        assert store.find_by_phone("+15550003") is None

    def test_docs_are_per_user_and_kind_and_replaced(self, store: Store) -> None:
        assert store.get_doc(1, "privacy") == {}
        store.put_doc(1, "privacy", {"a": True})
        store.put_doc(1, "profile", {"bio": "x"})
        store.put_doc(2, "privacy", {"a": False})
        store.put_doc(1, "privacy", {"b": 1})
        assert store.get_doc(1, "privacy") == {"b": 1}
        assert store.get_doc(1, "profile") == {"bio": "x"}
        assert store.get_doc(2, "privacy") == {"a": False}

    def test_friend_requests_replace_per_pair_and_keep_the_order_made(self, store: Store) -> None:
        store.put_friend_request(FriendRequest(1, 9, "hi", "search", "5", NOW))
        store.put_friend_request(FriendRequest(2, 9, None, None, None, NOW + 1))
        store.put_friend_request(FriendRequest(1, 8, None, None, None, NOW + 2))
        store.put_friend_request(FriendRequest(1, 9, "again", None, None, NOW + 3))
        assert [(r.from_user_id, r.message) for r in store.friend_requests_to(9)] == [
            (2, None),
            (1, "again"),
        ]
        got = store.get_friend_request(1, 9)
        assert got is not None and got.created_at == NOW + 3
        assert store.get_friend_request(9, 1) is None  # one direction
        store.delete_friend_request(1, 9)
        store.delete_friend_request(1, 9)  # no-op
        assert [r.from_user_id for r in store.friend_requests_to(9)] == [2]
        assert store.friend_requests_to(7) == []

    def test_friendships_are_symmetric_and_ordered(self, store: Store) -> None:
        store.add_friends(1, 2, NOW)
        store.add_friends(3, 1, NOW + 1)
        store.add_friends(2, 1, NOW + 5)  # no-op: already friends
        assert store.friends_since(2, 1) == NOW and store.friends_since(1, 2) == NOW
        assert store.friends_of(1) == [(2, NOW), (3, NOW + 1)]
        store.remove_friends(2, 1)
        store.remove_friends(2, 1)  # no-op
        assert store.friends_since(1, 2) is None
        assert store.friends_of(1) == [(3, NOW + 1)] and store.friends_of(2) == []

    def test_blacklists_are_one_way_and_keep_the_first_time(self, store: Store) -> None:
        store.block(1, 2, NOW)
        store.block(1, 3, NOW + 1)
        store.block(1, 2, NOW + 9)
        assert store.blocked_at(1, 2) == NOW and store.blocked_at(2, 1) is None
        assert store.blacklist(1) == [(2, NOW), (3, NOW + 1)]
        store.unblock(1, 2)
        store.unblock(1, 2)  # no-op
        assert store.blocked_at(1, 2) is None and store.blacklist(1) == [(3, NOW + 1)]

    def test_contacts_version_changes_with_every_contacts_write(self, store: Store) -> None:
        writes = [
            lambda: store.block(1, 2, NOW),
            lambda: store.unblock(1, 2),
            lambda: store.add_friends(1, 2, NOW),
            lambda: store.remove_friends(1, 2),
            lambda: store.put_doc(2, "privacy", {"allow_receive_message_from_non_friend": False}),
        ]
        for write in writes:
            before = store.contacts_version
            write()
            assert store.contacts_version != before

    def test_qrcodes_by_key_and_creator_and_replaced(self, store: Store) -> None:
        a = QRCode("k1", "user", 1, 1, "t", NOW, max_usage=2)
        store.put_qrcode(a)
        store.put_qrcode(QRCode("k2", "group", 50, 1, "t2", NOW + 1))
        store.put_qrcode(QRCode("k3", "user", 2, 2, "t3", NOW + 2))
        store.put_qrcode(QRCode("k1", "user", 1, 1, "t", NOW, max_usage=2, used_count=1))
        got = store.get_qrcode("k1")
        assert got is not None and got.used_count == 1 and got.max_usage == 2
        assert [c.qr_key for c in store.qrcodes_of(1)] == ["k1", "k2"]
        assert store.get_qrcode("nope") is None and store.qrcodes_of(9) == []

    def test_search_sessions_until_swept(self, store: Store) -> None:
        store.put_search_session(11, 1, 2, NOW + 10)
        store.put_search_session(12, 1, 3, NOW + 20)
        assert store.get_search_session(11) == (1, 2, NOW + 10)
        assert store.sweep_search_sessions(NOW + 15) == 1
        assert store.get_search_session(11) is None
        assert store.get_search_session(12) == (1, 3, NOW + 20)
        assert store.get_search_session(13) is None

    def test_epoch_names_the_store(self, store: Store) -> None:
        assert isinstance(store.epoch, str) and store.epoch

    def test_flush_then_close(self, store: Store) -> None:
        cid = self._channel(store)
        store.commit(record(cid, 1))
        assert store.write_seq >= store.durable_seq
        store.flush()
        assert store.durable_seq == store.write_seq  # flush returns once every write is durable
        called: list[int] = []
        store.when_durable(store.write_seq, lambda: called.append(1))
        assert called == [1]  # already durable: at once
        lag = store.persistence_lag()
        assert lag is None or lag == 0.0
        assert isinstance(store.stats(), dict)
        store.close()

    def test_every_abstract_method_is_implemented(self, store: Store) -> None:
        assert not getattr(type(store), "__abstractmethods__", None)

    @pytest.mark.parametrize("n", [1000])
    def test_many_commits_stay_contiguous(self, store: Store, n: int) -> None:
        cid = self._channel(store)
        for i in range(n):
            store.commit(record(cid, 10_000 + i))
        got = [r.pts for r in store.read_log(cid, 0, n)]
        assert got == list(range(1, n + 1))

    # ---- channel preferences and broadcast channels (issue 12) --------------------------------
    def test_channel_prefs_are_per_user_and_channel_and_replaced(self, store: Store) -> None:
        assert store.get_channel_prefs(1, 1001) is None
        store.put_channel_prefs(ChannelPrefs(1, 1001, pinned_at=NOW, muted=True, updated_at=NOW))
        store.put_channel_prefs(ChannelPrefs(2, 1001, hidden_pts=7, updated_at=NOW))
        got = store.get_channel_prefs(1, 1001)
        assert got == ChannelPrefs(1, 1001, NOW, True, -1, NOW)
        assert store.get_channel_prefs(2, 1001) == ChannelPrefs(2, 1001, 0, False, 7, NOW)
        assert store.get_channel_prefs(1, 1002) is None
        store.put_channel_prefs(ChannelPrefs(1, 1001, muted=False, updated_at=NOW + 1))
        assert store.get_channel_prefs(1, 1001) == ChannelPrefs(1, 1001, 0, False, -1, NOW + 1)

    def test_a_direct_channels_first_source_stays(self, store: Store) -> None:
        assert store.direct_source(1001) is None
        store.set_direct_source(1001, "group", "1002")
        store.set_direct_source(1001, "search", "9")
        assert store.direct_source(1001) == ("group", "1002")

    def test_broadcast_ids_come_from_the_channel_ids(self, store: Store) -> None:
        g = self._group(store)
        bc = store.create_broadcast(1, "news", "d", None, NOW)
        d, _ = store.get_or_create_direct(5, 6, NOW)
        assert len({g, bc.channel_id, d.channel_id}) == 3
        assert store.get_channel(bc.channel_id) is None  # not a direct or group channel
        got = store.get_broadcast(bc.channel_id)
        assert got is not None and got.name == "news" and got.owner_id == 1
        assert got.subscribers == {1: NOW}  # the owner is the first subscriber
        assert store.get_broadcast(g) is None

    def test_broadcasts_list_newest_first_and_subscriptions_keep_the_first_time(
        self, store: Store
    ) -> None:
        ids = [store.create_broadcast(1, f"b{i}", None, None, NOW + i).channel_id for i in range(5)]
        assert store.broadcast_count() == 5
        assert [b.channel_id for b in store.list_broadcasts(0, 2)] == ids[::-1][:2]
        assert [b.channel_id for b in store.list_broadcasts(2, 2)] == ids[::-1][2:4]
        assert [b.channel_id for b in store.list_broadcasts(4, 2)] == [ids[0]]
        assert store.list_broadcasts(5, 2) == []
        assert store.subscribe_broadcast(ids[0], 7, NOW + 10) == NOW + 10
        assert store.subscribe_broadcast(ids[0], 7, NOW + 20) == NOW + 10
        got = store.get_broadcast(ids[0])
        assert got is not None and list(got.subscribers) == [1, 7]

    def test_posts_have_increasing_ids_and_list_newest_first(self, store: Store) -> None:
        a = store.create_broadcast(1, "a", None, None, NOW).channel_id
        b = store.create_broadcast(1, "b", None, None, NOW).channel_id
        pa = [store.publish_post(a, 1, f"a{i}", None, "text", NOW + i) for i in range(3)]
        pb = store.publish_post(b, 1, "b0", "title", "link", NOW)
        ids = [p.content_id for p in pa]
        assert ids == sorted(ids) and len(set(ids + [pb.content_id])) == 4
        assert [p.content for p in store.posts(a, 0, 2)] == ["a2", "a1"]
        assert [p.content for p in store.posts(a, 2, 2)] == ["a0"]
        assert store.posts(a, 3, 2) == []
        assert store.post_count(a) == 3 and store.post_count(b) == 1 and store.post_count(9) == 0
        got = store.posts(b, 0, 10)[0]
        assert (got.title, got.content_type, got.author_id) == ("title", "link", 1)

    # ---- files (issue 12) --------------------------------------------------------------------
    def _file(self, store: Store, owner: int = 7) -> FileRecord:
        return store.create_file(
            owner, "a.png", "image/png", "image", "message", 100, "hash", NOW + 10, NOW
        )

    def test_files_get_new_increasing_ids_and_start_pending(self, store: Store) -> None:
        a, b = self._file(store), self._file(store, 8)
        assert b.file_id > a.file_id > 0
        got = store.get_file(a.file_id)
        assert got is not None and got.status == FILE_PENDING and got.owner_id == 7
        assert (got.filename, got.mime_type, got.file_type) == ("a.png", "image/png", "image")
        assert (got.business_type, got.max_size, got.token_hash) == ("message", 100, "hash")
        assert (got.expires_at, got.created_at, got.size) == (NOW + 10, NOW, 0)
        assert store.get_file(b.file_id + 1) is None

    def test_update_file_sets_named_fields_only(self, store: Store) -> None:
        f = self._file(store)
        changed = store.update_file(
            f.file_id,
            {"status": FILE_UPLOADED, "size": 42, "sha256": "ab", "access_hash": "k"},
        )
        assert changed.status == FILE_UPLOADED and changed.size == 42
        got = store.get_file(f.file_id)
        assert got is not None and got.sha256 == "ab" and got.access_hash == "k"
        assert got.filename == "a.png"  # untouched
        with pytest.raises(KeyError):
            store.update_file(f.file_id, {"size": 1, "owner_id": 9})
        got = store.get_file(f.file_id)
        assert got is not None and got.owner_id == 7 and got.size == 42  # nothing changed

    # ---- devices (issue 12) ------------------------------------------------------------------
    def test_devices_in_first_put_order_replaced_in_place(self, store: Store) -> None:
        store.put_device(DeviceRecord(1, "d1", device_type="ios", login_ids=("l1",)))
        store.put_device(DeviceRecord(1, "d2", address="192.0.2.1"))
        store.put_device(DeviceRecord(2, "d1"))
        store.put_device(DeviceRecord(1, "d1", device_type="ios", apns_armed=True, last_active=5))
        assert [d.device_id for d in store.devices_of(1)] == ["d1", "d2"]
        got = store.get_device(1, "d1")
        assert got is not None and got.apns_armed and got.last_active == 5
        assert got.login_ids == ()  # replaced whole
        assert store.get_device(1, "d3") is None and store.devices_of(3) == []
        store.delete_device(1, "d1")
        store.delete_device(1, "nope")
        assert [d.device_id for d in store.devices_of(1)] == ["d2"]
        store.put_device(DeviceRecord(1, "d1"))
        assert [d.device_id for d in store.devices_of(1)] == ["d2", "d1"]  # put again: last
        assert [d.device_id for d in store.devices_of(2)] == ["d1"]

    def test_last_seen_only_moves_forward(self, store: Store) -> None:
        assert store.last_seen(1) == 0
        store.set_last_seen(1, NOW)
        store.set_last_seen(1, NOW - 5)
        assert store.last_seen(1) == NOW and store.last_seen(2) == 0
        store.set_last_seen(1, NOW + 5)
        assert store.last_seen(1) == NOW + 5

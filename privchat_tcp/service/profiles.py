"""Profiles, search, settings and QR codes: what users show of themselves and how others find
them, under the privacy flags of ``service/social.py``.

Documents (``ProfileStore``): kind "profile" (``bio``, ``extra_fields``, ``updated_at``),
"settings" (setting key -> JSON value, and ``updated_at``; reference 11.7 ``user_settings``).
QR codes (``QRCodeStore``): a ``qr_key`` (random, the capability a scanner presents) and a
``token`` (random, in the code's URL); a code may expire (``expire_at``) and be used at most
``max_usage`` times; a shared contact card is a code of ``qr_type`` "card".
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from ..config import Settings
from ..errors import ErrorCode, InvalidParams, ServiceError, UserNotFound
from .channels import ChannelService
from .entities import PRIVACY_SETTING, EntityFeed
from .model import DIRECT, GROUP, SYSTEM_USER_ID, QRCode, User
from .ports import AccountStore, EntityLog, ProfileStore, QRCodeStore, SearchSessionStore
from .social import PrivacyService, SocialService, settings_family

__all__ = ["ProfileService", "QRCodeService", "QR_TYPES", "qr_url"]

QR_TYPES = ("user", "group", "auth", "feature")
#: the action ``qrcode/resolve`` answers per type
QR_ACTIONS = {
    "user": "add_friend",
    "group": "join_group",
    "auth": "authorize",
    "feature": "open",
    "card": "view",
}
MAX_SETTINGS = 256
MAX_SETTING_BYTES = 4096
SWEEP_EVERY_MS = 60_000


def qr_url(code: QRCode) -> str:
    kind = "user" if code.qr_type == "card" else code.qr_type
    return f"privchat://{kind}/get?qrkey={code.qr_key}&token={code.token}"


class ProfileService:
    def __init__(
        self,
        settings: Settings,
        accounts: AccountStore,
        profiles: ProfileStore,
        searches: SearchSessionStore,
        entities: EntityLog,
        social: SocialService,
        privacy: PrivacyService,
        clock: Callable[[], int],
    ) -> None:
        self.settings = settings
        self._accounts = accounts
        self._profiles = profiles
        self._searches = searches
        self._entities = entities
        self._feed = EntityFeed(entities)
        self.social = social
        self.privacy = privacy
        self._clock = clock
        self._swept = 0

    def user(self, user_id: int) -> User:
        return self.social.user(user_id)

    # ---- viewing -------------------------------------------------------------------------------
    def detail(self, viewer: int, target_id: int) -> tuple[User, bool, bool]:
        """(user, is_friend, can_send_message) for ``viewer``; 10004 when the target does not
        show itself to non-friends (``allow_view_by_non_friend``)."""
        target = self.user(target_id)
        if not self.privacy.allows(viewer, target_id, "allow_view_by_non_friend"):
            raise ServiceError(
                ErrorCode.PERMISSION_DENIED, "this user shows itself to friends only"
            )
        if viewer != target_id and self.social.is_blocked(target_id, viewer):
            raise UserNotFound()  # who blocked the viewer is not shown to them
        friend = self.social.is_friend(viewer, target_id)
        return target, friend, self.social.can_send(viewer, target_id)

    def touch(self, user_id: int) -> None:
        """The user appeared or changed: bump its ``user`` entity in the views of those who
        see it (``EntityFeed.user_changed``): the user, their friends and direct peers, the
        fellow members of their groups up to ``large_group_threshold`` members, and their
        groups' member families (``entity/sync_entities``)."""
        viewers = {uid for uid, _ in self.social.friends(user_id)}
        groups = []
        for channel in self.social.channels.user_channels(user_id):
            if channel.channel_type == DIRECT:
                viewers.update(channel.members)
            elif channel.channel_type == GROUP and not channel.dissolved:
                groups.append(channel.channel_id)
                if len(channel.members) <= self.settings.large_group_threshold:
                    viewers.update(channel.members)
        self._feed.user_changed(user_id, sorted(viewers), groups)

    def profile(self, user_id: int) -> dict[str, Any]:
        return dict(self._profiles.get_doc(user_id, "profile"))

    # ---- changing ------------------------------------------------------------------------------
    def update(
        self,
        user_id: int,
        display_name: str | None,
        avatar_url: str | None,
        bio: str | None,
        extra_fields: Mapping[str, str] | None = None,
    ) -> User:
        """Change what the user shows (None: keep); the "user" entity is bumped."""
        if display_name is not None and not display_name.strip():
            raise ServiceError(ErrorCode.NICKNAME_INVALID, "display_name must not be empty")
        user = self.user(user_id)
        if display_name is not None or avatar_url is not None:
            user = self._profiles.update_user(user_id, display_name, avatar_url)
        if bio is not None or extra_fields is not None:
            doc = self.profile(user_id)
            if bio is not None:
                doc["bio"] = bio
            if extra_fields is not None:
                merged = dict(doc.get("extra_fields", {}))
                merged.update(extra_fields)
                if len(merged) > 32:
                    raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, "at most 32 extra_fields")
                doc["extra_fields"] = merged
            doc["updated_at"] = self._clock()
            self._profiles.put_doc(user_id, "profile", doc)
        self.touch(user_id)
        return user

    def update_settings(self, user_id: int, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Set (a JSON value) or delete (None) each setting; returns every setting."""
        doc = dict(self._profiles.get_doc(user_id, "settings"))
        values: dict[str, Any] = dict(doc.get("values", {}))
        if PRIVACY_SETTING in changes:
            raise InvalidParams(f"the setting {PRIVACY_SETTING} is set by account/privacy/update")
        for key, value in changes.items():
            if value is None:
                values.pop(key, None)
                continue
            encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            if len(encoded.encode()) > MAX_SETTING_BYTES:
                raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, "a setting's value is too large")
            values[key] = value
        if len(values) > MAX_SETTINGS:
            raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, f"at most {MAX_SETTINGS} settings")
        doc["values"] = values
        doc["updated_at"] = self._clock()
        self._profiles.put_doc(user_id, "settings", doc)
        family = settings_family(user_id)
        for key, value in changes.items():
            self._entities.bump_entity(family, key, value is None)
        return values

    def get_settings(self, user_id: int) -> dict[str, Any]:
        return dict(self._profiles.get_doc(user_id, "settings").get("values", {}))

    # ---- search --------------------------------------------------------------------------------
    def search(self, searcher: int, query: str) -> list[tuple[User, int]]:
        """Users found by exactly their username, email or phone (each only if its flag
        allows), not those who blocked the searcher: (user, search_session_id)."""
        q = unicodedata.normalize("NFC", query.strip())
        if not q:
            raise InvalidParams("query must not be empty")
        found: dict[int, User] = {}
        by_login = self._accounts.find_user(q.lower())
        if by_login is not None:
            what = (
                "allow_search_by_email"
                if by_login.email and by_login.email.lower() == q.lower()
                else "allow_search_by_username"
            )
            if self.privacy.allows(searcher, by_login.user_id, what):
                found[by_login.user_id] = by_login
        by_phone = self._profiles.find_by_phone(q)
        if by_phone is not None and self.privacy.allows(
            searcher, by_phone.user_id, "allow_search_by_phone"
        ):
            found[by_phone.user_id] = by_phone
        return [
            (u, self.search_session(searcher, u.user_id))
            for u in found.values()
            if u.user_id != SYSTEM_USER_ID and not self.social.is_blocked(u.user_id, searcher)
        ]

    def search_session(self, searcher: int, target_id: int) -> int:
        """A new ``search_session_id``: the proof, for a while, that ``searcher`` found
        ``target_id`` (a friend request's ``source: "search"``)."""
        now = self._clock()
        if now - self._swept > SWEEP_EVERY_MS:
            self._swept = now
            self._searches.sweep_search_sessions(now)
        sid = secrets.randbits(62) + 1
        self._searches.put_search_session(
            sid, searcher, target_id, now + self.settings.search_session_ttl * 1000
        )
        return sid


class QRCodeService:
    def __init__(
        self,
        settings: Settings,
        qrcodes: QRCodeStore,
        channels: ChannelService,
        social: SocialService,
        privacy: PrivacyService,
        clock: Callable[[], int],
    ) -> None:
        self.settings = settings
        self._qrcodes = qrcodes
        self.channels = channels
        self.social = social
        self.privacy = privacy
        self._clock = clock

    def _check_quota(self, creator: int) -> None:
        limit = self.settings.max_qrcodes_per_user
        if not limit:
            return
        codes = self._qrcodes.qrcodes_of(creator)
        if len(codes) >= limit * 20 or sum(1 for c in codes if not c.revoked_at) >= limit:
            raise ServiceError(ErrorCode.QRCODE_LIMIT_EXCEEDED, "too many QR codes")

    def generate(
        self,
        creator: int,
        qr_type: str,
        target_id: int,
        expire_seconds: int,
        max_usage: int,
        metadata: str = "",
    ) -> QRCode:
        """A new code. ``user``: the creator's own; ``group``: a group the creator is a
        member of; ``auth`` and ``feature``: any target the creator names."""
        if qr_type not in QR_TYPES:
            raise InvalidParams("qr_type must be one of " + ", ".join(QR_TYPES))
        if qr_type == "user" and target_id != creator:
            raise ServiceError(ErrorCode.PERMISSION_DENIED, "a user QR code names yourself")
        if qr_type == "group":
            self.channels.member_group(creator, target_id)
        return self._create(creator, qr_type, target_id, expire_seconds, max_usage, metadata)

    def _create(
        self,
        creator: int,
        qr_type: str,
        target_id: int,
        expire_seconds: int,
        max_usage: int,
        metadata: str,
    ) -> QRCode:
        self._check_quota(creator)
        now = self._clock()
        code = QRCode(
            secrets.token_urlsafe(16),
            qr_type,
            target_id,
            creator,
            secrets.token_urlsafe(12),
            now,
            now + expire_seconds * 1000 if expire_seconds else 0,
            max_usage,
            0,
            0,
            metadata,
        )
        self._qrcodes.put_qrcode(code)
        return code

    def _valid(self, qr_key: str, token: str | None) -> QRCode:
        code = self._qrcodes.get_qrcode(qr_key)
        if code is None or (
            token is not None and not secrets.compare_digest(token.encode(), code.token.encode())
        ):
            raise ServiceError(ErrorCode.QRCODE_NOT_FOUND, "QR code not found")
        if code.revoked_at:
            raise ServiceError(ErrorCode.QRCODE_REVOKED, "QR code revoked")
        if code.expire_at and code.expire_at <= self._clock():
            raise ServiceError(ErrorCode.QRCODE_EXPIRED, "QR code expired")
        if code.max_usage and code.used_count >= code.max_usage:
            raise ServiceError(ErrorCode.QRCODE_USED, "QR code used up")
        return code

    def resolve(self, scanner: int, qr_key: str, token: str | None) -> QRCode:
        """Scan a code: it must be valid (20700 unknown or a wrong token, 20701 expired, 20702
        used up, 20703 revoked); one use is counted. A user's code also needs the target's
        ``allow_search_by_qrcode`` and not to be blocked by them."""
        code = self._valid(qr_key, token)
        if (
            code.qr_type == "card"
            and json.loads(code.metadata or "{}").get("receiver_id") != scanner
        ):
            raise ServiceError(ErrorCode.QRCODE_NOT_FOUND, "QR code not found")
        if code.qr_type in ("user", "card") and (
            not self.privacy.allows(scanner, code.target_id, "allow_search_by_qrcode")
            or self.social.is_blocked(code.target_id, scanner)
        ):
            raise ServiceError(ErrorCode.QRCODE_NOT_FOUND, "QR code not found")
        used = dataclasses.replace(code, used_count=code.used_count + 1)
        self._qrcodes.put_qrcode(used)
        return used

    def owned(self, user_id: int, qr_key: str) -> QRCode:
        code = self._qrcodes.get_qrcode(qr_key)
        if code is None or code.creator_id != user_id:
            raise ServiceError(ErrorCode.QRCODE_NOT_FOUND, "QR code not found")
        return code

    def revoke(self, user_id: int, qr_key: str) -> QRCode:
        """Revoke one of the caller's codes (again: the first time stays)."""
        code = self.owned(user_id, qr_key)
        if not code.revoked_at:
            code = dataclasses.replace(code, revoked_at=self._clock())
            self._qrcodes.put_qrcode(code)
        return code

    def codes_of(self, user_id: int, include_revoked: bool) -> list[QRCode]:
        return [c for c in self._qrcodes.qrcodes_of(user_id) if include_revoked or not c.revoked_at]

    def current(self, user_id: int, qr_type: str, target_id: int) -> QRCode | None:
        """The caller's latest code for that target that still works."""
        now = self._clock()
        for code in reversed(self._qrcodes.qrcodes_of(user_id)):
            if (
                code.qr_type == qr_type
                and code.target_id == target_id
                and not code.revoked_at
                and not (code.expire_at and code.expire_at <= now)
                and not (code.max_usage and code.used_count >= code.max_usage)
            ):
                return code
        return None

    def refresh(self, user_id: int, qr_type: str, target_id: int) -> tuple[QRCode | None, QRCode]:
        """Revoke the caller's working codes for the target and make a new one (with the
        latest one's expiry length and usage limit): (the old code or None, the new one)."""
        if qr_type not in QR_TYPES:
            raise InvalidParams("qr_type must be one of " + ", ".join(QR_TYPES))
        if qr_type == "group":
            self.channels.member_group(user_id, target_id)
        old = self.current(user_id, qr_type, target_id)
        now = self._clock()
        for code in self._qrcodes.qrcodes_of(user_id):
            if code.qr_type == qr_type and code.target_id == target_id and not code.revoked_at:
                self._qrcodes.put_qrcode(dataclasses.replace(code, revoked_at=now))
        expire = 0
        if old is not None and old.expire_at:
            expire = max((old.expire_at - old.created_at) // 1000, 1)
        new = self.generate(
            user_id,
            qr_type,
            target_id,
            expire,
            old.max_usage if old else 0,
            old.metadata if old else "",
        )
        return old, new

    def user_code(self, user_id: int, expire_seconds: int | None) -> QRCode:
        """``user/qrcode/generate``: a new code of the user (their earlier ones revoked)."""
        now = self._clock()
        for code in self._qrcodes.qrcodes_of(user_id):
            if code.qr_type == "user" and code.target_id == user_id and not code.revoked_at:
                self._qrcodes.put_qrcode(dataclasses.replace(code, revoked_at=now))
        return self.generate(user_id, "user", user_id, expire_seconds or 0, 0)

    def share_card(
        self, sharer: int, target_id: int, receiver_id: int, expire_seconds: int
    ) -> QRCode:
        """A contact card of ``target_id`` (the sharer, or a friend of theirs) for
        ``receiver_id``: the ``card_share`` source of the receiver's friend request."""
        self.social.user(target_id)
        self.social.user(receiver_id)
        if receiver_id == sharer:
            raise InvalidParams("receiver_id must be someone else")
        if target_id != sharer and not self.social.is_friend(sharer, target_id):
            raise ServiceError(
                ErrorCode.PERMISSION_DENIED, "you can share your friends' cards only"
            )
        if target_id != sharer and not self.privacy.allows(
            receiver_id, target_id, "allow_search_by_qrcode"
        ):
            raise ServiceError(ErrorCode.PERMISSION_DENIED, "this user cannot be shared")
        return self._create(
            sharer,
            "card",
            target_id,
            expire_seconds,
            0,
            json.dumps({"receiver_id": receiver_id}),
        )

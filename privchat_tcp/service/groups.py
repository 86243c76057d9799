"""Groups: who may do what to whom (the role matrix), members' mutes, settings, join approval,
join QR codes, the end of a group, and the notices members receive about it.

Roles rank owner > admin > member (PrivChat 0.1 numbering: 0, 1, 2, so a lower number ranks
higher). An admin action needs an admin or the owner; an action on another member (remove,
mute) needs an operator who outranks the target; roles and ownership are the owner's.

Every change of a group or of its members bumps the entity families ``group`` (entity id the
group id) and ``group_member`` (entity id ``"<group id>:<user id>"``; a tombstone when the member
leaves) so that ``entity/sync_entities`` sees it. Members learn of joins, leaves, kicks, mutes and
role changes from a notice committed to the group's log (reference 12.5: what server 0.1
pushes): a System message (type 5) from user 1 whose payload is
``{"message_type":"notification","content":<text>,"metadata":{"notification_type":<snake case
NotificationType>, ...its fields}}``, with its own pts, pushed like any message and pulled
with MP or ``sync/get_difference``. A member who is removed or leaves gets the notice of it too.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..config import Settings
from ..errors import (
    ErrorCode,
    GroupNotFound,
    InvalidParams,
    NotGroupMember,
    ServiceError,
)
from .channels import ChannelService
from .messages import MessageService
from .model import (
    GROUP,
    JOIN_PENDING,
    KIND_MESSAGE,
    ROLE_ADMIN,
    ROLE_MEMBER,
    ROLE_NAMES,
    ROLE_OWNER,
    SYSTEM_MESSAGE,
    SYSTEM_USER_ID,
    Channel,
    JoinRequest,
    Member,
    QRCode,
    Record,
)
from .ports import AccountStore, MessageLog, Store

__all__ = [
    "GroupService",
    "JoinResult",
    "GROUP_ENTITY",
    "GROUP_MEMBER_ENTITY",
    "member_entity_id",
    "QR_CODE_NOT_FOUND",
    "QR_CODE_EXPIRED",
    "QR_CODE_REVOKED",
    "QR_CODE_LIMIT_EXCEEDED",
    "JOIN_REQUEST_TTL_MS",
    "QR_DEFAULT_TTL_S",
    "QR_MAX_TTL_S",
    "MAX_MUTE_S",
]

#: entity families (``EntityLog``) of groups and of their members
GROUP_ENTITY = "group"
GROUP_MEMBER_ENTITY = "group_member"

# PrivChat ErrorCode values of QR codes (reference 8.1)
QR_CODE_NOT_FOUND = 20700
QR_CODE_EXPIRED = 20701
QR_CODE_REVOKED = 20703
QR_CODE_LIMIT_EXCEEDED = 20704
RESOURCE_NOT_FOUND = 10201

JOIN_REQUEST_TTL_MS = 7 * 24 * 3600 * 1000  # a join request waits this long for a decision
QR_DEFAULT_TTL_S = 7 * 24 * 3600  # a join QR code without ``expire_seconds``
QR_MAX_TTL_S = 30 * 24 * 3600
QR_MAX_USAGE = 1_000_000
MAX_MUTE_S = 10 * 366 * 24 * 3600  # a longer mute is a permanent one (``mute_duration`` 0)
MAX_PENDING_LISTED = 200  # join requests ``group/approval/list`` answers at most
QR_TYPE_GROUP = "group"


def member_entity_id(group_id: int, user_id: int) -> str:
    return f"{group_id}:{user_id}"


@dataclasses.dataclass(slots=True)
class JoinResult:
    """What joining by QR code (or an invitation) came to: a member now, or a pending request."""

    group_id: int
    user_id: int
    joined: bool
    joined_at: int = 0  # unix ms, when joined
    request: JoinRequest | None = None  # when pending


def _outranks(op: Member, target: Member) -> bool:
    return op.role < target.role


class GroupService:
    def __init__(
        self,
        settings: Settings,
        channels: ChannelService,
        messages: MessageService,
        accounts: AccountStore,
        store: Store,
        log: MessageLog,
        clock: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.channels = channels
        self.messages = messages
        self._accounts = accounts
        self._store = store
        self._log = log
        self._clock = clock

    # ---- lookups -------------------------------------------------------------------------------
    def group(self, group_id: int) -> Channel:
        """The group (not dissolved), else GroupNotFound (20300)."""
        channel = self._store.get_channel(group_id)
        if channel is None or channel.channel_type != GROUP or channel.dissolved:
            raise GroupNotFound()
        return channel

    def member_group(self, user_id: int, group_id: int) -> Channel:
        group = self.group(group_id)
        if user_id not in group.members:
            raise NotGroupMember()
        return group

    def _operator(self, group: Channel, user_id: int) -> Member:
        member = group.members.get(user_id)
        if member is None:
            raise NotGroupMember()
        return member

    def _admin(self, group: Channel, user_id: int) -> Member:
        op = self._operator(group, user_id)
        if op.role == ROLE_MEMBER:
            raise ServiceError(ErrorCode.NOT_GROUP_ADMIN, "only the owner or an admin may do this")
        return op

    def _owner(self, group: Channel, user_id: int) -> Member:
        op = self._operator(group, user_id)
        if op.role != ROLE_OWNER:
            raise ServiceError(ErrorCode.NOT_GROUP_OWNER, "only the owner may do this")
        return op

    def _target(self, group: Channel, user_id: int) -> Member:
        member = group.members.get(user_id)
        if member is None:
            raise NotGroupMember("user is not a member")
        return member

    def message_count(self, group_id: int) -> int:
        """Messages in the group's log (revoke events are not messages)."""
        return self._log.message_count(group_id)

    def is_muted(self, group: Channel, user_id: int) -> bool:
        return self.channels.is_muted(group, user_id)

    def name(self, user_id: int) -> str:
        """What a notice's text calls a user: the nickname, else the username."""
        user = self._accounts.get_user(user_id)
        if user is None:
            return f"user_{user_id}"
        return user.nickname or user.username

    def username(self, user_id: int) -> str:
        user = self._accounts.get_user(user_id)
        return f"user_{user_id}" if user is None else user.username

    # ---- entity versions and notices -----------------------------------------------------------
    def _bump_group(
        self, group_id: int, deleted: bool = False, former: tuple[int, ...] = ()
    ) -> None:
        """Entity versions through the one feed (``service/entities.py``): the group changed
        in every member's view, or (``deleted``) it is gone from ``former`` members' views."""
        group = self._store.get_channel(group_id)
        if group is None:
            return
        if deleted:
            self.channels.feed.group_dissolved(group, former)
        else:
            self.channels.feed.group_changed(group)

    def _bump_member(
        self, group_id: int, user_id: int, deleted: bool = False, joined: bool = False
    ) -> None:
        group = self._store.get_channel(group_id)
        if group is None:
            return
        feed = self.channels.feed
        if deleted:
            feed.member_left(group, user_id)
        elif joined:
            feed.member_joined(group, user_id)
        else:
            feed.member_changed(group, user_id)

    def _notify(
        self,
        group: Channel,
        kind: str,
        text: str,
        data: dict[str, Any],
        also: Iterable[int] = (),
    ) -> Record:
        """Commit a notice to the group's log and deliver it to the members (and to ``also``,
        members who just left: they are told why)."""
        now = self._clock()
        metadata: dict[str, Any] = {"notification_type": kind, "group_id": group.channel_id}
        metadata.update(data)
        payload = json.dumps(
            {"message_type": "notification", "content": text, "metadata": metadata},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode("utf-8", "replace")  # a stored name with a lone surrogate: "?"
        record = self._log.commit(
            Record(
                0,
                self.messages.ids.next(now),
                group.channel_id,
                GROUP,
                SYSTEM_USER_ID,
                "",
                0,
                SYSTEM_MESSAGE,
                now,
                payload,
                b"",
                False,
                KIND_MESSAGE,
            )
        )
        extra = [uid for uid in also if uid not in group.members]
        target = group
        if extra:  # a snapshot with them: the live member list no longer has them
            members = dict(group.members)
            for uid in extra:
                members[uid] = Member(uid, ROLE_MEMBER, now)
            target = dataclasses.replace(group, members=members)
        self.messages.delivery.deliver(target, record, None)
        return record

    # ---- create, join, leave -------------------------------------------------------------------
    def create(
        self, owner_id: int, name: str, description: str | None, member_ids: Iterable[int]
    ) -> Channel:
        """``group/group/create``: the group (its entities bumped), and a GroupCreated notice
        (reference 12.5) in its log, so every member, offline ones too, is told."""
        group = self.channels.create_group(owner_id, name, description, member_ids)
        creator = self.name(owner_id)
        self._notify(
            group,
            "group_created",
            f"{creator} created the group {group.name}",
            {
                "group_name": group.name,
                "creator_id": owner_id,
                "creator_name": creator,
                "member_count": len(group.members),
            },
        )
        return group

    def _join(self, group: Channel, user_id: int, role: int, inviter: int) -> Member:
        """Add a member (checked: not one yet, room for one) and tell the group."""
        if len(group.members) >= group.max_members:
            raise ServiceError(ErrorCode.GROUP_FULL, "group full")
        member = self._store.add_member(group.channel_id, user_id, role, self._clock())
        self._bump_member(group.channel_id, user_id, joined=True)
        username = self.name(user_id)
        if inviter:
            text = f"{self.name(inviter)} added {username} to the group"
        else:
            text = f"{username} joined the group"
        self._notify(
            group,
            "group_member_joined",
            text,
            {
                "group_name": group.name,
                "user_id": user_id,
                "username": self.username(user_id),
                "invited_by": inviter or None,
                "inviter_name": self.name(inviter) if inviter else None,
                "role": ROLE_NAMES[role],
            },
        )
        return member

    def add_member(self, operator: int, group_id: int, user_id: int, role: str | None) -> bool:
        """``group/member/add``: True once ``user_id`` is a member, False when the group needs
        approval and the invitation waits as a join request (an owner's or admin's invitation
        needs none). Members may invite only while ``member_can_invite``; only the owner adds
        admins."""
        group = self.group(group_id)
        op = self._operator(group, operator)
        wanted = ROLE_MEMBER
        if role is not None:
            role_l = role.lower()
            if role_l not in ("member", "admin"):
                raise InvalidParams("role must be member or admin")
            if role_l == "admin":
                if op.role != ROLE_OWNER:
                    raise ServiceError(ErrorCode.NOT_GROUP_OWNER, "only the owner adds admins")
                wanted = ROLE_ADMIN
        if op.role == ROLE_MEMBER and not group.member_can_invite:
            raise ServiceError(ErrorCode.NOT_GROUP_ADMIN, "members may not invite to this group")
        self.channels.user(user_id)
        if user_id in group.members:
            raise ServiceError(ErrorCode.MEMBER_ALREADY_IN_GROUP, "already a member")
        if op.role == ROLE_MEMBER and group.join_need_approval:
            self._request_join(group, user_id, operator, "", None)
            return False
        self._join(group, user_id, wanted, operator)
        return True

    def _request_join(
        self, group: Channel, user_id: int, inviter: int, qr_key: str, message: str | None
    ) -> tuple[JoinRequest, bool]:
        """A pending join request, and whether it is new (else the user's pending one)."""
        now = self._clock()
        for req in self._store.pending_join_requests(group.channel_id, MAX_PENDING_LISTED):
            if req.user_id == user_id and req.expires_at > now:
                return req, False
        req = self._store.add_join_request(
            group.channel_id, user_id, inviter, qr_key, message, now, now + JOIN_REQUEST_TTL_MS
        )
        return req, True

    def remove_member(self, operator: int, group_id: int, user_id: int) -> None:
        """``group/member/remove``: the owner removes anyone but themself, an admin removes
        members; the owner is never removed (10004)."""
        group = self.group(group_id)
        op = self._operator(group, operator)
        target = self._target(group, user_id)
        if target.role == ROLE_OWNER:
            raise ServiceError(ErrorCode.PERMISSION_DENIED, "Cannot remove group owner")
        if op.role == ROLE_MEMBER or (op.role == ROLE_ADMIN and target.role != ROLE_MEMBER):
            raise ServiceError(ErrorCode.NOT_GROUP_ADMIN, "not allowed to remove this member")
        self._store.remove_member(group_id, user_id)
        self._bump_group(group_id)
        self._bump_member(group_id, user_id, deleted=True)
        username = self.name(user_id)
        kicker = self.name(operator)
        self._notify(
            group,
            "group_member_kicked",
            f"{kicker} removed {username} from the group",
            {
                "group_name": group.name,
                "user_id": user_id,
                "username": self.username(user_id),
                "kicked_by": operator,
                "kicker_name": kicker,
                "reason": None,
            },
            also=(user_id,),
        )

    def leave(self, user_id: int, group_id: int) -> bool:
        """``group/member/leave``: a member leaves; the owner only as the last member (else
        10004: transfer the ownership first). The last member's leaving dissolves the group:
        it is no longer found (20300), its id is never reused. True if it was dissolved."""
        group = self.group(group_id)
        member = self._operator(group, user_id)
        if member.role == ROLE_OWNER and len(group.members) > 1:
            raise ServiceError(
                ErrorCode.PERMISSION_DENIED, "the owner must transfer ownership before leaving"
            )
        username = self.name(user_id)
        if len(group.members) == 1:
            now = self._clock()
            self._bump_member(group_id, user_id, deleted=True)
            self._bump_group(group_id, deleted=True, former=(user_id,))
            self._store.dissolve_group(group_id, now)
            return True
        self._store.remove_member(group_id, user_id)
        self._bump_group(group_id)
        self._bump_member(group_id, user_id, deleted=True)
        self._notify(
            group,
            "group_member_left",
            f"{username} left the group",
            {"group_name": group.name, "user_id": user_id, "username": self.username(user_id)},
            also=(user_id,),
        )
        return False

    # ---- mutes ---------------------------------------------------------------------------------
    def mute(self, operator: int, group_id: int, user_id: int, seconds: int) -> int:
        """``group/member/mute`` for ``seconds`` (0: until unmuted); the operator must be an
        admin or the owner and outrank the target. Returns the end in unix ms (0: permanent)."""
        if seconds > MAX_MUTE_S:
            raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, "mute_duration out of range")
        group = self.group(group_id)
        op = self._admin(group, operator)
        target = self._target(group, user_id)
        if not _outranks(op, target):
            raise ServiceError(ErrorCode.PERMISSION_DENIED, "not allowed to mute this member")
        until = -1 if seconds == 0 else self._clock() + seconds * 1000
        self._store.set_member_mute(group_id, user_id, until)
        self._bump_member(group_id, user_id)
        username = self.name(user_id)
        muter = self.name(operator)
        self._notify(
            group,
            "group_member_muted",
            f"{muter} muted {username}",
            {
                "group_name": group.name,
                "user_id": user_id,
                "username": self.username(user_id),
                "duration_seconds": seconds,
                "mute_until": max(until, 0),
                "muted_by": operator,
                "muter_name": muter,
                "reason": None,
            },
        )
        return max(until, 0)

    def unmute(self, operator: int, group_id: int, user_id: int) -> None:
        group = self.group(group_id)
        op = self._admin(group, operator)
        target = self._target(group, user_id)
        if not _outranks(op, target):
            raise ServiceError(ErrorCode.PERMISSION_DENIED, "not allowed to unmute this member")
        self._store.set_member_mute(group_id, user_id, 0)
        self._bump_member(group_id, user_id)
        username = self.name(user_id)
        unmuter = self.name(operator)
        self._notify(
            group,
            "group_member_unmuted",
            f"{unmuter} unmuted {username}",
            {
                "group_name": group.name,
                "user_id": user_id,
                "username": self.username(user_id),
                "unmuted_by": operator,
                "unmuter_name": unmuter,
            },
        )

    # ---- roles ---------------------------------------------------------------------------------
    def transfer_owner(self, operator: int, group_id: int, new_owner: int) -> int:
        """``group/role/transfer_owner``: the owner hands the group to another member and
        becomes an admin. Returns the time (unix ms)."""
        group = self.group(group_id)
        self._owner(group, operator)
        if new_owner == operator:
            raise InvalidParams("new_owner_id is the current owner")
        self._target(group, new_owner)
        now = self._clock()
        self._store.set_member_role(group_id, new_owner, ROLE_OWNER, now)
        self._store.set_member_role(group_id, operator, ROLE_ADMIN, now)
        self._store.update_group(group_id, {"owner_id": new_owner}, now)
        self._bump_group(group_id)
        self._bump_member(group_id, new_owner)
        self._bump_member(group_id, operator)
        old_name = self.name(operator)
        new_name = self.name(new_owner)
        self._notify(
            group,
            "group_owner_transferred",
            f"{old_name} made {new_name} the owner of the group",
            {
                "group_name": group.name,
                "old_owner_id": operator,
                "old_owner_name": old_name,
                "new_owner_id": new_owner,
                "new_owner_name": new_name,
            },
        )
        return now

    def set_role(self, operator: int, group_id: int, user_id: int, role: str) -> tuple[str, int]:
        """``group/role/set`` ("admin" or "member"): the owner's. Returns (role, unix ms)."""
        role_l = role.lower()
        if role_l not in ("admin", "member"):
            raise InvalidParams("role must be admin or member")
        group = self.group(group_id)
        self._owner(group, operator)
        target = self._target(group, user_id)
        if target.role == ROLE_OWNER:
            raise ServiceError(ErrorCode.PERMISSION_DENIED, "the owner's role is not set")
        wanted = ROLE_ADMIN if role_l == "admin" else ROLE_MEMBER
        now = self._clock()
        if target.role != wanted:
            self._store.set_member_role(group_id, user_id, wanted, now)
            self._bump_member(group_id, user_id)
            username = self.name(user_id)
            by = self.name(operator)
            if wanted == ROLE_ADMIN:
                kind, text = "group_admin_added", f"{by} made {username} an admin"
                data: dict[str, Any] = {"added_by": operator, "adder_name": by}
            else:
                kind, text = "group_admin_removed", f"{by} removed {username} as an admin"
                data = {"removed_by": operator, "remover_name": by}
            data.update(
                {"group_name": group.name, "user_id": user_id, "username": self.username(user_id)}
            )
            self._notify(group, kind, text, data)
        return role_l, now

    # ---- settings ------------------------------------------------------------------------------
    def update_settings(
        self, operator: int, group_id: int, changes: Mapping[str, object]
    ) -> Channel:
        """``group/settings/update``: the owner's or an admin's; ``changes`` were checked for
        type by the route. ``max_members`` must hold the members (and the server's limit)."""
        group = self.group(group_id)
        self._admin(group, operator)
        if "max_members" in changes:
            value = changes["max_members"]
            assert isinstance(value, int)
            if not len(group.members) <= value <= self.settings.max_group_members:
                raise ServiceError(
                    ErrorCode.PARAM_OUT_OF_RANGE,
                    "max_members must hold the members and be within the server's limit",
                )
        old_announcement = group.announcement
        group = self._store.update_group(group_id, changes, self._clock())
        self._bump_group(group_id)
        if "announcement" in changes and group.announcement != old_announcement:
            by = self.name(operator)
            self._notify(
                group,
                "group_announcement_changed",
                f"{by} changed the announcement",
                {
                    "group_name": group.name,
                    "announcement": group.announcement or "",
                    "changed_by": operator,
                    "changer_name": by,
                },
            )
        return group

    def mute_all(self, operator: int, group_id: int, muted: bool) -> Channel:
        """``group/settings/mute_all``: while on, only the owner and admins send (20306)."""
        group = self.group(group_id)
        self._admin(group, operator)
        group = self._store.update_group(group_id, {"all_muted": muted}, self._clock())
        self._bump_group(group_id)
        by = self.name(operator)
        self._notify(
            group,
            "group_all_muted" if muted else "group_all_unmuted",
            f"{by} {'muted' if muted else 'unmuted'} all members",
            {"group_name": group.name, "all_muted": muted, "changed_by": operator},
        )
        return group

    # ---- join approval -------------------------------------------------------------------------
    def pending(self, operator: int, group_id: int) -> list[JoinRequest]:
        """``group/approval/list``: the pending, unexpired requests, oldest first."""
        group = self.group(group_id)
        self._admin(group, operator)
        now = self._clock()
        return [
            r
            for r in self._store.pending_join_requests(group_id, MAX_PENDING_LISTED)
            if r.expires_at > now
        ]

    def handle_request(self, operator: int, request_id: int, approve: bool) -> JoinRequest:
        """``group/approval/handle``: the owner or an admin of the request's group approves
        (the user joins) or rejects a pending request."""
        req = self._store.get_join_request(request_id)
        if req is None:
            raise ServiceError(RESOURCE_NOT_FOUND, "join request not found")
        group = self.group(req.group_id)
        self._admin(group, operator)
        if req.status != JOIN_PENDING:
            raise ServiceError(ErrorCode.DUPLICATE_OPERATION, "join request already handled")
        now = self._clock()
        if req.expires_at <= now:
            raise ServiceError(ErrorCode.OPERATION_NOT_ALLOWED, "join request expired")
        if approve and req.user_id not in group.members:
            if len(group.members) >= group.max_members:
                raise ServiceError(ErrorCode.GROUP_FULL, "group full")
            self._store.resolve_join_request(request_id, True, operator, now)
            self._join(group, req.user_id, ROLE_MEMBER, req.inviter_id)
        else:
            self._store.resolve_join_request(request_id, approve, operator, now)
        got = self._store.get_join_request(request_id)
        assert got is not None
        return got

    # ---- QR codes ------------------------------------------------------------------------------
    def make_qr(self, operator: int, group_id: int, expire_seconds: int, max_usage: int) -> QRCode:
        """``group/qrcode/generate``: a join code valid ``expire_seconds`` (0: the default)
        for ``max_usage`` joins (0: unlimited). The owner's and admins'; members' too while
        ``member_can_invite``."""
        if expire_seconds > QR_MAX_TTL_S:
            raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, "expire_seconds out of range")
        if max_usage > QR_MAX_USAGE:
            raise ServiceError(ErrorCode.PARAM_OUT_OF_RANGE, "max_usage out of range")
        group = self.group(group_id)
        op = self._operator(group, operator)
        if op.role == ROLE_MEMBER and not group.member_can_invite:
            raise ServiceError(ErrorCode.NOT_GROUP_ADMIN, "members may not invite to this group")
        now = self._clock()
        code = QRCode(
            qr_key=secrets.token_urlsafe(16),
            qr_type=QR_TYPE_GROUP,
            target_id=group_id,
            creator_id=operator,
            token=secrets.token_urlsafe(16),
            created_at=now,
            expire_at=now + (expire_seconds or QR_DEFAULT_TTL_S) * 1000,
            max_usage=max_usage,
        )
        self._store.put_qrcode(code)
        return code

    def join_by_qr(
        self, user_id: int, qr_key: str, token: str | None, message: str | None
    ) -> JoinResult:
        """``group/join/qrcode``: join the group (or ask to, when it needs approval) with a
        code that is not revoked, expired or used up; a wrong token is a code not found."""
        code = self._store.get_qrcode(qr_key)
        if (
            code is None
            or code.qr_type != QR_TYPE_GROUP
            or (token is not None and not hmac.compare_digest(token, code.token))
        ):
            raise ServiceError(QR_CODE_NOT_FOUND, "QR code not found")
        now = self._clock()
        if code.revoked_at:
            raise ServiceError(QR_CODE_REVOKED, "QR code revoked")
        if code.expire_at and code.expire_at <= now:
            raise ServiceError(QR_CODE_EXPIRED, "QR code expired")
        if code.max_usage and code.used_count >= code.max_usage:
            raise ServiceError(QR_CODE_LIMIT_EXCEEDED, "QR code limit exceeded")
        group = self.group(code.target_id)
        if user_id in group.members:
            raise ServiceError(ErrorCode.MEMBER_ALREADY_IN_GROUP, "already a member")
        if group.join_need_approval:
            req, new = self._request_join(group, user_id, 0, qr_key, message)
            if new:
                self._use(code)
            return JoinResult(group.channel_id, user_id, False, request=req)
        member = self._join(group, user_id, ROLE_MEMBER, 0)
        self._use(code)
        return JoinResult(group.channel_id, user_id, True, joined_at=member.joined_at)

    def _use(self, code: QRCode) -> None:
        self._store.put_qrcode(dataclasses.replace(code, used_count=code.used_count + 1))

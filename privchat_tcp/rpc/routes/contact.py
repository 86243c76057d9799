"""``contact/*``: friend requests and friendships, blacklists (reference 7.2).

The rules are ``service/social.py``'s; a route parses every key it reads first, then calls
the service. The ids PrivChat marks server-filled are validated and ignored (the caller is the
session's user); ``user_id`` of ``contact/blacklist/*`` and ``target_user_id`` of
``contact/friend/reject``, which PrivChat does read, must name the caller (10004 otherwise).
"""

from __future__ import annotations

from typing import Any

from ...errors import ErrorCode, ServiceError
from ..params import opt_text, opt_u64, u64
from ..table import RouteTable, RpcContext
from ..views import iso, searched_user

routes = RouteTable()


def _self(ctx: RpcContext, body: dict[str, Any], key: str) -> None:
    """A key that names the acting user: absent, 0 or the caller."""
    value = opt_u64(body, key)
    if value and value != ctx.user_id:
        raise ServiceError(ErrorCode.PERMISSION_DENIED, f"{key} must be your own id")


@routes.route(
    "contact/friend/apply",
    keys=("target_user_id", "message", "source", "source_id", "from_user_id"),
)
def friend_apply(ctx: RpcContext, body: dict[str, Any]) -> Any:
    target_id = u64(body, "target_user_id")
    message = opt_text(body, "message", 256, multiline=True)
    source = opt_text(body, "source", 32)
    source_id = opt_text(body, "source_id", 64)
    opt_u64(body, "from_user_id")
    target, request = ctx.services.social.apply(ctx.user_id, target_id, message, source, source_id)
    return {
        "user_id": target.user_id,
        "username": target.username,
        "status": "pending",
        "added_at": iso(request.created_at),
        "message": request.message,
    }


@routes.route("contact/friend/accept", keys=("from_user_id", "message", "target_user_id"))
def friend_accept(ctx: RpcContext, body: dict[str, Any]) -> Any:
    applicant = u64(body, "from_user_id")
    opt_text(body, "message", 256, multiline=True)
    opt_u64(body, "target_user_id")
    return ctx.services.social.accept(ctx.user_id, applicant).channel_id


@routes.route("contact/friend/reject", keys=("from_user_id", "target_user_id", "message"))
def friend_reject(ctx: RpcContext, body: dict[str, Any]) -> Any:
    applicant = u64(body, "from_user_id")
    opt_text(body, "message", 256, multiline=True)
    _self(ctx, body, "target_user_id")
    ctx.services.social.reject(ctx.user_id, applicant)
    return True


@routes.route("contact/friend/remove", keys=("friend_id", "user_id"))
def friend_remove(ctx: RpcContext, body: dict[str, Any]) -> Any:
    friend = u64(body, "friend_id")
    opt_u64(body, "user_id")
    ctx.services.social.remove(ctx.user_id, friend)
    return True


@routes.route("contact/friend/pending", keys=("user_id",))
def friend_pending(ctx: RpcContext, body: dict[str, Any]) -> Any:
    opt_u64(body, "user_id")
    services = ctx.services
    items = []
    for req in services.social.pending(ctx.user_id):
        applicant = services.accounts.get(req.from_user_id)
        item: dict[str, Any] = {
            "from_user_id": req.from_user_id,
            "created_at": iso(req.created_at),
        }
        if req.message is not None:
            item["message"] = req.message
        if applicant is not None:
            item["user"] = searched_user(services, ctx.user_id, applicant, 0)
        items.append(item)
    return {"requests": items, "total": len(items)}


@routes.route("contact/friend/check", keys=("friend_id", "user_id"))
def friend_check(ctx: RpcContext, body: dict[str, Any]) -> Any:
    other = u64(body, "friend_id")
    opt_u64(body, "user_id")
    social = ctx.services.social
    social.user(other)
    status = social.status(ctx.user_id, other)
    return {"is_friend": status == "accepted", "status": status}


@routes.route("contact/blacklist/add", keys=("user_id", "blocked_user_id"))
def blacklist_add(ctx: RpcContext, body: dict[str, Any]) -> Any:
    target = u64(body, "blocked_user_id")
    _self(ctx, body, "user_id")
    ctx.services.social.block(ctx.user_id, target)
    return True


@routes.route("contact/blacklist/remove", keys=("user_id", "blocked_user_id"))
def blacklist_remove(ctx: RpcContext, body: dict[str, Any]) -> Any:
    target = u64(body, "blocked_user_id")
    _self(ctx, body, "user_id")
    ctx.services.social.unblock(ctx.user_id, target)
    return True


@routes.route("contact/blacklist/list", keys=("user_id",))
def blacklist_list(ctx: RpcContext, body: dict[str, Any]) -> Any:
    _self(ctx, body, "user_id")
    services = ctx.services
    users = []
    for uid, when in services.social.blacklist(ctx.user_id):
        user = services.accounts.get(uid)
        users.append(
            {
                "user_id": uid,
                "username": user.username if user else f"user_{uid}",
                "nickname": user.nickname if user else None,
                "avatar_url": user.avatar_url if user else None,
                "blocked_at": when,
            }
        )
    return {"users": users, "total": len(users)}


@routes.route("contact/blacklist/check", keys=("user_id", "target_user_id"))
def blacklist_check(ctx: RpcContext, body: dict[str, Any]) -> Any:
    target = u64(body, "target_user_id")
    _self(ctx, body, "user_id")
    return {"is_blocked": ctx.services.social.is_blocked(ctx.user_id, target)}

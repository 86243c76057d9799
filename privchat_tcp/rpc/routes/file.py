"""``file/*``: upload tokens, the client's word on its upload, and checking a token.

The upload itself is HTTP, on the file listener (``net/files_http.py``): the token answered
here goes in its ``X-Upload-Token`` header."""

from __future__ import annotations

from typing import Any

from ...errors import ErrorCode, ServiceError, Status
from ..params import opt_text, opt_u64, text, u64
from ..table import RouteTable, RpcContext

routes = RouteTable()

UPLOAD_PATH = "/api/app/files/upload"  # the file listener's (net/files_http.py)


def _caller_only(ctx: RpcContext, body: dict[str, Any]) -> None:
    """``user_id`` may be sent (the reference's structs have it); it must be the caller."""
    user_id = opt_u64(body, "user_id")
    if user_id and user_id != ctx.user_id:
        raise ServiceError(ErrorCode.PERMISSION_DENIED, "user_id is not you")


@routes.route(
    "file/request_upload_token",
    keys=("user_id", "filename", "file_size", "mime_type", "file_type", "business_type"),
)
def request_upload_token(ctx: RpcContext, body: dict[str, Any]) -> Any:
    filename = opt_text(body, "filename", 255)
    file_size = u64(body, "file_size")
    mime_type = text(body, "mime_type", 128)
    file_type = text(body, "file_type", 16)
    business_type = text(body, "business_type", 32)
    _caller_only(ctx, body)
    base = ctx.settings.file_base_url
    if not base:
        raise ServiceError(
            ErrorCode.SERVICE_UNAVAILABLE, "file uploads are off (file_port)", Status.UNSUPPORTED
        )
    record, token = ctx.services.files.request_upload(
        ctx.user_id, filename, file_size, mime_type, file_type, business_type
    )
    return {
        "token": token,
        "upload_url": base + UPLOAD_PATH,
        "file_id": str(record.file_id),
        "expires_at": record.expires_at,
        "max_size": record.max_size,
    }


@routes.route("file/upload_callback", keys=("file_id", "user_id", "status"))
def upload_callback(ctx: RpcContext, body: dict[str, Any]) -> Any:
    file_id = u64(body, "file_id")
    status = text(body, "status", 32)
    _caller_only(ctx, body)
    return ctx.services.files.callback(ctx.user_id, file_id, status)


@routes.route("file/validate_token", keys=("token",))
def validate_token(ctx: RpcContext, body: dict[str, Any]) -> Any:
    """Whether an upload token is good for an upload now (server-only in PrivChat 0.1; here
    for the token's owner): 20604 if not, 20605 once expired."""
    token = text(body, "token", 256)
    record = ctx.services.files.check_token(token)
    if record.owner_id != ctx.user_id:
        raise ServiceError(ErrorCode.UPLOAD_TOKEN_INVALID, "upload token invalid")
    return {
        "valid": True,
        "file_id": str(record.file_id),
        "user_id": record.owner_id,
        "file_size": record.max_size,
        "mime_type": record.mime_type,
        "file_type": record.file_type,
        "business_type": record.business_type,
        "expires_at": record.expires_at,
    }

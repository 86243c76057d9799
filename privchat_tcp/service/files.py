"""Files: upload tokens, what an upload must be, what a download may see, and the rule that a
message's ``file_id`` names a file its sender uploaded.

The bytes travel over HTTP (``net/files_http.py``, on its own port) and live in the data
directory; this module holds the rules over ``FileStore`` and does no I/O. A token is
``"<file_id>.<random>"``; the store keeps only the SHA-256 of its random part, so a copy of
the database does not hold usable tokens. A download names the file and a random key (the
capability in ``file_url``), kept hashed as well.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable

from ..config import Settings
from ..errors import ErrorCode, InvalidParams, ServiceError
from .model import FILE_CONFIRMED, FILE_FAILED, FILE_PENDING, FILE_UPLOADED, FileRecord
from .ports import FileStore

__all__ = [
    "FileService",
    "FILE_TYPES",
    "IMAGE_TYPES",
    "FILE_MESSAGE_TYPES",
    "sniff_image",
    "digest",
]

FILE_TYPES = ("image", "video", "audio", "file", "other")
#: image types an ``image`` upload may have; its first bytes must match (``sniff_image``)
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
#: types never accepted: a browser would run them from the file listener's origin
BLOCKED_TYPES = frozenset(
    (
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
        "text/xml",
        "application/xml",
    )
)
#: 0.1.1 ContentMessageType values whose metadata names a file: image, file, voice, video, audio
FILE_MESSAGE_TYPES = frozenset((1, 2, 3, 4, 6))
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")
_BUSINESS = re.compile(r"[a-z][a-z0-9_]{0,31}")
_TOKEN = re.compile(r"([0-9]{1,19})\.([A-Za-z0-9_-]{16,64})")
_KEY = re.compile(r"[A-Za-z0-9_-]{16,64}")
#: callback statuses: the upload worked / the client gave up
_DONE = frozenset(("success", "uploaded", "completed", "done"))
_FAILED = frozenset(("failed", "failure", "cancelled", "canceled", "error"))


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def sniff_image(mime_type: str, head: bytes) -> bool:
    """Whether the first bytes of a file are those of an image of ``mime_type``."""
    if mime_type == "image/png":
        return head.startswith(b"\x89PNG\r\n\x1a\n")
    if mime_type == "image/jpeg":
        return head.startswith(b"\xff\xd8\xff")
    if mime_type == "image/gif":
        return head.startswith((b"GIF87a", b"GIF89a"))
    if mime_type == "image/webp":
        return len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    return False


def image_size(mime_type: str, head: bytes) -> tuple[int, int]:
    """(width, height) read from an image's header, (0, 0) when not found in ``head``."""
    if mime_type == "image/png" and len(head) >= 24 and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if mime_type == "image/gif" and len(head) >= 10:
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    return 0, 0


class FileService:
    def __init__(self, settings: Settings, store: FileStore, clock: Callable[[], int]) -> None:
        self.settings = settings
        self._store = store
        self._clock = clock
        #: files whose upload is running (one upload per token at a time)
        self._uploading: set[int] = set()

    # ---- file/request_upload_token -------------------------------------------------------------
    def request_upload(
        self,
        owner_id: int,
        filename: str | None,
        file_size: int,
        mime_type: str,
        file_type: str,
        business_type: str,
    ) -> tuple[FileRecord, str]:
        """A new pending file and its upload token. Refused: a size over ``max_file_size``
        (20602), a type the file type does not allow (20603)."""
        mime = mime_type.strip().lower()
        if not _MIME.fullmatch(mime):
            raise InvalidParams("mime_type must be type/subtype")
        if file_type not in FILE_TYPES:
            raise InvalidParams("file_type must be image, video, audio, file or other")
        if not _BUSINESS.fullmatch(business_type):
            raise InvalidParams("business_type must be a short lower-case name")
        if file_size <= 0:
            raise InvalidParams("file_size must be positive")
        if file_size > self.settings.max_file_size:
            raise ServiceError(ErrorCode.FILE_TOO_LARGE, "file too large")
        self.check_type(file_type, mime)
        name = _clean_name(filename or "", mime)
        secret = secrets.token_urlsafe(24)
        now = self._clock()
        record = self._store.create_file(
            owner_id,
            name,
            mime,
            file_type,
            business_type,
            file_size,
            digest(secret),
            now + self.settings.file_token_ttl * 1000,
            now,
        )
        token = f"{record.file_id}.{secret}"
        return record, token

    def check_type(self, file_type: str, mime: str) -> None:
        major = mime.split("/", 1)[0]
        if mime in BLOCKED_TYPES:
            raise ServiceError(ErrorCode.FILE_TYPE_NOT_ALLOWED, "file type not allowed")
        if file_type == "image" and mime not in IMAGE_TYPES:
            raise ServiceError(ErrorCode.FILE_TYPE_NOT_ALLOWED, "not an allowed image type")
        if file_type in ("video", "audio") and major != file_type:
            raise ServiceError(ErrorCode.FILE_TYPE_NOT_ALLOWED, f"not a {file_type} type")

    # ---- tokens (file/validate_token and the upload) -------------------------------------------
    def check_token(self, token: str) -> FileRecord:
        """The pending file an upload token names. 20604 for a token that names nothing (or
        a spent one), 20605 past its expiry."""
        m = _TOKEN.fullmatch(token)
        record = self._store.get_file(int(m.group(1))) if m else None
        if (
            m is None
            or record is None
            or not hmac.compare_digest(record.token_hash, digest(m.group(2)))
        ):
            raise ServiceError(ErrorCode.UPLOAD_TOKEN_INVALID, "upload token invalid")
        if record.status != FILE_PENDING:
            raise ServiceError(ErrorCode.UPLOAD_TOKEN_INVALID, "upload token already used")
        if self._clock() > record.expires_at:
            raise ServiceError(ErrorCode.UPLOAD_TOKEN_EXPIRED, "upload token expired")
        return record

    def begin_upload(self, token: str) -> FileRecord:
        """Check the token and mark its file as being uploaded (a second upload with the same
        token meanwhile: 20604). ``end_upload`` must follow."""
        record = self.check_token(token)
        if record.file_id in self._uploading:
            raise ServiceError(ErrorCode.UPLOAD_TOKEN_INVALID, "an upload with this token runs")
        self._uploading.add(record.file_id)
        return record

    def end_upload(self, file_id: int) -> None:
        self._uploading.discard(file_id)

    def finish_upload(
        self, file_id: int, size: int, sha256: str, width: int = 0, height: int = 0
    ) -> tuple[FileRecord, str]:
        """The bytes are stored: the file is UPLOADED (its token spent). Returns the file
        and its download key."""
        key = secrets.token_urlsafe(18)
        record = self._store.update_file(
            file_id,
            {
                "status": FILE_UPLOADED,
                "size": size,
                "sha256": sha256,
                "access_hash": digest(key),
                "uploaded_at": self._clock(),
                "width": width,
                "height": height,
            },
        )
        return record, key

    # ---- file/upload_callback ------------------------------------------------------------------
    def callback(self, user_id: int, file_id: int, status: str) -> bool:
        """The client's word on its upload: done (the file must be uploaded: 20601 if not)
        or failed (a pending file's token is spent). Someone else's file: 20600."""
        record = self._store.get_file(file_id)
        if record is None or record.owner_id != user_id:
            raise ServiceError(ErrorCode.FILE_NOT_FOUND, "file not found")
        word = status.strip().lower()
        if word in _DONE:
            if record.status == FILE_CONFIRMED:
                return True
            if record.status != FILE_UPLOADED:
                raise ServiceError(ErrorCode.FILE_UPLOAD_FAILED, "the file was not uploaded")
            self._store.update_file(file_id, {"status": FILE_CONFIRMED})
            return True
        if word in _FAILED:
            if record.status == FILE_PENDING and file_id not in self._uploading:
                self._store.update_file(file_id, {"status": FILE_FAILED})
            return True
        raise InvalidParams("status must be success or failed")

    # ---- downloads -----------------------------------------------------------------------------
    def downloadable(self, file_id: int, key: str) -> FileRecord | None:
        """The stored file that ``key`` opens, or None (unknown, not uploaded, wrong key:
        the same answer, so ids cannot be probed)."""
        record = self._store.get_file(file_id)
        if record is None or record.status not in (FILE_UPLOADED, FILE_CONFIRMED):
            return None
        if not _KEY.fullmatch(key) or not hmac.compare_digest(record.access_hash, digest(key)):
            return None
        return record

    def get(self, file_id: int) -> FileRecord | None:
        return self._store.get_file(file_id)

    # ---- messages ------------------------------------------------------------------------------
    #: the message types ``check_message`` reads (``FileRules``)
    message_types = FILE_MESSAGE_TYPES

    def check_message(self, sender: int, message_type: int, payload: bytes, e2e: bool) -> None:
        """A message of a file type whose envelope's ``metadata.file_id`` is given must name
        a file the sender uploaded (reference 10.2); 20006 otherwise. Other messages, and
        end-to-end ones (the server cannot read them), pass at the cost of one set lookup."""
        if message_type not in FILE_MESSAGE_TYPES or e2e or payload.lstrip()[:1] != b"{":
            return
        try:
            envelope = json.loads(payload)
        except (ValueError, RecursionError):
            return  # not an envelope: the views show it as text
        metadata = envelope.get("metadata") if isinstance(envelope, dict) else None
        if not isinstance(metadata, dict) or metadata.get("file_id") is None:
            return
        raw = metadata["file_id"]
        if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 20:
            raw = int(raw)
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ServiceError(ErrorCode.MESSAGE_CONTENT_INVALID, "metadata.file_id is not an id")
        record = self._store.get_file(raw)
        if (
            record is None
            or record.owner_id != sender
            or record.status not in (FILE_UPLOADED, FILE_CONFIRMED)
        ):
            raise ServiceError(
                ErrorCode.MESSAGE_CONTENT_INVALID, "metadata.file_id is not a file you uploaded"
            )


def _clean_name(name: str, mime: str) -> str:
    """A file name fit for a Content-Disposition header: no path, no control characters,
    at most 255 characters; "file" when nothing is left."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '"')
    name = name.strip(" .")[:255]
    return name or "file"

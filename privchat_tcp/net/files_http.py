"""The HTTP file listener (aiohttp): uploads with a token, downloads, sticker images.

``file_host:file_port`` (off when the port is 0). The routes (reference 7.5):

- ``POST /api/app/files/upload``: header ``X-Upload-Token`` (from ``file/request_upload_token``),
  a ``multipart/form-data`` body with the field ``file`` (and optionally ``business_id``).
  The token is checked before a byte of the body is read; the file is streamed to disk in
  64 KiB chunks (memory per upload is bounded by that, whatever the file's size), counted
  against the token's ``file_size`` (413 past it) and checked against its type (415: another
  Content-Type, or an image whose first bytes are not of that image type). It is fsynced and
  renamed to ``<files dir>/<file_id>``; the file's record is then UPLOADED and the answer
  waits until that is durable. Answer: ``{file_id, file_url, thumbnail_url, file_size,
  original_size, width, height, mime_type}``; ``file_url`` carries the download key.
- ``GET /api/app/files/<file_id>?key=<key>``: the file, with its type, ``Content-Length``,
  ``Content-Disposition`` (inline for images, video and audio; attachment otherwise, with the
  name it was uploaded with), ``X-Content-Type-Options: nosniff`` and a sandboxing CSP; Range
  requests work. A wrong key, an unknown id and a file not yet uploaded all answer 404.
- ``GET /api/app/stickers/<package_id>/<file>``: an image of the sticker catalogue.

Errors are JSON ``{code, message}`` with the PrivChat code (20604 invalid token 401, 20605
expired 401, 20602 too large 413, 20603 wrong type 415, 10100 malformed 400, 2 busy 503).
At most ``file_uploads`` uploads run at once; an upload that sends nothing for
``file_read_timeout`` seconds is dropped. No access log: URLs carry download keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import pathlib
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web

from ..errors import ErrorCode, ServiceError
from ..service.files import IMAGE_TYPES, image_size, sniff_image
from ..service.stickers import STICKER_PATH
from ..session.session import FAILURES

if TYPE_CHECKING:
    from ..config import Settings
    from ..service import Services

__all__ = ["FileServer", "UPLOAD_PATH", "FILES_PATH"]

log = logging.getLogger("privchat_tcp.files")

UPLOAD_PATH = "/api/app/files/upload"
FILES_PATH = "/api/app/files"
CHUNK = 64 << 10
#: a multipart body's framing (boundaries, part headers) beyond the file itself
MULTIPART_SLACK = 64 << 10
MAX_PARTS = 4
MAX_FIELD = 256
_HEAD = 32  # bytes kept to check an image's type and read its size

_HTTP_STATUS = {
    ErrorCode.UPLOAD_TOKEN_INVALID: 401,
    ErrorCode.UPLOAD_TOKEN_EXPIRED: 401,
    ErrorCode.FILE_TOO_LARGE: 413,
    ErrorCode.FILE_TYPE_NOT_ALLOWED: 415,
    ErrorCode.SYSTEM_BUSY: 503,
    ErrorCode.FILE_NOT_FOUND: 404,
}


class _Refused(Exception):
    def __init__(self, http: int, code: int, message: str) -> None:
        super().__init__(message)
        self.http = http
        self.code = code
        self.message = message


def _error(http: int, code: int, message: str) -> web.Response:
    headers = {"Retry-After": "1"} if http == 503 else None
    return web.json_response({"code": code, "message": message}, status=http, headers=headers)


class FileServer:
    """The listener; ``root`` is the directory the files live in (``<id>`` each, ``tmp/``
    for uploads under way)."""

    def __init__(
        self,
        services: Services,
        settings: Settings,
        root: pathlib.Path,
    ) -> None:
        self.services = services
        self.settings = settings
        self.root = root
        self.host = settings.file_host
        self.port = settings.file_port
        self.running = 0  # uploads under way
        self.uploads = 0  # completed
        self._runner: web.AppRunner | None = None
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        for stale in (root / "tmp").iterdir():  # uploads a crash interrupted
            try:
                stale.unlink()
            except OSError:
                pass

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(UPLOAD_PATH, self.upload)
        app.router.add_get(FILES_PATH + "/{file_id}", self.download)
        app.router.add_get(STICKER_PATH + "/{package_id}/{file}", self.sticker)
        return app

    async def start(self) -> FileServer:
        runner = web.AppRunner(self.app(), access_log=None, keepalive_timeout=15.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        await site.start()
        self._runner = runner
        if runner.addresses:
            self.port = int(runner.addresses[0][1])
        log.info("file HTTP listener on %s:%d (files in %s)", self.host, self.port, self.root)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- upload --------------------------------------------------------------------------------
    async def upload(self, request: web.Request) -> web.StreamResponse:
        if self.running >= self.settings.file_uploads:
            return _error(503, ErrorCode.SYSTEM_BUSY, "too many uploads; retry later")
        token = request.headers.get("X-Upload-Token", "")
        files = self.services.files
        try:
            record = files.begin_upload(token[:256])
        except ServiceError as exc:
            return _error(_HTTP_STATUS.get(exc.code, 400), exc.code, exc.message)
        self.running += 1
        tmp: pathlib.Path | None = None
        try:
            limit = record.max_size
            length = request.content_length
            if length is not None and length > limit + MULTIPART_SLACK:
                raise _Refused(413, ErrorCode.FILE_TOO_LARGE, "file too large")
            if request.content_type != "multipart/form-data":
                raise _Refused(
                    415, ErrorCode.INVALID_PARAMS, "the body must be multipart/form-data"
                )
            try:
                reader = await request.multipart()
            except (ValueError, AssertionError, KeyError):
                raise _Refused(400, ErrorCode.INVALID_PARAMS, "malformed multipart body") from None
            tmp = self.root / "tmp" / f"{record.file_id}.{secrets.token_hex(6)}.part"
            stored = await self._read_parts(reader, record.mime_type, limit, tmp)
            size, sha256, head = stored
            width, height = image_size(record.mime_type, head)
            final = self.root / str(record.file_id)
            await asyncio.get_running_loop().run_in_executor(None, _install, tmp, final)
            tmp = None
            done, key = files.finish_upload(record.file_id, size, sha256, width, height)
            await self._durable()
        except _Refused as exc:
            return _error(exc.http, exc.code, exc.message)
        except ServiceError as exc:  # StorageUnavailable
            return _error(_HTTP_STATUS.get(exc.code, 503), exc.code, exc.message)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            return _error(400, ErrorCode.INVALID_PARAMS, "the upload did not finish")
        except OSError as exc:  # the disk: full, or failing
            log.warning(
                "file upload: cannot store the file (%s)", exc.strerror or type(exc).__name__
            )
            return _error(503, ErrorCode.SYSTEM_BUSY, "storage unavailable; retry later")
        except (ValueError, AssertionError, LookupError):  # the multipart parser's refusals
            return _error(400, ErrorCode.INVALID_PARAMS, "malformed multipart body")
        except Exception as exc:  # a bug: logged once per kind, never with the input
            FAILURES.report("file upload", exc)
            return _error(500, ErrorCode.INTERNAL_ERROR, "internal error")
        finally:
            self.running -= 1
            files.end_upload(record.file_id)
            if tmp is not None:
                try:
                    tmp.unlink()
                except OSError:
                    pass
        self.uploads += 1
        base = self.settings.file_base_url
        return web.json_response(
            {
                "file_id": str(done.file_id),
                "file_url": f"{base}{FILES_PATH}/{done.file_id}?key={key}",
                "thumbnail_url": None,
                "file_size": done.size,
                "original_size": done.size,
                "width": done.width or None,
                "height": done.height or None,
                "mime_type": done.mime_type,
            }
        )

    async def _read_parts(
        self, reader: Any, mime: str, limit: int, tmp: pathlib.Path
    ) -> tuple[int, str, bytes]:
        timeout = self.settings.file_read_timeout
        result: tuple[int, str, bytes] | None = None
        for _ in range(MAX_PARTS + 1):
            try:
                part = await asyncio.wait_for(reader.next(), timeout)
            except ValueError:
                raise _Refused(400, ErrorCode.INVALID_PARAMS, "malformed multipart body") from None
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise _Refused(400, ErrorCode.INVALID_PARAMS, "nested multipart is not taken")
            if part.name == "file" and result is None:
                result = await self._store_part(part, mime, limit, tmp, timeout)
            elif part.name == "business_id":
                got = 0
                while chunk := await asyncio.wait_for(part.read_chunk(MAX_FIELD), timeout):
                    got += len(chunk)
                    if got > MAX_FIELD:
                        raise _Refused(400, ErrorCode.INVALID_PARAMS, "business_id too long")
            else:
                raise _Refused(400, ErrorCode.INVALID_PARAMS, "unexpected form field")
        else:
            raise _Refused(400, ErrorCode.INVALID_PARAMS, "too many form fields")
        if result is None:
            raise _Refused(400, ErrorCode.INVALID_PARAMS, "no file field")
        return result

    async def _store_part(
        self, part: BodyPartReader, mime: str, limit: int, tmp: pathlib.Path, timeout: float
    ) -> tuple[int, str, bytes]:
        declared = (part.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if declared not in ("", "application/octet-stream", mime):
            raise _Refused(415, ErrorCode.FILE_TYPE_NOT_ALLOWED, "not the type the token names")
        loop = asyncio.get_running_loop()
        digest = hashlib.sha256()
        size = 0
        head = b""
        fh = await loop.run_in_executor(None, _create, tmp)
        try:
            while True:
                chunk = await asyncio.wait_for(part.read_chunk(CHUNK), timeout)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise _Refused(413, ErrorCode.FILE_TOO_LARGE, "larger than its file_size")
                if len(head) < _HEAD:
                    head += chunk[: _HEAD - len(head)]
                    if mime in IMAGE_TYPES and len(head) >= 12 and not sniff_image(mime, head):
                        raise _Refused(
                            415, ErrorCode.FILE_TYPE_NOT_ALLOWED, f"the bytes are not {mime}"
                        )
                digest.update(chunk)
                await loop.run_in_executor(None, fh.write, chunk)
            if size == 0:
                raise _Refused(400, ErrorCode.INVALID_PARAMS, "empty file")
            if mime in IMAGE_TYPES and not sniff_image(mime, head):
                raise _Refused(415, ErrorCode.FILE_TYPE_NOT_ALLOWED, f"the bytes are not {mime}")
            await loop.run_in_executor(None, _sync, fh)
        finally:
            fh.close()
        return size, digest.hexdigest(), head

    async def _durable(self) -> None:
        """Wait until the store's writes so far are durable (the answer acknowledges them)."""
        d = self.services.durability
        if d.write_seq <= d.durable_seq:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done() -> None:
            if not fut.done():
                fut.set_result(None)

        d.when_durable(d.write_seq, done)
        await fut

    # ---- downloads -----------------------------------------------------------------------------
    async def download(self, request: web.Request) -> web.StreamResponse:
        raw = request.match_info["file_id"]
        key = request.query.get("key", "")
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 19):
            return _error(404, ErrorCode.FILE_NOT_FOUND, "file not found")
        record = self.services.files.downloadable(int(raw), key)
        path = self.root / raw
        if record is None or not path.is_file():
            return _error(404, ErrorCode.FILE_NOT_FOUND, "file not found")
        major = record.mime_type.split("/", 1)[0]
        disposition = "inline" if major in ("image", "video", "audio") else "attachment"
        return web.FileResponse(
            path,
            headers={
                "Content-Type": record.mime_type,
                "Content-Disposition": f"{disposition}; filename*=UTF-8''"
                + quote(record.filename, safe=""),
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; sandbox",
                "Cache-Control": "private, max-age=31536000, immutable",
            },
        )

    async def sticker(self, request: web.Request) -> web.StreamResponse:
        found = self.services.stickers.image(
            request.match_info["package_id"], request.match_info["file"]
        )
        if found is None or not found[0].is_file():
            return _error(404, ErrorCode.RESOURCE_NOT_FOUND, "sticker not found")
        path, mime = found
        return web.FileResponse(
            path,
            headers={
                "Content-Type": mime,
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
                "Cache-Control": "public, max-age=86400",
            },
        )


# ---- blocking file work (run in the default executor) ------------------------------------------
def _create(path: pathlib.Path) -> Any:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


def _sync(fh: Any) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _install(tmp: pathlib.Path, final: pathlib.Path) -> None:
    """Rename the finished upload into place and make the rename durable."""
    os.replace(tmp, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Files over TCP and HTTP: upload tokens (``file/*``), a real upload and download on the file
listener (aiohttp on both sides), the refusals (bad token, oversize, wrong type), message
``file_id``s checked against what the sender uploaded, persistence across a restart; and the
sticker catalogue (``sticker/package/*``, images on the same listener)."""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib
import socket
import struct
import zlib
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from conftest import ServerThread, run, user

from privchat_tcp.client import Client
from privchat_tcp.errors import ConfigError, ErrorCode, ServiceError, Status
from privchat_tcp.service.stickers import StickerCatalogue


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def png(width: int = 3, height: int = 2) -> bytes:
    """A real (tiny) PNG image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


async def refused(client: Client, route: str, body: dict[str, Any]) -> ServiceError:
    try:
        await client.rpc(route, body)
    except ServiceError as exc:
        return exc
    raise AssertionError(f"{route} {body} was accepted")


async def token_for(
    client: Client, data: bytes, mime: str = "image/png", file_type: str = "image", **kw: Any
) -> dict[str, Any]:
    body = {
        "filename": "photo.png",
        "file_size": len(data),
        "mime_type": mime,
        "file_type": file_type,
        "business_type": "message",
        **kw,
    }
    result: dict[str, Any] = await client.rpc("file/request_upload_token", body)
    return result


async def upload(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    data: bytes,
    content_type: str = "image/png",
    filename: str = "photo.png",
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("business_id", "42")
    form.add_field("file", data, filename=filename, content_type=content_type)
    async with http.post(url, data=form, headers={"X-Upload-Token": token}) as resp:
        return resp.status, await resp.json()


@pytest.fixture
def files_server(make_server: Callable[..., ServerThread]) -> ServerThread:
    return make_server(file_port=free_port(), max_file_size=1 << 20)


def test_upload_and_download_over_http(files_server: ServerThread) -> None:
    srv = files_server

    async def main() -> None:
        alice = await user(srv.port, "alice")
        image = png()
        grant = await token_for(alice, image)
        assert set(grant) == {"token", "upload_url", "file_id", "expires_at", "max_size"}
        assert grant["upload_url"] == srv.settings.file_base_url + "/api/app/files/upload"
        assert grant["max_size"] == len(image) and grant["file_id"].isdigit()
        checked = await alice.rpc("file/validate_token", {"token": grant["token"]})
        assert checked["valid"] is True and checked["file_id"] == grant["file_id"]
        assert checked["mime_type"] == "image/png" and checked["user_id"] == alice.user_id
        async with aiohttp.ClientSession() as http:
            status, done = await upload(http, grant["upload_url"], grant["token"], image)
            assert status == 200, done
            assert done["file_id"] == grant["file_id"]
            assert done["file_size"] == done["original_size"] == len(image)
            assert (done["width"], done["height"]) == (3, 2)
            assert done["mime_type"] == "image/png" and done["thumbnail_url"] is None
            url = done["file_url"]
            assert url.startswith(srv.settings.file_base_url + "/api/app/files/" + grant["file_id"])
            async with http.get(url) as resp:
                assert resp.status == 200
                assert await resp.read() == image
                assert resp.headers["Content-Type"] == "image/png"
                assert resp.headers["Content-Length"] == str(len(image))
                assert resp.headers["Content-Disposition"] == "inline; filename*=UTF-8''photo.png"
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
                assert "sandbox" in resp.headers["Content-Security-Policy"]
            async with http.get(url, headers={"Range": "bytes=0-7"}) as resp:
                assert resp.status == 206 and await resp.read() == image[:8]
            # the key is the capability: without it, or with another, the file is not there
            base = url.split("?", 1)[0]
            for wrong in (base, base + "?key=" + "A" * 24, base[:-1] + "9?key=x"):
                async with http.get(wrong) as resp:
                    assert resp.status == 404
                    assert (await resp.json())["code"] == ErrorCode.FILE_NOT_FOUND
            # the token is spent
            status, again = await upload(http, grant["upload_url"], grant["token"], image)
            assert status == 401 and again["code"] == ErrorCode.UPLOAD_TOKEN_INVALID
        assert await alice.rpc(
            "file/upload_callback", {"file_id": grant["file_id"], "status": "success"}
        )
        assert srv.server is not None and srv.server.files is not None
        assert srv.server.files.uploads == 1
        await alice.close()

    run(main())


def test_uploads_refused_bad_token_oversize_wrong_type(files_server: ServerThread) -> None:
    srv = files_server

    async def main() -> None:
        alice = await user(srv.port, "alice")
        url = srv.settings.file_base_url + "/api/app/files/upload"
        image = png()
        async with aiohttp.ClientSession() as http:
            for token in ("", "nonsense", "1." + "x" * 32, "99999.abcdefghijklmnopqrstuv"):
                status, err = await upload(http, url, token, image)
                assert status == 401 and err["code"] == ErrorCode.UPLOAD_TOKEN_INVALID, token
            # oversize: more bytes than the token's file_size
            small = await token_for(alice, image[:20])
            status, err = await upload(http, url, small["token"], image + b"\x00" * 5000)
            assert status == 413 and err["code"] == ErrorCode.FILE_TOO_LARGE
            # wrong type: bytes that are not a PNG, and a part of another type
            grant = await token_for(alice, image)
            status, err = await upload(http, url, grant["token"], b"GIF89a" + b"\x00" * 40)
            assert status == 415 and err["code"] == ErrorCode.FILE_TYPE_NOT_ALLOWED
            status, err = await upload(http, url, grant["token"], image, content_type="text/html")
            assert status == 415 and err["code"] == ErrorCode.FILE_TYPE_NOT_ALLOWED
            # not multipart
            async with http.post(
                url, data=image, headers={"X-Upload-Token": grant["token"]}
            ) as resp:
                assert resp.status == 415
            # the refused uploads did not spend the token: the right bytes go in
            status, done = await upload(http, url, grant["token"], image)
            assert status == 200, done
            # an expired token (the store's clock moved past it)
            late = await token_for(alice, image)
            file_id = int(late["file_id"])
            assert srv.server is not None
            store = srv.server.store
            srv.call(lambda: store.update_file(file_id, {"expires_at": 1}))
            status, err = await upload(http, url, late["token"], image)
            assert status == 401 and err["code"] == ErrorCode.UPLOAD_TOKEN_EXPIRED
            err2 = await refused(alice, "file/validate_token", {"token": late["token"]})
            assert err2.code == ErrorCode.UPLOAD_TOKEN_EXPIRED
        # nothing of the refused uploads is left on disk
        assert srv.server is not None and srv.server.files is not None
        assert list((srv.server.files.root / "tmp").iterdir()) == []
        await alice.close()

    run(main())


def test_request_upload_token_refusals(
    files_server: ServerThread, make_server: Callable[..., ServerThread]
) -> None:
    async def main() -> None:
        alice = await user(files_server.port, "alice")
        base = {"file_size": 10, "mime_type": "image/png", "file_type": "image"}
        base["business_type"] = "message"
        cases = [
            ({"file_size": 2 << 20}, ErrorCode.FILE_TOO_LARGE, Status.TOO_LARGE),
            ({"mime_type": "image/svg+xml"}, ErrorCode.FILE_TYPE_NOT_ALLOWED, Status.BAD_REQUEST),
            ({"mime_type": "video/mp4"}, ErrorCode.FILE_TYPE_NOT_ALLOWED, Status.BAD_REQUEST),
            (
                {"mime_type": "text/html", "file_type": "file"},
                ErrorCode.FILE_TYPE_NOT_ALLOWED,
                Status.BAD_REQUEST,
            ),
            ({"file_type": "exe"}, ErrorCode.INVALID_PARAMS, Status.BAD_REQUEST),
            ({"mime_type": "png"}, ErrorCode.INVALID_PARAMS, Status.BAD_REQUEST),
            ({"file_size": -1}, ErrorCode.PARAM_OUT_OF_RANGE, Status.BAD_REQUEST),
            ({"file_size": 0}, ErrorCode.INVALID_PARAMS, Status.BAD_REQUEST),
            ({"user_id": 1}, ErrorCode.PERMISSION_DENIED, Status.FORBIDDEN),
            ({"mime": "image/png"}, ErrorCode.INVALID_PARAMS, Status.BAD_REQUEST),
        ]
        for change, code, status in cases:
            err = await refused(alice, "file/request_upload_token", {**base, **change})
            assert (err.code, err.status) == (code, status), change
        ok = await alice.rpc(
            "file/request_upload_token",
            {**base, "user_id": alice.user_id, "mime_type": "application/pdf", "file_type": "file"},
        )
        assert ok["token"].startswith(ok["file_id"] + ".")
        await alice.close()
        # a server without the file listener
        off = make_server()
        bob = await user(off.port, "bob")
        err = await refused(bob, "file/request_upload_token", base)
        assert err.status == Status.UNSUPPORTED
        await bob.close()

    run(main())


def test_upload_callback(files_server: ServerThread) -> None:
    srv = files_server

    async def main() -> None:
        alice = await user(srv.port, "alice")
        bob = await user(srv.port, "bob")
        image = png()
        grant = await token_for(alice, image)
        fid = grant["file_id"]
        err = await refused(alice, "file/upload_callback", {"file_id": fid, "status": "success"})
        assert err.code == ErrorCode.FILE_UPLOAD_FAILED  # nothing uploaded yet
        err = await refused(bob, "file/upload_callback", {"file_id": fid, "status": "success"})
        assert err.code == ErrorCode.FILE_NOT_FOUND and err.status == Status.NOT_FOUND
        err = await refused(alice, "file/upload_callback", {"file_id": fid, "status": "maybe"})
        assert err.code == ErrorCode.INVALID_PARAMS
        err = await refused(bob, "file/validate_token", {"token": grant["token"]})
        assert err.code == ErrorCode.UPLOAD_TOKEN_INVALID  # someone else's token
        async with aiohttp.ClientSession() as http:
            status, _ = await upload(http, grant["upload_url"], grant["token"], image)
            assert status == 200
        body = {"file_id": fid, "status": "success", "user_id": alice.user_id}
        assert await alice.rpc("file/upload_callback", body) is True
        assert await alice.rpc("file/upload_callback", body) is True  # idempotent
        # a failed upload spends its token
        other = await token_for(alice, image)
        assert (
            await alice.rpc(
                "file/upload_callback", {"file_id": other["file_id"], "status": "failed"}
            )
            is True
        )
        err = await refused(alice, "file/validate_token", {"token": other["token"]})
        assert err.code == ErrorCode.UPLOAD_TOKEN_INVALID
        await alice.close()
        await bob.close()

    run(main())


def test_message_file_ids_must_be_the_senders_uploads(files_server: ServerThread) -> None:
    srv = files_server

    async def main() -> None:
        alice = await user(srv.port, "alice")
        bob = await user(srv.port, "bob")
        dm = (await alice.rpc("channel/direct/get_or_create", {"target_user_id": bob.user_id}))[
            "channel_id"
        ]
        image = png()
        grant = await token_for(alice, image)
        pending = await token_for(alice, image)

        def image_message(file_id: Any) -> bytes:
            return json.dumps({"content": "", "metadata": {"file_id": file_id}}).encode()

        async with aiohttp.ClientSession() as http:
            status, _ = await upload(http, grant["upload_url"], grant["token"], image)
            assert status == 200
        fid = int(grant["file_id"])
        sent = await alice.send(dm, payload=image_message(fid), message_type=1)
        assert sent.server_message_id > 0
        sent = await alice.send(dm, payload=image_message(str(fid)), message_type=2)
        assert sent.server_message_id > 0
        for sender, file_id in (
            (bob, fid),  # not bob's upload
            (alice, int(pending["file_id"])),  # not uploaded
            (alice, 999_999),  # no such file
            (alice, "abc"),
        ):
            try:
                await sender.send(dm, payload=image_message(file_id), message_type=1)
            except ServiceError as exc:
                assert exc.code == ErrorCode.MESSAGE_CONTENT_INVALID, file_id
            else:
                raise AssertionError(f"file_id {file_id} was accepted")
        # sync/submit takes the same path
        try:
            await bob.rpc(
                "sync/submit",
                {
                    "local_message_id": 77,
                    "channel_id": dm,
                    "channel_type": 1,
                    "last_pts": 0,
                    "command_type": "image",
                    "payload": {"content": "", "metadata": {"file_id": fid}},
                },
            )
        except ServiceError as exc:
            assert exc.code == ErrorCode.MESSAGE_CONTENT_INVALID
        else:
            raise AssertionError("sync/submit took someone else's file")
        # a text message is not checked
        assert (await bob.send(dm, payload=image_message(fid), message_type=0)).server_message_id
        await alice.close()
        await bob.close()

    run(main())


def test_files_survive_a_restart_with_sqlite(tmp_path: pathlib.Path) -> None:
    port = free_port()
    data = str(tmp_path / "data")
    image = png(5, 4)
    saved: dict[str, Any] = {}

    async def first(srv: ServerThread) -> None:
        alice = await user(srv.port, "alice")
        bob = await user(srv.port, "bob")
        saved["token"], saved["device"] = alice.token, alice.device_id
        saved["bob"] = bob.user_id
        grant = await token_for(alice, image)
        saved["pending"] = (await token_for(alice, image))["token"]
        async with aiohttp.ClientSession() as http:
            status, done = await upload(http, grant["upload_url"], grant["token"], image)
            assert status == 200
        saved["done"] = done
        await alice.close()
        await bob.close()

    async def second(srv: ServerThread) -> None:
        done = saved["done"]
        async with aiohttp.ClientSession() as http:
            async with http.get(done["file_url"]) as resp:
                assert resp.status == 200 and await resp.read() == image
        alice = await Client.connect("127.0.0.1", srv.port)
        alice.device_id = saved["device"]
        await alice.login(saved["token"])
        await alice.ready()
        body = {"file_id": done["file_id"], "status": "success"}
        assert await alice.rpc("file/upload_callback", body) is True
        checked = await alice.rpc("file/validate_token", {"token": saved["pending"]})
        assert checked["valid"] is True  # the pending token is still good
        dm = await alice.rpc("channel/direct/get_or_create", {"target_user_id": saved["bob"]})
        payload = json.dumps({"metadata": {"file_id": int(done["file_id"])}}).encode()
        sent = await alice.send(dm["channel_id"], payload=payload, message_type=1)
        assert sent.message_seq == 1
        grant = await token_for(alice, image)  # ids go on: the next file gets a new one
        assert int(grant["file_id"]) > int(done["file_id"])
        await alice.close()

    for step in (first, second):
        srv = ServerThread(file_port=port, data_dir=data).start()
        try:
            run(step(srv))
        finally:
            srv.stop()
    assert (tmp_path / "data" / "files" / saved["done"]["file_id"]).read_bytes() == image


def test_memory_only_uses_a_temporary_directory() -> None:
    srv = ServerThread(file_port=free_port(), memory_only=True).start()
    image = png()

    async def main() -> None:
        alice = await user(srv.port, "alice")
        grant = await token_for(alice, image)
        async with aiohttp.ClientSession() as http:
            status, done = await upload(http, grant["upload_url"], grant["token"], image)
            assert status == 200
            async with http.get(done["file_url"]) as resp:
                assert await resp.read() == image
        await alice.close()

    try:
        run(main())
        assert srv.server is not None and srv.server.files is not None
        root = srv.server.files.root
        assert not str(root).startswith(srv.settings.data_dir) and root.is_dir()
    finally:
        srv.stop()
    assert not root.exists()  # removed at stop, with the rest of a memory-only store


# ---- stickers ----------------------------------------------------------------------------------
def test_sticker_packages_from_the_default_set(files_server: ServerThread) -> None:
    srv = files_server

    async def main() -> None:
        alice = await user(srv.port, "alice")
        listed = await alice.rpc("sticker/package/list", {})
        assert [p["package_id"] for p in listed["packages"]] == ["default"]
        pkg = listed["packages"][0]
        assert set(pkg) == {
            "package_id",
            "name",
            "thumbnail_url",
            "author",
            "description",
            "sticker_count",
        }
        assert pkg["sticker_count"] == 8 and pkg["name"] == "Faces"
        detail = (await alice.rpc("sticker/package/detail", {"package_id": "default"}))["package"]
        assert detail["sticker_count"] == len(detail["stickers"]) == 8
        first = detail["stickers"][0]
        assert first == {
            "sticker_id": "smile",
            "package_id": "default",
            "image_url": srv.settings.file_base_url + "/api/app/stickers/default/smile.svg",
            "alt_text": "smile",
            "emoji": "😊",
            "width": 128,
            "height": 128,
            "mime_type": "image/svg+xml",
        }
        async with aiohttp.ClientSession() as http:
            async with http.get(first["image_url"]) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "image/svg+xml"
                assert (await resp.read()).startswith(b"<svg")
            async with http.get(first["image_url"].replace("smile", "nope")) as resp:
                assert resp.status == 404
            async with http.get(
                srv.settings.file_base_url + "/api/app/stickers/default/..%2F..%2Fcatalogue.json"
            ) as resp:
                assert resp.status == 404
        err = await refused(alice, "sticker/package/detail", {"package_id": "nope"})
        assert err.code == ErrorCode.RESOURCE_NOT_FOUND and err.status == Status.NOT_FOUND
        err = await refused(alice, "sticker/package/detail", {})
        assert err.code == ErrorCode.MISSING_REQUIRED_PARAM
        err = await refused(alice, "sticker/package/list", {"page": 1})
        assert err.code == ErrorCode.INVALID_PARAMS
        await alice.close()

    run(main())


def test_a_catalogue_in_the_data_directory(
    make_server: Callable[..., ServerThread], tmp_path: pathlib.Path
) -> None:
    root = tmp_path / "data" / "stickers"
    (root / "cats").mkdir(parents=True)
    (root / "cats" / "tabby.png").write_bytes(png())
    catalogue = {
        "packages": [
            {
                "package_id": "cats",
                "name": "Cats",
                "author": "me",
                "stickers": [
                    {"sticker_id": "tabby", "file": "tabby.png", "mime_type": "image/png"},
                    {"sticker_id": "remote", "image_url": "https://cdn.example.com/r.png"},
                ],
            }
        ]
    }
    (root / "catalogue.json").write_text(json.dumps(catalogue))
    srv = make_server(data_dir=str(tmp_path / "data"))

    async def main() -> None:
        alice = await user(srv.port, "alice")
        listed = await alice.rpc("sticker/package/list", {})
        assert [(p["package_id"], p["sticker_count"]) for p in listed["packages"]] == [("cats", 2)]
        stickers = (await alice.rpc("sticker/package/detail", {"package_id": "cats"}))["package"][
            "stickers"
        ]
        # the file listener is off: a path on it; an absolute URL as given
        assert stickers[0]["image_url"] == "/api/app/stickers/cats/tabby.png"
        assert stickers[1]["image_url"] == "https://cdn.example.com/r.png"
        err = await refused(alice, "sticker/package/detail", {"package_id": "default"})
        assert err.code == ErrorCode.RESOURCE_NOT_FOUND
        await alice.close()

    run(main())


@pytest.mark.parametrize(
    "catalogue, what",
    [
        ({"packages": [{"package_id": "../x", "name": "x", "stickers": []}]}, "package_id"),
        (
            {"packages": [{"package_id": "x", "name": "x", "stickers": [{"sticker_id": "s"}]}]},
            "file",
        ),
        (
            {
                "packages": [
                    {
                        "package_id": "x",
                        "name": "x",
                        "stickers": [{"sticker_id": "s", "file": "gone.png"}],
                    }
                ]
            },
            "no file",
        ),
        ({"packs": []}, "packages"),
    ],
)
def test_a_malformed_catalogue_is_a_clear_error(
    tmp_path: pathlib.Path, catalogue: dict[str, Any], what: str
) -> None:
    (tmp_path / "stickers").mkdir()
    (tmp_path / "stickers" / "catalogue.json").write_text(json.dumps(catalogue))
    with pytest.raises(ConfigError, match=what):
        StickerCatalogue.load(tmp_path)
    (tmp_path / "stickers" / "catalogue.json").write_bytes(b"{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        StickerCatalogue.load(tmp_path)


# ---- hostile uploads -------------------------------------------------------------------------
async def raw_post(port: int, head: str, body: bytes) -> tuple[asyncio.StreamReader, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + body)
    await writer.drain()
    return reader, writer


async def response(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    """One HTTP response (the server may keep reading the rest of a refused body for a while
    before it closes: read by Content-Length, not to the end)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    return int(lines[0].split(" ", 2)[1]), json.loads(body)


def test_malformed_stalled_and_too_many_uploads(
    make_server: Callable[..., ServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    srv = make_server(file_port=free_port(), file_uploads=1, file_read_timeout=0.5)
    caplog.set_level(logging.INFO, logger="privchat_tcp")
    port = srv.settings.file_port

    def head(token: str, length: int, boundary: str = "b0undary") -> str:
        return (
            f"POST /api/app/files/upload HTTP/1.1\r\nHost: x\r\nX-Upload-Token: {token}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
        )

    async def main() -> None:
        alice = await user(srv.port, "alice")
        image = png()
        # garbage where the parts should be
        grant = await token_for(alice, image)
        garbage = b"\x00\xff" * 50
        reader, writer = await raw_post(port, head(grant["token"], len(garbage)), garbage)
        status, err = await response(reader)
        assert status == 400 and err["code"] == ErrorCode.INVALID_PARAMS
        writer.close()
        # a stalled upload holds the only slot; another one is 503 meanwhile
        part = (
            b"--b0undary\r\nContent-Disposition: form-data; name=file; filename=a.png\r\n"
            b"Content-Type: image/png\r\n\r\n" + image[:10]
        )
        reader, writer = await raw_post(port, head(grant["token"], 10_000), part)
        assert srv.server is not None and srv.server.files is not None
        files = srv.server.files
        while not srv.call(lambda: files.running):
            await asyncio.sleep(0.01)
        other = await token_for(alice, image)
        async with aiohttp.ClientSession() as http:
            code, busy = await upload(http, grant["upload_url"], other["token"], image)
            assert code == 503 and busy["code"] == ErrorCode.SYSTEM_BUSY
            # the stalled one is dropped after file_read_timeout without a byte
            status, err = await response(reader)
            assert status == 400 and "did not finish" in err["message"]
            writer.close()
            code, done = await upload(http, grant["upload_url"], grant["token"], image)
            assert code == 200, done  # its token was not spent
        assert list((files.root / "tmp").iterdir()) == []
        await alice.close()

    run(main())
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]

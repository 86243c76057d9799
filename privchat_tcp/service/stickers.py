"""Stickers: the catalogue of packages ``sticker/package/*`` answer from.

The catalogue is ``DATA_DIR/stickers/catalogue.json`` with each package's images in
``DATA_DIR/stickers/<package_id>/``; without one, the small default set shipped in the
package (``privchat_tcp/stickers/``, the same layout) is served. It is read once, at start; a
malformed catalogue stops the server with a ``ConfigError`` naming what is wrong. Images are
served by the file listener (``/api/app/stickers/<package_id>/<file>``) unless a sticker gives
its own absolute ``image_url``.

    {"packages": [{"package_id": "default", "name": "Faces", "author": "...",
                   "description": "...", "thumbnail": "smile.svg",
                   "stickers": [{"sticker_id": "smile", "file": "smile.svg",
                                 "alt_text": "smile", "emoji": "😊", "width": 128,
                                 "height": 128, "mime_type": "image/svg+xml"}]}]}
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

from ..errors import ConfigError, ErrorCode, ServiceError

__all__ = ["StickerCatalogue", "DEFAULT_ROOT", "STICKER_PATH"]

#: the default set shipped with the package
DEFAULT_ROOT = pathlib.Path(__file__).resolve().parent.parent / "stickers"
#: where the file listener serves sticker images
STICKER_PATH = "/api/app/stickers"
CATALOGUE = "catalogue.json"

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FILE = re.compile(r"[A-Za-z0-9_-]{1,64}\.(svg|png|gif|webp|jpg|jpeg)")
_URL = re.compile(r"https?://[^\s\"'<>]{1,2000}")
_MIME = {
    "svg": "image/svg+xml",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
}
MAX_PACKAGES = 1000
MAX_STICKERS = 1000
MAX_CATALOGUE_BYTES = 4 << 20


def _text(obj: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str) or len(value) > 256 or not value.isprintable():
        raise ConfigError(f"sticker catalogue: {where}: {key} must be a short string")
    return value


class StickerCatalogue:
    """The packages, in catalogue order, and where their images are."""

    def __init__(self, data: Any, root: pathlib.Path, base_url: str = "") -> None:
        self.root = root
        self.base_url = base_url.rstrip("/")
        self._packages: dict[str, dict[str, Any]] = {}
        self._files: dict[tuple[str, str], str] = {}  # (package, file) -> mime type
        if not isinstance(data, dict) or not isinstance(data.get("packages"), list):
            raise ConfigError("sticker catalogue: needs a list under 'packages'")
        if len(data["packages"]) > MAX_PACKAGES:
            raise ConfigError(f"sticker catalogue: more than {MAX_PACKAGES} packages")
        for i, pkg in enumerate(data["packages"]):
            self._add(pkg, f"package {i}")

    @classmethod
    def load(cls, data_dir: pathlib.Path | None, base_url: str = "") -> StickerCatalogue:
        """The data directory's catalogue if it has one, else the default set."""
        root = DEFAULT_ROOT
        if data_dir is not None and (data_dir / "stickers" / CATALOGUE).is_file():
            root = data_dir / "stickers"
        path = root / CATALOGUE
        try:
            raw = path.read_bytes()[: MAX_CATALOGUE_BYTES + 1]
            if len(raw) > MAX_CATALOGUE_BYTES:
                raise ConfigError(f"{path}: larger than {MAX_CATALOGUE_BYTES} bytes")
            data = json.loads(raw)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read the sticker catalogue ({exc})") from None
        return cls(data, root, base_url)

    def _url(self, package_id: str, file: str) -> str:
        return f"{self.base_url}{STICKER_PATH}/{package_id}/{file}"

    def _image(self, obj: dict[str, Any], package_id: str, where: str, key: str) -> str:
        url = obj.get("image_url" if key == "file" else "thumbnail_url")
        if isinstance(url, str) and _URL.fullmatch(url):
            return url
        file = obj.get(key)
        if not isinstance(file, str) or not _FILE.fullmatch(file):
            raise ConfigError(f"sticker catalogue: {where}: {key} must be a file name")
        if not (self.root / package_id / file).is_file():
            raise ConfigError(f"sticker catalogue: {where}: no file {package_id}/{file}")
        self._files[(package_id, file)] = _MIME[file.rsplit(".", 1)[1].lower()]
        return self._url(package_id, file)

    def _add(self, pkg: Any, where: str) -> None:
        if not isinstance(pkg, dict):
            raise ConfigError(f"sticker catalogue: {where} must be an object")
        package_id = _text(pkg, "package_id", where)
        if not _ID.fullmatch(package_id) or package_id in self._packages:
            raise ConfigError(f"sticker catalogue: {where}: bad or repeated package_id")
        stickers = pkg.get("stickers")
        if not isinstance(stickers, list) or len(stickers) > MAX_STICKERS:
            raise ConfigError(f"sticker catalogue: {where}: stickers must be a list")
        items = []
        seen: set[str] = set()
        for j, st in enumerate(stickers):
            at = f"{where} sticker {j}"
            if not isinstance(st, dict):
                raise ConfigError(f"sticker catalogue: {at} must be an object")
            sticker_id = _text(st, "sticker_id", at)
            if not _ID.fullmatch(sticker_id) or sticker_id in seen:
                raise ConfigError(f"sticker catalogue: {at}: bad or repeated sticker_id")
            seen.add(sticker_id)
            image_url = self._image(st, package_id, at, "file")
            width, height = st.get("width", 0), st.get("height", 0)
            if not all(isinstance(v, int) and 0 <= v <= 4096 for v in (width, height)):
                raise ConfigError(f"sticker catalogue: {at}: width and height 0-4096")
            item: dict[str, Any] = {
                "sticker_id": sticker_id,
                "package_id": package_id,
                "image_url": image_url,
                "alt_text": _text(st, "alt_text", at, ""),
                "width": width,
                "height": height,
                "mime_type": _text(st, "mime_type", at, "image/png"),
            }
            if st.get("emoji") is not None:
                item["emoji"] = _text(st, "emoji", at)
            items.append(item)
        thumb = (
            self._image(pkg, package_id, where, "thumbnail")
            if pkg.get("thumbnail") or pkg.get("thumbnail_url")
            else (items[0]["image_url"] if items else "")
        )
        self._packages[package_id] = {
            "package_id": package_id,
            "name": _text(pkg, "name", where),
            "thumbnail_url": thumb,
            "author": _text(pkg, "author", where, ""),
            "description": _text(pkg, "description", where, ""),
            "sticker_count": len(items),
            "stickers": items,
        }

    # ---- sticker/package/* ---------------------------------------------------------------------
    def packages(self) -> list[dict[str, Any]]:
        """Every package without its stickers (``StickerPackageInfo``, ``stickers`` left out)."""
        return [{k: v for k, v in p.items() if k != "stickers"} for p in self._packages.values()]

    def package(self, package_id: str) -> dict[str, Any]:
        """One package with its stickers; 10201 for one the catalogue does not have."""
        pkg = self._packages.get(package_id)
        if pkg is None:
            raise ServiceError(ErrorCode.RESOURCE_NOT_FOUND, "sticker package not found")
        return {**pkg, "stickers": [dict(s) for s in pkg["stickers"]]}

    def image(self, package_id: str, file: str) -> tuple[pathlib.Path, str] | None:
        """(path, mime type) of a catalogue image the file listener may serve, or None."""
        mime = self._files.get((package_id, file))
        if mime is None:
            return None
        return self.root / package_id / file, mime

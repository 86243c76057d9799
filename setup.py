"""Build script: metadata lives in pyproject.toml; this file adds the optional Cython extension.

``PRIVCHAT_BUILD_EXT`` (modelled on websockets' ``BUILD_EXTENSION``):

* ``yes``   the extension must build; a missing Cython or a failed compile is an error (CI sets it)
* ``no``    skip the extension: a pure-Python install
* unset     best effort: build it if Cython and a compiler are there, otherwise install pure Python

``PRIVCHAT_DEBUG=1`` writes the Cython annotation HTML next to the ``.pyx`` and turns on
line tracing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

BUILD_EXT = os.environ.get("PRIVCHAT_BUILD_EXT", "").strip().lower()
if BUILD_EXT not in ("", "yes", "no"):
    sys.exit(f"PRIVCHAT_BUILD_EXT must be 'yes', 'no' or unset, not {BUILD_EXT!r}")
DEBUG = os.environ.get("PRIVCHAT_DEBUG", "") not in ("", "0")

# The build mode of the last compile. Cython and build_ext only compare timestamps, so switching
# PRIVCHAT_DEBUG on or off would otherwise keep a stale (traced, or unannotated) module.
MODE = "debug" if DEBUG else "release"
MODE_STAMP = Path(__file__).resolve().parent / "build" / "privchat-ext-mode"
MODE_CHANGED = not MODE_STAMP.exists() or MODE_STAMP.read_text().strip() != MODE

# compiled twin -> the package it lives in (its pure twin sits beside it)
EXT_PACKAGES = {
    "_frame_c": "privchat_tcp.wire",
    "_pbwire_c": "privchat_tcp.wire",
    "_aead_c": "privchat_tcp.wire",
    "_output_c": "privchat_tcp.wire",
    "_record_c": "privchat_tcp.service",
    "_quota_c": "privchat_tcp.service",
    "_ids_c": "privchat_tcp.service",
    "_scan_c": "privchat_tcp.service",
    "_push_c": "privchat_tcp.session",
    "_batch_c": "privchat_tcp.store",
}

PACKAGE_DATA = {
    "privchat_tcp": ["py.typed", "stickers/*.json", "stickers/*/*.svg"],
    "privchat_tcp.wire": ["_frame_c.pyi", "_pbwire_c.pyi", "_aead_c.pyi", "_output_c.pyi"],
    "privchat_tcp.service": ["_record_c.pyi", "_quota_c.pyi", "_ids_c.pyi", "_scan_c.pyi"],
    "privchat_tcp.session": ["_push_c.pyi"],
    "privchat_tcp.store": ["_batch_c.pyi"],
    "privchat_tcp.proto": ["*.proto", "*.pyi"],
}


def _say(msg: str) -> None:
    print(f"privchat-tcp: {msg}", file=sys.stderr, flush=True)


def _extensions() -> list[Extension]:
    if BUILD_EXT == "no":
        return []
    if sys.implementation.name != "cpython":
        if BUILD_EXT == "yes":
            sys.exit("PRIVCHAT_BUILD_EXT=yes, but the extension needs CPython")
        _say(f"{sys.implementation.name} is not CPython; skipping the extension")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if BUILD_EXT == "yes":
            sys.exit(
                "PRIVCHAT_BUILD_EXT=yes, but Cython is not installed: pip install 'Cython>=3.0,<4'"
            )
        _say("Cython is not installed; skipping the extension")
        return []
    macros: list[tuple[str, str | None]] = []
    directives: dict[str, Any] = {"language_level": 3}
    if DEBUG:
        macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]
        directives["linetrace"] = True
    # _aead_c links OpenSSL's libcrypto (headers: Debian's libssl-dev), _batch_c the SQLite
    # library Python's sqlite3 module uses (headers: Debian's libsqlite3-dev)
    libraries = {"_aead_c": ["crypto"], "_batch_c": ["sqlite3"]}
    exts = [
        Extension(
            f"{EXT_PACKAGES[name]}.{name}",
            [f"ext/{name}.pyx"],
            define_macros=macros,
            libraries=libraries.get(name, []),
            optional=BUILD_EXT != "yes",
        )
        for name in EXT_PACKAGES
    ]
    built = cythonize(
        exts,
        compiler_directives=directives,
        include_path=["ext"],  # ext/_cbits.pxd: C helpers the twins share
        annotate=DEBUG,
        quiet=True,
        force=MODE_CHANGED,
    )
    for out in built:  # cythonize() makes new Extension objects and drops ``optional``
        out.optional = BUILD_EXT != "yes"
    return list(built)


class BuildExt(build_ext):
    """build_ext that remembers which extensions really compiled, to print an honest banner."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if MODE_CHANGED:
            self.force = True

    def run(self) -> None:
        self._built: list[str] = []
        super().run()
        if not self.extensions:
            return
        if len(self._built) == len(self.extensions):
            MODE_STAMP.parent.mkdir(parents=True, exist_ok=True)
            MODE_STAMP.write_text(MODE + "\n")
            _say(f"Accelerated build ({', '.join(self._built)}; {MODE})")
        else:
            missing = sorted({e.name for e in self.extensions} - set(self._built))
            _say(
                f"Partial build: {', '.join(missing)} did not compile; their pure-Python twins "
                "will be used (_aead_c needs OpenSSL's headers, Debian's libssl-dev; _batch_c "
                "SQLite's, libsqlite3-dev)"
            )

    def build_extension(self, ext: Extension) -> None:
        super().build_extension(ext)
        self._built.append(ext.name)


EXTENSIONS = _extensions()
if not EXTENSIONS:
    _say("Pure build (PRIVCHAT_BUILD_EXT=no)" if BUILD_EXT == "no" else "Pure build")

setup(
    ext_modules=EXTENSIONS,
    cmdclass={"build_ext": BuildExt},
    package_data=PACKAGE_DATA,
)

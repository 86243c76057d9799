"""The one switch for the compiled twins.

Every hot module has a pure-Python twin (``_<name>_py``) and may have a compiled one
(``_<name>_c``, from ``ext/<name>.pyx``). ``twins()`` picks, for every facade module, the same
way: the compiled twin unless ``PRIVCHAT_NO_EXTENSIONS`` is set (to anything but "" or "0") or it
was not built (an install without a compiler). ``REQUIRE`` (``PRIVCHAT_REQUIRE_EXT=1``, set by the
test command) turns a missing compiled twin into an ImportError, so CI fails when a build is
incomplete instead of silently testing the pure one twice.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NamedTuple

__all__ = ["NO_EXTENSIONS", "REQUIRE", "Twins", "twins", "loaded"]

NO_EXTENSIONS = os.environ.get("PRIVCHAT_NO_EXTENSIONS", "") not in ("", "0")
REQUIRE = os.environ.get("PRIVCHAT_REQUIRE_EXT", "") not in ("", "0") and not NO_EXTENSIONS


class Twins(NamedTuple):
    """The implementation in use (``impl``), both twins, and ``name``: "c" or "py"."""

    impl: ModuleType
    impl_py: ModuleType
    impl_c: ModuleType | None
    name: str


#: module -> "c" or "py", for every facade imported so far (``privchat-tcp --version`` and the
#: benchmark runner print it)
loaded: dict[str, str] = {}


def twins(package: str, stem: str) -> Twins:
    """Import ``package._<stem>_py`` and, if built, ``package._<stem>_c``; pick one."""
    impl_py = importlib.import_module(f"{package}._{stem}_py")
    impl_c: ModuleType | None
    try:
        impl_c = importlib.import_module(f"{package}._{stem}_c")
    except ImportError:
        if REQUIRE:
            raise
        impl_c = None
    impl = impl_py if (NO_EXTENSIONS or impl_c is None) else impl_c
    name = "py" if impl is impl_py else "c"
    loaded[stem] = name
    return Twins(impl, impl_py, impl_c, name)

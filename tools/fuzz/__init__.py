"""Fuzz targets for atheris (issue 13): ``python -m tools.fuzz list|smoke|campaign|run|repro``.

Each target is a ``Target``: a one-input function (``one(data)``; raises only on a finding), its
seeds (built from the malformed-input table, ``tests/malformed/*.cases``) and a maximum input
length. The registry imports nothing of the server, so ``run`` can start atheris's
instrumentation before ``privchat_tcp`` is imported. See ``tools/fuzz/README.md``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["Target", "Finding", "NAMES", "get", "all_targets"]


class Finding(AssertionError):
    """A property a target checks does not hold (a differential mismatch, an answer that must
    not happen): a finding, like any exception the target does not expect."""


@dataclass(frozen=True)
class Target:
    name: str
    doc: str
    one: Callable[[bytes], None]
    seeds: Callable[[], Iterable[bytes]]
    max_len: int = 4096


#: target name -> the module (under tools.fuzz) that defines it as ``TARGET_<NAME>``
_WHERE: dict[str, str] = {
    "frame": "wire",
    "pbwire": "wire",
    "aead": "wire",
    "compression": "wire",
    "proxy": "wire",
    "client": "wire",
    "safejson": "json",
    "crypto": "handshake",
    "rpc": "sessions",
    "connection": "sessions",
}
NAMES: tuple[str, ...] = tuple(_WHERE)


def get(name: str) -> Target:
    if name not in _WHERE:
        raise KeyError(f"unknown target {name!r} (one of: {', '.join(NAMES)})")
    module = importlib.import_module(f"tools.fuzz.{_WHERE[name]}")
    target: Target = getattr(module, f"TARGET_{name.upper()}")
    return target


def all_targets() -> list[Target]:
    return [get(name) for name in NAMES]

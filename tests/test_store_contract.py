"""The store contract suite (``store_contract.py``) against every store implementation."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
from store_contract import StoreContract

from privchat_tcp.service.ports import Store
from privchat_tcp.store.memory import MemoryStore
from privchat_tcp.store.sqlite import SQLiteStore


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> Store:
        return MemoryStore()


class TestSQLiteStore(StoreContract):
    """The embedded store; a small window, so that reads also cross into the database."""

    @pytest.fixture
    def store(self, tmp_path: pathlib.Path) -> Iterator[Store]:
        s = SQLiteStore(tmp_path / "data", window=8)
        yield s
        if s._lock_fd >= 0:
            s.close()

"""The store contract suite (``store_contract.py``) against every store implementation."""

from __future__ import annotations

import pytest
from store_contract import StoreContract

from privchat_tcp.service.ports import Store
from privchat_tcp.store.memory import MemoryStore


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> Store:
        return MemoryStore()

"""Stores: the interface and its implementations."""

from .base import Store
from .memory import MemoryStore

__all__ = ["Store", "MemoryStore"]

"""Store implementations, one module (later one package) each, behind ``service.ports``.

Only the composition root (``app.py``) picks one.
"""

from .memory import MemoryStore

__all__ = ["MemoryStore"]

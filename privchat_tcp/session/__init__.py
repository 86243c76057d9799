"""The session layer: one connection's application state (``session``), its command handlers
(``commands``), the delivery policy (``delivery``) and who is online (``hub``).

No sockets and no asyncio: the adapter (``net/tcp.py``) holds a ``Session`` and is its ``Link``.
"""

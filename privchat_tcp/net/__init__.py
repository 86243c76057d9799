"""The network layer: asyncio and sockets. ``tcp`` (the adapter holding a Session),
``accept`` (listening sockets, batched accepts), ``limits`` (rate limits), ``deadlines`` (the
one-second sweep), ``metrics`` (counters and their text), ``admin`` (the HTTP listener),
``drain`` (graceful shutdown)."""

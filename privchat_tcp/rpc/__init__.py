"""The RPC layer: JSON in, JSON out. Never bytes, a socket or a session object.

``table`` (route tables as values, the call context), ``params`` (checked getters),
``views`` (JSON shapes) and ``routes/<prefix>.py``.
"""

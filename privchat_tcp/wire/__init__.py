"""The wire layer: bytes <-> frames for both sides. No clock, no store, no JSON.

``commands`` (numbers and flag bits), ``frame`` (+ twins: splitter and header), ``connection``
(the sans-IO connection, ``Side.SERVER`` and ``Side.CLIENT``), ``compression``, ``crypto`` and
``aead`` (+ twins), ``pbwire`` (+ twins: hot protobuf bodies by hand), ``proxy`` (PROXY v1/v2).
"""

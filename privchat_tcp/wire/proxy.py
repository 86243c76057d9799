"""PROXY protocol v1 and v2 (HAProxy's spec), sans-IO: bytes in, the client address out.

``ProxyParser().feed(data)`` may be called with the header split over any number of reads. It
returns None while the header is incomplete, a ``ProxyResult`` once it is complete (``rest`` is
whatever followed it: the first frame's bytes), and raises ``ProxyError`` for a missing,
malformed or oversized header. ``source`` is None for v2 LOCAL (a load balancer's own health
check), v1 ``UNKNOWN`` and address families other than TCP/UDP over IPv4/IPv6: the connection's
own address is used then.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

__all__ = [
    "ProxyParser",
    "ProxyResult",
    "ProxyError",
    "V1_MAX",
    "V2_MAX",
    "V2_SIGNATURE",
    "encode_v1",
    "encode_v2",
]

V1_MAX = 107  # "PROXY TCP6 <39> <39> <5> <5>\r\n"
V2_MAX = 16 + 2048  # header + addresses + TLVs we are willing to read
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_PREFIX = b"PROXY "
_v2_head = struct.Struct("!12sBBH")


class ProxyError(Exception):
    """The PROXY header is missing, malformed or too large: close the connection."""


class ProxyResult(NamedTuple):
    version: int
    source: tuple[str, int] | None
    rest: bytes


class ProxyParser:
    __slots__ = ("_buf", "max_v2")

    def __init__(self, max_v2: int = V2_MAX) -> None:
        self._buf = b""
        self.max_v2 = max_v2

    def feed(self, data: bytes) -> ProxyResult | None:
        buf = self._buf + data if self._buf else data
        if not buf:
            return None
        if buf[0] == 0x50:  # "P"
            result = self._v1(buf)
        elif buf[0] == 0x0D:
            result = self._v2(buf)
        else:
            raise ProxyError("missing PROXY header")
        if result is None:
            self._buf = bytes(buf)
        else:
            self._buf = b""
        return result

    @staticmethod
    def _v1(buf: bytes) -> ProxyResult | None:
        n = min(len(buf), len(_V1_PREFIX))
        if buf[:n] != _V1_PREFIX[:n]:
            raise ProxyError("missing PROXY header")
        end = buf.find(b"\r\n", 0, V1_MAX)
        if end < 0:
            if len(buf) >= V1_MAX:
                raise ProxyError("PROXY v1 header too long")
            if b"\n" in buf[:V1_MAX]:
                raise ProxyError("malformed PROXY v1 header")
            return None
        if b"\n" in buf[:end]:  # a bare LF before the CRLF (as a read that stops there sees)
            raise ProxyError("malformed PROXY v1 header")
        try:
            line = bytes(buf[:end]).decode("ascii")
        except UnicodeDecodeError:
            raise ProxyError("malformed PROXY v1 header") from None
        parts = line.split(" ")
        rest = bytes(buf[end + 2 :])
        if len(parts) >= 2 and parts[1] == "UNKNOWN":
            return ProxyResult(1, None, rest)
        if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
            raise ProxyError("malformed PROXY v1 header")
        _, family, src, dst, sport, dport = parts
        try:
            s_addr = ipaddress.ip_address(src)
            d_addr = ipaddress.ip_address(dst)
            ports = [int(p) for p in (sport, dport)]
        except ValueError:
            raise ProxyError("malformed PROXY v1 header") from None
        want = 4 if family == "TCP4" else 6
        if s_addr.version != want or d_addr.version != want:
            raise ProxyError("malformed PROXY v1 header")
        for text, port in zip((sport, dport), ports, strict=True):
            if not 0 <= port <= 65535 or text != str(port):
                raise ProxyError("malformed PROXY v1 header")
        return ProxyResult(1, (str(s_addr), ports[0]), rest)

    def _v2(self, buf: bytes) -> ProxyResult | None:
        n = min(len(buf), 12)
        if buf[:n] != V2_SIGNATURE[:n]:
            raise ProxyError("missing PROXY header")
        if len(buf) < 16:
            return None
        _, ver_cmd, fam, length = _v2_head.unpack_from(buf)
        if ver_cmd >> 4 != 2 or ver_cmd & 0x0F > 1:
            raise ProxyError("unsupported PROXY v2 version or command")
        if 16 + length > self.max_v2:
            raise ProxyError("PROXY v2 header too large")
        if len(buf) < 16 + length:
            return None
        block = bytes(buf[16 : 16 + length])
        rest = bytes(buf[16 + length :])
        if ver_cmd & 0x0F == 0:  # LOCAL: the balancer itself; addresses are ignored
            return ProxyResult(2, None, rest)
        af, proto = fam >> 4, fam & 0x0F
        if proto not in (1, 2) or af not in (1, 2):
            if af > 3 or proto > 2:
                raise ProxyError("malformed PROXY v2 header")
            return ProxyResult(2, None, rest)  # UNSPEC or unix: keep the socket address
        size = 12 if af == 1 else 36
        if length < size:
            raise ProxyError("malformed PROXY v2 header")
        alen = 4 if af == 1 else 16
        src = ipaddress.ip_address(block[:alen])
        sport = int.from_bytes(block[2 * alen : 2 * alen + 2], "big")
        return ProxyResult(2, (str(src), sport), rest)


def encode_v1(src: str, sport: int, dst: str, dport: int) -> bytes:
    family = "TCP6" if ipaddress.ip_address(src).version == 6 else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def encode_v2(
    src: str | None = None,
    sport: int = 0,
    dst: str | None = None,
    dport: int = 0,
    tlvs: bytes = b"",
) -> bytes:
    """A v2 header: PROXY over TCP with the addresses, or LOCAL when ``src`` is None."""
    if src is None or dst is None:
        return _v2_head.pack(V2_SIGNATURE, 0x20, 0x00, len(tlvs)) + tlvs
    s = ipaddress.ip_address(src)
    d = ipaddress.ip_address(dst)
    fam = 0x11 if s.version == 4 else 0x21
    block = s.packed + d.packed + struct.pack("!HH", sport, dport) + tlvs
    return _v2_head.pack(V2_SIGNATURE, 0x21, fam, len(block)) + block

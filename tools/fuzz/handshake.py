"""The crypto handshake: an encryption-2 LOGIN (``open_login``) and the session cipher's open
path (``SessionCipher.open_header``) fed a stream of frames.

The server key is derived from a fixed seed (the same key in every process, so a corpus and a
crash file stay valid); the session secret is fixed too. Only ``CryptoError`` may escape, and a
frame that opens must be exactly what the client would have sealed at that counter.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator

from cryptography.hazmat.primitives.asymmetric import rsa

from privchat_tcp.errors import ProtocolViolation
from privchat_tcp.wire import _frame_py
from privchat_tcp.wire.crypto import (
    CryptoError,
    ServerKey,
    SessionCipher,
    derive_keys,
    open_login,
    seal_login,
)

from . import Finding, Target
from .seeds import malformed_table
from .wire import SECRET

_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p**0.5) + 1))]


def _is_prime(n: int, rng: random.Random) -> bool:
    for p in _SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while not d & 1:
        d, s = d >> 1, s + 1
    for _ in range(24):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(rng: random.Random, bits: int) -> int:
    while True:
        n = rng.getrandbits(bits) | (3 << (bits - 2)) | 1
        if n % 65537 != 1 and _is_prime(n, rng):
            return n


@functools.cache
def server_key(seed: str = "privchat-fuzz") -> ServerKey:
    """A 2048-bit RSA key derived from ``seed`` (deterministic; for fuzzing only)."""
    rng = random.Random(seed)
    e = 65537
    p = _prime(rng, 1024)
    q = _prime(rng, 1024)
    while q == p:
        q = _prime(rng, 1024)
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p,
        q,
        d,
        rsa.rsa_crt_dmp1(d, p),
        rsa.rsa_crt_dmq1(d, q),
        rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q),
    )
    return ServerKey(numbers.private_key())


def _open_login(data: bytes) -> None:
    if len(data) < 12:
        return
    length, _, seq, command, flags, status = _frame_py.decode_header(data)
    key = server_key()
    body = data[12:]
    try:
        secret, _plain = open_login(key, seq, command, flags, status, body)
    except CryptoError:
        return
    # it opened: the same secret seals the same body back (the header is the AD)
    k_c2s = derive_keys(secret)[0]
    if len(k_c2s) != 32 or len(secret) != 32:
        raise Finding("open_login gave a secret of the wrong size")
    _ = length


def _session_stream(data: bytes) -> None:
    k_c2s, k_s2c = derive_keys(SECRET)
    server = SessionCipher(k_s2c, k_c2s, 0, 1)
    client = SessionCipher(k_c2s, k_s2c, 1, 0)
    frames = _frame_py.split_frames(data, 1 << 20, True)[0]
    for seq, command, flags, status, body in frames:
        try:
            plain = server.open(seq, command, flags, status, body)
        except CryptoError:
            return  # the connection closes
        header, sealed = client.seal(seq, command, flags, status, plain)
        if sealed != body:
            raise Finding("a frame opened that the client did not seal (a forgery)")
    if server.recv_counter != client.send_counter:
        raise Finding("the counters went out of step")


def crypto_one(data: bytes) -> None:
    if not data:
        return
    try:
        if data[0] & 0x0F == 0x0F:
            _open_login(data[1:])
        else:
            _session_stream(data[1:])
    except CryptoError:
        return
    except ProtocolViolation as exc:
        raise Finding(f"a ProtocolViolation that is not a CryptoError: {exc!r}") from exc


def crypto_seeds() -> Iterator[bytes]:
    key = server_key()
    k_c2s, k_s2c = derive_keys(SECRET)
    values = {"token": "x.y.z", "device": "d", "user": 100000001, "peer": 100000002}
    values |= {"channel": 1, "message": 1}
    for case in malformed_table.load():
        if case.category != "crypto":
            continue
        ctx = malformed_table.Context(values, cipher=SessionCipher(k_c2s, k_s2c, 1, 0))
        ctx.rsa = seal_login
        ctx.rsa_key = key.public_key
        ctx.other_key = server_key("other").public_key
        ctx.secret = SECRET
        try:
            data = b"".join(case.build(ctx))
        except (malformed_table.FormatError, AssertionError, KeyError):
            continue
        rsa_login = any(n.kind == "call" and n.value == "rsa" for n in case.items)
        yield (b"\x0f" if rsa_login else b"\x00") + data


TARGET_CRYPTO = Target(
    "crypto",
    "open_login (RSA-OAEP + AES-GCM LOGIN) and SessionCipher.open over a stream: CryptoError only",
    crypto_one,
    crypto_seeds,
    max_len=2048,
)

__all__ = ["TARGET_CRYPTO", "server_key"]

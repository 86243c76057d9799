"""Frame encryption (PROTOCOL.md section 5): server key, LOGIN key transport, session AEAD."""

from __future__ import annotations

import hashlib
import hmac
import os
import pathlib
import stat
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from privchat_tcp.errors import ErrorCode, ProtocolViolation, Status
from privchat_tcp.wire import crypto
from privchat_tcp.wire._frame_py import decode_header, encode_header
from privchat_tcp.wire.crypto import (
    CryptoError,
    ServerKey,
    SessionCipher,
    derive_keys,
    new_secret,
    open_login,
    seal_login,
)

LOGIN, MS, MPS = 1, 4, 8
REQ_ENC1 = 0x04  # flow 0, encryption 1
REQ_ENC2 = 0x08  # flow 0, encryption 2 (LOGIN key transport)
RESP_ENC1 = 0x05  # flow 1, encryption 1
PUSH_E2E = 0x0E  # flow 2, encryption 3
LIMIT = 1 << 20  # PROTOCOL.md 2.2


@pytest.fixture(scope="module")
def server_key() -> ServerKey:
    return ServerKey.generate()


@pytest.fixture(scope="module")
def other_key() -> ServerKey:
    return ServerKey.generate()


def _pair(secret: bytes | None = None) -> tuple[SessionCipher, SessionCipher]:
    s = secret if secret is not None else new_secret()
    return SessionCipher.client_side(s), SessionCipher.server_side(s)


def _assert_crypto(exc: pytest.ExceptionInfo[CryptoError]) -> None:
    assert isinstance(exc.value, ProtocolViolation)
    assert exc.value.status == Status.CRYPTO
    assert exc.value.code == ErrorCode.PROTOCOL_ERROR
    assert exc.value.close is True


# --- keys -------------------------------------------------------------------------------------


def _hkdf_reference(ikm: bytes, info: bytes) -> bytes:
    prk = hmac.new(b"", ikm, hashlib.sha256).digest()  # RFC 5869, empty salt
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()  # 32 bytes: one block


def test_derive_keys_matches_rfc5869() -> None:
    secret = bytes(range(32))
    c2s, s2c = derive_keys(secret)
    assert c2s == _hkdf_reference(secret, b"privchat-tcp/1 c2s")
    assert s2c == _hkdf_reference(secret, b"privchat-tcp/1 s2c")
    assert len(c2s) == len(s2c) == 32 and c2s != s2c
    with pytest.raises(ValueError):
        derive_keys(b"short")


def test_server_key_basics(server_key: ServerKey) -> None:
    assert server_key.modulus_bytes == 256
    fp = server_key.fingerprint()
    der = server_key.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert fp == hashlib.sha256(der).hexdigest() and len(fp) == 64 and fp == fp.lower()
    assert b"BEGIN PRIVATE KEY" in server_key.private_pem()  # PKCS8
    assert b"BEGIN PUBLIC KEY" in server_key.public_pem()
    again = ServerKey.from_pem(server_key.private_pem())
    assert again.fingerprint() == fp
    assert fp not in repr(server_key.private_pem())
    assert "PRIVATE" not in repr(server_key)


def test_server_key_rejects_weak_or_wrong_keys() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from privchat_tcp.errors import ConfigError

    with pytest.raises(ConfigError):
        ServerKey.generate(1024)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ConfigError):
        ServerKey(weak)
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigError):
        ServerKey.from_pem(ec_pem)
    with pytest.raises(ConfigError):
        ServerKey.from_pem(b"not a pem")


def test_load_or_create(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "data" / "keys" / "server.pem"
    created = ServerKey.load_or_create(path)
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == created.private_pem()
    assert [p.name for p in path.parent.iterdir()] == ["server.pem"]  # no temp file left behind
    loaded = ServerKey.load_or_create(path)
    assert loaded.fingerprint() == created.fingerprint()
    assert ServerKey.load_or_create(path).fingerprint() == created.fingerprint()
    assert path.read_bytes() == created.private_pem()  # never rewritten


def test_load_or_create_respects_existing(tmp_path: pathlib.Path, server_key: ServerKey) -> None:
    path = tmp_path / "server.pem"
    path.write_bytes(server_key.private_pem())
    assert ServerKey.load_or_create(path).fingerprint() == server_key.fingerprint()


def test_unwrap_secret(server_key: ServerKey, other_key: ServerKey) -> None:
    secret = new_secret()
    oaep = padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    )
    ct = server_key.public_key.encrypt(secret, oaep)
    assert server_key.unwrap_secret(ct) == secret
    for bad in (other_key.public_key.encrypt(secret, oaep), ct[:-1], ct + b"\0", b""):
        with pytest.raises(CryptoError) as exc:
            server_key.unwrap_secret(bad)
        _assert_crypto(exc)
    # Well-formed OAEP of a secret of the wrong size.
    with pytest.raises(CryptoError):
        server_key.unwrap_secret(server_key.public_key.encrypt(b"x" * 31, oaep))
    sha1 = padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None
    )
    with pytest.raises(CryptoError):
        server_key.unwrap_secret(server_key.public_key.encrypt(secret, sha1))


# --- LOGIN key transport ----------------------------------------------------------------------


def test_login_round_trip(server_key: ServerKey) -> None:
    secret = new_secret()
    login = b"\x0a\x05token" * 20
    header, body = seal_login(server_key.public_pem(), secret, 1, LOGIN, REQ_ENC2, 0, login)
    assert len(header) == 12
    length, version, seq, command, flags, status = decode_header(header)
    assert (length, version, seq, command, flags, status) == (len(body), 1, 1, LOGIN, REQ_ENC2, 0)
    assert len(body) == 256 + len(login) + 16
    got_secret, got = open_login(server_key, seq, command, flags, status, body)
    assert got_secret == secret and got == login
    # The AES part is exactly AES-GCM(k_c2s, counter 0, AD = header).
    k_c2s, _ = derive_keys(secret)
    assert AESGCM(k_c2s).decrypt(bytes(12), body[256:], header) == login
    # Public key as an object or a ServerKey works too.
    for pub in (server_key.public_key, server_key):
        _, b2 = seal_login(pub, secret, 2, LOGIN, REQ_ENC2, 0, b"")
        assert open_login(server_key, 2, LOGIN, REQ_ENC2, 0, b2) == (secret, b"")


def test_login_then_session(server_key: ServerKey) -> None:
    secret = new_secret()
    _, body = seal_login(server_key, secret, 7, LOGIN, REQ_ENC2, 0, b"login")
    client = SessionCipher.client_side(secret)
    got_secret, _ = open_login(server_key, 7, LOGIN, REQ_ENC2, 0, body)
    server = SessionCipher.server_side(got_secret)
    # The server's LOGIN response is s2c counter 0, the client's next frame c2s counter 1.
    h, ct = server.seal(7, LOGIN, RESP_ENC1, 0, b"welcome")
    k_c2s, k_s2c = derive_keys(secret)
    assert AESGCM(k_s2c).decrypt(bytes(12), ct, h) == b"welcome"
    assert client.open(7, LOGIN, RESP_ENC1, 0, ct) == b"welcome"
    h, ct = client.seal(8, MS, REQ_ENC1, 0, b"hi")
    assert AESGCM(k_c2s).decrypt(bytes(11) + b"\x01", ct, h) == b"hi"
    assert server.open(8, MS, REQ_ENC1, 0, ct) == b"hi"


def test_login_for_another_server_key(server_key: ServerKey, other_key: ServerKey) -> None:
    _, body = seal_login(other_key, new_secret(), 1, LOGIN, REQ_ENC2, 0, b"login")
    with pytest.raises(CryptoError) as exc:
        open_login(server_key, 1, LOGIN, REQ_ENC2, 0, body)
    _assert_crypto(exc)


def test_login_tampering(server_key: ServerKey) -> None:
    _, body = seal_login(server_key, new_secret(), 1, LOGIN, REQ_ENC2, 0, b"login request")
    cases = [
        b"",
        body[:255],
        body[: 256 + 15],  # no room for a tag
        body[:-1],  # truncated tag
        body[:100] + bytes([body[100] ^ 1]) + body[101:],  # RSA block
        body[:-1] + bytes([body[-1] ^ 0x80]),  # tag
        body[:260] + bytes([body[260] ^ 1]) + body[261:],  # ciphertext
        body + b"\0",
    ]
    for bad in cases:
        with pytest.raises(CryptoError):
            open_login(server_key, 1, LOGIN, REQ_ENC2, 0, bad)
    for fields in [
        (2, LOGIN, REQ_ENC2, 0),
        (1, MS, REQ_ENC2, 0),
        (1, LOGIN, 0x18, 0),
        (1, 1, 8, 1),
    ]:
        with pytest.raises(CryptoError):
            open_login(server_key, *fields, body)


# --- session frames -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 64, 1024, 65536, 1 << 20])
def test_round_trip_both_directions(size: int) -> None:
    client, server = _pair()
    data = os.urandom(size)
    for i in range(3):
        header, ct = client.seal(100 + i, MS, REQ_ENC1, 0, data)
        assert header == encode_header(size + 16, 100 + i, MS, REQ_ENC1, 0)
        assert len(ct) == size + 16
        assert server.open(100 + i, MS, REQ_ENC1, 0, ct) == data
        header, ct = server.seal(100 + i, MS, RESP_ENC1, 3, data)
        assert header == encode_header(size + 16, 100 + i, MS, RESP_ENC1, 3)
        assert client.open(100 + i, MS, RESP_ENC1, 3, ct) == data
    # e2e content (encryption = 3) is sealed exactly like encryption = 1
    header, ct = server.seal(1, MPS, PUSH_E2E, 0, data)
    assert client.open_header(header, ct) == data
    assert client.recv_counter == 4 and server.send_counter == 4
    assert client.send_counter == 4 and server.recv_counter == 4


def test_nonce_layout_and_directions() -> None:
    secret = new_secret()
    k_c2s, k_s2c = derive_keys(secret)
    client, server = _pair(secret)
    h, ct = server.seal(1, MPS, 0x06, 0, b"push")
    h2, ct2 = server.seal(2, MPS, 0x06, 0, b"push")
    assert ct != ct2  # fresh nonce each frame
    assert AESGCM(k_s2c).decrypt(bytes(12), ct, h) == b"push"
    assert AESGCM(k_s2c).decrypt(bytes(11) + b"\x01", ct2, h2) == b"push"
    big = SessionCipher(k_c2s, k_s2c, send_counter=0xF1020304)
    h, ct = big.seal(1, MS, REQ_ENC1, 0, b"x")
    assert AESGCM(k_c2s).decrypt(b"\0\0\0\0\0\0\0\0\xf1\x02\x03\x04", ct, h) == b"x"
    # A frame sealed by one side in one direction never opens in the other direction.
    h, ct = client.seal(1, MS, REQ_ENC1, 0, b"x")
    with pytest.raises(CryptoError):
        client.open(1, MS, REQ_ENC1, 0, ct)


def test_every_header_bit_is_authenticated() -> None:
    data = b"payload of the frame" * 3
    fields = (0x89ABCDEF, MS, REQ_ENC1, 0)
    trailer = os.urandom(64)  # whatever follows the frame on the wire
    flipped = 0
    for bit in range(96):
        client, server = _pair()
        header, ct = client.seal(*fields, data)
        bad = bytearray(header)
        bad[bit // 8] ^= 0x80 >> (bit % 8)
        length, _version, seq, command, flags, status = decode_header(bytes(bad))
        with pytest.raises(CryptoError) as exc:
            if bit < 32 and length <= LIMIT:
                # A flipped len moves the body boundary: the receiver sees a shorter or longer body.
                stream = ct + trailer + bytes(max(0, length - len(ct) - len(trailer)))
                server.open(seq, command, flags, status, stream[:length])
            elif bit < 32:
                server.open_header(bytes(bad), ct)  # the splitter stops such a len; AD still fails
            elif bit < 40:
                server.open_header(bytes(bad), ct)  # version: only the raw header carries it
            else:
                server.open(seq, command, flags, status, ct)
        _assert_crypto(exc)
        assert server.recv_counter == 1  # unchanged by the failure
        assert server.open(*fields, ct) == data  # the intact frame still opens
        flipped += 1
    assert flipped == 96


def test_ciphertext_and_tag_bits() -> None:
    secret = new_secret()
    data = os.urandom(40)
    _, ct = SessionCipher.client_side(secret).seal(5, MS, REQ_ENC1, 0, data)
    assert len(ct) == 56
    for bit in range(len(ct) * 8):  # bits 320.. are the tag
        server = SessionCipher.server_side(secret)
        bad = bytearray(ct)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CryptoError):
            server.open(5, MS, REQ_ENC1, 0, bytes(bad))
    server = SessionCipher.server_side(secret)
    for cut in range(1, 17):
        with pytest.raises(CryptoError):
            server.open(5, MS, REQ_ENC1, 0, ct[:-cut])  # truncated tag
    for short in (b"", b"x" * 15):
        with pytest.raises(CryptoError):
            server.open(5, MS, REQ_ENC1, 0, short)
    with pytest.raises(CryptoError):
        server.open(5, MS, REQ_ENC1, 0, ct + b"\0")  # extended
    assert server.recv_counter == 1
    assert server.open(5, MS, REQ_ENC1, 0, ct) == data


def test_replay_reorder_drop() -> None:
    client, server = _pair()
    frames = [client.seal(i, MS, REQ_ENC1, 0, b"frame %d" % i) for i in range(1, 5)]
    cts = [ct for _, ct in frames]
    assert server.open(1, MS, REQ_ENC1, 0, cts[0]) == b"frame 1"
    with pytest.raises(CryptoError):  # replayed
        server.open(1, MS, REQ_ENC1, 0, cts[0])
    with pytest.raises(CryptoError):  # reordered: 3 before 2
        server.open(3, MS, REQ_ENC1, 0, cts[2])
    with pytest.raises(CryptoError):  # the same frame with the seq rewritten to fit
        server.open(2, MS, REQ_ENC1, 0, cts[2])
    assert server.open(2, MS, REQ_ENC1, 0, cts[1]) == b"frame 2"
    with pytest.raises(CryptoError):  # 3 dropped, 4 arrives
        server.open(4, MS, REQ_ENC1, 0, cts[3])
    # Dropped frame on the other direction too.
    s_frames = [server.seal(i, MPS, 0x06, 0, b"push") for i in range(1, 3)]
    with pytest.raises(CryptoError):
        client.open(2, MPS, 0x06, 0, s_frames[1][1])
    assert client.open(1, MPS, 0x06, 0, s_frames[0][1]) == b"push"
    assert client.open(2, MPS, 0x06, 0, s_frames[1][1]) == b"push"


def test_wrong_key() -> None:
    client, _ = _pair()
    _, server = _pair()
    _, ct = client.seal(1, MS, REQ_ENC1, 0, b"x")
    with pytest.raises(CryptoError) as exc:
        server.open(1, MS, REQ_ENC1, 0, ct)
    _assert_crypto(exc)
    assert exc.value.message == "decryption failed"


def test_counter_exhaustion() -> None:
    k1, k2 = derive_keys(new_secret())
    last = crypto.COUNTER_LIMIT - 2  # the last usable nonce counter
    a = SessionCipher(k1, k2, send_counter=last - 1, recv_counter=last - 1)
    b = SessionCipher(k2, k1, send_counter=last - 1, recv_counter=last - 1)
    assert not a.exhausted and a.send_remaining == 2
    for _ in range(2):
        h, ct = a.seal(1, MS, REQ_ENC1, 0, b"x")
        assert b.open_header(h, ct) == b"x"
        h, ct = b.seal(1, MS, RESP_ENC1, 0, b"y")
        assert a.open_header(h, ct) == b"y"
    assert a.send_counter == b.recv_counter == crypto.COUNTER_LIMIT - 1
    assert a.exhausted and a.send_exhausted and a.recv_exhausted and b.exhausted
    assert a.send_remaining == a.recv_remaining == 0
    with pytest.raises(CryptoError) as exc:
        a.seal(1, MS, REQ_ENC1, 0, b"x")
    _assert_crypto(exc)
    with pytest.raises(CryptoError):
        b.open(1, MS, REQ_ENC1, 0, bytes(17))
    assert a.send_counter == crypto.COUNTER_LIMIT - 1  # refused, not advanced
    with pytest.raises(ValueError):
        SessionCipher(k1, k2, send_counter=crypto.COUNTER_LIMIT)
    with pytest.raises(ValueError):
        SessionCipher(k1, k2, recv_counter=-1)


def test_one_direction_exhausted() -> None:
    k1, k2 = derive_keys(new_secret())
    c = SessionCipher(k1, k2, send_counter=crypto.COUNTER_LIMIT - 1)
    assert c.exhausted and c.send_exhausted and not c.recv_exhausted


# --- nonce uniqueness -------------------------------------------------------------------------


Used = set[tuple[bytes, bytes]]


def _record(cipher: SessionCipher, key: bytes, used: Used, dupes: list[Any]) -> None:
    """Wrap the cipher's bound AESGCM.encrypt to log every (key, nonce) it is called with."""
    real: Callable[[bytes, bytes, bytes], bytes] = cipher._encrypt

    def encrypt(nonce: bytes, data: bytes, ad: bytes) -> bytes:
        assert len(nonce) == 12 and nonce[:4] == b"\0\0\0\0"
        if (key, nonce) in used:
            dupes.append((key, nonce))
        used.add((key, nonce))
        return real(nonce, data, ad)

    cipher._encrypt = encrypt  # type: ignore[assignment]


def _session(
    server_key: ServerKey, secret: bytes
) -> tuple[SessionCipher, SessionCipher, Used, list[Any]]:
    used: Used = set()
    dupes: list[Any] = []
    k_c2s, k_s2c = derive_keys(secret)
    assert k_c2s != k_s2c
    used.add((k_c2s, bytes(12)))  # the LOGIN
    _, body = seal_login(server_key, secret, 1, LOGIN, REQ_ENC2, 0, b"login")
    got, _ = open_login(server_key, 1, LOGIN, REQ_ENC2, 0, body)
    client, server = SessionCipher.client_side(secret), SessionCipher.server_side(got)
    _record(client, k_c2s, used, dupes)
    _record(server, k_s2c, used, dupes)
    return client, server, used, dupes


def test_no_key_nonce_reuse_long_session(server_key: ServerKey) -> None:
    client, server, used, dupes = _session(server_key, new_secret())
    n = 10_000
    for i in range(n):
        _, ct = client.seal(i, MS, REQ_ENC1, 0, b"m")
        assert server.open(i, MS, REQ_ENC1, 0, ct) == b"m"
        _, ct = server.seal(i, MS, RESP_ENC1, 0, b"r")
        assert client.open(i, MS, RESP_ENC1, 0, ct) == b"r"
    assert dupes == []
    assert len(used) == 2 * n + 1


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    script=st.lists(st.booleans(), max_size=300),
)
def test_no_key_nonce_reuse_property(
    server_key: ServerKey, secret: bytes, script: list[bool]
) -> None:
    client, server, used, dupes = _session(server_key, secret)
    for i, c2s in enumerate(script):
        sender, receiver = (client, server) if c2s else (server, client)
        header, ct = sender.seal(i, MS, REQ_ENC1 if c2s else RESP_ENC1, 0, b"%d" % i)
        assert receiver.open_header(header, ct) == b"%d" % i
    assert dupes == []
    assert len(used) == len(script) + 1
    assert client.send_counter == server.recv_counter == 1 + sum(script)
    assert server.send_counter == client.recv_counter == len(script) - sum(script)

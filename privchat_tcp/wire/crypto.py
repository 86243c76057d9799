"""Frame encryption (PROTOCOL.md section 5): server RSA key, LOGIN key transport, session AEAD.

- ``ServerKey``: the RSA key pair (5.1), loaded from PEM or created on first start.
- LOGIN with encryption = 2 (5.2): ``seal_login`` (client) / ``open_login`` (server). The body is
  RSA-OAEP(SHA-256, MGF1-SHA-256) of a 32-byte secret S, then the AES-256-GCM sealed LoginRequest
  under ``k_c2s`` with nonce counter 0 and the frame header (with the final ``len``) as AD.
- ``derive_keys(S)`` -> (k_c2s, k_s2c): HKDF-SHA256, empty salt, info ``privchat-tcp/1 c2s|s2c``.
- ``SessionCipher`` (5.3; also encryption = 3, 5.4): AES-256-GCM, nonce = 4 zero bytes + u64 BE
  count of frames sent in that direction, AD = the 12-byte header as sent. Each end counts; a
  replayed, reordered, dropped, truncated or altered frame fails the tag.

Every failure is a ``CryptoError`` (status CRYPTO, close); its message names no key and no byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import struct
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import ConfigError, ErrorCode, ProtocolViolation, Status
from ._frame_py import VERSION
from .aead import Opener, Sealer

__all__ = [
    "COUNTER_LIMIT",
    "KEY_SIZE",
    "MIN_RSA_BITS",
    "SECRET_SIZE",
    "TAG_SIZE",
    "CryptoError",
    "ServerKey",
    "SessionCipher",
    "derive_keys",
    "new_secret",
    "open_login",
    "seal_login",
]

SECRET_SIZE: Final = 32
KEY_SIZE: Final = 32
TAG_SIZE: Final = 16
MIN_RSA_BITS: Final = 2048
#: "The connection is closed before either counter reaches 2^32": a direction may use nonce counters
#: 0 .. COUNTER_LIMIT - 2, so the count of frames sent stays below COUNTER_LIMIT.
COUNTER_LIMIT: Final = 2**32

_INFO_C2S: Final = b"privchat-tcp/1 c2s"
_INFO_S2C: Final = b"privchat-tcp/1 s2c"
_LAST: Final = COUNTER_LIMIT - 1  # a counter at this value may not be used

_pack_header = struct.Struct("!IBIBBB").pack  # == _frame_py.encode_header, one call less
_nonce = struct.Struct("!4xQ").pack  # 4 zero bytes + u64 big-endian counter
_NONCE0: Final = _nonce(0)

_OAEP: Final = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


class CryptoError(ProtocolViolation):
    """Decryption or key transport failed, or a counter ran out: answer CRYPTO and close."""

    def __init__(self, message: str = "decryption failed") -> None:
        super().__init__(Status.CRYPTO, ErrorCode.PROTOCOL_ERROR, message, close=True)


def new_secret() -> bytes:
    """A fresh random 32-byte session secret S (client side)."""
    return os.urandom(SECRET_SIZE)


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=b"", info=info).derive(secret)


def derive_keys(secret: bytes) -> tuple[bytes, bytes]:
    """(k_c2s, k_s2c) for the session secret S (PROTOCOL.md 5.2)."""
    if len(secret) != SECRET_SIZE:
        raise ValueError("the session secret is 32 bytes")
    return _hkdf(secret, _INFO_C2S), _hkdf(secret, _INFO_S2C)


class ServerKey:
    """The server's RSA key pair (PROTOCOL.md 5.1)."""

    __slots__ = ("_key", "_public", "_spki_der", "modulus_bytes")

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(f"the server RSA key must have at least {MIN_RSA_BITS} bits")
        self._key = key
        self._public = key.public_key()
        self._spki_der = self._public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.modulus_bytes: int = (key.key_size + 7) // 8

    @classmethod
    def generate(cls, bits: int = MIN_RSA_BITS) -> ServerKey:
        if bits < MIN_RSA_BITS:
            raise ConfigError(f"the server RSA key must have at least {MIN_RSA_BITS} bits")
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def from_pem(cls, data: bytes) -> ServerKey:
        """Load an unencrypted PEM private key (PKCS8 or PKCS1); it must be RSA."""
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise ConfigError("not an unencrypted PEM private key") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError("the server key must be an RSA key")
        return cls(key)

    @classmethod
    def load_or_create(cls, path: pathlib.Path, bits: int = MIN_RSA_BITS) -> ServerKey:
        """Load the key at ``path``, or generate one and write it there (PKCS8 PEM, mode 0600).

        The file appears atomically and is never overwritten: if another process creates it first,
        that key is loaded and used.
        """
        path = pathlib.Path(path)
        try:
            return cls.from_pem(path.read_bytes())
        except FileNotFoundError:
            pass
        key = cls.generate(bits)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, key.private_pem())
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # atomic and refuses to replace an existing file
            except FileExistsError:
                return cls.from_pem(path.read_bytes())
            except OSError:  # no hard links on this file system
                os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        with contextlib.suppress(OSError):
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return key

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        return self._public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def fingerprint(self) -> str:
        """SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex without colons."""
        return hashlib.sha256(self._spki_der).hexdigest()

    def unwrap_secret(self, ct: bytes) -> bytes:
        """Decrypt the RSA-OAEP key-transport block; returns the 32-byte secret."""
        if len(ct) != self.modulus_bytes:
            raise CryptoError()
        try:
            secret = self._key.decrypt(ct, _OAEP)
        except ValueError:
            raise CryptoError() from None
        if len(secret) != SECRET_SIZE:
            raise CryptoError()
        return secret

    def __repr__(self) -> str:
        return f"ServerKey(bits={self.modulus_bytes * 8}, fingerprint={self.fingerprint()})"


class SessionCipher:
    """AES-256-GCM for the session frames of one connection (PROTOCOL.md 5.3, 5.4).

    ``seal`` and ``open`` take the header fields; the header is rebuilt and used as associated data,
    so the caller writes the returned header as is. A counter advances only on success; after a
    ``CryptoError`` from ``open`` the connection must be closed.
    """

    __slots__ = ("_decrypt", "_encrypt", "_recv", "_send")

    def __init__(
        self, send_key: bytes, recv_key: bytes, send_counter: int = 0, recv_counter: int = 0
    ) -> None:
        if not (0 <= send_counter < COUNTER_LIMIT and 0 <= recv_counter < COUNTER_LIMIT):
            raise ValueError("counters are in [0, 2**32)")
        # one context per direction (aead.py: compiled, or cryptography's AESGCM)
        self._encrypt = Sealer(send_key).encrypt
        self._decrypt = Opener(recv_key).decrypt
        self._send = send_counter
        self._recv = recv_counter

    @classmethod
    def server_side(cls, secret: bytes) -> SessionCipher:
        """The server's cipher after an encrypted LOGIN (which used c2s counter 0)."""
        k_c2s, k_s2c = derive_keys(secret)
        return cls(k_s2c, k_c2s, 0, 1)

    @classmethod
    def client_side(cls, secret: bytes) -> SessionCipher:
        """The client's cipher after sending its encrypted LOGIN (c2s counter 0)."""
        k_c2s, k_s2c = derive_keys(secret)
        return cls(k_c2s, k_s2c, 1, 0)

    @property
    def send_counter(self) -> int:
        """The nonce counter of the next frame sealed."""
        return self._send

    @property
    def recv_counter(self) -> int:
        """The nonce counter of the next frame opened."""
        return self._recv

    @property
    def send_remaining(self) -> int:
        """How many more frames ``seal`` accepts."""
        return _LAST - self._send

    @property
    def recv_remaining(self) -> int:
        """How many more frames ``open`` accepts."""
        return _LAST - self._recv

    @property
    def send_exhausted(self) -> bool:
        return self._send >= _LAST

    @property
    def recv_exhausted(self) -> bool:
        return self._recv >= _LAST

    @property
    def exhausted(self) -> bool:
        """Either direction is out of nonces: close the connection."""
        return self._send >= _LAST or self._recv >= _LAST

    def seal(
        self, seq: int, command: int, flags: int, status: int, plaintext: bytes
    ) -> tuple[bytes, bytes]:
        """Encrypt one body; returns (header, ciphertext + tag)."""
        n = self._send
        if n >= _LAST:
            raise CryptoError("session key exhausted")
        header = _pack_header(len(plaintext) + TAG_SIZE, VERSION, seq, command, flags, status)
        ct = self._encrypt(_nonce(n), plaintext, header)
        self._send = n + 1
        return header, ct

    def open(self, seq: int, command: int, flags: int, status: int, ciphertext: bytes) -> bytes:
        """Decrypt one body received with these header fields (``len`` = ``len(ciphertext)``)."""
        return self.open_header(
            _pack_header(len(ciphertext), VERSION, seq, command, flags, status), ciphertext
        )

    def open_header(self, header: bytes, ciphertext: bytes) -> bytes:
        """Decrypt one body with the 12 header bytes exactly as received as associated data."""
        n = self._recv
        if n >= _LAST or len(ciphertext) < TAG_SIZE:
            raise CryptoError()
        try:
            plaintext = self._decrypt(_nonce(n), ciphertext, header)
        except InvalidTag:
            raise CryptoError() from None
        self._recv = n + 1
        return plaintext


def _public_key(key: bytes | rsa.RSAPublicKey | ServerKey) -> rsa.RSAPublicKey:
    if isinstance(key, ServerKey):
        return key.public_key
    if isinstance(key, rsa.RSAPublicKey):
        return key
    loaded = serialization.load_pem_public_key(key)
    if not isinstance(loaded, rsa.RSAPublicKey):
        raise ValueError("the server public key must be an RSA key")
    return loaded


def seal_login(
    public_key: bytes | rsa.RSAPublicKey | ServerKey,
    secret: bytes,
    seq: int,
    command: int,
    flags: int,
    status: int,
    login_plaintext: bytes,
) -> tuple[bytes, bytes]:
    """Client side of 5.2: (header, body) for a LOGIN sent with encryption = 2.

    Continue the session with ``SessionCipher.client_side(secret)``.
    """
    pub = _public_key(public_key)
    wrapped = pub.encrypt(secret, _OAEP)
    k_c2s = derive_keys(secret)[0]
    length = len(wrapped) + len(login_plaintext) + TAG_SIZE
    header = _pack_header(length, VERSION, seq, command, flags, status)
    return header, wrapped + AESGCM(k_c2s).encrypt(_NONCE0, login_plaintext, header)


def open_login(
    server_key: ServerKey, seq: int, command: int, flags: int, status: int, body: bytes
) -> tuple[bytes, bytes]:
    """Server side of 5.2: (secret, LoginRequest bytes) of a LOGIN received with encryption = 2.

    Continue the session with ``SessionCipher.server_side(secret)``.
    """
    m = server_key.modulus_bytes
    if len(body) < m + TAG_SIZE:
        raise CryptoError()
    secret = server_key.unwrap_secret(body[:m])
    k_c2s = derive_keys(secret)[0]
    header = _pack_header(len(body), VERSION, seq, command, flags, status)
    try:
        plaintext = AESGCM(k_c2s).decrypt(_NONCE0, body[m:], header)
    except InvalidTag:
        raise CryptoError() from None
    return secret, plaintext

"""AES-256-GCM for one direction of a session: the pure-Python twin of ``ext/_aead_c.pyx``.

``Sealer(key).encrypt(nonce, plaintext, aad)`` -> ciphertext + 16-byte tag;
``Opener(key).decrypt(nonce, ciphertext + tag, aad)`` -> plaintext, or ``InvalidTag``. Both wrap
``cryptography``'s ``AESGCM`` (which keeps an encrypting and a decrypting context per key); the
compiled twin holds only the one context each direction needs.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["Sealer", "Opener"]


def _key(key: bytes) -> AESGCM:
    if len(key) != 32:
        raise ValueError("AES-256-GCM keys are 32 bytes")
    return AESGCM(key)


class Sealer:
    """Encrypts with one key."""

    __slots__ = ("_encrypt",)

    def __init__(self, key: bytes) -> None:
        self._encrypt = _key(key).encrypt

    def encrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        if len(nonce) != 12:  # AESGCM takes 8-128 bytes; the protocol's nonces are 12
            raise ValueError("nonces are 12 bytes")
        return self._encrypt(nonce, data, aad)


class Opener:
    """Decrypts with one key; a failed tag raises ``cryptography.exceptions.InvalidTag``."""

    __slots__ = ("_decrypt",)

    def __init__(self, key: bytes) -> None:
        self._decrypt = _key(key).decrypt

    def decrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        if len(nonce) != 12:
            raise ValueError("nonces are 12 bytes")
        return self._decrypt(nonce, data, aad)

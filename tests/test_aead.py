"""Session AES-256-GCM (``privchat_tcp.wire.aead``): the compiled ``_aead_c`` and its pure twin.

Both are checked against ``cryptography``'s ``AESGCM`` and against each other: the same
ciphertext and tag, every altered byte refused, objects reused over many frames as a session
does. The compiled run is skipped when the extension is absent, unless ``PRIVCHAT_REQUIRE_EXT=1``
(CI), where a missing extension fails instead. The end-to-end checks over TCP (test_crypto.py,
test_codec_tcp.py) run with whichever one the server picked: both, across the two CI passes.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest
from conftest import REQUIRE_EXT, twin, twin_params
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from privchat_tcp.wire import aead
from privchat_tcp.wire.crypto import SessionCipher, new_secret


@pytest.fixture(params=twin_params(aead.impl_py, aead.impl_c, "_aead_c"))
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return twin(request, "_aead_c")


KEY = bytes(range(32))
NONCE = bytes(11) + b"\x07"
AAD = b"\x00\x00\x00\x10\x01\x00\x00\x00\x05\x04\x04\x00"  # a 12-byte header


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 255, 4096, 16384, 16385, 65536 + 3])
def test_matches_cryptography(impl: ModuleType, size: int) -> None:
    data = os.urandom(size)
    ct = impl.Sealer(KEY).encrypt(NONCE, data, AAD)
    assert ct == AESGCM(KEY).encrypt(NONCE, data, AAD)
    assert len(ct) == size + 16
    assert impl.Opener(KEY).decrypt(NONCE, ct, AAD) == data
    assert AESGCM(KEY).decrypt(NONCE, ct, AAD) == data


@pytest.mark.parametrize("size", [100, 20000])  # the kept context, and a large body
def test_large_and_small_bodies_refuse_tampering(impl: ModuleType, size: int) -> None:
    data = os.urandom(size)
    ct = impl.Sealer(KEY).encrypt(NONCE, data, AAD)
    for i in (0, size // 2, size + 15):
        bad = bytearray(ct)
        bad[i] ^= 0x40
        with pytest.raises(InvalidTag):
            impl.Opener(KEY).decrypt(NONCE, bytes(bad), AAD)
    with pytest.raises(ValueError):
        impl.Sealer(KEY).encrypt(bytes(16), data, AAD)


def test_every_altered_byte_is_refused(impl: ModuleType) -> None:
    data = b"hello, privchat"
    ct = impl.Sealer(KEY).encrypt(NONCE, data, AAD)
    opener = impl.Opener(KEY)
    for i in range(len(ct)):
        bad = bytearray(ct)
        bad[i] ^= 0x01
        with pytest.raises(InvalidTag):
            opener.decrypt(NONCE, bytes(bad), AAD)
    for i in range(len(AAD)):
        bad_aad = bytearray(AAD)
        bad_aad[i] ^= 0x80
        with pytest.raises(InvalidTag):
            opener.decrypt(NONCE, ct, bytes(bad_aad))
    with pytest.raises(InvalidTag):  # another nonce (a replayed or reordered frame)
        opener.decrypt(bytes(12), ct, AAD)
    with pytest.raises(InvalidTag):  # another key
        impl.Opener(bytes(32)).decrypt(NONCE, ct, AAD)
    for cut in (1, 15, 16):  # truncated tag, or no tag at all
        with pytest.raises(InvalidTag):
            opener.decrypt(NONCE, ct[:-cut], AAD)
    with pytest.raises(InvalidTag):
        opener.decrypt(NONCE, b"", AAD)
    # the failures leave the object usable
    assert opener.decrypt(NONCE, ct, AAD) == data


def test_bytes_like_arguments(impl: ModuleType) -> None:
    data = b"bytes-like body"
    ct = impl.Sealer(bytearray(KEY)).encrypt(memoryview(NONCE), bytearray(data), bytearray(AAD))
    assert ct == AESGCM(KEY).encrypt(NONCE, data, AAD)
    assert impl.Opener(memoryview(KEY)).decrypt(bytearray(NONCE), memoryview(ct), AAD) == data


def test_bad_arguments(impl: ModuleType) -> None:
    for key in (b"", bytes(16), bytes(31), bytes(33)):
        with pytest.raises(ValueError):
            impl.Sealer(key)
        with pytest.raises(ValueError):
            impl.Opener(key)
    with pytest.raises(ValueError):
        impl.Sealer(KEY).encrypt(bytes(8), b"x", AAD)
    with pytest.raises(ValueError):
        impl.Opener(KEY).decrypt(bytes(16), bytes(32), AAD)


def test_one_object_many_frames(impl: ModuleType) -> None:
    sealer, opener = impl.Sealer(KEY), impl.Opener(KEY)
    ref = AESGCM(KEY)
    for n in range(2000):
        nonce = bytes(4) + n.to_bytes(8, "big")
        data = os.urandom(n % 97)
        ct = sealer.encrypt(nonce, data, AAD)
        assert ct == ref.encrypt(nonce, data, AAD)
        if n % 7 == 0:  # a failure in between does not disturb the next frames
            with pytest.raises(InvalidTag):
                opener.decrypt(nonce, ct[:-1] + bytes([ct[-1] ^ 1]), AAD)
        assert opener.decrypt(nonce, ct, AAD) == data


@settings(max_examples=200, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    nonce=st.binary(min_size=12, max_size=12),
    data=st.binary(max_size=2000),
    aad=st.binary(max_size=64),
)
def test_twins_agree(key: bytes, nonce: bytes, data: bytes, aad: bytes) -> None:
    mods = [aead.impl_py] + ([aead.impl_c] if aead.impl_c is not None else [])
    cts = {m.Sealer(key).encrypt(nonce, data, aad) for m in mods}
    assert len(cts) == 1
    ct = cts.pop()
    for m in mods:
        assert m.Opener(key).decrypt(nonce, ct, aad) == data


def test_session_cipher_uses_the_chosen_one() -> None:
    secret = new_secret()
    client, server = SessionCipher.client_side(secret), SessionCipher.server_side(secret)
    header, ct = client.seal(7, 4, 0x04, 0, b"body")
    assert server.open_header(header, ct) == b"body"
    assert aead.Sealer is (aead.impl_py if aead.IMPL == "py" else aead.impl_c).Sealer  # type: ignore[union-attr]
    if os.environ.get("PRIVCHAT_NO_EXTENSIONS"):
        assert aead.IMPL == "py"


@pytest.mark.skipif(not REQUIRE_EXT, reason="PRIVCHAT_REQUIRE_EXT is not set")
def test_compiled_extension_required() -> None:
    assert aead.impl_c is not None, "privchat_tcp.wire._aead_c did not import"
    assert aead.IMPL == "c"


def test_a_bad_nonce_is_refused_before_a_short_body(impl: ModuleType) -> None:
    """Fuzzing found the twins disagreeing (tools/fuzz/regressions/fuzz_aead): a body shorter
    than the tag with a nonce that is not 12 bytes was InvalidTag in the compiled one and
    ValueError in the reference. Both check the nonce first now."""
    for body in (b"", bytes(15), bytes(16)):
        with pytest.raises(ValueError):
            impl.Opener(KEY).decrypt(bytes(11), body, AAD)
    with pytest.raises(InvalidTag):
        impl.Opener(KEY).decrypt(NONCE, bytes(15), AAD)

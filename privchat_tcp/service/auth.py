"""Accounts and tokens: argon2id password hashes and PrivChat JWTs (HS256) bound to a device."""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

import argon2
import jwt

from ..errors import ErrorCode, ServiceError

__all__ = ["TokenIssuer", "PasswordHasher", "is_uuid"]

ISSUER = "privchat-im"
AUDIENCE = "privchat-client"
BUSINESS_SYSTEM = "privchat-internal"


def is_uuid(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class PasswordHasher:
    def __init__(self, time_cost: int, memory_kib: int) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=1
        )
        self._dummy = self._hasher.hash(secrets.token_hex(16))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        """Constant work whether or not the user exists (``stored`` None)."""
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False


class TokenIssuer:
    def __init__(self, secret: str, ttl: int, refresh_ttl: int) -> None:
        self._key = secret
        self.ttl = ttl
        self.refresh_ttl = refresh_ttl

    def issue(
        self,
        user_id: int,
        device_id: str,
        app_id: str = "privchat",
        refresh: bool = False,
        *,
        epoch: str = "",
        login_id: str = "",
    ) -> tuple[str, int]:
        """A signed token and its expiry (unix seconds). ``epoch`` names the store that issued
        it and ``login_id`` the login it belongs to (``AccountService.check_token`` checks
        both)."""
        now = int(time.time())
        exp = now + (self.refresh_ttl if refresh else self.ttl)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": str(user_id),
            "aud": AUDIENCE,
            "exp": exp,
            "iat": now,
            "jti": secrets.token_hex(16),
            "device_id": device_id,
            "business_system_id": BUSINESS_SYSTEM,
            "app_id": app_id,
            "session_version": 1,
            "epoch": epoch,
            "lid": login_id,
        }
        if refresh:
            claims["typ"] = "refresh"
        return jwt.encode(claims, self._key, algorithm="HS256"), exp

    def verify(self, token: str, refresh: bool = False) -> dict[str, Any]:
        """The claims of a valid token; ServiceError 10001/10002 otherwise."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "jti", "device_id"]},
            )
        except jwt.ExpiredSignatureError:
            raise ServiceError(ErrorCode.TOKEN_EXPIRED, "token expired") from None
        except jwt.PyJWTError:
            raise ServiceError(ErrorCode.INVALID_TOKEN, "invalid token") from None
        if (claims.get("typ") == "refresh") != refresh:
            raise ServiceError(ErrorCode.INVALID_TOKEN, "invalid token")
        try:
            claims["uid"] = int(claims["sub"])
        except (TypeError, ValueError):
            raise ServiceError(ErrorCode.INVALID_TOKEN, "invalid token") from None
        return claims

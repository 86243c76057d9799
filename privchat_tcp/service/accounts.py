"""Accounts and tokens: registration, the one token check (LOGIN and refresh share it), logout.

Password hashing is blocking work: the routes run ``passwords.hash``/``verify`` off the loop
and call the synchronous rules here before and after.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ErrorCode, InvalidParams, InvalidToken, ServiceError, TokenRevoked
from .auth import PasswordHasher, TokenIssuer
from .model import User
from .ports import AccountStore, TokenStore

__all__ = ["AccountService"]


class AccountService:
    def __init__(
        self,
        accounts: AccountStore,
        tokens_store: TokenStore,
        tokens: TokenIssuer,
        passwords: PasswordHasher,
        clock: Callable[[], int],
    ) -> None:
        self._accounts = accounts
        self._revoked = tokens_store
        self.tokens = tokens
        self.passwords = passwords
        self._clock = clock

    # ---- users ---------------------------------------------------------------------------------
    def get(self, user_id: int) -> User | None:
        return self._accounts.get_user(user_id)

    def find_login(self, login: str) -> User | None:
        """By username or email (trimmed, any case)."""
        return self._accounts.find_user(login.strip().lower())

    def check_available(self, username: str, email: str | None) -> None:
        if self._accounts.find_user(username.lower()) or (
            email and self._accounts.find_user(email.lower())
        ):
            raise InvalidParams("username already exists")

    def create(
        self,
        username: str,
        password_hash: str,
        nickname: str,
        phone: str | None,
        email: str | None,
    ) -> User:
        """Create the user; refused if the login was taken meanwhile (while hashing)."""
        self.check_available(username, email)
        return self._accounts.create_user(
            username, password_hash, nickname, phone, email, self._clock()
        )

    # ---- tokens --------------------------------------------------------------------------------
    def issue(self, user_id: int, device_id: str) -> tuple[str, str, int]:
        """(access token, refresh token, access expiry in unix seconds)."""
        token, exp = self.tokens.issue(user_id, device_id)
        refresh, _ = self.tokens.issue(user_id, device_id, refresh=True)
        return token, refresh, exp

    def check_token(
        self, token: str, device_id: str | None, refresh: bool = False
    ) -> tuple[User, dict[str, Any]]:
        """The user and claims of a valid, unrevoked token of an existing user, bound to
        ``device_id`` (None: any device). ServiceError 10001/10002/10003 otherwise."""
        claims = self.tokens.verify(token, refresh=refresh)
        if self._revoked.is_token_revoked(claims["jti"]):
            raise TokenRevoked()
        if device_id is not None and device_id != claims["device_id"]:
            raise InvalidToken("device does not match the token")
        user = self._accounts.get_user(claims["uid"])
        if user is None:
            raise InvalidToken()
        return user, claims

    def refresh(self, refresh_token: str, device_id: str | None) -> tuple[int, str]:
        """Use a refresh token once: (user id, device id) to issue new tokens for."""
        user, claims = self.check_token(refresh_token, device_id, refresh=True)
        self._revoked.revoke_token(claims["jti"], claims["exp"])
        return user.user_id, claims["device_id"]

    def revoke(self, jti: str) -> None:
        """Revoke a token by id until the longest a token of this server can live."""
        if not jti:
            raise ServiceError(ErrorCode.INVALID_TOKEN, "invalid token")
        self._revoked.revoke_token(jti, self._clock() // 1000 + self.tokens.refresh_ttl)

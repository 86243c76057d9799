"""Accounts and tokens: registration, the one token check (LOGIN and refresh share it), logout.

Password hashing is blocking work: the routes run ``passwords.hash``/``verify`` off the loop
and call the synchronous rules here before and after.

Every token carries two claims besides PrivChat's: ``epoch``, the epoch of the store that
issued it (a token of another store, e.g. from before a restart of a memory-only server whose
user ids start again at 100000000, names users it never knew), and ``lid``, the id of the login
it belongs to: a password login or registration starts one, and the access and refresh tokens
issued for it and every pair refreshed from them share it, so a logout revokes them all.
"""

from __future__ import annotations

import hmac
import secrets
import unicodedata
from collections.abc import Callable
from typing import Any

from ..errors import ErrorCode, InvalidParams, InvalidToken, ServiceError, TokenRevoked
from .auth import PasswordHasher, TokenIssuer
from .entities import EntityFeed
from .model import User
from .ports import AccountStore, ProfileStore, TokenStore

__all__ = ["AccountService"]


class AccountService:
    def __init__(
        self,
        accounts: AccountStore,
        tokens_store: TokenStore,
        tokens: TokenIssuer,
        passwords: PasswordHasher,
        clock: Callable[[], int],
        epoch: str = "",
        feed: EntityFeed | None = None,
        phones: ProfileStore | None = None,
    ) -> None:
        #: the epoch of the store: the tokens of this server carry it
        self.epoch = epoch
        self._accounts = accounts
        self._revoked = tokens_store
        self.tokens = tokens
        self.passwords = passwords
        self._clock = clock
        #: entity versions (``entity/sync_entities``): a new user is in their own view
        self.feed = feed if feed is not None else EntityFeed(None)
        self._phones = phones

    # ---- users ---------------------------------------------------------------------------------
    def get(self, user_id: int) -> User | None:
        return self._accounts.get_user(user_id)

    def find_login(self, login: str) -> User | None:
        """By username or email (trimmed, any case, Unicode in NFC)."""
        return self._accounts.find_user(unicodedata.normalize("NFC", login.strip()).lower())

    def check_available(self, username: str, email: str | None, phone: str | None = None) -> None:
        """10100 naming what is taken: the username, the email or the phone number."""
        if self._accounts.find_user(username.lower()):
            raise InvalidParams("username already exists")
        if email and self._accounts.find_user(email.lower()):
            raise InvalidParams("email already registered")
        if phone and self._phones is not None and self._phones.find_by_phone(phone):
            raise InvalidParams("phone already registered")

    def create(
        self,
        username: str,
        password_hash: str,
        nickname: str,
        phone: str | None,
        email: str | None,
    ) -> User:
        """Create the user; refused if the login was taken meanwhile (while hashing)."""
        self.check_available(username, email, phone)
        user = self._accounts.create_user(
            username, password_hash, nickname, phone, email, self._clock()
        )
        self.feed.user_created(user.user_id)
        return user

    # ---- tokens --------------------------------------------------------------------------------
    def issue(
        self, user_id: int, device_id: str, login_id: str | None = None
    ) -> tuple[str, str, int]:
        """(access token, refresh token, access expiry in unix seconds) of the login
        ``login_id`` (None: a new login)."""
        lid = login_id or secrets.token_hex(16)
        token, exp = self.tokens.issue(user_id, device_id, epoch=self.epoch, login_id=lid)
        refresh, _ = self.tokens.issue(
            user_id, device_id, refresh=True, epoch=self.epoch, login_id=lid
        )
        return token, refresh, exp

    def check_token(
        self, token: str, device_id: str | None, refresh: bool = False
    ) -> tuple[User, dict[str, Any]]:
        """The user and claims of a valid, unrevoked token issued by this store for an
        existing user, bound to ``device_id`` (None: any device). ServiceError
        10001/10002/10003 otherwise."""
        claims = self.tokens.verify(token, refresh=refresh)
        epoch, lid = claims.get("epoch"), claims.get("lid")
        if not isinstance(epoch, str) or not hmac.compare_digest(
            epoch.encode(), self.epoch.encode()
        ):
            raise InvalidToken()  # issued by another store: its user ids name other users
        if not isinstance(lid, str) or not lid:
            raise InvalidToken()
        if self._revoked.is_token_revoked(claims["jti"]) or self._revoked.is_token_revoked(lid):
            raise TokenRevoked()
        if device_id is not None and device_id != claims["device_id"]:
            raise InvalidToken("device does not match the token")
        user = self._accounts.get_user(claims["uid"])
        if user is None:
            raise InvalidToken()
        return user, claims

    def refresh(self, refresh_token: str, device_id: str | None) -> tuple[int, str, str]:
        """Use a refresh token once: (user id, device id, login id) to issue new tokens for
        (the new pair stays in the same login)."""
        user, claims = self.check_token(refresh_token, device_id, refresh=True)
        self._revoked.revoke_token(claims["jti"], claims["exp"])
        return user.user_id, claims["device_id"], claims["lid"]

    def logout(self, jti: str, login_id: str) -> None:
        """Revoke the access token ``jti`` and its login (the refresh token issued with it,
        and every token refreshed from them) until the longest a token of this server can
        live from now."""
        if not jti or not login_id:
            raise ServiceError(ErrorCode.INVALID_TOKEN, "invalid token")
        until = self._clock() // 1000 + max(self.tokens.ttl, self.tokens.refresh_ttl)
        self._revoked.revoke_token(jti, until)
        self._revoked.revoke_token(login_id, until)

"""Shops' Admin API tokens, encrypted at rest with TOKEN_ENCRYPTION_KEYS (Fernet).

A dump or a read-only leak of the database must not hand out every shop's Admin API. The
setting is comma-separated Fernet keys: the first encrypts, all of them decrypt, so a key is
rotated by putting a new one first and dropping the old one once no row needs it (every
worker start re-encrypts rows under the first key). A stored value starts with `PREFIX`;
anything else is a token the previous main stored in clear, which the worker encrypts at
start-up (`store.encrypt_stored_tokens`).
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PREFIX = "fernet:"


class TokenDecryptError(Exception):
    """A stored token that none of TOKEN_ENCRYPTION_KEYS opens (a key was dropped too soon)."""


def parse_keys(value: str) -> list[Fernet]:
    """The keys of TOKEN_ENCRYPTION_KEYS, first one first; ValueError names what is wrong."""
    keys = [part.strip() for part in value.split(",") if part.strip()]
    if not keys:
        raise ValueError("needs at least one Fernet key")
    parsed = []
    for position, key in enumerate(keys, 1):
        try:
            parsed.append(Fernet(key))
        except ValueError:
            raise ValueError(
                f"key {position} is not a Fernet key (32 url-safe base64-encoded bytes)"
            ) from None
    return parsed


def new_key() -> str:
    return Fernet.generate_key().decode()


class TokenCipher:
    def __init__(self, keys: str) -> None:
        parsed = parse_keys(keys)
        self._primary = parsed[0]
        self._all = MultiFernet(parsed)

    def encrypt(self, token: str) -> str:
        return PREFIX + self._primary.encrypt(token.encode()).decode()

    def encrypt_optional(self, token: str | None) -> str | None:
        return None if token is None else self.encrypt(token)

    def decrypt(self, stored: str | None) -> str | None:
        """The token in a stored value; a value without PREFIX is a legacy clear token."""
        if stored is None or not stored.startswith(PREFIX):
            return stored
        try:
            return self._all.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise TokenDecryptError("no key of TOKEN_ENCRYPTION_KEYS opens this token") from None

    def current(self, stored: str | None) -> bool:
        """Whether a stored value is encrypted under the first key (nothing to rewrite)."""
        if stored is None:
            return True
        if not stored.startswith(PREFIX):
            return False
        try:
            self._primary.decrypt(stored[len(PREFIX) :].encode())
        except InvalidToken:
            return False
        return True

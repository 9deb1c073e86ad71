"""API keys: how one is made and the hash it is stored and looked up by."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_PREFIX = "kv_"


def hash_key(api_key: str) -> bytes:
    """SHA-256 of the key: what the database keeps, and what the key cache is keyed by."""
    return hashlib.sha256(api_key.encode()).digest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


# A key's public id: the first bytes of its hash, in hex — enough to tell a participant's
# keys apart (two of them sharing 64 bits of SHA-256 will not happen), nothing to guess
# the key from.
KEY_ID_BYTES = 8
KEY_ID_PATTERN = r"^[0-9a-f]{16}$"


def key_id(key_hash: bytes) -> str:
    return key_hash[:KEY_ID_BYTES].hex()


# How long a key found valid is taken on trust by a process before it is looked up again
# (kevin.api.http's key cache). A revocation is told to every process at once, over
# LISTEN/NOTIFY on this channel (its payload: the key's id); this long is the bound when
# a process misses it, its listening connection being made again.
REVOKED_EVERYWHERE_WITHIN_S = 5.0
KEY_REVOKED_CHANNEL = "kevin_key_revoked"


@dataclass(frozen=True)
class AdminTokens:
    """The admin tokens accepted: KEVIN_ADMIN_TOKEN and, while the admin's clients move
    over to a new one, the one before it (KEVIN_ADMIN_TOKEN_PREVIOUS). None: no admin."""

    tokens: tuple[str, ...] = ()

    @classmethod
    def of(cls, current: str | None, previous: str | None = None) -> AdminTokens:
        """A previous token without a current one admits nobody: the admin routes stay
        closed, as with no token at all."""
        if not current:
            return cls()
        return cls(tuple(token for token in (current, previous) if token))

    def accepts(self, credential: str) -> bool:
        """Compared with every token in constant time, whichever matches."""
        found = False
        for token in self.tokens:
            found |= hmac.compare_digest(credential.encode(), token.encode())
        return found

    def accepts_hash(self, credential_hash: bytes) -> bool:
        """Whether a credential stored as its hash (a workbench session's) is one of them."""
        found = False
        for token in self.tokens:
            found |= hmac.compare_digest(credential_hash, hash_key(token))
        return found

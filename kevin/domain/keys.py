"""API keys: how one is made and the hash it is stored and looked up by."""

from __future__ import annotations

import hashlib
import secrets

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
# (kevin.api.http's key cache): a key revoked elsewhere is refused everywhere within this.
REVOKED_EVERYWHERE_WITHIN_S = 5.0

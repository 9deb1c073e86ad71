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

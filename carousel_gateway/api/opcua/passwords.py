"""OPC UA user passwords: stored as scrypt hashes, checked in constant time (pure).

OPC UA clients log in with a user name and a password (people choose those, unlike the
API's random tokens), so the config keeps a salted, memory-hard scrypt hash, never the
password. Format: ``scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>``.
"""

from __future__ import annotations

import hashlib
import hmac
import os

__all__ = ["hash_password", "verify_password"]

#: scrypt cost: about 25 ms of one core per check here; it is paid only at session start.
N, R, P = 2**13, 8, 1
_LENGTH = 32


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The config's ``password_hash`` for ``password`` (a fresh random salt by default)."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=_LENGTH)
    return f"scrypt${N}${R}${P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches the stored hash; False for anything malformed."""
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected) // 2,
        )
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(digest.hex(), expected)

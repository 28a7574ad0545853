"""SHA-256 for cache keys and identity names: hashlib's.

The interpreter's built-in `_sha2` / `_sha256` used to stand in for it on a cache hit, to skip
loading OpenSSL; that saved under 4 ms of CPU per hit (bench/README.md, "Tricks"), not enough for a
private module.
"""

from __future__ import annotations

from hashlib import sha256

__all__ = ["sha256"]

"""SHA-256 for cache keys and identity names, without loading OpenSSL on a cache hit.

`hashlib.sha256` is OpenSSL's: importing hashlib loads libcrypto (about 2 ms of a 25 ms hit). The
interpreter also has SHA-256 built in (`_sha256` up to Python 3.11, `_sha2` since 3.12; built into
the binary's interpreter), which computes the same digest; hashlib is the fallback wherever neither
is built in. tests/test_hashing.py checks the digests agree.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hashlib import sha256
else:
    try:
        from _sha2 import sha256
    except ImportError:
        try:
            from _sha256 import sha256
        except ImportError:
            from hashlib import sha256

__all__ = ["sha256"]

"""SHA-256 for cache keys and identity names; in the binary without loading OpenSSL on a cache hit.

`hashlib.sha256` is OpenSSL's: importing hashlib loads libcrypto (3-4 ms of CPU and 3.6 MB of RSS on
a hit, bench/README.md "Tricks"). The interpreter also has SHA-256 built in (`_sha256` up to Python
3.11, `_sha2` since 3.12), which computes the same digest. Those modules are private, so they are
used only by the interpreter the binary was built with (ecr_kubelet/pinned.py); anywhere else, and
wherever neither is built in, this is hashlib's. tests/test_hashing.py checks the digests agree.
"""

from __future__ import annotations

from ecr_kubelet import pinned

TYPE_CHECKING = False
if TYPE_CHECKING or not pinned.python():
    from hashlib import sha256
else:
    import sys

    try:  # the one this version has: an import that fails searches every finder first (0.3 ms in the binary)
        if sys.version_info >= (3, 12):
            from _sha2 import sha256
        else:
            from _sha256 import sha256
    except ImportError:
        from hashlib import sha256

__all__ = ["sha256"]

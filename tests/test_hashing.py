"""The built-in SHA-256 that cache keys use is SHA-256."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from ecr_kubelet.hashing import sha256


@given(st.binary(max_size=4096))
def test_digest_is_hashlibs_sha256(data: bytes) -> None:
    assert sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    incremental = sha256()
    incremental.update(data[:7])
    incremental.update(data[7:])
    assert incremental.hexdigest() == hashlib.sha256(data).hexdigest()


def test_only_the_binary_uses_the_built_in_module() -> None:
    """As the frozen binary on the interpreter it recorded: not hashlib; anywhere else: hashlib's."""
    import subprocess
    import sys

    from frozen import prelude

    code = "import sys\nfrom ecr_kubelet.hashing import sha256\nprint(sha256.__module__, 'hashlib' in sys.modules)"
    as_binary = subprocess.run([sys.executable, "-c", prelude() + code], capture_output=True, text=True, check=True)
    elsewhere = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert as_binary.stdout.split()[1] == "False" and as_binary.stdout.split()[0] in ("_sha2", "_sha256")
    assert elsewhere.stdout.split() == ["_hashlib", "True"]

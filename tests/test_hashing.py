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

"""JSON: `json`'s results and errors, and in the binary without importing the `json` package on a cache hit.

`json` is the library; in the frozen binary this is a faster way into the same C scanner and
encoder it uses. The package itself imports `re` (json.decoder and json.encoder compile patterns at
import), and `re` imports enum, functools and collections: milliseconds of a cache hit
(bench/README.md), for patterns the C codec never uses. So there the common case (valid input,
plain values) goes straight to `_json`; anything else (malformed input, a duplicate field refused
by the hook) is handed to `json` itself, so errors and results are exactly json's
(tests/test_jsoncodec.py checks both against `json` property by property). `_json`'s scanner and
encoder constructors are private and change between CPython versions, so they are used only by the
interpreter the binary was built with (ecr_kubelet/pinned.py); anywhere else this is `json`.
"""

from __future__ import annotations

from ecr_kubelet import pinned

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    PairsHook = Callable[[list[tuple[str, Any]]], Any]

HAVE_C_CODEC = False
if pinned.python():
    try:
        from _json import encode_basestring, encode_basestring_ascii, make_encoder, make_scanner
    except ImportError:  # built without it: json alone
        pass
    else:
        HAVE_C_CODEC = True

_WHITESPACE = " \t\n\r"  # JSON's white space (RFC 8259), the only characters json skips around a value
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class _ScanContext:
    """The settings the C scanner reads from its context: json.loads' defaults and one pairs hook."""

    __slots__ = ("memo", "object_hook", "object_pairs_hook", "parse_constant", "parse_float", "parse_int",
                 "strict")

    def __init__(self, object_pairs_hook: PairsHook | None) -> None:
        self.strict = True
        self.object_hook = None
        self.object_pairs_hook = object_pairs_hook
        self.parse_float = float
        self.parse_int = int
        self.parse_constant = _CONSTANTS.__getitem__
        self.memo: dict[str, str] = {}


def loads(text: str, object_pairs_hook: PairsHook | None = None) -> Any:
    """`json.loads(text, object_pairs_hook=...)`, with the same result and the same exceptions."""
    if HAVE_C_CODEC:
        start = len(text) - len(text.lstrip(_WHITESPACE))
        try:
            # typeshed describes the context as a scanner; the C code reads only these attributes
            value, end = make_scanner(_ScanContext(object_pairs_hook))(text, start)  # type: ignore[arg-type]
        except Exception:  # noqa: S110
            # json says precisely what is wrong (and raises the hook's error again); the C scanner
            # cannot build its JSONDecodeError from json.decoder, which is not loaded yet.
            pass
        else:
            if not text[end:].strip(_WHITESPACE):
                return value
    import json

    return json.loads(text, object_pairs_hook=object_pairs_hook)


def dumps(value: Any, *, sort_keys: bool = False, ensure_ascii: bool = True, compact: bool = False) -> str:
    """`json.dumps(value, sort_keys=..., ensure_ascii=..., separators=(",", ":") if compact)`."""
    if HAVE_C_CODEC:
        try:
            encode = make_encoder({}, _unserializable, encode_basestring_ascii if ensure_ascii else encode_basestring,
                                  None, ":" if compact else ": ", "," if compact else ", ", sort_keys, False, True)
            return "".join(encode(value, 0))
        except Exception:  # noqa: S110  (json raises what is wrong: the same error)
            pass
    import json

    return json.dumps(value, sort_keys=sort_keys, ensure_ascii=ensure_ascii, separators=(",", ":") if compact else None)


def _unserializable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

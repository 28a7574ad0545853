"""The kubelet's image matching, for ``matchImages`` patterns and for ``auth`` keys.

The kubelet decides whether to run a credential provider, and which returned credentials apply to an
image, with one rule (``URLsMatchStr`` in ``pkg/credentialprovider/keyring.go``):

* both strings are parsed as ``"https://" + s`` with Go's ``net/url.Parse``;
* the ports must be equal (``""`` when there is none, so a pattern without a port never matches an
  image with one and the other way round);
* the host names must have the same number of dot-separated labels, and each pattern label is a Go
  ``path/filepath.Match`` glob for the image label at the same place (``*`` stays within one label);
* the pattern's (decoded) path must be a string prefix of the image's path.

This module re-implements that rule in pure Python. The URL parser follows Go's ``net/url`` as built
with Go 1.26 semantics (the kubelet's ``godebug default``), including the strict handling of colons in
``https`` hosts, so :func:`parse_match_pattern` fails exactly where the kubelet's config validation
reports ``match image is invalid``. Strings are handled as UTF-8 bytes, as Go does.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache

__all__ = [
    "GlobPatternError",
    "MatchPatternError",
    "ParsedURL",
    "glob_match",
    "glob_syntax_error",
    "parse_match_pattern",
    "urls_match",
]

_HEX = frozenset(b"0123456789abcdefABCDEF")
# ASCII bytes Go's URL parser refuses in a host (after the control-character check): they would
# need %-encoding, and a host may only %-encode non-ASCII bytes.
_BAD_HOST_BYTES = frozenset(b" \\^`{|}")
# Bytes Go's shouldEscape(c, encodeHost) reports: a zone may not %-encode these (except space).
_HOST_MUST_ESCAPE = frozenset([*range(0x20), *b"#/?@\\^`{|}", *range(0x7F, 0x100)])
_USERINFO_OK = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._:~!$&'()*+,;=%@")


class MatchPatternError(ValueError):
    """A string that Go's ``url.Parse("https://" + s)`` rejects; ``reason`` is Go's message."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f'parse "https://{text}": {reason}')
        self.text = text
        self.reason = reason


class GlobPatternError(ValueError):
    """A host label that Go's ``filepath.Match`` reports as a malformed pattern."""


@dataclass(frozen=True)
class ParsedURL:
    """The parts of ``https://<raw>`` the kubelet looks at.

    Text fields hold the decoded bytes as ``str`` (UTF-8, undecodable bytes kept as surrogate
    escapes), so they round-trip exactly to what Go compares.
    """

    raw: str
    host: str  # url.URL.Host: host[:port], %-decoded
    hostname: str  # host without the port, as net.SplitHostPort would give (or the whole host)
    port: str  # "" when absent or when SplitHostPort fails
    labels: tuple[str, ...]  # hostname split on "."
    path: str  # url.URL.Path, %-decoded
    _label_bytes: tuple[bytes, ...] = field(repr=False, compare=False, default=())
    _path_bytes: bytes = field(repr=False, compare=False, default=b"")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _to_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates cannot come from a Go string; Go's decoders turn them into U+FFFD.
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text).encode("utf-8")


# --------------------------------------------------------------------------------------------- url


class _ParseError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _quote(data: bytes) -> str:
    """Roughly Go's strconv.Quote, enough for error messages."""
    text = _text(data).encode("utf-8", "backslashreplace").decode("utf-8")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unescape(data: bytes, mode: str) -> bytes:
    """Go's net/url unescape for modes "host", "zone", "path", "userinfo", "fragment"."""
    i = 0
    n = len(data)
    percent = False
    while i < n:
        c = data[i]
        if c == 0x25:  # '%'
            percent = True
            if i + 2 >= n or data[i + 1] not in _HEX or data[i + 2] not in _HEX:
                raise _ParseError(f"invalid URL escape {_quote(data[i : i + 3])}")
            escape = data[i : i + 3]
            if mode == "host" and int(chr(data[i + 1]), 16) < 8 and escape != b"%25":
                raise _ParseError(f"invalid URL escape {_quote(escape)}")
            if mode == "zone":
                value = int(escape[1:], 16)
                if escape != b"%25" and value != 0x20 and value in _HOST_MUST_ESCAPE:
                    raise _ParseError(f"invalid URL escape {_quote(escape)}")
            i += 3
            continue
        if mode in ("host", "zone") and c < 0x80 and (c in _BAD_HOST_BYTES or c < 0x20 or c == 0x7F):
            raise _ParseError(f"invalid character {_quote(bytes([c]))} in host name")
        i += 1
    if not percent:
        return data
    out = bytearray()
    i = 0
    while i < n:
        if data[i] == 0x25:
            out.append(int(data[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


def _valid_optional_port(port: bytes) -> bool:
    if not port:
        return True
    return port[:1] == b":" and all(0x30 <= b <= 0x39 for b in port[1:])


def _parse_ip_literal(text: bytes) -> None:
    """Accept what Go's netip.ParseAddr accepts for a bracketed host: IPv6 with an optional zone."""
    addr, sep, zone = text.partition(b"%")
    if sep and not zone:
        raise _ParseError(f"invalid host: ParseAddr({_quote(text)}): zone must be a non-empty string")
    try:
        addr_text = addr.decode("ascii")
    except UnicodeDecodeError:
        raise _ParseError(f"invalid host: ParseAddr({_quote(text)}): unexpected character") from None
    if "." in addr_text and ":" not in addr_text:
        try:
            ipaddress.IPv4Address(addr_text)
        except ValueError:
            pass
        else:
            raise _ParseError("invalid IP-literal")
    try:
        ipaddress.IPv6Address(addr_text)
    except ValueError as exc:
        raise _ParseError(f"invalid host: ParseAddr({_quote(text)}): {exc}") from None


def _parse_host(host: bytes) -> bytes:
    bracket = host.rfind(b"[")
    if bracket > 0:
        raise _ParseError("invalid IP-literal")
    if bracket == 0:
        close = host.rfind(b"]")
        if close < 0:
            raise _ParseError("missing ']' in host")
        colon_port = host[close + 1 :]
        if not _valid_optional_port(colon_port):
            raise _ParseError(f"invalid port {_quote(colon_port)} after host")
        name = host[1:close]
        zone_at = name.find(b"%25")
        if zone_at >= 0:
            unescaped = _unescape(name[:zone_at], "host") + _unescape(name[zone_at:], "zone")
        else:
            unescaped = _unescape(name, "host")
        _parse_ip_literal(unescaped)
        return b"[" + unescaped + b"]" + colon_port
    first = host.find(b":")
    if first >= 0:
        last = host.rfind(b":")
        # Go 1.26 (urlstrictcolons=1) keeps the first colon for https, so "a:1:2" has port ":1:2".
        colon_port = host[first:] if last != first else host[last:]
        if not _valid_optional_port(colon_port):
            raise _ParseError(f"invalid port {_quote(colon_port)} after host")
    return _unescape(host, "host")


def _split_host_port(hostport: bytes) -> tuple[bytes, bytes] | None:
    """Go's net.SplitHostPort; None where it returns an error."""
    last = hostport.rfind(b":")
    if last < 0:
        return None
    start, end_pos = 0, 0
    if hostport[:1] == b"[":
        end = hostport.find(b"]")
        if end < 0 or end + 1 == len(hostport) or end + 1 != last:
            return None
        host = hostport[1:end]
        start, end_pos = 1, end + 1
    else:
        host = hostport[:last]
        if b":" in host:
            return None
    if b"[" in hostport[start:] or b"]" in hostport[end_pos:]:
        return None
    return host, hostport[last + 1 :]


@lru_cache(maxsize=4096)
def _parse_cached(text: str) -> ParsedURL | _ParseError:
    try:
        return _parse(text)
    except _ParseError as exc:
        return exc


def _parse(text: str) -> ParsedURL:
    raw = b"https://" + _to_bytes(text)
    main, hash_sign, fragment = raw.partition(b"#")
    if any(b < 0x20 or b == 0x7F for b in main):
        raise _ParseError("net/url: invalid control character in URL")
    rest = main[len(b"https:") :]
    rest = rest[:-1] if rest.endswith(b"?") and rest.count(b"?") == 1 else rest.partition(b"?")[0]
    # rest starts with "//": the authority runs to the first "/".
    authority = rest[2:]
    slash = authority.find(b"/")
    path_raw = b""
    if slash >= 0:
        authority, path_raw = authority[:slash], authority[slash:]
    at = authority.rfind(b"@")
    host = _parse_host(authority[at + 1 :] if at >= 0 else authority)
    if at >= 0:
        userinfo = authority[:at]
        if any(b not in _USERINFO_OK for b in userinfo):
            raise _ParseError("net/url: invalid userinfo")
        user, _, password = userinfo.partition(b":")
        _unescape(user, "userinfo")
        _unescape(password, "userinfo")
    path = _unescape(path_raw, "path")
    if hash_sign and fragment:
        _unescape(fragment, "fragment")

    split = _split_host_port(host)
    hostname, port = split if split is not None else (host, b"")
    label_bytes = tuple(hostname.split(b"."))
    return ParsedURL(
        raw=text,
        host=_text(host),
        hostname=_text(hostname),
        port=_text(port),
        labels=tuple(_text(label) for label in label_bytes),
        path=_text(path),
        _label_bytes=label_bytes,
        _path_bytes=path,
    )


def parse_match_pattern(text: str) -> ParsedURL:
    """Parse a ``matchImages`` entry (or an image, or an auth key) the way the kubelet does.

    Raises :class:`MatchPatternError` (a ``ValueError``) where ``url.Parse("https://" + text)`` fails:
    a space or ``^`` in the host, a non-numeric port, a bad ``%`` escape, a control character, ...
    """
    result = _parse_cached(text)
    if isinstance(result, _ParseError):
        raise MatchPatternError(text, result.reason)
    return result


# -------------------------------------------------------------------------------------------- glob


def _decode_rune(data: bytes, pos: int) -> tuple[int, int]:
    """Go's utf8.DecodeRune on data[pos:]: (rune, width); invalid input gives (U+FFFD, 1)."""
    first = data[pos]
    if first < 0x80:
        return first, 1
    width = 2 if 0xC2 <= first <= 0xDF else 3 if 0xE0 <= first <= 0xEF else 4 if 0xF0 <= first <= 0xF4 else 0
    if width:
        try:
            return ord(data[pos : pos + width].decode("utf-8")), width
        except UnicodeDecodeError:
            pass
    return 0xFFFD, 1


def _scan_chunk(pattern: bytes) -> tuple[bool, bytes, bytes]:
    star = False
    while pattern[:1] == b"*":
        pattern = pattern[1:]
        star = True
    in_range = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == 0x5C:  # backslash escapes the next byte
            if i + 1 < len(pattern):
                i += 1
        elif c == 0x5B:  # [
            in_range = True
        elif c == 0x5D:  # ]
            in_range = False
        elif c == 0x2A and not in_range:  # *
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _get_esc(chunk: bytes) -> tuple[int, bytes]:
    if not chunk or chunk[0] in (0x2D, 0x5D):  # empty, '-' or ']'
        raise GlobPatternError("syntax error in pattern")
    if chunk[0] == 0x5C:
        chunk = chunk[1:]
        if not chunk:
            raise GlobPatternError("syntax error in pattern")
    rune, width = _decode_rune(chunk, 0)
    if rune == 0xFFFD and width == 1:
        raise GlobPatternError("syntax error in pattern")
    rest = chunk[width:]
    if not rest:
        raise GlobPatternError("syntax error in pattern")
    return rune, rest


def _match_chunk(chunk: bytes, name: bytes) -> bytes | None:
    """Match chunk against a prefix of name; the rest of name, or None. Raises on a bad pattern."""
    failed = False
    while chunk:
        if not failed and not name:
            failed = True
        c = chunk[0]
        if c == 0x5B:  # [ character class
            rune = -1
            if not failed:
                rune, width = _decode_rune(name, 0)
                name = name[width:]
            chunk = chunk[1:]
            negated = False
            if chunk[:1] == b"^":
                negated = True
                chunk = chunk[1:]
            matched = False
            ranges = 0
            while True:
                if chunk[:1] == b"]" and ranges > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _get_esc(chunk)
                hi = lo
                if chunk[0] == 0x2D:  # '-'
                    hi, chunk = _get_esc(chunk[1:])
                if lo <= rune <= hi:
                    matched = True
                ranges += 1
            if matched == negated:
                failed = True
        elif c == 0x3F:  # ?
            if not failed:
                if name[0] == 0x2F:
                    failed = True
                _, width = _decode_rune(name, 0)
                name = name[width:]
            chunk = chunk[1:]
        else:
            if c == 0x5C:
                chunk = chunk[1:]
                if not chunk:
                    raise GlobPatternError("syntax error in pattern")
            if not failed:
                if chunk[0] != name[0]:
                    failed = True
                name = name[1:]
            chunk = chunk[1:]
    return None if failed else name


def glob_match(pattern: bytes | str, name: bytes | str) -> bool:
    """Go's ``path/filepath.Match`` (Unix): raises :class:`GlobPatternError` for a malformed pattern."""
    pat = _to_bytes(pattern) if isinstance(pattern, str) else pattern
    rest = _to_bytes(name) if isinstance(name, str) else name
    while pat:
        star, chunk, pat = _scan_chunk(pat)
        if star and not chunk:
            return 0x2F not in rest
        tail = _match_chunk(chunk, rest)
        if tail is not None and (not tail or pat):
            rest = tail
            continue
        if star:
            found = False
            i = 0
            while i < len(rest) and rest[i] != 0x2F:
                tail = _match_chunk(chunk, rest[i + 1 :])
                if tail is not None:
                    if not pat and tail:
                        i += 1
                        continue
                    rest = tail
                    found = True
                    break
                i += 1
            if found:
                continue
        return False
    return not rest


def glob_syntax_error(pattern: bytes | str) -> str | None:
    """Why this glob is malformed (Go's filepath.Match fails on it once it gets there), or None."""
    pat = _to_bytes(pattern) if isinstance(pattern, str) else pattern
    try:
        while pat:
            _, chunk, pat = _scan_chunk(pat)
            _match_chunk(chunk, b"")
    except GlobPatternError as exc:
        return str(exc)
    return None


# ----------------------------------------------------------------------------------------- matching


def urls_match(pattern: str, image: str) -> bool:
    """True when the kubelet would consider ``image`` covered by ``pattern``.

    Works for ``matchImages`` entries against the requested image (``host[:port]/repo``, without tag
    or digest) and for ``auth`` keys of a response. Unparsable input and malformed globs never match.
    """
    glob = _parse_cached(pattern)
    target = _parse_cached(image)
    if isinstance(glob, _ParseError) or isinstance(target, _ParseError):
        return False
    if glob.port != target.port:
        return False
    if len(glob._label_bytes) != len(target._label_bytes):
        return False
    if not target._path_bytes.startswith(glob._path_bytes):
        return False
    try:
        return all(glob_match(want, have) for want, have in zip(glob._label_bytes, target._label_bytes, strict=True))
    except GlobPatternError:
        return False

"""The kubelet's matchImages / auth-key matching (URLsMatchStr), re-implemented in image_match."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecr_kubelet.image_match import (
    GlobPatternError,
    MatchPatternError,
    glob_match,
    glob_syntax_error,
    parse_match_pattern,
    urls_match,
)

ACCOUNT_HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


@pytest.mark.parametrize(
    ("pattern", "image", "expected"),
    [
        ("*.dkr.ecr.*.amazonaws.com", f"{ACCOUNT_HOST}/app", True),
        ("*.dkr.ecr.*.amazonaws.com", ACCOUNT_HOST, True),
        ("*.dkr.ecr.*.amazonaws.com", f"{ACCOUNT_HOST}/team/app", True),
        ("*.dkr.ecr.*.amazonaws.com", "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/app", False),
        ("*.dkr.ecr.*.amazonaws.com.cn", "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/app", True),
        ("*.dkr.ecr.*.amazonaws.com", f"{ACCOUNT_HOST}:443/app", False),
        ("*.dkr.ecr.*.amazonaws.com", f"{ACCOUNT_HOST}.evil.example/app", False),
        ("*.dkr.ecr.*.amazonaws.com", "123456789012.dkr.cat.us-east-1.amazonaws.com/app", False),
        ("*.dkr.ecr.*.amazonaws.com", "123456789012.dkr.ecr.us-east-1.amazonaws.lol/app", False),
        ("*.dkr-ecr.*.on.aws", "123456789012.dkr-ecr.us-east-1.on.aws/app", True),
        ("*.dkr.ecr-fips.*.amazonaws.com", "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com/x", True),
        ("*.dkr.ecr-fips.us-gov-*.amazonaws.com", "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com/x", False),
        ("public.ecr.aws", "public.ecr.aws/nginx/nginx", True),
        ("public.ecr.aws", "docker.io/library/nginx", False),
        ("*", "localhost/app", True),
        ("*", "docker.io/library/nginx", False),
        ("registry.internal:5000", "registry.internal:5000/app", True),
        ("registry.internal:5000", "registry.internal/app", False),
        ("registry.internal", "registry.internal:5000/app", False),
        ("registry.io/team", "registry.io/team/app", True),
        ("registry.io/team", "registry.io/teams/app", True),  # a string prefix, not a path prefix
        ("registry.io/team/", "registry.io/teams/app", False),
        ("registry.io/team/app", "registry.io/team", False),
        ("registry.io/te%61m", "registry.io/team/app", True),  # paths compare decoded
        ("app*.k8s.io", "app1.k8s.io/x", True),
        ("app?.k8s.io", "app12.k8s.io/x", False),
        ("[::1]:5000", "[::1]:5000/x", True),
        ("a b", "a b/x", False),  # unparsable patterns never match
    ],
)
def test_urls_match(pattern: str, image: str, expected: bool) -> None:
    assert urls_match(pattern, image) is expected


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("a b.example.com", 'invalid character " " in host name'),
        ("registry.example.com:abc", 'invalid port ":abc" after host'),
        ("registry.example.com:1:2", 'invalid port ":1:2" after host'),
        ("registry%zz.example.com", 'invalid URL escape "%zz"'),
        ("registry%41.example.com", 'invalid URL escape "%41"'),  # hosts may only escape non-ASCII
        ("registry.example.com/%zz", 'invalid URL escape "%zz"'),
        ("registry.example.com#%zz", 'invalid URL escape "%zz"'),
        ("registry\x7f.example.com", "invalid control character"),
        ("registry.example.com\n", "invalid control character"),
        ("reg^istry.example.com", 'invalid character "^" in host name'),
        ("a[b].example.com", "invalid IP-literal"),
        ("[1.2.3.4]", "invalid IP-literal"),
        ("[::1", "missing ']' in host"),
        ("[::1]x", 'invalid port "x" after host'),
        ("us{er@registry.example.com", "invalid userinfo"),
    ],
)
def test_parse_errors(pattern: str, reason: str) -> None:
    with pytest.raises(MatchPatternError) as excinfo:
        parse_match_pattern(pattern)
    assert reason in excinfo.value.reason
    assert isinstance(excinfo.value, ValueError)
    assert pattern.strip("\n") in str(excinfo.value) or "\n" in pattern


@pytest.mark.parametrize(
    "pattern",
    [
        "*.dkr.ecr.*.amazonaws.com",
        "registry.example.com:",  # an empty port is allowed
        "registry.example.com:5000/path/to",
        "user:pass@registry.example.com",
        "registry.example.com?query",
        "registry.example.com#frag",
        "[fe80::1%25eth0]:5000",
        "*",
        "",
        "h\u00e9llo.example",
    ],
)
def test_parse_accepts(pattern: str) -> None:
    parse_match_pattern(pattern)


def test_parsed_fields() -> None:
    parsed = parse_match_pattern("user@*.registry.io:8080/a%2Fb?x#y")
    assert parsed.host == "*.registry.io:8080"
    assert parsed.hostname == "*.registry.io"
    assert parsed.port == "8080"
    assert parsed.labels == ("*", "registry", "io")
    assert parsed.path == "/a/b"


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*", "abc", True),
        ("*", "", True),
        ("a*c", "abbbc", True),
        ("a*c", "abbbd", False),
        ("a?c", "abc", True),
        ("a?c", "a\u00e9c", True),  # ? is one rune, not one byte
        ("[a-c]x", "bx", True),
        ("[^a-c]x", "bx", False),
        ("[^a-c]x", "dx", True),
        ("\\*", "*", True),
        ("\\*", "a", False),
        ("*/b", "a/b", True),
        ("*", "a/b", False),
    ],
)
def test_glob_match(pattern: str, name: str, expected: bool) -> None:
    assert glob_match(pattern, name) is expected


@pytest.mark.parametrize("pattern", ["[", "[a-", "a\\", "[]a]", "[-]"])
def test_glob_bad_patterns(pattern: str) -> None:
    with pytest.raises(GlobPatternError):
        glob_match(pattern, "a")
    assert glob_syntax_error(pattern)


def test_glob_bad_pattern_not_reached() -> None:
    # Like Go, an early mismatch returns False before the malformed part is parsed.
    assert glob_match("b*[", "a") is False
    assert glob_syntax_error("b*[") is not None
    assert glob_syntax_error("a*[bc]?") is None


_LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_HOST = st.lists(_LABEL, min_size=1, max_size=6).map(".".join)
_PATH = st.lists(_LABEL, max_size=3).map(lambda parts: "".join("/" + p for p in parts))


@settings(max_examples=300, deadline=None)
@given(host=_HOST, path=_PATH)
def test_hosts_match_themselves_and_their_wildcards(host: str, path: str) -> None:
    image = host + path
    assert urls_match(host, image)
    assert urls_match(image, image)
    labels = host.split(".")
    assert urls_match(".".join("*" for _ in labels), image)
    for i in range(len(labels)):
        starred = ".".join("*" if j == i else label for j, label in enumerate(labels))
        assert urls_match(starred, image)
    # One label more or less never matches, and neither does a port on one side only.
    assert not urls_match("*." + host, image)
    assert not urls_match(host + ":5000", image)
    assert not urls_match(host, f"{host}:5000{path}")


@settings(max_examples=300, deadline=None)
@given(host=_HOST, path=_PATH, extra=_LABEL)
def test_path_is_a_prefix(host: str, path: str, extra: str) -> None:
    assert urls_match(host + path, f"{host}{path}/{extra}")
    assert not urls_match(f"{host}{path}/{extra}", host + path)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=30))
def test_never_raises_on_arbitrary_input(text: str) -> None:
    # Any input gives a bool, and exactly what the parse says: unparsable never matches, and a
    # parsable name without glob characters matches itself.
    itself, star = urls_match(text, text), urls_match("*", text)
    assert isinstance(itself, bool) and isinstance(star, bool)
    try:
        parsed = parse_match_pattern(text)
    except MatchPatternError:
        assert itself is False and star is False
        return
    if not any(ch in "*?[\\" for ch in text):
        assert itself is True
    # "*" covers exactly one host label, with no port and any path
    assert star == (len(parsed.labels) == 1 and not parsed.port and glob_match("*", parsed.labels[0]))


# --- differential check against Go's own net/url and path/filepath (skipped without a Go toolchain) ---

_GO_HARNESS = textwrap.dedent(
    """
    package main

    import (
        "bufio"
        "encoding/json"
        "net"
        "net/url"
        "os"
        "path/filepath"
        "strings"
    )

    func parse(s string) (*url.URL, error) { return url.Parse("https://" + s) }

    func split(u *url.URL) ([]string, string) {
        h, p, err := net.SplitHostPort(u.Host)
        if err != nil {
            h, p = u.Host, ""
        }
        return strings.Split(h, "."), p
    }

    func main() {
        in := bufio.NewScanner(os.Stdin)
        out := json.NewEncoder(os.Stdout)
        for in.Scan() {
            var pair [2]string
            if err := json.Unmarshal(in.Bytes(), &pair); err != nil {
                panic(err)
            }
            g, gerr := parse(pair[0])
            t, terr := parse(pair[1])
            matched := gerr == nil && terr == nil
            if matched {
                gl, gp := split(g)
                tl, tp := split(t)
                matched = gp == tp && len(gl) == len(tl) && strings.HasPrefix(t.Path, g.Path)
                for i := 0; matched && i < len(gl); i++ {
                    ok, err := filepath.Match(gl[i], tl[i])
                    matched = ok && err == nil
                }
            }
            out.Encode([]bool{gerr == nil, matched})
        }
    }
    """
)


@pytest.mark.skipif(shutil.which("go") is None, reason="needs a Go toolchain")
def test_agrees_with_go(tmp_path: Path) -> None:
    (tmp_path / "main.go").write_text(_GO_HARNESS)
    # Go 1.26 semantics (strict colons in https hosts), as the kubelet's go.mod selects.
    (tmp_path / "go.mod").write_text("module harness\n\ngo 1.26\n")
    build = subprocess.run(
        ["go", "build", "-o", str(tmp_path / "harness"), "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"},
    )
    if build.returncode != 0:
        pytest.skip(f"cannot build the Go harness: {build.stderr.strip()[:200]}")
    rng = random.Random(20240601)
    alphabet = [*"ab.*?-:/%@#[]^ \\", "é", "%41", "%c3%a9", "%zz", ":443", "[::1]", "[fe80::1%25eth0]"]

    def gen() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 9)))

    pairs = []
    for _ in range(6000):
        pattern = gen()
        image = pattern if rng.random() < 0.3 else gen()
        if rng.random() < 0.5:
            image = "".join(c for c in image if c not in "*?[]")
        pairs.append((pattern, image))
    result = subprocess.run(
        [str(tmp_path / "harness")],
        input="".join(json.dumps(p) + "\n" for p in pairs),
        capture_output=True,
        text=True,
        check=True,
    )
    mismatches = []
    for (pattern, image), line in zip(pairs, result.stdout.splitlines(), strict=True):
        go_ok, go_match = json.loads(line)
        try:
            parse_match_pattern(pattern)
            ok = True
        except MatchPatternError:
            ok = False
        if ok != go_ok or urls_match(pattern, image) != go_match:
            mismatches.append((pattern, image, go_ok, go_match))
    assert not mismatches[:10]

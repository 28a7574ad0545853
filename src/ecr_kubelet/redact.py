"""Keep secrets out of everything we print.

Every secret the run handles (ECR token and password, AWS secret keys and session tokens, the pod's
service-account token, a proxy's user:password) is registered here; log records (logs.RedactingFilter)
and the final error line are scrubbed of them. This is defence in depth: our messages never interpolate
secrets in the first place.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

_MASK = "<redacted>"
_MIN_SECRET_LEN = 8  # shorter strings would mask ordinary words
_secrets: set[str] = set()
_userinfos: set[str] = set()  # a proxy's `user:pass`, masked where an "@" follows it, however short


def register(*values: str | None) -> None:
    for value in values:
        if value and len(value) >= _MIN_SECRET_LEN:
            _secrets.add(value)


# Proxy variables botocore (through urllib's getproxies) reads, in any case.
PROXY_VARIABLES = frozenset({"HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"})


def register_environment(env: Mapping[str, str]) -> None:
    """Secrets that may reach us through the environment."""
    register(env.get("AWS_SECRET_ACCESS_KEY"), env.get("AWS_SESSION_TOKEN"))
    for name, value in env.items():
        if name.upper() in PROXY_VARIABLES and value:
            register_proxy(value)


def register_proxy(url: str) -> None:
    """A proxy URL's credentials, in every form a message may show them: `user:pass@` as written and
    percent-decoded, and the password alone when it is long enough to mask safely. Any scheme (botocore's
    own masking misses socks5), or none (`user:pass@host:port`, which urllib accepts)."""
    userinfo = proxy_userinfo(url)
    if not userinfo:
        return
    forms = {userinfo}
    if "%" in userinfo:  # urllib.parse only then: a cache hit does not otherwise load it
        from urllib.parse import unquote

        forms.add(unquote(userinfo))
    for form in forms:
        _userinfos.add(form)
        register(form.partition(":")[2])


def proxy_userinfo(url: str) -> str:
    """The `user[:password]` of a proxy URL with or without a scheme; "" when it has none. Plain string
    work: urllib.parse reads a scheme-less `user:pass@host` as scheme "user", and its port check raises."""
    _, sep, rest = url.partition("://")
    netloc = (rest if sep else url).split("/", 1)[0]
    userinfo, at, _ = netloc.rpartition("@")
    return userinfo if at else ""


def scrub(text: str) -> str:
    # Longest first, so a secret containing another is masked whole.
    for userinfo in sorted(_userinfos, key=len, reverse=True):
        if userinfo + "@" in text:
            text = text.replace(userinfo + "@", _MASK + "@")
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, _MASK)
    return text

"""Keep secrets out of everything we print.

Every secret the run handles (ECR token and password, AWS secret keys and session tokens, the pod's
service-account token) is registered here; log records (logs.RedactingFilter) and the final error
line are scrubbed of them. This is defence in depth: our messages never interpolate secrets in the first place.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

_MASK = "<redacted>"
_MIN_SECRET_LEN = 8  # shorter strings would mask ordinary words
_secrets: set[str] = set()


def register(*values: str | None) -> None:
    for value in values:
        if value and len(value) >= _MIN_SECRET_LEN:
            _secrets.add(value)


def register_environment(env: Mapping[str, str]) -> None:
    """Secrets that may reach us through the environment."""
    register(env.get("AWS_SECRET_ACCESS_KEY"), env.get("AWS_SESSION_TOKEN"))


def scrub(text: str) -> str:
    # Longest first, so a secret containing another is masked whole.
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, _MASK)
    return text

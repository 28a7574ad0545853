"""Failures the plugin reports, each with its documented exit code.

The kubelet treats any non-zero exit as "no credentials" and logs our stderr; distinct codes let
operators and alerting tell bad configuration from AWS trouble.
"""

from __future__ import annotations

EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_AUTH = 3
EXIT_UNAVAILABLE = 4


class ProviderError(Exception):
    """A failure with a one-line, secret-free message."""

    exit_code = EXIT_INTERNAL
    # Whether runs queued behind the fetch that failed with this error fail with it too (cache.py):
    # False for what each run finds out locally, without calling AWS.
    shared_with_waiters = True


class BadInputError(ProviderError):
    """The request or the command line is invalid."""

    exit_code = EXIT_BAD_INPUT


class AuthError(ProviderError):
    """No usable AWS identity, or AWS refused it (access denied, bad token)."""

    exit_code = EXIT_AUTH


class UnavailableError(ProviderError):
    """AWS is throttling, failing or unreachable, or the run's deadline passed."""

    exit_code = EXIT_UNAVAILABLE

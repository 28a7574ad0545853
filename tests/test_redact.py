"""Secrets registered with the redactor never survive into log output."""

from __future__ import annotations

import io
import logging

from ecr_kubelet import logs, redact


def test_log_records_and_exceptions_are_scrubbed() -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"
    redact.register(secret, "short")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RedactingFilter())
    logger = logging.getLogger("test-redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("key is %s", secret)
        try:
            raise ValueError(f"bad {secret}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert secret not in output and output.count("<redacted>") == 2
    assert "short" not in redact.scrub("x") and redact.scrub("short") == "short"  # too short to register

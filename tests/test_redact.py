"""Secrets registered with the redactor never survive into log output."""

from __future__ import annotations

import io
import logging

import pytest

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


@pytest.mark.parametrize(("name", "url", "hidden"), [
    ("HTTPS_PROXY", "socks5://puller:Pr0xyPassw0rd@proxy.example:1080", ["Pr0xyPassw0rd"]),
    ("https_proxy", "socks5h://puller:Pr0xyPassw0rd@proxy.example:1080/", ["Pr0xyPassw0rd"]),
    ("HTTP_PROXY", "http://puller:Pr0xyPassw0rd@proxy.example:3128", ["Pr0xyPassw0rd"]),
    ("Http_Proxy", "puller:Pr0xyPassw0rd@proxy.example:3128", ["Pr0xyPassw0rd"]),  # no scheme, any case
    ("ALL_PROXY", "http://puller:Pr0xy%40Passw%2F0rd@proxy.example:3128", ["Pr0xy%40Passw%2F0rd", "Pr0xy@Passw/0rd"]),
    ("all_proxy", "http://puller:Pr0xyPassw0rd@proxy.example:99999", ["Pr0xyPassw0rd"]),  # a port out of range
    ("HTTPS_PROXY", "http://pu:sh@proxy.example:3128", ["pu:sh@"]),  # too short to mask alone: masked before its @
])
def test_proxy_credentials_of_every_form_are_registered(name: str, url: str, hidden: list[str]) -> None:
    redact.register_environment({name: url})
    decoded = url.replace("%40", "@").replace("%2F", "/")
    for text in (f"Failed to connect to proxy URL: {url!r}", f"proxy {decoded} refused", f"http://{url}"):
        scrubbed = redact.scrub(text)
        assert not any(secret in scrubbed for secret in hidden), scrubbed
        assert "proxy.example" in scrubbed
    assert redact.scrub("push:sh the button") == "push:sh the button"  # a short pair alone is not masked


@pytest.mark.parametrize("url", ["http://proxy.example:3128", "proxy.example:3128", "", "http://@proxy.example"])
def test_a_proxy_without_credentials_registers_nothing(url: str) -> None:
    before = redact.scrub("http://proxy.example:3128 and more")
    redact.register_environment({"HTTPS_PROXY": url})
    assert redact.scrub("http://proxy.example:3128 and more") == before

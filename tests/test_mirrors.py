"""`--mirror HOST[:PORT]=ECR_HOST`: the one parser the command line and validate-config share."""

from __future__ import annotations

import pytest

from ecr_kubelet import mirrors as mirrors_module
from ecr_kubelet.errors import BadInputError
from ecr_kubelet.mirrors import parse_mirror, parse_mirrors
from ecr_kubelet.options import flag_defaults, options_from_args

TARGET = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
OTHER = "210987654321.dkr.ecr.us-west-2.amazonaws.com"


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        (f"mirror.example.com={TARGET}", "mirror.example.com"),
        (f"Mirror.Example.COM.={TARGET}", "mirror.example.com"),  # matched as the kubelet matches hosts
        (f"mirror.example.com:5000={TARGET}", "mirror.example.com:5000"),
        (f"localhost:5000={TARGET}", "localhost:5000"),
    ],
)
def test_a_mirror_maps_its_normalized_host_and_port(spec: str, key: str) -> None:
    assert parse_mirror(spec) == (key, TARGET)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("nohost", "expected HOST[:PORT]=ECR_HOST"),
        ("mirror.example.com=", "expected HOST[:PORT]=ECR_HOST"),
        (f"={TARGET}", "expected HOST[:PORT]=ECR_HOST"),
        ("mirror.example.com=gcr.io", "'gcr.io' is not an ECR registry host"),
        (f"mirror.example.com/team={TARGET}", "without scheme or path"),
        (f"https://mirror.example.com={TARGET}", "without scheme or path"),
        (f"user@mirror.example.com={TARGET}", "without scheme or path"),
        (f"mirror.example.com={TARGET}/x", "is not an ECR registry host"),
        (f"[::1]:5000={TARGET}", "IP literal"),
        (f"mirror.example.com:99999={TARGET}", "mirror port must be a number"),
        (f"bad_host.example={TARGET}", "mirror host is not a valid DNS name"),
        (f" mirror.example.com={TARGET}", "whitespace"),
        (f"mirror={TARGET}", "'mirror' is not a registry host"),
    ],
)
def test_a_bad_mirror_is_one_precise_usage_error(spec: str, reason: str) -> None:
    with pytest.raises(BadInputError, match=r"^--mirror ") as caught:
        parse_mirror(spec)
    assert reason in str(caught.value) and "\n" not in str(caught.value)


def test_the_options_use_the_same_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    specs = [f"a.example={TARGET}", f"b.example:5000={TARGET}", f"A.example={OTHER}"]
    seen: list[str] = []
    real = mirrors_module.parse_mirror

    def spy(spec: str) -> tuple[str, str]:
        seen.append(spec)
        return real(spec)

    monkeypatch.setattr(mirrors_module, "parse_mirror", spy)
    mirrors = options_from_args({**flag_defaults({}), "mirror": specs}, {"HOME": "/root"}).mirrors
    assert seen == specs  # the options' --mirror values go through this parser, not a copy of it
    assert mirrors == parse_mirrors(specs) == {
        "a.example": OTHER,  # the later mapping of one key wins
        "b.example:5000": TARGET,
    }

"""``ecr-credential-provider validate-config PATH [--bin-dir DIR] [--image IMAGE ...]``.

Checks a kubelet ``CredentialProviderConfig`` (file or directory) with the kubelet's own rules before a
node boots with it: any error there stops the kubelet. Errors and warnings go to stderr, one line
each; the report goes to stdout. Exit status: 0 valid, 1 invalid, 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from typing import NoReturn, Protocol

from ecr_kubelet.command import Command, verbosity_in, write_stdout
from ecr_kubelet.durations import format_go_duration
from ecr_kubelet.errors import BadInputError
from ecr_kubelet.image_match import MatchPatternError, parse_match_pattern, urls_match
from ecr_kubelet.kubelet_config import LoadedConfig, LoadedProvider, load_config
from ecr_kubelet.registry import parse_image

PROG = "ecr-credential-provider validate-config"


def _path(value: str) -> str:
    # An empty path would silently mean the working directory.
    if not value:
        raise argparse.ArgumentTypeError("must not be empty")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise BadInputError(f"usage: {message} (see --help)")  # one line, exit 2 (command.py)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Validate a kubelet CredentialProviderConfig (file or 1.34+ directory) with the "
        "kubelet's rules; optionally check the plugin binaries and show which provider serves an image.",
    )
    parser.add_argument("path", metavar="PATH", type=_path,
                        help="the --image-credential-provider-config file or directory")
    parser.add_argument(
        "--bin-dir",
        metavar="DIR",
        type=_path,
        help="the --image-credential-provider-bin-dir: each provider's binary must be there and executable",
    )
    parser.add_argument(
        "--image",
        metavar="IMAGE",
        action="append",
        default=[],
        help="an image to check (repeatable): prints which providers the kubelet would run for it",
    )
    parser.add_argument(
        "--disable-sa-token-gate",
        action="store_true",
        help="validate as a kubelet with KubeletServiceAccountTokenForCredentialProviders off (1.33 default)",
    )
    return parser


def normalize_image(image: str) -> str:
    """The repository the kubelet sends to plugins: no tag or digest, Docker Hub names expanded.

    Which first component names a registry is registry.parse_image's rule (Docker's); BadInputError for an
    image it refuses."""
    ref = parse_image(image.strip())
    repository = ref.path.split("@", 1)[0].split(":", 1)[0]  # in a path, only a tag starts with ":"
    host = ref.auth_key
    if host in ("docker.io", "index.docker.io"):
        host = "docker.io"
        if "/" not in repository:
            repository = f"library/{repository}"
    return f"{host}/{repository}"


def check_binaries(bin_dir: str, providers: list[LoadedProvider]) -> list[str]:
    """The kubelet's start-up checks on --image-credential-provider-bin-dir."""
    problems: list[str] = []
    if not os.path.exists(bin_dir):
        return [f"--bin-dir {bin_dir!r}: plugin binary directory does not exist"]
    if not os.path.isdir(bin_dir):
        return [f"--bin-dir {bin_dir!r}: not a directory"]
    for lp in providers:
        name = lp.provider.name
        if not name or "/" in name or name in (".", ".."):
            continue  # already a config error
        binary = os.path.join(bin_dir, name)
        try:
            info = os.stat(binary)
        except FileNotFoundError:
            problems.append(f"{lp.path}.name: plugin binary {binary!r} does not exist")
            continue
        except OSError as exc:
            problems.append(f"{lp.path}.name: cannot inspect {binary!r}: {exc.strerror}")
            continue
        if stat.S_ISDIR(info.st_mode):
            problems.append(f"{lp.path}.name: {binary!r} is a directory, not an executable")
        elif not info.st_mode & 0o111:
            problems.append(f"{lp.path}.name: {binary!r} is not executable (chmod 0755 it)")
    return problems


def _first_match(lp: LoadedProvider, image: str) -> str | None:
    for pattern in lp.provider.match_images or []:
        if urls_match(pattern, image):
            return pattern
    return None


class Writer(Protocol):
    def write(self, text: str, /) -> int: ...


class _Lines:
    """The report on stdout, each line written through command.write_stdout (a closed or full stdout is
    one error line, not a traceback)."""

    def write(self, text: str) -> int:
        write_stdout(text.encode())
        return len(text)

    def flush(self) -> None:
        pass


def _report_config(config: LoadedConfig, out: Writer) -> None:
    if config.directory:
        print(f"config directory {config.path}: {len(config.files)} file(s), read in this order:", file=out)
        for file in config.files:
            print(f"  {os.path.basename(file)}", file=out)
    else:
        print(f"config {config.path}", file=out)
    for lp in config.providers:
        p = lp.provider
        where = f"{os.path.basename(lp.file)}: " if config.directory else ""
        cache = p.default_cache_seconds
        cache_text = format_go_duration(cache) if cache is not None else "invalid"
        mode = ""
        if p.token_attributes is not None:
            ta = p.token_attributes
            audience = ta.service_account_token_audience
            mode = f", service-account tokens (audience {audience!r}, cacheType {ta.cache_type})"
        print(
            f"{where}{lp.path} {p.name!r}: {p.api_version}, {len(p.match_images or [])} matchImages, "
            f"defaultCacheDuration {cache_text}{mode}",
            file=out,
        )


def _report_images(config: LoadedConfig, images: list[str], out: Writer, err: Writer) -> None:
    for given in images:
        try:
            image = normalize_image(given)
            parse_match_pattern(image)
        except BadInputError as exc:
            print(f"warning: image {given!r}: {exc}", file=err)
            continue
        except MatchPatternError as exc:
            print(f"warning: image {given!r}: the kubelet cannot parse it: {exc.reason}", file=err)
            continue
        shown = image if image == given else f"{given} (sent to plugins as {image})"
        matches = [(lp, pattern) for lp in config.providers if (pattern := _first_match(lp, image)) is not None]
        if not matches:
            print(f"image {shown}: no provider", file=out)
            print(
                f"warning: image {given!r}: no matchImages pattern covers it; the kubelet pulls it without "
                "plugin credentials",
                file=err,
            )
            continue
        names = ", ".join(f"{lp.provider.name} (matched {pattern!r})" for lp, pattern in matches)
        print(f"image {shown}: {names}", file=out)
        if len(matches) > 1:
            print(
                "  the kubelet runs every matching provider, in config order, and merges their auth entries; "
                "it tries the most specific key first and, for equal keys, the earlier provider's first",
                file=out,
            )


def main(argv: list[str] | None = None) -> int:
    """Run the validator; returns the exit status. A failure of the validator itself (its arguments,
    stdout) is one line on stderr with its exit code (command.py)."""
    arguments = sys.argv[1:] if argv is None else argv
    return Command(PROG, verbosity_in(arguments)).run(lambda: _validate(arguments))


def _validate(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    out, err = _Lines(), sys.stderr
    config = load_config(args.path, service_account_tokens_enabled=not args.disable_sa_token_gate)
    problems: list[str] = [str(issue) for issue in config.errors]
    if args.bin_dir is not None and config.providers:
        problems.extend(check_binaries(args.bin_dir, config.providers))

    _report_config(config, out)
    for issue in config.warnings:
        print(f"warning: {issue}", file=err)
    for problem in problems:
        print(f"error: {problem}", file=err)
    if args.image:
        _report_images(config, args.image, out, err)
    if problems:
        print(f"INVALID: {len(problems)} error(s); the kubelet would refuse to start with this config", file=out)
        return 1
    checked = " and plugin binaries" if args.bin_dir is not None else ""
    print(f"OK: the kubelet would accept this config{checked}", file=out)
    return 0


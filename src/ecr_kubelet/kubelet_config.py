"""The kubelet's ``CredentialProviderConfig``: strict decoding and every registration-time check.

The kubelet reads ``--image-credential-provider-config`` (a file, or since 1.34 a directory of
``*.json``/``*.yaml``/``*.yml`` files read in lexicographic order), decodes it strictly (unknown or
duplicate fields are fatal since 1.32), then validates it (``pkg/credentialprovider/plugin/config.go``).
Any error stops the kubelet, so this module reports all of them at once, each with the field path
(``providers[0].matchImages[2]``) and, in directory mode, the file.

Accepted document groups: ``kubelet.config.k8s.io/v1`` (``tokenAttributes`` exists only there),
``kubelet.config.k8s.io/v1beta1`` and ``kubelet.config.k8s.io/v1alpha1``, all registered by current
kubelets. ``yaml`` is imported only when a YAML document is read.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ecr_kubelet import mirrors, wire
from ecr_kubelet.durations import DurationError, parse_go_duration
from ecr_kubelet.errors import BadInputError
from ecr_kubelet.image_match import MatchPatternError, glob_syntax_error, parse_match_pattern, urls_match
from ecr_kubelet.wire import DuplicateKeyError, reject_duplicate_keys

__all__ = [
    "CONFIG_API_VERSIONS",
    "CONFIG_KIND",
    "TOKEN_CACHE_TYPES",
    "ConfigIssue",
    "CredentialProvider",
    "CredentialProviderConfig",
    "DecodedDocument",
    "ExecEnvVar",
    "LoadedConfig",
    "LoadedProvider",
    "ServiceAccountTokenAttributes",
    "decode_config",
    "load_config",
    "validate_providers",
]

CONFIG_KIND = "CredentialProviderConfig"
CONFIG_GROUP = "kubelet.config.k8s.io"
CONFIG_V1 = f"{CONFIG_GROUP}/v1"
CONFIG_API_VERSIONS = (CONFIG_V1, f"{CONFIG_GROUP}/v1beta1", f"{CONFIG_GROUP}/v1alpha1")
TOKEN_CACHE_TYPES = ("ServiceAccount", "Token")
CONFIG_FILE_SUFFIXES = (".json", ".yaml", ".yml")

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False)


# ------------------------------------------------------------------------------------------ models


class ExecEnvVar(BaseModel):
    """One ``env`` entry; the kubelet appends ``name=value`` after its own environment."""

    model_config = _STRICT

    name: str = ""
    value: str = ""


class ServiceAccountTokenAttributes(BaseModel):
    """``tokenAttributes`` (kubelet.config.k8s.io/v1 only, Kubernetes 1.33+)."""

    model_config = _STRICT

    service_account_token_audience: str = Field("", alias="serviceAccountTokenAudience")
    cache_type: str = Field("", alias="cacheType")
    require_service_account: bool | None = Field(None, alias="requireServiceAccount")
    required_service_account_annotation_keys: list[str] | None = Field(
        None, alias="requiredServiceAccountAnnotationKeys"
    )
    optional_service_account_annotation_keys: list[str] | None = Field(
        None, alias="optionalServiceAccountAnnotationKeys"
    )


class CredentialProvider(BaseModel):
    """One entry of ``providers``. Missing fields decode to the Go zero value, as in the kubelet."""

    model_config = _STRICT

    name: str = ""
    match_images: list[str] | None = Field(None, alias="matchImages")
    default_cache_duration: str | None = Field(None, alias="defaultCacheDuration")
    api_version: str = Field("", alias="apiVersion")
    args: list[str] | None = None
    env: list[ExecEnvVar] | None = None
    token_attributes: ServiceAccountTokenAttributes | None = Field(None, alias="tokenAttributes")

    @property
    def default_cache_seconds(self) -> float | None:
        """defaultCacheDuration in seconds, or None when absent or unparsable."""
        if self.default_cache_duration is None:
            return None
        try:
            return parse_go_duration(self.default_cache_duration)
        except DurationError:
            return None


class CredentialProviderConfig(BaseModel):
    """A whole ``CredentialProviderConfig`` document."""

    model_config = _STRICT

    api_version: str = Field(alias="apiVersion")
    kind: str
    providers: list[CredentialProvider] | None = None


# ------------------------------------------------------------------------------------------ issues


@dataclass(frozen=True)
class ConfigIssue:
    """One finding: ``severity`` "error" (the kubelet refuses the config) or "warning" (ours)."""

    path: str
    message: str
    file: str | None = None
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = self.path if self.file is None else (f"{self.file}: {self.path}" if self.path else self.file)
        return f"{where}: {self.message}" if where else self.message


@dataclass(frozen=True)
class LoadedProvider:
    """A provider together with where it came from."""

    provider: CredentialProvider
    file: str
    index: int  # position in its file's providers list
    config_api_version: str

    @property
    def path(self) -> str:
        return f"providers[{self.index}]"


@dataclass
class LoadedConfig:
    """The outcome of :func:`load_config`: the merged providers (kubelet order) and all issues."""

    path: str
    files: list[str] = field(default_factory=list)
    directory: bool = False
    providers: list[LoadedProvider] = field(default_factory=list)
    issues: list[ConfigIssue] = field(default_factory=list)

    @property
    def errors(self) -> list[ConfigIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[ConfigIssue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


# ---------------------------------------------------------------------------------------- decoding


def _load_yaml(text: str) -> tuple[Any, int]:
    """Parse YAML with duplicate-key detection; returns (first document, number of documents)."""
    import yaml  # runtime dependency, imported lazily

    class _StrictLoader(yaml.SafeLoader):
        pass

    def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in result:
                mark = key_node.start_mark
                raise DuplicateKeyError(f"duplicate field {key!r} (line {mark.line + 1})")
            result[key] = loader.construct_object(value_node, deep=True)
        return result

    _StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
    try:
        docs = [d for d in yaml.load_all(text, Loader=_StrictLoader)]
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid YAML: {' '.join(str(exc).split())}") from None
    non_empty = [d for d in docs if d is not None]
    return (non_empty[0] if non_empty else None), len(non_empty)


def _pydantic_issues(exc: ValidationError, prefix: str, file: str | None) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    wants = {
        "string_type": "a string",
        "bool_type": "true or false",
        "list_type": "a list",
        "model_type": "an object",
        "model_attributes_type": "an object",
        "dict_type": "an object",
    }
    for err in exc.errors():
        path = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown field (the kubelet decodes strictly and case-sensitively)"
        elif kind in wants:
            msg = f"must be {wants[kind]}, got {_describe(err.get('input'))}"
        else:
            msg = err["msg"]
        issues.append(ConfigIssue(path, msg, file))
    return issues


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _decode_provider(
    raw: dict[str, Any], prefix: str, file: str | None, issues: list[ConfigIssue]
) -> CredentialProvider | None:
    """Decode one provider; report decoding errors, then retry without the offending fields.

    The kubelet fails on the first decoding error; we keep going so that the same run also reports
    the provider's other problems (bad patterns, durations, duplicate names).
    """
    for _ in range(len(raw) + 1):
        try:
            return CredentialProvider.model_validate(raw)
        except ValidationError as exc:
            issues.extend(_pydantic_issues(exc, prefix, file))
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            if not bad:
                return None
            raw = {k: v for k, v in raw.items() if k not in bad}
    return None


@dataclass
class DecodedDocument:
    """One decoded file: the providers that decoded, the issues, and how many entries it declared."""

    providers: list[LoadedProvider] = field(default_factory=list)
    issues: list[ConfigIssue] = field(default_factory=list)
    declared: int = 0


def _unreadable(issue: ConfigIssue) -> DecodedDocument:
    # Its providers are unknown, so not also "at least one provider is required".
    return DecodedDocument(issues=[issue], declared=1)


def decode_config(data: bytes | str, file: str | None = None) -> DecodedDocument:
    """Decode one config document strictly.

    Providers that fail to decode are reported and left out; the others are returned for validation.
    """
    issues: list[ConfigIssue] = []
    label = file or "<config>"
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return _unreadable(ConfigIssue("", f"not UTF-8 text: {exc}", file))
    else:
        text = data
    stripped = text.lstrip(" \t\r\n\ufeff")
    try:
        if stripped.startswith("{"):
            doc: Any = json.loads(stripped, object_pairs_hook=reject_duplicate_keys)
        else:
            doc, count = _load_yaml(text)
            if count > 1:
                issues.append(ConfigIssue("", f"{count} YAML documents; only the first one is read", file, "warning"))
    except DuplicateKeyError as exc:
        return _unreadable(ConfigIssue("", f"{exc} (the kubelet decodes strictly)", file))
    except ValueError as exc:
        return _unreadable(ConfigIssue("", f"cannot decode {label}: {exc}", file))
    except RecursionError:
        return _unreadable(ConfigIssue("", f"cannot decode {label}: nested too deeply", file))

    if not isinstance(doc, dict):
        return _unreadable(ConfigIssue("", f"expected a {CONFIG_KIND} object, got {_describe(doc)}", file))

    api_version = doc.get("apiVersion")
    kind = doc.get("kind")
    if not api_version or not isinstance(api_version, str):
        issues.append(ConfigIssue("apiVersion", f"required; one of {', '.join(CONFIG_API_VERSIONS)}", file))
    elif api_version not in CONFIG_API_VERSIONS:
        group = api_version.split("/", 1)[0]
        why = "unexpected group" if group != CONFIG_GROUP else "unknown version"
        issues.append(
            ConfigIssue(
                "apiVersion",
                f"{why} {api_version!r}; supported: {', '.join(CONFIG_API_VERSIONS)}",
                file,
            )
        )
    if not kind or not isinstance(kind, str):
        issues.append(ConfigIssue("kind", f"required; must be {CONFIG_KIND!r}", file))
    elif kind != CONFIG_KIND:
        issues.append(ConfigIssue("kind", f"wrong kind {kind!r}; must be {CONFIG_KIND!r}", file))
    for key in doc:
        if key not in ("apiVersion", "kind", "providers"):
            issues.append(ConfigIssue(str(key), "unknown field (the kubelet decodes strictly)", file))

    raw_providers = doc.get("providers")
    if raw_providers is None:
        return DecodedDocument(issues=issues)
    if not isinstance(raw_providers, list):
        issues.append(ConfigIssue("providers", f"must be a list, got {_describe(raw_providers)}", file))
        return DecodedDocument(issues=issues, declared=1)

    is_v1 = api_version == CONFIG_V1 or api_version not in CONFIG_API_VERSIONS
    providers: list[LoadedProvider] = []
    for index, raw in enumerate(raw_providers):
        prefix = f"providers[{index}]"
        if not isinstance(raw, dict):
            issues.append(ConfigIssue(prefix, f"must be an object, got {_describe(raw)}", file))
            continue
        if not is_v1 and "tokenAttributes" in raw:
            issues.append(
                ConfigIssue(
                    f"{prefix}.tokenAttributes",
                    f"unknown field in {api_version}: tokenAttributes exists only in {CONFIG_V1}",
                    file,
                )
            )
            raw = {k: v for k, v in raw.items() if k != "tokenAttributes"}
        provider = _decode_provider(raw, prefix, file, issues)
        if provider is not None:
            providers.append(LoadedProvider(provider, file or "", index, str(api_version or "")))
    return DecodedDocument(providers, issues, len(raw_providers))


# -------------------------------------------------------------------------------------- validation

_QNAME_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def qualified_name_errors(key: str) -> list[str]:
    """Kubernetes' IsQualifiedName, applied to the lower-cased key as the kubelet does."""
    value = key.lower()
    parts = value.split("/")
    errors: list[str] = []
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            if len(prefix) > 253:
                errors.append("prefix part must be no more than 253 characters")
            if not _DNS1123_SUBDOMAIN.match(prefix):
                errors.append("prefix part must be a lowercase DNS subdomain (e.g. 'example.com')")
    else:
        return ["must be a name with an optional DNS subdomain prefix and one '/' (e.g. 'example.com/MyName')"]
    if not name:
        errors.append("name part must be non-empty")
    else:
        if len(name) > 63:
            errors.append("name part must be no more than 63 characters")
        if not _QNAME_NAME.match(name):
            errors.append(
                "name part must consist of alphanumeric characters, '-', '_' or '.', "
                "and must start and end with an alphanumeric character"
            )
    return errors


def _flag_values(args: list[str], flag: str) -> Iterator[tuple[int, str | None]]:
    """(arg index, value) of each ``FLAG VALUE`` / ``FLAG=VALUE`` in a plugin's args; None when the value is
    missing."""
    for i, arg in enumerate(args):
        if arg == flag:
            yield i, args[i + 1] if i + 1 < len(args) else None
        elif arg.startswith(f"{flag}="):
            yield i, arg[len(flag) + 1 :]


def plugin_settings_error(lp: LoadedProvider, err: Callable[[LoadedProvider, str, str], None]) -> None:
    """What the plugin itself refuses in a provider's `args` and `env` (its own option parsing, flags.py),
    which fails every pull with exit 2; the kubelet never looks at them. The `env` is checked alone: the
    kubelet's own environment, which comes first, is not known here."""
    from ecr_kubelet.flags import check_plugin_settings

    args = list(lp.provider.args or [])
    env = {e.name: e.value for e in lp.provider.env or [] if e.name}  # the kubelet appends them: the last wins
    for where, environment in (("args", {}), ("env", env)):
        try:
            check_plugin_settings(args, environment)
        except BadInputError as exc:
            err(lp, where, f"{exc}: every pull would fail")
            return


def validate_providers(
    providers: list[LoadedProvider],
    *,
    directory: bool = False,
    service_account_tokens_enabled: bool = True,
    declared: int | None = None,
) -> list[ConfigIssue]:
    """The kubelet's registration checks on the merged provider list, plus our warnings.

    ``service_account_tokens_enabled`` is the KubeletServiceAccountTokenForCredentialProviders gate
    (off by default in 1.33, on from 1.34). ``declared`` is how many provider entries the files held
    (some may have failed to decode); by default ``len(providers)``.
    """
    issues: list[ConfigIssue] = []

    def err(lp: LoadedProvider | None, sub: str, message: str, severity: Literal["error", "warning"] = "error") -> None:
        base = lp.path if lp is not None else "providers"
        path = f"{base}.{sub}" if sub else base
        file = (lp.file or None) if (lp is not None and directory) else None
        issues.append(ConfigIssue(path, message, file, severity))

    if not providers and not declared:
        issues.append(ConfigIssue("providers", "at least one provider is required"))

    seen: dict[str, LoadedProvider] = {}
    for lp in providers:
        p = lp.provider
        name = p.name
        if not name:
            err(lp, "name", "required: the binary's file name in --image-credential-provider-bin-dir")
        if "/" in name:
            err(lp, "name", f"{name!r}: provider name cannot contain '/'")
        if " " in name:
            err(lp, "name", f"{name!r}: provider name cannot contain spaces")
        if name in (".", ".."):
            err(lp, "name", f"provider name cannot be {name!r}")
        if name in seen:
            first = seen[name]
            where = f"{first.file}: {first.path}" if directory else first.path
            err(lp, "name", f"duplicate provider name {name!r} (first at {where})")
        else:
            seen[name] = lp

        if not p.api_version:
            err(lp, "apiVersion", f"required; one of {', '.join(wire.API_VERSIONS)}")
        elif p.api_version not in wire.API_VERSIONS:
            err(
                lp,
                "apiVersion",
                f"unsupported value {p.api_version!r}; one of {', '.join(wire.API_VERSIONS)}",
            )

        images = p.match_images or []
        if not images:
            err(lp, "matchImages", "at least one pattern is required")
        for i, pattern in enumerate(images):
            sub = f"matchImages[{i}]"
            try:
                parsed = parse_match_pattern(pattern)
            except MatchPatternError as exc:
                err(lp, sub, f"invalid pattern {pattern!r}: {exc.reason}")
                continue
            if "://" in pattern:
                err(
                    lp,
                    sub,
                    f"{pattern!r} has a scheme; patterns are host[:port][/path], so this never matches",
                    "warning",
                )
                continue
            bad_glob = next((g for g in (glob_syntax_error(label) for label in parsed.labels) if g), None)
            if bad_glob:
                err(lp, sub, f"{pattern!r}: malformed glob ({bad_glob}); it never matches", "warning")
            if ":" in parsed.path or "@" in parsed.path:
                err(
                    lp,
                    sub,
                    f"{pattern!r}: the kubelet matches images without tag or digest; this path never matches",
                    "warning",
                )

        if p.default_cache_duration is None:
            err(lp, "defaultCacheDuration", 'required (a Go duration such as "12h" or "0s")')
        else:
            try:
                seconds = parse_go_duration(p.default_cache_duration)
            except DurationError as exc:
                err(lp, "defaultCacheDuration", f"{p.default_cache_duration!r} is not a Go duration: {exc}")
            else:
                if seconds < 0:
                    err(
                        lp,
                        "defaultCacheDuration",
                        f"{p.default_cache_duration!r}: must be greater than or equal to 0",
                    )

        for i, env in enumerate(p.env or []):
            if not env.name:
                err(lp, f"env[{i}].name", "empty environment variable name", "warning")

        from ecr_kubelet import roles
        from ecr_kubelet.options import REGISTRY_ROLES_VARIABLE

        flagged = len(issues)
        for arg_index, spec in _flag_values(p.args or [], "--registry-role"):
            try:
                if spec is None:
                    raise BadInputError("--registry-role needs a value REGISTRY=ROLE_ARN")
                roles.parse_registry_roles([spec])
            except BadInputError as exc:
                err(lp, f"args[{arg_index}]", f"{exc}: every pull would fail (exit 2)")
        role_env = {e.name: e.value for e in p.env or []}.get(REGISTRY_ROLES_VARIABLE)
        if role_env is not None:
            try:
                roles.parse_registry_roles(roles.split_env(role_env), REGISTRY_ROLES_VARIABLE)
            except BadInputError as exc:
                err(lp, "env", f"{exc}: every pull would fail (exit 2)")

        for arg_index, spec in _flag_values(p.args or [], mirrors.FLAG):
            if spec is None:
                err(lp, f"args[{arg_index}]", f"{mirrors.FLAG} needs a value HOST[:PORT]=ECR_HOST: every pull would "
                    "fail (exit 2)")
                continue
            try:
                host, _target = mirrors.parse_mirror(spec)
            except BadInputError as exc:
                err(lp, f"args[{arg_index}]", f"{exc}: every pull would fail (exit 2)")
                continue
            if images and not any(urls_match(pattern, host) for pattern in images):
                err(
                    lp,
                    f"args[{arg_index}]",
                    f"mirror host {host!r} is not covered by matchImages: the kubelet never asks this provider for it",
                    "warning",
                )

        from ecr_kubelet import pod_identity

        for sub, message, severity in pod_identity.provider_config_issues(
                list(_flag_values(p.args or [], "--eks-cluster-name")), {e.name: e.value for e in p.env or []},
                p.token_attributes):
            err(lp, sub, message, "warning" if severity == "warning" else "error")
        if not any(issue.severity == "error" for issue in issues[flagged:]):
            plugin_settings_error(lp, err)

        ta = p.token_attributes
        if ta is None:
            continue
        if not service_account_tokens_enabled:
            err(
                lp,
                "tokenAttributes",
                "not supported while the KubeletServiceAccountTokenForCredentialProviders feature gate is disabled",
            )
        if not ta.service_account_token_audience:
            err(lp, "tokenAttributes.serviceAccountTokenAudience", "required")
        if ta.require_service_account is None:
            err(lp, "tokenAttributes.requireServiceAccount", "required (true or false)")
        if p.api_version != wire.V1:
            err(lp, "tokenAttributes", f"only supported with apiVersion {wire.V1}")
        required = ta.required_service_account_annotation_keys or []
        optional = ta.optional_service_account_annotation_keys or []
        if ta.require_service_account is False and required:
            err(
                lp,
                "tokenAttributes.requiredServiceAccountAnnotationKeys",
                "requireServiceAccount cannot be false when requiredServiceAccountAnnotationKeys is set",
            )
        for list_name, keys in (
            ("requiredServiceAccountAnnotationKeys", required),
            ("optionalServiceAccountAnnotationKeys", optional),
        ):
            seen_keys: set[str] = set()
            for i, key in enumerate(keys):
                for problem in qualified_name_errors(key):
                    err(lp, f"tokenAttributes.{list_name}[{i}]", f"{key!r}: {problem}")
                if key in seen_keys:
                    err(lp, f"tokenAttributes.{list_name}[{i}]", f"duplicate key {key!r}")
                seen_keys.add(key)
        both = sorted(set(required) & set(optional))
        if both:
            err(
                lp,
                "tokenAttributes",
                f"annotation keys cannot be both required and optional: {', '.join(both)}",
            )
        if not ta.cache_type:
            err(lp, "tokenAttributes.cacheType", f"required; one of {', '.join(TOKEN_CACHE_TYPES)}")
        elif ta.cache_type not in TOKEN_CACHE_TYPES:
            err(
                lp,
                "tokenAttributes.cacheType",
                f"unsupported value {ta.cache_type!r}; one of {', '.join(TOKEN_CACHE_TYPES)}",
            )
    return issues


# ----------------------------------------------------------------------------------------- loading


def config_files(directory: str | os.PathLike[str]) -> list[str]:
    """The files the kubelet reads from a config directory, in its order."""
    found: list[str] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                continue
            if os.path.splitext(entry.name)[1] in CONFIG_FILE_SUFFIXES:
                found.append(os.path.join(os.fspath(directory), entry.name))
    return sorted(found)


MAX_CONFIG_BYTES = 4 * 1024 * 1024  # far above any real config; /dev/zero must not fill memory


class ConfigFileError(Exception):
    """A config path that is not a regular file of a sane size."""


def read_config_file(path: str) -> bytes:
    """A config file's bytes: a regular file (through symlinks, as the kubelet reads it) of at most
    MAX_CONFIG_BYTES. A FIFO or device is refused, never read: the kubelet would hang on it or read forever
    (a FIFO is opened without blocking, so a missing writer cannot hang us either)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigFileError("not a regular file (a FIFO, device or socket): refused, not read")
        chunks, size = [], 0
        while chunk := os.read(fd, 1024 * 1024):
            size += len(chunk)
            if size > MAX_CONFIG_BYTES:
                raise ConfigFileError(f"larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB: refused, not read")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def load_config(
    path: str | os.PathLike[str],
    *,
    service_account_tokens_enabled: bool = True,
) -> LoadedConfig:
    """Read a config file or directory the way the kubelet does and validate everything."""
    text_path = os.fspath(path)
    result = LoadedConfig(path=text_path)
    target = Path(text_path)
    if not target.exists():
        result.issues.append(ConfigIssue("", f"unable to access {text_path!r}: no such file or directory"))
        return result
    if target.is_dir():
        result.directory = True
        try:
            result.files = config_files(target)
        except OSError as exc:
            result.issues.append(ConfigIssue("", f"unable to read directory {text_path!r}: {exc.strerror}"))
            return result
        if not result.files:
            result.issues.append(
                ConfigIssue("", f"no configuration files (*.json, *.yaml, *.yml) found in directory {text_path!r}")
            )
            return result
    else:
        result.files = [text_path]

    declared = 0
    for file in result.files:
        shown = os.path.basename(file) if result.directory else file
        try:
            data = read_config_file(file)
        except OSError as exc:
            result.issues.append(ConfigIssue("", f"unable to read file: {exc.strerror}", shown))
            continue
        except ConfigFileError as exc:
            result.issues.append(ConfigIssue("", str(exc), shown))
            continue
        doc = decode_config(data, shown)
        issues = doc.issues
        if not result.directory:
            issues = [ConfigIssue(i.path, i.message, None, i.severity) for i in issues]
        result.issues.extend(issues)
        result.providers.extend(doc.providers)
        declared += doc.declared

    result.issues.extend(
        validate_providers(
            result.providers,
            directory=result.directory,
            service_account_tokens_enabled=service_account_tokens_enabled,
            declared=declared,
        )
    )
    return result

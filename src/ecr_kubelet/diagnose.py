"""``ecr-credential-provider diagnose IMAGE [plugin flags]``: the plugin's real path for one image, told
to a person.

Prints each decision: how the host was classified (or why it gets no credentials), which identity and
why, the API endpoints, the cache entry's state, every AWS call with AWS's error code, the cacheDuration
the kubelet would get, and hints for the common failures. Exit 0 when a pull would get credentials (or,
correctly, none for a foreign host), otherwise the plugin's exit code. Secrets are never printed: the
token, the password and every key are left out, and every line is scrubbed of registered secrets too.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ecr_kubelet import logs, redact
from ecr_kubelet.command import Command, StdoutError, verbosity_in, write_stdout
from ecr_kubelet.deadline import Deadline
from ecr_kubelet.errors import EXIT_AUTH, EXIT_BAD_INPUT, EXIT_UNAVAILABLE, BadInputError, ProviderError
from ecr_kubelet.flags import PROG, build_parser
from ecr_kubelet.observe import AwsCall, Observer, is_clock_skew

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ecr_kubelet.models import Identity, Registry
    from ecr_kubelet.options import Options

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
                   "no_proxy")
_PROXY_URLS = PROXY_VARIABLES[:6]  # the variables that name a proxy (not NO_PROXY)


def say(step: str, text: str) -> None:
    write_stdout((redact.scrub(f"{step + ':':<10} {text}") + "\n").encode())


def hint(text: str) -> None:
    say("hint", text)


def main(argv: list[str]) -> int:
    """Every failure of diagnose itself (its flags, an unreadable file, stdout) is one line on stderr
    (command.py); what the plugin would do, failures included, is the report on stdout."""
    from ecr_kubelet.options import options_from_args

    redact.register_environment(os.environ)
    command = Command(f"{PROG} diagnose", verbosity_in(argv))

    def body() -> int:
        args = _parser().parse_args(argv)
        options = options_from_args(vars(args), os.environ)
        token, annotations = _service_account(args)
        command.verbosity = options.verbosity
        logs.configure(options.verbosity, hold=True)
        try:
            return diagnose(args.image, options, token, annotations)
        except StdoutError:
            raise  # the report itself is lost: diagnose's own failure, one line on stderr
        except ProviderError as exc:
            say("result", f"FAILED (exit {exc.exit_code}): {exc}")
            return exc.exit_code

    return command.run(body)


def _parser() -> Any:
    parser = build_parser()
    parser.prog = f"{PROG} diagnose"
    parser.description = ("Run the plugin's real path for IMAGE and explain each decision: host, identity, "
                          "endpoint, cache entry, AWS calls, cacheDuration, and hints for failures. Takes the "
                          "plugin's flags; never prints a secret.")
    parser.add_argument("image", metavar="IMAGE", help="the image, as in a pod spec (tag and digest are ignored)")
    parser.add_argument("--service-account-token-file", type=Path, metavar="FILE",
                        help="diagnose service-account mode: the pod's projected token (never printed)")
    parser.add_argument("--service-account-annotation", action="append", default=[], metavar="KEY=VALUE",
                        help="an annotation of the pod's service account (repeatable)")
    return parser


def _service_account(args: Any) -> tuple[str | None, dict[str, str]]:
    annotations: dict[str, str] = {}
    for spec in args.service_account_annotation:
        key, sep, value = spec.partition("=")
        if not sep or not key:
            raise BadInputError(f"--service-account-annotation {spec!r}: expected KEY=VALUE")
        annotations[key] = value
    if args.service_account_token_file is None:
        return None, annotations
    token = _read_token_file(args.service_account_token_file)
    redact.register(token)
    return token, annotations


MAX_TOKEN_FILE = 64 * 1024  # far above any service-account token; /dev/zero must not fill memory


def _read_token_file(path: Path) -> str:
    """The projected token: a bounded read of a regular file, UTF-8 text; BadInputError otherwise."""
    name = "--service-account-token-file"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block the open
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise BadInputError(f"{name}: {str(path)!r} is not a regular file")
            data = os.read(fd, MAX_TOKEN_FILE + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        raise BadInputError(f"{name}: cannot read it: {exc.strerror}") from None
    if len(data) > MAX_TOKEN_FILE:
        raise BadInputError(f"{name}: larger than {MAX_TOKEN_FILE} bytes: not a service-account token")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadInputError(f"{name}: not UTF-8 text: not a service-account token") from None


def diagnose(image: str, options: Options, sa_token: str | None, annotations: dict[str, str]) -> int:
    """The pipeline (provider.py) for one image, with what it decided and what it called told step by
    step: diagnose observes the run, it never re-runs a part of it."""
    from ecr_kubelet.provider import resolve
    from ecr_kubelet.registry import parse_image

    say("image", image)
    try:
        ref = parse_image(image)  # only the registry part counts: a tag or digest stays in ref.path
    except BadInputError as exc:
        say("host", f"the image is not valid: {exc}")
        say("result", f"FAILED (exit {EXIT_BAD_INPUT}): the kubelet would not get an answer for it")
        return EXIT_BAD_INPUT
    observer = Observer()

    def on_deadline(_expired: Deadline) -> NoReturn:
        say("result", f"FAILED (exit {EXIT_UNAVAILABLE}): no answer from AWS within --timeout "
            f"{options.timeout:g}s")
        _explain_calls(observer)
        hint("endpoint unreachable or hanging: check DNS and routes to the endpoints above (VPC endpoints, "
             "security groups), the instance metadata service, and the proxy settings")
        _proxy_hint(options.environ)
        logs.release_held()
        os._exit(EXIT_UNAVAILABLE)

    # Resolving credentials may hang too (instance metadata, a credential_process): all under the deadline.
    run_deadline = Deadline.from_process_start(options.timeout, on_deadline)
    route = resolve(ref, options, sa_token, annotations, run_deadline)
    if route is None:
        _explain_foreign(ref.auth_key, ref.normalized_host)
        say("result", "OK: no credentials, correctly (empty auth; the kubelet pulls without plugin credentials)")
        return 0
    registry, identity = route.registry, route.identity
    mirror = ref.normalized_host != registry.host
    via = f" (mirror {ref.auth_key}, mapped by --mirror)" if mirror else ""
    say("host", f"{ref.auth_key} is {registry.describe()}{via}")
    if registry.kind == "public":
        say("host", "public ECR authenticates only from the aws partition, via ecr-public in us-east-1")
    _explain_identity(identity, registry, options, sa_token, annotations)

    with run_deadline.backstop():
        return _run(ref.auth_key, registry, identity, options, observer, run_deadline)


def _run(auth_key: str, registry: Registry, identity: Identity, options: Options, observer: Observer,
         run_deadline: Deadline) -> int:
    from ecr_kubelet.provider import NoPublicCredentials, obtain_token

    _explain_endpoints(registry, identity, options)
    _explain_cache(registry, identity, options)
    try:
        # No answer of last resort: at the deadline, diagnose reports the failure (on_deadline).
        token, outcome = obtain_token(registry, identity, options, run_deadline, lambda _cached: b"", observer)
    except NoPublicCredentials as exc:
        _explain_chain(observer, identity)
        _explain_calls(observer)
        say("result", f"OK: no credentials ({exc}); the kubelet pulls anonymously (cacheDuration 1h0m0s)")
        return 0
    except ProviderError as exc:
        creds_ok = _explain_chain(observer, identity)
        _explain_calls(observer)
        _explain_exchange(observer)
        say("result", f"FAILED (exit {exc.exit_code}): {exc}")
        _failure_hints(exc, observer, identity, registry, creds_ok, options.environ)
        return exc.exit_code
    _explain_chain(observer, identity)
    _explain_calls(observer)
    _explain_exchange(observer)
    _explain_outcome(outcome)
    duration = options.freshness.cache_duration(token, time.time(), stale=outcome == "stale")
    say("answer", f"credentials for {auth_key} (username {token.username}), cacheDuration {duration}"
        + (f", token expires {logs.when(token.expires_at)}" if token.expires_at else ""))
    say("result", "OK: a pull would get credentials")
    return 0


def _explain_foreign(hostport: str, host: str) -> None:
    looks_like_ecr = any(part in host for part in ("dkr.ecr", "dkr-ecr", "ecr.aws", "amazonaws"))
    if looks_like_ecr:
        say("host", f"{hostport} looks like ECR but is not an ECR registry host: a private registry is "
            "ACCOUNT(12 digits).dkr.ecr[-fips].REGION.SUFFIX (or dkr-ecr... for dual-stack) with a region of "
            "the suffix's partition, public ECR is public.ecr.aws or ecr-public.aws.com")
        hint("check the account id's length, the region and the DNS suffix (.com vs .com.cn); look-alike "
             "hosts never get an ECR token, by design")
    else:
        say("host", f"{hostport} is not an ECR registry and no --mirror maps it: the plugin answers with "
            "no credentials, so no ECR token is ever sent to it")


def _explain_identity(identity: Identity, registry: Registry, options: Options, sa_token: str | None,
                      annotations: dict[str, str]) -> None:
    if identity.mode == "service-account":
        key = next(k for k in options.sa_role_annotations if annotations.get(k))
        sub = identity.claims["sub"] if identity.claims else "a token that is not a JWT"
        say("identity", f"service account {sub}: annotation {key} = {identity.role_arn}, assumed with "
            "sts:AssumeRoleWithWebIdentity (service-account mode wins over --role-arn and --registry-role)")
        return
    if identity.mode == "pod-identity":
        _explain_pod_identity(identity, options)
        return
    if sa_token is not None:
        say("identity", "the pod's service account has none of the role annotations "
            f"{', '.join(options.sa_role_annotations)}: node identity (--sa-without-role node)")
    if identity.registry_role is not None:
        from ecr_kubelet.roles import role_for

        mapped_by = registry.host if options.registry_roles.get(registry.host) else registry.account
        assert role_for(registry, options.registry_roles) == identity.registry_role
        caller = "the node credentials" + (f" after assuming --role-arn {identity.role_arn}"
                                           if identity.mode == "role" else "")
        say("identity", f"--registry-role maps {mapped_by} to {identity.registry_role}: sts:AssumeRole of it "
            f"with {caller}, in {registry.region}")
    elif identity.mode == "role":
        say("identity", f"--role-arn {identity.role_arn}: sts:AssumeRole with the node credentials, in "
            f"{registry.region}")
    else:
        say("identity", "the node credentials (botocore's default chain); no --role-arn or --registry-role "
            "applies to this registry")


def _explain_pod_identity(identity: Identity, options: Options) -> None:
    """What pod-identity mode will do; the token is never printed, only its claims."""
    pod = identity.pod_identity
    assert pod is not None
    claims = identity.claims
    sub = claims["sub"] if claims else "a token that is not a JWT"
    say("identity", f"service account {sub}: none of the role annotations {', '.join(options.sa_role_annotations)}, "
        f"so EKS Pod Identity (--eks-cluster-name {pod.cluster}): eks-auth:AssumeRoleForPodIdentity in the node's "
        "region, signed with the node credentials, gives the role of its pod identity association")
    if claims:
        say("identity", f"token: issuer {claims['iss']}, audience {claims['aud']}")
    without = pod.fallback.describe() if pod.fallback is not None else "fail (--sa-without-role fail)"
    say("identity", f"without an association: {without}")


def _explain_exchange(observer: Observer) -> None:
    exchange = observer.pod_identity
    if exchange is not None:
        say("exchange", f"association {exchange['association']} maps {exchange['subject']} to the role "
            f"{exchange['role']}")
    elif any(c.name == "eks-auth:AssumeRoleForPodIdentity" and c.code == "ResourceNotFoundException"
             for c in observer.calls):
        say("exchange", "no pod identity association for this service account in the cluster "
            "(ResourceNotFoundException): --sa-without-role decides")


def _explain_chain(observer: Observer, identity: Identity) -> bool:
    """What the run's own resolution of the default chain found (Observer.chain); False if it found none."""
    if identity.mode == "service-account":
        say("chain", "not used: the pod's token is exchanged directly (unsigned AssumeRoleWithWebIdentity)")
        return True
    chain = observer.chain
    if chain is None:
        reason = "the token came from the cache" if observer.cache == "hit" else "the run ended before it"
        say("chain", f"not resolved: {reason}")
        return True
    if chain.error is not None:
        from ecr_kubelet.awsapi import translate_error

        say("chain", f"resolving credentials failed: {translate_error(chain.error, 'the default credential chain')}")
        return False
    if chain.method is None:
        say("chain", "no AWS credentials found (environment, shared files, web identity, container or "
            "instance metadata)")
        return False
    kind = "temporary" if chain.temporary else "long-term"
    say("chain", f"found by the '{chain.method}' provider: {kind} credentials, access key id {chain.key_hint}")
    return True


def _explain_endpoints(registry: Registry, identity: Identity, options: Options) -> None:
    """The URL botocore would call for each service (clients made with placeholder keys: naming an
    endpoint resolves no credentials)."""
    from ecr_kubelet.awsapi import client_config, new_session

    logs.set_up()
    session = new_session()

    services = [registry.service]
    if identity.mode != "node" or identity.registry_role is not None:
        services.append("sts")
    if identity.mode == "pod-identity":
        services.append("eks-auth")
    for service in services:
        region = registry.region
        if service == "eks-auth":  # called in the node's region
            from ecr_kubelet.tokens import node_region

            region = node_region(session, options.environ) or registry.region
        try:
            client = session.create_client(service, region_name=region,
                                           config=client_config(service, registry),
                                           aws_access_key_id="diagnose", aws_secret_access_key="diagnose")
            url = client.meta.endpoint_url
        except Exception as exc:
            url = f"cannot be resolved ({type(exc).__name__})"
        source = "override from the environment" if options.endpoints.get(service) else \
            f"{registry.partition} partition, {registry.variant}"
        say("endpoint", f"{service}: {url} ({source})")
    env = options.environ
    proxies = [f"{name}={_mask_proxy(env[name])}" for name in PROXY_VARIABLES if env.get(name)]
    say("proxy", ", ".join(proxies) if proxies else "none set (HTTPS_PROXY, NO_PROXY): direct connections")


def _mask_proxy(value: str) -> str:
    """A proxy URL without its user:password, with or without a scheme; never parsed further (an odd
    port is botocore's to refuse, not a reason to crash here)."""
    userinfo = redact.proxy_userinfo(value)
    return value.replace(userinfo + "@", "***@", 1) if userinfo else value


def _explain_cache(registry: Registry, identity: Identity, options: Options) -> tuple[str | None, str]:
    from ecr_kubelet.cache import TokenCache, cache_key, prepare_cache_dir

    key = cache_key(registry, identity, options.endpoints)
    if key is None:
        asks = "STS" if identity.mode == "service-account" else "the credential chain and AWS"
        say("cache", f"not cacheable ({identity.uncacheable_reason()}): every run asks {asks}")
        return None, "uncacheable"
    if options.cache_dir is None:
        say("cache", f"disabled (--no-cache); entry would be {key}")
        return key, "disabled"
    directory = prepare_cache_dir(options.cache_dir)
    if directory is None:
        say("cache", f"{options.cache_dir} is refused or cannot be created (see the warning): running uncached")
        return key, "disabled"
    freshness = options.freshness
    path = os.path.join(directory, f"{key}.json")
    cached = TokenCache(directory, freshness).lookup(key)
    now = time.time()
    if cached is None:
        state = "present but expired, unreadable or not private" if os.path.exists(path) else "absent"
        say("cache", f"entry {path}: {state}: the plugin fetches a new token")
        return key, "stale" if os.path.exists(path) else "absent"
    if freshness.is_fresh(cached, now):
        say("cache", f"entry {path}: fresh (fetched {logs.when(cached.fetched_at)}, refresh after "
            f"{logs.when(freshness.refresh_at(cached))}, expires {logs.when(cached.expires_at)}): no AWS call needed")
        return key, "fresh"
    say("cache", f"entry {path}: past its refresh point, still valid until "
        f"{logs.when(freshness.usable_until(cached))}: the plugin refreshes it, and serves it if AWS fails")
    return key, "refresh"


def _explain_calls(observer: Observer) -> None:
    if not observer.calls:
        say("aws", "no AWS call made")
    for call in observer.calls:
        detail = "OK" if call.result == "success" else f"{call.result}: {call.code or 'no code'}"
        status = f"HTTP {call.status}" if call.status else "no HTTP answer"
        message = f" ({call.message})" if call.message else ""
        say("aws", f"{call.name}: {detail}, {status}{message}")


def _explain_outcome(outcome: str) -> None:
    text = {
        "hit": "served from the cache",
        "fetched": "fetched from AWS and stored in the cache",
        "stale": "refreshing failed; the still-valid cached token is served",
        "fetched (not cacheable)": "fetched from AWS (not cached)",
    }.get(outcome, outcome)
    say("token", text)


def _failure_hints(exc: ProviderError, observer: Observer, identity: Identity, registry: Registry,
                   creds_ok: bool, env: Mapping[str, str]) -> None:
    calls = observer.calls
    failed = [c for c in calls if c.result != "success"]
    last: AwsCall | None = failed[-1] if failed else None
    if not creds_ok and exc.exit_code == EXIT_AUTH:
        hint("no credentials: give the node an instance profile (IMDS reachable; hop limit 2 where the plugin "
             "runs in a container), or set AWS_PROFILE / AWS_* variables in the provider's env")
    if any(is_clock_skew(c) for c in failed):
        hint("clock skew: AWS rejected the request's signing time; fix the node's clock (chrony / NTP)")
    elif last is not None and last.service == "eks-auth":
        if last.result == "denied" and last.code != "InvalidTokenException":
            hint("eks-auth refused the node: its role needs eks-auth:AssumeRoleForPodIdentity (the "
                 "AmazonEKSWorkerNodePolicy grants it)")
        elif last.result == "denied":
            hint("eks-auth refused the token: --eks-cluster-name must be the cluster that issued it, and the "
                 "provider's tokenAttributes.serviceAccountTokenAudience must be pods.eks.amazonaws.com")
    elif last is not None and last.result == "denied":
        who = f"the role {identity.registry_role or identity.role_arn}" if identity.mode != "node" or \
            identity.registry_role else "the node's identity"
        if last.service == "sts":
            hint(f"access denied by STS: the role's trust policy must allow the caller to {last.operation} "
                 f"({who}), and the caller's policy must allow sts:{last.operation} on it")
        else:
            hint(f"access denied: {who} needs {registry.service}:GetAuthorizationToken (resource *) in its "
                 "IAM policy" + (" and sts:GetServiceBearerToken" if registry.kind == "public" else "")
                 + "; pulls also need the repository policy to allow it")
    if any(c.result == "throttled" for c in calls):
        hint(f"throttling: {registry.service}:GetAuthorizationToken is limited per account and region "
             "(20/s, burst 200); the shared cache answers repeats, so many misses mean many distinct "
             "identities or nodes booting at once; throttled calls are retried until the deadline (--timeout)")
    if any(c.result == "server_error" for c in calls):
        hint("AWS answered with a server error: usually transient; a still-valid cached token is served "
             "meanwhile")
    if any(c.result == "network_error" for c in calls) or "unreachable" in str(exc):
        hint("endpoint unreachable: check DNS and routes to the endpoints above (VPC endpoints for "
             "ecr.api and sts, security groups, a firewall)")
        _proxy_hint(env, any(c.code == "ProxyConnectionError" for c in calls))
    elif "gave up after" in str(exc) and not any(c.result == "throttled" for c in calls):
        hint("endpoint unreachable or hanging: check DNS and routes to the endpoints above (VPC endpoints, "
             "security groups), the instance metadata service, and the proxy settings")
        _proxy_hint(env)


def _proxy_hint(env: Mapping[str, str], proxy_failed: bool = False) -> None:
    proxy = next((env[n] for n in _PROXY_URLS if env.get(n)), None)
    if proxy_failed:
        hint(f"proxy: the proxy {_mask_proxy(proxy or '?')} refused or dropped the connection")
    elif proxy:
        hint("proxy: calls go through the proxy; NO_PROXY must list 169.254.169.254 and 169.254.170.2 (instance "
             "and container metadata) and your VPC endpoints")
    else:
        hint("proxy: none is set; if the node reaches AWS only through one, put HTTPS_PROXY and NO_PROXY in "
             "the provider's env (the kubelet passes its own environment too)")

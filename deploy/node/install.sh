#!/usr/bin/env bash
# Install ecr-credential-provider (ecr-kubelet) on a node: the binary, a CredentialProviderConfig and a
# systemd drop-in that passes the kubelet the two flags it needs. Meant for AMI builds and user data.
#
# Idempotent: running it again with the same inputs changes nothing. It records what it wrote (path and
# sha256) in <bin-dir>/.ecr-kubelet-install.manifest and never overwrites a config or drop-in it did
# not write (or that was edited since) unless --force is given. Everything is staged and verified
# before the first file is touched, so a bad checksum or download changes nothing.
set -Eeuo pipefail

PROG=${0##*/}
NAME=ecr-credential-provider
MARKER="# Managed by ecr-kubelet deploy/node/install.sh; edits are kept only with --force."

ROOT=/
BINARY_SRC=""
SHA256=""
CONFIG_SRC=""
CONFIG_SHA256=""
BIN_DIR=/etc/eks/image-credential-provider
CONFIG_PATH=""
DROPIN=/etc/systemd/system/kubelet.service.d/30-ecr-credential-provider.conf
ARGS_VAR=KUBELET_EXTRA_ARGS
WRITE_DROPIN=1
FORCE=0
DRY_RUN=0
RESTART=0

usage() {
    cat <<EOF
Usage: $PROG --binary PATH|URL [options]

Installs $NAME into the kubelet's credential provider bin dir, a config, and a kubelet drop-in.

  --binary PATH|URL      the $NAME binary to install (file path, or https:// URL fetched with curl/wget;
                         plain http:// is refused)
  --sha256 HEX           expected sha256 of the binary; the install fails and changes nothing on mismatch
  --config PATH|URL      CredentialProviderConfig to install (default: the EKS host list, built in);
                         an https:// URL needs --config-sha256 (its env reaches a root process)
  --config-sha256 HEX    expected sha256 of the config; the install fails and changes nothing on mismatch
  --bin-dir DIR          --image-credential-provider-bin-dir (default: $BIN_DIR)
  --config-path FILE     --image-credential-provider-config (default: <bin-dir>/config.json)
  --dropin FILE          systemd drop-in to write (default: $DROPIN)
  --args-var NAME        environment variable the kubelet unit expands into its command line
                         (default: $ARGS_VAR)
  --no-dropin            do not write a drop-in (AL2023 nodeadm already passes both flags for the EKS paths)
  --restart-kubelet      restart kubelet afterwards (only with --root /)
  --force                overwrite a config or drop-in this script did not write, or that was edited
  --dry-run              print what would change, change nothing
  --root DIR             install under DIR instead of / (image builds, tests)
  -h, --help             this help
EOF
}

log() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --binary) need_value "$@"; BINARY_SRC=$2; shift 2 ;;
        --sha256) need_value "$@"; SHA256=$2; shift 2 ;;
        --config) need_value "$@"; CONFIG_SRC=$2; shift 2 ;;
        --config-sha256) need_value "$@"; CONFIG_SHA256=$2; shift 2 ;;
        --bin-dir) need_value "$@"; BIN_DIR=$2; shift 2 ;;
        --config-path) need_value "$@"; CONFIG_PATH=$2; shift 2 ;;
        --dropin) need_value "$@"; DROPIN=$2; shift 2 ;;
        --args-var) need_value "$@"; ARGS_VAR=$2; shift 2 ;;
        --no-dropin) WRITE_DROPIN=0; shift ;;
        --restart-kubelet) RESTART=1; shift ;;
        --force) FORCE=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --root) need_value "$@"; ROOT=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

[[ -n "$BINARY_SRC" ]] || { usage >&2; die "--binary is required"; }
[[ -z "$CONFIG_PATH" ]] && CONFIG_PATH="$BIN_DIR/config.json"
for p in "$BIN_DIR" "$CONFIG_PATH" "$DROPIN"; do
    [[ "$p" == /* ]] || die "paths must be absolute (as seen by the kubelet): $p"
done
[[ "$ARGS_VAR" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "--args-var must be a variable name: $ARGS_VAR"
if [[ -n "$SHA256" ]]; then
    SHA256=$(printf '%s' "$SHA256" | tr 'A-F' 'a-f')
    [[ "$SHA256" =~ ^[0-9a-f]{64}$ ]] || die "--sha256 must be 64 hex digits"
fi
if [[ -n "$CONFIG_SHA256" ]]; then
    CONFIG_SHA256=$(printf '%s' "$CONFIG_SHA256" | tr 'A-F' 'a-f')
    [[ "$CONFIG_SHA256" =~ ^[0-9a-f]{64}$ ]] || die "--config-sha256 must be 64 hex digits"
    [[ -n "$CONFIG_SRC" ]] || die "--config-sha256 needs --config"
fi
# What is fetched over the network is fetched over TLS; a config (whose env reaches a root process)
# from the network is installed only with its checksum.
for src in "$BINARY_SRC" "$CONFIG_SRC"; do
    case "$src" in
        http://*) die "refusing plain http:// for $src: use https:// (or a local file)" ;;
    esac
done
if [[ "$CONFIG_SRC" == https://* && -z "$CONFIG_SHA256" ]]; then
    die "--config $CONFIG_SRC is a URL: give its --config-sha256 (from the release's SHA256SUMS or your own)"
fi
[[ -d "$ROOT" ]] || die "--root $ROOT is not a directory"
ROOT=${ROOT%/}

# Paths on the node as the kubelet sees them, and where we write them.
host_path() { printf '%s%s' "$ROOT" "$1"; }
BIN_TARGET="$BIN_DIR/$NAME"
MANIFEST="$BIN_DIR/.ecr-kubelet-install.manifest"

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/ecr-kubelet-install.XXXXXX")
PENDING=""  # a hidden temporary file next to its target, until it is renamed into place
trap 'rm -rf "$STAGE"; [[ -z "$PENDING" ]] || rm -f -- "$PENDING"' EXIT

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

fetch() { # fetch SRC DEST
    local src=$1 dest=$2
    case "$src" in
        https://*)
            if command -v curl >/dev/null 2>&1; then
                curl --fail --silent --show-error --location --retry 3 --max-time 300 -o "$dest" "$src" \
                    || die "download failed: $src"
            elif command -v wget >/dev/null 2>&1; then
                wget -q -T 300 -O "$dest" "$src" || die "download failed: $src"
            else
                die "neither curl nor wget is available to fetch $src"
            fi
            ;;
        *)
            [[ -f "$src" ]] || die "no such file: $src"
            cp -- "$src" "$dest"
            ;;
    esac
}

# BEGIN generated by scripts/gen-configs from the ECR host tables: do not edit
default_config() {
    cat <<'EOF'
{
  "apiVersion": "kubelet.config.k8s.io/v1",
  "kind": "CredentialProviderConfig",
  "providers": [
    {
      "name": "ecr-credential-provider",
      "matchImages": [
        "*.dkr.ecr.*.amazonaws.com",
        "*.dkr.ecr.*.amazonaws.com.cn",
        "*.dkr.ecr.*.amazonaws.eu",
        "*.dkr.ecr.*.c2s.ic.gov",
        "*.dkr.ecr.*.sc2s.sgov.gov",
        "*.dkr.ecr.*.cloud.adc-e.uk",
        "*.dkr.ecr.*.csp.hci.ic.gov",
        "*.dkr-ecr.*.on.aws",
        "*.dkr-ecr.*.on.amazonwebservices.com.cn",
        "*.dkr.ecr-fips.*.amazonaws.com",
        "*.dkr-ecr-fips.*.on.aws",
        "public.ecr.aws",
        "ecr-public.aws.com"
      ],
      "defaultCacheDuration": "12h0m0s",
      "apiVersion": "credentialprovider.kubelet.k8s.io/v1"
    }
  ]
}
EOF
}
# END generated by scripts/gen-configs

# ------------------------------------------------------------------------------------------ stage
fetch "$BINARY_SRC" "$STAGE/binary"
[[ -s "$STAGE/binary" ]] || die "the binary $BINARY_SRC is empty"
BIN_SUM=$(sha256_of "$STAGE/binary")
if [[ -n "$SHA256" ]]; then
    [[ "$BIN_SUM" == "$SHA256" ]] || die "sha256 mismatch for $BINARY_SRC: expected $SHA256, got $BIN_SUM; nothing was changed"
    log "binary checksum verified ($BIN_SUM)"
else
    warn "no --sha256 given; installing $BINARY_SRC unverified (sha256 $BIN_SUM)"
fi

if [[ -n "$CONFIG_SRC" ]]; then
    fetch "$CONFIG_SRC" "$STAGE/config"
    if [[ -n "$CONFIG_SHA256" ]]; then
        got=$(sha256_of "$STAGE/config")
        [[ "$got" == "$CONFIG_SHA256" ]] \
            || die "sha256 mismatch for $CONFIG_SRC: expected $CONFIG_SHA256, got $got; nothing was changed"
        log "config checksum verified ($got)"
    fi
else
    default_config >"$STAGE/config"
fi
# A quick sanity check; run "ecr-credential-provider validate-config" for the full kubelet rules.
grep -q '"\{0,1\}kind"\{0,1\}[[:space:]]*:[[:space:]]*"\{0,1\}CredentialProviderConfig' "$STAGE/config" \
    || die "the config ${CONFIG_SRC:-<built-in>} is not a CredentialProviderConfig"
grep -q "$NAME" "$STAGE/config" \
    || warn "the config does not mention a provider named $NAME; the kubelet will not run the installed binary"
CONFIG_SUM=$(sha256_of "$STAGE/config")

quote_flag_value() { # systemd Environment= values are double-quoted; refuse characters that would need escaping
    [[ "$1" != *[\"\\\ \$%]* ]] || die "path has characters that cannot go into a systemd drop-in: $1"
}
quote_flag_value "$CONFIG_PATH"
quote_flag_value "$BIN_DIR"
{
    printf '%s\n' "$MARKER"
    printf '# Passes the kubelet its image credential provider flags. The kubelet unit must expand $%s\n' "$ARGS_VAR"
    printf '# in its ExecStart; an EnvironmentFile= setting the same variable takes precedence over this file.\n'
    printf '[Service]\n'
    printf 'Environment="%s=--image-credential-provider-config=%s --image-credential-provider-bin-dir=%s"\n' \
        "$ARGS_VAR" "$CONFIG_PATH" "$BIN_DIR"
} >"$STAGE/dropin"
DROPIN_SUM=$(sha256_of "$STAGE/dropin")

# --------------------------------------------------------------------------------------- manifest
# Lines: "<sha256>  <path>" for every file this script wrote, path as seen on the node.
recorded_sum() { # recorded_sum PATH -> prints the sum we last wrote there, if any
    local manifest
    manifest=$(host_path "$MANIFEST")
    [[ -f "$manifest" ]] || return 0
    awk -v p="$1" '$2 == p { s = $1 } END { if (s != "") print s }' "$manifest"
}

# Decide what to do with each target: "skip" (already identical), "write", or refuse.
plan() { # plan PATH NEW_SUM KIND -> prints skip|write ; dies when a foreign file would be clobbered
    local path=$1 new_sum=$2 kind=$3 target current recorded
    target=$(host_path "$path")
    if [[ ! -e "$target" ]]; then
        echo write
        return
    fi
    [[ -f "$target" ]] || die "$path exists and is not a regular file"
    current=$(sha256_of "$target")
    if [[ "$current" == "$new_sum" ]]; then
        echo skip
        return
    fi
    if [[ "$kind" == binary ]]; then
        echo write
        return
    fi
    recorded=$(recorded_sum "$path")
    if [[ "$current" == "$recorded" || "$FORCE" == 1 ]]; then
        echo write
        return
    fi
    if [[ -z "$recorded" ]]; then
        die "$path exists and was not written by $PROG; not overwriting it (use --force, or --config-path/--dropin elsewhere)"
    fi
    die "$path was edited since $PROG wrote it; not overwriting it (use --force)"
}

BIN_ACTION=$(plan "$BIN_TARGET" "$BIN_SUM" binary)
CONFIG_ACTION=$(plan "$CONFIG_PATH" "$CONFIG_SUM" config)
DROPIN_ACTION=skip
if [[ "$WRITE_DROPIN" == 1 ]]; then
    DROPIN_ACTION=$(plan "$DROPIN" "$DROPIN_SUM" dropin)
fi

# Warn when the kubelet unit will not see the flags.
if [[ "$WRITE_DROPIN" == 1 ]]; then
    for envfile in /etc/default/kubelet /etc/sysconfig/kubelet; do
        if [[ -f "$(host_path "$envfile")" ]] && grep -q "^[[:space:]]*$ARGS_VAR=" "$(host_path "$envfile")"; then
            warn "$envfile sets $ARGS_VAR, which overrides the drop-in: add the two flags there instead"
        fi
    done
    for unit in /etc/systemd/system/kubelet.service /usr/lib/systemd/system/kubelet.service /lib/systemd/system/kubelet.service; do
        if [[ -f "$(host_path "$unit")" ]]; then
            if ! grep -q "\$$ARGS_VAR\|\${$ARGS_VAR}" "$(host_path "$unit")" \
                && ! grep -rqs "\$$ARGS_VAR\|\${$ARGS_VAR}" "$(host_path /etc/systemd/system/kubelet.service.d)"; then
                warn "$unit does not expand \$$ARGS_VAR; pass --args-var with the variable it uses"
            fi
            break
        fi
    done
fi

# ---------------------------------------------------------------------------------------- install
CHANGED=0
package_link() { [[ -L "$1" && "$(readlink "$1")" == /usr/libexec/ecr-kubelet/* ]]; }

# put SRC DEST MODE WHAT: copy through a hidden temporary file next to DEST and a rename; a failed
# copy (a full disk) removes the temporary file and changes nothing.
put() {
    local src=$1 dest=$2 mode=$3 what=$4
    PENDING=$(mktemp "$(dirname "$dest")/.${dest##*/}.XXXXXX") || die "cannot write next to $what"
    if ! { cp -p -- "$src" "$PENDING" && { [[ -z "$mode" ]] || chmod "$mode" "$PENDING"; } \
           && mv -f -- "$PENDING" "$dest"; }; then
        rm -f -- "$PENDING"
        PENDING=""
        die "cannot write $what (is the disk full?); it is unchanged"
    fi
    PENDING=""
}

install_file() { # install_file STAGED PATH MODE ACTION
    local staged=$1 path=$2 mode=$3 action=$4 target tmp
    target=$(host_path "$path")
    if [[ "$action" == skip ]]; then
        log "unchanged: $path"
        return
    fi
    if [[ "$DRY_RUN" == 1 ]]; then
        log "would write: $path (mode $mode)"
        return
    fi
    mkdir -p "$(dirname "$target")"
    # A binary found there is kept as .orig, unless it is the package's link (the package keeps
    # its own copy, and its later upgrades leave a binary forced over its link in place).
    if [[ "$path" == "$BIN_TARGET" && -e "$target" && ! -e "$target.orig" && -z "$(recorded_sum "$path")" ]] \
          && ! package_link "$target"; then
        put "$target" "$target.orig" "" "kept the previous binary"
        log "kept the previous binary as $path.orig"
    fi
    put "$staged" "$target" "$mode" "$path"
    log "wrote: $path"
    CHANGED=1
}

record() { # record PATH SUM: update the manifest entry for PATH
    local manifest tmp
    [[ "$(recorded_sum "$1")" == "$2" ]] && return 0
    manifest=$(host_path "$MANIFEST")
    mkdir -p "$(dirname "$manifest")"
    tmp="$STAGE/manifest"
    : >"$tmp"
    if [[ -f "$manifest" ]]; then
        awk -v p="$1" '$2 != p' "$manifest" >"$tmp"
    fi
    printf '%s  %s\n' "$2" "$1" >>"$tmp"
    put "$tmp" "$manifest" 0644 "$MANIFEST"
}

[[ "$DRY_RUN" == 1 ]] && log "dry run: nothing will be changed"
# The ecr-kubelet .deb/.rpm links the same path to its own copy: one route per node.
if package_link "$(host_path "$BIN_TARGET")" && [[ "$FORCE" == 0 ]]; then
    die "$BIN_TARGET is installed by the ecr-kubelet package; upgrade it with apt/dnf (or --force to replace it)"
fi
install_file "$STAGE/binary" "$BIN_TARGET" 0755 "$BIN_ACTION"
install_file "$STAGE/config" "$CONFIG_PATH" 0644 "$CONFIG_ACTION"
if [[ "$WRITE_DROPIN" == 1 ]]; then
    install_file "$STAGE/dropin" "$DROPIN" 0644 "$DROPIN_ACTION"
fi

if [[ "$DRY_RUN" == 0 ]]; then
    # Record what we own (also files we found identical, so later runs may update them).
    [[ "$BIN_ACTION" == write || -n "$(recorded_sum "$BIN_TARGET")" ]] && record "$BIN_TARGET" "$BIN_SUM"
    [[ "$CONFIG_ACTION" == write || -n "$(recorded_sum "$CONFIG_PATH")" ]] && record "$CONFIG_PATH" "$CONFIG_SUM"
    if [[ "$WRITE_DROPIN" == 1 ]] && [[ "$DROPIN_ACTION" == write || -n "$(recorded_sum "$DROPIN")" ]]; then
        record "$DROPIN" "$DROPIN_SUM"
    fi
fi

# First run of the new binary now: it unpacks its bundle and removes the runtime directories of
# old versions that no running process holds (the same as the packages' post-install step).
if [[ "$ROOT" == "" && "$DRY_RUN" == 0 && "$BIN_ACTION" == write ]]; then
    if ECR_KUBELET_PRUNE_ALL=1 "$BIN_TARGET" --version >/dev/null 2>&1; then
        log "unpacked the new binary (old versions' runtime directories pruned)"
    else
        warn "$BIN_TARGET --version failed"
    fi
fi

if [[ "$ROOT" == "" && "$DRY_RUN" == 0 && "$CHANGED" == 1 ]] && command -v systemctl >/dev/null 2>&1; then
    if [[ "$DROPIN_ACTION" == write ]]; then
        systemctl daemon-reload || warn "systemctl daemon-reload failed"
    fi
    if [[ "$RESTART" == 1 ]]; then
        systemctl restart kubelet || die "kubelet restart failed"
        log "kubelet restarted"
    else
        log "restart the kubelet (systemctl restart kubelet) to use the new plugin and config"
    fi
fi

if [[ "$CHANGED" == 0 && "$DRY_RUN" == 0 ]]; then
    log "already up to date"
fi
exit 0

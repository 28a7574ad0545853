#!/bin/sh
# Runs in the DaemonSet's initContainer: copies the plugin into the host's credential provider bin dir
# (and optionally the config), verifying the sha256 shipped in the image. Files are replaced with a
# rename, so the kubelet never executes a half-written binary. POSIX sh: works with busybox.
set -eu

: "${SOURCE_BINARY:=/opt/ecr-kubelet/bin/ecr-credential-provider}"
: "${SOURCE_SHA256_FILE:=${SOURCE_BINARY}.sha256}"
: "${TARGET_BIN_DIR:=/host/bin-dir}"
: "${TARGET_CONFIG_DIR:=/host/config-dir}"
: "${CONFIG_FILE_NAME:=config.json}"
: "${SOURCE_CONFIG:=/install/config.json}"
: "${INSTALL_CONFIG:=false}"
: "${FORCE:=false}"
NAME=ecr-credential-provider

log() { echo "install-on-node: $*"; }
die() { echo "install-on-node: error: $*" >&2; exit 1; }

sum_of() { sha256sum "$1" | cut -d' ' -f1; }

# Replace TARGET through a hidden temporary file and a rename: the kubelet never executes a
# half-written binary, and a failed copy (a full disk) leaves no temporary file behind.
replace() { # replace SOURCE TARGET MODE
    tmp="$(dirname "$2")/.$(basename "$2").new.$$"
    if ! { cp "$1" "$tmp" && chmod "$3" "$tmp" && mv -f "$tmp" "$2"; }; then
        rm -f "$tmp"
        die "cannot write $2 (is the disk full?); the previous file is unchanged"
    fi
}

[ -f "$SOURCE_BINARY" ] || die "no binary at $SOURCE_BINARY in this image"
[ -d "$TARGET_BIN_DIR" ] || die "$TARGET_BIN_DIR is not mounted"
want=""
if [ -f "$SOURCE_SHA256_FILE" ]; then
    want=$(cut -d' ' -f1 "$SOURCE_SHA256_FILE")
fi
have=$(sum_of "$SOURCE_BINARY")
if [ -n "$want" ] && [ "$want" != "$have" ]; then
    die "sha256 mismatch for $SOURCE_BINARY: image says $want, file is $have; nothing changed"
fi
[ -n "$want" ] || log "warning: no $SOURCE_SHA256_FILE in the image; installing unverified"

target="$TARGET_BIN_DIR/$NAME"
# The ecr-kubelet .deb/.rpm links the same path to its own copy: one route per node, as
# deploy/node/install.sh decides (FORCE=true takes the path over; later package upgrades leave it).
if [ -L "$target" ] && [ "$FORCE" != "true" ]; then
    case "$(readlink "$target")" in
        /usr/libexec/ecr-kubelet/*)
            die "$NAME is installed by the ecr-kubelet package; upgrade it with apt/dnf (or set FORCE=true to replace it)" ;;
    esac
fi
if [ -f "$target" ] && [ ! -L "$target" ] && [ "$(sum_of "$target")" = "$have" ]; then
    log "binary up to date ($have)"
else
    replace "$SOURCE_BINARY" "$target" 0755
    [ "$(sum_of "$target")" = "$have" ] || die "verification after copy failed for $target"
    log "installed binary $have"
fi

if [ "$INSTALL_CONFIG" = "true" ]; then
    config="$TARGET_CONFIG_DIR/$CONFIG_FILE_NAME"
    mark="$TARGET_CONFIG_DIR/.$CONFIG_FILE_NAME.ecr-kubelet.sha256"
    new=$(sum_of "$SOURCE_CONFIG")
    if [ -f "$config" ] && [ "$(sum_of "$config")" = "$new" ]; then
        log "config up to date"
    else
        if [ -f "$config" ] && [ "$FORCE" != "true" ]; then
            recorded=""
            [ -f "$mark" ] && recorded=$(cat "$mark")
            [ "$(sum_of "$config")" = "$recorded" ] \
                || die "$CONFIG_FILE_NAME exists and was not written by this installer (or was edited); set FORCE=true to replace it"
        fi
        replace "$SOURCE_CONFIG" "$config" 0644
        log "installed config; the kubelet reads it at its next restart"
    fi
    if ! { echo "$new" >"$mark.new.$$" && mv -f "$mark.new.$$" "$mark"; }; then
        rm -f "$mark.new.$$"
        die "cannot write $mark (is the disk full?)"
    fi
fi
log "done"

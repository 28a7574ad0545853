#!/bin/sh
# After install or upgrade (deb: configure; rpm: 1 or 2). Links the binary where the EKS AMIs'
# kubelet looks for it, keeping a binary that was there before as .orig-ecr-kubelet (restored on
# removal), then runs it once: the first run unpacks the new version's bundle and removes the
# runtime directories of old versions that no running process holds.
set -e
BIN=/usr/libexec/ecr-kubelet/ecr-credential-provider
DIR=/etc/eks/image-credential-provider
LINK=$DIR/ecr-credential-provider

if [ ! -d "$DIR" ]; then
    mkdir -p "$DIR"
    : > /usr/libexec/ecr-kubelet/.created-eks-dir
fi
if [ -L "$LINK" ] && [ "$(readlink "$LINK")" = "$BIN" ]; then
    :
else
    if [ -e "$LINK" ] || [ -L "$LINK" ]; then
        [ -e "$LINK.orig-ecr-kubelet" ] || mv -f "$LINK" "$LINK.orig-ecr-kubelet"
    fi
    ln -sfn "$BIN" "$LINK"
fi
"$BIN" --version >/dev/null 2>&1 || echo "ecr-kubelet: warning: $BIN --version failed" >&2
exit 0

#!/bin/sh
# After install or upgrade (deb: configure; rpm: 1 or 2). Links the binary where the EKS AMIs'
# kubelet looks for it, then runs it once: the first run unpacks the new version's bundle and
# removes the runtime directories of the other versions that no running process holds
# (ECR_KUBELET_PRUNE_ALL=1: all of them, not only those beyond the newest one).
#
# What is at the link's path is never lost: on the first install a binary found there is kept as
# .orig-ecr-kubelet (put back on removal). A binary that replaced the package's link later
# (deploy/node/install.sh --force, or the DaemonSet's installer with FORCE=true) is the operator's
# choice: an upgrade (the package had linked: .linked) leaves it in place and says so, as does an
# install that finds the .orig-ecr-kubelet place taken.
set -e
BIN=/usr/libexec/ecr-kubelet/ecr-credential-provider
DIR=/etc/eks/image-credential-provider
LINK=$DIR/ecr-credential-provider
LINKED=/usr/libexec/ecr-kubelet/.linked  # the package has linked LINK (removed with the link)

if [ ! -d "$DIR" ]; then
    mkdir -p "$DIR"
    : > /usr/libexec/ecr-kubelet/.created-eks-dir
fi
if [ -L "$LINK" ] && [ "$(readlink "$LINK")" = "$BIN" ]; then
    :
elif [ ! -e "$LINK" ] && [ ! -L "$LINK" ]; then
    ln -s "$BIN" "$LINK"
elif [ ! -e "$LINKED" ] && [ ! -e "$LINK.orig-ecr-kubelet" ] && [ ! -L "$LINK.orig-ecr-kubelet" ]; then
    mv -f "$LINK" "$LINK.orig-ecr-kubelet"
    ln -s "$BIN" "$LINK"
else
    echo "ecr-kubelet: warning: $LINK is not the package's link (replaced by an installer with --force?);" \
        "leaving it; remove it and reinstall the package to use the package's binary" >&2
fi
if [ -L "$LINK" ] && [ "$(readlink "$LINK")" = "$BIN" ]; then
    : > "$LINKED"
fi
ECR_KUBELET_PRUNE_ALL=1 "$BIN" --version >/dev/null 2>&1 || echo "ecr-kubelet: warning: $BIN --version failed" >&2
exit 0

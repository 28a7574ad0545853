#!/bin/sh
# Before removal (deb: remove; rpm: 0) but not before an upgrade: unlink the binary from the
# kubelet's directory and put back what was there before the package.
set -e
case "$1" in
    remove|0) ;;
    *) exit 0 ;;
esac
BIN=/usr/libexec/ecr-kubelet/ecr-credential-provider
DIR=/etc/eks/image-credential-provider
LINK=$DIR/ecr-credential-provider
if [ -L "$LINK" ] && [ "$(readlink "$LINK")" = "$BIN" ]; then
    rm -f "$LINK"
fi
rm -f /usr/libexec/ecr-kubelet/.linked
if [ -e "$LINK.orig-ecr-kubelet" ] && [ ! -e "$LINK" ]; then
    mv -f "$LINK.orig-ecr-kubelet" "$LINK"
fi
if [ -e /usr/libexec/ecr-kubelet/.created-eks-dir ]; then
    rm -f /usr/libexec/ecr-kubelet/.created-eks-dir
    rmdir "$DIR" 2>/dev/null || true
    rmdir /etc/eks 2>/dev/null || true
fi
exit 0

#!/bin/sh
# After removal (deb: remove or purge; rpm: 0), not after an upgrade: the unpacked bundles and the
# token cache are caches of this package's binary; nothing else uses them.
set -e
case "$1" in
    remove|purge|0) ;;
    *) exit 0 ;;
esac
rm -rf /var/cache/ecr-credential-provider
rmdir /usr/libexec/ecr-kubelet 2>/dev/null || true
exit 0

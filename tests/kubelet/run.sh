#!/usr/bin/env bash
# Conformance of ecr-credential-provider against the kubelet's own credential
# provider plugin code (pinned Kubernetes release, see go.mod).
#
# Usage: tests/kubelet/run.sh [extra go test args]
# Env:   ECR_KUBELET_BINARY  plugin executable (default: <repo>/.venv/bin/ecr-credential-provider)
#        PYTHON              python for tests/stub_server.py (default: python3)
#        GO                  go command (default: go)
#        KUBELET_CONFORMANCE_TIMEOUT  go test -timeout (default: 20m)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
go_cmd="${GO:-go}"

if ! command -v "$go_cmd" >/dev/null 2>&1; then
    echo "tests/kubelet/run.sh: FAIL: '$go_cmd' not found; the kubelet conformance tests need Go (see tests/kubelet/go.mod for the version)." >&2
    exit 1
fi

binary="${ECR_KUBELET_BINARY:-$root/.venv/bin/ecr-credential-provider}"
case "$binary" in /*) ;; *) binary="$(pwd)/$binary" ;; esac
if [[ ! -x "$binary" || -d "$binary" ]]; then
    echo "tests/kubelet/run.sh: FAIL: plugin executable '$binary' is missing or not executable (set ECR_KUBELET_BINARY)." >&2
    exit 1
fi
python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "tests/kubelet/run.sh: FAIL: '$python' not found (needed for tests/stub_server.py; set PYTHON)." >&2
    exit 1
fi
export ECR_KUBELET_BINARY="$binary" PYTHON="$python"

echo "kubelet conformance: $("$go_cmd" version), plugin $binary"
cd "$here"
start=$(date +%s)
set +e
"$go_cmd" test ./... -count=1 -v -timeout "${KUBELET_CONFORMANCE_TIMEOUT:-20m}" "$@"
rc=$?
set -e
echo "kubelet conformance: exit $rc after $(( $(date +%s) - start ))s"
exit $rc

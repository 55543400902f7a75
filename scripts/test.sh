#!/usr/bin/env bash
# The test command: installs the tools the tests use, then runs every test,
# end-to-end testbed tests included. Needs root (re-runs itself through
# sudo where there is sudo). Extra arguments go to
# `go test` (for example -run TestMesh).
set -euo pipefail
# shellcheck source=deps.sh
. "$(dirname "$0")/deps.sh"
zlmesh_as_root "$@"
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$ZLMESH_TOOLS"
zlmesh_install_deps
modprobe tun 2>/dev/null || true
go test -count=1 -timeout 40m "$@" ./...

#!/usr/bin/env bash
# The test command: installs the tools the tests use, then runs every test,
# end-to-end testbed tests included. Needs root. Extra arguments go to
# `go test` (for example -run TestMesh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
. scripts/deps.sh
zlmesh_install_deps
modprobe tun 2>/dev/null || true
go test -count=1 -timeout 40m "$@" ./...

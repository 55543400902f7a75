#!/usr/bin/env bash
# The demo: installs the tools, builds zlmesh, and runs a 3-host mesh in the
# network-namespace testbed: peers of each host, a ping matrix over the
# overlay, containers pinging each other; then tears everything down. Needs
# root (re-runs itself through sudo where there is sudo). Nothing leaves the
# machine: the testbed is namespaces only.
set -euo pipefail
# shellcheck source=deps.sh
. "$(dirname "$0")/deps.sh"
zlmesh_as_root "$@"
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
zlmesh_install_deps
mkdir -p bin
go build -o bin/zlmesh ./cmd/zlmesh
exec bin/zlmesh testbed demo "$@"

#!/usr/bin/env bash
# The demo: installs the tools, builds zlmesh, and runs a 3-host mesh in the
# network-namespace testbed: peers of each host, a ping matrix over the
# overlay, containers pinging each other; then tears everything down. Needs
# root. Nothing leaves the machine: the testbed is namespaces only.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
. scripts/deps.sh
zlmesh_install_deps
mkdir -p bin
go build -o bin/zlmesh ./cmd/zlmesh
exec bin/zlmesh testbed demo "$@"

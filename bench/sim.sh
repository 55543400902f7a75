#!/usr/bin/env bash
# Runs the in-process cluster simulation (bench/sim): 50 and 200 nodes, zlmesh
# (mesh + block claims in the default plan, some nodes growing during the
# burst, then a growth of 20 nodes at once) against plain memberlist with LAN
# defaults in the same run, and prints the comparison table. Extra arguments
# go to the program (e.g. -nodes 50, -loopback, -only zlmesh, -grow-nodes 0).
# A full run takes 2-4 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o "${TMPDIR:-/tmp}/zlmesh-sim" ./bench/sim
exec "${TMPDIR:-/tmp}/zlmesh-sim" -nodes "${NODES:-50,200}" "$@"

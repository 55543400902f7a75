#!/usr/bin/env bash
# bench/heal.sh: a 5-host zlmesh testbed partitioned {h1,h2} | {h3,h4,h5},
# then healed: time from the heal until every host pings every other host's
# overlay address (bench/heal). Two partitions, interleaved over ROUNDS
# rounds: a short one (nobody is declared dead) and a long one that outlasts
# failure detection and gossip's forget time (--gossip-to-the-dead, FORGET),
# so only zlmesh's re-join of remembered peers can heal it. The floor, from
# the same rounds, is one full ping matrix of the whole mesh.
#
# Env: ROUNDS (default 3), FORGET (default 5s), ZLMESH_ARGS. Needs root;
# everything runs in a testbed with a random prefix, removed on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/deps.sh"
zlmesh_install_deps
TMP=$(mktemp -d /tmp/zlb-heal.XXXX)
trap 'rm -rf "$TMP"' EXIT
(cd "$root" && go build -o "$TMP/zlmesh" ./cmd/zlmesh && go build -o "$TMP/heal" ./bench/heal)
echo "heal.sh: zlmesh $(cd "$root" && git describe --always --dirty 2>/dev/null || echo ?), load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
"$TMP/heal" -binary "$TMP/zlmesh" -rounds "${ROUNDS:-3}" -forget "${FORGET:-5s}" -args "${ZLMESH_ARGS:-}"

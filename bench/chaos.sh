#!/usr/bin/env bash
# bench/chaos.sh: longer random chaos runs of zlmesh (bench/chaos, the same
# runner as the e2e test TestChaos): on a fresh 7-host testbed per round,
# containers over several services on every host, a seeded random schedule
# of kill -9, clean restarts, link cuts and partitions of 40-70 s, and
# container churn, then no action until the mesh converges (or SETTLE
# passes: then the round fails, its problems are printed and the hosts'
# logs kept under /tmp/zlmesh-chaos/<seed>/).
# Each round prints its seed; SEED=<n> replays it exactly (round i of a run
# uses SEED+i).
#
# Env: SEED (default random), ROUNDS (1), FAULTS (8), HOSTS (7), CONTAINERS
# per host (4), SERVICES (6), KINDS (kill,restart,cut,partition,churn),
# MIN_HOLD and MAX_HOLD (40s, 70s), MAX_GAP (15s), SETTLE (2m),
# ZLMESH_ARGS (default: the chaos gossip timers and small blocks released
# after 10 s, testbed.ChaosNodeArgs and ChaosBlockArgs; when set, empty
# blocks are not checked unless RELEASED=true), V=1
# logs every step, KEEP_LOGS=1 keeps the logs of rounds that pass too. Needs root; run it under flock /tmp/zlmesh-testbed.lock on
# a shared machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/deps.sh"
zlmesh_install_deps
TMP=$(mktemp -d /tmp/zlb-chaos.XXXX)
trap 'rm -rf "$TMP"' EXIT
(cd "$root" && go build -o "$TMP/zlmesh" ./cmd/zlmesh && go build -o "$TMP/chaos" ./bench/chaos)
echo "chaos.sh: zlmesh $(cd "$root" && git describe --always --dirty 2>/dev/null || echo ?), load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
args=(-binary "$TMP/zlmesh" -seed "${SEED:-0}" -rounds "${ROUNDS:-1}" -faults "${FAULTS:-8}" -hosts "${HOSTS:-7}"
	-containers "${CONTAINERS:-4}" -services "${SERVICES:-6}" -settle "${SETTLE:-2m}")
[ -n "${KINDS:-}" ] && args+=(-kinds "$KINDS")
[ -n "${MIN_HOLD:-}" ] && args+=(-min-hold "$MIN_HOLD")
[ -n "${MAX_HOLD:-}" ] && args+=(-max-hold "$MAX_HOLD")
[ -n "${MAX_GAP:-}" ] && args+=(-max-gap "$MAX_GAP")
[ -n "${ZLMESH_ARGS:-}" ] && args+=(-args "$ZLMESH_ARGS" -released="${RELEASED:-false}")
[ -n "${V:-}" ] && args+=(-v)
[ -n "${KEEP_LOGS:-}" ] && args+=(-keep-logs)
"$TMP/chaos" "${args[@]}"

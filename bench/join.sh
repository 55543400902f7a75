#!/usr/bin/env bash
# bench/join.sh: join time of a new host, for meshes of 3, 5 and 10 hosts
# (the new host is the 3rd, 5th, 10th): from starting `zlmesh up --join`
# on it until every other host got an answer to a ping of its overlay
# address (bench/jointime). Beside it, in the same rounds and on the same
# new host, the baseline: a standalone wireguard-go of the same version
# whose peers all know the new host in advance (static configuration), from
# starting wireguard-go until every other host got an answer — the floor of
# process start, TUN and handshakes under any join. Rounds of the sizes are
# interleaved (3, 5, 10, 3, …), and the order of zlmesh and the baseline
# alternates from round to round. Target: zlmesh <= 2 s at 10 hosts.
#
# Env: SIZES (default 3,5,10), ROUNDS (default 5), ZLMESH_ARGS (extra
# `zlmesh up` arguments). Needs root; everything runs inside testbeds
# (random prefixes) that are removed on exit, also on failure or ^C.
set -euo pipefail

SIZES=${SIZES:-3,5,10}
ROUNDS=${ROUNDS:-5}

. "$(dirname "$0")/wgpair.sh"

wgpair_build
(cd "$root" && go build -o "$TMP/jointime" ./bench/jointime)
load_before=$(load_avg)
"$TMP/jointime" -binary "$TMP/zlmesh" -wireguard-go "$TMP/wireguard-go" -sizes "$SIZES" -rounds "$ROUNDS" \
	-args "${ZLMESH_ARGS:-}" >"$TMP/out"
load_after=$(load_avg)
echo
echo "join.sh: a new host joins a mesh of N-1; $ROUNDS interleaved rounds per size"
echo "  zlmesh $ZLMESH_REV; wireguard-go $WG_VERSION; $GO_VERSION"
echo "  load average before $load_before, after $load_after ($(nproc) cores)"
sed 's/^/  /' "$TMP/out"
echo "  join: until the last other host got an answer; ready: the new node's control socket answers"
echo "  (gossip joined, subnet claimed); static wg: the baseline described above"
echo "  target: zlmesh join <= 2000 ms at 10 hosts"

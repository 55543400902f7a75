#!/usr/bin/env bash
# bench/latency.sh: ping round-trip times between two testbed hosts, in one
# run, over zlmesh's overlay, over a standalone wireguard-go of the same
# version beside it (bench/wgpair.sh: same namespaces, MTU, offloads, each
# daemon in a session of its own) and over the raw underlay.
#
# COUNT echo requests (default 500) every INTERVAL seconds (default 0.01)
# from h1 to h2, ROUNDS rounds (default 5) with the paths interleaved and
# the order rotated each round. Reports p50, p90, p99 and max of all the
# RTTs of a path pooled, the median of the per-round p50s, and the ratios
# zlmesh/wg (target: within 10%).
#
# Env: COUNT, INTERVAL, ROUNDS, ZLMESH_ARGS (extra `zlmesh up` arguments).
# Needs root; everything runs inside a testbed (random prefix) that is
# removed on exit, also on failure or ^C.
set -euo pipefail

COUNT=${COUNT:-500}
INTERVAL=${INTERVAL:-0.01}
ROUNDS=${ROUNDS:-5}
MODES=(zlmesh wg raw)

. "$(dirname "$0")/wgpair.sh"

echo "latency.sh: building and starting 2 hosts (testbed $P)…" >&2
wgpair_up

addr_of() {
	case $1 in
	zlmesh) zl_addr h2 ;;
	wg) wg_addr h2 ;;
	raw) echo 192.0.2.12 ;;
	esac
}

# measure MODE ROUND: the RTTs (ms) of one ping run, one per line, in
# $TMP/rtt-MODE-ROUND; lost replies count as missing.
measure() {
	in_host h1 ping -n -q -c 1 -W 1 "$(addr_of "$1")" >/dev/null 2>&1 || true
	in_host h1 ping -n -c "$COUNT" -i "$INTERVAL" -W 1 "$(addr_of "$1")" |
		sed -n 's/.* time=\([0-9.]*\) ms.*/\1/p' >"$TMP/rtt-$1-$2"
	echo "latency.sh: round $2 $1: $(wc -l <"$TMP/rtt-$1-$2")/$COUNT replies, p50 $(percentile 50 <"$TMP/rtt-$1-$2") ms" >&2
}

load_before=$(load_avg)
for ((r = 1; r <= ROUNDS; r++)); do
	for ((k = 0; k < ${#MODES[@]}; k++)); do
		measure "${MODES[$(((r - 1 + k) % ${#MODES[@]}))]}" "$r"
	done
done
load_after=$(load_avg)

pooled() { cat "$TMP"/rtt-"$1"-*; }
round_p50s() {
	local f
	for f in "$TMP"/rtt-"$1"-*; do percentile 50 <"$f"; done
}

echo
echo "latency.sh: ping h1 → h2, $ROUNDS interleaved rounds of $COUNT echoes every ${INTERVAL}s"
echo "  zlmesh $ZLMESH_REV; wireguard-go $WG_VERSION; $GO_VERSION"
echo "  load average before $load_before, after $load_after ($(nproc) cores)"
printf '%-8s %8s %9s %9s %9s %9s %13s %18s\n' path replies "p50 ms" "p90 ms" "p99 ms" "max ms" "round p50s" "zlmesh/wg"
declare -A P50 P99
for mode in "${MODES[@]}"; do
	P50[$mode]=$(pooled "$mode" | percentile 50)
	P99[$mode]=$(pooled "$mode" | percentile 99)
done
for mode in "${MODES[@]}"; do
	ratio=-
	if [ "$mode" = zlmesh ]; then
		ratio=$(awk -v a="${P50[zlmesh]}" -v b="${P50[wg]}" -v c="${P99[zlmesh]}" -v d="${P99[wg]}" \
			'BEGIN {printf "p50 %.2f, p99 %.2f", a / b, c / d}')
	fi
	printf '%-8s %8s %9s %9s %9s %9s %13s %18s\n' "$mode" \
		"$(pooled "$mode" | wc -l)/$((COUNT * ROUNDS))" "${P50[$mode]}" \
		"$(pooled "$mode" | percentile 90)" "${P99[$mode]}" "$(pooled "$mode" | percentile 100)" \
		"$(round_p50s "$mode" | median)" "$ratio"
done
echo "  target: zlmesh within 10% of wg (ratios <= 1.10)"

#!/usr/bin/env bash
# bench/ipv6.sh: TCP throughput between two containers on two testbed hosts
# over IPv6 against IPv4, in one run: container ctr1 on h1 → ctr2 on h2,
# both attached to service bench through the control API, the same path
# (veth, service bridge, host route, zl0, WireGuard, and back) once to
# ctr2's IPv4 address and once to its IPv6 twin.
#
# iperf3, DURATION seconds (default 10), with 1 and 4 parallel streams, the
# two families interleaved (v4, v6, v6, v4, …) for ROUNDS rounds (default 5)
# so that the machine's load falls on both alike; then CONCURRENT runs
# (default 5) of both at the same instant, one stream each, whose ratio does
# not drift with the load. Prints the medians, the ratios v6/v4 (of the
# medians, and the median of the per-round ratios) and the machine's load.
# Target (issue 17): v6/v4 ≥ 0.95.
#
# Env: DURATION, ROUNDS, STREAMS (default "1 4"), CONCURRENT, ZLMESH_ARGS.
# Needs root; everything runs inside a testbed (random prefix) removed on
# exit, also on failure or ^C.
set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-5}
STREAMS=${STREAMS:-"1 4"}
CONCURRENT=${CONCURRENT:-5}
WGPAIR_CONTAINERS=h1:bench:ctr1,h2:bench:ctr2
. "$(dirname "$0")/wgpair.sh"
WG_INSTANCES=() # no standalone wireguard-go: both paths are zlmesh's

echo "ipv6.sh: building and starting 2 hosts (testbed $P)…" >&2
wgpair_up
ctr_addr6() { jq -r --arg c "$1" '.containers[] | select(.name == $c) | .address6 // ""' "$TMP/testbed.json"; }
A4=$(ctr_addr ctr2)
A6=$(ctr_addr6 ctr2)
[ -n "$A6" ] || { echo "ipv6.sh: ctr2 has no IPv6 address (is IPv6 off?)" >&2; exit 1; }
wait_ping h1/ctr1 "$A4"
wait_ping h1/ctr1 "$A6"
for port in 5201 5202; do
	in_host h2/ctr2 iperf3 -s -p "$port" >"$TMP/iperf3-server-$port.log" 2>&1 &
	BG_PIDS+=($!)
done
sleep 0.5

addr_of() { case $1 in v4) echo "$A4" ;; v6) echo "$A6" ;; esac }

# measure FAMILY STREAMS: one iperf3 run; appends "family streams gbits"
# to $TMP/results.
measure() {
	local out
	out=$(in_host h1/ctr1 iperf3 -c "$(addr_of "$1")" -t "$DURATION" -P "$2" -J)
	printf '%s\t%s\t%s\n' "$1" "$2" "$(jq '.end.sum_received.bits_per_second / 1e9 * 1000 | round / 1000' <<<"$out")" |
		tee -a "$TMP/results" >&2
}

echo "ipv6.sh: load average before: $(load_avg); $ROUNDS rounds × v4 v6 × streams $STREAMS, ${DURATION}s each" >&2
for fam in v4 v6; do # warm-up, not counted
	in_host h1/ctr1 iperf3 -c "$(addr_of $fam)" -t 3 -P 4 >/dev/null
done
load_before=$(load_avg)
for ((r = 1; r <= ROUNDS; r++)); do
	for n in $STREAMS; do
		if ((r % 2)); then order="v4 v6"; else order="v6 v4"; fi
		for fam in $order; do
			measure "$fam" "$n"
		done
	done
done

# Both at once, one stream each: the same load at the same instant.
for ((r = 1; r <= CONCURRENT; r++)); do
	in_host h1/ctr1 iperf3 -c "$A4" -p 5201 -t "$DURATION" -J >"$TMP/conc-4.json" &
	a=$!
	in_host h1/ctr1 iperf3 -c "$A6" -p 5202 -t "$DURATION" -J >"$TMP/conc-6.json" &
	b=$!
	wait "$a" "$b"
	printf '%s\t%s\n' "$(jq '.end.sum_received.bits_per_second / 1e9 * 1000 | round / 1000' "$TMP/conc-4.json")" \
		"$(jq '.end.sum_received.bits_per_second / 1e9 * 1000 | round / 1000' "$TMP/conc-6.json")" | tee -a "$TMP/concurrent" >&2
done
load_after=$(load_avg)

col() { awk -F'\t' -v f="$1" -v n="$2" '$1 == f && $2 == n {print $3}' "$TMP/results"; }
echo
echo "ipv6.sh: iperf3 container ctr1 (h1) → ctr2 (h2), $A4 and $A6, ${DURATION}s per run, $ROUNDS interleaved rounds, medians"
echo "  zlmesh $ZLMESH_REV; $GO_VERSION; load average before $load_before, after $load_after ($(nproc) cores)"
printf '%-8s %9s %9s %20s\n' streams "v4 Gbit/s" "v6 Gbit/s" "v6/v4"
for n in $STREAMS; do
	g4=$(col v4 "$n" | median)
	g6=$(col v6 "$n" | median)
	pr=$(paste <(col v6 "$n") <(col v4 "$n") | awk '{print $1 / $2}' | median)
	printf '%-8s %9s %9s %20s\n' "$n" "$g4" "$g6" "$(awk -v a="$g6" -v b="$g4" -v p="$pr" 'BEGIN {printf "%.2f (pairs %.2f)", a / b, p}')"
done
c4=$(cut -f1 "$TMP/concurrent" | median)
c6=$(cut -f2 "$TMP/concurrent" | median)
cr=$(awk '{print $2 / $1}' "$TMP/concurrent" | median)
printf 'concurrent (1 stream each, %d runs): v4 %s, v6 %s Gbit/s; v6/v4 %.2f (median of runs %.2f)\n' \
	"$CONCURRENT" "$c4" "$c6" "$(awk -v a="$c6" -v b="$c4" 'BEGIN {print a / b}')" "$cr"

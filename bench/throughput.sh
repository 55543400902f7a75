#!/usr/bin/env bash
# bench/throughput.sh: TCP throughput between two testbed hosts, measured in
# one run over three paths between the same two namespaces:
#
#   zlmesh   h1 → h2's overlay address (zl0, zlmesh's embedded wireguard-go,
#            the DNS hook installed on the outbound path as always)
#   wg       h1 → h2 over a standalone wireguard-go of the same module
#            version, MTU and offloads (see bench/wgpair.sh)
#   raw      h1 → h2's underlay address (192.0.2.12, the veths and the switch)
#   ctr      container ctr1 on h1 → container ctr2 on h2, both attached to
#            service bench through the control API: zlmesh's path plus a
#            veth, the service bridge and a /32 host route on each side
#
# iperf3, DURATION seconds (default 10), with 1 and 4 parallel streams, the
# paths interleaved (zlmesh, wg, raw, zlmesh, wg, raw, …) for ROUNDS rounds
# (default 5) so that the machine's load falls on all of them alike.
# Reports the median Gbit/s, the CPU the WireGuard daemons of both hosts
# used during the run (utime+stime from /proc/<pid>/stat, in % of one core),
# the whole machine's busy share and load average (the machine is shared),
# and the ratios zlmesh/wg: of the medians, and the median of the per-round
# ratios (each pair run back to back).
#
# With WGPAIR_ZLDEPS=1 a fourth path, wgz, is a second standalone
# wireguard-go built from the same source with zlmesh's go directive and
# x/crypto, x/net, x/sys versions (see wgpair.sh), to tell zlmesh's own
# cost from its build's.
#
# Then CONCURRENT runs (default 5) of zlmesh and wg at the same time, one
# stream each, and likewise of ctr and zlmesh: both see the same load at
# the same instant, so their ratio
# does not drift with the machine's load between runs (on a shared machine
# the sequential medians move by ±25% from one run of the script to the
# next; with wgz, "wgz wg" pairs calibrate what 1.00 looks like).
#
# Env: DURATION, ROUNDS, STREAMS (default "1 4"), CONCURRENT, PROFILE (a directory:
# CPU profiles of both zlmesh daemons, h1-P<streams>.pprof for the sender
# and h2-… for the receiver, taken during the first zlmesh run of each
# stream count through `zlmesh up --pprof-listen`), ZLMESH_ARGS (extra
# `zlmesh up` arguments).
# Needs root; everything runs inside a testbed (random prefix) that is
# removed on exit, also on failure or ^C.
set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-5}
STREAMS=${STREAMS:-"1 4"}
CONCURRENT=${CONCURRENT:-5}
WGPAIR_CONTAINERS=h1:bench:ctr1,h2:bench:ctr2
. "$(dirname "$0")/wgpair.sh"
MODES=(zlmesh ctr "${WG_INSTANCES[@]}" raw)

echo "throughput.sh: building and starting 2 hosts (testbed $P)…" >&2
if [ -n "${PROFILE:-}" ]; then
	mkdir -p "$PROFILE"
	ZLMESH_ARGS="${ZLMESH_ARGS:-} --pprof-listen 127.0.0.1:6060"
fi
wgpair_up
wait_ping h1/ctr1 "$(ctr_addr ctr2)"

for where in h2 h2/ctr2; do
	for port in 5201 5202; do
		in_host "$where" iperf3 -s -p "$port" >"$TMP/iperf3-server-${where/\//-}-$port.log" 2>&1 &
		BG_PIDS+=($!)
	done
done
sleep 0.5
off_zl=$(offloads h1 zl0)
off_wg=$(offloads h1 "${WG_IF[wg]}")
echo "throughput.sh: offloads zl0:   $off_zl" >&2
echo "throughput.sh: offloads zlwg0: $off_wg" >&2
[ "$off_zl" = "$off_wg" ] || echo "throughput.sh: WARNING: the two TUNs have different offloads" >&2

addr_of() {
	case $1 in
	zlmesh) zl_addr h2 ;;
	ctr) ctr_addr ctr2 ;;
	wg | wgz) wg_addr h2 "$1" ;;
	raw) echo 192.0.2.12 ;;
	esac
}
# src_of MODE: where the iperf3 client runs.
src_of() {
	case $1 in
	ctr) echo h1/ctr1 ;;
	*) echo h1 ;;
	esac
}
pids_of() {
	case $1 in
	zlmesh | ctr) echo "$(zl_pid h1) $(zl_pid h2)" ;;
	wg | wgz) echo "$(wg_pid h1 "$1") $(wg_pid h2 "$1")" ;;
	raw) echo "" ;;
	esac
}

# measure MODE STREAMS: one iperf3 run; appends a line to $TMP/results:
# mode streams gbits daemon_cpu% sys_busy% iperf_local% iperf_remote%
measure() {
	local mode=$1 n=$2 addr pids t0 t1 c0 c1 b0 b1 dt out prof=
	addr=$(addr_of "$mode")
	read -r -a pids <<<"$(pids_of "$mode")"
	if [ -n "${PROFILE:-}" ] && [ "$mode" = zlmesh ] && [ ! -f "$PROFILE/h1-P$n.pprof" ]; then
		for h in h1 h2; do
			in_host "$h" curl -s -o "$TMP/$h-P$n.pprof" "http://127.0.0.1:6060/debug/pprof/profile?seconds=$((DURATION - 1))" &
			prof="$prof $!"
		done
	fi
	c0=$(cpu_ticks "${pids[@]+"${pids[@]}"}")
	read -r b0 t0 <<<"$(sys_busy)"
	local w0 w1
	w0=$(date +%s.%N)
	out=$(in_host "$(src_of "$mode")" iperf3 -c "$addr" -t "$DURATION" -P "$n" -J)
	w1=$(date +%s.%N)
	read -r b1 t1 <<<"$(sys_busy)"
	c1=$(cpu_ticks "${pids[@]+"${pids[@]}"}")
	if [ -n "$prof" ]; then
		# shellcheck disable=SC2086
		wait $prof || true
		cp "$TMP/h1-P$n.pprof" "$TMP/h2-P$n.pprof" "$PROFILE/" 2>/dev/null || true
	fi
	dt=$(awk -v a="$w0" -v b="$w1" 'BEGIN {print b - a}')
	jq -r --arg m "$mode" --arg n "$n" \
		--arg cpu "$(awk -v c=$((c1 - c0)) -v hz="$CLK_TCK" -v dt="$dt" 'BEGIN {printf "%.0f", c / hz / dt * 100}')" \
		--arg busy "$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) 'BEGIN {printf "%.0f", (t > 0 ? b / t * 100 : 0)}')" \
		'[$m, $n, (.end.sum_received.bits_per_second / 1e9 | . * 1000 | round / 1000), $cpu, $busy,
		  (.end.cpu_utilization_percent.host_total | round), (.end.cpu_utilization_percent.remote_total | round)] | @tsv' \
		<<<"$out" | tee -a "$TMP/results" >&2
}

echo "throughput.sh: load average before: $(load_avg); $ROUNDS rounds × ${MODES[*]} × streams $STREAMS, ${DURATION}s each" >&2
printf '# mode\tstreams\tGbit/s\tdaemon%%\tmachine%%\tiperf-snd%%\tiperf-rcv%%\n' >&2
# Warm-up, not counted: the first bulk transfer of a fresh daemon grows
# its buffer pools and heap.
for mode in "${MODES[@]}"; do
	in_host "$(src_of "$mode")" iperf3 -c "$(addr_of "$mode")" -t 3 -P 4 >/dev/null
done
load_before=$(load_avg)
for ((r = 1; r <= ROUNDS; r++)); do
	for n in $STREAMS; do
		# Rotate who goes first from round to round.
		for ((k = 0; k < ${#MODES[@]}; k++)); do
			measure "${MODES[$(((r - 1 + k) % ${#MODES[@]}))]}" "$n"
		done
	done
done

# concurrent A B: both paths at once, one stream each, DURATION seconds:
# under the same load at the same instant, so the ratio A/B is free of
# the machine's load drifting between runs. Appends "A B gbitsA gbitsB"
# to $TMP/concurrent.
concurrent() {
	local a b
	in_host "$(src_of "$1")" iperf3 -c "$(addr_of "$1")" -t "$DURATION" -J >"$TMP/conc-a.json" &
	a=$!
	in_host "$(src_of "$2")" iperf3 -c "$(addr_of "$2")" -p 5202 -t "$DURATION" -J >"$TMP/conc-b.json" &
	b=$!
	wait "$a" "$b"
	printf '%s\t%s\t%s\t%s\n' "$1" "$2" \
		"$(jq '.end.sum_received.bits_per_second / 1e9 * 1000 | round / 1000' "$TMP/conc-a.json")" \
		"$(jq '.end.sum_received.bits_per_second / 1e9 * 1000 | round / 1000' "$TMP/conc-b.json")" |
		tee -a "$TMP/concurrent" >&2
}
PAIRS=("zlmesh wg" "ctr zlmesh")
[ "${WGPAIR_ZLDEPS:-}" = 1 ] && PAIRS+=("wgz wg")
for ((r = 1; r <= CONCURRENT; r++)); do
	for pair in "${PAIRS[@]}"; do
		read -r a b <<<"$pair"
		# Alternate which one is first on the server's port 5201.
		if ((r % 2)); then concurrent "$a" "$b"; else concurrent "$b" "$a"; fi
	done
done
load_after=$(load_avg)

col() { awk -F'\t' -v m="$1" -v n="$2" -v c="$3" '$1 == m && $2 == n {print $c}' "$TMP/results"; }

echo
echo "throughput.sh: iperf3 h1 → h2, ${DURATION}s per run, $ROUNDS interleaved rounds, medians"
echo "  zlmesh $ZLMESH_REV; wireguard-go $WG_VERSION; $GO_VERSION; MTU 1420 on both overlays"
echo "  load average before $load_before, after $load_after ($(nproc) cores)"
echo "  TUN offloads zl0:   $off_zl"
echo "  TUN offloads zlwg0: $off_wg"
printf '%-8s %7s %9s %11s %11s %12s %9s %16s\n' path streams "Gbit/s" "min-max" "daemon CPU" "Gbit/s/core" "machine" "ratio"
for n in $STREAMS; do
	wgm=$(col wg "$n" 3 | median)
	for mode in "${MODES[@]}"; do
		g=$(col "$mode" "$n" 3 | median)
		lo=$(col "$mode" "$n" 3 | sort -g | head -1)
		hi=$(col "$mode" "$n" 3 | sort -g | tail -1)
		cpu=$(col "$mode" "$n" 4 | median)
		busy=$(col "$mode" "$n" 5 | median)
		eff=$(awk -v g="$g" -v c="$cpu" 'BEGIN {if (c > 0) printf "%.2f", g / (c / 100); else print "-"}')
		ratio=-
		if [ "$mode" = zlmesh ]; then
			# Median of the per-round ratios, beside the ratio of medians.
			pr=$(paste <(col zlmesh "$n" 3) <(col wg "$n" 3) | awk '{print $1 / $2}' | median)
			ratio=$(awk -v a="$g" -v b="$wgm" -v p="$pr" 'BEGIN {printf "%.2f (pairs %.2f)", a / b, p}')
		elif [ "$mode" = ctr ]; then
			pr=$(paste <(col ctr "$n" 3) <(col zlmesh "$n" 3) | awk '{print $1 / $2}' | median)
			ratio=$(awk -v a="$g" -v b="$(col zlmesh "$n" 3 | median)" -v p="$pr" 'BEGIN {printf "ctr/zl: %.2f (pairs %.2f)", a / b, p}')
		elif [ "$mode" = wgz ]; then
			ratio=$(awk -v a="$g" -v b="$wgm" 'BEGIN {printf "wgz/wg: %.2f", a / b}')
		elif [ "$mode" = raw ]; then
			ratio=$(awk -v a="$(col zlmesh "$n" 3 | median)" -v b="$g" 'BEGIN {printf "raw: %.2f", a / b}')
		fi
		printf '%-8s %7s %9.2f %11s %10s%% %12s %8s%% %16s\n' "$mode" "$n" "$g" "$(printf '%.2f-%.2f' "$lo" "$hi")" "$cpu" "$eff" "$busy" "$ratio"
	done
done
echo "  daemon CPU: both hosts' daemons together, % of one core; machine: busy share of all cores during the run"
if ((CONCURRENT > 0)); then
	echo
	echo "concurrent: both paths at once, 1 stream each, ${DURATION}s, $CONCURRENT runs (ratio per run, then the median)"
	printf '%-12s %10s %10s %10s %14s\n' pair "A Gbit/s" "B Gbit/s" "A/B" "A/B min-max"
	for pair in "${PAIRS[@]}"; do
		read -r a b <<<"$pair"
		# Normalize each line to (A, B) whichever order it ran in.
		awk -F'\t' -v a="$a" -v b="$b" '$1 == a && $2 == b {print $3, $4} $1 == b && $2 == a {print $4, $3}' \
			"$TMP/concurrent" >"$TMP/pair"
		printf '%-12s %10s %10s %10.2f %14s\n' "$a/$b" "$(cut -d' ' -f1 "$TMP/pair" | median)" \
			"$(cut -d' ' -f2 "$TMP/pair" | median)" "$(awk '{print $1 / $2}' "$TMP/pair" | median)" \
			"$(awk '{print $1 / $2}' "$TMP/pair" | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.2f-%.2f", lo, hi}')"
	done
fi
echo "  container addresses: ctr1 $(ctr_addr ctr1), ctr2 $(ctr_addr ctr2)"
echo "  targets: zlmesh >= 0.95 x wg; ctr >= 0.95 x zlmesh (host to host over the overlay)"

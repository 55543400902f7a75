#!/usr/bin/env bash
# bench/nat.sh — NAT costs, measured in one run:
#  1. natd's Go benchmarks: applying 1000 published ports from nothing, and
#     one publish on a table of 1000 ports versus an empty one (ratio ~1
#     means the cost of a publish does not grow with the table).
#  2. iperf3 throughput (one TCP stream, 10 s each) in private namespaces:
#     outside → published port → local container   vs  outside → container routed directly (no NAT)
#     container → outside through masquerade        vs  the host itself → outside
#                                                   and vs  the container routed without masquerade
#
# Needs root, iperf3 and Go. Everything lives in namespaces zlt-natb-*-<random>
# that are deleted on exit; no packet leaves them.
#
# Usage: [REPS=2] bench/nat.sh [seconds per iperf3 run, default 10]
set -euo pipefail
[[ $EUID -eq 0 ]] || { echo "nat.sh: needs root (network namespaces)" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "nat.sh: needs iperf3" >&2; exit 1; }
cd "$(dirname "$0")/.."

SECS=${1:-10}
REPS=${REPS:-2}
SFX=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
H=zlt-natb-h-$SFX C=zlt-natb-c-$SFX O=zlt-natb-o-$SFX
TMP=$(mktemp -d /tmp/zlt-natb-XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	for ns in "$H" "$C" "$O"; do ip netns del "$ns" 2>/dev/null || true; done
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

echo "== natd Go benchmarks (go test -bench in namespaces of their own)"
go test -run '^$' -bench 'Apply1000|Publish' -benchtime 2s ./natd/ 2>&1 | grep -E '^(Benchmark|ok|FAIL)' | tee "$TMP/go.txt"
awk '/^BenchmarkApply1000/ {printf "apply 1000 ports from empty:     %.2f ms\n", $3/1e6}
     /^BenchmarkPublish-/ {for (i=1;i<=NF;i++) {if ($(i+1)=="ns/publish@0") p0=$i; if ($(i+1)=="ns/publish@1000") p1=$i; if ($(i+1)=="ratio-publish") r=$i}
       printf "one publish with 0 present:      %.0f µs\none publish with 1000 present:   %.0f µs\nratio (1000 / 0):                %.2f\n", p0/1e3, p1/1e3, r}
     /^BenchmarkPublishCPU\/ports=0/ {c0=$3} /^BenchmarkPublishCPU\/ports=1000/ {c1=$3
       printf "  of which validate+plan+diff:   %.0f µs at 0, %.0f µs at 1000 (the part that grows: Set takes the whole config)\n", c0/1e3, c1/1e3}' "$TMP/go.txt"

echo
echo "== data path (iperf3, ${SECS}s per run)"
go build -o "$TMP/natctl" ./bench/natctl
for ns in "$H" "$C" "$O"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
BR=zlb-b$SFX
ip -n "$H" link add "$BR" type bridge
ip -n "$H" addr add 10.200.3.33/27 dev "$BR"
ip -n "$H" link set "$BR" up
# zl0 stands for the overlay (a veth pair with nothing behind it; these
# flows do not use it, it only gives the host its cluster route).
ip -n "$H" link add zl0 type veth peer name zl0p$SFX
ip -n "$H" addr add 10.200.3.1/16 dev zl0
ip -n "$H" link set zl0 up
ip -n "$H" link set zl0p$SFX up
ip -n "$H" link add zlc$SFX type veth peer name eth0 netns "$C"
ip -n "$H" link set zlc$SFX master "$BR"
ip -n "$H" link set zlc$SFX type bridge_slave hairpin on
ip -n "$H" link set zlc$SFX up
ip -n "$C" addr add 10.200.3.34/27 dev eth0
ip -n "$C" link set eth0 up
ip -n "$C" route add default via 10.200.3.33
ip -n "$H" link add zlu$SFX type veth peer name eth0 netns "$O"
ip -n "$H" addr add 198.51.100.1/24 dev zlu$SFX
ip -n "$H" link set zlu$SFX up
ip -n "$O" addr add 198.51.100.2/24 dev eth0
ip -n "$O" link set eth0 up
# Only for the "routed directly" baseline: outside may reach the container.
ip -n "$O" route add 10.200.3.32/27 via 198.51.100.1
natctl() { ip netns exec "$H" "$TMP/natctl" -publish tcp:8080:10.200.3.34:5201 "$@" 2>/dev/null; }
natctl

# run <server ns> <client ns> <address> <port>: Gbit/s received.
run() {
	ip netns exec "$1" iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
	PIDS+=($!)
	sleep 0.3
	ip netns exec "$2" iperf3 -c "$3" -p "$4" -t "$SECS" -f g 2>&1 | awk '/receiver/ {print $(NF-2)}'
	wait "${PIDS[-1]}" 2>/dev/null || true
}
# Interleave the pairs and keep each flow's best of $REPS runs: the machine
# is shared, and contention only ever lowers a figure.
best() { awk -v a="$1" -v b="$2" 'BEGIN {print (b > a ? b : a)}'; }
pub=0 direct=0 masq=0 host=0 plain=0
for _ in $(seq "$REPS"); do
	pub=$(best "$pub" "$(run "$C" "$O" 198.51.100.1 8080)")
	direct=$(best "$direct" "$(run "$C" "$O" 10.200.3.34 5201)")
	masq=$(best "$masq" "$(run "$O" "$C" 198.51.100.2 5201)")
	host=$(best "$host" "$(run "$O" "$H" 198.51.100.2 5201)")
	natctl -masquerade=false
	plain=$(best "$plain" "$(run "$O" "$C" 198.51.100.2 5201)")
	natctl
done
printf "outside → published port → container:  %6s Gbit/s\n" "$pub"
printf "outside → container, routed, no NAT:    %6s Gbit/s   ratio published/direct %.2f\n" "$direct" "$(awk -v a="$pub" -v b="$direct" 'BEGIN {print a/b}')"
printf "container → outside, masqueraded:       %6s Gbit/s\n" "$masq"
printf "host → outside:                         %6s Gbit/s   ratio masqueraded/host %.2f\n" "$host" "$(awk -v a="$masq" -v b="$host" 'BEGIN {print a/b}')"
printf "container → outside, routed, no NAT:    %6s Gbit/s   ratio masqueraded/routed %.2f\n" "$plain" "$(awk -v a="$masq" -v b="$plain" 'BEGIN {print a/b}')"
echo "(the container paths also cross a veth and the bridge; the last line isolates the masquerade)"
echo "(one TCP stream each, best of $REPS; on a shared 2-core machine expect ±20 % between runs)"

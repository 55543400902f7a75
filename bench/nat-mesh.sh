#!/usr/bin/env bash
# bench/nat-mesh.sh — NAT throughput with real zlmesh in the testbed, each
# figure against its baseline measured in the same run (iperf3, one TCP
# stream, SECS seconds per run, best of REPS interleaved runs):
#
#   outside → h1:8080 (published) → container on h1   vs  outside → the container routed directly, no NAT
#   container on h1 → outside, masqueraded             vs  h1 itself → outside
#                                                     and vs  the container → outside routed, no masquerade
#                                                          (h1 restarted with --masquerade=false, every rep)
#
# and the control path (bench/natpub through h1's control socket: node,
# state file, record store, natd, kernel): one publish with no other port
# against one with NPORTS (default 1000) present, and the time to publish
# them one by one.
#
# The direct routes exist only for the baselines: the outside namespace
# sends h1's node subnet to the switch, the switch to h1's underlay address.
# Everything runs in a testbed of its own (random prefix), removed on exit;
# no packet leaves its namespaces. Needs root.
#
# Usage: [REPS=2] bench/nat-mesh.sh [seconds per iperf3 run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
. scripts/deps.sh
zlmesh_install_deps

SECS=${1:-10}
REPS=${REPS:-2}
NPORTS=${NPORTS:-1000}
TMP=$(mktemp -d /tmp/zlt-natmesh-XXXXXX)
P=ztnb$(od -An -N3 -tu1 /dev/urandom | awk '{for (i=1;i<=3;i++) printf "%c", 97+$i%26}')
Z="$TMP/zlmesh"
PIDS=()
cleanup() {
	for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	"$Z" testbed down --prefix "$P" >/dev/null 2>&1 || true
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

go build -o "$Z" ./cmd/zlmesh
go build -o "$TMP/natpub" ./bench/natpub
tb() { "$Z" testbed "$1" --prefix "$P" "${@:2}"; }
in_() { local where=$1; shift; tb exec "$where" -- "$@"; }

echo "== testbed $P: 2 hosts, container web1 on h1"
tb up --hosts 2 --containers h1:web:web1 -o json >"$TMP/status.json" 2>"$TMP/up.log" || { cat "$TMP/up.log" >&2; exit 1; }
SUBNET=$(tr -d ' \n' <"$TMP/status.json" | grep -o '"name":"h1","netns":"[^"]*","underlay":"[^"]*","overlay":"[^"]*","node_subnet":"[^"]*"' | sed 's/.*node_subnet":"//; s/"$//')
WEB=$(tr -d ' \n' <"$TMP/status.json" | grep -o '"name":"web1","host":"h1","netns":"[^"]*","address":"[^"]*"' | sed 's/.*address":"//; s/"$//')
[ -n "$SUBNET" ] && [ -n "$WEB" ] || { echo "nat-mesh.sh: no subnet or container address in the status" >&2; cat "$TMP/status.json" >&2; exit 1; }
echo "h1 node subnet $SUBNET, web1 $WEB"
in_ h1 "$Z" publish --container "$P-h1-web1" --port 8080:5201/tcp
# Baseline routes: outside → switch → h1 for the node subnet.
in_ out ip route add "$SUBNET" via 198.51.100.1
in_ sw ip route add "$SUBNET" via 192.0.2.11

# run <server place> <client place> <address> <port>: Gbit/s received.
run() {
	in_ "$1" iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
	PIDS+=($!)
	sleep 0.5
	in_ "$2" iperf3 -c "$3" -p "$4" -t "$SECS" -f g 2>&1 | awk '/receiver/ {print $(NF-2)}'
	wait "${PIDS[-1]}" 2>/dev/null || true
}
best() { awk -v a="$1" -v b="${2:-0}" 'BEGIN {print (b > a ? b : a)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a/b; else print "n/a"}'; }

# masquerade on|off: restart h1's zlmesh with or without egress masquerade
# (its table keeps the published port either way).
masquerade() {
	tb stop h1 >/dev/null
	if [ "$1" = on ]; then
		tb start h1 --wait 60s >/dev/null
		return
	fi
	tb start h1 --wait 60s -- --masquerade=false >/dev/null
	if in_ h1 nft list chain inet zlmesh postrouting | grep -q 'zlmesh egress'; then
		echo "nat-mesh.sh: h1 still masquerades after a restart with --masquerade=false" >&2
		exit 1
	fi
}
pub=0 direct=0 masq=0 host=0 plain=0
for _ in $(seq "$REPS"); do
	pub=$(best "$pub" "$(run h1/web1 out 192.0.2.11 8080)")
	direct=$(best "$direct" "$(run h1/web1 out "$WEB" 5201)")
	masq=$(best "$masq" "$(run out h1/web1 198.51.100.2 5201)")
	host=$(best "$host" "$(run out h1 198.51.100.2 5201)")
	# The same container without masquerade: its source reaches the
	# outside, which routes the answers back through the baseline routes.
	masquerade off
	plain=$(best "$plain" "$(run out h1/web1 198.51.100.2 5201)")
	masquerade on
done
"$TMP/natpub" -socket "/run/$P/h1/zlmesh.sock" -container "$P-h1-web1" -n "$NPORTS" >"$TMP/natpub.txt"

echo
echo "nat-mesh.sh: iperf3, one TCP stream, ${SECS}s per run, best of $REPS"
printf "outside → published port → container:  %6s Gbit/s\n" "$pub"
printf "outside → container, routed, no NAT:    %6s Gbit/s   ratio published/direct %s\n" "$direct" "$(ratio "$pub" "$direct")"
printf "container → outside, masqueraded:       %6s Gbit/s\n" "$masq"
printf "host → outside:                         %6s Gbit/s   ratio masqueraded/host %s\n" "$host" "$(ratio "$masq" "$host")"
printf "container → outside, routed, no NAT:    %6s Gbit/s   ratio masqueraded/routed %s\n" "$plain" "$(ratio "$masq" "$plain")"
echo "(every path crosses the testbed switch; the container paths also cross a veth and zlmesh's bridge:"
echo " the last ratio isolates the masquerade. On a shared 2-core machine expect ±20 % between runs.)"
echo
echo "control path (bench/natpub through h1's control socket):"
cat "$TMP/natpub.txt"

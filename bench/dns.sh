#!/usr/bin/env bash
# bench/dns.sh: dnsd against dnsmasq, measured in the same run.
#
# Makes two network namespaces joined by a veth pair (zlb-dns-<rand>-srv and
# zlb-dns-<rand>-cli, on the benchmarking range 198.18.53.0/24), serves the
# same 100 names (svc0.zl … svc99.zl) from dnsmasq (198.18.53.1) and from a
# dnsd socket listener (bench/dnsbench, 198.18.53.3) in the server
# namespace, and runs dnsperf in the client namespace against each:
#
#   1. throughput: DURATION seconds (default 10) as fast as it goes;
#   2. latency: DURATION seconds at a fixed RATE (default 2000) queries/s,
#      p50/p99 taken from dnsperf's per-query report (-v).
#
# Prints queries/s, latencies and the dnsd/dnsmasq ratios. Needs root,
# iproute2, dnsmasq, dnsperf and Go. Everything it makes (namespaces, veths,
# processes, a temp dir) is removed on exit, also on failure or ^C.
#
# The measurements live in dns-measure.sh (dns_qps, dns_latency) so that
# the full-mesh variant, through the packet path to the mesh DNS address,
# can run the same ones.
#
# Env: DURATION (s), RATE (q/s), CLIENTS (dnsperf -c), OUTSTANDING (-q),
# GOMAXPROCS for dnsd (default: unset, all cores), PROFILE (a file to get
# dnsd's CPU profile of the whole run in).
set -euo pipefail

DURATION=${DURATION:-10}
RATE=${RATE:-2000}
CLIENTS=${CLIENTS:-4}
OUTSTANDING=${OUTSTANDING:-200}
NAMES=100

[ "$(id -u)" = 0 ] || { echo "dns.sh: needs root (network namespaces)" >&2; exit 1; }
for tool in ip dnsmasq dnsperf go; do
	command -v "$tool" >/dev/null || { echo "dns.sh: $tool not installed" >&2; exit 1; }
done

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
id=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
srv=zlb-dns-$id-srv
cli=zlb-dns-$id-cli
tmp=$(mktemp -d "/tmp/zlb-dns-$id.XXXX")
pids=()

cleanup() {
	local pid
	for pid in "${pids[@]+"${pids[@]}"}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]+"${pids[@]}"}"; do
		wait "$pid" 2>/dev/null || true
	done
	# Anything still running in our namespaces (nothing, normally).
	for ns in "$srv" "$cli"; do
		for pid in $(ip netns pids "$ns" 2>/dev/null); do
			kill -9 "$pid" 2>/dev/null || true
		done
	done
	if [ -n "${PROFILE:-}" ] && [ -f "$tmp/cpu.pprof" ]; then
		cp "$tmp/cpu.pprof" "$PROFILE"
	fi
	ip netns del "$srv" 2>/dev/null || true
	ip netns del "$cli" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_srv() { ip netns exec "$srv" "$@"; }
in_cli() { ip netns exec "$cli" "$@"; }

# --- network -----------------------------------------------------------
ip netns add "$srv"
ip netns add "$cli"
ip link add "zlb${id}s" netns "$srv" type veth peer name "zlb${id}c" netns "$cli"
in_srv ip link set lo up
in_cli ip link set lo up
in_srv ip addr add 198.18.53.1/24 dev "zlb${id}s"
in_srv ip addr add 198.18.53.3/24 dev "zlb${id}s"
in_cli ip addr add 198.18.53.2/24 dev "zlb${id}c"
in_srv ip link set "zlb${id}s" up
in_cli ip link set "zlb${id}c" up

# --- names -------------------------------------------------------------
for ((i = 0; i < NAMES; i++)); do
	echo "10.200.$((i / 250)).$((i % 250 + 1)) svc$i.zl"
	echo "svc$i.zl A" >>"$tmp/queries"
done >"$tmp/hosts"

# --- servers -----------------------------------------------------------
(cd "$root" && go build -o "$tmp/dnsbench" ./bench/dnsbench)

# Started with ip netns exec directly (it execs the command), never through
# a shell function, so that $! is the server's own pid for cleanup.
ip netns exec "$srv" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
	--addn-hosts="$tmp/hosts" --listen-address=198.18.53.1 --bind-interfaces \
	--port=53 --user=root --group=root --pid-file="$tmp/dnsmasq.pid" \
	--local-ttl=5 --local=/zl/ >"$tmp/dnsmasq.log" 2>&1 &
pids+=($!)
profile=()
[ -z "${PROFILE:-}" ] || profile=(-cpuprofile "$tmp/cpu.pprof")
ip netns exec "$srv" "$tmp/dnsbench" -listen 198.18.53.3:53 -names "$NAMES" "${profile[@]}" >"$tmp/dnsbench.log" 2>&1 &
pids+=($!)

# Wait until both answer.
for server in 198.18.53.1 198.18.53.3; do
	ok=
	for _ in $(seq 50); do
		if in_cli dig +short +time=1 +tries=1 "@$server" svc7.zl A 2>/dev/null | grep -qx 10.200.0.8; then
			ok=1
			break
		fi
		sleep 0.1
	done
	[ -n "$ok" ] || {
		echo "dns.sh: $server does not answer svc7.zl" >&2
		cat "$tmp"/*.log >&2
		exit 1
	}
done

# --- measure -----------------------------------------------------------
# shellcheck source=dns-measure.sh
. "$here/dns-measure.sh"
export DURATION RATE CLIENTS OUTSTANDING

TARGETS=("dnsmasq 198.18.53.1" "dnsd 198.18.53.3")
declare -A QPS P50 P99
for t in "${TARGETS[@]}"; do
	read -r name addr <<<"$t"
	QPS[$name]=$(dns_qps "$cli" "$addr" "$tmp/queries" "$tmp")
done
for t in "${TARGETS[@]}"; do
	read -r name addr <<<"$t"
	lat=$(dns_latency "$cli" "$addr" "$tmp/queries" "$tmp")
	read -r P50[$name] P99[$name] <<<"$lat"
done

echo "dns.sh: $NAMES names, ${DURATION}s per run, dnsperf -c $CLIENTS -q $OUTSTANDING; latency at $RATE q/s"
printf '%-8s %12s %12s %12s\n' server "queries/s" "p50 ms" "p99 ms"
for t in "${TARGETS[@]}"; do
	read -r name _ <<<"$t"
	printf '%-8s %12s %12s %12s\n' "$name" "${QPS[$name]}" "${P50[$name]}" "${P99[$name]}"
done
awk -v a="${QPS[dnsd]}" -v b="${QPS[dnsmasq]}" -v c="${P99[dnsd]}" -v d="${P99[dnsmasq]}" \
	'BEGIN { printf "ratio dnsd/dnsmasq: queries/s %.2fx, p99 %.2fx\n", a / b, (d > 0 ? c / d : 0) }'

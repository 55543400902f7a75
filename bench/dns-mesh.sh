#!/usr/bin/env bash
# bench/dns-mesh.sh: the mesh DNS on the packet path against dnsmasq, in one
# testbed, measured in the same run.
#
# Brings up a testbed (`zlmesh testbed up`, random prefix, HOSTS hosts) with
# 100 containers of service "names" spread over the hosts (n0 … n99, so the
# mesh zone has 100 names <prefix>-h<i>-n<j>.names.zl, on every host), a
# client container on h1 and a container "dnsm" on h1 that runs dnsmasq
# serving the same 100 names with the same addresses. From the client,
# dnsperf asks:
#
#   mesh     10.203.255.53, the mesh DNS address: client → bridge → h1's
#            routing → zl0 (TUN) → zlmesh's packet-path hook (dnsd) →
#            injected back through zl0 → bridge → client
#   dnsmasq  the dnsm container's address: client → bridge → h1's routing →
#            bridge → dnsmasq's socket, and back
#
# Both answers stay on h1 and cross one bridge hop each way plus h1's
# routing; the mesh path adds the TUN and zlmesh's process.
#
#   1. throughput: DURATION seconds (default 10) flat out (dnsperf -c CLIENTS
#      -q OUTSTANDING), the pair REPS times interleaved, best of each kept
#      (the machine is shared; contention only lowers a figure);
#   2. latency: DURATION seconds at RATE (default 2000) queries/s, p50/p99
#      from dnsperf's per-query report, and the server's CPU time per query
#      over that run (utime+stime of the zlmesh or dnsmasq process from
#      /proc; zlmesh's includes the kernel's work on the TUN writes) and its
#      context switches per query (all its threads).
#
# Prints both side by side with the mesh/dnsmasq ratios. Needs root; installs
# what is missing (scripts/deps.sh). Everything (the testbed, dnsmasq, a temp
# dir) is removed on exit, also on failure or ^C.
#
# Env: DURATION (s), RATE (q/s), CLIENTS, OUTSTANDING, REPS (default 2),
# HOSTS (default 2), PERF (a file: perf record -g of h1's zlmesh during the
# first mesh throughput run, when perf is installed).
set -euo pipefail

DURATION=${DURATION:-10}
RATE=${RATE:-2000}
CLIENTS=${CLIENTS:-4}
OUTSTANDING=${OUTSTANDING:-200}
REPS=${REPS:-2}
HOSTS=${HOSTS:-2}
NAMES=100
MESH_DNS=10.203.255.53
# 100 names in /26 slices (61 containers of one service per host).
[ "$HOSTS" -ge 2 ] && [ "$HOSTS" -le 20 ] || { echo "dns-mesh.sh: HOSTS=$HOSTS: want 2 to 20" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=../scripts/deps.sh
. "$root/scripts/deps.sh"
zlmesh_install_deps

prefix=zbdns$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
tmp=$(mktemp -d "/tmp/zlb-dnsmesh-$prefix.XXXX")
bin=$tmp/zlmesh
dnsmasq_pid=

cleanup() {
	if [ -n "$dnsmasq_pid" ]; then
		kill "$dnsmasq_pid" 2>/dev/null || true
		wait "$dnsmasq_pid" 2>/dev/null || true
	fi
	if [ -x "$bin" ]; then
		"$bin" testbed down --prefix "$prefix" >/dev/null 2>&1 || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "dns-mesh.sh: building zlmesh; testbed $prefix with $HOSTS hosts and $NAMES named containers" >&2
(cd "$root" && go build -o "$bin" ./cmd/zlmesh)

specs=h1:bench:client,h1:bench:dnsm
for ((i = 0; i < NAMES; i++)); do
	specs+=",h$((i % HOSTS + 1)):names:n$i"
done
"$bin" testbed up --prefix "$prefix" --hosts "$HOSTS" --args "--slice-prefix=26" \
	--containers "$specs" >"$tmp/up.out" 2>"$tmp/up.log" || {
	cat "$tmp/up.log" >&2
	exit 1
}
"$bin" testbed status --prefix "$prefix" >"$tmp/status"

# The status table: hosts (… "running (pid N)" …), then containers
# (NAME HOST NETNS SERVICE ADDRESS).
zlmesh_pid=$(awk '$1 == "h1" && /running \(pid/ {sub(/.*\(pid /, ""); sub(/\).*/, ""); print; exit}' "$tmp/status")
client=$(awk '$1 == "client" && $4 == "bench" {print $3}' "$tmp/status")
dnsm_ns=$(awk '$1 == "dnsm" && $4 == "bench" {print $3}' "$tmp/status")
dnsm_addr=$(awk '$1 == "dnsm" && $4 == "bench" {print $5}' "$tmp/status")
awk '$4 == "names" {print $5, $3 ".names.zl"}' "$tmp/status" >"$tmp/hosts"
awk '{print $2, "A"}' "$tmp/hosts" >"$tmp/queries"
[ -n "$zlmesh_pid" ] && [ -n "$client" ] && [ -n "$dnsm_addr" ] && [ "$(wc -l <"$tmp/queries")" -eq "$NAMES" ] || {
	echo "dns-mesh.sh: unexpected testbed status:" >&2
	cat "$tmp/status" >&2
	exit 1
}

# dnsmasq in the dnsm container, started with ip netns exec directly so
# that $! is its own pid.
ip netns exec "$dnsm_ns" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
	--addn-hosts="$tmp/hosts" --listen-address="$dnsm_addr" --bind-interfaces \
	--port=53 --user=root --group=root --pid-file= \
	--local-ttl=5 --local=/zl/ >"$tmp/dnsmasq.log" 2>&1 &
dnsmasq_pid=$!

# Wait until both answer every name (the mesh's records travel by gossip).
for server in "$dnsm_addr" "$MESH_DNS"; do
	ok=
	for _ in $(seq 100); do
		got=$(ip netns exec "$client" dig +short +time=1 +tries=1 "@$server" -f "$tmp/queries" 2>/dev/null | grep -c . || true)
		if [ "$got" -eq "$NAMES" ]; then
			ok=1
			break
		fi
		sleep 0.2
	done
	[ -n "$ok" ] || {
		echo "dns-mesh.sh: $server answers $got of $NAMES names" >&2
		cat "$tmp/dnsmasq.log" >&2
		exit 1
	}
done

# --- measure -----------------------------------------------------------
# shellcheck source=dns-measure.sh
. "$here/dns-measure.sh"
export DURATION RATE CLIENTS OUTSTANDING

# cpu_ticks PID: utime+stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# switches PID: context switches of all its threads so far.
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s}'; }
hz=$(getconf CLK_TCK)
best() { awk -v a="$1" -v b="$2" 'BEGIN {print (b > a ? b : a)}'; }

declare -A ADDR PID QPS P50 P99 CPU CSW
ADDR[dnsmasq]=$dnsm_addr ADDR[mesh]=$MESH_DNS
PID[dnsmasq]=$dnsmasq_pid PID[mesh]=$zlmesh_pid
QPS[dnsmasq]=0 QPS[mesh]=0
for ((r = 1; r <= REPS; r++)); do
	for name in dnsmasq mesh; do
		perf_pid=
		if [ "$name" = mesh ] && [ "$r" = 1 ] && [ -n "${PERF:-}" ] && command -v perf >/dev/null; then
			perf record -q -g -p "$zlmesh_pid" -o "$PERF" -- sleep "$((DURATION > 2 ? DURATION - 1 : 1))" >/dev/null 2>&1 &
			perf_pid=$!
		fi
		q=$(dns_qps "$client" "${ADDR[$name]}" "$tmp/queries" "$tmp")
		[ -z "$perf_pid" ] || wait "$perf_pid" || true
		QPS[$name]=$(best "${QPS[$name]}" "$q")
	done
done
for name in dnsmasq mesh; do
	c0=$(cpu_ticks "${PID[$name]}") s0=$(switches "${PID[$name]}")
	lat=$(dns_latency "$client" "${ADDR[$name]}" "$tmp/queries" "$tmp")
	c1=$(cpu_ticks "${PID[$name]}") s1=$(switches "${PID[$name]}")
	read -r P50[$name] P99[$name] <<<"$lat"
	n=$(wc -l <"$tmp/lat-${ADDR[$name]}.out.sorted")
	CPU[$name]=$(awk -v t=$((c1 - c0)) -v hz="$hz" -v n="$n" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
	CSW[$name]=$(awk -v s=$((s1 - s0)) -v n="$n" 'BEGIN {printf "%.2f", s / n}')
done

echo "dns-mesh.sh: $NAMES names on $HOSTS hosts, from a container on h1; ${DURATION}s per run;"
echo "  throughput: dnsperf -c $CLIENTS -q $OUTSTANDING, best of $REPS; latency and CPU: $RATE q/s"
printf '%-8s %-15s %12s %10s %10s %14s %15s\n' server address "queries/s" "p50 ms" "p99 ms" "CPU µs/query" "switches/query"
for name in dnsmasq mesh; do
	printf '%-8s %-15s %12s %10s %10s %14s %15s\n' "$name" "${ADDR[$name]}" "${QPS[$name]}" "${P50[$name]}" "${P99[$name]}" "${CPU[$name]}" "${CSW[$name]}"
done
awk -v a="${QPS[mesh]}" -v b="${QPS[dnsmasq]}" -v c="${P99[mesh]}" -v d="${P99[dnsmasq]}" \
	-v e="${CPU[mesh]}" -v f="${CPU[dnsmasq]}" \
	'BEGIN { printf "ratio mesh/dnsmasq: queries/s %.2fx, p99 %.2fx, CPU per query %.2fx\n", a / b, (d > 0 ? c / d : 0), (f > 0 ? e / f : 0) }'
echo "targets: queries/s >= 1.0x dnsmasq; mesh p99 <= 1 ms at $RATE q/s"
echo "load average during the run: $(cut -d' ' -f1-3 /proc/loadavg)"

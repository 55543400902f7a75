#!/usr/bin/env bash
# bench/dns-mesh.sh: the mesh DNS against unbound and dnsmasq, from a
# container, in one testbed, measured in the same run.
#
# Brings up a testbed (`zlmesh testbed up`, random prefix, HOSTS hosts) with
# 100 containers of service "names" spread over the hosts (n0 … n99, so the
# mesh zone has 100 names <prefix>-h<i>-n<j>.names.zl, on every host), a
# client container on h1 and two server containers on h1: "dnsm" runs
# dnsmasq and "unb" runs unbound (2 threads, so-reuseport, the 100 names as
# local-data), both serving the same names and addresses. From the client,
# dnsperf asks:
#
#   mesh     10.203.255.53, the mesh DNS address: client → bridge → h1's
#            routing → h1's loopback, where zlmesh holds the address and
#            answers on SO_REUSEPORT sockets with dnsd (kernel mode; the
#            packet-path hook on zl0 answers only what reaches the TUN)
#   unbound  the unb container's address: client → bridge → h1's routing →
#            bridge → unbound's sockets, and back
#   dnsmasq  the same to dnsmasq in the dnsm container
#
# The servers' paths cross the same bridge hops; the mesh's one bridge hop
# fewer each way.
#
#   1. throughput: DURATION seconds (default 10) flat out (dnsperf -c CLIENTS
#      -q OUTSTANDING), the servers REPS times interleaved, best of each kept
#      (the machine is shared; contention only lowers a figure);
#   2. latency: DURATION seconds at RATE (default 2000) queries/s, average,
#      p50 and p99 from dnsperf's per-query report, and the server's CPU time
#      per query over that run (utime+stime of its process from /proc) and
#      its context switches per query (all its threads).
#   3. forwarded names (FORWARD=1, default): every server forwards what is
#      not its own to the testbed's outside resolver (198.51.100.53, which
#      answers outside.test and NXDOMAIN for the rest): a cached name
#      (outside.test, throughput and latency) and misses (a unique name
#      per query, latency at RATE: each one crosses to the resolver);
#   4. with CHURN=1 (default), the mesh measured again while bench/dnschurn
#      detaches and attaches containers of a service "churn" on h1 at
#      CHURN_RATE operations per second (default 50): the zone changes under
#      the queries.
#
# unbound is Debian's binary, extracted from its package (apt-get download,
# dpkg-deb -x) rather than installed: the package's maintainer scripts
# would start a system service and fetch the DNS root trust anchor from the
# internet. Its libraries are installed as packages.
#
# Prints the servers side by side with the mesh/unbound and mesh/dnsmasq
# ratios. Needs root; installs what is missing (scripts/deps.sh).
# Everything (the testbed, the servers, a temp dir) is removed on exit, also
# on failure or ^C.
#
# Env: DURATION (s), RATE (q/s), CLIENTS, OUTSTANDING, REPS (default 2),
# HOSTS (default 2), FORWARD (1/0), CHURN (1/0), CHURN_RATE (ops/s), PERF (a file: perf
# record -g of h1's zlmesh during the first mesh throughput run, when perf
# is installed).
set -euo pipefail

DURATION=${DURATION:-10}
RATE=${RATE:-2000}
CLIENTS=${CLIENTS:-8}
OUTSTANDING=${OUTSTANDING:-200}
REPS=${REPS:-2}
HOSTS=${HOSTS:-2}
CHURN=${CHURN:-1}
FORWARD=${FORWARD:-1}
OUTSIDE_DNS=198.51.100.53
CHURN_RATE=${CHURN_RATE:-50}
NAMES=100
CHURNERS=10
MESH_DNS=10.203.255.53
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
unbound_pid=

cleanup() {
	for pid in $dnsmasq_pid $unbound_pid; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [ -x "$bin" ]; then
		"$bin" testbed down --prefix "$prefix" >/dev/null 2>&1 || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "dns-mesh.sh: building zlmesh; testbed $prefix with $HOSTS hosts and $NAMES named containers" >&2
(cd "$root" && go build -o "$bin" ./cmd/zlmesh && go build -o "$tmp/dnschurn" ./bench/dnschurn)

# unbound's binary, extracted (see above).
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	libevent-2.1-7 libnghttp2-14 libprotobuf-c1 libpython3.11 libssl3 >/dev/null
(cd "$tmp" && { apt-get download unbound >/dev/null 2>&1 || { apt-get update -qq && apt-get download unbound >/dev/null; }; })
dpkg-deb -x "$tmp"/unbound_*.deb "$tmp/unbound-root"
unbound=$tmp/unbound-root/usr/sbin/unbound

specs=h1:bench:client,h1:bench:dnsm,h1:bench:unb
for ((i = 0; i < NAMES; i++)); do
	specs+=",h$((i % HOSTS + 1)):names:n$i"
done
for ((i = 0; i < CHURNERS; i++)); do
	specs+=",h1:churn:c$i"
done
"$bin" testbed up --prefix "$prefix" --hosts "$HOSTS" \
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
unb_ns=$(awk '$1 == "unb" && $4 == "bench" {print $3}' "$tmp/status")
unb_addr=$(awk '$1 == "unb" && $4 == "bench" {print $5}' "$tmp/status")
awk '$4 == "names" {print $5, $3 ".names.zl"}' "$tmp/status" >"$tmp/hosts"
awk '{print $2, "A"}' "$tmp/hosts" >"$tmp/queries"
[ -n "$zlmesh_pid" ] && [ -n "$client" ] && [ -n "$dnsm_addr" ] && [ -n "$unb_addr" ] && [ "$(wc -l <"$tmp/queries")" -eq "$NAMES" ] || {
	echo "dns-mesh.sh: unexpected testbed status:" >&2
	cat "$tmp/status" >&2
	exit 1
}

# dnsmasq in the dnsm container, started with ip netns exec directly so
# that $! is its own pid.
ip netns exec "$dnsm_ns" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
	--addn-hosts="$tmp/hosts" --listen-address="$dnsm_addr" --bind-interfaces --server="$OUTSIDE_DNS" \
	--port=53 --user=root --group=root --pid-file= \
	--local-ttl=5 --local=/zl/ >"$tmp/dnsmasq.log" 2>&1 &
dnsmasq_pid=$!

# unbound in the unb container: 2 threads sharing the port, the names as
# local-data with the mesh's TTL.
{
	printf 'server:\n  interface: %s\n  port: 53\n  num-threads: 2\n  so-reuseport: yes\n' "$unb_addr"
	printf '  do-daemonize: no\n  username: ""\n  chroot: ""\n  directory: "%s"\n  pidfile: ""\n' "$tmp"
	printf '  use-syslog: no\n  logfile: ""\n  verbosity: 0\n  access-control: 0.0.0.0/0 allow\n'
	printf '  do-ip6: no\n  local-zone: "zl." static\n'
	# unbound answers test. itself (RFC 6761 default zones): forward it
	# like everything else, as the other servers do.
	printf '  local-zone: "test." nodefault\n  do-not-query-localhost: no\n'
	awk '{printf "  local-data: \"%s. 5 IN A %s\"\n", $2, $1}' "$tmp/hosts"
	printf 'remote-control:\n  control-enable: no\n'
	printf 'forward-zone:\n  name: "."\n  forward-addr: %s\n' "$OUTSIDE_DNS"
} >"$tmp/unbound.conf"
ip netns exec "$unb_ns" "$unbound" -d -c "$tmp/unbound.conf" >"$tmp/unbound.log" 2>&1 &
unbound_pid=$!

# Wait until all three answer every name (the mesh's records travel by gossip).
for server in "$dnsm_addr" "$unb_addr" "$MESH_DNS"; do
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
		cat "$tmp/dnsmasq.log" "$tmp/unbound.log" >&2
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

declare -A ADDR PID QPS AVG P50 P99 CPU CSW
ADDR[dnsmasq]=$dnsm_addr ADDR[unbound]=$unb_addr ADDR[mesh]=$MESH_DNS
PID[dnsmasq]=$dnsmasq_pid PID[unbound]=$unbound_pid PID[mesh]=$zlmesh_pid
servers="unbound dnsmasq mesh"
for name in $servers; do QPS[$name]=0; done
for ((r = 1; r <= REPS; r++)); do
	for name in $servers; do
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
# latency NAME: the latency run against NAME's server, into AVG P50 P99 CPU CSW.
latency() {
	local name=$1 c0 s0 c1 s1 lat n
	c0=$(cpu_ticks "${PID[$name]}") s0=$(switches "${PID[$name]}")
	lat=$(dns_latency "$client" "${ADDR[$name]}" "$tmp/queries" "$tmp")
	c1=$(cpu_ticks "${PID[$name]}") s1=$(switches "${PID[$name]}")
	read -r P50[$name] P99[$name] <<<"$lat"
	n=$(wc -l <"$tmp/lat-${ADDR[$name]}.out.sorted")
	AVG[$name]=$(awk '{s += $1} END {if (NR) printf "%.3f", s * 1000 / NR}' "$tmp/lat-${ADDR[$name]}.out.sorted")
	CPU[$name]=$(awk -v t=$((c1 - c0)) -v hz="$hz" -v n="$n" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
	CSW[$name]=$(awk -v s=$((s1 - s0)) -v n="$n" 'BEGIN {printf "%.2f", s / n}')
}
for name in $servers; do
	latency "$name"
done
fwd_servers=
if [ "$FORWARD" = 1 ]; then
	echo "outside.test A" >"$tmp/hit"
	awk -v n=$((RATE * DURATION + 1000)) -v p="$prefix" 'BEGIN {for (i = 0; i < n; i++) printf "m%d.%s.miss.test A\n", i, p}' >"$tmp/miss"
	declare -A HQPS HP50 HP99 MP50 MP99 MAVG
	for name in unbound dnsmasq mesh; do
		HQPS[$name]=$(dns_qps "$client" "${ADDR[$name]}" "$tmp/hit" "$tmp")
		read -r HP50[$name] HP99[$name] <<<"$(dns_latency "$client" "${ADDR[$name]}" "$tmp/hit" "$tmp")"
		read -r MP50[$name] MP99[$name] <<<"$(dns_latency "$client" "${ADDR[$name]}" "$tmp/miss" "$tmp")"
		MAVG[$name]=$(awk '{s += $1} END {if (NR) printf "%.3f", s * 1000 / NR}' "$tmp/lat-${ADDR[$name]}.out.sorted")
	done
	fwd_servers="unbound dnsmasq mesh"
fi
if [ "$CHURN" = 1 ]; then
	servers+=" mesh+churn"
	ADDR[mesh+churn]=$MESH_DNS PID[mesh+churn]=$zlmesh_pid
	"$tmp/dnschurn" -dir "/run/$prefix" -host h1 -service churn -rate "$CHURN_RATE" -for "$((DURATION + 2))s" >"$tmp/churn1.out" &
	churn_pid=$!
	sleep 1
	QPS[mesh+churn]=$(dns_qps "$client" "$MESH_DNS" "$tmp/queries" "$tmp")
	wait "$churn_pid"
	"$tmp/dnschurn" -dir "/run/$prefix" -host h1 -service churn -rate "$CHURN_RATE" -for "$((DURATION + 2))s" >"$tmp/churn2.out" &
	churn_pid=$!
	sleep 1
	latency mesh+churn
	wait "$churn_pid"
fi

echo "dns-mesh.sh: $NAMES names on $HOSTS hosts, from a container on h1; ${DURATION}s per run;"
echo "  throughput: dnsperf -c $CLIENTS -q $OUTSTANDING, best of $REPS; latency and CPU: $RATE q/s"
printf '%-11s %-15s %12s %10s %10s %10s %14s %15s\n' server address "queries/s" "avg ms" "p50 ms" "p99 ms" "CPU µs/query" "switches/query"
for name in $servers; do
	printf '%-11s %-15s %12s %10s %10s %10s %14s %15s\n' "$name" "${ADDR[$name]}" "${QPS[$name]}" "${AVG[$name]}" "${P50[$name]}" "${P99[$name]}" "${CPU[$name]}" "${CSW[$name]}"
done
for base in unbound dnsmasq; do
	awk -v a="${QPS[mesh]}" -v b="${QPS[$base]}" -v c="${P99[mesh]}" -v d="${P99[$base]}" \
		-v g="${AVG[mesh]}" -v h="${AVG[$base]}" -v e="${CPU[mesh]}" -v f="${CPU[$base]}" -v base="$base" \
		'BEGIN { printf "ratio mesh/%s: queries/s %.2fx, avg latency %.2fx, p99 %.2fx, CPU per query %.2fx\n", base, a / b, (h > 0 ? g / h : 0), (d > 0 ? c / d : 0), (f > 0 ? e / f : 0) }'
done
if [ "$CHURN" = 1 ]; then
	awk -v a="${QPS[mesh+churn]}" -v b="${QPS[mesh]}" -v c="${P99[mesh+churn]}" -v d="${P99[mesh]}" \
		'BEGIN { printf "ratio mesh under churn/mesh: queries/s %.2fx, p99 %.2fx\n", a / b, (d > 0 ? c / d : 0) }'
	cat "$tmp/churn1.out" "$tmp/churn2.out"
fi
if [ -n "$fwd_servers" ]; then
	echo "forwarded to the outside resolver $OUTSIDE_DNS: a cached name (outside.test) and misses (a new name per query, at $RATE q/s):"
	printf '%-11s %16s %14s %14s %15s %15s %15s\n' server "hit queries/s" "hit p50 ms" "hit p99 ms" "miss avg ms" "miss p50 ms" "miss p99 ms"
	for name in $fwd_servers; do
		printf '%-11s %16s %14s %14s %15s %15s %15s\n' "$name" "${HQPS[$name]}" "${HP50[$name]}" "${HP99[$name]}" "${MAVG[$name]}" "${MP50[$name]}" "${MP99[$name]}"
	done
	for base in unbound dnsmasq; do
		awk -v a="${HQPS[mesh]}" -v b="${HQPS[$base]}" -v c="${MAVG[mesh]}" -v d="${MAVG[$base]}" -v base="$base" \
			'BEGIN { printf "ratio mesh/%s: cached forwarded queries/s %.2fx, miss avg latency %.2fx\n", base, a / b, (d > 0 ? c / d : 0) }'
	done
fi
echo "targets: queries/s >= 1.0x unbound and dnsmasq; avg and p99 at $RATE q/s <= 1.1x unbound's"
echo "load average during the run: $(cut -d' ' -f1-3 /proc/loadavg)"

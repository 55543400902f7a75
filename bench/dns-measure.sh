# bench/dns-measure.sh: dnsperf measurements shared by the DNS benchmarks.
# Source it; it defines functions only.
#
#   dns_qps NETNS SERVER QUERIES OUTDIR
#       queries/s against SERVER (an IP address, port 53)
#       for DURATION seconds flat out, dnsperf running in NETNS with
#       -c CLIENTS -q OUTSTANDING; prints the integer rate.
#   dns_latency NETNS SERVER QUERIES OUTDIR
#       "p50 p99" in milliseconds at a fixed RATE queries/s for DURATION
#       seconds, from dnsperf's per-query report (-v).
#
# QUERIES is a dnsperf data file ("name type" lines); OUTDIR receives the
# raw dnsperf output. Both read DURATION, RATE, CLIENTS and OUTSTANDING from
# the environment (defaults 10, 2000, 4, 200).

dns_qps() {
	local netns=$1 server=$2 queries=$3 out=$4/qps-$2.out
	ip netns exec "$netns" dnsperf -s "$server" -d "$queries" -l "${DURATION:-10}" \
		-c "${CLIENTS:-4}" -q "${OUTSTANDING:-200}" >"$out" 2>&1
	# A few queries still in flight when the time is up count as lost;
	# more than 0.1% is worth a word.
	awk '/Queries sent:/ {s = $3} /Queries lost:/ {l = $3}
		END { if (s > 0 && l / s > 0.001) printf "dns-measure: %s lost %d of %d queries\n", srv, l, s > "/dev/stderr" }' \
		srv="$server" "$out"
	awk '/Queries per second:/ {printf "%.0f", $4}' "$out"
}

dns_latency() {
	local netns=$1 server=$2 queries=$3 out=$4/lat-$2.out n
	ip netns exec "$netns" dnsperf -s "$server" -d "$queries" -l "${DURATION:-10}" \
		-Q "${RATE:-2000}" -v >"$out" 2>&1
	# Verbose lines: "> NOERROR svc1.zl A 0.000123" (latency in seconds).
	awk '$1 == ">" {print $NF}' "$out" | sort -g >"$out.sorted"
	n=$(wc -l <"$out.sorted")
	if [ "$n" -eq 0 ]; then
		echo "dns-measure: no latencies from $server" >&2
		cat "$out" >&2
		return 1
	fi
	awk -v n="$n" '
		NR == int(n * 0.50 + 0.5) { p50 = $1 * 1000 }
		NR == int(n * 0.99 + 0.5) { p99 = $1 * 1000 }
		END { printf "%.3f %.3f", p50, p99 }' "$out.sorted"
}

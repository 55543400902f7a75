#!/usr/bin/env bash
# bench/memory.sh: idle resident memory of a zlmesh node, against a
# standalone wireguard-go of the same version with the same peers, in one
# run: a 3-host testbed runs zlmesh on every host and the standalone
# wireguard-go beside it (bench/wgpair.sh); once every host pings every
# other one over both overlays, it waits SETTLE seconds (default 10) and
# reads VmRSS (and its anonymous and file-backed parts) of each daemon from
# /proc/<pid>/status, SAMPLES times (default 3) one second apart, reporting
# the median per host. Target: zlmesh <= 30 MB.
#
# Env: SETTLE, SAMPLES, ZLMESH_ARGS (extra `zlmesh up` arguments; with
# "--pprof-listen 127.0.0.1:6060", HEAP=dir saves each zlmesh's heap
# profile there).
# Needs root; everything runs inside a testbed (random prefix) that is
# removed on exit, also on failure or ^C.
set -euo pipefail

SETTLE=${SETTLE:-10}
SAMPLES=${SAMPLES:-3}
WGPAIR_HOSTS=3

. "$(dirname "$0")/wgpair.sh"

echo "memory.sh: building and starting 3 hosts (testbed $P)…" >&2
wgpair_up
sleep "$SETTLE"

# kb PID FIELD: a field of /proc/PID/status in kB.
kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }

for ((s = 1; s <= SAMPLES; s++)); do
	for h in h1 h2 h3; do
		for d in zlmesh wg; do
			if [ "$d" = zlmesh ]; then pid=$(zl_pid "$h"); else pid=$(wg_pid "$h"); fi
			printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$d" "$h" "$(kb "$pid" VmRSS)" "$(kb "$pid" RssAnon)" \
				"$(kb "$pid" RssFile)" "$(kb "$pid" Threads)" >>"$TMP/rss"
		done
	done
	sleep 1
done
if [ -n "${HEAP:-}" ]; then
	mkdir -p "$HEAP"
	for h in h1 h2 h3; do
		in_host "$h" curl -s -o "$TMP/heap-$h.pprof" http://127.0.0.1:6060/debug/pprof/heap && cp "$TMP/heap-$h.pprof" "$HEAP/"
	done
fi

col() { awk -F'\t' -v d="$1" -v h="$2" -v c="$3" '$1 == d && $2 == h {print $c}' "$TMP/rss" | median; }
mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

echo
echo "memory.sh: idle daemons in a 3-host mesh, ${SETTLE}s after every host pinged every other one; medians of $SAMPLES samples"
echo "  zlmesh $ZLMESH_REV; wireguard-go $WG_VERSION; $GO_VERSION"
echo "  load average $(load_avg) ($(nproc) cores)"
printf '%-5s %12s %10s %10s %8s   %12s %10s %10s %8s   %9s\n' host "zlmesh MB" anon file threads "wg-go MB" anon file threads "zl/wg"
for h in h1 h2 h3; do
	printf '%-5s %12s %10s %10s %8s   %12s %10s %10s %8s   %9s\n' "$h" \
		"$(mb "$(col zlmesh "$h" 3)")" "$(mb "$(col zlmesh "$h" 4)")" "$(mb "$(col zlmesh "$h" 5)")" "$(col zlmesh "$h" 6)" \
		"$(mb "$(col wg "$h" 3)")" "$(mb "$(col wg "$h" 4)")" "$(mb "$(col wg "$h" 5)")" "$(col wg "$h" 6)" \
		"$(awk -v a="$(col zlmesh "$h" 3)" -v b="$(col wg "$h" 3)" 'BEGIN {printf "%.2f", a / b}')"
done
echo "  target: zlmesh VmRSS <= 30 MB"

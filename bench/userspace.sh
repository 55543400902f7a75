#!/usr/bin/env bash
# bench/userspace.sh: userspace mode (zlmesh up --userspace: wireguard-go over
# a gVisor netstack, run as nobody with no capabilities) against kernel mode,
# in one run on one 3-host testbed: h1 and h2 in kernel mode, h3 in
# userspace mode with --socks5-listen 127.0.0.1:1080 and
# --forward 5201/tcp:127.0.0.1:5201.
#
# TCP throughput, iperf3, one stream, DURATION seconds (default 10), the
# paths interleaved for ROUNDS rounds (default 3) so that the machine's load
# falls on all of them alike:
#
#   kin     h1 → h2's overlay address        kernel mode, into a node
#   fwd     h1 → h3's overlay address :5201  into h3 through --forward (the
#                                            netstack terminates TCP; a
#                                            loopback connection to iperf3 -s)
#   kout    h2 → h1's overlay address        kernel mode, out of a node
#   socks   h3 → h1's overlay address        out of h3 through its SOCKS5
#                                            server: iperf3 -c 127.0.0.1:15201
#                                            on h3, bench/socksfwd carries it
#                                            through SOCKS5 (one more loopback
#                                            hop) to h1.node.zl:5201
#
# Reports the median Gbit/s, the CPU of the zlmesh daemons at both ends
# (utime+stime, % of one core), the machine's busy share and load average
# (the machine is shared: say so with the figures), the ratios fwd/kin
# and socks/kout; then the idle RSS of the userspace node beside a kernel
# node's (target: <= 30 MB).
#
# Env: DURATION, ROUNDS, SETTLE (seconds before reading RSS, default 10).
# Needs root; everything runs inside a testbed (random prefix) that is
# removed on exit, also on failure or ^C.
set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
SETTLE=${SETTLE:-10}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=../scripts/deps.sh
. "$root/scripts/deps.sh"
zlmesh_install_deps
for tool in iperf3 jq ping; do
	command -v "$tool" >/dev/null || { echo "userspace.sh: $tool not installed" >&2; exit 1; }
done

P=zu$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
TMP=$(mktemp -d "/tmp/zlb-$P.XXXX")
chmod 755 "$TMP" # h3's tools run as root, but keep the binaries readable
BG_PIDS=()
cleanup() {
	local pid
	for pid in "${BG_PIDS[@]+"${BG_PIDS[@]}"}"; do
		kill "$pid" 2>/dev/null || true
	done
	[ -x "$TMP/zlmesh" ] && "$TMP/zlmesh" testbed down --prefix "$P" >/dev/null 2>&1 || true
	for pid in "${BG_PIDS[@]+"${BG_PIDS[@]}"}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_host() { "$TMP/zlmesh" testbed exec --prefix "$P" "$1" -- "${@:2}"; }
zl_addr() { jq -r --arg h "$1" '.hosts[] | select(.name == $h) | .overlay' "$TMP/testbed.json"; }
zl_pid() { jq -r --arg h "$1" '.hosts[] | select(.name == $h) | .pid' "$TMP/testbed.json"; }
cpu_ticks() {
	local pid s=0
	for pid in "$@"; do
		s=$((s + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
	done
	echo "$s"
}
CLK_TCK=$(getconf CLK_TCK)
sys_busy() { awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }
load_avg() { cut -d' ' -f1-3 /proc/loadavg; }
median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
wait_ping() {
	for _ in $(seq 100); do
		in_host "$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	echo "userspace.sh: $1 cannot ping $2" >&2
	return 1
}

echo "userspace.sh: building and starting 3 hosts, h3 in userspace mode (testbed $P)…" >&2
(cd "$root" && go build -o "$TMP/zlmesh" ./cmd/zlmesh && go build -o "$TMP/socksfwd" ./bench/socksfwd)
REV=$(cd "$root" && git describe --always --dirty 2>/dev/null || echo unknown)
"$TMP/zlmesh" testbed up --prefix "$P" --hosts 3 --binary "$TMP/zlmesh" --userspace h3 \
	--userspace-args "--socks5-listen 127.0.0.1:1080 --forward 5201/tcp:127.0.0.1:5201" \
	-o json >"$TMP/testbed.json" 2>"$TMP/testbed.log" || {
	cat "$TMP/testbed.log" >&2
	exit 1
}
for h in h1 h2; do
	for o in h1 h2 h3; do
		[ "$h" = "$o" ] || wait_ping "$h" "$(zl_addr "$o")"
	done
done

# sample_rss TAG: 3 samples, 1 s apart, of h1's and h3's VmRSS, RssAnon, Threads.
sample_rss() {
	local s h pid
	for s in 1 2 3; do
		for h in h1 h3; do
			pid=$(zl_pid "$h")
			printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$h" "$(kb "$pid" VmRSS)" "$(kb "$pid" RssAnon)" "$(kb "$pid" Threads)" >>"$TMP/rss"
		done
		sleep 1
	done
}
echo "userspace.sh: idle for ${SETTLE}s before the transfers…" >&2
sleep "$SETTLE"
sample_rss idle

# iperf3 servers: h1 and h2 on their overlay (kernel mode), h3 on loopback
# behind the forward; socksfwd on h3 in front of the SOCKS5 server.
for h in h1 h2; do
	in_host "$h" iperf3 -s >"$TMP/iperf3-$h.log" 2>&1 &
	BG_PIDS+=($!)
done
in_host h3 iperf3 -s -B 127.0.0.1 >"$TMP/iperf3-h3.log" 2>&1 &
BG_PIDS+=($!)
in_host h3 "$TMP/socksfwd" -listen 127.0.0.1:15201 -socks 127.0.0.1:1080 -target h1.node.zl:5201 >"$TMP/socksfwd.log" 2>&1 &
BG_PIDS+=($!)
sleep 1

# path MODE: "client-host address port pids…"
path() {
	case $1 in
	kin) echo "h1 $(zl_addr h2) 5201 $(zl_pid h1) $(zl_pid h2)" ;;
	fwd) echo "h1 $(zl_addr h3) 5201 $(zl_pid h1) $(zl_pid h3)" ;;
	kout) echo "h2 $(zl_addr h1) 5201 $(zl_pid h2) $(zl_pid h1)" ;;
	socks) echo "h3 127.0.0.1 15201 $(zl_pid h3) $(zl_pid h1)" ;;
	esac
}
MODES=(kin fwd kout socks)

# measure MODE: one iperf3 run; appends "mode gbits daemon% machine%".
measure() {
	local mode=$1 host addr port pids c0 c1 b0 b1 t0 t1 w0 w1 dt out
	read -r host addr port pids <<<"$(path "$mode")"
	read -r -a pids <<<"$pids"
	c0=$(cpu_ticks "${pids[@]}")
	read -r b0 t0 <<<"$(sys_busy)"
	w0=$(date +%s.%N)
	out=$(in_host "$host" iperf3 -c "$addr" -p "$port" -t "$DURATION" -J)
	w1=$(date +%s.%N)
	read -r b1 t1 <<<"$(sys_busy)"
	c1=$(cpu_ticks "${pids[@]}")
	dt=$(awk -v a="$w0" -v b="$w1" 'BEGIN {print b - a}')
	if ! jq -e '.end.sum_received.bits_per_second > 1e6' <<<"$out" >/dev/null; then
		echo "userspace.sh: $mode moved (almost) nothing: $(jq -c '{error, sum_received: .end.sum_received}' <<<"$out")" >&2
		tail -5 "/run/$P/h3/zlmesh.log" >&2
	fi
	jq -r --arg m "$mode" \
		--arg cpu "$(awk -v c=$((c1 - c0)) -v hz="$CLK_TCK" -v dt="$dt" 'BEGIN {printf "%.0f", c / hz / dt * 100}')" \
		--arg busy "$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) 'BEGIN {printf "%.0f", (t > 0 ? b / t * 100 : 0)}')" \
		'[$m, (.end.sum_received.bits_per_second / 1e9 | . * 1000 | round / 1000), $cpu, $busy] | @tsv' \
		<<<"$out" | tee -a "$TMP/results" >&2
}

load_before=$(load_avg)
echo "userspace.sh: load average before: $load_before; $ROUNDS rounds × ${MODES[*]}, ${DURATION}s each" >&2
printf '# mode\tGbit/s\tdaemons%%\tmachine%%\n' >&2
for mode in "${MODES[@]}"; do # warm-up, not counted
	read -r host addr port _ <<<"$(path "$mode")"
	in_host "$host" iperf3 -c "$addr" -p "$port" -t 2 >/dev/null
done
for ((r = 1; r <= ROUNDS; r++)); do
	for ((k = 0; k < ${#MODES[@]}; k++)); do
		measure "${MODES[$(((r - 1 + k) % ${#MODES[@]}))]}"
	done
done
load_after=$(load_avg)

# RSS again once the transfers are over and it settled.
sleep "$SETTLE"
sample_rss after

col() { awk -F'\t' -v m="$1" -v c="$2" '$1 == m {print $c}' "$TMP/results"; }
rcol() { awk -F'\t' -v t="$1" -v h="$2" -v c="$3" '$1 == t && $2 == h {print $c}' "$TMP/rss" | median; }
mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

echo
echo "userspace.sh: iperf3, 1 stream, ${DURATION}s per run, $ROUNDS interleaved rounds, medians"
echo "  zlmesh $REV; $(go env GOVERSION); h3 runs --userspace as nobody with no capabilities"
echo "  load average before $load_before, after $load_after ($(nproc) cores; the machine is shared)"
printf '%-6s %-38s %8s %12s %12s %9s %9s\n' path what "Gbit/s" "min-max" "daemons CPU" machine ratio
for mode in "${MODES[@]}"; do
	g=$(col "$mode" 2 | median)
	lo=$(col "$mode" 2 | sort -g | head -1)
	hi=$(col "$mode" 2 | sort -g | tail -1)
	case $mode in
	kin) what="h1 → h2 overlay (kernel)" ratio=- ;;
	fwd) what="h1 → h3 --forward (userspace)" ratio=$(awk -v a="$g" -v b="$(col kin 2 | median)" 'BEGIN {printf "%.2f", a / b}') ;;
	kout) what="h2 → h1 overlay (kernel)" ratio=- ;;
	socks) what="h3 SOCKS5 → h1 (userspace)" ratio=$(awk -v a="$g" -v b="$(col kout 2 | median)" 'BEGIN {printf "%.2f", a / b}') ;;
	esac
	printf '%-6s %-38s %8.2f %12s %11s%% %8s%% %9s\n' "$mode" "$what" "$g" "$(printf '%.2f-%.2f' "$lo" "$hi")" \
		"$(col "$mode" 3 | median)" "$(col "$mode" 4 | median)" "$ratio"
done
echo "  daemons CPU: the zlmesh daemons at both ends together, % of one core; ratio: fwd/kin, socks/kout"
echo
echo "RSS of the daemons, median of 3 samples: idle (${SETTLE}s after the mesh formed, before any transfer)"
echo "and ${SETTLE}s after the transfers (target for userspace idle: <= 30 MB)"
printf '%-5s %-10s %-6s %9s %9s %8s\n' host mode when "RSS MB" "anon MB" threads
for t in idle after; do
	printf '%-5s %-10s %-6s %9s %9s %8s\n' h1 kernel "$t" "$(mb "$(rcol $t h1 3)")" "$(mb "$(rcol $t h1 4)")" "$(rcol $t h1 5)"
	printf '%-5s %-10s %-6s %9s %9s %8s\n' h3 userspace "$t" "$(mb "$(rcol $t h3 3)")" "$(mb "$(rcol $t h3 4)")" "$(rcol $t h3 5)"
done

# bench/wgpair.sh: sourced by bench/throughput.sh, bench/latency.sh and
# bench/memory.sh. It builds zlmesh and a standalone wireguard-go, brings
# up a testbed whose hosts run zlmesh AND, beside it, the standalone
# wireguard-go configured with `wg` and `ip` the way zlmesh configures its
# own device, so that both can be measured in the same run between the same
# two namespaces:
#
#                 zlmesh (zl0)                     standalone wireguard-go (zlwg0)
#   binary        zlmesh up (the testbed's)        wireguard-go -f, `go install`ed from
#                                                  the golang.zx2c4.com/wireguard version in go.mod
#   UDP port      51820                            51821
#   overlay       10.200.x.1/16 (claimed)          10.99.0.<i>/24
#   MTU           1420                             1420
#   peers         every other host                 every other host, AllowedIPs its /32
#   keepalive     25 s                             25 s
#   TUN           IFF_VNET_HDR, TSO/USO offloads (wireguard-go's CreateTUN; zlmesh's
#                 tun.Create opens it with the same flags and CreateTUNFromFile)
#   UDP           conn.NewDefaultBind (GSO/GRO) for both
#
# The daemon that is not being measured sits idle (zlmesh gossips a few
# small packets a second).
#
# Scheduling: the testbed starts zlmesh in a session of its own (setsid),
# and with kernel.sched_autogroup_enabled=1 (the default here) CFS shares
# the CPU between sessions first. A daemon in its own session competes as
# one group against everything else on a loaded machine, while one left in
# this script's session shares the group of the iperf3 processes it carries
# traffic for: on this shared 2-core machine the same wireguard-go binary
# moved about 3 times more in the second case. So the standalone
# wireguard-go is started through setsid too, the same way as zlmesh.
#
# Provides: $TMP, $P (testbed prefix), tb (the zlmesh binary's testbed
# subcommands with --prefix), in_host, zl_pid, wg_pid, zl_addr, wg_addr,
# ctr_addr, cpu_ticks, sys_busy, load_avg, median, percentile. The caller
# sets WGPAIR_HOSTS (default 2), ZLMESH_ARGS (extra `zlmesh up` arguments,
# space-separated) and WGPAIR_CONTAINERS (containers `testbed up` makes and
# attaches through the control API, host:service:name,...) and calls
# wgpair_up; wgpair_cleanup runs on exit.

WGPAIR_HOSTS=${WGPAIR_HOSTS:-2}
# The standalone instances: name → interface, UDP port, /24, binary.
#   wg    wireguard-go as `go install golang.zx2c4.com/wireguard@<go.mod's version>`
#         builds it (its own go.mod: go 1.23.1 and its pinned x/crypto, x/net,
#         x/sys, hence that Go version's GODEBUG defaults)
#   wgz   (WGPAIR_ZLDEPS=1) the same wireguard-go source built in a module
#         with zlmesh's go directive and x/crypto, x/net, x/sys versions:
#         what zlmesh's embedded copy is compiled with
declare -A WG_IF=([wg]=zlwg0 [wgz]=zlwz0) WG_PORT=([wg]=51821 [wgz]=51822) \
	WG_NET=([wg]=10.99.0 [wgz]=10.98.0) WG_BIN=([wg]=wireguard-go [wgz]=wireguard-go-zldeps)
WG_INSTANCES=(wg)
[ "${WGPAIR_ZLDEPS:-}" = 1 ] && WG_INSTANCES+=(wgz)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=../scripts/deps.sh
. "$root/scripts/deps.sh"
zlmesh_install_deps
for tool in iperf3 wg ip jq ping ethtool; do
	command -v "$tool" >/dev/null || { echo "wgpair: $tool not installed" >&2; exit 1; }
done

P=zb$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
TMP=$(mktemp -d "/tmp/zlb-$P.XXXX")
BG_PIDS=()

wgpair_cleanup() {
	local pid
	for pid in "${BG_PIDS[@]+"${BG_PIDS[@]}"}"; do
		kill "$pid" 2>/dev/null || true
	done
	# Stops zlmesh and kills everything else in the testbed's namespaces
	# (wireguard-go, iperf3), then removes them.
	[ -x "$TMP/zlmesh" ] && "$TMP/zlmesh" testbed down --prefix "$P" >/dev/null 2>&1 || true
	for pid in "${BG_PIDS[@]+"${BG_PIDS[@]}"}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$TMP"
}
trap wgpair_cleanup EXIT
trap 'exit 130' INT TERM

tb() { "$TMP/zlmesh" testbed "$1" --prefix "$P" "${@:2}"; }
# in_host h1 argv…: run argv inside host h1.
in_host() { "$TMP/zlmesh" testbed exec --prefix "$P" "$1" -- "${@:2}"; }

# wgpair_build: zlmesh from this tree, wireguard-go from the module version
# go.mod pins, both with the same Go toolchain.
wgpair_build() {
	local ver
	ver=$(cd "$root" && go list -m -f '{{.Version}}' golang.zx2c4.com/wireguard)
	(cd "$root" && go build -o "$TMP/zlmesh" ./cmd/zlmesh)
	ZLMESH_REV=$(cd "$root" && git describe --always --dirty 2>/dev/null || echo unknown)
	(cd "$TMP" && GOBIN="$TMP/gobin" GOFLAGS= go install "golang.zx2c4.com/wireguard@$ver")
	mv "$TMP/gobin/wireguard" "$TMP/wireguard-go"
	if [ "${WGPAIR_ZLDEPS:-}" = 1 ]; then
		mkdir "$TMP/wgz"
		cp "$root/go.sum" "$TMP/wgz/"
		{
			echo "module zlmesh.bench/wgzldeps"
			echo
			grep -m1 '^go ' "$root/go.mod"
			echo
			echo "require ("
			(cd "$root" && go list -m -f '	{{.Path}} {{.Version}}' golang.zx2c4.com/wireguard golang.org/x/crypto golang.org/x/net golang.org/x/sys)
			echo ")"
		} >"$TMP/wgz/go.mod"
		(cd "$TMP/wgz" && GOFLAGS=-mod=mod go build -o "$TMP/wireguard-go-zldeps" golang.zx2c4.com/wireguard)
	fi
	WG_VERSION=$ver
	GO_VERSION=$(go env GOVERSION)
}

# wgpair_up: build, testbed with zlmesh running on every host, standalone
# wireguard-go beside it, and wait until both overlays answer pings.
wgpair_up() {
	local i j n=$WGPAIR_HOSTS
	wgpair_build
	"$TMP/zlmesh" testbed up --prefix "$P" --hosts "$n" --binary "$TMP/zlmesh" --args "${ZLMESH_ARGS:-}" \
		${WGPAIR_CONTAINERS:+--containers "$WGPAIR_CONTAINERS"} -o json >"$TMP/testbed.json" 2>"$TMP/testbed.log" || {
		cat "$TMP/testbed.log" >&2
		return 1
	}
	for w in "${WG_INSTANCES[@]}"; do
		wg_instance_up "$w"
	done
	for ((i = 1; i <= n; i++)); do
		for ((j = 1; j <= n; j++)); do
			[ "$i" = "$j" ] && continue
			wait_ping "h$i" "$(zl_addr "h$j")"
			for w in "${WG_INSTANCES[@]}"; do
				wait_ping "h$i" "$(wg_addr "h$j" "$w")"
			done
		done
	done
}

# wg_instance_up NAME: the standalone wireguard-go NAME on every host,
# every other host its peer.
wg_instance_up() {
	local w=$1 i j n=$WGPAIR_HOSTS ifc=${WG_IF[$1]}
	for ((i = 1; i <= n; i++)); do
		# Foreground (-f), its own log; its UAPI socket lands in the
		# host's private /var/run/wireguard. In a session of its own,
		# like the testbed's zlmesh (see "Scheduling" above).
		in_host "h$i" setsid -w "$TMP/${WG_BIN[$w]}" -f "$ifc" >"$TMP/$w-h$i.log" 2>&1 &
		BG_PIDS+=($!)
		(umask 077 && in_host "h$i" wg genkey >"$TMP/$w-h$i.key")
		in_host "h$i" wg pubkey <"$TMP/$w-h$i.key" >"$TMP/$w-h$i.pub"
	done
	for ((i = 1; i <= n; i++)); do
		for _ in $(seq 50); do
			[ -S "/run/$P/h$i/wireguard/$ifc.sock" ] && break
			sleep 0.1
		done
		in_host "h$i" wg set "$ifc" listen-port "${WG_PORT[$w]}" private-key "$TMP/$w-h$i.key"
		for ((j = 1; j <= n; j++)); do
			[ "$i" = "$j" ] && continue
			in_host "h$i" wg set "$ifc" peer "$(cat "$TMP/$w-h$j.pub")" allowed-ips "${WG_NET[$w]}.$j/32" \
				endpoint "192.0.2.$((10 + j)):${WG_PORT[$w]}" persistent-keepalive 25
		done
		in_host "h$i" ip addr add "${WG_NET[$w]}.$i/24" dev "$ifc"
		in_host "h$i" ip link set "$ifc" mtu 1420 up
	done
}

wait_ping() {
	for _ in $(seq 100); do
		in_host "$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	echo "wgpair: $1 cannot ping $2" >&2
	return 1
}

# offloads h<i> IFACE: the TUN offloads that are on (ethtool -k), one line.
offloads() {
	in_host "$1" ethtool -k "$2" | awk -F': ' '/^(tx-checksumming|tcp-segmentation-offload|tx-udp-segmentation|generic-receive-offload|rx-gro-list|rx-udp-gro-forwarding|generic-segmentation-offload)/ {
		split($2, v, " "); printf "%s=%s ", $1, v[1] } END { print "" }'
}

zl_addr() { jq -r --arg h "$1" '.hosts[] | select(.name == $h) | .overlay' "$TMP/testbed.json"; }
# ctr_addr NAME: the address zlmesh gave testbed container NAME (made with
# WGPAIR_CONTAINERS=host:service:name,...).
ctr_addr() { jq -r --arg c "$1" '.containers[] | select(.name == $c) | .address' "$TMP/testbed.json"; }
zl_pid() { jq -r --arg h "$1" '.hosts[] | select(.name == $h) | .pid' "$TMP/testbed.json"; }
# wg_addr h<i> [instance]: the host's address on a standalone overlay.
wg_addr() { echo "${WG_NET[${2:-wg}]}.${1#h}"; }
# wg_pid h<i> [instance]: the standalone wireguard-go's PID in the host.
wg_pid() {
	local pid want=${WG_BIN[${2:-wg}]}
	for pid in $(ip netns pids "$P-$1"); do
		[ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "${want:0:15}" ] && { echo "$pid"; return 0; }
	done
	echo "wgpair: no $want in $1" >&2
	return 1
}

# cpu_ticks pid…: utime+stime of the processes, in clock ticks.
cpu_ticks() {
	local pid s=0
	for pid in "$@"; do
		s=$((s + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
	done
	echo "$s"
}
CLK_TCK=$(getconf CLK_TCK)

# sys_busy: "busy total" jiffies of the whole machine (/proc/stat).
sys_busy() { awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }
load_avg() { cut -d' ' -f1-3 /proc/loadavg; }

# median of the numbers on stdin.
median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
# percentile P of the numbers on stdin (nearest rank).
percentile() { sort -g | awk -v p="$1" '{a[NR] = $1} END {if (NR == 0) {print "nan"; exit} r = int(p / 100 * NR + 0.999999); if (r < 1) r = 1; print a[r]}'; }

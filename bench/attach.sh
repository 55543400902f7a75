#!/usr/bin/env bash
# bench/attach.sh — container attach, measured in one run against its
# baselines (bench/attachbench does the work; see its doc):
#
#  1. ip: N (default 100) sequential attaches the classic way, `ip`
#     commands from one bash script inside the host (veth created into the
#     netns, address, lo and eth0 up, default route, master, up), with
#     nothing attached;
#  2. at each of SIZES (default "0,500,1000") containers already attached
#     (zlmesh: CLIENTS (default 8) concurrent clients over 4 services, in
#     the default block plan, so the node claims blocks as it grows; CNI:
#     the same number over 4 networks, in a second host), N sequential
#     attaches each into a fresh container namespace made beforehand, of
#       zlmesh    through its control socket, from this machine's namespace
#                 to zlmesh running in a testbed host;
#       CNI       Debian's CNI bridge plugin with host-local IPAM
#                 (containernetworking-plugins), invoked directly with
#                 CNI_COMMAND=ADD and the CNI environment, from one bash
#                 script inside the host;
#     p50, p99, CNI/zlmesh at each size and zlmesh at each size / at 0;
#  3. zlmesh's VmRSS idle with nothing attached and with the largest size
#     attached (and 10 s later);
#  4. every zlmesh container detached by the CLIENTS clients at once.
#
# Needs root and Go; installs the packages it uses (scripts/deps.sh).
# Everything runs in a testbed with a random prefix (namespaces zt???-*),
# removed on exit, also on failure or ^C; no packet leaves it.
#
# Env: N, SIZES, CLIENTS, STATE_DIR (zlmesh's state dir; default the
# testbed's, under /run/<prefix>).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
# shellcheck source=../scripts/deps.sh
. scripts/deps.sh
zlmesh_install_deps

N=${N:-100}
SIZES=${SIZES:-0,500,1000}
CLIENTS=${CLIENTS:-8}
tmp=$(mktemp -d /tmp/zlt-attachb-XXXXXX)
prefix=zt$(od -An -N3 -tu1 /dev/urandom | awk '{for (i = 1; i <= 3; i++) printf "%c", 97 + $i % 26}')
cleanup() {
	# attachbench removes its testbed itself; this is for a run that was
	# killed before it could.
	if [ -x "$tmp/zlmesh" ]; then
		"$tmp/zlmesh" testbed down --prefix "$prefix" >/dev/null 2>&1 || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

go build -o "$tmp/zlmesh" ./cmd/zlmesh
go build -o "$tmp/attachbench" ./bench/attachbench

args=(-binary "$tmp/zlmesh" -prefix "$prefix" -n "$N" -sizes "$SIZES" -clients "$CLIENTS")
[ -z "${STATE_DIR:-}" ] || args+=(-state-dir "$STATE_DIR")
echo "attach.sh: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
"$tmp/attachbench" "${args[@]}"
echo "attach.sh: load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"

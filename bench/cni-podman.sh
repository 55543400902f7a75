#!/usr/bin/env bash
# bench/cni-podman.sh — `podman run --rm IMAGE true` wall time on a zlmesh
# network (zlmesh-cni talking to zlmesh in a testbed host) against Podman's
# own CNI bridge network (made by `podman network create`: bridge, host-local,
# portmap, firewall, tuning), RUNS (default 20) runs each, interleaved, in one
# run, after WARMUP (default 2) discarded runs each; p50, p99 and the ratios.
#
# Podman is private to the run, as in e2e/podman_test.go: its own
# containers.conf (CNI backend, runc, low ulimits, cgroupfs), vfs storage,
# run and CNI configuration dirs under a temporary directory; the busybox
# image is imported once from busybox-static. Podman runs inside the testbed
# host's network namespace (nsenter --net), so both networks' bridges and
# rules live there. Machine paths Podman writes whatever its configuration
# (/var/lib/cni, /var/lib/containers, /run/runc) are removed on exit when
# this run made them.
#
# Needs root and Go; installs the packages it uses (scripts/deps.sh).
# Everything runs in a testbed with a random prefix, removed on exit, also
# on failure or ^C; no packet leaves it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
# shellcheck source=../scripts/deps.sh
. scripts/deps.sh
zlmesh_install_deps

RUNS=${RUNS:-20}
WARMUP=${WARMUP:-2}
tmp=$(mktemp -d /tmp/zlpm-bench-XXXXXX)
P=zt$(od -An -N3 -tu1 /dev/urandom | awk '{for (i = 1; i <= 3; i++) printf "%c", 97 + $i % 26}')
made=()
for d in /var/lib/cni /var/lib/containers /run/runc; do
	[ -e "$d" ] || made+=("$d")
done
pmenv=(env "CONTAINERS_CONF=$tmp/containers.conf" "CONTAINERS_STORAGE_CONF=$tmp/storage.conf" "TMPDIR=$tmp/tmp")
pm() { "${pmenv[@]}" podman --tmpdir "$tmp/libpod" "$@"; }
pmh() { nsenter --net="/run/netns/$P-h1" -- "${pmenv[@]}" podman --tmpdir "$tmp/libpod" "$@"; }
cleanup() {
	pm rm --all --force --time 0 >/dev/null 2>&1 || true
	[ ! -e "/run/netns/$P-h1" ] || pmh network rm -f zlbench-br >/dev/null 2>&1 || true
	pm system reset --force >/dev/null 2>&1 || true
	[ ! -x "$tmp/zlmesh" ] || "$tmp/zlmesh" testbed down --prefix "$P" >/dev/null 2>&1 || true
	rm -rf "$tmp"
	for d in "${made[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

go build -o "$tmp/zlmesh" ./cmd/zlmesh
mkdir -p "$tmp/cni" "$tmp/net.d" "$tmp/tmp" "$tmp/rootfs/bin" "$tmp/rootfs/etc"
go build -o "$tmp/cni/zlmesh" ./cmd/zlmesh-cni

cat >"$tmp/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["$tmp/cni", "/usr/lib/cni"]
network_config_dir = "$tmp/net.d"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$tmp/events.log"
EOF
printf '[storage]\ndriver = "vfs"\ngraphroot = "%s"\nrunroot = "%s"\n' "$tmp/root" "$tmp/runroot" >"$tmp/storage.conf"

cp "$(command -v busybox)" "$tmp/rootfs/bin/busybox"
for a in $(busybox --list); do [ "$a" = busybox ] || ln -s busybox "$tmp/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$tmp/rootfs/etc/passwd"
tar -C "$tmp/rootfs" -cf "$tmp/rootfs.tar" .
pm import "$tmp/rootfs.tar" localhost/zlmesh-busybox >/dev/null

"$tmp/zlmesh" testbed up --hosts 1 --prefix "$P" >/dev/null
cat >"$tmp/net.d/zlbench-mesh.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "zlbench-mesh", "plugins": [
  {"type": "zlmesh", "socket": "/run/$P/h1/zlmesh.sock", "service": "bench", "capabilities": {"aliases": true}}]}
EOF
pmh network create --disable-dns --subnet 10.89.0.0/24 zlbench-br >/dev/null

# one NET: prints the wall time of one `podman run --rm` in ms.
one() {
	local t0 t1
	t0=$(date +%s%N)
	pmh run --rm --network "$1" localhost/zlmesh-busybox true
	t1=$(date +%s%N)
	echo $(((t1 - t0) / 1000))
}
echo "cni-podman.sh: $(nproc) cores, podman $(podman --version | awk '{print $3}'), load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
for _ in $(seq "$WARMUP"); do one zlbench-mesh >/dev/null; one zlbench-br >/dev/null; done
: >"$tmp/mesh.us"
: >"$tmp/br.us"
for _ in $(seq "$RUNS"); do
	one zlbench-mesh >>"$tmp/mesh.us"
	one zlbench-br >>"$tmp/br.us"
done
left=$("$tmp/zlmesh" attachments --socket "/run/$P/h1/zlmesh.sock" -o json | tr -d ' \n')
[ "$left" = "[]" ] || { echo "cni-podman.sh: attachments left after the runs: $left" >&2; exit 1; }

# pct FILE P: the P-th percentile (nearest rank) of FILE's numbers.
pct() { sort -n "$1" | awk -v p="$2" '{v[NR] = $1} END {i = int((p * NR + 99) / 100); if (i < 1) i = 1; print v[i]}'; }
ms() { awk -v us="$1" 'BEGIN {printf "%.1f", us / 1000}'; }
mp50=$(pct "$tmp/mesh.us" 50)
mp99=$(pct "$tmp/mesh.us" 99)
bp50=$(pct "$tmp/br.us" 50)
bp99=$(pct "$tmp/br.us" 99)
printf '%-28s %10s %10s\n' "podman run --rm ($RUNS runs)" "p50 ms" "p99 ms"
printf '%-28s %10s %10s\n' "CNI bridge (zlbench-br)" "$(ms "$bp50")" "$(ms "$bp99")"
printf '%-28s %10s %10s\n' "zlmesh (zlbench-mesh)" "$(ms "$mp50")" "$(ms "$mp99")"
printf '%-28s %10s %10s\n' "ratio zlmesh / bridge" "$(awk -v a="$mp50" -v b="$bp50" 'BEGIN {printf "%.2fx", a / b}')" "$(awk -v a="$mp99" -v b="$bp99" 'BEGIN {printf "%.2fx", a / b}')"
echo "cni-podman.sh: load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"

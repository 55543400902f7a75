#!/usr/bin/env bash
# bench/docker.sh — `docker run --rm` on a zlmesh network against Docker's
# default bridge network, same run, N (default 20) each, alternating
# (bench/dockerbench does the work; see its doc).
#
# RESIDENT=1 keeps one container on the zlmesh network meanwhile (its
# service bridge then stays).
#
# Needs root and Go; installs the packages it uses (scripts/deps.sh:
# docker.io, busybox-static). Everything runs in a one-host testbed with a
# random prefix and a dockerd of its own in that host's network namespace,
# removed on exit, also on failure or ^C; no packet leaves it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
# shellcheck source=../scripts/deps.sh
. scripts/deps.sh
zlmesh_install_deps

N=${N:-20}
tmp=$(mktemp -d /tmp/zlt-dockerb-XXXXXX)
prefix=zt$(od -An -N3 -tu1 /dev/urandom | awk '{for (i = 1; i <= 3; i++) printf "%c", 97 + $i % 26}')
cleanup() {
	if [ -x "$tmp/zlmesh" ]; then
		"$tmp/zlmesh" testbed down --prefix "$prefix" >/dev/null 2>&1 || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

go build -o "$tmp/zlmesh" ./cmd/zlmesh
go build -o "$tmp/dockerbench" ./bench/dockerbench
echo "docker.sh: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
"$tmp/dockerbench" -binary "$tmp/zlmesh" -prefix "$prefix" -n "$N" ${RESIDENT:+-resident}
echo "docker.sh: load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"

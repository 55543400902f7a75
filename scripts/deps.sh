#!/usr/bin/env bash
# Installs what zlmesh's demo, tests and benchmarks use, from Debian's
# packages: apt-get update first, then apt-get install of whatever is missing.
# Sourced by scripts/demo.sh, scripts/test.sh, scripts/test-windows.sh and
# bench/*.sh; needs root.
set -euo pipefail

# Where tools taken out of a Debian package without installing it live
# (promtool: see zlmesh_install_promtool). Tests look there too.
ZLMESH_TOOLS=/var/cache/zlmesh-tools/bin

ZLMESH_PACKAGES=(
  iproute2              # ip, to observe links and routes in tests (zlmesh itself uses netlink)
  nftables              # nft, to observe zlmesh's NAT table and make testbed partitions
  wireguard-tools       # wg show against zlmesh's UAPI socket; wg-quick strip + wg setconf for guests (e2e/guests_test.go)
  iperf3                # throughput benchmarks
  ethtool               # the throughput benchmark shows both overlays' TUN offloads
  jq                    # the mesh-core benchmarks read `ip -j` and iperf3 JSON
  dnsutils              # dig
  dnsmasq-base          # the testbed's outside resolver, and the DNS benchmark's baseline
  dnsperf               # DNS benchmark
  iputils-ping          # ping
  netcat-openbsd        # nc, TCP and UDP checks in tests
  curl                  # userspace mode e2e: curl through the SOCKS5 and HTTP proxies
  util-linux            # unshare, nsenter: the testbed's per-host mount namespaces
  procps                # ps, for the testbed's process checks
  containernetworking-plugins # the CNI bridge plugin, the attach benchmark's baseline; host-local and loopback for the Podman test
  podman                # the CNI plugin's end-to-end test and benchmark (CNI backend)
  runc                  # Podman's runtime in the test (crun cannot start here: cgroups in hybrid mode)
  busybox-static        # the Podman and Docker tests' image, imported from a directory (no registry)
  systemd               # systemd-analyze, to verify dist/zlmesh.service (already there on Debian; installing it starts nothing where systemd is not PID 1)
  docker.io             # the Docker driver's end-to-end test and benchmark (dockerd per testbed host)
)

# What scripts/test-windows.sh adds: Wine runs the Windows test binaries.
# Kept apart because they weigh about 1 GB that the Linux tests do not need.
ZLMESH_WINDOWS_PACKAGES=(
  wine64                      # 64-bit Wine: runs the Windows test binaries
  wine                        # the `wine` launcher that `go test -exec wine` calls
  gcc-mingw-w64-x86-64-win32  # builds scripts/wine/bcryptprimitives.dll, which Wine 8.0 lacks
)

# zlmesh_as_root re-runs the calling script as root: through sudo when the
# caller is not root and sudo exists, else it stops with a one-line error.
# Call it first thing, with the script's arguments: zlmesh_as_root "$@".
zlmesh_as_root() {
  [ "$(id -u)" = 0 ] && return 0
  if command -v sudo >/dev/null; then
    exec sudo -- "$(realpath "$0")" "$@"
  fi
  echo "zlmesh: $0 needs root (network namespaces, TUN, nftables) and there is no sudo: run it as root" >&2
  exit 1
}

# zlmesh_install_promtool puts promtool (for `promtool check metrics` in the
# e2e tests) in $ZLMESH_TOOLS. Debian ships it only in the prometheus
# package, which is 96 MB installed with a dozen JavaScript packages and
# starts a Prometheus server from its init script on install; so this takes
# promtool alone out of that Debian package (apt-get download, dpkg-deb)
# without installing it.
zlmesh_install_promtool() {
  [ -x "$ZLMESH_TOOLS/promtool" ] && return 0
  local tmp
  tmp=$(mktemp -d /tmp/zlmesh-promtool.XXXXXX)
  echo "zlmesh: fetching promtool from Debian's prometheus package" >&2
  ( cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root prometheus >/dev/null ) &&
    dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$tmp" ./usr/bin/promtool &&
    mkdir -p "$ZLMESH_TOOLS" && install -m 0755 "$tmp/usr/bin/promtool" "$ZLMESH_TOOLS/promtool"
  local rc=$?
  rm -rf "$tmp"
  return $rc
}

zlmesh_install_deps() {
  zlmesh_install_packages "${ZLMESH_PACKAGES[@]}"
}

zlmesh_install_windows_deps() {
  zlmesh_install_packages "${ZLMESH_WINDOWS_PACKAGES[@]}"
}

# zlmesh_install_packages PACKAGE...: apt-get install of those not installed.
zlmesh_install_packages() {
  if [ "$(id -u)" != 0 ]; then
    echo "zlmesh: the demo, tests and benchmarks need root (network namespaces, TUN, nftables)" >&2
    return 1
  fi
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "zlmesh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  zlmesh_install_promtool || { echo "zlmesh: could not fetch promtool" >&2; return 1; }
  command -v go >/dev/null || { echo "zlmesh: Go is not on PATH (expected /usr/local/go/bin)" >&2; return 1; }
}

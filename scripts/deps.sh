#!/usr/bin/env bash
# Installs what zlmesh's demo, tests and benchmarks use, from Debian's
# packages: apt-get update first, then apt-get install of whatever is missing.
# Sourced by scripts/demo.sh, scripts/test.sh and bench/*.sh; needs root.
set -euo pipefail

ZLMESH_PACKAGES=(
  iproute2              # ip, to observe links and routes in tests (zlmesh itself uses netlink)
  nftables              # nft, to observe zlmesh's NAT table and make testbed partitions
  wireguard-tools       # wg show against zlmesh's UAPI socket
  iperf3                # throughput benchmarks
  ethtool               # the throughput benchmark shows both overlays' TUN offloads
  jq                    # the mesh-core benchmarks read `ip -j` and iperf3 JSON
  dnsutils              # dig
  dnsmasq-base          # the testbed's outside resolver, and the DNS benchmark's baseline
  dnsperf               # DNS benchmark
  iputils-ping          # ping
  netcat-openbsd        # nc, TCP and UDP checks in tests
  util-linux            # unshare, nsenter: the testbed's per-host mount namespaces
  procps                # ps, for the testbed's process checks
  containernetworking-plugins # the CNI bridge plugin, the attach benchmark's baseline
  docker.io             # the Docker driver's end-to-end test and benchmark (dockerd per testbed host)
  busybox-static        # the Docker test's image, imported from a directory (no registry)
)

zlmesh_install_deps() {
  if [ "$(id -u)" != 0 ]; then
    echo "zlmesh: the demo, tests and benchmarks need root (network namespaces, TUN, nftables)" >&2
    return 1
  fi
  local missing=()
  for p in "${ZLMESH_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "zlmesh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  command -v go >/dev/null || { echo "zlmesh: Go is not on PATH (expected /usr/local/go/bin)" >&2; return 1; }
}

package tun

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.zx2c4.com/wireguard/tun/netstack"
)

// CreateNetstack makes a userspace device: a gVisor TCP/IP stack that owns
// addrs (at least one; IPv4 and/or IPv6) and routes everything else to the
// device, so packets its sockets send come out of Read and packets given to
// Write reach its sockets. mtu <= 0 means DefaultMTU; otherwise
// MinMTU..MaxMTU. The returned Net dials and listens inside that stack
// (net.Conn and net.Listener values); it has no DNS servers, so Net's
// name lookups fail and callers dial addresses.
//
// It is pure Go and works on every platform and without privileges. The
// caller owns the device and must Close it; after Close, the Net's
// connections fail.
func CreateNetstack(addrs []netip.Addr, mtu int) (Device, *netstack.Net, error) {
	if len(addrs) == 0 {
		return nil, nil, errors.New("create netstack: no addresses")
	}
	for _, a := range addrs {
		if !a.IsValid() || a.Is4In6() || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			return nil, nil, fmt.Errorf("create netstack: address %s is not a unicast IPv4 or IPv6 address", a)
		}
	}
	mtu, err := checkMTU(mtu)
	if err != nil {
		return nil, nil, fmt.Errorf("create netstack: %w", err)
	}
	dev, tnet, err := netstack.CreateNetTUN(addrs, nil, mtu)
	if err != nil {
		return nil, nil, fmt.Errorf("create netstack %v: %w", addrs, err)
	}
	return dev, tnet, nil
}

package tun

import (
	"fmt"
	"net/netip"
)

// LoopbackName is the interface HoldLocal puts addresses on.
const LoopbackName = "lo"

// HoldLocal makes addr a local address of the host (a full-length prefix on
// the loopback interface), so that packets to it from anywhere the host
// routes (its containers' bridges included) are delivered to the host's own
// sockets: the mesh DNS address is served this way in kernel mode, without
// crossing the TUN. It is idempotent: an address already there is success.
//
// Linux: through netlink, in the network namespace of the calling OS
// thread. Elsewhere: ErrUnsupported.
func HoldLocal(addr netip.Addr) error {
	p := netip.PrefixFrom(addr, addr.BitLen())
	if err := checkAddress(p); err != nil {
		return fmt.Errorf("hold local address %s: %w", addr, err)
	}
	return holdLocal(p)
}

// ReleaseLocal removes an address HoldLocal put on the loopback interface.
// It is idempotent: an address not there is success.
func ReleaseLocal(addr netip.Addr) error {
	p := netip.PrefixFrom(addr, addr.BitLen())
	if err := checkAddress(p); err != nil {
		return fmt.Errorf("release local address %s: %w", addr, err)
	}
	return releaseLocal(p)
}

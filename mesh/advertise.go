package mesh

// The address a node advertises when it is not told one.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	sockaddr "github.com/hashicorp/go-sockaddr"
)

// ErrNoAdvertiseAddr is returned by Start when Config.AdvertiseAddr is
// empty, BindAddr is an unspecified address, and the host has no address to
// advertise (see Config.AdvertiseAddr).
var ErrNoAdvertiseAddr = errors.New("no address to advertise")

// unspecifiedBind reports whether a BindAddr listens on every address: ""
// (the default), 0.0.0.0 or ::. Go opens one dual-stack socket for either
// unspecified address where the system has IPv6, so gossip bound to
// 0.0.0.0 also answers on IPv6 addresses.
func unspecifiedBind(bind string) bool {
	if bind == "" {
		return true
	}
	a, err := netip.ParseAddr(bind)
	return err == nil && a.IsUnspecified()
}

// defaultAdvertiseAddr picks the address to advertise for a node bound to
// every address: memberlist's own choice (the first RFC 6890 "private"
// address of an up interface, the default route's interface and IPv4
// first, which includes IPv6 ULA and documentation addresses), else, on a
// host that only has global IPv6 addresses, the first of those.
func defaultAdvertiseAddr() (netip.Addr, error) {
	private, err := sockaddr.GetPrivateIP()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list interface addresses: %w", err)
	}
	addrs, err := interfaceAddrs()
	if err != nil {
		return netip.Addr{}, err
	}
	return pickAdvertiseAddr(private, addrs)
}

// pickAdvertiseAddr is defaultAdvertiseAddr's rule over its inputs:
// private, memberlist's pick ("" for none), and addrs, the addresses of the
// up, non-loopback interfaces in interface order.
func pickAdvertiseAddr(private string, addrs []netip.Addr) (netip.Addr, error) {
	if private != "" {
		a, err := netip.ParseAddr(private)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("private address %q: %w", private, err)
		}
		return a.Unmap(), nil
	}
	for _, a := range addrs {
		if a.Is6() && !a.Is4In6() && a.IsGlobalUnicast() {
			return a.WithZone(""), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: no private address and no global IPv6 address on an up interface", ErrNoAdvertiseAddr)
}

// interfaceAddrs returns the addresses of the up, non-loopback interfaces.
func interfaceAddrs() ([]netip.Addr, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []netip.Addr
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		as, err := ifc.Addrs()
		if err != nil {
			continue // gone meanwhile
		}
		for _, a := range as {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					out = append(out, ip.Unmap())
				}
			}
		}
	}
	return out, nil
}

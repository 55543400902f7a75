//go:build !linux && !windows

package tun

import (
	"fmt"
	"net/netip"
)

// create: no kernel TUN support here; use CreateNetstack.
func create(name string, _ int) (Device, error) {
	return nil, fmt.Errorf("create tun %s: %w", name, ErrUnsupported)
}

func setAddress(ifname string, addr netip.Prefix) error {
	return fmt.Errorf("set address %s on %s: %w", addr, ifname, ErrUnsupported)
}

func setRoutes(ifname string, _ []netip.Prefix) error {
	return fmt.Errorf("set routes on %s: %w", ifname, ErrUnsupported)
}

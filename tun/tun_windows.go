//go:build windows

package tun

import (
	"fmt"
	"net/netip"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// create makes a Wintun adapter through wireguard-go.
func create(name string, mtu int) (Device, error) {
	dev, err := wgtun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create wintun %s: %w", name, err)
	}
	return dev, nil
}

// setAddress needs winipcfg (wireguard-windows), not a dependency yet.
func setAddress(ifname string, addr netip.Prefix) error {
	return fmt.Errorf("set address %s on %s: needs winipcfg: %w", addr, ifname, ErrUnsupported)
}

// setRoutes needs winipcfg (wireguard-windows), not a dependency yet.
func setRoutes(ifname string, _ []netip.Prefix) error {
	return fmt.Errorf("set routes on %s: needs winipcfg: %w", ifname, ErrUnsupported)
}

//go:build windows

package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/zlmesh/zlmesh/tun/winip"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// create makes a Wintun adapter through wireguard-go and gives its IP
// interfaces the MTU (wireguard-go only reports the MTU it was given; the
// IP stack keeps its own, which is what packets are cut to).
func create(name string, mtu int) (Device, error) {
	dev, err := wgtun.CreateTUN(name, mtu)
	if err != nil {
		if strings.Contains(err.Error(), "wintun.dll") {
			// No driver DLL: wireguard-go says "Error loading
			// wintun.dll DLL: Unable to load library ...".
			return nil, fmt.Errorf("create wintun %s: %v (put wintun.dll from wintun.net next to zlmesh.exe): %w", name, err, ErrNoTUN)
		}
		return nil, fmt.Errorf("create wintun %s: %w", name, err)
	}
	native, ok := dev.(*wgtun.NativeTun)
	if !ok {
		dev.Close()
		return nil, fmt.Errorf("create wintun %s: unexpected device type %T", name, dev)
	}
	h := winip.System()
	if err := winip.SetMTU(h, winip.LUID(native.LUID()), mtu); err != nil {
		dev.Close()
		return nil, fmt.Errorf("create wintun %s: %w", name, err)
	}
	return &wintun{Device: dev, name: name, ip: h}, nil
}

// wintun is the Wintun device; Close takes zlmesh's routes and addresses
// off the adapter before removing it.
type wintun struct {
	Device
	name string
	ip   winip.IPHelper
}

func (w *wintun) Close() error {
	cerr := winip.Cleanup(w.ip, w.name)
	err := w.Device.Close()
	if cerr != nil {
		return errors.Join(err, cerr)
	}
	return err
}

// setAddress sets the address through the IP Helper API (package winip).
func setAddress(ifname string, addr netip.Prefix) error {
	return winip.SetAddress(winip.System(), ifname, addr)
}

// setRoutes sets zlmesh's routes through the IP Helper API (package winip):
// on-link, with RouteMetric; every static route through the adapter is
// zlmesh's.
func setRoutes(ifname string, want []netip.Prefix) error {
	return winip.SetRoutes(winip.System(), ifname, want, RouteMetric)
}

package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func localAddr(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
}

func holdLocal(p netip.Prefix) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("hold local address %s: netlink: %w", p.Addr(), err)
	}
	defer h.Close()
	lo, err := linkByName(h, LoopbackName)
	if err != nil {
		return fmt.Errorf("hold local address %s: %w", p.Addr(), err)
	}
	if err := h.AddrAdd(lo, localAddr(p)); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("hold local address %s on %s: %w", p.Addr(), LoopbackName, err)
	}
	return nil
}

func releaseLocal(p netip.Prefix) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("release local address %s: netlink: %w", p.Addr(), err)
	}
	defer h.Close()
	lo, err := linkByName(h, LoopbackName)
	if err != nil {
		return fmt.Errorf("release local address %s: %w", p.Addr(), err)
	}
	if err := h.AddrDel(lo, localAddr(p)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("release local address %s on %s: %w", p.Addr(), LoopbackName, err)
	}
	return nil
}

//go:build !linux

package tun

import (
	"fmt"
	"net/netip"
)

func holdLocal(p netip.Prefix) error {
	return fmt.Errorf("hold local address %s: %w", p.Addr(), ErrUnsupported)
}

func releaseLocal(p netip.Prefix) error {
	return fmt.Errorf("release local address %s: %w", p.Addr(), ErrUnsupported)
}

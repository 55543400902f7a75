//go:build !windows

package winip

import (
	"fmt"
	"net/netip"
)

// System returns the IP Helper API of this machine: off Windows a helper
// whose every call fails with ErrUnsupported.
func System() IPHelper { return noHelper{} }

type noHelper struct{}

func (noHelper) LUID(name string) (LUID, error) {
	return 0, fmt.Errorf("interface %q: %w", name, ErrUnsupported)
}
func (noHelper) Addresses(LUID) ([]netip.Prefix, error) { return nil, ErrUnsupported }
func (noHelper) AddAddress(LUID, netip.Prefix) error    { return ErrUnsupported }
func (noHelper) DeleteAddress(LUID, netip.Prefix) error { return ErrUnsupported }
func (noHelper) Routes(LUID) ([]Route, error)           { return nil, ErrUnsupported }
func (noHelper) AddRoute(LUID, Route) error             { return ErrUnsupported }
func (noHelper) DeleteRoute(LUID, Route) error          { return ErrUnsupported }
func (noHelper) SetInterface(LUID, bool, int) error     { return ErrUnsupported }

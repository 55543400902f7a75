// Package winiptest is an in-memory winip.IPHelper for tests on every
// platform: interfaces with addresses, routes and per-family MTUs, a log
// of the changes made, and injectable failures.
package winiptest

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/zlmesh/zlmesh/tun/winip"
)

// Iface is one fake interface.
type Iface struct {
	LUID      winip.LUID
	Addresses []netip.Prefix
	Routes    []winip.Route
	// MTU per family (index 0 IPv4, 1 IPv6); 0 means never set.
	MTU [2]int
	// NoIPv6 makes SetInterface(ipv6=true) fail with
	// winip.ErrFamilyUnavailable, like a host with IPv6 switched off.
	NoIPv6 bool
}

// Fake is a winip.IPHelper in memory. It behaves as Windows does where the
// logic depends on it: an address is keyed by its address alone (adding
// one that exists fails), a route by destination and next hop (adding one
// that exists fails), deleting what is not there fails. Safe for
// concurrent use.
type Fake struct {
	mu     sync.Mutex
	ifaces map[string]*Iface
	// Changes lists every successful mutation, e.g. "add-address
	// 10.0.0.1/24", "delete-route 10.1.0.0/16", "set-interface v4 1420".
	Changes []string
	// Fail, when it returns an error for an operation name ("luid",
	// "addresses", "add-address", "delete-address", "routes",
	// "add-route", "delete-route", "set-interface"), makes that call
	// fail with it.
	Fail func(op string) error
}

var _ winip.IPHelper = (*Fake)(nil)

// New returns a fake without interfaces.
func New() *Fake { return &Fake{ifaces: map[string]*Iface{}} }

// AddInterface adds an interface named name and returns it; the caller may
// preset its addresses and routes (before using the fake concurrently).
func (f *Fake) AddInterface(name string) *Iface {
	f.mu.Lock()
	defer f.mu.Unlock()
	it := &Iface{LUID: winip.LUID(0x1000 + len(f.ifaces))}
	f.ifaces[name] = it
	return it
}

// RemoveInterface drops an interface, as closing a Wintun adapter does.
func (f *Fake) RemoveInterface(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ifaces, name)
}

// Interface returns a copy of the named interface's state.
func (f *Fake) Interface(name string) (Iface, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	it, ok := f.ifaces[name]
	if !ok {
		return Iface{}, false
	}
	c := *it
	c.Addresses = slices.Clone(it.Addresses)
	c.Routes = slices.Clone(it.Routes)
	return c, true
}

// ResetChanges empties Changes.
func (f *Fake) ResetChanges() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Changes = nil
}

func (f *Fake) fail(op string) error {
	if f.Fail == nil {
		return nil
	}
	return f.Fail(op)
}

func (f *Fake) byLUID(luid winip.LUID) (*Iface, error) {
	for _, it := range f.ifaces {
		if it.LUID == luid {
			return it, nil
		}
	}
	return nil, fmt.Errorf("interface %#x: %w", uint64(luid), winip.ErrLinkNotFound)
}

func (f *Fake) LUID(name string) (winip.LUID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("luid"); err != nil {
		return 0, err
	}
	it, ok := f.ifaces[name]
	if !ok {
		return 0, fmt.Errorf("interface %q: %w", name, winip.ErrLinkNotFound)
	}
	return it.LUID, nil
}

func (f *Fake) Addresses(luid winip.LUID) ([]netip.Prefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("addresses"); err != nil {
		return nil, err
	}
	it, err := f.byLUID(luid)
	if err != nil {
		return nil, err
	}
	return slices.Clone(it.Addresses), nil
}

func (f *Fake) AddAddress(luid winip.LUID, addr netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("add-address"); err != nil {
		return err
	}
	it, err := f.byLUID(luid)
	if err != nil {
		return err
	}
	for _, a := range it.Addresses {
		if a.Addr() == addr.Addr() {
			return fmt.Errorf("add address %s: exists (ERROR_OBJECT_ALREADY_EXISTS)", addr)
		}
	}
	it.Addresses = append(it.Addresses, addr)
	f.Changes = append(f.Changes, "add-address "+addr.String())
	return nil
}

func (f *Fake) DeleteAddress(luid winip.LUID, addr netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("delete-address"); err != nil {
		return err
	}
	it, err := f.byLUID(luid)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(it.Addresses, func(a netip.Prefix) bool { return a.Addr() == addr.Addr() })
	if i < 0 {
		return fmt.Errorf("delete address %s: not found (ERROR_NOT_FOUND)", addr)
	}
	it.Addresses = slices.Delete(it.Addresses, i, i+1)
	f.Changes = append(f.Changes, "delete-address "+addr.String())
	return nil
}

func (f *Fake) Routes(luid winip.LUID) ([]winip.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("routes"); err != nil {
		return nil, err
	}
	it, err := f.byLUID(luid)
	if err != nil {
		return nil, err
	}
	return slices.Clone(it.Routes), nil
}

func sameRoute(a, b winip.Route) bool {
	nh := func(x netip.Addr) netip.Addr {
		if x.IsValid() && x.IsUnspecified() {
			return netip.Addr{}
		}
		return x
	}
	return a.Dst == b.Dst && nh(a.NextHop) == nh(b.NextHop)
}

func (f *Fake) AddRoute(luid winip.LUID, r winip.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("add-route"); err != nil {
		return err
	}
	it, err := f.byLUID(luid)
	if err != nil {
		return err
	}
	for _, x := range it.Routes {
		if sameRoute(x, r) {
			return fmt.Errorf("add route %s: exists (ERROR_OBJECT_ALREADY_EXISTS)", r.Dst)
		}
	}
	r.Static = true
	it.Routes = append(it.Routes, r)
	f.Changes = append(f.Changes, fmt.Sprintf("add-route %s metric %d", r.Dst, r.Metric))
	return nil
}

func (f *Fake) DeleteRoute(luid winip.LUID, r winip.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("delete-route"); err != nil {
		return err
	}
	it, err := f.byLUID(luid)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(it.Routes, func(x winip.Route) bool { return sameRoute(x, r) })
	if i < 0 {
		return fmt.Errorf("delete route %s: not found (ERROR_NOT_FOUND)", r.Dst)
	}
	it.Routes = slices.Delete(it.Routes, i, i+1)
	f.Changes = append(f.Changes, "delete-route "+r.Dst.String())
	return nil
}

func (f *Fake) SetInterface(luid winip.LUID, ipv6 bool, mtu int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("set-interface"); err != nil {
		return err
	}
	it, err := f.byLUID(luid)
	if err != nil {
		return err
	}
	fam, v := 0, "v4"
	if ipv6 {
		if it.NoIPv6 {
			return fmt.Errorf("ip interface %#x: %w", uint64(luid), winip.ErrFamilyUnavailable)
		}
		fam, v = 1, "v6"
	}
	if it.MTU[fam] == mtu {
		return nil
	}
	it.MTU[fam] = mtu
	f.Changes = append(f.Changes, fmt.Sprintf("set-interface %s %d", v, mtu))
	return nil
}

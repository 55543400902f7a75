// Package winip configures the IP side of the node's Wintun adapter on
// Windows: its addresses, its MTU and the routes zlmesh owns through it,
// declaratively (read what is there, change only the difference), so that
// applying the same configuration again, after a restart too, changes
// nothing.
//
// The Windows calls (the IP Helper API, through wireguard-windows'
// winipcfg) sit behind the IPHelper interface: System returns the real one
// on Windows (ErrUnsupported elsewhere), and package winiptest has a fake
// in memory that runs on every platform, which is what the logic here is
// tested against. Under Wine the real helper reads work but every
// create/set/delete panics (iphlpapi functions Wine lacks), so the tests
// that mutate skip themselves there.
//
// Ownership: the Wintun adapter is made by zlmesh (tun.Create) and removed
// when zlmesh closes it, so every static route through it is zlmesh's
// (Windows has no rtm_protocol to mark routes with, unlike Linux). The
// routes Windows makes itself for the adapter (the connected prefix, host,
// broadcast and multicast routes) are not static and are never touched,
// and neither are IPv6 link-local addresses.
package winip

import (
	"errors"
	"fmt"
	"net/netip"
)

// LUID is an interface's locally unique identifier (NET_LUID).
type LUID uint64

// Route is one route through an interface.
type Route struct {
	// Dst is the destination prefix (canonical: no host bits).
	Dst netip.Prefix
	// NextHop is the gateway; the zero Addr (or an unspecified address)
	// means on-link, which is the only kind zlmesh installs.
	NextHop netip.Addr
	// Metric is the route's own metric (Windows adds the interface
	// metric to it).
	Metric uint32
	// Static is true for a route made through the API or by an operator
	// (protocol MIB_IPPROTO_NETMGMT), false for the routes Windows makes
	// itself for the interface's addresses (MIB_IPPROTO_LOCAL) and the
	// like. Only static routes are ever changed here.
	Static bool
}

// IPHelper is the part of Windows' IP Helper API this package uses, on one
// interface named by its LUID. Implementations: System (Windows) and
// winiptest.Fake. Methods may be called from any goroutine, one at a time
// (the functions here serialize nothing; the caller does).
type IPHelper interface {
	// LUID returns the LUID of the interface whose alias (the name shown
	// by `netsh interface show interface`, the Wintun adapter's name) is
	// name; the error wraps ErrLinkNotFound when there is none.
	LUID(name string) (LUID, error)
	// Addresses lists the interface's unicast addresses, both families,
	// link-local ones included, with their on-link prefix length.
	Addresses(luid LUID) ([]netip.Prefix, error)
	// AddAddress adds a unicast address (preferred at once: no duplicate
	// address detection) with its on-link prefix length.
	AddAddress(luid LUID, addr netip.Prefix) error
	// DeleteAddress removes a unicast address; its prefix length is
	// ignored.
	DeleteAddress(luid LUID, addr netip.Prefix) error
	// Routes lists the routes through the interface, both families.
	Routes(luid LUID) ([]Route, error)
	// AddRoute adds a static route through the interface.
	AddRoute(luid LUID, r Route) error
	// DeleteRoute removes the route (luid, r.Dst, r.NextHop).
	DeleteRoute(luid LUID, r Route) error
	// SetInterface sets the MTU of the interface's IPv4 (ipv6 false) or
	// IPv6 IP interface and turns off duplicate address detection and
	// router discovery on it (a point-to-point tunnel has no neighbours).
	// An error wrapping ErrFamilyUnavailable means the family is not
	// enabled on the interface (IPv6 switched off on the host).
	SetInterface(luid LUID, ipv6 bool, mtu int) error
}

// Sentinel errors, wrapped with the operation and the object.
var (
	// ErrUnsupported is what System's helper returns off Windows.
	ErrUnsupported = errors.New("not supported on this platform")
	// ErrLinkNotFound: no interface has that name.
	ErrLinkNotFound = errors.New("no such interface")
	// ErrFamilyUnavailable: the interface has no IP interface of that
	// family (see IPHelper.SetInterface).
	ErrFamilyUnavailable = errors.New("address family not enabled on the interface")
)

// SetMTU sets the interface's MTU for IPv4 and, when the host has it,
// IPv6 (see IPHelper.SetInterface). Idempotent.
func SetMTU(h IPHelper, luid LUID, mtu int) error {
	if err := h.SetInterface(luid, false, mtu); err != nil {
		return fmt.Errorf("set mtu %d on interface %#x (IPv4): %w", mtu, uint64(luid), err)
	}
	if err := h.SetInterface(luid, true, mtu); err != nil && !errors.Is(err, ErrFamilyUnavailable) {
		return fmt.Errorf("set mtu %d on interface %#x (IPv6): %w", mtu, uint64(luid), err)
	}
	return nil
}

// SetAddress makes addr the only address of its family on the interface
// named ifname (IPv6 link-local addresses are left alone); an address
// already there with another prefix length is replaced. addr must already
// be valid for an interface (tun.SetAddress checks it). Idempotent: with
// the address in place it changes nothing.
func SetAddress(h IPHelper, ifname string, addr netip.Prefix) error {
	fail := func(step string, err error) error {
		if step == "" {
			return fmt.Errorf("set address %s on %s: %w", addr, ifname, err)
		}
		return fmt.Errorf("set address %s on %s: %s: %w", addr, ifname, step, err)
	}
	luid, err := h.LUID(ifname)
	if err != nil {
		return fail("", err)
	}
	have, err := h.Addresses(luid)
	if err != nil {
		return fail("list addresses", err)
	}
	present := false
	for _, a := range have {
		switch {
		case a.Addr().Is4() != addr.Addr().Is4():
		case a.Addr().Is6() && a.Addr().IsLinkLocalUnicast():
		case a == addr:
			present = true
		default:
			// Another address of the family, or ours with another
			// prefix length (Windows keys addresses by address only).
			if err := h.DeleteAddress(luid, a); err != nil {
				return fail("remove "+a.String(), err)
			}
		}
	}
	if !present {
		if err := h.AddAddress(luid, addr); err != nil {
			return fail("add", err)
		}
	}
	return nil
}

// SetRoutes makes want exactly the set of static routes through the
// interface named ifname: each as an on-link route with metric; missing
// ones are added (unless Windows' own on-link route for the adapter's
// prefix is that destination already), ones with another metric or a next hop are replaced,
// static routes not wanted are deleted, and the routes Windows manages
// (not Static) are never touched. want must be canonical and free of
// duplicates (tun.SetRoutes checks it). Idempotent; want nil removes every
// static route through the interface.
func SetRoutes(h IPHelper, ifname string, want []netip.Prefix, metric uint32) error {
	fail := func(step string, err error) error {
		if step == "" {
			return fmt.Errorf("set routes on %s: %w", ifname, err)
		}
		return fmt.Errorf("set routes on %s: %s: %w", ifname, step, err)
	}
	luid, err := h.LUID(ifname)
	if err != nil {
		return fail("", err)
	}
	have, err := h.Routes(luid)
	if err != nil {
		return fail("list routes", err)
	}
	wanted := make(map[netip.Prefix]bool, len(want))
	for _, p := range want {
		wanted[p] = true
	}
	ok := make(map[netip.Prefix]bool, len(want))
	var del []Route
	for _, r := range have {
		if !r.Static {
			// Windows' own on-link route for the adapter's prefix
			// already sends a wanted destination here, and it has the
			// key (destination, next hop) a route of ours would have:
			// adding one would fail with "exists".
			if wanted[r.Dst] && onLink(r.NextHop) {
				ok[r.Dst] = true
			}
			continue
		}
		if wanted[r.Dst] && !ok[r.Dst] && r.Metric == metric && onLink(r.NextHop) {
			ok[r.Dst] = true
			continue
		}
		del = append(del, r)
	}
	// Delete first: a route to a wanted prefix with another metric or
	// next hop would otherwise stand in the way of the new one.
	for _, r := range del {
		if err := h.DeleteRoute(luid, r); err != nil {
			return fail("delete "+r.Dst.String(), err)
		}
	}
	for _, p := range want {
		if ok[p] {
			continue
		}
		if err := h.AddRoute(luid, Route{Dst: p, Metric: metric, Static: true}); err != nil {
			return fail("add "+p.String(), err)
		}
	}
	return nil
}

// Cleanup removes what SetAddress and SetRoutes made on the interface: its
// static routes and its addresses other than IPv6 link-local ones. It is
// for stopping (closing the adapter removes them too; Cleanup makes the
// order explicit and leaves nothing when the adapter outlives the
// process). An interface that is gone already is not an error.
func Cleanup(h IPHelper, ifname string) error {
	if err := SetRoutes(h, ifname, nil, 0); err != nil {
		if errors.Is(err, ErrLinkNotFound) {
			return nil
		}
		return fmt.Errorf("clean up %s: %w", ifname, err)
	}
	luid, err := h.LUID(ifname)
	if err != nil {
		if errors.Is(err, ErrLinkNotFound) {
			return nil
		}
		return fmt.Errorf("clean up %s: %w", ifname, err)
	}
	have, err := h.Addresses(luid)
	if err != nil {
		return fmt.Errorf("clean up %s: list addresses: %w", ifname, err)
	}
	for _, a := range have {
		if a.Addr().Is6() && a.Addr().IsLinkLocalUnicast() {
			continue
		}
		if err := h.DeleteAddress(luid, a); err != nil {
			return fmt.Errorf("clean up %s: remove %s: %w", ifname, a, err)
		}
	}
	return nil
}

// onLink reports whether a next hop means "on-link".
func onLink(nh netip.Addr) bool { return !nh.IsValid() || nh.IsUnspecified() }

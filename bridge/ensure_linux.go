//go:build linux

package bridge

// The idempotent ensure-steps that Attach, Adopt and Readdress share (the
// CNI bridge plugin's ensureBridge / SetupVeth shape): each makes one object
// what the Spec asks, reading first and changing only what differs, and
// returns one short sentence per change. Attach passes fresh=true for the
// objects it has just made, which skips the reads.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ensureBridge makes the bridge of service exist as it should: a bridge with
// the service's alias, STP off, ICMP redirects off, the MTU (when mtu > 0),
// exactly the gateways gws as addresses (one per family; IPv6 link-local
// ones the kernel made aside, and the gateway of a family gws lacks kept for
// the containers of the bridge that have it), up. It returns the bridge, whether it created it (the link is
// returned even on a later error so the caller can delete it) and what it
// had to fix on an existing one. The caller holds the bridge's lock.
func (sys *system) ensureBridge(service string, gws []netip.Prefix, mtu int) (netlink.Link, bool, []string, error) {
	name := BridgeName(service)
	alias := serviceAliasPrefix + service
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU, la.Alias = name, mtu, alias
	created := true
	if err := sys.nl.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		if !errors.Is(err, unix.EEXIST) {
			return nil, false, nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		created = false
	}
	br, err := sys.nl.LinkByName(name)
	if err != nil {
		if created {
			err = errors.Join(err, sys.delLinkByName(name))
		}
		return nil, false, nil, fmt.Errorf("look up bridge %s: %w", name, err)
	}
	var repairs []string
	fail := func(err error) (netlink.Link, bool, []string, error) { return br, created, repairs, err }
	if !created {
		if br.Type() != "bridge" {
			return nil, false, nil, fmt.Errorf("link %s exists and is a %s, not a bridge: %w", name, br.Type(), ErrExists)
		}
		switch a := br.Attrs().Alias; {
		case a == alias:
		case strings.HasPrefix(a, serviceAliasPrefix):
			return nil, false, nil, fmt.Errorf("bridge %s belongs to service %q, not %q (name hash collision): %w",
				name, strings.TrimPrefix(a, serviceAliasPrefix), service, ErrExists)
		default:
			if err := sys.nl.LinkSetAlias(br, alias); err != nil {
				return fail(fmt.Errorf("set alias of bridge %s: %w", name, err))
			}
			repairs = append(repairs, fmt.Sprintf("bridge %s had alias %q: set %q", name, a, alias))
		}
		if mtu > 0 && br.Attrs().MTU != mtu {
			if err := sys.nl.LinkSetMTU(br, mtu); err != nil {
				return fail(fmt.Errorf("set mtu %d on bridge %s: %w", mtu, name, err))
			}
			repairs = append(repairs, fmt.Sprintf("bridge %s had mtu %d: set %d", name, br.Attrs().MTU, mtu))
		}
	} else if br.Attrs().Alias != alias {
		// Kernels that ignore IFLA_IFALIAS on creation.
		if err := sys.nl.LinkSetAlias(br, alias); err != nil {
			return fail(fmt.Errorf("set alias of bridge %s: %w", name, err))
		}
	}
	stp := uint32(1)
	if !created {
		if stp, err = sys.raw.stpState(br.Attrs().Index); err != nil {
			return fail(fmt.Errorf("read stp state of bridge %s: %w", name, err))
		}
	}
	if stp != 0 {
		// A new bridge starts with STP off; say so anyway, it costs one
		// request and does not depend on the kernel's default.
		if err := sys.raw.setSTP(br.Attrs().Index, false); err != nil {
			return fail(fmt.Errorf("turn stp off on bridge %s: %w", name, err))
		}
		if !created {
			repairs = append(repairs, fmt.Sprintf("bridge %s had stp on: turned off", name))
		}
	}
	// Redirects: see Config.Forwarding. A new device copies
	// net.ipv4.conf.default.send_redirects (1 unless the operator changed
	// it), so a new bridge is written too.
	wrote, err := sys.sysctl("net/ipv4/conf/"+name+"/send_redirects", "0")
	if err != nil {
		return fail(fmt.Errorf("bridge %s: %w", name, err))
	}
	if wrote && !created {
		repairs = append(repairs, fmt.Sprintf("bridge %s sent ICMP redirects: switched off", name))
	}
	for _, gw := range gws {
		fixed, err := exactAddress(sys, br, gw)
		if err != nil {
			return fail(fmt.Errorf("bridge %s: %w", name, err))
		}
		if !created {
			repairs = append(repairs, fixed...)
		}
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		if err := sys.nl.LinkSetUp(br); err != nil {
			return fail(fmt.Errorf("set bridge %s up: %w", name, err))
		}
		if !created {
			repairs = append(repairs, fmt.Sprintf("bridge %s was down: set up", name))
		}
	}
	return br, created, repairs, nil
}

// exactAddress makes want the only address of link, IPv6 link-local
// addresses the kernel made aside, and the other family's gateway too (a
// dual-stack bridge holds both): the flush-before-add that keeps a bridge
// surviving from an earlier life (say, a /27 gateway of the previous
// release) from carrying two gateways. Stale addresses overlapping want go
// first (deleting an IPv4 primary also deletes its secondaries unless
// promote_secondaries is set, and want could be one); then want is added;
// then the other stale ones go, so the link is never without an address
// longer than necessary. It returns one line per change.
func exactAddress(sys *system, link netlink.Link, want netip.Prefix) ([]string, error) {
	addrs, err := sys.raw.addrs(link.Attrs().Index, unix.AF_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	var have bool
	var near, far []netip.Prefix
	for _, p := range addrs {
		switch {
		case p == want:
			have = true
		case kernelLinkLocal(p), isGateway(p) && p.Addr().Is4() != want.Addr().Is4():
		case p.Addr().Is4() == want.Addr().Is4() && p.Masked().Overlaps(want.Masked()):
			near = append(near, p)
		default:
			far = append(far, p)
		}
	}
	var changes []string
	del := func(list []netip.Prefix) error {
		for _, p := range list {
			if err := sys.nl.AddrDel(link, &netlink.Addr{IPNet: prefixNet(p)}); err != nil && !gone(err) {
				return fmt.Errorf("delete stale address %s: %w", p, err)
			}
			changes = append(changes, fmt.Sprintf("%s had stale address %s: removed", link.Attrs().Name, p))
		}
		return nil
	}
	if err := del(near); err != nil {
		return changes, err
	}
	if !have || len(near) > 0 {
		if err := sys.nl.AddrAdd(link, toNLAddr(want)); err != nil && !errors.Is(err, unix.EEXIST) {
			return changes, fmt.Errorf("add address %s: %w", want, err)
		}
		changes = append(changes, fmt.Sprintf("%s lacked address %s: added", link.Attrs().Name, want))
	}
	return changes, del(far)
}

// ensureContainerSide makes the container end inner (s's Ifname, inside t)
// what s asks: the MTU, exactly s.Address and s.Address6 (ensureContainerAddr),
// lo up, inner up, per family a link-scope route to the gateway and the
// default route via it, onlink (ensureContainerRoutes).
//
// fresh says the caller has just made inner with the MTU (down, no
// addresses, no routes): nothing is read, the routes are added exclusively
// so that a default route (or route to the gateway) the namespace already
// has is ErrExists, and bringing lo up is pushed on undo. Otherwise what is
// there is read first, only what differs is changed, routes are replaced,
// and a line per change is returned. Steps stepInside and stepRoute run
// their hooks.
func (sys *system) ensureContainerSide(ctx context.Context, t *target, s Spec, inner netlink.Link, fresh bool, undo *undoList) ([]string, error) {
	ifname := s.ifname()
	var repairs []string
	if err := sys.step(ctx, stepInside); err != nil {
		return nil, err
	}
	if !fresh && s.MTU > 0 && inner.Attrs().MTU != s.MTU {
		if err := t.nl.LinkSetMTU(inner, s.MTU); err != nil {
			return repairs, fmt.Errorf("set mtu of %s in netns %s: %w", ifname, t.path, err)
		}
		repairs = append(repairs, fmt.Sprintf("%s had mtu %d: set %d", ifname, inner.Attrs().MTU, s.MTU))
	}

	// The addresses, and for IPv6: redirects, router advertisements.
	for _, a := range s.addrs() {
		fixed, err := ensureContainerAddr(t, inner, ifname, a.addr, fresh)
		repairs = append(repairs, fixed...)
		if err != nil {
			return repairs, err
		}
	}
	// lo and the link.
	lo, err := t.nl.LinkByName("lo")
	if err != nil {
		return repairs, fmt.Errorf("look up lo in netns %s: %w", t.path, err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		if err := t.nl.LinkSetUp(lo); err != nil {
			return repairs, fmt.Errorf("set lo up in netns %s: %w", t.path, err)
		}
		if fresh {
			undo.push("set lo up", func() error { return t.nl.LinkSetDown(lo) })
		} else {
			repairs = append(repairs, "lo was down: set up")
		}
	}
	if fresh || inner.Attrs().Flags&net.FlagUp == 0 {
		if err := t.nl.LinkSetUp(inner); err != nil {
			return repairs, fmt.Errorf("set %s up in netns %s: %w", ifname, t.path, err)
		}
		if !fresh {
			repairs = append(repairs, fmt.Sprintf("%s was down: set up", ifname))
		}
	}

	// The routes. They go with the link if a later step of an attach
	// fails.
	if err := sys.step(ctx, stepRoute); err != nil {
		return repairs, err
	}
	for _, a := range s.addrs() {
		fixed, err := ensureContainerRoutes(t, inner, ifname, a, fresh)
		repairs = append(repairs, fixed...)
		if err != nil {
			return repairs, err
		}
	}
	return repairs, nil
}

// ensureContainerAddr makes addr the only address of its family on inner
// (Ifname in t), adding it before removing the others: an interface left
// without an IPv4 address loses its routes. For IPv6 the address is added
// without duplicate address detection (it would stall the container's
// first packets for a second), and Ifname ignores redirects (the host has
// no switch against sending them, see Config.Forwarding) and router
// advertisements (no SLAAC address or route besides the ones given). fresh:
// see ensureContainerSide.
func ensureContainerAddr(t *target, inner netlink.Link, ifname string, addr netip.Prefix, fresh bool) ([]string, error) {
	var repairs []string
	var have bool
	var stale []netip.Prefix
	if !fresh {
		addrs, err := retryDump(func() ([]netlink.Addr, error) { return t.nl.AddrList(inner, family(addr)) })
		if err != nil {
			return repairs, fmt.Errorf("list addresses of %s in netns %s: %w", ifname, t.path, err)
		}
		for _, a := range addrs {
			switch p := fromNLAddr(a); {
			case p == addr:
				have = true
			case !kernelLinkLocal(p):
				stale = append(stale, p)
			}
		}
	}
	if !have {
		if err := t.nl.AddrAdd(inner, toNLAddr(addr)); err != nil && (fresh || !errors.Is(err, unix.EEXIST)) {
			return repairs, fmt.Errorf("add address %s to %s in netns %s: %w", addr, ifname, t.path, err)
		}
		if !fresh {
			repairs = append(repairs, fmt.Sprintf("%s lacked address %s: added", ifname, addr))
		}
	}
	for _, p := range stale {
		if err := t.nl.AddrDel(inner, &netlink.Addr{IPNet: prefixNet(p)}); err != nil && !gone(err) {
			return repairs, fmt.Errorf("delete address %s of %s in netns %s: %w", p, ifname, t.path, err)
		}
		repairs = append(repairs, fmt.Sprintf("%s had stale address %s: removed", ifname, p))
	}
	if !addr.Addr().Is6() {
		return repairs, nil
	}
	for _, sw := range []struct{ key, what string }{
		{"accept_redirects", "accepted ICMPv6 redirects"},
		{"accept_ra", "accepted router advertisements"},
	} {
		wrote, err := sysctlIn(netns.NsHandle(t.fd), "net/ipv6/conf/"+ifname+"/"+sw.key, "0")
		if err != nil {
			return repairs, fmt.Errorf("netns %s: %w", t.path, err)
		}
		if wrote && !fresh {
			repairs = append(repairs, fmt.Sprintf("%s %s: switched off", ifname, sw.what))
		}
	}
	return repairs, nil
}

// ensureContainerRoutes makes the link-scope route to a.gw and the default
// route of a's family via it exist on inner. fresh: see ensureContainerSide.
func ensureContainerRoutes(t *target, inner netlink.Link, ifname string, a addrGW, fresh bool) ([]string, error) {
	index, gw := inner.Attrs().Index, a.gw
	want := []struct {
		route *netlink.Route
		what  string
		match func(netlink.Route) bool
	}{
		{gatewayRoute(index, gw), "route to the gateway " + gw.Addr().String(), func(r netlink.Route) bool {
			return r.Dst != nil && prefixFromNet(r.Dst) == gw && r.Gw == nil
		}},
		{defaultRoute(index, gw), "default route via " + gw.Addr().String(), func(r netlink.Route) bool {
			return isDefault(r) && r.Gw.Equal(gw.Addr().AsSlice())
		}},
	}
	var repairs []string
	var routes []netlink.Route
	if !fresh {
		var err error
		routes, err = retryDump(func() ([]netlink.Route, error) { return t.nl.RouteList(inner, family(a.addr)) })
		if err != nil {
			return repairs, fmt.Errorf("list routes of %s in netns %s: %w", ifname, t.path, err)
		}
	}
	for _, w := range want {
		if fresh {
			if err := t.nl.RouteAdd(w.route); err != nil {
				if errors.Is(err, unix.EEXIST) {
					err = fmt.Errorf("the namespace has one already: %w", ErrExists)
				}
				return repairs, fmt.Errorf("add %s in netns %s: %w", w.what, t.path, err)
			}
			continue
		}
		if slices.ContainsFunc(routes, w.match) {
			continue
		}
		if err := t.nl.RouteReplace(w.route); err != nil {
			return repairs, fmt.Errorf("set %s in netns %s: %w", w.what, t.path, err)
		}
		repairs = append(repairs, w.what+" was missing: set")
	}
	return repairs, nil
}

// ensureHostEnd makes the host veth host a port of br with the container's
// alias, up, hairpin mode on and the MTU. fresh says the caller has just
// made it (with the MTU): alias, master and up go in one request without
// reading. Otherwise what differs is changed and listed.
func (sys *system) ensureHostEnd(host, br netlink.Link, s Spec, fresh bool) ([]string, error) {
	name, alias := host.Attrs().Name, containerAliasPrefix+s.Container
	var repairs []string
	if !fresh {
		a := host.Attrs()
		if a.Alias != alias {
			repairs = append(repairs, fmt.Sprintf("host veth %s had alias %q: set %q", name, a.Alias, alias))
		}
		if a.MasterIndex != br.Attrs().Index {
			repairs = append(repairs, fmt.Sprintf("host veth %s was not a port of %s: enslaved", name, br.Attrs().Name))
		}
		if a.Flags&net.FlagUp == 0 {
			repairs = append(repairs, fmt.Sprintf("host veth %s was down: set up", name))
		}
	}
	if fresh {
		// No IPv6 link-local address (nor its routes) on a bridge port: it
		// needs none, and with one per container every link change of the
		// host walks an IPv6 route table that grows with the containers
		// (fib6_ifdown under addrconf_notify): attach at 1000 containers
		// measured 1.65x attach at 0 with them, 0.71x without.
		if err := sys.nl.LinkSetIP6AddrGenMode(host, addrGenModeNone); err != nil && !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EAFNOSUPPORT) {
			return nil, fmt.Errorf("no IPv6 address generation on %s: %w", name, err)
		}
	}
	if fresh || len(repairs) > 0 {
		if err := sys.raw.plugHostEnd(host.Attrs().Index, br.Attrs().Index, alias); err != nil {
			return nil, fmt.Errorf("enslave %s to %s and set it up: %w", name, br.Attrs().Name, err)
		}
	}
	// Hairpin: a container reaching itself through a published port (natd
	// DNATs it back to its own address) must get the packet back out of its
	// own bridge port, which the bridge only does with hairpin mode on.
	// Protinfo exists only once the link is a port, hence after the plug.
	hairpin := fresh
	if !fresh {
		pi, err := sys.nl.LinkGetProtinfo(host)
		hairpin = err != nil || !pi.Hairpin
	}
	if hairpin {
		if err := sys.nl.LinkSetHairpin(host, true); err != nil {
			return repairs, fmt.Errorf("hairpin mode on %s: %w", name, err)
		}
		if !fresh {
			repairs = append(repairs, fmt.Sprintf("host veth %s had hairpin mode off: set on", name))
		}
	}
	if !fresh && s.MTU > 0 && host.Attrs().MTU != s.MTU {
		if err := sys.nl.LinkSetMTU(host, s.MTU); err != nil {
			return repairs, fmt.Errorf("set mtu of %s: %w", name, err)
		}
		repairs = append(repairs, fmt.Sprintf("host veth %s had mtu %d: set %d", name, host.Attrs().MTU, s.MTU))
	}
	return repairs, nil
}

// gatewayRoute is the link-scope route to the gateway gw out of link index.
func gatewayRoute(index int, gw netip.Prefix) *netlink.Route {
	return &netlink.Route{LinkIndex: index, Dst: prefixNet(gw), Scope: netlink.SCOPE_LINK}
}

// defaultRoute is the default route via gw out of link index, onlink: it
// does not depend on the route to the gateway.
func defaultRoute(index int, gw netip.Prefix) *netlink.Route {
	bits := gw.Addr().BitLen()
	return &netlink.Route{
		LinkIndex: index,
		Dst:       &net.IPNet{IP: make(net.IP, bits/8), Mask: net.CIDRMask(0, bits)},
		Gw:        gw.Addr().AsSlice(),
		Flags:     int(netlink.FLAG_ONLINK),
	}
}

// addrGenModeNone is IN6_ADDR_GEN_MODE_NONE: the kernel gives the link no
// IPv6 link-local address.
const addrGenModeNone = 1

//go:build linux

package bridge

// Host routes (one per container: its address to its service's bridge,
// protocol RouteProtocol), the /proc/sys switches, and the guard against
// configuring the node's own namespace.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// hostRoute is the route of a container's address dst to the bridge index:
// `dst dev <bridge> scope link proto RouteProtocol`, main table.
func hostRoute(dst netip.Prefix, index int) *netlink.Route {
	return &netlink.Route{
		LinkIndex: index,
		Dst:       prefixNet(dst),
		Scope:     netlink.SCOPE_LINK,
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
	}
}

// ensureHostRoute makes dst route to the bridge br. It returns a line when
// it changed something, and how to undo that (nil when nothing changed):
// delete the route it added, or put back the one of ours it moved from
// another link (debris of a container whose Detach did not finish). A route
// to dst that is not ours is ErrExists. The common case, no route yet, is
// one request.
func (sys *system) ensureHostRoute(dst netip.Prefix, br netlink.Link) (string, func() error, error) {
	r := hostRoute(dst, br.Attrs().Index)
	err := sys.nl.RouteAdd(r)
	if err == nil {
		return fmt.Sprintf("host route %s dev %s was missing: added", dst, br.Attrs().Name),
			func() error { return sys.delHostRoute(dst, br.Attrs().Index) }, nil
	}
	if !errors.Is(err, unix.EEXIST) {
		return "", nil, fmt.Errorf("add host route %s dev %s: %w", dst, br.Attrs().Name, err)
	}
	existing, err := sys.routesTo(dst)
	if err != nil {
		return "", nil, err
	}
	from := 0
	for _, e := range existing {
		if e.Protocol != RouteProtocol {
			continue
		}
		// IPv6 routes have no scope (the kernel reports universe).
		if e.LinkIndex == br.Attrs().Index && e.Gw == nil && (e.Scope == netlink.SCOPE_LINK || dst.Addr().Is6()) {
			return "", nil, nil
		}
		from = e.LinkIndex
	}
	if from == 0 {
		var desc []string
		for _, e := range existing {
			desc = append(desc, fmt.Sprintf("proto %d dev index %d", e.Protocol, e.LinkIndex))
		}
		return "", nil, fmt.Errorf("host route to %s: one that is not zlmesh's is there (%s): %w", dst, strings.Join(desc, "; "), ErrExists)
	}
	if err := sys.nl.RouteReplace(r); err != nil {
		return "", nil, fmt.Errorf("replace host route %s dev %s: %w", dst, br.Attrs().Name, err)
	}
	return fmt.Sprintf("host route %s went out of link index %d: moved to %s", dst, from, br.Attrs().Name),
		func() error { return sys.nl.RouteReplace(hostRoute(dst, from)) }, nil
}

// routesTo lists the main table's routes whose destination is exactly dst,
// whatever their protocol or link.
func (sys *system) routesTo(dst netip.Prefix) ([]netlink.Route, error) {
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return sys.nl.RouteListFiltered(family(dst), &netlink.Route{Dst: prefixNet(dst), Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list host routes to %s: %w", dst, err)
	}
	return routes, nil
}

// delHostRoute deletes our route of dst to link index; gone is success. The
// kernel matches the link and the protocol, so it never deletes a route of
// dst elsewhere or not ours.
func (sys *system) delHostRoute(dst netip.Prefix, index int) error {
	if err := sys.nl.RouteDel(hostRoute(dst, index)); err != nil && !gone(err) {
		return fmt.Errorf("delete host route %s: %w", dst, err)
	}
	return nil
}

// hostRoutes lists every route of protocol RouteProtocol in the main table,
// both families, with the name of its link.
func (sys *system) hostRoutes(names map[int]string) ([]RouteInfo, error) {
	var out []RouteInfo
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := retryDump(func() ([]netlink.Route, error) {
			return sys.nl.RouteListFiltered(fam, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
		})
		if err != nil {
			return nil, fmt.Errorf("list routes of protocol %d: %w", RouteProtocol, err)
		}
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			out = append(out, RouteInfo{Dst: prefixFromNet(r.Dst), Bridge: names[r.LinkIndex]})
		}
	}
	slices.SortFunc(out, func(a, b RouteInfo) int {
		if c := a.Dst.Addr().Compare(b.Dst.Addr()); c != 0 {
			return c
		}
		return strings.Compare(a.Bridge, b.Bridge)
	})
	return out, nil
}

func (m *Manager) removeRoute(dst netip.Prefix) error {
	if !dst.IsValid() || !dst.IsSingleIP() || dst.Addr().Is4In6() {
		return fmt.Errorf("remove route %s: not a full-length prefix: %w", dst, ErrInvalid)
	}
	sys, release, err := m.acquire()
	if err != nil {
		return err
	}
	defer release()
	routes, err := sys.routesTo(dst)
	if err != nil {
		return fmt.Errorf("remove route: %w", err)
	}
	var foreign []string
	removed := 0
	for _, r := range routes {
		if r.Protocol != RouteProtocol {
			foreign = append(foreign, fmt.Sprintf("proto %d", r.Protocol))
			continue
		}
		if err := sys.delHostRoute(dst, r.LinkIndex); err != nil {
			return fmt.Errorf("remove route: %w", err)
		}
		removed++
	}
	if removed == 0 && len(foreign) > 0 {
		return fmt.Errorf("remove route %s: the routes there are not zlmesh's (%s): %w", dst, strings.Join(foreign, ", "), ErrInvalid)
	}
	if removed > 0 {
		m.log.Info("route removed", "dst", dst)
	}
	return nil
}

// sysctl makes the /proc/sys file key (e.g. "net/ipv4/ip_forward") hold
// want in the host namespace, reading first and writing only when it
// differs (writing net.ipv4.ip_forward, even the same value, resets every
// interface's forwarding flag). It reports whether it wrote.
func (sys *system) sysctl(key, want string) (bool, error) { return sysctlIn(sys.host, key, want) }

// sysctlIn is sysctl in the namespace ns (netns.None: the caller's).
func sysctlIn(ns netns.NsHandle, key, want string) (bool, error) {
	path := "/proc/sys/" + key
	wrote := false
	err := inNetns(ns, func() error {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		var b [16]byte
		n, err := f.Read(b[:])
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(b[:n])) == want {
			return nil
		}
		if _, err := f.WriteAt([]byte(want+"\n"), 0); err != nil {
			return err
		}
		wrote = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("set %s to %s: %w", path, want, err)
	}
	return wrote, nil
}

// forwarding switches IP forwarding on in the host namespace, once per
// family, and for IPv4 ICMP redirects off host-wide (see
// Config.Forwarding).
func (sys *system) forwarding(v6 bool) error {
	sys.fwd.Lock()
	defer sys.fwd.Unlock()
	done := &sys.fwd.v4
	keys := [][2]string{{"net/ipv4/ip_forward", "1"}, {"net/ipv4/conf/all/send_redirects", "0"}}
	if v6 {
		done, keys = &sys.fwd.v6, [][2]string{{"net/ipv6/conf/all/forwarding", "1"}}
	}
	if *done {
		return nil
	}
	for _, kv := range keys {
		wrote, err := sys.sysctl(kv[0], kv[1])
		if err != nil {
			return err
		}
		if wrote {
			sys.log.Info("host switch set", "sysctl", strings.ReplaceAll(kv[0], "/", "."), "value", kv[1])
		}
	}
	*done = true
	return nil
}

// checkGuard refuses (ErrInvalid) a target namespace that holds a link or
// an address Config.Guard names: the node's own namespace.
func (sys *system) checkGuard(t *target) error {
	for _, name := range sys.guard.Links {
		_, err := t.nl.LinkByName(name)
		if err == nil {
			return fmt.Errorf("netns %s holds link %s, which only the node's own namespace has (refusing to configure the node's namespace): %w", t.path, name, ErrInvalid)
		}
		if !gone(err) {
			return fmt.Errorf("look up %s in netns %s: %w", name, t.path, err)
		}
	}
	if len(sys.guard.Addrs) == 0 {
		return nil
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return t.nl.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list addresses in netns %s: %w", t.path, err)
	}
	for _, a := range addrs {
		p := fromNLAddr(a)
		if slices.Contains(sys.guard.Addrs, p.Addr()) {
			return fmt.Errorf("netns %s holds address %s, which only the node's own namespace has (refusing to configure the node's namespace): %w", t.path, p.Addr(), ErrInvalid)
		}
	}
	return nil
}

// prefixFromNet converts a netlink destination back (IPv4 ones unmapped).
func prefixFromNet(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, bits := n.Mask.Size()
	if bits == 32 {
		ip = ip.Unmap()
	}
	return netip.PrefixFrom(ip, ones)
}

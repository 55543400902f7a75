//go:build linux

package natd

import (
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/zlmesh/zlmesh/internal/nstest"
	"golang.org/x/sys/unix"
)

// dummy adds an up interface with an IPv6 address (no DAD) to ns: a veth
// whose peer (name+"p", up, no address) stays in ns too (kernels without
// the dummy driver have veth).
func dummy(t *testing.T, ns *nstest.NS, name, cidr string) netlink.Link {
	t.Helper()
	if err := ns.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
		t.Fatalf("add %s: %v", name, err)
	}
	l, err := ns.NL.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ns.NL.LinkByName(name + "p")
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.NL.LinkSetUp(p); err != nil {
		t.Fatal(err)
	}
	a := addr(cidr)
	a.Flags = unix.IFA_F_NODAD
	if err := ns.NL.AddrAdd(l, a); err != nil {
		t.Fatalf("address %s on %s: %v", cidr, name, err)
	}
	if err := ns.NL.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	return l
}

func TestHasIPv6Egress(t *testing.T) {
	ns := nstest.New(t, "zlt-natd")
	l := dummy(t, ns, "zlt-up0", "2001:db8:1::2/64")
	check := func(want bool, what string) {
		t.Helper()
		got, err := HasIPv6Egress(int(ns.Handle))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got != want {
			t.Errorf("%s: HasIPv6Egress = %v, want %v", what, got, want)
		}
	}
	check(false, "only a connected /64")
	// An IPv4 default route says nothing about IPv6.
	dummy4, _ := ns.NL.LinkByName("zlt-up0")
	if err := ns.NL.AddrAdd(dummy4, addr("192.0.2.2/24")); err != nil {
		t.Fatal(err)
	}
	if err := ns.NL.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("192.0.2.1")}); err != nil {
		t.Fatal(err)
	}
	check(false, "an IPv4 default route")
	unreachable := &netlink.Route{Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, Type: unix.RTN_UNREACHABLE, Table: unix.RT_TABLE_MAIN}
	if err := ns.NL.RouteAdd(unreachable); err != nil {
		t.Fatalf("add unreachable default: %v", err)
	}
	check(false, "an unreachable IPv6 default route")
	if err := ns.NL.RouteDel(unreachable); err != nil {
		t.Fatal(err)
	}
	if err := ns.NL.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("2001:db8:1::1")}); err != nil {
		t.Fatalf("add IPv6 default route: %v", err)
	}
	check(true, "an IPv6 default route")

	// 0 means the calling thread's namespace.
	if err := ns.Do(func() error {
		got, err := HasIPv6Egress(0)
		if err == nil && !got {
			t.Errorf("HasIPv6Egress(0) inside the namespace = false")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// TestApplySysctls6 checks that switching IPv6 forwarding on keeps a
// default route learned from router advertisements alive (accept_ra=2 on
// its interface) and leaves every other interface alone.
func TestApplySysctls6(t *testing.T) {
	ns := nstest.New(t, "zlt-natd")
	up := dummy(t, ns, "zlt-up0", "2001:db8:1::2/64")
	dummy(t, ns, "zlt-br0", "fd00:200:0:3::21/123")
	if err := ns.NL.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Gw: net.ParseIP("fe80::1"), Protocol: unix.RTPROT_RA}); err != nil {
		t.Fatalf("add default route from an advertisement: %v", err)
	}
	read := func(path string) string {
		t.Helper()
		var b []byte
		if err := ns.Do(func() (err error) { b, err = os.ReadFile(path); return err }); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	const fwd = "/proc/sys/net/ipv6/conf/all/forwarding"
	raUp, raBr := "/proc/sys/net/ipv6/conf/zlt-up0/accept_ra", "/proc/sys/net/ipv6/conf/zlt-br0/accept_ra"
	// The kernel's defaults, whatever the namespace inherited
	// (net.core.devconf_inherit_init_net).
	if err := ns.Do(func() error {
		return errors.Join(os.WriteFile(fwd, []byte("0"), 0o644), os.WriteFile(raUp, []byte("1"), 0o644), os.WriteFile(raBr, []byte("1"), 0o644))
	}); err != nil {
		t.Fatal(err)
	}
	var changed []Sysctl
	if err := ns.Do(func() (err error) { changed, err = ApplySysctls6(); return err }); err != nil {
		t.Fatalf("ApplySysctls6: %v", err)
	}
	var names []string
	for _, s := range changed {
		names = append(names, s.Name+"="+s.Value)
	}
	if want := []string{"net.ipv6.conf.zlt-up0.accept_ra=2", "net.ipv6.conf.all.forwarding=1"}; !slices.Equal(names, want) {
		t.Errorf("changed %q, want %q", names, want)
	}
	if read(fwd) != "1" || read(raUp) != "2" || read(raBr) != "1" {
		t.Errorf("after ApplySysctls6: forwarding %s, accept_ra on the uplink %s, on the bridge %s; want 1, 2, 1", read(fwd), read(raUp), read(raBr))
	}
	if err := ns.Do(func() (err error) { changed, err = ApplySysctls6(); return err }); err != nil || len(changed) != 0 {
		t.Errorf("second ApplySysctls6 changed %v, %v; want nothing", changed, err)
	}
}

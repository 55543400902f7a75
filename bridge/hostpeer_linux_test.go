//go:build linux

package bridge

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/zlmesh/zlmesh/internal/nstest"
	"golang.org/x/sys/unix"
)

// dockerJoin does to a HostPeer link what Docker does after Join: moves it
// into the sandbox, renames it eth0, gives it the address and Join's routes
// (the connected route to the gateway, then the default route via it) and
// brings it up.
func dockerJoin(t *testing.T, e *env, peer string, sandbox *nstest.NS, s Spec) {
	t.Helper()
	l, err := e.host.NL.LinkByName(peer)
	if err != nil {
		t.Fatalf("host peer %s: %v", peer, err)
	}
	if err := e.host.NL.LinkSetNsFd(l, int(sandbox.Handle)); err != nil {
		t.Fatal(err)
	}
	in, err := sandbox.NL.LinkByName(peer)
	if err != nil {
		t.Fatal(err)
	}
	if err := sandbox.NL.LinkSetName(in, "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := sandbox.NL.AddrAdd(in, &netlink.Addr{IPNet: prefixNet(s.Address)}); err != nil {
		t.Fatal(err)
	}
	if err := sandbox.NL.LinkSetUp(in); err != nil {
		t.Fatal(err)
	}
	if err := sandbox.NL.RouteAdd(&netlink.Route{LinkIndex: in.Attrs().Index, Dst: prefixNet(s.Gateway), Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	def := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	if err := sandbox.NL.RouteAdd(&netlink.Route{LinkIndex: in.Attrs().Index, Dst: def, Gw: s.Gateway.Addr().AsSlice()}); err != nil {
		t.Fatalf("default route via %s (Docker's programGateway): %v", s.Gateway.Addr(), err)
	}
	if !s.Address6.IsValid() {
		return
	}
	// The IPv6 address as libnetwork's osl gives it (setInterfaceIPv6:
	// no DAD), the connected route to the IPv6 gateway (Join's
	// StaticRoutes) and the default route via it (GatewayIPv6).
	if err := sandbox.NL.AddrAdd(in, &netlink.Addr{IPNet: prefixNet(s.Address6), Flags: unix.IFA_F_NODAD}); err != nil {
		t.Fatal(err)
	}
	gw6 := GatewayFor(s.Address6.Addr())
	if err := sandbox.NL.RouteAdd(&netlink.Route{LinkIndex: in.Attrs().Index, Dst: prefixNet(gw6), Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	def6 := &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	if err := sandbox.NL.RouteAdd(&netlink.Route{LinkIndex: in.Attrs().Index, Dst: def6, Gw: gw6.Addr().AsSlice()}); err != nil {
		t.Fatalf("default route via %s (Docker's programGateway): %v", gw6.Addr(), err)
	}
}

// TestHostPeer: the Docker form leaves the peer in the host, with the
// bridge, host route and host end made; once "Docker" moved and configured
// it, the container reaches a container of the namespace form and back;
// Alive follows the host veth; Adopt finds nothing to repair and repairs a
// host end taken off the bridge; Detach removes everything, the
// container's eth0 included.
func TestHostPeer(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := netip.MustParsePrefix("10.200.1.40/32")
	s := Spec{Service: "web", Container: "docker-a1b2c3d4e5f6", HostPeer: HostPeerName("docker-a1b2c3d4e5f6"),
		Address: a, Gateway: GatewayFor(a.Addr()), MTU: 1400}
	made, err := e.m.Attach(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if made.Bridge != "zlb-web" || made.HostVeth != VethName(s.Container) || !made.NetnsID.IsZero() {
		t.Fatalf("Attach = %+v", made)
	}
	peer, err := e.host.NL.LinkByName(s.HostPeer)
	if err != nil {
		t.Fatalf("the peer is not in the host: %v", err)
	}
	if peer.Attrs().MTU != 1400 || peer.Attrs().MasterIndex != 0 {
		t.Errorf("peer mtu %d master %d, want 1400 and none", peer.Attrs().MTU, peer.Attrs().MasterIndex)
	}
	checkBridge(t, e, "zlb-web", s.Gateway, made.HostVeth)
	checkHostRoutes(t, e, "zlb-web", a)
	if _, err := e.m.Attach(ctx, s); !errors.Is(err, ErrExists) {
		t.Errorf("second Attach: %v, want ErrExists", err)
	}
	if ok, err := e.m.Alive(s, NetnsID{}); !ok || err != nil {
		t.Errorf("Alive before the move = %v %v", ok, err)
	}

	sandbox := e.container()
	dockerJoin(t, e, s.HostPeer, sandbox, s)
	other := e.container()
	s2 := spec("web", "c2", other, "10.200.1.41/32")
	if _, err := e.m.Attach(ctx, s2); err != nil {
		t.Fatal(err)
	}
	mustPing(t, sandbox, s2.Address)
	mustPing(t, other, s.Address)

	if got, err := e.m.Adopt(ctx, s); err != nil || len(got.Repairs) != 0 {
		t.Errorf("Adopt of an intact attachment = %+v %v", got, err)
	}
	host, _ := e.host.NL.LinkByName(made.HostVeth)
	if err := e.host.NL.LinkSetNoMaster(host); err != nil {
		t.Fatal(err)
	}
	if got, err := e.m.Adopt(ctx, s); err != nil || len(got.Repairs) == 0 || !strings.Contains(got.Repairs[0], "not a port of zlb-web") {
		t.Errorf("Adopt of a host end off its bridge = %+v %v, want it enslaved again", got, err)
	}
	mustPing(t, sandbox, s2.Address)
	if err := e.m.Readdress(ctx, s, netip.MustParsePrefix("10.200.1.50/32"), netip.Prefix{}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Readdress = %v, want ErrUnsupported", err)
	}

	if err := e.m.Detach(ctx, s); err != nil {
		t.Fatal(err)
	}
	if _, err := sandbox.NL.LinkByName("eth0"); err == nil {
		t.Error("the container's eth0 outlived Detach")
	}
	checkHostRoutes(t, e, "zlb-web", s2.Address)
	if ok, err := e.m.Alive(s, NetnsID{}); ok || err != nil {
		t.Errorf("Alive after Detach = %v %v", ok, err)
	}
	if _, err := e.m.Adopt(ctx, s); !errors.Is(err, ErrNoNamespace) {
		t.Errorf("Adopt after Detach: %v, want ErrNoNamespace", err)
	}
}

// TestHostPeerDualStack: the Docker form with an IPv6 address: the bridge
// holds both gateways, the host both host routes; once "Docker" gave the
// container both addresses and both default routes it reaches a dual-stack
// container of the namespace form over IPv6 and back; Adopt repairs a lost
// IPv6 host route; Detach leaves no route of either family.
func TestHostPeerDualStack(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := netip.MustParsePrefix("10.200.1.40/32")
	s := Spec{Service: "web", Container: "docker-a1b2c3d4e5f6", HostPeer: HostPeerName("docker-a1b2c3d4e5f6"),
		Address: a, Gateway: GatewayFor(a.Addr()), Address6: netip.MustParsePrefix("fd12:3456:789a::40/128"), MTU: 1400}
	if _, err := e.m.Attach(ctx, s); err != nil {
		t.Fatal(err)
	}
	gws := []netip.Prefix{netip.MustParsePrefix("169.254.1.1/32"), netip.MustParsePrefix("fe80::1/128")}
	if got := globalAddrs(t, e.host.NL, "zlb-web"); !slices.Equal(got, gws) {
		t.Errorf("zlb-web addresses %v, want %v", got, gws)
	}
	checkHostRoutes(t, e, "zlb-web", s.Address, s.Address6)
	sandbox := e.container()
	dockerJoin(t, e, s.HostPeer, sandbox, s)
	other := e.container()
	s2 := spec("web", "c2", other, "10.200.1.41/32")
	s2.Address6 = netip.MustParsePrefix("fd12:3456:789a::41/128")
	if _, err := e.m.Attach(ctx, s2); err != nil {
		t.Fatal(err)
	}
	mustPing(t, sandbox, s2.Address6)
	mustPing(t, other, s.Address6)
	mustPing(t, sandbox, s2.Address)

	br, err := e.host.NL.LinkByName("zlb-web")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.host.NL.RouteDel(&netlink.Route{LinkIndex: br.Attrs().Index, Dst: prefixNet(s.Address6)}); err != nil {
		t.Fatal(err)
	}
	if got, err := e.m.Adopt(ctx, s); err != nil || len(got.Repairs) == 0 {
		t.Errorf("Adopt without the IPv6 host route = %+v %v, want it repaired", got, err)
	}
	checkHostRoutes(t, e, "zlb-web", s.Address, s.Address6, s2.Address, s2.Address6)
	mustPing(t, other, s.Address6)

	if err := e.m.Detach(ctx, s); err != nil {
		t.Fatal(err)
	}
	checkHostRoutes(t, e, "zlb-web", s2.Address, s2.Address6)
}

func TestHostPeerBadSpec(t *testing.T) {
	e := newEnv(t)
	a := netip.MustParsePrefix("10.200.1.40/32")
	good := Spec{Service: "web", Container: "d1", HostPeer: HostPeerName("d1"), Address: a, Gateway: GatewayFor(a.Addr())}
	cases := []struct {
		name string
		mod  func(*Spec)
	}{
		{"netns too", func(s *Spec) { s.Netns = "/run/netns/x" }},
		{"pid too", func(s *Spec) { s.PID = 1 }},
		{"foreign prefix", func(s *Spec) { s.HostPeer = "eth7" }},
		{"too long", func(s *Spec) { s.HostPeer = "zlc0123456789abcdef" }},
		{"no gateway", func(s *Spec) { s.Gateway = netip.Prefix{} }},
		{"address6 not IPv6", func(s *Spec) { s.Address6 = netip.MustParsePrefix("10.200.1.41/32") }},
		{"address6 not a host prefix", func(s *Spec) { s.Address6 = netip.MustParsePrefix("fd12:3456:789a::/64") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			tc.mod(&s)
			if _, err := e.m.Attach(context.Background(), s); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Attach: %v, want ErrInvalid", err)
			}
			if _, err := e.host.NL.LinkByName(VethName("d1")); err == nil {
				t.Fatal("a veth was made")
			}
		})
	}
}

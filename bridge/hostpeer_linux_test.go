//go:build linux

package bridge

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/zlmesh/zlmesh/internal/nstest"
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

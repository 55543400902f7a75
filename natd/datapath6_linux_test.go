//go:build linux

package natd

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/internal/nstest"
)

// baseConfig6 is baseConfig with IPv6 on: the twins of the node's block,
// overlay address and cluster of newTopo.
func baseConfig6() Config {
	cfg := baseConfig()
	cfg.Cluster6 = netip.MustParsePrefix("fd00:200::/48")
	cfg.Local6 = []netip.Prefix{netip.MustParsePrefix("fd00:200:0:3::/64")}
	cfg.Overlay6 = overlayAddr6
	cfg.Masquerade6 = true
	return cfg
}

// TestDataPath6 is TestDataPath for IPv6, on the same dual-stack lab with
// one Config for both families: real IPv6 connections, checked by the
// source address each server saw. A few IPv4 flows run beside them to show
// the families do not disturb each other.
func TestDataPath6(t *testing.T) {
	tp := newTopo(t)
	serve(t, tp.outside, "tcp", 7000)
	serve(t, tp.c1, "tcp", 80)
	serve(t, tp.c2, "tcp", 80)
	serve(t, tp.c2, "tcp", 7001)
	serve(t, tp.c2, "udp", 53)
	serve(t, tp.remote, "tcp", 80)

	ap := netip.AddrPortFrom
	cfg := baseConfig6()
	cfg.Ports = []Port{
		{Proto: "tcp", HostPort: 8080, Target: ap(c1Addr, 80), Target6: ap(c1Addr6, 80)},
		{Proto: "udp", HostPort: 5353, Target: ap(c2Addr, 53), Target6: ap(c2Addr6, 53)},
		{Proto: "tcp", HostPort: 9090, Target: ap(remoteAddr, 80), Target6: ap(remoteAddr6, 80)},
		{Proto: "tcp", HostAddr: overlayAddr, HostPort: 7070, Target: ap(c2Addr, 80), Target6: ap(c2Addr6, 80)},
		{Proto: "tcp", HostAddr: overlayAddr6, HostPort: 7071, Target: ap(c2Addr, 80), Target6: ap(c2Addr6, 80)},
		{Proto: "tcp", HostPort: 6060, Target: ap(c1Addr, 80)},   // IPv4 only
		{Proto: "tcp", HostPort: 6161, Target6: ap(c1Addr6, 80)}, // IPv6 only
	}
	tb := openTable(t, tp.host, "")
	mustSet(t, tb, cfg)
	t.Logf("table:\n%s", listing(t, tp.host, "zlmesh"))

	flows := []struct {
		name  string
		from  *nstest.NS
		proto string
		to    netip.AddrPort
		sees  netip.Addr
	}{
		// Egress.
		{"container to outside is masqueraded", tp.c1, "tcp", ap(outsideAddr6, 7000), hostPublic6},
		{"container to container keeps its address", tp.c1, "tcp", ap(c2Addr6, 7001), c1Addr6},
		{"container to container on another bridge keeps its address", tp.c3, "tcp", ap(c2Addr6, 7001), c3Addr6},
		{"container to remote container keeps its address", tp.c1, "tcp", ap(remoteAddr6, 80), c1Addr6},
		// Published ports to a local container, on the host's IPv6 addresses.
		{"outside to local container keeps the client", tp.outside, "tcp", ap(hostPublic6, 8080), outsideAddr6},
		{"outside to local container over udp", tp.outside, "udp", ap(hostPublic6, 5353), outsideAddr6},
		{"remote container to local container keeps the client", tp.remote, "tcp", ap(overlayAddr6, 8080), remoteAddr6},
		{"container on another bridge is masqueraded", tp.c3, "tcp", ap(hostPublic6, 8080), gatewayAddr6},
		{"host to local container keeps the host address", tp.host, "tcp", ap(hostPublic6, 8080), hostPublic6},
		{"host via overlay address", tp.host, "tcp", ap(overlayAddr6, 8080), overlayAddr6},
		// Published ports to a container on another host.
		{"outside to remote container is SNATed to the overlay", tp.outside, "tcp", ap(hostPublic6, 9090), overlayAddr6},
		{"remote to remote is SNATed to the overlay", tp.remote, "tcp", ap(overlayAddr6, 9090), overlayAddr6},
		{"local container to remote keeps its address", tp.c1, "tcp", ap(hostPublic6, 9090), c1Addr6},
		{"host to remote is SNATed to the overlay", tp.host, "tcp", ap(hostPublic6, 9090), overlayAddr6},
		// Published on one address, or in one family only.
		{"port on the overlay IPv6 address", tp.remote, "tcp", ap(overlayAddr6, 7071), remoteAddr6},
		{"port on all IPv6 addresses only", tp.outside, "tcp", ap(hostPublic6, 6161), outsideAddr6},
		// IPv4 beside it, from the same table.
		{"ipv4: outside to local container", tp.outside, "tcp", ap(hostPublic, 8080), outsideAddr},
		{"ipv4: container to outside is masqueraded", tp.c1, "tcp", ap(outsideAddr, 7000), hostPublic},
		{"ipv4: port on all IPv4 addresses only", tp.outside, "tcp", ap(hostPublic, 6060), outsideAddr},
		{"ipv4: port on the overlay IPv4 address", tp.remote, "tcp", ap(overlayAddr, 7070), remoteAddr},
	}
	for _, f := range flows {
		t.Run(f.name, func(t *testing.T) {
			got, err := ask(f.from, f.proto, f.to, 2*time.Second)
			if err != nil {
				t.Fatalf("%s %s from %s: %v", f.proto, f.to, f.from.Name, err)
			}
			if got != f.sees.String() {
				t.Errorf("%s %s: server saw %s, want %s", f.proto, f.to, got, f.sees)
			}
		})
	}

	hairpin := []struct {
		name string
		from *nstest.NS
		to   netip.AddrPort
	}{
		{"to itself", tp.c1, ap(hostPublic6, 8080)},
		{"to a sibling", tp.c2, ap(hostPublic6, 8080)},
		{"via the overlay address", tp.c2, ap(overlayAddr6, 8080)},
		{"over udp to a sibling", tp.c1, ap(gatewayAddr6, 5353)},
		{"over udp to itself", tp.c2, ap(gatewayAddr6, 5353)},
	}
	for _, mode := range []struct {
		name     string
		bridgeNF bool
	}{{"bridged", true}, {"routed", false}} {
		t.Run("hairpin "+mode.name, func(t *testing.T) {
			if !tp.setBridgeNF6(t, mode.bridgeNF) {
				if mode.bridgeNF {
					t.Skip("no br_netfilter in this kernel")
				}
			}
			for _, f := range hairpin {
				proto := "tcp"
				if f.to.Port() == 5353 {
					proto = "udp"
				}
				got, err := ask(f.from, proto, f.to, 2*time.Second)
				if err != nil {
					t.Errorf("%s: %s %s from %s: %v", f.name, proto, f.to, f.from.Name, err)
					continue
				}
				if got != gatewayAddr6.String() {
					t.Errorf("%s: %s %s: server saw %s, want the bridge gateway %s", f.name, proto, f.to, got, gatewayAddr6)
				}
			}
		})
	}

	refused := []struct {
		name string
		from *nstest.NS
		to   netip.AddrPort
	}{
		{"port on one IPv6 address is not on the others", tp.outside, ap(hostPublic6, 7071)},
		{"port on one IPv4 address is not on IPv6", tp.remote, ap(overlayAddr6, 7070)},
		{"IPv4-only port is not on IPv6", tp.outside, ap(hostPublic6, 6060)},
		{"IPv6-only port is not on IPv4", tp.outside, ap(hostPublic, 6161)},
		{"loopback is not published", tp.host, netip.MustParseAddrPort("[::1]:8080")},
	}
	for _, f := range refused {
		t.Run(f.name, func(t *testing.T) {
			if got, err := ask(f.from, "tcp", f.to, 500*time.Millisecond); err == nil {
				t.Errorf("tcp %s reached a server that saw %s", f.to, got)
			}
		})
	}

	t.Run("masquerade6 off", func(t *testing.T) {
		off := cfg
		off.Masquerade6 = false
		mustSet(t, tb, off)
		// outside has no route back to the cluster's ULA prefix.
		if got, err := ask(tp.c1, "tcp", ap(outsideAddr6, 7000), 500*time.Millisecond); err == nil {
			t.Errorf("with masquerade6 off, outside saw %s", got)
		}
		if got, err := ask(tp.c1, "tcp", ap(outsideAddr, 7000), 2*time.Second); err != nil || got != hostPublic.String() {
			t.Errorf("IPv4 masquerade with masquerade6 off: %q, %v", got, err)
		}
		if got, err := ask(tp.outside, "tcp", ap(hostPublic6, 8080), 2*time.Second); err != nil || got != outsideAddr6.String() {
			t.Errorf("IPv6 published port with masquerade6 off: %q, %v", got, err)
		}
		mustSet(t, tb, cfg)
		if got, err := ask(tp.c1, "tcp", ap(outsideAddr6, 7000), 2*time.Second); err != nil || got != hostPublic6.String() {
			t.Errorf("masquerade6 back on: %q, %v", got, err)
		}
	})

	t.Run("ipv6 off", func(t *testing.T) {
		off := baseConfig()
		for _, p := range cfg.Ports {
			if p.Target.IsValid() && !p.HostAddr.Is6() {
				p.Target6 = netip.AddrPort{}
				off.Ports = append(off.Ports, p)
			}
		}
		mustSet(t, tb, off)
		if got, err := ask(tp.outside, "tcp", ap(hostPublic6, 8080), 500*time.Millisecond); err == nil {
			t.Errorf("with IPv6 off, the IPv6 published port reached a server that saw %s", got)
		}
		if got, err := ask(tp.c1, "tcp", ap(outsideAddr6, 7000), 500*time.Millisecond); err == nil {
			t.Errorf("with IPv6 off, outside saw %s", got)
		}
		if got, err := ask(tp.outside, "tcp", ap(hostPublic, 8080), 2*time.Second); err != nil || got != outsideAddr.String() {
			t.Errorf("IPv4 published port with IPv6 off: %q, %v", got, err)
		}
		mustSet(t, tb, cfg)
		if got, err := ask(tp.outside, "tcp", ap(hostPublic6, 8080), 2*time.Second); err != nil || got != outsideAddr6.String() {
			t.Errorf("IPv6 back on: %q, %v", got, err)
		}
	})

	t.Run("udp retarget", func(t *testing.T) {
		// As in TestDataPath, over IPv6: natd forgets the stale IPv6
		// conntrack entries of a retargeted or removed UDP port.
		serveID(t, tp.c1, 5300, "c1")
		serveID(t, tp.c2, 5300, "c2")
		to := func(target netip.Addr) Config {
			c := cfg
			c.Ports = append(slices.Clone(cfg.Ports), Port{Proto: "udp", HostPort: 6000, Target6: ap(target, 5300)})
			return c
		}
		mustSet(t, tb, to(c2Addr6))
		var conn net.Conn
		if err := tp.outside.Do(func() (err error) {
			conn, err = net.Dial("udp6", ap(hostPublic6, 6000).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		say := func() string {
			conn.SetDeadline(time.Now().Add(time.Second))
			conn.Write([]byte("hi"))
			buf := make([]byte, 16)
			n, err := conn.Read(buf)
			if err != nil {
				return err.Error()
			}
			return string(buf[:n])
		}
		if got := say(); got != "c2" {
			t.Fatalf("first datagram answered by %q, want c2", got)
		}
		mustSet(t, tb, to(c1Addr6))
		if got := say(); got != "c1" {
			t.Errorf("after retargeting, the same flow is answered by %q, want c1", got)
		}
		mustSet(t, tb, cfg)
		if got := say(); got == "c1" || got == "c2" {
			t.Errorf("after unpublishing, the flow is still answered by %s", got)
		}
	})
}

//go:build linux

package natd

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/zlmesh/zlmesh/internal/nstest"
)

// TestDataPath sends real connections through the lab of newTopo with natd's
// table in the host namespace and checks which source address each server
// saw: that is what tells whether, and to what, the flow was NATed.
func TestDataPath(t *testing.T) {
	tp := newTopo(t)
	serve(t, tp.outside, "tcp", 7000)
	serve(t, tp.c1, "tcp", 80)
	serve(t, tp.c2, "tcp", 80)
	serve(t, tp.c2, "tcp", 7001)
	serve(t, tp.c2, "udp", 53)
	serve(t, tp.remote, "tcp", 80)

	cfg := baseConfig()
	cfg.Ports = []Port{
		{Proto: "tcp", HostPort: 8080, Target: netip.AddrPortFrom(c1Addr, 80)},
		{Proto: "udp", HostPort: 5353, Target: netip.AddrPortFrom(c2Addr, 53)},
		{Proto: "tcp", HostPort: 9090, Target: netip.AddrPortFrom(remoteAddr, 80)},
		{Proto: "tcp", HostAddr: overlayAddr, HostPort: 7070, Target: netip.AddrPortFrom(c2Addr, 80)},
	}
	tb := openTable(t, tp.host, "")
	mustSet(t, tb, cfg)

	ap := netip.AddrPortFrom
	flows := []struct {
		name  string
		from  *nstest.NS
		proto string
		to    netip.AddrPort
		sees  netip.Addr // the source address the server must see
	}{
		// Egress.
		{"container to outside is masqueraded", tp.c1, "tcp", ap(outsideAddr, 7000), hostPublic},
		{"container to container keeps its address", tp.c1, "tcp", ap(c2Addr, 7001), c1Addr},
		{"container to container on another bridge keeps its address", tp.c3, "tcp", ap(c2Addr, 7001), c3Addr},
		{"container to remote container keeps its address", tp.c1, "tcp", ap(remoteAddr, 80), c1Addr},
		// Published ports to a local container.
		{"outside to local container keeps the client", tp.outside, "tcp", ap(hostPublic, 8080), outsideAddr},
		{"outside to local container over udp", tp.outside, "udp", ap(hostPublic, 5353), outsideAddr},
		{"remote container to local container keeps the client", tp.remote, "tcp", ap(overlayAddr, 8080), remoteAddr},
		{"container on another bridge is masqueraded", tp.c3, "tcp", ap(hostPublic, 8080), gatewayAddr},
		{"host to local container keeps the host address", tp.host, "tcp", ap(hostPublic, 8080), hostPublic},
		{"host via overlay address", tp.host, "tcp", ap(overlayAddr, 8080), overlayAddr},
		// Published ports to a container on another host.
		{"outside to remote container is SNATed to the overlay", tp.outside, "tcp", ap(hostPublic, 9090), overlayAddr},
		{"remote to remote is SNATed to the overlay", tp.remote, "tcp", ap(overlayAddr, 9090), overlayAddr},
		{"local container to remote keeps its address", tp.c1, "tcp", ap(hostPublic, 9090), c1Addr},
		{"host to remote is SNATed to the overlay", tp.host, "tcp", ap(hostPublic, 9090), overlayAddr},
		// Published on one address only.
		{"port on the overlay address", tp.remote, "tcp", ap(overlayAddr, 7070), remoteAddr},
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

	// Hairpin, both with br_netfilter passing bridged traffic through the IP
	// hooks (then a translated connection to the client's own bridge is
	// bridged) and without (then it is routed).
	hairpin := []struct {
		name string
		from *nstest.NS
		to   netip.AddrPort
	}{
		{"to itself", tp.c1, ap(hostPublic, 8080)},
		{"to a sibling", tp.c2, ap(hostPublic, 8080)},
		{"via the overlay address", tp.c2, ap(overlayAddr, 8080)},
		{"over udp to a sibling", tp.c1, ap(gatewayAddr, 5353)},
		{"over udp to itself", tp.c2, ap(gatewayAddr, 5353)},
	}
	for _, mode := range []struct {
		name     string
		bridgeNF bool
	}{{"bridged", true}, {"routed", false}} {
		t.Run("hairpin "+mode.name, func(t *testing.T) {
			if !tp.setBridgeNF(t, mode.bridgeNF) {
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
				if got != gatewayAddr.String() {
					t.Errorf("%s: %s %s: server saw %s, want the bridge gateway %s", f.name, proto, f.to, got, gatewayAddr)
				}
			}
		})
	}

	refused := []struct {
		name string
		from *nstest.NS
		to   netip.AddrPort
	}{
		{"port on one address is not on the others", tp.outside, ap(hostPublic, 7070)},
		{"loopback is not published", tp.host, netip.MustParseAddrPort("127.0.0.1:8080")},
	}
	for _, f := range refused {
		t.Run(f.name, func(t *testing.T) {
			if got, err := ask(f.from, "tcp", f.to, 500*time.Millisecond); err == nil {
				t.Errorf("tcp %s reached a server that saw %s", f.to, got)
			}
		})
	}

	t.Run("unpublish", func(t *testing.T) {
		less := cfg
		less.Ports = slices.DeleteFunc(slices.Clone(cfg.Ports), func(p Port) bool { return p.HostPort == 8080 })
		mustSet(t, tb, less)
		if got, err := ask(tp.outside, "tcp", ap(hostPublic, 8080), 500*time.Millisecond); err == nil {
			t.Errorf("unpublished port still reaches a server that saw %s", got)
		}
		mustSet(t, tb, cfg)
		if _, err := ask(tp.outside, "tcp", ap(hostPublic, 8080), 2*time.Second); err != nil {
			t.Errorf("republished port: %v", err)
		}
	})

	t.Run("masquerade off", func(t *testing.T) {
		off := cfg
		off.Masquerade = false
		mustSet(t, tb, off)
		// outside has no route back to the container's own address.
		if got, err := ask(tp.c1, "tcp", ap(outsideAddr, 7000), 500*time.Millisecond); err == nil {
			t.Errorf("with masquerade off, outside saw %s", got)
		}
		// Published ports do not depend on it.
		if got, err := ask(tp.outside, "tcp", ap(hostPublic, 8080), 2*time.Second); err != nil || got != outsideAddr.String() {
			t.Errorf("published port with masquerade off: %q, %v", got, err)
		}
		mustSet(t, tb, cfg)
		if got, err := ask(tp.c1, "tcp", ap(outsideAddr, 7000), 2*time.Second); err != nil || got != hostPublic.String() {
			t.Errorf("masquerade back on: %q, %v", got, err)
		}
	})

	t.Run("udp retarget", func(t *testing.T) {
		// A UDP client that keeps sending keeps its conntrack entry alive:
		// after the port is sent elsewhere it must reach the new target,
		// not the old one (natd forgets the stale entries).
		serveID(t, tp.c1, 5300, "c1")
		serveID(t, tp.c2, 5300, "c2")
		to := func(target netip.Addr) Config {
			c := cfg
			c.Ports = append(slices.Clone(cfg.Ports), Port{Proto: "udp", HostPort: 6000, Target: ap(target, 5300)})
			return c
		}
		mustSet(t, tb, to(c2Addr))
		var conn net.Conn
		if err := tp.outside.Do(func() (err error) {
			conn, err = net.Dial("udp4", ap(hostPublic, 6000).String())
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
		mustSet(t, tb, to(c1Addr))
		if got := say(); got != "c1" {
			t.Errorf("after retargeting, the same flow is answered by %q, want c1", got)
		}
		mustSet(t, tb, cfg)
		if got := say(); got == "c1" || got == "c2" {
			t.Errorf("after unpublishing, the flow is still answered by %s", got)
		}
	})

	t.Run("foreign forward drop policy", func(t *testing.T) {
		// Another table that drops forwarded packets by default wins over
		// anything in zlmesh's table; the accepts the package doc tells
		// operators to add there are enough.
		c := nftConn(t, tp.host)
		fw := c.AddTable(&nftables.Table{Name: "zlt-firewall", Family: nftables.TableFamilyIPv4})
		drop := nftables.ChainPolicyDrop
		fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: fw, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			c.DelTable(fw)
			c.Flush()
		}()
		if got, err := ask(tp.outside, "tcp", ap(hostPublic, 8080), 500*time.Millisecond); err == nil {
			t.Fatalf("forward policy drop elsewhere did not block; server saw %s", got)
		}
		for _, key := range []expr.MetaKey{expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME} {
			for _, name := range [][]byte{ifname("zl0"), []byte("zlb-")} {
				c.AddRule(&nftables.Rule{Table: fw, Chain: fwd, Exprs: []expr.Any{
					&expr.Meta{Key: key, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
					&expr.Verdict{Kind: expr.VerdictAccept},
				}})
			}
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		for _, f := range []struct {
			from *nstest.NS
			to   netip.AddrPort
			sees netip.Addr
		}{
			{tp.outside, ap(hostPublic, 8080), outsideAddr},
			{tp.outside, ap(hostPublic, 9090), overlayAddr},
			{tp.c1, ap(outsideAddr, 7000), hostPublic},
			{tp.c1, ap(hostPublic, 8080), gatewayAddr},
		} {
			if got, err := ask(f.from, "tcp", f.to, 2*time.Second); err != nil || got != f.sees.String() {
				t.Errorf("tcp %s from %s with the accepts in place: %q, %v; want %s", f.to, f.from.Name, got, err, f.sees)
			}
		}
	})

	t.Run("rules survive a restart", func(t *testing.T) {
		if err := tb.Close(); err != nil {
			t.Fatal(err)
		}
		if got, err := ask(tp.outside, "tcp", ap(hostPublic, 8080), 2*time.Second); err != nil || got != outsideAddr.String() {
			t.Errorf("published port after Close: %q, %v", got, err)
		}
	})
}

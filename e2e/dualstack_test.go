//go:build linux

package e2e

// Dual-stack: every node and container has an IPv6 address beside its IPv4
// one, the twin of it in the cluster's IPv6 prefix, and the overlay carries
// both families: ICMPv6 and TCP over IPv6 between containers on different
// hosts, seen with their own IPv6 source addresses; the nodes' IPv6 overlay
// addresses; the kernel state (TUN, container addresses and routes, host
// routes, WireGuard AllowedIPs) holding both.

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/testbed"
)

// checkTwin checks a's IPv6 address against the node's mapping: the twin of
// its IPv4 address, with the gateway fe80::1 and the mesh DNS's twin.
func checkTwin(t *testing.T, h *testbed.Host, a api.Attachment) {
	t.Helper()
	st := status(t, h)
	tw := testbed.Twins(st)
	if tw == nil {
		t.Fatalf("%s runs IPv4 only: status %+v", h.Name, st)
	}
	want, _ := tw.Addr(netip.MustParseAddr(a.Address))
	dns6, _ := tw.Addr(netip.MustParseAddr(st.MeshDNS))
	if a.Address6 != want.String() || a.Gateway6 != "fe80::1" || a.DNS6 != dns6.String() || st.MeshDNS6 != dns6.String() {
		t.Errorf("attachment %s: address6 %q gateway6 %q dns6 %q (status %q); want %s, fe80::1, %s",
			a.Container, a.Address6, a.Gateway6, a.DNS6, st.MeshDNS6, want, dns6)
	}
}

func TestDualStack(t *testing.T) {
	tb := cluster(t, 3)
	h1, h2, h3 := tb.Host("h1"), tb.Host("h2"), tb.Host("h3")
	web1, web2, db1 := addContainer(t, tb, h1, "web1"), addContainer(t, tb, h2, "web2"), addContainer(t, tb, h3, "db1")
	att := map[*testbed.Container]api.Attachment{
		web1: mustAttach(t, web1, "web"), web2: mustAttach(t, web2, "web"), db1: mustAttach(t, db1, "db"),
	}
	addrs, addrs6 := map[*testbed.Container]string{}, map[*testbed.Container]string{}
	for c, a := range att {
		checkTwin(t, c.Host, a)
		addrs[c], addrs6[c] = a.Address, a.Address6
	}
	// One cluster IPv6 prefix, derived from the cluster key on each node.
	st1, st2 := status(t, h1), status(t, h2)
	if st1.ClusterCIDR6 == "" || st1.ClusterCIDR6 != st2.ClusterCIDR6 || !strings.HasPrefix(st1.ClusterCIDR6, "fd") {
		t.Fatalf("cluster IPv6 prefixes %q and %q: want one ULA", st1.ClusterCIDR6, st2.ClusterCIDR6)
	}

	pingContainers(t, tb, addrs6, 30*time.Second)
	pingContainers(t, tb, addrs, 10*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The nodes' own IPv6 overlay addresses, from a container elsewhere.
	for _, h := range []*testbed.Host{h2, h3} {
		st := status(t, h)
		eventually(t, 10*time.Second, func() error { return web1.Ping(ctx, st.OverlayIP6) })
	}

	// TCP over IPv6 across hosts: db1's server hears web1 and web2 from
	// their own IPv6 addresses.
	srv := tcpEcho(t, db1, addrs6[db1], 7000)
	eventually(t, 20*time.Second, func() error {
		for _, c := range []*testbed.Container{web1, web2} {
			if err := tcpSend(ctx, c, addrs6[db1], 7000, "hello db over IPv6 from "+c.Name); err != nil {
				return err
			}
		}
		return nil
	})
	for _, c := range []*testbed.Container{web1, web2} {
		if !strings.Contains(srv.Output(), "tcp from ["+addrs6[c]+"]:") {
			t.Errorf("db1's echo server did not see %s's IPv6 address %s:\n%s", c, addrs6[c], srv.Output())
		}
	}

	// The mesh DNS, asked by containers of every host at its IPv4 address
	// and at its IPv6 twin: AAAA for containers, nodes and the zone, PTR
	// under ip6.arpa.
	for _, server := range []string{meshDNS, att[web2].DNS6} {
		for _, q := range []struct {
			from *testbed.Container
			args []string
			typ  string
			want string
		}{
			{web2, []string{web1.ID() + ".web.zl", "AAAA"}, "AAAA", addrs6[web1]},
			{web1, []string{"+tcp", db1.ID() + ".db.zl", "AAAA"}, "AAAA", addrs6[db1]},
			{web1, []string{"h2.node.zl", "AAAA"}, "AAAA", st2.OverlayIP6},
			{db1, []string{"-x", addrs6[web2]}, "PTR", web2.ID() + ".web.zl."},
			{web1, []string{"zl", "AAAA"}, "AAAA", att[web1].DNS6},
		} {
			args := append([]string{"@" + server}, q.args...)
			eventually(t, 20*time.Second, func() error {
				r := digE(ctx, q.from, args...)
				if got := r.data(r.Answer, q.typ); len(got) != 1 || got[0] != q.want {
					return fmt.Errorf("dig %v in %s: %s %v, want %s\n%s", args, q.from, r.Status, got, q.want, r.Out)
				}
				return nil
			})
		}
	}

	// What the kernel holds: the container's two addresses and default
	// routes, the TUN's two overlay addresses.
	got, err := web1.Exec(ctx, "ip", "-6", "route", "show", "default")
	if err != nil || !strings.Contains(string(got), "via fe80::1 dev eth0") {
		t.Errorf("web1's IPv6 default route: %q, %v", got, err)
	}
	got, err = web1.Exec(ctx, "ip", "-6", "addr", "show", "dev", "eth0", "scope", "global")
	if err != nil || !strings.Contains(string(got), addrs6[web1]+"/128") || strings.Contains(string(got), "tentative") {
		t.Errorf("web1's IPv6 addresses: %q, %v", got, err)
	}
	got, err = h1.Exec(ctx, "ip", "-6", "addr", "show", "dev", "zl0")
	if err != nil || !strings.Contains(string(got), st1.OverlayIP6+"/48") {
		t.Errorf("h1's zl0: %q, %v; want %s/48", got, err, st1.OverlayIP6)
	}
	// Renumbering is per block, and the IPv6 side follows it (the twin
	// is derived): detach and attach again gives a twin again.
	if err := h1.Client().Detach(ctx, web1.ID()); err != nil {
		t.Fatal(err)
	}
	got, err = h1.Exec(ctx, "ip", "-6", "route", "show", "proto", "122")
	if err != nil || strings.Contains(string(got), addrs6[web1]) {
		t.Errorf("h1 keeps a host route to web1's IPv6 address after detach: %q, %v", got, err)
	}
	a := mustAttach(t, web1, "web")
	checkTwin(t, h1, a)
	eventually(t, 10*time.Second, func() error {
		if err := db1.Ping(ctx, a.Address6); err != nil {
			return fmt.Errorf("db1 → web1 %s: %w", a.Address6, err)
		}
		return nil
	})
}

// TestIPv6Off: --ipv6=false gives IPv4 only (no IPv6 on the TUN, the
// containers, the peers), and a node with IPv6 on beside it still reaches
// it over IPv4; a node with another cluster IPv6 prefix is refused as a
// peer by the dual-stack node (one error in its log) and kept by the
// IPv4-only one; bad IPv6 prefixes are refused at start with one line.
func TestIPv6Off(t *testing.T) {
	bin := testbed.BuildZlmesh(t)
	tb := testbed.New(t, testbed.Options{
		Hosts:  3,
		Binary: bin,
		Args: func(h *testbed.Host) []string {
			switch h.Name {
			case "h1":
				return append(append([]string{}, fastGossip...), "--ipv6=false")
			case "h3":
				return append(append([]string{}, fastGossip...), "--cluster-cidr6", "fd00:dead:beef::/48")
			}
			return fastGossip
		},
	})
	h1, h2, h3 := tb.Host("h1"), tb.Host("h2"), tb.Host("h3")
	waitWhole(t, tb, []*testbed.Host{h1, h2}, 60*time.Second)
	waitWhole(t, tb, []*testbed.Host{h1, h3}, 60*time.Second)
	eventually(t, 20*time.Second, func() error {
		if !strings.Contains(h2.LogTail(200), "peer runs another cluster IPv6 prefix") {
			return fmt.Errorf("h2 did not log h3's other IPv6 prefix:\n%s", h2.LogTail(20))
		}
		peers, err := h2.Client().Peers(context.Background())
		if err != nil {
			return err
		}
		for _, p := range peers {
			if p.Name == "h3" && len(p.AllowedIPs) > 0 {
				return fmt.Errorf("h2 gives h3 (another IPv6 prefix) a WireGuard peer: %+v", p)
			}
		}
		return nil
	})
	st1 := status(t, h1)
	if st1.ClusterCIDR6 != "" || st1.OverlayIP6 != "" || st1.MeshDNS6 != "" {
		t.Errorf("h1 with --ipv6=false: status %+v", st1)
	}
	c1, c2 := addContainer(t, tb, h1, "v4only"), addContainer(t, tb, h2, "dual")
	a1, a2 := mustAttach(t, c1, "web"), mustAttach(t, c2, "web")
	if a1.Address6 != "" || a1.DNS6 != "" || a2.Address6 == "" {
		t.Errorf("attachments %+v and %+v: want IPv6 only on h2's", a1, a2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := h1.Exec(ctx, "ip", "-6", "addr", "show", "dev", "zl0", "scope", "global")
	if err != nil || strings.TrimSpace(string(got)) != "" {
		t.Errorf("h1's zl0 has IPv6: %q, %v", got, err)
	}
	got, err = c1.Exec(ctx, "ip", "-6", "addr", "show", "scope", "global")
	if err != nil || strings.TrimSpace(string(got)) != "" {
		t.Errorf("the IPv4-only container has IPv6: %q, %v", got, err)
	}
	pingContainers(t, tb, map[*testbed.Container]string{c1: a1.Address, c2: a2.Address}, 30*time.Second)
	// The mesh DNS has no IPv6 address for the IPv4-only container:
	// AAAA is NODATA (not NXDOMAIN), A answers.
	eventually(t, 20*time.Second, func() error {
		r := digE(ctx, c2, c1.ID()+".web.zl", "AAAA")
		if r.Status != "NOERROR" || len(r.Answer) != 0 || len(r.data(r.Authority, "SOA")) != 1 {
			return fmt.Errorf("%s.web.zl AAAA from h2: want NODATA with the SOA\n%s", c1.ID(), r.Out)
		}
		if got := digShort(ctx, c2, c1.ID()+".web.zl"); len(got) != 1 || got[0] != a1.Address {
			return fmt.Errorf("%s.web.zl A from h2: %v, want %s", c1.ID(), got, a1.Address)
		}
		return nil
	})

	// Start errors: one line each, nothing made.
	for _, c := range []struct{ args, want string }{
		{"--cluster-cidr6 2001:db8::/48", "not a unique local prefix"},
		{"--cluster-cidr6 fd12:3456:789a:bc00::/56", "too long for the block mapping"},
		{"--cluster-cidr6 fd12::/48 --ipv6=false", "give one or the other"},
	} {
		out, err := h1.Exec(ctx, append([]string{bin, "up", "--state-dir", "/tmp/zlt-v6bad", "--socket", "/tmp/zlt-v6bad.sock",
			"--cluster-key-file", tb.KeyFile}, strings.Fields(c.args)...)...)
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("zlmesh up %s: %v\n%s\nwant an error with %q", c.args, err, out, c.want)
		}
	}
}

// TestDualStackNAT, on a dual-stack underlay (hosts and the outside network
// have IPv6 addresses): published ports answer on the host's IPv6 address
// and land on the target's IPv6 address (the client's address kept for a
// local target, the node's IPv6 overlay address for one on another host),
// a port published on the IPv6 address alone is closed on IPv4, and
// containers reach the outside over IPv6 masqueraded to the host's IPv6
// address (the host has an IPv6 default route).
func TestDualStackNAT(t *testing.T) {
	bin := testbed.BuildZlmesh(t)
	tb := testbed.New(t, testbed.Options{
		Hosts:    2,
		Binary:   bin,
		Underlay: testbed.UnderlayDual,
		Args:     func(*testbed.Host) []string { return fastGossip },
	})
	waitWhole(t, tb, tb.Hosts(), 60*time.Second)
	h1, h2 := tb.Host("h1"), tb.Host("h2")
	web, webAt := natAttach(t, tb, h1, "web", "web")
	apiC, apiAt := natAttach(t, tb, h2, "api", "api")
	if webAt.Address6 == "" || apiAt.Address6 == "" {
		t.Fatalf("attachments without IPv6: %+v %+v", webAt, apiAt)
	}
	webTCP := startEcho(t, "web tcp", web.StartProcess, "tcp", "[::]:80")
	apiTCP := startEcho(t, "api tcp", apiC.StartProcess, "tcp", "[::]:80")
	outTCP := startEcho(t, "outside tcp", tb.StartOutside, "tcp", "["+testbed.Outside6Addr.String()+"]:7000")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	publish := func(req api.PublishRequest) api.PortMapping {
		t.Helper()
		pm, err := h1.Client().Publish(ctx, req)
		if err != nil {
			t.Fatalf("publish %+v: %v", req, err)
		}
		return pm
	}
	pmWeb := publish(api.PublishRequest{Container: web.ID(), Protocol: "tcp", HostPort: 8080, ContainerPort: 80})
	publish(api.PublishRequest{Container: apiC.ID(), Protocol: "tcp", HostPort: 8081, ContainerPort: 80})
	publish(api.PublishRequest{Container: web.ID(), Protocol: "tcp", HostPort: 8082, ContainerPort: 80, HostAddress: h1.Underlay6.String()})
	if pmWeb.Target6 != "["+webAt.Address6+"]:80" {
		t.Errorf("port 8080's IPv6 target %q, want [%s]:80", pmWeb.Target6, webAt.Address6)
	}

	out := outsidePeer(tb)
	v6 := func(port int) string { return fmt.Sprintf("[%s]:%d", h1.Underlay6, port) }
	v4 := func(port int) string { return fmt.Sprintf("%s:%d", h1.Underlay, port) }
	overlay6 := status(t, h1).OverlayIP6
	// The outside namespace holds several IPv6 addresses (its resolver's
	// too) and the kernel picks the source: kept means one of them.
	fromOutside := func(addr string) {
		t.Helper()
		if src := reach(t, out, "tcp", addr, webTCP); !testbed.Outside6Prefix.Contains(netip.MustParseAddr(src)) {
			t.Errorf("outside → %s: web saw source %s, want the client's own address in %s", addr, src, testbed.Outside6Prefix)
		}
	}
	fromOutside(v6(8080))
	expectFrom(t, out, "tcp", v4(8080), webTCP, testbed.OutsideAddr.String())
	expectFrom(t, out, "tcp", v6(8081), apiTCP, overlay6)
	fromOutside(v6(8082))
	expectClosed(t, out, "tcp", v4(8082), webTCP)

	// Egress over IPv6, masqueraded to h1's IPv6 underlay address; over
	// the overlay, web keeps its own IPv6 address.
	expectFrom(t, ctrPeer(web), "tcp", "["+testbed.Outside6Addr.String()+"]:7000", outTCP, h1.Underlay6.String())
	expectFrom(t, ctrPeer(web), "tcp", "["+apiAt.Address6+"]:80", apiTCP, webAt.Address6)
}

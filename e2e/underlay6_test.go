//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/testbed"
)

// TestIPv6OnlyUnderlay (issue 17, item 5): a testbed whose underlay has no
// IPv4 at all — three kernel hosts and a userspace one (h4) — forms the
// mesh and carries the overlay. Checked by what the kernel and the wire
// show: no IPv4 address on any underlay link; every node gossips at
// [v6]:7946 and announces [v6]:51820; every WireGuard peer, read through
// UAPI (wgctrl and `wg show`) inside each host, sits at its node's IPv6
// endpoint with a handshake and bytes both ways; the known-peers files
// remember [v6]:7946; containers on h1, h2 and h3 reach each other and
// every node over the IPv4 overlay and over the IPv6 one (ICMPv6 and TCP,
// seen from the sender's own IPv6 address), and the mesh keeps the
// testbed's invariants (View.Problems); with the seed h1 down, h2 restarts and
// re-joins through the [v6]:7946 addresses of its known peers file.
func TestIPv6OnlyUnderlay(t *testing.T) {
	begin := time.Now()
	bin := testbed.BuildZlmesh(t)
	tb := testbed.New(t, testbed.Options{
		Hosts:     4,
		Binary:    bin,
		Underlay:  testbed.UnderlayIPv6,
		Userspace: []string{"h4"},
		Args:      func(*testbed.Host) []string { return slices.Clone(fastGossip) },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	hosts := tb.Hosts()
	kernel := hosts[:3]
	byKey := map[string]*testbed.Host{}
	t.Cleanup(func() {
		if !t.Failed() {
			checkInvariants(t, tb)
		}
	})

	t.Run("the underlay is IPv6 only", func(t *testing.T) {
		addrs, err := tb.UnderlayAddrs()
		if err != nil {
			t.Fatal(err)
		}
		for where, as := range addrs {
			for _, a := range as {
				if a.Prefix.Addr().Is4() {
					t.Errorf("%s: IPv4 address %s on the underlay", where, a.Prefix)
				}
			}
		}
		for _, h := range hosts {
			if !h.Underlay.Is6() || h.Underlay != h.Underlay6 ||
				!slices.ContainsFunc(addrs[h.Name], func(a testbed.LinkAddr) bool { return a.Prefix.Addr() == h.Underlay }) {
				t.Errorf("%s: underlay %s, eth0 has %v", h.Name, h.Underlay, addrs[h.Name])
			}
			if i := slices.Index(h.Command(), "--join"); i >= 0 && !strings.HasPrefix(h.Command()[i+1], "[2001:db8:0:2::") {
				t.Errorf("%s joins %s", h.Name, h.Command()[i+1])
			}
		}
	})

	waitWhole(t, tb, hosts, 60*time.Second)
	t.Logf("mesh of %d hosts whole after %v", len(hosts), time.Since(begin).Round(time.Millisecond))

	t.Run("gossip and endpoints are IPv6", func(t *testing.T) {
		for _, h := range hosts {
			st := status(t, h)
			byKey[st.PublicKey] = h
			wantGossip := netip.AddrPortFrom(h.Underlay6, testbed.GossipPort).String()
			wantEP := netip.AddrPortFrom(h.Underlay6, 51820).String()
			if st.GossipAddr != wantGossip || st.Endpoint != wantEP {
				t.Errorf("%s: gossip %s endpoint %s, want %s and %s", h.Name, st.GossipAddr, st.Endpoint, wantGossip, wantEP)
			}
		}
	})

	// Containers on the kernel hosts, on two services.
	want := map[*testbed.Container]string{}
	att := map[*testbed.Container]api.Attachment{}
	var cs []*testbed.Container
	for i, h := range kernel {
		svc := "web"
		if i == 2 {
			svc = "db"
		}
		c, err := tb.AddContainer(ctx, h, fmt.Sprintf("c%d", i+1))
		if err != nil {
			t.Fatal(err)
		}
		at, err := c.Attach(ctx, svc)
		if err != nil {
			t.Fatalf("attach %s to %s: %v\n%s", c, svc, err, h.LogTail(20))
		}
		if a, err := netip.ParseAddr(at.Address); err != nil || !a.Is4() {
			t.Errorf("%s got address %q", c, at.Address)
		}
		want[c] = svc
		att[c] = at
		cs = append(cs, c)
	}

	t.Run("the IPv4 overlay carries hosts and containers", func(t *testing.T) {
		eventually(t, 60*time.Second, func() error {
			v := tb.View(ctx, want)
			if ps := v.Problems(); len(ps) > 0 {
				return fmt.Errorf("problems:\n%s", strings.Join(ps, "\n"))
			}
			return pingMeshErr(tb.PingMesh(ctx, v, cs))
		})
	})

	t.Run("the IPv6 overlay carries hosts and containers", func(t *testing.T) {
		addrs6 := map[*testbed.Container]string{}
		for c, a := range att {
			if a.Address6 == "" {
				t.Fatalf("%s has no IPv6 address: %+v", c, a)
			}
			addrs6[c] = a.Address6
		}
		pingContainers(t, tb, addrs6, 30*time.Second)
		// Every other node's IPv6 overlay address, from c1 on h1.
		for _, h := range hosts[1:] {
			st := status(t, h)
			if st.OverlayIP6 == "" {
				t.Errorf("%s has no IPv6 overlay address", h.Name)
				continue
			}
			eventually(t, 10*time.Second, func() error { return cs[0].Ping(ctx, st.OverlayIP6) })
		}
		// TCP over IPv6 across hosts: c3's server hears c1 and c2 from
		// their own IPv6 addresses.
		srv := tcpEcho(t, cs[2], addrs6[cs[2]], 7000)
		eventually(t, 20*time.Second, func() error {
			for _, c := range cs[:2] {
				if err := tcpSend(ctx, c, addrs6[cs[2]], 7000, "over IPv6 on IPv6 from "+c.Name); err != nil {
					return err
				}
			}
			return nil
		})
		for _, c := range cs[:2] {
			if !strings.Contains(srv.Output(), "tcp from ["+addrs6[c]+"]:") {
				t.Errorf("c3's echo server did not see %s's IPv6 address %s:\n%s", c, addrs6[c], srv.Output())
			}
		}
	})

	t.Run("WireGuard peers sit at IPv6 endpoints with handshakes", func(t *testing.T) {
		eventually(t, 30*time.Second, func() error {
			for _, h := range hosts {
				dev, err := readWG(ctx, h)
				if err != nil {
					return err
				}
				if len(dev.Peers) != len(hosts)-1 {
					return fmt.Errorf("%s has %d WireGuard peers, want %d", h.Name, len(dev.Peers), len(hosts)-1)
				}
				for _, p := range dev.Peers {
					o := byKey[p.PublicKey]
					if o == nil {
						return fmt.Errorf("%s: peer %s is no host", h.Name, p.PublicKey)
					}
					if w := netip.AddrPortFrom(o.Underlay6, 51820).String(); p.Endpoint != w {
						return fmt.Errorf("%s: wgctrl shows %s at %q, want %s", h.Name, o.Name, p.Endpoint, w)
					}
				}
				peers, err := h.Client().Peers(ctx)
				if err != nil {
					return fmt.Errorf("%s: peers: %v", h.Name, err)
				}
				for _, p := range peers {
					o := byKey[p.PublicKey]
					if o == nil {
						continue
					}
					if w := netip.AddrPortFrom(o.Underlay6, 51820).String(); p.Endpoint != w || p.LastHandshake.IsZero() || p.RxBytes == 0 || p.TxBytes == 0 {
						return fmt.Errorf("%s: peer %s at %q (want %s), handshake %v, rx %d tx %d", h.Name, p.Name, p.Endpoint, w, p.LastHandshake, p.RxBytes, p.TxBytes)
					}
				}
			}
			return nil
		})
		// `wg show` inside a kernel host prints the same IPv6 endpoints.
		out, err := hosts[0].Exec(ctx, "wg", "show", "zl0", "endpoints")
		if err != nil {
			t.Fatalf("wg show zl0 endpoints in h1: %v\n%s", err, out)
		}
		for _, o := range hosts[1:] {
			if w := netip.AddrPortFrom(o.Underlay6, 51820).String(); !strings.Contains(string(out), w) {
				t.Errorf("wg show zl0 endpoints in h1 lacks %s:\n%s", w, out)
			}
		}
	})

	t.Run("known peers are remembered at [v6]:7946", func(t *testing.T) {
		eventually(t, 15*time.Second, func() error {
			var f struct {
				Peers []struct{ Name, Addr string } `json:"peers"`
			}
			b, err := os.ReadFile(filepath.Join(hosts[0].StateDir, "peers.json"))
			if err != nil || json.Unmarshal(b, &f) != nil {
				return fmt.Errorf("h1 peers.json: %v: %s", err, b)
			}
			got := map[string]string{}
			for _, p := range f.Peers {
				got[p.Name] = p.Addr
			}
			for _, o := range hosts[1:] {
				if w := netip.AddrPortFrom(o.Underlay6, testbed.GossipPort).String(); got[o.Name] != w {
					return fmt.Errorf("h1 remembers %s at %q, want %s (file: %s)", o.Name, got[o.Name], w, b)
				}
			}
			return nil
		})
	})

	t.Run("a restart with the seed down re-joins through [v6] known peers", func(t *testing.T) {
		h1, h2 := hosts[0], hosts[1]
		if err := h1.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := h2.Restart(ctx); err != nil { // its --join names h1, which is down
			t.Fatal(err)
		}
		if err := h2.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		waitWhole(t, tb, hosts[1:], 60*time.Second)
		if err := h1.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := h1.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		waitWhole(t, tb, hosts, 60*time.Second)
		eventually(t, 30*time.Second, func() error { return pingMeshErr(tb.PingMesh(ctx, tb.View(ctx, want), cs)) })
	})

	t.Logf("IPv6-only underlay test took %v", time.Since(begin).Round(time.Millisecond))
}

// pingMeshErr is PingMesh's failures as an error (nil for none).
func pingMeshErr(fails []string) error {
	if len(fails) > 0 {
		return fmt.Errorf("overlay pings failed: %s", strings.Join(fails, "; "))
	}
	return nil
}

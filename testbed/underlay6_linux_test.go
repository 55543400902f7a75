//go:build linux

package testbed

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestUnderlayFamiliesUp builds a dual-stack and an IPv6-only testbed and
// checks what the kernel has: the addresses of each family on the
// underlay's links (none tentative), pings over each, the outside resolver
// over IPv6, and no IPv4 at all on an IPv6-only underlay.
func TestUnderlayFamiliesUp(t *testing.T) {
	for _, f := range []UnderlayFamily{UnderlayDual, UnderlayIPv6} {
		t.Run(string(f), func(t *testing.T) {
			begin := time.Now()
			tb := New(t, Options{Hosts: 2, Command: sleeper, Underlay: f})
			t.Logf("up in %v", time.Since(begin).Round(time.Millisecond))
			ctx := testCtx(t)
			hosts := tb.Hosts()
			if tb.Underlay() != f {
				t.Errorf("Underlay() = %q", tb.Underlay())
			}
			for _, h := range hosts {
				if !h.Underlay6.IsValid() || (f == UnderlayIPv6) != (h.Underlay == h.Underlay6) {
					t.Errorf("%s: underlay %s, underlay6 %s", h.Name, h.Underlay, h.Underlay6)
				}
			}

			addrs, err := tb.UnderlayAddrs()
			if err != nil {
				t.Fatal(err)
			}
			want := map[string][]netip.Addr{"switch": {Switch6Addr}}
			if f.HasIPv4() {
				want["switch"] = append(want["switch"], SwitchAddr)
			}
			for _, h := range hosts {
				want[h.Name] = h.addrs()
			}
			for where, as := range addrs {
				var has []netip.Addr
				for _, a := range as {
					if a.Tentative {
						t.Errorf("%s: %s is tentative", where, a.Prefix)
					}
					if a.Prefix.Addr().Is4() && !f.HasIPv4() {
						t.Errorf("%s: IPv4 address %s on an IPv6-only underlay", where, a.Prefix)
					}
					if !a.Prefix.Addr().IsLinkLocalUnicast() {
						has = append(has, a.Prefix.Addr())
					}
				}
				slices.SortFunc(has, netip.Addr.Compare)
				slices.SortFunc(want[where], netip.Addr.Compare)
				if !slices.Equal(has, want[where]) {
					t.Errorf("%s has %v, want %v", where, has, want[where])
				}
			}
			if len(addrs) != len(hosts)+1 {
				t.Errorf("addresses of %d links, want %d", len(addrs), len(hosts)+1)
			}

			t.Run("pings over IPv6", func(t *testing.T) {
				mustPing(t, ctx, hosts[0], hosts[1].Underlay6.String())
				mustPing(t, ctx, hosts[1], hosts[0].Underlay6.String())
				for _, h := range hosts {
					mustPing(t, ctx, h, Switch6Addr.String())
					mustPing(t, ctx, h, Outside6Addr.String())
				}
			})
			t.Run("IPv4", func(t *testing.T) {
				if f.HasIPv4() {
					mustPing(t, ctx, hosts[0], hosts[1].Underlay.String())
					mustPing(t, ctx, hosts[0], OutsideAddr.String())
					return
				}
				out, err := hosts[0].Exec(ctx, "ip", "-4", "route", "show", "table", "main")
				if err != nil || strings.TrimSpace(string(out)) != "" {
					t.Errorf("IPv4 routes on an IPv6-only host: %q %v, want none", out, err)
				}
				mustNotPing(t, ctx, hosts[0], OutsideAddr.String())
			})
			t.Run("outside resolver over IPv6", func(t *testing.T) {
				h := hosts[1]
				for _, q := range []struct{ qtype, want string }{{"AAAA", Outside6Addr.String()}, {"A", OutsideAddr.String()}} {
					out, err := h.Exec(ctx, "dig", "+time=1", "+tries=1", "+short", "@"+Resolver6Addr.String(), "outside.test", q.qtype)
					if err != nil || strings.TrimSpace(string(out)) != q.want {
						t.Errorf("dig %s outside.test @%s: %q %v, want %s", q.qtype, Resolver6Addr, out, err, q.want)
					}
				}
				// Through the host's own resolv.conf.
				out, err := h.Exec(ctx, "dig", "+time=1", "+tries=1", "+short", "outside.test", "AAAA")
				if err != nil || strings.TrimSpace(string(out)) != Outside6Addr.String() {
					t.Errorf("dig AAAA outside.test through the host's resolv.conf: %q %v", out, err)
				}
			})
			t.Run("a host added later has the same families", func(t *testing.T) {
				h, err := tb.AddHost(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if h.Underlay6 != hostAddr6(h.Index) {
					t.Errorf("added %s at %s / %s", h.Name, h.Underlay, h.Underlay6)
				}
				mustPing(t, ctx, h, hosts[0].Underlay6.String())
			})
			t.Run("loaded from its state file", func(t *testing.T) {
				lt, err := Load(tb.Dir)
				if err != nil {
					t.Fatal(err)
				}
				if lt.Underlay() != f || lt.Host("h1").Underlay6 != hosts[0].Underlay6 || lt.Host("h1").Underlay != hosts[0].Underlay {
					t.Errorf("loaded: family %q, h1 %s / %s", lt.Underlay(), lt.Host("h1").Underlay, lt.Host("h1").Underlay6)
				}
			})
		})
	}
}

package testbed

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/api"
)

func TestParseUnderlayFamily(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want UnderlayFamily
		ok   bool
	}{
		{"", UnderlayIPv4, true},
		{"ipv4", UnderlayIPv4, true},
		{"IPv6", UnderlayIPv6, true},
		{"6", UnderlayIPv6, true},
		{"dual", UnderlayDual, true},
		{"dual-stack", UnderlayDual, true},
		{"ipv5", "", false},
	} {
		got, err := ParseUnderlayFamily(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseUnderlayFamily(%q) = %q, %v; want %q ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
	if _, err := (Options{Underlay: "ipv7", NoStart: true}).withDefaults(); err == nil || !strings.Contains(err.Error(), "ipv7") {
		t.Errorf("Options with underlay ipv7: %v", err)
	}
	o, err := Options{NoStart: true}.withDefaults()
	if err != nil || o.Underlay != UnderlayIPv4 {
		t.Errorf("default underlay %q, %v", o.Underlay, err)
	}
}

func TestHostAddrs(t *testing.T) {
	for _, tt := range []struct {
		f        UnderlayFamily
		i        int
		main, v6 string
	}{
		{UnderlayIPv4, 1, "192.0.2.11", "invalid IP"},
		{UnderlayDual, 1, "192.0.2.11", "2001:db8:0:2::11"},
		{UnderlayIPv6, 1, "2001:db8:0:2::11", "2001:db8:0:2::11"},
		{UnderlayIPv6, 12, "2001:db8:0:2::22", "2001:db8:0:2::22"},
		{UnderlayIPv6, MaxHosts, "2001:db8:0:2::210", "2001:db8:0:2::210"},
	} {
		main, v6 := hostAddrs(tt.f, tt.i)
		if main.String() != tt.main || v6.String() != tt.v6 {
			t.Errorf("hostAddrs(%s, %d) = %s, %s; want %s, %s", tt.f, tt.i, main, v6, tt.main, tt.v6)
		}
		if v6.IsValid() && !Underlay6Prefix.Contains(v6) {
			t.Errorf("%s is outside %s", v6, Underlay6Prefix)
		}
	}
	if g := GuestAddr6(3); g.String() != "2001:db8:0:2::203" {
		t.Errorf("GuestAddr6(3) = %s", g)
	}
}

// The daemon command on an IPv6-only underlay: it advertises, joins and
// forwards DNS over IPv6.
func TestCommandIPv6Underlay(t *testing.T) {
	for _, tt := range []struct {
		f                  UnderlayFamily
		adv, join, dns, rc string
	}{
		{UnderlayIPv4, "192.0.2.12", "192.0.2.11:7946", DNSUpstream, "nameserver 198.51.100.53\n"},
		{UnderlayDual, "192.0.2.12", "192.0.2.11:7946", DNSUpstream, "nameserver 198.51.100.53\nnameserver 2001:db8:0:64::53\n"},
		{UnderlayIPv6, "2001:db8:0:2::12", "[2001:db8:0:2::11]:7946", DNSUpstream6, "nameserver 2001:db8:0:64::53\n"},
	} {
		t.Run(string(tt.f), func(t *testing.T) {
			tb := &Testbed{Prefix: "zt", KeyFile: "/k", opts: Options{Underlay: tt.f}, st: &state{Binary: "/zlmesh", Seed: 1}}
			hs := &hostState{Name: "h2", Index: 2}
			hs.Underlay, hs.Underlay6 = hostAddrs(tt.f, 2)
			argv := tb.commandFor(tb.newHost(hs))
			flag := func(name string) string {
				if i := slices.Index(argv, name); i >= 0 && i+1 < len(argv) {
					return argv[i+1]
				}
				return ""
			}
			if flag("--advertise-addr") != tt.adv || flag("--join") != tt.join || flag("--dns-upstream") != tt.dns {
				t.Errorf("argv %q", argv)
			}
			if rc := tb.hostResolvConf(); !strings.HasSuffix(rc, tt.rc) || strings.Count(rc, "nameserver") != strings.Count(tt.rc, "nameserver") {
				t.Errorf("resolv.conf %q, want it to end in %q", rc, tt.rc)
			}
		})
	}
}

func TestResolverArgvFamilies(t *testing.T) {
	v4 := strings.Join(resolverArgv(UnderlayIPv4), " ")
	if strings.Contains(v4, "2001:db8") {
		t.Errorf("IPv4 underlay: resolver has IPv6: %s", v4)
	}
	v6 := strings.Join(resolverArgv(UnderlayIPv6), " ")
	for _, want := range []string{"--listen-address=198.51.100.53", "--listen-address=2001:db8:0:64::53", "--host-record=outside.test,198.51.100.2,2001:db8:0:64::2"} {
		if !strings.Contains(v6, want) {
			t.Errorf("IPv6 underlay: %q missing in %s", want, v6)
		}
	}
}

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

// A node in userspace mode has no kernel routes through a TUN: Problems
// does not ask for them, and still checks its WireGuard peers.
func TestProblemsUserspaceHostHasNoKernelRoutes(t *testing.T) {
	v := healthyView()
	h := &v.Hosts[2]
	h.Status.Userspace = &api.UserspaceStatus{}
	h.Routes, h.Links = nil, nil
	h.Attachments, h.OnDisk, h.Leases = nil, nil, 0
	v.Containers = v.Containers[:2]
	var eps []api.ServiceEndpoint
	for _, e := range v.Hosts[0].Services {
		if e.Node != h.Host {
			eps = append(eps, e)
		}
	}
	for i := range v.Hosts {
		v.Hosts[i].Services = eps
	}
	if p := v.Problems(); len(p) > 0 {
		t.Fatalf("a userspace host without kernel routes has problems:\n%s", strings.Join(p, "\n"))
	}
	delete(h.WireGuard, "keyh1")
	if p := strings.Join(v.Problems(), "\n"); !strings.Contains(p, "h3: no WireGuard peer for h1") {
		t.Errorf("a missing peer of a userspace host is not found:\n%s", p)
	}
}

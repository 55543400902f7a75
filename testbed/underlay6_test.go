package testbed

import (
	"slices"
	"strings"
	"testing"

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

package natd

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func validConfig() Config {
	return Config{
		Cluster:    netip.MustParsePrefix("10.200.0.0/16"),
		Local:      []netip.Prefix{netip.MustParsePrefix("10.200.3.0/24")},
		Overlay:    netip.MustParseAddr("10.200.3.1"),
		Masquerade: true,
		Ports: []Port{
			{Proto: "tcp", HostPort: 8080, Target: netip.MustParseAddrPort("10.200.3.34:80")},
			{Proto: "udp", HostPort: 8080, Target: netip.MustParseAddrPort("10.200.3.34:80")},
			{Proto: "tcp", HostAddr: netip.MustParseAddr("192.0.2.10"), HostPort: 9090, Target: netip.MustParseAddrPort("10.200.5.7:80")},
			{Proto: "tcp", HostAddr: netip.MustParseAddr("192.0.2.11"), HostPort: 9090, Target: netip.MustParseAddrPort("10.200.5.8:80")},
		},
	}
}

func TestValidate(t *testing.T) {
	a := netip.MustParseAddr
	ap := netip.MustParseAddrPort
	p := netip.MustParsePrefix
	tests := []struct {
		name     string
		mutate   func(*Config)
		want     string // substring of the error; "" = valid
		conflict bool
	}{
		{name: "valid", mutate: func(*Config) {}},
		{name: "no ports, masquerade off", mutate: func(c *Config) { c.Ports = nil; c.Masquerade = false }},
		{name: "custom interface names", mutate: func(c *Config) { c.OverlayIf = "wg-mesh"; c.BridgePrefix = "br-" }},
		{name: "cluster missing", mutate: func(c *Config) { c.Cluster = netip.Prefix{} }, want: "cluster missing"},
		{name: "cluster host bits", mutate: func(c *Config) { c.Cluster = p("10.200.1.0/16") }, want: "host bits"},
		{name: "cluster ipv6", mutate: func(c *Config) { c.Cluster = p("fd00::/48") }, want: "only IPv4"},
		{name: "cluster /0", mutate: func(c *Config) { c.Cluster = p("0.0.0.0/0") }, want: "covers every address"},
		{name: "no local prefix", mutate: func(c *Config) { c.Local = nil }, want: "no local prefix"},
		{name: "local prefix missing", mutate: func(c *Config) { c.Local = []netip.Prefix{{}} }, want: "local prefix missing"},
		{name: "local prefix outside", mutate: func(c *Config) { c.Local = []netip.Prefix{p("10.200.3.0/26"), p("10.201.3.0/24")} }, want: "not inside cluster"},
		{name: "local prefix larger", mutate: func(c *Config) { c.Local = []netip.Prefix{p("10.0.0.0/8")} }, want: "not inside cluster"},
		{name: "several local prefixes", mutate: func(c *Config) { c.Local = []netip.Prefix{p("10.200.3.0/26"), p("10.200.9.0/25")} }},
		{name: "too many local prefixes", mutate: func(c *Config) { c.Local = make([]netip.Prefix, MaxLocal+1) }, want: "at most"},
		{name: "overlay missing", mutate: func(c *Config) { c.Overlay = netip.Addr{} }, want: "overlay address missing"},
		{name: "overlay outside", mutate: func(c *Config) { c.Overlay = a("192.0.2.1") }, want: "not inside cluster"},
		{name: "overlay ipv6", mutate: func(c *Config) { c.Overlay = a("fd00::1") }, want: "only IPv4"},
		{name: "overlay if too long", mutate: func(c *Config) { c.OverlayIf = "abcdefghijklmnop" }, want: "1 to 15 bytes"},
		{name: "overlay if slash", mutate: func(c *Config) { c.OverlayIf = "zl/0" }, want: "not allowed"},
		{name: "overlay if space", mutate: func(c *Config) { c.OverlayIf = "zl 0" }, want: "not allowed"},
		{name: "overlay if dot", mutate: func(c *Config) { c.OverlayIf = "." }, want: "not an interface name"},
		{name: "bridge prefix too long", mutate: func(c *Config) { c.BridgePrefix = "abcdefghijklmno" }, want: "1 to 14 bytes"},
		{name: "overlay matches bridge prefix", mutate: func(c *Config) { c.OverlayIf = "zlb-0" }, want: "starts with the bridge prefix"},
		{name: "bad proto", mutate: func(c *Config) { c.Ports[0].Proto = "sctp" }, want: `ports[0] sctp *:8080 → 10.200.3.34:80: protocol "sctp"`},
		{name: "upper-case proto", mutate: func(c *Config) { c.Ports[0].Proto = "TCP" }, want: `protocol "TCP"`},
		{name: "host port 0", mutate: func(c *Config) { c.Ports[1].HostPort = 0 }, want: "ports[1] udp *:0 → 10.200.3.34:80: host port 0"},
		{name: "target port 0", mutate: func(c *Config) { c.Ports[0].Target = ap("10.200.3.34:0") }, want: "port 0"},
		{name: "target missing", mutate: func(c *Config) { c.Ports[0].Target = netip.AddrPort{} }, want: "target missing"},
		{name: "target outside cluster", mutate: func(c *Config) { c.Ports[0].Target = ap("192.168.1.5:80") }, want: "outside the cluster"},
		{name: "target ipv6", mutate: func(c *Config) { c.Ports[0].Target = ap("[fd00::5]:80") }, want: "only IPv4"},
		{name: "host addr ipv6", mutate: func(c *Config) { c.Ports[0].HostAddr = a("2001:db8::1") }, want: "only IPv4"},
		{name: "host addr 4in6", mutate: func(c *Config) { c.Ports[0].HostAddr = a("::ffff:192.0.2.10") }, want: "write it as IPv4"},
		{name: "host addr unspecified", mutate: func(c *Config) { c.Ports[0].HostAddr = a("0.0.0.0") }, want: "leave it unset"},
		{name: "host addr loopback", mutate: func(c *Config) { c.Ports[0].HostAddr = a("127.0.0.1") }, want: "loopback"},
		{name: "host addr multicast", mutate: func(c *Config) { c.Ports[0].HostAddr = a("224.0.0.1") }, want: "not a unicast"},
		{name: "host addr broadcast", mutate: func(c *Config) { c.Ports[0].HostAddr = a("255.255.255.255") }, want: "not a unicast"},
		{name: "duplicate all addresses", mutate: func(c *Config) {
			c.Ports = append(c.Ports, Port{Proto: "tcp", HostPort: 8080, Target: ap("10.200.3.35:81")})
		}, want: "ports[4] tcp *:8080 → 10.200.3.35:81: same host port as ports[0]", conflict: true},
		{name: "duplicate one address", mutate: func(c *Config) {
			c.Ports = append(c.Ports, Port{Proto: "tcp", HostAddr: a("192.0.2.10"), HostPort: 9090, Target: ap("10.200.3.35:81")})
		}, want: "same host port as ports[2]", conflict: true},
		{name: "one address under all addresses", mutate: func(c *Config) {
			c.Ports = append(c.Ports, Port{Proto: "tcp", HostAddr: a("192.0.2.10"), HostPort: 8080, Target: ap("10.200.3.35:81")})
		}, want: "overlaps ports[0] tcp *:8080", conflict: true},
		{name: "all addresses over one address", mutate: func(c *Config) {
			c.Ports = append(c.Ports, Port{Proto: "tcp", HostPort: 9090, Target: ap("10.200.3.35:81")})
		}, want: "on all addresses overlaps ports[2]", conflict: true},
		{name: "too many ports", mutate: func(c *Config) {
			c.Ports = make([]Port, MaxPorts+1)
		}, want: "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted it, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %q does not wrap ErrInvalid", err)
			}
			if got := errors.Is(err, ErrConflict); got != tt.conflict {
				t.Errorf("errors.Is(err, ErrConflict) = %v, want %v", got, tt.conflict)
			}
			if _, perr := Plan(c); perr == nil || perr.Error() != err.Error() {
				t.Errorf("Plan error %v, want the Validate error", perr)
			}
		})
	}
}

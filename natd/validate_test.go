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
		{name: "cluster ipv6", mutate: func(c *Config) { c.Cluster = p("fd00::/48") }, want: "cluster fd00::/48: want an IPv4 address"},
		{name: "cluster /0", mutate: func(c *Config) { c.Cluster = p("0.0.0.0/0") }, want: "covers every address"},
		{name: "no local prefix", mutate: func(c *Config) { c.Local = nil }, want: "no local prefix"},
		{name: "local prefix missing", mutate: func(c *Config) { c.Local = []netip.Prefix{{}} }, want: "local prefix missing"},
		{name: "local prefix outside", mutate: func(c *Config) { c.Local = []netip.Prefix{p("10.200.3.0/26"), p("10.201.3.0/24")} }, want: "not inside cluster"},
		{name: "local prefix larger", mutate: func(c *Config) { c.Local = []netip.Prefix{p("10.0.0.0/8")} }, want: "not inside cluster"},
		{name: "several local prefixes", mutate: func(c *Config) { c.Local = []netip.Prefix{p("10.200.3.0/26"), p("10.200.9.0/25")} }},
		{name: "too many local prefixes", mutate: func(c *Config) { c.Local = make([]netip.Prefix, MaxLocal+1) }, want: "at most"},
		{name: "overlay missing", mutate: func(c *Config) { c.Overlay = netip.Addr{} }, want: "overlay address missing"},
		{name: "overlay outside", mutate: func(c *Config) { c.Overlay = a("192.0.2.1") }, want: "not inside cluster"},
		{name: "overlay ipv6", mutate: func(c *Config) { c.Overlay = a("fd00::1") }, want: "want an IPv4 address"},
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
		{name: "target ipv6", mutate: func(c *Config) { c.Ports[0].Target = ap("[fd00::5]:80") }, want: "target [fd00::5]:80: want an IPv4 address"},
		{name: "target 4in6", mutate: func(c *Config) { c.Ports[0].Target = ap("[::ffff:10.200.3.34]:80") }, want: "want an IPv4 address"},
		{name: "host addr ipv6 with ipv6 off", mutate: func(c *Config) { c.Ports[0].HostAddr = a("2001:db8::1") }, want: "IPv6 is off"},
		{name: "target6 with ipv6 off", mutate: func(c *Config) { c.Ports[0].Target6 = ap("[fd00::5]:80") }, want: "IPv6 is off"},
		{name: "local6 with ipv6 off", mutate: func(c *Config) { c.Local6 = []netip.Prefix{p("fd00:0:0:3::/64")} }, want: "without cluster6"},
		{name: "overlay6 with ipv6 off", mutate: func(c *Config) { c.Overlay6 = a("fd00::1") }, want: "without cluster6"},
		{name: "masquerade6 with ipv6 off", mutate: func(c *Config) { c.Masquerade6 = true }, want: "masquerade6 without cluster6"},
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
			checkValidate(t, c, tt.want, tt.conflict)
		})
	}
}

// checkValidate checks that c.Validate fails with an error containing want
// (or succeeds when want is ""), wrapping ErrInvalid and ErrConflict as
// conflict says, and that Plan fails alike.
func checkValidate(t *testing.T, c Config, want string, conflict bool) {
	t.Helper()
	err := c.Validate()
	if want == "" {
		if err != nil {
			t.Fatalf("Validate: %v", err)
		}
		if _, err := Plan(c); err != nil {
			t.Fatalf("Plan: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("Validate accepted it, want error containing %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("error %q does not wrap ErrInvalid", err)
	}
	if got := errors.Is(err, ErrConflict); got != conflict {
		t.Errorf("errors.Is(err, ErrConflict) = %v, want %v", got, conflict)
	}
	if _, perr := Plan(c); perr == nil || perr.Error() != err.Error() {
		t.Errorf("Plan error %v, want the Validate error", perr)
	}
}

// validConfig6 is validConfig with IPv6 on: the node's /64 twin of its
// block, port 0 on all addresses of both families, port 4 on one IPv6
// address (its IPv4 target unused).
func validConfig6() Config {
	c := validConfig()
	c.Cluster6 = netip.MustParsePrefix("fd00:200::/48")
	c.Local6 = []netip.Prefix{netip.MustParsePrefix("fd00:200:0:3::/64")}
	c.Overlay6 = netip.MustParseAddr("fd00:200:0:3::1")
	c.Masquerade6 = true
	c.Ports[0].Target6 = netip.MustParseAddrPort("[fd00:200:0:3::22]:80")
	c.Ports = append(c.Ports, Port{Proto: "tcp", HostAddr: netip.MustParseAddr("2001:db8::10"), HostPort: 9090,
		Target: netip.MustParseAddrPort("10.200.5.7:80"), Target6: netip.MustParseAddrPort("[fd00:200:0:5::7]:80")})
	return c
}

func TestValidate6(t *testing.T) {
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
		{name: "ipv6 off", mutate: func(c *Config) {
			c.Cluster6, c.Local6, c.Overlay6, c.Masquerade6 = netip.Prefix{}, nil, netip.Addr{}, false
			c.Ports = c.Ports[:4]
			c.Ports[0].Target6 = netip.AddrPortFrom(netip.Addr{}, 0)
		}},
		{name: "masquerade6 off", mutate: func(c *Config) { c.Masquerade6 = false }},
		{name: "several local6 prefixes", mutate: func(c *Config) { c.Local6 = []netip.Prefix{p("fd00:200:0:3::/64"), p("fd00:200:0:8::/63")} }},
		{name: "cluster6 ipv4", mutate: func(c *Config) { c.Cluster6 = p("10.201.0.0/16") }, want: "cluster6 10.201.0.0/16: want an IPv6 address"},
		{name: "cluster6 4in6", mutate: func(c *Config) { c.Cluster6 = p("::ffff:10.200.0.0/112") }, want: "want an IPv6 address"},
		{name: "cluster6 host bits", mutate: func(c *Config) { c.Cluster6 = p("fd00:200:1::/40") }, want: "host bits"},
		{name: "cluster6 /0", mutate: func(c *Config) { c.Cluster6 = p("::/0") }, want: "covers every address"},
		{name: "no local6", mutate: func(c *Config) { c.Local6 = nil }, want: "no local6 prefix"},
		{name: "local6 missing", mutate: func(c *Config) { c.Local6 = []netip.Prefix{{}} }, want: "local6 prefix missing"},
		{name: "local6 ipv4", mutate: func(c *Config) { c.Local6 = []netip.Prefix{p("10.200.3.0/24")} }, want: "local6 prefix 10.200.3.0/24: want an IPv6"},
		{name: "local6 outside", mutate: func(c *Config) { c.Local6 = []netip.Prefix{p("fd00:201:0:3::/64")} }, want: "not inside cluster fd00:200::/48"},
		{name: "local6 larger", mutate: func(c *Config) { c.Local6 = []netip.Prefix{p("fd00::/16")} }, want: "not inside cluster"},
		{name: "local6 host bits", mutate: func(c *Config) { c.Local6 = []netip.Prefix{p("fd00:200:0:3::1/64")} }, want: "host bits"},
		{name: "too many local6", mutate: func(c *Config) { c.Local6 = make([]netip.Prefix, MaxLocal+1) }, want: "at most"},
		{name: "overlay6 missing", mutate: func(c *Config) { c.Overlay6 = netip.Addr{} }, want: "overlay6 address missing"},
		{name: "overlay6 ipv4", mutate: func(c *Config) { c.Overlay6 = a("10.200.3.1") }, want: "overlay6 address 10.200.3.1: want an IPv6"},
		{name: "overlay6 outside", mutate: func(c *Config) { c.Overlay6 = a("2001:db8::1") }, want: "not inside cluster"},
		{name: "overlay6 zone", mutate: func(c *Config) { c.Overlay6 = a("fd00:200:0:3::1%zl0") }, want: "no zone"},
		{name: "target6 ipv4", mutate: func(c *Config) { c.Ports[0].Target6 = ap("10.200.3.34:80") }, want: "target6 10.200.3.34:80: want an IPv6"},
		{name: "target6 outside", mutate: func(c *Config) { c.Ports[0].Target6 = ap("[fd00:201::22]:80") }, want: "outside the cluster fd00:200::/48"},
		{name: "target6 port 0", mutate: func(c *Config) { c.Ports[0].Target6 = ap("[fd00:200:0:3::22]:0") }, want: "port 0"},
		{name: "target6 zone", mutate: func(c *Config) { c.Ports[0].Target6 = ap("[fd00:200:0:3::22%eth0]:80") }, want: "no zone"},
		{name: "ipv6 host addr without target6", mutate: func(c *Config) { c.Ports[4].Target6 = netip.AddrPort{} }, want: "target6 missing (host address 2001:db8::10 is IPv6)"},
		{name: "ipv4 host addr without target", mutate: func(c *Config) {
			c.Ports[2].Target, c.Ports[2].Target6 = netip.AddrPort{}, ap("[fd00:200:0:5::7]:80")
		}, want: "target missing (host address 192.0.2.10 is IPv4)"},
		{name: "no target at all", mutate: func(c *Config) { c.Ports[0].Target, c.Ports[0].Target6 = netip.AddrPort{}, netip.AddrPort{} }, want: "target missing"},
		{name: "ipv6 only on all addresses", mutate: func(c *Config) { c.Ports[0].Target = netip.AddrPort{} }},
		{name: "ipv4 host addr with an unused target6", mutate: func(c *Config) { c.Ports[2].Target6 = ap("[fd00:200:0:5::7]:80") }},
		{name: "host addr link-local", mutate: func(c *Config) { c.Ports[4].HostAddr = a("fe80::1") }, want: "link-local"},
		{name: "host addr ::1", mutate: func(c *Config) { c.Ports[4].HostAddr = a("::1") }, want: "loopback"},
		{name: "host addr ::", mutate: func(c *Config) { c.Ports[4].HostAddr = a("::") }, want: "leave it unset"},
		{name: "host addr multicast6", mutate: func(c *Config) { c.Ports[4].HostAddr = a("ff02::1") }, want: "not a unicast"},
		{name: "host addr zone", mutate: func(c *Config) { c.Ports[4].HostAddr = a("2001:db8::10%eth0") }, want: "no zone"},
		{name: "same port, ipv4 only and ipv6 only on all addresses", mutate: func(c *Config) {
			c.Ports = append(c.Ports, Port{Proto: "udp", HostPort: 8080, Target6: ap("[fd00:200:0:3::23]:53")})
		}},
		{name: "ipv6 address beside an ipv4-only port on all addresses", mutate: func(c *Config) {
			c.Ports = append(c.Ports, Port{Proto: "udp", HostAddr: a("2001:db8::10"), HostPort: 8080, Target6: ap("[fd00:200:0:3::23]:53")})
		}},
		{name: "duplicate ipv6 on all addresses", mutate: func(c *Config) {
			c.Ports = append(c.Ports, Port{Proto: "tcp", HostPort: 8080, Target6: ap("[fd00:200:0:3::23]:81")})
		}, want: "ports[5] tcp *:8080 → [fd00:200:0:3::23]:81: same host port as ports[0]", conflict: true},
		{name: "duplicate ipv6 address", mutate: func(c *Config) {
			c.Ports = append(c.Ports, Port{Proto: "tcp", HostAddr: a("2001:db8::10"), HostPort: 9090, Target6: ap("[fd00:200:0:3::23]:81")})
		}, want: "same host port as ports[4]", conflict: true},
		{name: "ipv6 address under all addresses", mutate: func(c *Config) {
			c.Ports = append(c.Ports, Port{Proto: "tcp", HostAddr: a("2001:db8::11"), HostPort: 8080, Target6: ap("[fd00:200:0:3::23]:81")})
		}, want: "overlaps ports[0] tcp *:8080 → 10.200.3.34:80 [fd00:200:0:3::22]:80 on all addresses", conflict: true},
		{name: "all addresses over an ipv6 address", mutate: func(c *Config) {
			c.Ports = append(c.Ports, Port{Proto: "tcp", HostPort: 9090, Target6: ap("[fd00:200:0:3::23]:81")})
		}, want: "on all addresses overlaps ports[4] tcp [2001:db8::10]:9090", conflict: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig6()
			tt.mutate(&c)
			checkValidate(t, c, tt.want, tt.conflict)
		})
	}
}

package natd

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// FuzzPlan feeds arbitrary configs to Validate and Plan: they must never
// panic, must agree, and a valid config must plan one rule per port plus the
// source-NAT rules.
func FuzzPlan(f *testing.F) {
	f.Add("10.200.0.0/16", "10.200.3.0/26,10.200.9.128/25", "10.200.3.1", "zl0", "zlb-", true, "", "", "", false, []byte("tcp\x00\x1f\x90\x0a\xc8\x03\x22\x00\x50"))
	f.Add("10.200.0.0/16", "10.200.3.0/24", "10.200.3.1", "", "", false, "", "", "", false, []byte("udp\x01\x00\x35\xc0\x00\x02\x0a\x0a\xc8\x05\x07\x00\x35tcp\x00\x00\x35\x0a\xc8\x05\x07\x00\x35"))
	f.Add("fd00::/48", "fd00:0:3::/64", "fd00:0:3::1", "zl0", "zlb-", true, "", "", "", false, []byte{})
	f.Add("10.200.0.0/16", "10.200.0.0/16", "10.200.0.0", "a/b", "zlb-zlb-zlb-zlb-", true, "", "", "", false, []byte("xyz\x02"))
	f.Add("10.200.0.0/16", "10.200.3.0/24", "10.200.3.1", "zl0", "zlb-", true, "fd00:200::/48", "fd00:200:0:3::/64", "fd00:200:0:3::1", true,
		[]byte("tcp\x02\x1f\x90\x0a\xc8\x03\x22\x00\x50\xfd\x00\x02\x00\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00\x22\x00\x50"))
	f.Add("10.200.0.0/16", "10.200.3.0/24", "10.200.3.1", "zl0", "zlb-", false, "fd00:200::/48", "fd00:200:0:3::/64", "fd00:200:0:3::1", false,
		[]byte("udp\x07\x00\x35\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10\x0a\xc8\x05\x07\x00\x35\xfd\x00\x02\x00\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x07\x00\x35"))
	f.Fuzz(func(t *testing.T, cluster, subnet, overlay, oif, bprefix string, masq bool, cluster6, subnet6, overlay6 string, masq6 bool, ports []byte) {
		cfg := Config{OverlayIf: oif, BridgePrefix: bprefix, Masquerade: masq, Masquerade6: masq6}
		cfg.Cluster, _ = netip.ParsePrefix(cluster)
		for _, f := range strings.Split(subnet, ",") {
			l, _ := netip.ParsePrefix(f)
			cfg.Local = append(cfg.Local, l)
		}
		cfg.Overlay, _ = netip.ParseAddr(overlay)
		cfg.Cluster6, _ = netip.ParsePrefix(cluster6)
		if subnet6 != "" {
			for _, f := range strings.Split(subnet6, ",") {
				l, _ := netip.ParsePrefix(f)
				cfg.Local6 = append(cfg.Local6, l)
			}
		}
		cfg.Overlay6, _ = netip.ParseAddr(overlay6)
		cfg.Ports = decodePorts(ports)
		err := cfg.Validate()
		rules, perr := Plan(cfg)
		if (err == nil) != (perr == nil) {
			t.Fatalf("Validate %v but Plan %v", err, perr)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		want := 2*len(cfg.Local) + 1
		if masq {
			want += len(cfg.Local)
		}
		if cfg.Cluster6.IsValid() {
			want += 2*len(cfg.Local6) + 1
			if masq6 {
				want += len(cfg.Local6)
			}
		}
		for _, p := range cfg.Ports {
			if p.Target.IsValid() && !p.HostAddr.Is6() {
				want++
			}
			if p.Target6.IsValid() && !p.HostAddr.Is4() {
				want++
			}
		}
		if len(rules) != want {
			t.Fatalf("%d rules, want %d, for %d ports (masquerade %v, %v)", len(rules), want, len(cfg.Ports), masq, masq6)
		}
		for _, r := range rules {
			_ = r.String()
			if r.Kind != KindPublish {
				continue
			}
			if cluster := map[bool]netip.Prefix{false: cfg.Cluster, true: cfg.Cluster6}[r.Is6()]; !cluster.Contains(r.Target.Addr()) {
				t.Fatalf("rule %s targets outside the cluster %s", r, cluster)
			}
			if r.HostAddr.IsValid() && r.HostAddr.Is6() != r.Is6() {
				t.Fatalf("rule %s mixes families", r)
			}
		}
	})
}

// decodePorts reads ports from b: proto name (3 bytes), a flag byte (bit 0:
// host address follows, bit 1: IPv6 target follows, bit 2: the host address
// is IPv6), host port, [host address,] IPv4 target address and port, [IPv6
// target address and port].
func decodePorts(b []byte) []Port {
	var ps []Port
	for len(b) >= 12 {
		p := Port{Proto: string(b[:3])}
		flags := b[3]
		p.HostPort = uint16(b[4])<<8 | uint16(b[5])
		b = b[6:]
		if flags&1 == 1 {
			if flags&4 == 0 {
				if len(b) < 4 {
					break
				}
				p.HostAddr = netip.AddrFrom4([4]byte(b[:4]))
				b = b[4:]
			} else {
				if len(b) < 16 {
					break
				}
				p.HostAddr = netip.AddrFrom16([16]byte(b[:16]))
				b = b[16:]
			}
		}
		if len(b) < 6 {
			break
		}
		if a := netip.AddrFrom4([4]byte(b[:4])); !a.IsUnspecified() {
			p.Target = netip.AddrPortFrom(a, uint16(b[4])<<8|uint16(b[5]))
		}
		b = b[6:]
		if flags&2 == 2 {
			if len(b) < 18 {
				break
			}
			p.Target6 = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[:16])), uint16(b[16])<<8|uint16(b[17]))
			b = b[18:]
		}
		ps = append(ps, p)
	}
	return ps
}

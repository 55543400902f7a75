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
	f.Add("10.200.0.0/16", "10.200.3.0/26,10.200.9.128/25", "10.200.3.1", "zl0", "zlb-", true, []byte("tcp\x00\x1f\x90\x0a\xc8\x03\x22\x00\x50"))
	f.Add("10.200.0.0/16", "10.200.3.0/24", "10.200.3.1", "", "", false, []byte("udp\x01\x00\x35\xc0\x00\x02\x0a\x0a\xc8\x05\x07\x00\x35tcp\x00\x00\x35\x0a\xc8\x05\x07\x00\x35"))
	f.Add("fd00::/48", "fd00:0:3::/64", "fd00:0:3::1", "zl0", "zlb-", true, []byte{})
	f.Add("10.200.0.0/16", "10.200.0.0/16", "10.200.0.0", "a/b", "zlb-zlb-zlb-zlb-", true, []byte("xyz\x02"))
	f.Fuzz(func(t *testing.T, cluster, subnet, overlay, oif, bprefix string, masq bool, ports []byte) {
		cfg := Config{OverlayIf: oif, BridgePrefix: bprefix, Masquerade: masq}
		cfg.Cluster, _ = netip.ParsePrefix(cluster)
		for _, f := range strings.Split(subnet, ",") {
			l, _ := netip.ParsePrefix(f)
			cfg.Local = append(cfg.Local, l)
		}
		cfg.Overlay, _ = netip.ParseAddr(overlay)
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
		want := len(cfg.Ports) + 2*len(cfg.Local) + 1
		if masq {
			want += len(cfg.Local)
		}
		if len(rules) != want {
			t.Fatalf("%d rules for %d ports (masquerade %v)", len(rules), len(cfg.Ports), masq)
		}
		for _, r := range rules {
			_ = r.String()
			if r.Kind == KindPublish && !cfg.Cluster.Contains(r.Target.Addr()) {
				t.Fatalf("rule %s targets outside the cluster", r)
			}
		}
	})
}

// decodePorts reads ports from b: proto name (3 bytes), a flag byte (bit 0:
// host address follows), host port, [host address,] target address, target
// port.
func decodePorts(b []byte) []Port {
	var ps []Port
	for len(b) >= 12 {
		p := Port{Proto: string(b[:3])}
		withAddr := b[3]&1 == 1
		p.HostPort = uint16(b[4])<<8 | uint16(b[5])
		b = b[6:]
		if withAddr {
			if len(b) < 4 {
				break
			}
			p.HostAddr = netip.AddrFrom4([4]byte(b[:4]))
			b = b[4:]
		}
		if len(b) < 6 {
			break
		}
		p.Target = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[:4])), uint16(b[4])<<8|uint16(b[5]))
		b = b[6:]
		ps = append(ps, p)
	}
	return ps
}

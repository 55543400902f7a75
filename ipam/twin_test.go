package ipam

import (
	"net/netip"
	"strings"
	"testing"
)

func TestTwinsAddr(t *testing.T) {
	tw, err := NewTwins(DefaultPool(), netip.MustParsePrefix("fd12:3456:789a::/48"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ v4, v6 string }{
		{"10.200.0.0", "fd12:3456:789a::"},
		{"10.200.0.5", "fd12:3456:789a::5"},
		{"10.200.0.63", "fd12:3456:789a::3f"},
		{"10.200.0.64", "fd12:3456:789a:1::"},
		{"10.200.1.65", "fd12:3456:789a:5::1"},
		{"10.203.255.53", "fd12:3456:789a:ffc::35"},
		{"10.203.255.255", "fd12:3456:789a:fff::3f"},
	} {
		got, ok := tw.Addr(netip.MustParseAddr(c.v4))
		if !ok || got != netip.MustParseAddr(c.v6) {
			t.Errorf("Addr(%s) = %s, %v; want %s", c.v4, got, ok, c.v6)
		}
	}
	for _, out := range []string{"10.199.255.255", "10.204.0.0", "192.0.2.1", "fd00::1"} {
		if got, ok := tw.Addr(netip.MustParseAddr(out)); ok {
			t.Errorf("Addr(%s) = %s, want none (outside the cluster)", out, got)
		}
	}
}

func TestTwinsPrefix(t *testing.T) {
	tw, err := NewTwins(DefaultPool(), netip.MustParsePrefix("fd12:3456:789a::/48"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ v4, v6 string }{
		{"10.200.0.0/26", "fd12:3456:789a::/64"},
		{"10.200.1.64/26", "fd12:3456:789a:5::/64"},
		{"10.200.1.0/24", "fd12:3456:789a:4::/62"},    // 4 blocks
		{"10.200.0.0/14", "fd12:3456:789a::/52"},      // the whole cluster
		{"10.200.1.65/32", "fd12:3456:789a:5::1/128"}, // a container
		{"10.200.1.64/28", "fd12:3456:789a:5::/124"},
	} {
		got, ok := tw.Prefix(netip.MustParsePrefix(c.v4))
		if !ok || got != netip.MustParsePrefix(c.v6) {
			t.Errorf("Prefix(%s) = %s, %v; want %s", c.v4, got, ok, c.v6)
		}
	}
	if got, ok := tw.Prefix(netip.MustParsePrefix("10.0.0.0/8")); ok {
		t.Errorf("Prefix(10.0.0.0/8) = %s, want none (wider than the cluster)", got)
	}
	// Coalescing commutes with the mapping: the twins of two sibling
	// blocks coalesce into the twin of their parent.
	blocks := []netip.Prefix{netip.MustParsePrefix("10.200.1.0/26"), netip.MustParsePrefix("10.200.1.64/26")}
	want, _ := tw.Prefix(netip.MustParsePrefix("10.200.1.0/25"))
	if got := Coalesce(tw.Prefixes(blocks)); len(got) != 1 || got[0] != want {
		t.Errorf("Coalesce(twins) = %v, want [%s]", got, want)
	}
	// Every twin of a block lies inside the cluster's prefix and holds the
	// twins of the block's addresses.
	p := DefaultPool()
	for i := uint64(0); i < p.Blocks(); i += 97 {
		b := child(p.Cluster(), p.BlockBits(), i)
		tb, ok := tw.Prefix(b)
		a, _ := tw.Addr(NodeAddr(b))
		if !ok || tb.Bits() != 64 || !tw.Cluster6().Contains(tb.Addr()) || !tb.Contains(a) {
			t.Fatalf("block %s: twin %s (ok %v) does not hold %s inside %s", b, tb, ok, a, tw.Cluster6())
		}
	}
}

func TestNewTwinsErrors(t *testing.T) {
	big, err := NewPool(netip.MustParsePrefix("10.0.0.0/8"), 30) // 2^22 blocks
	if err != nil {
		t.Fatal(err)
	}
	v6pool, err := NewPool(netip.MustParsePrefix("fd00:1::/48"), 64)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		pool *Pool
		p6   string
		want string
	}{
		{DefaultPool(), "2001:db8::/48", "not a unique local"},
		{DefaultPool(), "fd12::1/48", "not masked"},
		{DefaultPool(), "fd12:3456:789a:bc00::/56", "too long for the block mapping"},
		{DefaultPool(), "fd12:3456:789a:bcde::/64", "too long for the block mapping"},
		{DefaultPool(), "10.0.0.0/8", "not an IPv6 prefix"},
		{DefaultPool(), "fc00::/6", "not a unique local"},
		{big, "fd12:3456:789a::/48", "2^22 blocks"},
		{v6pool, "fd12:3456:789a::/48", "need an IPv4 cluster CIDR"},
	} {
		var p6 netip.Prefix
		if c.p6 != "" {
			p6 = netip.MustParsePrefix(c.p6)
		}
		_, err := NewTwins(c.pool, p6)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewTwins(%s, %s) = %v, want an error with %q", c.pool.Cluster(), c.p6, err, c.want)
		}
	}
	if _, err := NewTwins(big, netip.MustParsePrefix("fd12:3456::/40")); err != nil {
		t.Errorf("a /40 holds 2^24 twins: %v", err)
	}
}

func TestULAFor(t *testing.T) {
	a, b := ULAFor([]byte("key one")), ULAFor([]byte("key two"))
	if a == b {
		t.Errorf("two keys gave one prefix %s", a)
	}
	if a != ULAFor([]byte("key one")) {
		t.Error("ULAFor is not deterministic")
	}
	for _, p := range []netip.Prefix{a, b} {
		if err := checkCluster6(p); err != nil || p.Bits() != 48 || p.Addr().As16()[0] != 0xfd {
			t.Errorf("ULAFor gave %s: %v", p, err)
		}
		if _, err := NewTwins(DefaultPool(), p); err != nil {
			t.Errorf("default pool with %s: %v", p, err)
		}
	}
}

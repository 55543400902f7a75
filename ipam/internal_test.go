package ipam

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestBitsetFirstClear(t *testing.T) {
	cases := []struct {
		name string
		set  []uint64
		from uint64
		want uint64
	}{
		{"empty", nil, 2, 2},
		{"from zero", nil, 0, 0},
		{"skips taken", []uint64{2, 3, 4}, 2, 5},
		{"hole", []uint64{2, 4}, 2, 3},
		{"below from ignored", []uint64{5}, 2, 2},
		{"word boundary", seq(2, 64), 2, 64},
		{"crosses words", seq(2, 200), 2, 200},
		{"from in later word", seq(60, 70), 63, 70},
		{"sparse far", []uint64{1 << 40}, 1 << 40, 1<<40 + 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := bitset{}
			for _, i := range tc.set {
				b.set(i)
			}
			if got := b.firstClear(tc.from); got != tc.want {
				t.Fatalf("firstClear(%d) = %d, want %d", tc.from, got, tc.want)
			}
		})
	}
}

func seq(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// TestBitsetAgainstMap compares the bitset with a plain map on random sets
// and clears.
func TestBitsetAgainstMap(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	b, m := bitset{}, map[uint64]bool{}
	for range 5000 {
		i := uint64(r.IntN(300))
		if r.IntN(3) == 0 {
			b.clear(i)
			delete(m, i)
		} else {
			b.set(i)
			m[i] = true
		}
		from := uint64(r.IntN(300))
		want := from
		for m[want] {
			want++
		}
		if got := b.firstClear(from); got != want {
			t.Fatalf("firstClear(%d) = %d, want %d", from, got, want)
		}
		if b.has(i) != m[i] {
			t.Fatalf("has(%d) = %v", i, b.has(i))
		}
	}
	for w, bits := range b {
		if bits == 0 {
			t.Fatalf("empty word %d kept", w)
		}
	}
}

func TestAddressArithmetic(t *testing.T) {
	cases := []struct {
		name   string
		parent string
		bits   int
		index  uint64
		want   string
	}{
		{"v4 first", "10.200.0.0/16", 24, 0, "10.200.0.0/24"},
		{"v4 top", "10.200.0.0/16", 24, 255, "10.200.255.0/24"},
		{"v4 slice", "10.200.3.0/24", 27, 3, "10.200.3.96/27"},
		{"v4 whole space", "0.0.0.0/0", 8, 255, "255.0.0.0/8"},
		{"v6 low half", "fd00:200::/48", 64, 7, "fd00:200:0:7::/64"},
		{"v6 crosses 64 bits", "fd00::/56", 72, 0x1ff, "fd00:0:0:1:ff00::/72"},
		{"v6 high", "fd00::/8", 16, 0xff, "fdff::/16"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := netip.MustParsePrefix(tc.parent)
			got := child(p, tc.bits, tc.index)
			if got != netip.MustParsePrefix(tc.want) {
				t.Fatalf("child = %s, want %s", got, tc.want)
			}
			if i := childIndex(p, tc.bits, got.Addr()); i != tc.index {
				t.Fatalf("childIndex = %d, want %d", i, tc.index)
			}
			last := lowMask(got.Addr().BitLen() - got.Bits())
			if tc.bits-got.Addr().BitLen() >= -64 {
				a := nth(got, last)
				if !got.Contains(a) || got.Contains(a.Next()) {
					t.Fatalf("nth(last) = %s is not the last address of %s", a, got)
				}
				if off, ok := offsetIn(got, a); !ok || off != last {
					t.Fatalf("offsetIn = %d %v, want %d", off, ok, last)
				}
			}
		})
	}
	if _, ok := offsetIn(netip.MustParsePrefix("10.0.0.0/24"), netip.MustParseAddr("10.0.1.0")); ok {
		t.Fatalf("offsetIn outside the prefix")
	}
	if _, ok := offsetIn(netip.MustParsePrefix("fd00::/56"), netip.MustParseAddr("fd00:0:0:ff::")); ok {
		t.Fatalf("offsetIn beyond 64 bits")
	}
}

func TestLastAddrAndOnes(t *testing.T) {
	cases := []struct {
		name, p, want string
	}{
		{"ipv4 /26", "10.200.3.0/26", "10.200.3.63"},
		{"ipv4 unmasked", "10.200.3.9/26", "10.200.3.63"},
		{"ipv4 /14", "10.200.0.0/14", "10.203.255.255"},
		{"ipv4 /0", "0.0.0.0/0", "255.255.255.255"},
		{"ipv4 /32", "10.0.0.7/32", "10.0.0.7"},
		{"ipv6 /64", "fd00:200:0:7::/64", "fd00:200:0:7:ffff:ffff:ffff:ffff"},
		{"ipv6 /48 crosses 64 bits", "fd00:200::/48", "fd00:200:0:ffff:ffff:ffff:ffff:ffff"},
		{"ipv6 /0", "::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := lastAddr(netip.MustParsePrefix(tc.p)); got != netip.MustParseAddr(tc.want) {
				t.Fatalf("lastAddr(%s) = %s, want %s", tc.p, got, tc.want)
			}
		})
	}
	for n, want := range map[int]u128{0: {}, -1: {}, 1: {lo: 1}, 64: {lo: ^uint64(0)}, 65: {hi: 1, lo: ^uint64(0)}, 128: {^uint64(0), ^uint64(0)}, 200: {^uint64(0), ^uint64(0)}} {
		if got := ones(n); got != want {
			t.Errorf("ones(%d) = %v, want %v", n, got, want)
		}
	}
}

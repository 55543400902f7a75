package ipam_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/zlmesh/zlmesh/ipam"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

func defaultPool(t testing.TB) *ipam.Pool {
	t.Helper()
	p, err := ipam.NewPool(pfx(ipam.DefaultCluster), ipam.DefaultBlockBits)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newPool(t testing.TB, cluster string, blockBits int) *ipam.Pool {
	t.Helper()
	p, err := ipam.NewPool(pfx(cluster), blockBits)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNewPoolErrors(t *testing.T) {
	cases := []struct {
		name      string
		cluster   netip.Prefix
		block     int
		wantInErr string // "" means no error
	}{
		{"defaults", pfx("10.200.0.0/14"), 26, ""},
		{"tightest ipv4 cluster", pfx("10.0.0.0/23"), 24, ""},
		{"tightest ipv4 block", pfx("10.0.0.0/23"), 30, ""},
		{"zero prefix", netip.Prefix{}, 26, "not a valid prefix"},
		{"not masked", pfx("10.200.1.0/14"), 26, "use 10.200.0.0/14"},
		{"4in6", pfx("::ffff:10.200.0.0/110"), 122, "IPv4-mapped"},
		{"cluster is the reserved /24", pfx("10.0.0.0/24"), 26, "no room beside the reserved /24"},
		{"cluster smaller than the reserved /24", pfx("10.0.0.0/26"), 28, "use /23 or shorter"},
		{"ipv6 cluster is the reserved /120", pfx("fd00::/120"), 124, "no room beside the reserved /120"},
		{"block equals cluster", pfx("10.200.0.0/14"), 14, "longer than /14"},
		{"block shorter than cluster", pfx("10.200.0.0/14"), 8, "longer than /14"},
		{"block /31", pfx("10.200.0.0/14"), 31, "too long"},
		{"block /32", pfx("10.200.0.0/14"), 32, "use /30 or shorter"},
		{"ipv6 block /127", pfx("fd00::/48"), 127, "use /126 or shorter"},
		{"ipv6 ula", pfx("fd00:200::/48"), 64, ""},
		{"ipv6 small blocks", pfx("fd00:9::/112"), 124, ""},
		{"ipv6 block too wide", pfx("fd00:200::/32"), 56, "64 host bits"},
		{"ipv6 too many blocks", pfx("fd00::/8"), 72, "2^62"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ipam.NewPool(tc.cluster, tc.block)
			if tc.wantInErr == "" {
				if err != nil {
					t.Fatalf("NewPool: %v", err)
				}
				if p.Cluster() != tc.cluster || p.BlockBits() != tc.block {
					t.Fatalf("accessors: %s /%d", p.Cluster(), p.BlockBits())
				}
				return
			}
			if err == nil {
				t.Fatalf("NewPool(%s, %d) succeeded, want error containing %q", tc.cluster, tc.block, tc.wantInErr)
			}
			if !strings.Contains(err.Error(), tc.wantInErr) {
				t.Fatalf("error %q does not contain %q", err, tc.wantInErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}

func TestPoolLayout(t *testing.T) {
	cases := []struct {
		name      string
		cluster   string
		block     int
		reserved  string
		dns       string
		blocks    uint64
		blockSize uint64
		lastFree  string // the last claimable block
	}{
		{"defaults", "10.200.0.0/14", 26, "10.203.255.0/24", "10.203.255.53", 4092, 64, "10.203.254.192/26"},
		{"wide", "10.0.0.0/8", 16, "10.255.255.0/24", "10.255.255.53", 255, 65536, "10.254.0.0/16"},
		{"small", "192.168.0.0/22", 24, "192.168.3.0/24", "192.168.3.53", 3, 256, "192.168.2.0/24"},
		// One bit longer than the cluster: two blocks, the upper one holds
		// the reserved range, one left to claim.
		{"block one bit longer", "10.0.0.0/23", 24, "10.0.1.0/24", "10.0.1.53", 1, 256, "10.0.0.0/24"},
		{"blocks of /30", "10.9.0.0/23", 30, "10.9.1.0/24", "10.9.1.53", 64, 4, "10.9.0.252/30"},
		{"blocks smaller than the reserved range", "10.9.0.0/23", 28, "10.9.1.0/24", "10.9.1.53", 16, 16, "10.9.0.240/28"},
		{"ipv6 /64 blocks", "fd00:200::/48", 64, "fd00:200:0:ffff:ffff:ffff:ffff:ff00/120", "fd00:200:0:ffff:ffff:ffff:ffff:ff35", 65535, 0 /* 2^64 does not fit */, "fd00:200:0:fffe::/64"},
		{"ipv6 /124 blocks", "fd00:9::/112", 124, "fd00:9::ff00/120", "fd00:9::ff35", 4080, 16, "fd00:9::fef0/124"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPool(t, tc.cluster, tc.block)
			if got := p.Reserved(); got != pfx(tc.reserved) {
				t.Errorf("Reserved = %s, want %s", got, tc.reserved)
			}
			if got := p.MeshDNS(); got != addr(tc.dns) || !p.Reserved().Contains(got) {
				t.Errorf("MeshDNS = %s, want %s inside the reserved range", got, tc.dns)
			}
			if got := p.Blocks(); got != tc.blocks {
				t.Errorf("Blocks = %d, want %d", got, tc.blocks)
			}
			if got := p.BlockSize(); got != tc.blockSize {
				t.Errorf("BlockSize = %d, want %d", got, tc.blockSize)
			}
			if err := p.CheckBlock(pfx(tc.lastFree)); err != nil {
				t.Errorf("last claimable block %s: %v", tc.lastFree, err)
			}
			// The block right after the last claimable one overlaps the
			// reserved range.
			after := pfx(tc.lastFree)
			next := netip.PrefixFrom(lastOf(after).Next(), after.Bits())
			if err := p.CheckBlock(next); err == nil || !strings.Contains(err.Error(), "reserved") {
				t.Errorf("block %s after the last claimable: %v, want reserved", next, err)
			}
			// Every block Pick can give is claimable, and there are Blocks()
			// of them (checked where that is cheap).
			if p.Blocks() <= 4096 {
				seen := map[netip.Prefix]bool{}
				for {
					b, err := p.Pick(func(x netip.Prefix) bool { return seen[x] }, nil, netip.Prefix{})
					if errors.Is(err, ipam.ErrExhausted) {
						break
					}
					if err != nil || p.CheckBlock(b) != nil {
						t.Fatalf("Pick = %s, %v", b, err)
					}
					seen[b] = true
				}
				if uint64(len(seen)) != p.Blocks() {
					t.Fatalf("Pick gave %d blocks, Blocks = %d", len(seen), p.Blocks())
				}
			}
		})
	}
	d := ipam.DefaultPool()
	if d.Cluster() != pfx(ipam.DefaultCluster) || d.BlockBits() != ipam.DefaultBlockBits {
		t.Errorf("DefaultPool = %s /%d", d.Cluster(), d.BlockBits())
	}
	if d.Cluster() != pfx("10.200.0.0/14") || d.BlockBits() != 26 || d.Blocks() != 4092 ||
		d.Reserved() != pfx("10.203.255.0/24") || d.MeshDNS() != addr("10.203.255.53") {
		t.Errorf("defaults changed: %s /%d, %d blocks, reserved %s, DNS %s", d.Cluster(), d.BlockBits(), d.Blocks(), d.Reserved(), d.MeshDNS())
	}
}

// lastOf is the highest address of p: every host bit set.
func lastOf(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr()
	b := a.As16()
	off := 128 - a.BitLen() // IPv4 sits in the last 4 bytes
	for i := off + p.Bits(); i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	out := netip.AddrFrom16(b)
	if a.Is4() {
		out = out.Unmap()
	}
	return out
}

func TestCheckBlock(t *testing.T) {
	p := defaultPool(t)
	cases := []struct {
		name      string
		b         netip.Prefix
		wantInErr string
	}{
		{"first", pfx("10.200.0.0/26"), ""},
		{"middle", pfx("10.201.7.64/26"), ""},
		{"last claimable", pfx("10.203.254.192/26"), ""},
		{"reserved first", pfx("10.203.255.0/26"), "reserved range 10.203.255.0/24"},
		{"reserved last", pfx("10.203.255.192/26"), "reserved"},
		{"zero", netip.Prefix{}, "not a valid prefix"},
		{"not masked", pfx("10.200.3.7/26"), "use 10.200.3.0/26"},
		{"wrong length short", pfx("10.200.0.0/25"), "not a /26"},
		{"wrong length long", pfx("10.200.3.0/27"), "not a /26"},
		{"below", pfx("10.199.255.192/26"), "outside the cluster"},
		{"above", pfx("10.204.0.0/26"), "outside the cluster"},
		{"ipv6", pfx("fd00::/26"), "address family"},
		{"4in6", pfx("::ffff:10.200.3.0/122"), "address family"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := p.CheckBlock(tc.b)
			switch {
			case tc.wantInErr == "" && err != nil:
				t.Fatalf("CheckBlock(%s) = %v, want nil", tc.b, err)
			case tc.wantInErr != "" && err == nil:
				t.Fatalf("CheckBlock(%s) = nil, want error containing %q", tc.b, tc.wantInErr)
			case tc.wantInErr != "" && !strings.Contains(err.Error(), tc.wantInErr):
				t.Fatalf("CheckBlock(%s) = %q, want it to contain %q", tc.b, err, tc.wantInErr)
			}
		})
	}
}

// blockAt is the i-th block of the default pool.
func blockAt(i int) netip.Prefix {
	base := 200<<16 | 10<<24 + i*64
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(base >> 24), byte(base >> 16), byte(base >> 8), byte(base)}), 26)
}

func blockIndex(b netip.Prefix) int {
	a := b.Addr().As4()
	return (int(a[0])<<24 | int(a[1])<<16 | int(a[2])<<8 | int(a[3]) - (10<<24 | 200<<16)) / 64
}

func TestPick(t *testing.T) {
	p := defaultPool(t)
	n := int(p.Blocks())
	if blockAt(n-1) != pfx("10.203.254.192/26") || blockIndex(blockAt(77)) != 77 {
		t.Fatalf("blockAt is wrong: %s", blockAt(n-1))
	}
	seed := []byte("node-a public key")
	// Where seed starts when nothing is taken and nothing preferred.
	start, err := p.Pick(nil, seed, netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckBlock(start); err != nil {
		t.Fatalf("Pick gave an unclaimable block %s: %v", start, err)
	}
	next := func(b netip.Prefix, k int) netip.Prefix { return blockAt((blockIndex(b) + k + n) % n) }
	all := func(netip.Prefix) bool { return true }
	allBut := func(keep netip.Prefix) func(netip.Prefix) bool {
		return func(x netip.Prefix) bool { return x != keep }
	}
	set := func(bs ...netip.Prefix) func(netip.Prefix) bool {
		return func(x netip.Prefix) bool { return slices.Contains(bs, x) }
	}
	cases := []struct {
		name      string
		taken     func(netip.Prefix) bool
		preferred netip.Prefix
		want      netip.Prefix
		wantErr   error
	}{
		{"nothing taken", nil, netip.Prefix{}, start, nil},
		{"preferred free", nil, pfx("10.200.7.64/26"), pfx("10.200.7.64/26"), nil},
		{"preferred taken", set(pfx("10.200.7.64/26")), pfx("10.200.7.64/26"), start, nil},
		{"preferred reserved", nil, pfx("10.203.255.0/26"), start, nil},
		{"preferred outside", nil, pfx("10.9.7.0/26"), start, nil},
		{"preferred wrong length", nil, pfx("10.200.7.0/25"), start, nil},
		{"preferred unmasked", nil, pfx("10.200.7.1/26"), start, nil},
		{"seed start taken probes up", set(start), netip.Prefix{}, next(start, 1), nil},
		{"run taken probes past it", set(start, next(start, 1), next(start, 2)), netip.Prefix{}, next(start, 3), nil},
		{"wraps around", allBut(next(start, -1)), netip.Prefix{}, next(start, -1), nil},
		{"wraps to zero", allBut(blockAt(0)), netip.Prefix{}, blockAt(0), nil},
		{"last claimable", allBut(blockAt(n - 1)), netip.Prefix{}, blockAt(n - 1), nil},
		{"exhausted", all, netip.Prefix{}, netip.Prefix{}, ipam.ErrExhausted},
		{"exhausted with taken preferred", all, pfx("10.200.7.64/26"), netip.Prefix{}, ipam.ErrExhausted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			taken := tc.taken
			if taken != nil {
				taken = func(x netip.Prefix) bool {
					calls++
					if p.CheckBlock(x) != nil && x != tc.preferred {
						t.Errorf("taken called on unclaimable %s", x)
					}
					return tc.taken(x)
				}
			}
			got, err := p.Pick(taken, seed, tc.preferred)
			if !errors.Is(err, tc.wantErr) || (err != nil && tc.wantErr == nil) {
				t.Fatalf("Pick error = %v, want %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "10.200.0.0/14") {
				t.Fatalf("error %q does not name the cluster CIDR", err)
			}
			if got != tc.want {
				t.Fatalf("Pick = %s, want %s", got, tc.want)
			}
			if tc.wantErr != nil && calls < n {
				t.Fatalf("exhausted after only %d of %d candidates", calls, n)
			}
			again, _ := p.Pick(tc.taken, seed, tc.preferred)
			if again != got {
				t.Fatalf("Pick not deterministic: %s then %s", got, again)
			}
		})
	}
}

func TestPickSpreadsSeeds(t *testing.T) {
	p := defaultPool(t)
	seen := map[netip.Prefix]bool{}
	for i := range 64 {
		b, err := p.Pick(nil, fmt.Appendf(nil, "key-%d", i), netip.Prefix{})
		if err != nil {
			t.Fatal(err)
		}
		seen[b] = true
	}
	// 64 seeds over 4092 blocks: a fixed start would give 1.
	if len(seen) < 60 {
		t.Fatalf("64 seeds start at only %d distinct blocks", len(seen))
	}
}

func TestPickIPv6(t *testing.T) {
	for _, pc := range []struct {
		cluster string
		bits    int
	}{{"fd00:200::/48", 64}, {"fd00:9::/112", 124}} {
		t.Run(pc.cluster, func(t *testing.T) {
			p := newPool(t, pc.cluster, pc.bits)
			b, err := p.Pick(nil, []byte("k"), netip.Prefix{})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.CheckBlock(b); err != nil {
				t.Fatalf("Pick gave %s: %v", b, err)
			}
			b2, err := p.Pick(func(x netip.Prefix) bool { return x == b }, []byte("k"), b)
			if err != nil || b2 == b || p.CheckBlock(b2) != nil {
				t.Fatalf("Pick with %s taken = %s, %v", b, b2, err)
			}
			if na := ipam.NodeAddr(b); !b.Contains(na) || na != b.Addr().Next() {
				t.Fatalf("NodeAddr(%s) = %s", b, na)
			}
		})
	}
}

func TestNodeAddr(t *testing.T) {
	cases := []struct {
		name  string
		block netip.Prefix
		want  netip.Addr
	}{
		{"block 3", pfx("10.200.3.0/26"), addr("10.200.3.1")},
		{"upper block", pfx("10.200.3.192/26"), addr("10.200.3.193")},
		{"first of the cluster", pfx("10.200.0.0/26"), addr("10.200.0.1")},
		{"unmasked", pfx("10.200.3.9/26"), addr("10.200.3.1")},
		{"ipv6", pfx("fd00:200:0:7::/64"), addr("fd00:200:0:7::1")},
		{"zero", netip.Prefix{}, netip.Addr{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := ipam.NodeAddr(tc.block); got != tc.want {
				t.Fatalf("NodeAddr(%s) = %s, want %s", tc.block, got, tc.want)
			}
		})
	}
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, pfx(s))
	}
	return out
}

func TestCoalesce(t *testing.T) {
	cases := []struct {
		name string
		in   []netip.Prefix
		want []netip.Prefix
	}{
		{"none", nil, nil},
		{"one", prefixes("10.200.3.0/26"), prefixes("10.200.3.0/26")},
		{"siblings merge", prefixes("10.200.3.64/26", "10.200.3.0/26"), prefixes("10.200.3.0/25")},
		{"four merge twice", prefixes("10.200.3.192/26", "10.200.3.0/26", "10.200.3.128/26", "10.200.3.64/26"), prefixes("10.200.3.0/24")},
		{"eight merge three times", prefixes("10.200.2.0/26", "10.200.2.64/26", "10.200.2.128/26", "10.200.2.192/26",
			"10.200.3.0/26", "10.200.3.64/26", "10.200.3.128/26", "10.200.3.192/26"), prefixes("10.200.2.0/23")},
		{"three of four", prefixes("10.200.3.0/26", "10.200.3.64/26", "10.200.3.128/26"), prefixes("10.200.3.0/25", "10.200.3.128/26")},
		{"adjacent non-siblings stay", prefixes("10.200.3.64/26", "10.200.3.128/26"), prefixes("10.200.3.64/26", "10.200.3.128/26")},
		{"adjacent across a /24 stay", prefixes("10.200.3.192/26", "10.200.4.0/26"), prefixes("10.200.3.192/26", "10.200.4.0/26")},
		{"far apart", prefixes("10.201.0.0/26", "10.200.3.0/26"), prefixes("10.200.3.0/26", "10.201.0.0/26")},
		{"duplicates dropped", prefixes("10.200.3.64/26", "10.200.3.64/26"), prefixes("10.200.3.64/26")},
		{"duplicate lower sibling dropped", prefixes("10.200.3.0/26", "10.200.3.0/26"), prefixes("10.200.3.0/26")},
		{"duplicate pair merges", prefixes("10.200.3.0/26", "10.200.3.0/26", "10.200.3.64/26", "10.200.3.64/26"), prefixes("10.200.3.0/25")},
		{"duplicate beside a lower block", prefixes("10.200.3.0/25", "10.200.3.128/27", "10.200.3.128/27"), prefixes("10.200.3.0/25", "10.200.3.128/27")},
		{"contained dropped", prefixes("10.200.3.64/26", "10.200.3.0/24"), prefixes("10.200.3.0/24")},
		{"contained same base dropped", prefixes("10.200.3.0/26", "10.200.3.0/24"), prefixes("10.200.3.0/24")},
		{"merge after a contained one", prefixes("10.200.3.0/26", "10.200.3.64/27", "10.200.3.96/27"), prefixes("10.200.3.0/25")},
		{"unmasked masked", prefixes("10.200.3.5/26", "10.200.3.70/26"), prefixes("10.200.3.0/25")},
		{"invalid dropped", []netip.Prefix{{}, pfx("10.200.3.0/26")}, prefixes("10.200.3.0/26")},
		{"ipv4 halves", prefixes("128.0.0.0/1", "0.0.0.0/1"), prefixes("0.0.0.0/0")},
		{"ipv6 siblings", prefixes("fd00:200:0:1::/64", "fd00:200::/64"), prefixes("fd00:200::/63")},
		{"families apart", prefixes("::/1", "0.0.0.0/1", "8000::/1", "128.0.0.0/1"), prefixes("0.0.0.0/0", "::/0")},
		{"v4 and mapped v6 apart", prefixes("10.0.0.0/25", "::ffff:10.0.0.128/121"), prefixes("10.0.0.0/25", "::ffff:10.0.0.128/121")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.in)
			got := ipam.Coalesce(in)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Coalesce(%v) = %v, want %v", tc.in, got, tc.want)
			}
			if !reflect.DeepEqual(in, tc.in) {
				t.Fatalf("Coalesce modified its input: %v, was %v", in, tc.in)
			}
		})
	}
}

// TestCoalesceRandom: on random sets of blocks and larger prefixes in a
// /22, the result covers exactly the same addresses, is sorted, has no
// overlap and no sibling pair left.
func TestCoalesceRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for range 2000 {
		var in []netip.Prefix
		for range r.IntN(12) {
			bits := 26 - r.IntN(3) // /24../26 inside 10.200.0.0/22
			if r.IntN(4) == 0 {
				bits = 26
			}
			off := r.IntN(1024)
			a := netip.AddrFrom4([4]byte{10, 200, byte(off >> 8), byte(off)})
			in = append(in, netip.PrefixFrom(a, bits).Masked())
		}
		got := ipam.Coalesce(in)
		if cover(got) != cover(in) {
			t.Fatalf("Coalesce(%v) = %v covers other addresses", in, got)
		}
		for i := range got {
			if i > 0 && got[i-1].Addr().Compare(got[i].Addr()) >= 0 {
				t.Fatalf("Coalesce(%v) = %v: not sorted", in, got)
			}
			for j := i + 1; j < len(got); j++ {
				if got[i].Overlaps(got[j]) {
					t.Fatalf("Coalesce(%v) = %v: %s overlaps %s", in, got, got[i], got[j])
				}
				if got[i].Bits() == got[j].Bits() {
					pi, _ := got[i].Addr().Prefix(got[i].Bits() - 1)
					if pi.Contains(got[j].Addr()) {
						t.Fatalf("Coalesce(%v) = %v: siblings %s and %s left", in, got, got[i], got[j])
					}
				}
			}
		}
	}
}

// cover is the set of /26 blocks of 10.200.0.0/22 that ps cover, as bits.
func cover(ps []netip.Prefix) uint16 {
	var out uint16
	for i := range 16 {
		b := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(i / 4), byte(i % 4 * 64)}), 26)
		for _, p := range ps {
			if p.Contains(b.Addr()) {
				out |= 1 << i
			}
		}
	}
	return out
}

func TestPickNext(t *testing.T) {
	p := defaultPool(t)
	seed := []byte("node-a public key")
	holding := func(bs ...netip.Prefix) func(netip.Prefix) bool {
		return func(x netip.Prefix) bool { return slices.Contains(bs, x) }
	}
	fromSeed := func(taken func(netip.Prefix) bool) netip.Prefix {
		b, err := p.Pick(taken, seed, netip.Prefix{})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b := pfx("10.200.3.0/26"), pfx("10.200.9.0/26")
	last := blockAt(int(p.Blocks()) - 1)
	cases := []struct {
		name    string
		taken   func(netip.Prefix) bool
		ours    []netip.Prefix
		want    netip.Prefix
		wantErr error
	}{
		{"after the last of ours", holding(a, pfx("10.200.3.64/26")), []netip.Prefix{a, pfx("10.200.3.64/26")}, pfx("10.200.3.128/26"), nil},
		{"after the last, not the first", holding(a, b), []netip.Prefix{a, b}, pfx("10.200.9.64/26"), nil},
		{"after an earlier one when the last's next is taken", holding(a, b, pfx("10.200.9.64/26")), []netip.Prefix{a, b}, pfx("10.200.3.64/26"), nil},
		{"across a /24", holding(pfx("10.200.3.192/26")), []netip.Prefix{pfx("10.200.3.192/26")}, pfx("10.200.4.0/26"), nil},
		{"every next taken: from the seed", holding(a, b, pfx("10.200.3.64/26"), pfx("10.200.9.64/26")), []netip.Prefix{a, b},
			fromSeed(holding(a, b, pfx("10.200.3.64/26"), pfx("10.200.9.64/26"))), nil},
		{"next of the last claimable is reserved", holding(last), []netip.Prefix{last}, fromSeed(holding(last)), nil},
		{"invalid of ours skipped", holding(a), []netip.Prefix{a, pfx("10.200.3.0/25"), {}}, pfx("10.200.3.64/26"), nil},
		{"none of ours", nil, nil, fromSeed(nil), nil},
		{"nil taken", nil, []netip.Prefix{a}, pfx("10.200.3.64/26"), nil},
		{"exhausted", func(netip.Prefix) bool { return true }, []netip.Prefix{a}, netip.Prefix{}, ipam.ErrExhausted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := p.PickNext(tc.taken, tc.ours, seed)
			if !errors.Is(err, tc.wantErr) || (err != nil && tc.wantErr == nil) {
				t.Fatalf("PickNext error = %v, want %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "10.200.0.0/14") {
				t.Fatalf("error %q does not name the cluster CIDR", err)
			}
			if got != tc.want {
				t.Fatalf("PickNext = %s, want %s", got, tc.want)
			}
			if err == nil && p.CheckBlock(got) != nil {
				t.Fatalf("PickNext gave an unclaimable block %s", got)
			}
		})
	}
	t.Run("ipv6", func(t *testing.T) {
		p := newPool(t, "fd00:9::/112", 124)
		ours := []netip.Prefix{pfx("fd00:9::10/124")}
		if got, err := p.PickNext(holding(ours...), ours, seed); err != nil || got != pfx("fd00:9::20/124") {
			t.Fatalf("PickNext = %s, %v", got, err)
		}
	})
}

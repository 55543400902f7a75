package ipam_test

import (
	"errors"
	"fmt"
	"net/netip"
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
	p, err := ipam.NewPool(pfx(ipam.DefaultCluster), ipam.DefaultNodeBits, ipam.DefaultSliceBits)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNewPoolErrors(t *testing.T) {
	cases := []struct {
		name      string
		cluster   netip.Prefix
		node      int
		slice     int
		wantInErr string // "" means no error
	}{
		{"defaults", pfx("10.200.0.0/16"), 24, 27, ""},
		{"tightest ipv4", pfx("10.0.0.0/28"), 29, 30, ""},
		{"zero prefix", netip.Prefix{}, 24, 27, "not valid"},
		{"not masked", pfx("10.200.1.0/16"), 24, 27, "use 10.200.0.0/16"},
		{"4in6", pfx("::ffff:10.200.0.0/112"), 120, 123, "IPv4-mapped"},
		{"node equals cluster", pfx("10.200.0.0/16"), 16, 27, "at least 2 node subnets"},
		{"node shorter than cluster", pfx("10.200.0.0/16"), 8, 27, "at least 2 node subnets"},
		{"node longer than /30", pfx("10.200.0.0/16"), 31, 32, "longer than /30"},
		{"node /30 leaves no slice", pfx("10.200.0.0/16"), 30, 31, "longer than /30"},
		{"slice equals node", pfx("10.200.0.0/16"), 24, 24, "at least 2 slices"},
		{"slice shorter than node", pfx("10.200.0.0/16"), 24, 20, "at least 2 slices"},
		{"slice /31", pfx("10.200.0.0/16"), 24, 31, "at least one container"},
		{"slice /32", pfx("10.200.0.0/16"), 24, 32, "at least one container"},
		{"ipv6 ula", pfx("fd00:200::/48"), 64, 80, ""},
		{"ipv6 slice too wide", pfx("fd00:200::/32"), 48, 56, "64 host bits"},
		{"ipv6 too many subnets", pfx("fd00::/8"), 96, 112, "2^62"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ipam.NewPool(tc.cluster, tc.node, tc.slice)
			if tc.wantInErr == "" {
				if err != nil {
					t.Fatalf("NewPool: %v", err)
				}
				if p.Cluster() != tc.cluster || p.NodeBits() != tc.node || p.SliceBits() != tc.slice {
					t.Fatalf("accessors: %s /%d /%d", p.Cluster(), p.NodeBits(), p.SliceBits())
				}
				return
			}
			if err == nil {
				t.Fatalf("NewPool(%s, %d, %d) succeeded, want error containing %q", tc.cluster, tc.node, tc.slice, tc.wantInErr)
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
		name          string
		cluster       string
		node, slice   int
		reserved      string
		dns           string
		subnets       uint64
		slicesPerNode uint64
	}{
		{"defaults", "10.200.0.0/16", 24, 27, "10.200.255.0/24", "10.200.255.53", 255, 8},
		{"wide", "10.0.0.0/8", 16, 20, "10.255.0.0/16", "10.255.0.53", 255, 16},
		{"small", "192.168.0.0/22", 24, 26, "192.168.3.0/24", "192.168.3.53", 3, 4},
		{"ipv6", "fd00:200::/48", 64, 80, "fd00:200:0:ffff::/64", "fd00:200:0:ffff::35", 65535, 65536},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ipam.NewPool(pfx(tc.cluster), tc.node, tc.slice)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Reserved(); got != pfx(tc.reserved) {
				t.Errorf("Reserved = %s, want %s", got, tc.reserved)
			}
			if got := p.MeshDNS(); got != addr(tc.dns) {
				t.Errorf("MeshDNS = %s, want %s", got, tc.dns)
			}
			if got := p.Subnets(); got != tc.subnets {
				t.Errorf("Subnets = %d, want %d", got, tc.subnets)
			}
			if got := p.Slices(); got != tc.slicesPerNode {
				t.Errorf("Slices = %d, want %d", got, tc.slicesPerNode)
			}
			if err := p.CheckSubnet(p.Reserved()); err == nil {
				t.Errorf("reserved block %s passes CheckSubnet", p.Reserved())
			}
		})
	}
	if d := ipam.DefaultPool(); d.Cluster() != pfx(ipam.DefaultCluster) || d.NodeBits() != ipam.DefaultNodeBits || d.SliceBits() != ipam.DefaultSliceBits {
		t.Errorf("DefaultPool = %s /%d /%d", d.Cluster(), d.NodeBits(), d.SliceBits())
	}
}

func TestCheckSubnet(t *testing.T) {
	p := defaultPool(t)
	cases := []struct {
		name      string
		s         netip.Prefix
		wantInErr string
	}{
		{"first", pfx("10.200.0.0/24"), ""},
		{"middle", pfx("10.200.3.0/24"), ""},
		{"last claimable", pfx("10.200.254.0/24"), ""},
		{"reserved", pfx("10.200.255.0/24"), "reserved"},
		{"zero", netip.Prefix{}, "not a valid prefix"},
		{"not masked", pfx("10.200.3.7/24"), "use 10.200.3.0/24"},
		{"wrong length short", pfx("10.200.0.0/23"), "not a /24"},
		{"wrong length long", pfx("10.200.3.0/25"), "not a /24"},
		{"outside", pfx("10.201.3.0/24"), "outside the cluster"},
		{"ipv6", pfx("fd00::/24"), "address family"},
		{"4in6", pfx("::ffff:10.200.3.0/120"), "address family"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := p.CheckSubnet(tc.s)
			switch {
			case tc.wantInErr == "" && err != nil:
				t.Fatalf("CheckSubnet(%s) = %v, want nil", tc.s, err)
			case tc.wantInErr != "" && err == nil:
				t.Fatalf("CheckSubnet(%s) = nil, want error containing %q", tc.s, tc.wantInErr)
			case tc.wantInErr != "" && !strings.Contains(err.Error(), tc.wantInErr):
				t.Fatalf("CheckSubnet(%s) = %q, want it to contain %q", tc.s, err, tc.wantInErr)
			}
		})
	}
}

// takenSet is a Pick taken function over a set, counting calls.
type takenSet map[netip.Prefix]bool

func (s takenSet) has(p netip.Prefix) bool { return s[p] }

func TestPick(t *testing.T) {
	p := defaultPool(t)
	seed := []byte("node-a public key")
	// Where seed starts when nothing is taken and nothing preferred.
	start, err := p.Pick(nil, seed, netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckSubnet(start); err != nil {
		t.Fatalf("Pick gave an unclaimable subnet %s: %v", start, err)
	}
	next := func(s netip.Prefix, n int) netip.Prefix {
		// n node subnets later, wrapping inside the claimable ones.
		i := (int(s.Addr().As4()[2]) + n) % int(p.Subnets())
		return pfx(fmt.Sprintf("10.200.%d.0/24", i))
	}
	all := takenSet{}
	for i := 0; i < int(p.Subnets()); i++ {
		all[pfx(fmt.Sprintf("10.200.%d.0/24", i))] = true
	}
	allBut := func(keep netip.Prefix) takenSet {
		s := takenSet{}
		for k := range all {
			if k != keep {
				s[k] = true
			}
		}
		return s
	}
	cases := []struct {
		name      string
		taken     takenSet
		seed      []byte
		preferred netip.Prefix
		want      netip.Prefix
		wantErr   error
	}{
		{"preferred free", nil, seed, pfx("10.200.7.0/24"), pfx("10.200.7.0/24"), nil},
		{"preferred taken", takenSet{pfx("10.200.7.0/24"): true}, seed, pfx("10.200.7.0/24"), start, nil},
		{"preferred reserved", nil, seed, pfx("10.200.255.0/24"), start, nil},
		{"preferred outside", nil, seed, pfx("10.9.7.0/24"), start, nil},
		{"preferred wrong length", nil, seed, pfx("10.200.7.0/25"), start, nil},
		{"seed start taken probes up", takenSet{start: true}, seed, netip.Prefix{}, next(start, 1), nil},
		{"run taken probes past it", takenSet{start: true, next(start, 1): true, next(start, 2): true}, seed, netip.Prefix{}, next(start, 3), nil},
		{"wraps around", allBut(next(start, -1+int(p.Subnets()))), seed, netip.Prefix{}, next(start, -1+int(p.Subnets())), nil},
		{"wraps to zero", allBut(pfx("10.200.0.0/24")), seed, netip.Prefix{}, pfx("10.200.0.0/24"), nil},
		{"exhausted", all, seed, netip.Prefix{}, netip.Prefix{}, ipam.ErrExhausted},
		{"exhausted with taken preferred", all, seed, pfx("10.200.7.0/24"), netip.Prefix{}, ipam.ErrExhausted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := p.Pick(tc.taken.has, tc.seed, tc.preferred)
			if !errors.Is(err, tc.wantErr) || (err != nil && tc.wantErr == nil) {
				t.Fatalf("Pick error = %v, want %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("Pick = %s, want %s", got, tc.want)
			}
			again, _ := p.Pick(tc.taken.has, tc.seed, tc.preferred)
			if again != got {
				t.Fatalf("Pick not deterministic: %s then %s", got, again)
			}
		})
	}
}

func TestPickSpreadsSeeds(t *testing.T) {
	p := defaultPool(t)
	seen := map[netip.Prefix]bool{}
	for i := range 32 {
		s, err := p.Pick(nil, fmt.Appendf(nil, "key-%d", i), netip.Prefix{})
		if err != nil {
			t.Fatal(err)
		}
		seen[s] = true
	}
	// 32 seeds over 255 subnets: a fixed start would give 1.
	if len(seen) < 20 {
		t.Fatalf("32 seeds start at only %d distinct subnets", len(seen))
	}
}

func TestPickIPv6(t *testing.T) {
	p, err := ipam.NewPool(pfx("fd00:200::/48"), 64, 80)
	if err != nil {
		t.Fatal(err)
	}
	s, err := p.Pick(nil, []byte("k"), netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckSubnet(s); err != nil {
		t.Fatalf("Pick gave %s: %v", s, err)
	}
	s2, err := p.Pick(func(x netip.Prefix) bool { return x == s }, []byte("k"), s)
	if err != nil || s2 == s || p.CheckSubnet(s2) != nil {
		t.Fatalf("Pick with %s taken = %s, %v", s, s2, err)
	}
}

func TestOverlayAddr(t *testing.T) {
	cases := []struct {
		name   string
		subnet netip.Prefix
		want   netip.Addr
	}{
		{"node 3", pfx("10.200.3.0/24"), addr("10.200.3.1")},
		{"node 0", pfx("10.200.0.0/24"), addr("10.200.0.1")},
		{"unmasked", pfx("10.200.3.9/24"), addr("10.200.3.1")},
		{"ipv6", pfx("fd00:200:0:7::/64"), addr("fd00:200:0:7::1")},
		{"zero", netip.Prefix{}, netip.Addr{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := ipam.OverlayAddr(tc.subnet); got != tc.want {
				t.Fatalf("OverlayAddr(%s) = %s, want %s", tc.subnet, got, tc.want)
			}
		})
	}
}

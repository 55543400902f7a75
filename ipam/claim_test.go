package ipam_test

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/ipam"
)

var t0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

func claim(node string, block string, claimedAt, renewedAt time.Duration) ipam.Claim {
	var s netip.Prefix
	if block != "" {
		s = pfx(block)
	}
	return ipam.Claim{Node: node, Name: "host-" + node, Block: s, ClaimedAt: t0.Add(claimedAt), RenewedAt: t0.Add(renewedAt)}
}

func TestBeats(t *testing.T) {
	const sub = "10.200.3.0/26"
	cases := []struct {
		name string
		c, o ipam.Claim
		want bool
	}{
		{"older wins", claim("B", sub, 0, 0), claim("A", sub, time.Second, 0), true},
		{"newer loses", claim("A", sub, time.Second, 0), claim("B", sub, 0, 0), false},
		{"tie lower key wins", claim("A", sub, 0, 0), claim("B", sub, 0, 0), true},
		{"tie higher key loses", claim("B", sub, 0, 0), claim("A", sub, 0, 0), false},
		{"itself", claim("A", sub, 0, 0), claim("A", sub, 0, 0), false},
		{"stale copy of itself", claim("A", sub, 0, time.Hour), claim("A", sub, time.Minute, 0), false},
		{"renewal does not matter", claim("B", sub, 0, 0), claim("A", sub, time.Second, time.Hour), true},
		{"same instant other zone", claim("A", sub, 0, 0), ipam.Claim{Node: "B", Block: pfx(sub), ClaimedAt: t0.In(time.FixedZone("x", 3600))}, true},
		{"same instant other zone reversed", ipam.Claim{Node: "B", Block: pfx(sub), ClaimedAt: t0.In(time.FixedZone("x", 3600))}, claim("A", sub, 0, 0), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.c.Beats(tc.o); got != tc.want {
				t.Fatalf("Beats = %v, want %v", got, tc.want)
			}
		})
	}
}

func aliveSet(nodes ...string) func(string) bool {
	return func(n string) bool { return slices.Contains(nodes, n) }
}

func TestHolders(t *testing.T) {
	const sub, sub2 = "10.200.3.0/26", "10.200.3.64/26"
	grace := 10 * time.Minute
	now := t0.Add(time.Hour)
	cases := []struct {
		name   string
		claims []ipam.Claim
		alive  func(string) bool
		want   map[netip.Prefix]string // block → holding node
	}{
		{"none", nil, aliveSet(), map[netip.Prefix]string{}},
		{"alive holds", []ipam.Claim{claim("A", sub, 0, 0)}, aliveSet("A"), map[netip.Prefix]string{pfx(sub): "A"}},
		{"alive holds without renewal", []ipam.Claim{claim("A", sub, 0, -24*time.Hour)}, aliveSet("A"), map[netip.Prefix]string{pfx(sub): "A"}},
		{"dead inside grace", []ipam.Claim{claim("A", sub, 0, 51*time.Minute)}, aliveSet(), map[netip.Prefix]string{pfx(sub): "A"}},
		{"dead just inside grace", []ipam.Claim{claim("A", sub, 0, 50*time.Minute+time.Nanosecond)}, aliveSet(), map[netip.Prefix]string{pfx(sub): "A"}},
		{"dead at grace boundary", []ipam.Claim{claim("A", sub, 0, 50*time.Minute)}, aliveSet(), map[netip.Prefix]string{}},
		{"dead past grace", []ipam.Claim{claim("A", sub, 0, 0)}, aliveSet(), map[netip.Prefix]string{}},
		{"dead renewed in the future", []ipam.Claim{claim("A", sub, 0, 2*time.Hour)}, aliveSet(), map[netip.Prefix]string{pfx(sub): "A"}},
		{"older dead inside grace beats newer alive", []ipam.Claim{claim("A", sub, 0, 55*time.Minute), claim("B", sub, time.Minute, time.Minute)}, aliveSet("B"), map[netip.Prefix]string{pfx(sub): "A"}},
		{"older dead past grace yields to newer alive", []ipam.Claim{claim("A", sub, 0, 0), claim("B", sub, time.Minute, time.Minute)}, aliveSet("B"), map[netip.Prefix]string{pfx(sub): "B"}},
		{"tie broken by key", []ipam.Claim{claim("C", sub, 0, 0), claim("B", sub, 0, 0), claim("D", sub, 0, 0)}, aliveSet("B", "C", "D"), map[netip.Prefix]string{pfx(sub): "B"}},
		{"two blocks", []ipam.Claim{claim("A", sub, time.Second, 0), claim("B", sub2, 0, 0), claim("C", sub2, -time.Second, 0)}, aliveSet("A", "B", "C"), map[netip.Prefix]string{pfx(sub): "A", pfx(sub2): "C"}},
		{"zero block ignored", []ipam.Claim{claim("A", "", 0, 0)}, aliveSet("A"), map[netip.Prefix]string{}},
		{"unmasked block ignored", []ipam.Claim{claim("A", "10.200.3.9/26", 0, 0)}, aliveSet("A"), map[netip.Prefix]string{}},
		{"nil alive counts all alive", []ipam.Claim{claim("A", sub, 0, 0)}, nil, map[netip.Prefix]string{pfx(sub): "A"}},
		{"one node several blocks", []ipam.Claim{claim("A", sub, 0, 0), claim("A", sub2, time.Hour, time.Hour)}, aliveSet("A"), map[netip.Prefix]string{pfx(sub): "A", pfx(sub2): "A"}},
		{"lost one block of several", []ipam.Claim{claim("A", sub, 0, 0), claim("A", sub2, time.Second, 0), claim("B", sub2, 0, 0)}, aliveSet("A", "B"), map[netip.Prefix]string{pfx(sub): "A", pfx(sub2): "B"}},
		{"nested prefixes are other blocks", []ipam.Claim{claim("A", "10.200.3.0/25", time.Second, 0), claim("B", sub, 0, 0)}, aliveSet("A", "B"), map[netip.Prefix]string{pfx("10.200.3.0/25"): "A", pfx(sub): "B"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := holderNodes(ipam.Holders(tc.claims, tc.alive, now, grace))
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Holders = %v, want %v", got, tc.want)
			}
			// Any order of the same claims gives the same answer.
			r := rand.New(rand.NewPCG(1, 2))
			for range 20 {
				sh := slices.Clone(tc.claims)
				r.Shuffle(len(sh), func(i, j int) { sh[i], sh[j] = sh[j], sh[i] })
				if again := holderNodes(ipam.Holders(sh, tc.alive, now, grace)); !reflect.DeepEqual(again, tc.want) {
					t.Fatalf("shuffled %v: Holders = %v, want %v", sh, again, tc.want)
				}
			}
		})
	}
}

func holderNodes(h map[netip.Prefix]ipam.Claim) map[netip.Prefix]string {
	out := map[netip.Prefix]string{}
	for s, c := range h {
		if c.Block != s {
			panic("holder map key differs from the claim's block")
		}
		out[s] = c.Node
	}
	return out
}

type pair struct{ block, winner, loser string }

func TestConflicts(t *testing.T) {
	const sub, sub2 = "10.200.3.0/26", "10.200.3.64/26"
	cases := []struct {
		name   string
		claims []ipam.Claim
		alive  func(string) bool
		want   []pair
	}{
		{"none", nil, aliveSet(), nil},
		{"one claimant", []ipam.Claim{claim("A", sub, 0, 0)}, aliveSet("A"), nil},
		{"two alive", []ipam.Claim{claim("B", sub, time.Second, 0), claim("A", sub, 0, 0)}, aliveSet("A", "B"), []pair{{sub, "A", "B"}}},
		{"older wins over lower key", []ipam.Claim{claim("A", sub, time.Second, 0), claim("B", sub, 0, 0)}, aliveSet("A", "B"), []pair{{sub, "B", "A"}}},
		{"tie by key", []ipam.Claim{claim("B", sub, 0, 0), claim("A", sub, 0, 0)}, aliveSet("A", "B"), []pair{{sub, "A", "B"}}},
		{"dead claimant is no conflict", []ipam.Claim{claim("A", sub, 0, 59*time.Minute), claim("B", sub, time.Second, 0)}, aliveSet("B"), nil},
		{"three alive two losers", []ipam.Claim{claim("C", sub, 2*time.Second, 0), claim("A", sub, time.Second, 0), claim("B", sub, 0, 0)}, aliveSet("A", "B", "C"), []pair{{sub, "B", "A"}, {sub, "B", "C"}}},
		{"copies of one node are one claimant", []ipam.Claim{claim("A", sub, 0, 0), claim("A", sub, 0, time.Minute)}, aliveSet("A"), nil},
		{"two blocks sorted", []ipam.Claim{claim("D", sub2, time.Second, 0), claim("C", sub2, 0, 0), claim("B", sub, time.Second, 0), claim("A", sub, 0, 0)}, aliveSet("A", "B", "C", "D"), []pair{{sub, "A", "B"}, {sub2, "C", "D"}}},
		{"one node several blocks", []ipam.Claim{claim("A", sub, 0, 0), claim("A", sub2, time.Hour, 0)}, aliveSet("A"), nil},
		{"conflict on one block of several", []ipam.Claim{claim("A", sub, 0, 0), claim("A", sub2, time.Second, 0), claim("B", sub2, 0, 0), claim("B", "10.200.9.0/26", 0, 0)}, aliveSet("A", "B"), []pair{{sub2, "B", "A"}}},
		{"nested prefixes are no conflict", []ipam.Claim{claim("A", "10.200.3.0/25", 0, 0), claim("B", sub, 0, 0)}, aliveSet("A", "B"), nil},
		{"unmasked block ignored", []ipam.Claim{claim("A", "10.200.3.9/26", 0, 0), claim("B", sub, time.Second, 0)}, aliveSet("A", "B"), nil},
		{"invalid blocks ignored", []ipam.Claim{claim("A", "", 0, 0), claim("B", "", 0, 0)}, aliveSet("A", "B"), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := pairs(ipam.Conflicts(tc.claims, tc.alive))
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Conflicts = %v, want %v", got, tc.want)
			}
			r := rand.New(rand.NewPCG(3, 4))
			for range 20 {
				sh := slices.Clone(tc.claims)
				r.Shuffle(len(sh), func(i, j int) { sh[i], sh[j] = sh[j], sh[i] })
				if again := pairs(ipam.Conflicts(sh, tc.alive)); !reflect.DeepEqual(again, tc.want) {
					t.Fatalf("shuffled: Conflicts = %v, want %v", again, tc.want)
				}
			}
		})
	}
}

func pairs(cs []ipam.Conflict) []pair {
	var out []pair
	for _, c := range cs {
		if c.Winner.Block != c.Block || c.Loser.Block != c.Block || !c.Winner.Beats(c.Loser) {
			panic("inconsistent conflict")
		}
		out = append(out, pair{c.Block.String(), c.Winner.Node, c.Loser.Node})
	}
	return out
}

// TestClaimsRandom: on random claim sets, the holder of a block beats every
// other counting claim on it, and Conflicts agrees with Holders for live
// nodes, whatever the order.
func TestClaimsRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	nodes := []string{"A", "B", "C", "D", "E"}
	blocks := []string{"10.200.1.0/26", "10.200.1.64/26", "10.200.3.0/26"}
	now := t0.Add(time.Hour)
	grace := 10 * time.Minute
	for range 500 {
		var claims []ipam.Claim
		for range r.IntN(8) {
			claims = append(claims, claim(nodes[r.IntN(len(nodes))], blocks[r.IntN(len(blocks))],
				time.Duration(r.IntN(3))*time.Second, time.Duration(r.IntN(70))*time.Minute))
		}
		liveSet := []string{}
		for _, n := range nodes {
			if r.IntN(2) == 0 {
				liveSet = append(liveSet, n)
			}
		}
		alive := aliveSet(liveSet...)
		held := ipam.Holders(claims, alive, now, grace)
		for s, h := range held {
			for _, c := range claims {
				counts := alive(c.Node) || now.Sub(c.RenewedAt) < grace
				if c.Block == s && counts && c.Beats(h) {
					t.Fatalf("claims %v: holder %v of %s is beaten by %v", claims, h, s, c)
				}
			}
		}
		conflicts := ipam.Conflicts(claims, alive)
		for _, c := range conflicts {
			if !alive(c.Winner.Node) || !alive(c.Loser.Node) || c.Winner.Node == c.Loser.Node {
				t.Fatalf("bad conflict %+v", c)
			}
		}
		sh := slices.Clone(claims)
		r.Shuffle(len(sh), func(i, j int) { sh[i], sh[j] = sh[j], sh[i] })
		if !reflect.DeepEqual(ipam.Holders(sh, alive, now, grace), held) || !reflect.DeepEqual(ipam.Conflicts(sh, alive), conflicts) {
			t.Fatalf("order changes the answer for %v", claims)
		}
	}
}

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
	"time"

	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/ipam/ipamtest"
)

// TestAllocatorProperties runs random sequences of Allocate, Release,
// AddBlock (growing when full), RemoveBlock, MoveBlock and SetClaims, one
// in ten with a failing save, on small pools where only a few blocks are
// free for this node (the others are held by other nodes), so that blocks
// run full, the cluster runs out and blocks are given up and moved. After
// every step it checks the invariants of checkInvariants and the result
// against a model computed from the state before: a new address is the
// lowest free one in claim order, ErrFull exactly when every block is full,
// the errors of RemoveBlock, MoveBlock and SetClaims exactly when their
// rules say, a move keeps every offset, and a failed step changes nothing.
func TestAllocatorProperties(t *testing.T) {
	pools := []struct {
		name      string
		cluster   string
		blockBits int
		free      int // blocks free for this node
	}{
		{"ipv4 /28 blocks", "10.9.0.0/23", 28, 3},
		{"ipv4 /30 blocks", "10.9.0.0/23", 30, 14},
		{"ipv6 /124 blocks", "fd00:9::/112", 124, 3},
	}
	all := map[string]int{}
	for _, pc := range pools {
		t.Run(pc.name, func(t *testing.T) {
			p := newPool(t, pc.cluster, pc.blockBits)
			seen := map[string]int{}
			for seed := range uint64(16) {
				runOps(t, p, pc.free, rand.New(rand.NewPCG(seed, 99)), 400, seen)
			}
			// The sequences must reach the interesting paths, or they prove
			// little.
			for _, k := range []string{"ok", "full", "grown", "exhausted", "exists", "injected", "no claim",
				"not found", "first block", "holds leases", "stay first", "moved", "moved first", "removed"} {
				if seen[k] == 0 {
					t.Errorf("no step ended in %q: %v", k, seen)
				}
			}
			for k, n := range seen {
				all[k] += n
			}
		})
	}
	// Rare: a lease on the second address of a block that would become
	// the first; the /30 pool gets there.
	if all["node address"] == 0 {
		t.Errorf("no SetClaims refused for a leased node address: %v", all)
	}
}

// model is what the test knows of the pool: the blocks free for this node.
type model struct {
	p    *ipam.Pool
	free map[netip.Prefix]bool
}

// pick picks a free block not held, like a node's claimer; ErrExhausted
// when there is none.
func (m model) pick(st ipam.State, seed []byte) (netip.Prefix, error) {
	held := map[netip.Prefix]bool{}
	for _, c := range st.Claims {
		held[c.Block] = true
	}
	return m.p.Pick(func(b netip.Prefix) bool { return !m.free[b] || held[b] }, seed, netip.Prefix{})
}

// lowestFree is the address Allocate must give in state st, or false when
// every block is full.
func (m model) lowestFree(st ipam.State) (netip.Addr, bool) {
	used := map[netip.Addr]bool{}
	for _, l := range st.Leases {
		used[l.Addr] = true
	}
	for i, c := range st.Claims {
		first, last := c.Block.Addr(), lastOf(c.Block)
		for a := first.Next(); a != last; a = a.Next() {
			if i == 0 && a == first.Next() {
				continue
			}
			if !used[a] {
				return a, true
			}
		}
	}
	return netip.Addr{}, false
}

// leasesIn counts the leases of st in block b and reports whether one is on
// b's second address.
func leasesIn(st ipam.State, b netip.Prefix) (n int, second bool) {
	for _, l := range st.Leases {
		if b.Contains(l.Addr) {
			n++
			second = second || l.Addr == b.Addr().Next()
		}
	}
	return n, second
}

func runOps(t *testing.T, p *ipam.Pool, nfree int, r *rand.Rand, steps int, seen map[string]int) {
	t.Helper()
	// The blocks free for this node: nfree distinct random blocks.
	m := model{p: p, free: map[netip.Prefix]bool{}}
	for len(m.free) < nfree {
		b, err := p.Pick(func(b netip.Prefix) bool { return m.free[b] }, fmt.Append(nil, r.Int()), netip.Prefix{})
		if err != nil {
			t.Fatal(err)
		}
		m.free[b] = true
	}
	var store ipam.Store
	var st *ipamtest.Store
	if r.IntN(2) == 0 {
		st = ipamtest.NewStore()
		store = st
	} else {
		ls := ipamtest.NewLeaseStore()
		st, store = ls.Store, ls
	}
	a, err := ipam.NewAllocator(store, p)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("injected save failure")
	claim := func(b netip.Prefix) ipam.Claim { return blockClaim(b.String()) }
	heldBlock := func(st ipam.State) netip.Prefix {
		if len(st.Claims) == 0 || r.IntN(8) == 0 {
			// Sometimes a block not held.
			for b := range m.free {
				return b
			}
		}
		return st.Claims[r.IntN(len(st.Claims))].Block
	}
	wasFull := false
	for step := range steps {
		if r.IntN(10) == 0 {
			st.FailNextSave(boom)
		}
		before := a.State()
		what := ""
		var err error
		expect := func(want string) {
			t.Helper()
			switch {
			case errors.Is(err, boom):
			case want == "" && err != nil:
				t.Fatalf("step %d %s: %v, want success", step, what, err)
			case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
				t.Fatalf("step %d %s: %v, want an error containing %q", step, what, err, want)
			}
		}
		op := r.IntN(100)
		switch {
		case wasFull || len(before.Claims) == 0 && op < 10:
			// Grow: claim one more free block, as a node does on ErrFull.
			b, perr := m.pick(before, fmt.Append(nil, r.Int()))
			what = fmt.Sprintf("AddBlock(%s)", b)
			if errors.Is(perr, ipam.ErrExhausted) {
				seen["exhausted"]++
				if r.IntN(2) == 0 {
					// Try a held one: ErrExists.
					b = heldBlock(before)
				} else {
					wasFull = false
					continue
				}
			}
			wasFull = false
			err = a.AddBlock(claim(b))
			if slices.ContainsFunc(before.Claims, func(c ipam.Claim) bool { return c.Block == b }) {
				if !errors.Is(err, boom) && !errors.Is(err, ipam.ErrExists) {
					t.Fatalf("step %d %s of a held block: %v", step, what, err)
				}
			} else {
				expect("")
				if err == nil {
					seen["grown"]++
				}
			}
		case op < 50:
			svc, ctr := fmt.Sprint("s", r.IntN(5)), fmt.Sprint("c", r.IntN(60))
			what = fmt.Sprintf("Allocate(%s, %s)", svc, ctr)
			var l ipam.Lease
			l, err = a.Allocate(svc, ctr)
			want, ok := m.lowestFree(before)
			_, exists := before.Leases[ctr]
			switch {
			case errors.Is(err, boom):
			case len(before.Claims) == 0:
				if !errors.Is(err, ipam.ErrNoClaim) {
					t.Fatalf("step %d %s without a block: %v", step, what, err)
				}
			case exists:
				if !errors.Is(err, ipam.ErrExists) {
					t.Fatalf("step %d %s of a leased container: %v", step, what, err)
				}
			case !ok:
				if !errors.Is(err, ipam.ErrFull) {
					t.Fatalf("step %d %s with every block full: %v", step, what, err)
				}
				seen["full"]++
				wasFull = true
			case err != nil:
				t.Fatalf("step %d %s: %v", step, what, err)
			case l != ipam.Lease{Service: svc, Container: ctr, Addr: want}:
				t.Fatalf("step %d %s = %+v, want %s (lowest free in claim order)", step, what, l, want)
			}
		case op < 75:
			ctr := fmt.Sprint("c", r.IntN(60))
			what = fmt.Sprintf("Release(%s)", ctr)
			var l ipam.Lease
			var ok bool
			l, ok, err = a.Release(ctr)
			old, had := before.Leases[ctr]
			if err == nil && (ok != had || l != old) {
				t.Fatalf("step %d %s = %+v %v, state had %+v %v", step, what, l, ok, old, had)
			}
		case op < 83:
			b := heldBlock(before)
			what = fmt.Sprintf("RemoveBlock(%s)", b)
			err = a.RemoveBlock(b)
			i := slices.IndexFunc(before.Claims, func(c ipam.Claim) bool { return c.Block == b })
			n, _ := leasesIn(before, b)
			switch {
			case i < 0:
				if !errors.Is(err, ipam.ErrNotFound) {
					t.Fatalf("step %d %s not held: %v", step, what, err)
				}
			case i == 0:
				expect("node's first block")
			case n > 0:
				expect("holds")
			default:
				expect("")
				if err == nil {
					seen["removed"]++
				}
			}
		case op < 91:
			old := heldBlock(before)
			nb, perr := m.pick(before, fmt.Append(nil, r.Int()))
			if perr != nil || r.IntN(10) == 0 {
				nb = heldBlock(before)
			}
			what = fmt.Sprintf("MoveBlock(%s, %s)", old, nb)
			var moves []ipam.Move
			moves, err = a.MoveBlock(old, claim(nb))
			i := slices.IndexFunc(before.Claims, func(c ipam.Claim) bool { return c.Block == old })
			targetHeld := slices.ContainsFunc(before.Claims, func(c ipam.Claim) bool { return c.Block == nb })
			switch {
			case i < 0:
				if !errors.Is(err, ipam.ErrNotFound) {
					t.Fatalf("step %d %s not held: %v", step, what, err)
				}
			case targetHeld:
				if !errors.Is(err, ipam.ErrExists) && !errors.Is(err, boom) {
					t.Fatalf("step %d %s onto a held block: %v", step, what, err)
				}
			default:
				expect("")
				if err == nil {
					checkMoves(t, before, i, nb, moves, a)
					if len(moves) > 0 {
						seen["moved"]++
					}
					if i == 0 {
						seen["moved first"]++
					}
				}
			}
		default:
			// SetClaims: a renewal, a reordering, or fewer blocks.
			cs := slices.Clone(before.Claims)
			switch r.IntN(4) {
			case 0:
				for i := range cs {
					cs[i].RenewedAt = cs[i].RenewedAt.Add(time.Minute)
				}
			case 1:
				r.Shuffle(len(cs), func(i, j int) { cs[i], cs[j] = cs[j], cs[i] })
			case 2:
				if len(cs) > 0 {
					i := r.IntN(len(cs))
					cs = slices.Delete(cs, i, i+1)
				}
			case 3:
				if len(cs) > 1 {
					cs = cs[1:]
				}
			}
			what = fmt.Sprintf("SetClaims(%v)", blocksOf(cs))
			err = a.SetClaims(cs)
			want := ""
			if len(cs) == 0 {
				want = "no block"
			} else {
				kept := map[netip.Prefix]bool{}
				for _, c := range cs {
					kept[c.Block] = true
				}
				for i, c := range before.Claims {
					n, second := leasesIn(before, c.Block)
					switch {
					case n > 0 && !kept[c.Block]:
						want = "use MoveBlock"
					case i == 0 && n > 0 && cs[0].Block != c.Block:
						want = "must stay first"
					case i > 0 && cs[0].Block == c.Block && second:
						want = "cannot become the node's first"
					}
					if want != "" {
						break
					}
				}
			}
			expect(want)
			switch {
			case errors.Is(err, boom):
			case want == "use MoveBlock":
				seen["holds leases"]++
			case want == "must stay first":
				seen["stay first"]++
			case want == "cannot become the node's first":
				seen["node address"]++
			}
		}
		// An op that did not get to save leaves the failure armed.
		st.FailNextSave(nil)
		if err != nil && !reflect.DeepEqual(a.State(), before) {
			t.Fatalf("step %d %s failed (%v) but changed the state", step, what, err)
		}
		switch {
		case err == nil:
			seen["ok"]++
		case errors.Is(err, boom):
			seen["injected"]++
			wasFull = false
		case errors.Is(err, ipam.ErrFull):
		case errors.Is(err, ipam.ErrExists):
			seen["exists"]++
		case errors.Is(err, ipam.ErrNoClaim):
			seen["no claim"]++
		case errors.Is(err, ipam.ErrNotFound):
			seen["not found"]++
		case strings.Contains(err.Error(), "node's first block"):
			seen["first block"]++
		case strings.Contains(err.Error(), "holds"), strings.Contains(err.Error(), "must stay first"),
			strings.Contains(err.Error(), "cannot become the node's first"), strings.Contains(err.Error(), "no block"):
			seen["holds leases"]++
		default:
			t.Fatalf("step %d %s: unexpected error %v", step, what, err)
		}
		checkInvariants(t, a, p, st)
	}
}

// checkMoves: block i of before moved to nb: one move per lease in it,
// sorted by container, each keeping its offset; the other leases and claims
// stay; the node's address follows the first block.
func checkMoves(t *testing.T, before ipam.State, i int, nb netip.Prefix, moves []ipam.Move, a *ipam.Allocator) {
	t.Helper()
	old := before.Claims[i].Block
	n, _ := leasesIn(before, old)
	if len(moves) != n {
		t.Fatalf("MoveBlock(%s): %d moves for %d leases", old, len(moves), n)
	}
	for j, m := range moves {
		if j > 0 && moves[j-1].New.Container >= m.New.Container {
			t.Fatalf("moves not sorted by container: %v", moves)
		}
		if before.Leases[m.Old.Container] != m.Old || m.New.Container != m.Old.Container || m.New.Service != m.Old.Service {
			t.Fatalf("move %+v does not start from the lease", m)
		}
		if offset(old, m.Old.Addr) != offset(nb, m.New.Addr) {
			t.Fatalf("move %+v changes the offset from %s to %s", m, old, nb)
		}
	}
	after := a.State()
	want := slices.Clone(before.Claims)
	want[i] = blockClaim(nb.String())
	if !reflect.DeepEqual(after.Claims, want) {
		t.Fatalf("claims after MoveBlock %v, want %v", blocksOf(after.Claims), blocksOf(want))
	}
	for ctr, l := range before.Leases {
		if !old.Contains(l.Addr) && after.Leases[ctr] != l {
			t.Fatalf("lease of %s outside the moved block changed: %+v", ctr, after.Leases[ctr])
		}
	}
	if a.NodeAddr() != ipam.NodeAddr(after.Claims[0].Block) {
		t.Fatalf("NodeAddr %s after MoveBlock", a.NodeAddr())
	}
}

// offset counts addresses from b's base to a (small blocks only); -1 when a
// is outside b.
func offset(b netip.Prefix, a netip.Addr) int {
	if !b.Contains(a) {
		return -1
	}
	n := 0
	for x := b.Addr(); x != a; x = x.Next() {
		n++
	}
	return n
}

func blocksOf(cs []ipam.Claim) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range cs {
		out = append(out, c.Block)
	}
	return out
}

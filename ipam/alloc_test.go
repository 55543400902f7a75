package ipam_test

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/ipam/ipamtest"
)

// blockClaim is node key-a's claim on block b.
func blockClaim(b string) ipam.Claim {
	return ipam.Claim{Node: "key-a", Name: "host-a", Block: pfx(b), ClaimedAt: t0, RenewedAt: t0}
}

func claimsOf(bs ...string) []ipam.Claim {
	var out []ipam.Claim
	for _, b := range bs {
		out = append(out, blockClaim(b))
	}
	return out
}

// newAlloc returns an allocator over a fresh fake store holding blocks (none
// when blocks is empty).
func newAlloc(t testing.TB, p *ipam.Pool, blocks ...string) (*ipam.Allocator, *ipamtest.Store) {
	t.Helper()
	st := ipamtest.NewStore()
	a, err := ipam.NewAllocator(st, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) > 0 {
		if err := a.SetClaims(claimsOf(blocks...)); err != nil {
			t.Fatal(err)
		}
	}
	return a, st
}

func mustAllocate(t testing.TB, a *ipam.Allocator, service, container string) ipam.Lease {
	t.Helper()
	l, err := a.Allocate(service, container)
	if err != nil {
		t.Fatalf("Allocate(%s, %s): %v", service, container, err)
	}
	return l
}

// allocateN allocates containers c00, c01... in service svc.
func allocateN(t testing.TB, a *ipam.Allocator, n int) []ipam.Lease {
	t.Helper()
	var out []ipam.Lease
	for i := range n {
		out = append(out, mustAllocate(t, a, fmt.Sprint("svc", i%3), fmt.Sprintf("c%02d", i)))
	}
	return out
}

func mustRelease(t testing.TB, a *ipam.Allocator, container string) ipam.Lease {
	t.Helper()
	l, ok, err := a.Release(container)
	if err != nil || !ok {
		t.Fatalf("Release(%s) = %v, %v", container, ok, err)
	}
	return l
}

// smallPool: 16 claimable /28 blocks (10.9.0.0/28 ... 10.9.0.240/28) of 14
// container addresses, 13 in the first block (the node's address).
func smallPool(t testing.TB) *ipam.Pool { return newPool(t, "10.9.0.0/23", 28) }

// tinyPool: /30 blocks, two container addresses a block, one in the first.
func tinyPool(t testing.TB) *ipam.Pool { return newPool(t, "10.9.0.0/23", 30) }

const (
	blkA = "10.9.0.0/28"
	blkB = "10.9.0.16/28"
	blkC = "10.9.0.32/28"
	blkD = "10.9.0.48/28"
	blkE = "10.9.0.64/28"
)

func addrs(ls []ipam.Lease) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Addr.String())
	}
	return out
}

func TestAllocateOrder(t *testing.T) {
	p := defaultPool(t)
	a, st := newAlloc(t, p, "10.200.3.0/26", "10.200.7.64/26")
	if got := a.NodeAddr(); got != addr("10.200.3.1") {
		t.Fatalf("NodeAddr = %s", got)
	}
	// First block: offsets 2..62 (0 is the first address, 1 the node's, 63
	// the last), then the second block: offsets 1..62.
	var want []string
	for o := 2; o <= 62; o++ {
		want = append(want, fmt.Sprintf("10.200.3.%d", o))
	}
	for o := 1; o <= 62; o++ {
		want = append(want, fmt.Sprintf("10.200.7.%d", 64+o))
	}
	for i, w := range want {
		// Services do not matter: every container takes the lowest free
		// address in claim order.
		svc := []string{"web", "db", "cache"}[i%3]
		ctr := fmt.Sprintf("c%03d", i)
		l := mustAllocate(t, a, svc, ctr)
		if l != (ipam.Lease{Service: svc, Container: ctr, Addr: addr(w)}) {
			t.Fatalf("allocation %d: %+v, want %s", i, l, w)
		}
		if got, ok := a.Lease(ctr); !ok || got != l {
			t.Fatalf("Lease(%s) = %+v %v", ctr, got, ok)
		}
		if st.Saves() != i+2 { // the claims, then one per allocation
			t.Fatalf("after %d allocations: %d saves", i+1, st.Saves())
		}
	}
	if got := addrs(a.Leases()); !reflect.DeepEqual(got, want) {
		t.Fatalf("Leases (by address) = %v, want %v", got, want)
	}
	_, err := a.Allocate("web", "one-too-many")
	if !errors.Is(err, ipam.ErrFull) || !strings.Contains(err.Error(), "one-too-many") {
		t.Fatalf("Allocate with both blocks full = %v, want ErrFull naming the container", err)
	}
	if got := a.Usage(); !reflect.DeepEqual(got, []ipam.BlockUsage{{pfx("10.200.3.0/26"), 61}, {pfx("10.200.7.64/26"), 62}}) {
		t.Fatalf("Usage = %v", got)
	}
	checkInvariants(t, a, p, st)
}

func TestAllocateErrors(t *testing.T) {
	cases := []struct {
		name      string
		pool      func(testing.TB) *ipam.Pool
		blocks    []string
		setup     int // containers allocated first (c00, c01...)
		service   string
		container string
		wantIs    error
		wantInErr []string
	}{
		{"no claim", smallPool, nil, 0, "web", "w1", ipam.ErrNoClaim, []string{"w1", "web"}},
		{"empty service", smallPool, []string{blkA}, 0, "", "w1", nil, []string{"empty name"}},
		{"empty container", smallPool, []string{blkA}, 0, "web", "", nil, []string{"empty name"}},
		{"exists same service", smallPool, []string{blkA}, 1, "svc0", "c00", ipam.ErrExists, []string{"c00", "10.9.0.2"}},
		{"exists other service", smallPool, []string{blkA}, 1, "db", "c00", ipam.ErrExists, []string{"c00", "svc0"}},
		{"exists when full", smallPool, []string{blkA}, 13, "db", "c00", ipam.ErrExists, []string{"c00"}},
		{"one block full", smallPool, []string{blkA}, 13, "web", "w1", ipam.ErrFull, []string{"w1", "all 1 blocks"}},
		{"two blocks full", smallPool, []string{blkA, blkB}, 27, "web", "w1", ipam.ErrFull, []string{"w1", "all 2 blocks"}},
		{"tiny first block full", tinyPool, []string{"10.9.0.0/30"}, 1, "web", "w1", ipam.ErrFull, []string{"w1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.pool(t)
			a, st := newAlloc(t, p, tc.blocks...)
			allocateN(t, a, tc.setup)
			before, saves := a.State(), st.Saves()
			l, err := a.Allocate(tc.service, tc.container)
			if err == nil {
				t.Fatalf("Allocate(%q, %q) = %+v, want an error", tc.service, tc.container, l)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Fatalf("error %v is not %v", err, tc.wantIs)
			}
			for _, w := range tc.wantInErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if !reflect.DeepEqual(a.State(), before) || st.Saves() != saves {
				t.Fatalf("failed Allocate changed the state or saved")
			}
			checkInvariants(t, a, p, st)
		})
	}
}

func TestReleaseAndReuse(t *testing.T) {
	p := smallPool(t)
	a, st := newAlloc(t, p, blkA, blkB)
	ls := allocateN(t, a, 15) // c00..c12 in A (.2-.14), c13 c14 in B (.17 .18)
	if got := addrs(ls[12:]); !reflect.DeepEqual(got, []string{"10.9.0.14", "10.9.0.17", "10.9.0.18"}) {
		t.Fatalf("layout %v", got)
	}
	if l, ok, err := a.Release("nobody"); err != nil || ok || l != (ipam.Lease{}) {
		t.Fatalf("Release(nobody) = %+v %v %v", l, ok, err)
	}
	saves := st.Saves()
	if l := mustRelease(t, a, "c05"); l != ls[5] {
		t.Fatalf("Release(c05) = %+v, want %+v", l, ls[5])
	}
	if st.Saves() != saves+1 {
		t.Fatalf("Release did not save")
	}
	if _, ok := a.Lease("c05"); ok {
		t.Fatalf("c05 still leased")
	}
	if l, ok, err := a.Release("c05"); err != nil || ok {
		t.Fatalf("second Release(c05) = %+v %v %v", l, ok, err)
	}
	// The lowest free address in claim order is c05's old one in A, though
	// B has free addresses, and it goes to another container of another
	// service.
	if l := mustAllocate(t, a, "other", "x1"); l.Addr != ls[5].Addr {
		t.Fatalf("x1 got %s, want c05's old %s", l.Addr, ls[5].Addr)
	}
	mustRelease(t, a, "c13")
	mustRelease(t, a, "c14")
	if got := a.EmptyBlocks(); !reflect.DeepEqual(got, prefixes(blkB)) {
		t.Fatalf("EmptyBlocks = %v, want B", got)
	}
	if l := mustAllocate(t, a, "web", "x2"); l.Addr != addr("10.9.0.17") {
		t.Fatalf("x2 got %s, want B's lowest", l.Addr)
	}
	mustRelease(t, a, "c00")
	if l := mustAllocate(t, a, "web", "x3"); l.Addr != addr("10.9.0.2") {
		t.Fatalf("x3 got %s, want A's lowest", l.Addr)
	}
	checkInvariants(t, a, p, st)
}

func TestSetClaims(t *testing.T) {
	renewed := claimsOf(blkA)
	renewed[0].RenewedAt = t0.Add(time.Hour)
	older := claimsOf(blkA, blkB)
	older[1].ClaimedAt = t0.Add(-time.Hour)
	otherNode := claimsOf(blkA, blkB)
	otherNode[1].Node = "key-b"
	cases := []struct {
		name      string
		pool      func(testing.TB) *ipam.Pool
		before    []string // blocks claimed before
		setup     func(*ipam.Allocator) error
		cs        []ipam.Claim
		wantInErr string
		wantNode  string   // NodeAddr after
		wantNext  []string // the next allocations after
	}{
		{"first claims", smallPool, nil, nil, claimsOf(blkA, blkB), "", "10.9.0.1", []string{"10.9.0.2"}},
		{"renewal", smallPool, []string{blkA}, leases(2), renewed, "", "10.9.0.1", []string{"10.9.0.4"}},
		{"claim time change", smallPool, []string{blkA, blkB}, leases(2), older, "", "10.9.0.1", []string{"10.9.0.4"}},
		{"grow", smallPool, []string{blkA}, leases(13), claimsOf(blkA, blkC), "", "10.9.0.1", []string{"10.9.0.33"}},
		{"drop empty block", smallPool, []string{blkA, blkB}, leases(2), claimsOf(blkA), "", "10.9.0.1", []string{"10.9.0.4"}},
		{"drop block with leases", smallPool, []string{blkA, blkB}, leases(15), claimsOf(blkA), "holds 2 leases; use MoveBlock", "", nil},
		{"first with leases must stay first", smallPool, []string{blkA, blkB}, leases(2), claimsOf(blkB, blkA), "must stay first", "", nil},
		{"first with leases dropped", smallPool, []string{blkA, blkB}, leases(2), claimsOf(blkB), "10.9.0.0/28 holds 2 leases", "", nil},
		{"empty first replaced", smallPool, []string{blkA, blkB}, nil, claimsOf(blkC), "", "10.9.0.33", []string{"10.9.0.34"}},
		// The node's address moves to B; A's second address is a
		// container's now.
		{"empty first swapped", tinyPool, []string{"10.9.0.0/30", "10.9.0.4/30"}, nil, claimsOf("10.9.0.4/30", "10.9.0.0/30"), "", "10.9.0.5", []string{"10.9.0.6", "10.9.0.1", "10.9.0.2"}},
		{"node address leased in the new first", tinyPool, []string{"10.9.0.0/30", "10.9.0.4/30"}, func(a *ipam.Allocator) error {
			if err := leases(2)(a); err != nil { // .2 and .5
				return err
			}
			_, _, err := a.Release("c00")
			return err
		}, claimsOf("10.9.0.4/30", "10.9.0.0/30"), "cannot become the node's first", "", nil},
		{"no block", smallPool, []string{blkA}, nil, nil, "no block", "", nil},
		{"reserved", smallPool, nil, nil, claimsOf("10.9.1.0/28"), "reserved", "", nil},
		{"wrong length", smallPool, nil, nil, claimsOf("10.9.0.0/27"), "not a /28", "", nil},
		{"outside", smallPool, nil, nil, claimsOf("10.8.0.0/28"), "outside the cluster", "", nil},
		{"twice", smallPool, nil, nil, claimsOf(blkA, blkB, blkA), "block 10.9.0.0/28 twice", "", nil},
		{"two nodes", smallPool, nil, nil, otherNode, "one node's state", "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.pool(t)
			a, st := newAlloc(t, p, tc.before...)
			if tc.setup != nil {
				if err := tc.setup(a); err != nil {
					t.Fatal(err)
				}
			}
			before, saves, usage := a.State(), st.Saves(), a.Usage()
			err := a.SetClaims(tc.cs)
			if tc.wantInErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantInErr) {
					t.Fatalf("SetClaims = %v, want error containing %q", err, tc.wantInErr)
				}
				if !reflect.DeepEqual(a.State(), before) || st.Saves() != saves || !reflect.DeepEqual(a.Usage(), usage) {
					t.Fatalf("failed SetClaims changed the state")
				}
				checkInvariants(t, a, p, st)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := a.Claims(); !reflect.DeepEqual(got, tc.cs) {
				t.Fatalf("Claims = %+v, want %+v", got, tc.cs)
			}
			if st.Saves() != saves+1 || !reflect.DeepEqual(st.State(), a.State()) {
				t.Fatalf("SetClaims not saved")
			}
			if !reflect.DeepEqual(a.State().Leases, before.Leases) {
				t.Fatalf("SetClaims changed leases")
			}
			if got := a.NodeAddr(); got != addr(tc.wantNode) {
				t.Fatalf("NodeAddr = %s, want %s", got, tc.wantNode)
			}
			checkInvariants(t, a, p, st)
			for i, w := range tc.wantNext {
				if l := mustAllocate(t, a, "next", fmt.Sprint("n", i)); l.Addr != addr(w) {
					t.Fatalf("allocation %d after SetClaims at %s, want %s", i, l.Addr, w)
				}
			}
			checkInvariants(t, a, p, st)
		})
	}
}

// leases returns a setup that allocates n containers c00, c01...
func leases(n int) func(*ipam.Allocator) error {
	return func(a *ipam.Allocator) error {
		for i := range n {
			if _, err := a.Allocate(fmt.Sprint("svc", i%3), fmt.Sprintf("c%02d", i)); err != nil {
				return err
			}
		}
		return nil
	}
}

func TestAddBlock(t *testing.T) {
	other := blockClaim(blkC)
	other.Node = "key-b"
	cases := []struct {
		name      string
		before    []string
		c         ipam.Claim
		wantIs    error
		wantInErr string
		wantNode  string
	}{
		{"first block", nil, blockClaim(blkB), nil, "", "10.9.0.17"},
		{"after the others", []string{blkA, blkB}, blockClaim(blkC), nil, "", "10.9.0.1"},
		{"below the others", []string{blkB, blkC}, blockClaim(blkA), nil, "", "10.9.0.17"},
		{"already held", []string{blkA, blkB}, blockClaim(blkB), ipam.ErrExists, "10.9.0.16/28", ""},
		{"reserved", []string{blkA}, blockClaim("10.9.1.240/28"), nil, "reserved", ""},
		{"not masked", []string{blkA}, blockClaim("10.9.0.33/28"), nil, "use 10.9.0.32/28", ""},
		{"zero", []string{blkA}, ipam.Claim{Node: "key-a"}, nil, "not a valid prefix", ""},
		{"other node", []string{blkA}, other, nil, "key-b", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := smallPool(t)
			a, st := newAlloc(t, p, tc.before...)
			before, saves := a.State(), st.Saves()
			err := a.AddBlock(tc.c)
			if tc.wantInErr != "" || tc.wantIs != nil {
				if err == nil || !strings.Contains(err.Error(), tc.wantInErr) || (tc.wantIs != nil && !errors.Is(err, tc.wantIs)) {
					t.Fatalf("AddBlock = %v, want error %v containing %q", err, tc.wantIs, tc.wantInErr)
				}
				if !reflect.DeepEqual(a.State(), before) || st.Saves() != saves {
					t.Fatalf("failed AddBlock changed the state")
				}
				checkInvariants(t, a, p, st)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := append(claimsOf(tc.before...), tc.c)
			if got := a.Claims(); !reflect.DeepEqual(got, want) {
				t.Fatalf("Claims = %v, want %v", got, want)
			}
			if st.Saves() != saves+1 {
				t.Fatalf("AddBlock did not save")
			}
			if got := a.NodeAddr(); got != addr(tc.wantNode) {
				t.Fatalf("NodeAddr = %s, want %s", got, tc.wantNode)
			}
			checkInvariants(t, a, p, st)
		})
	}
}

// TestGrowWhenFull: the caller's loop, ErrFull → AddBlock → Allocate,
// fills block after block in claim order.
func TestGrowWhenFull(t *testing.T) {
	p := smallPool(t)
	a, st := newAlloc(t, p, blkC)
	held := func(b netip.Prefix) bool {
		return slices.ContainsFunc(a.Claims(), func(c ipam.Claim) bool { return c.Block == b })
	}
	grown := 0
	for i := range 13 + 14*15 {
		ctr := fmt.Sprint("c", i)
		l, err := a.Allocate("web", ctr)
		if errors.Is(err, ipam.ErrFull) {
			b, perr := p.PickNext(held, blocksOf(a.Claims()), []byte("key-a"))
			if perr != nil {
				t.Fatalf("Pick after %d leases: %v", i, perr)
			}
			if err := a.AddBlock(blockClaim(b.String())); err != nil {
				t.Fatal(err)
			}
			grown++
			l, err = a.Allocate("web", ctr)
		}
		if err != nil {
			t.Fatalf("Allocate %d: %v", i, err)
		}
		if u := a.Usage(); l.Addr != nth(u[len(u)-1].Block, lastOffsetUsed(u)) {
			t.Fatalf("Allocate %d = %s, not the next address of the last block %v", i, l.Addr, u[len(u)-1])
		}
	}
	if grown != 15 || len(a.Claims()) != 16 {
		t.Fatalf("grew %d times to %d blocks, want 15 to 16", grown, len(a.Claims()))
	}
	if _, err := a.Allocate("web", "more"); !errors.Is(err, ipam.ErrFull) {
		t.Fatalf("Allocate = %v, want ErrFull", err)
	}
	if _, err := p.Pick(held, []byte("key-a"), netip.Prefix{}); !errors.Is(err, ipam.ErrExhausted) || !strings.Contains(err.Error(), "10.9.0.0/23") {
		t.Fatalf("Pick with every block held = %v, want ErrExhausted naming the cluster", err)
	}
	checkInvariants(t, a, p, st)
}

// lastOffsetUsed is the offset of the last lease made in the last block
// when blocks fill in order: its count, +1 in the first block.
func lastOffsetUsed(u []ipam.BlockUsage) uint64 {
	if len(u) == 1 {
		return uint64(u[0].Leases) + 1
	}
	return uint64(u[len(u)-1].Leases)
}

// nth is the address at offset off in p.
func nth(p netip.Prefix, off uint64) netip.Addr {
	a := p.Masked().Addr()
	for range off {
		a = a.Next()
	}
	return a
}

func TestRemoveBlockAndEmptyBlocks(t *testing.T) {
	p := smallPool(t)
	setup := func(t *testing.T) (*ipam.Allocator, *ipamtest.Store) {
		a, st := newAlloc(t, p, blkA, blkB, blkC, blkD)
		allocateN(t, a, 14) // A full, c13 in B
		return a, st
	}
	t.Run("empty blocks and usage", func(t *testing.T) {
		a, st := setup(t)
		if got := a.EmptyBlocks(); !reflect.DeepEqual(got, prefixes(blkC, blkD)) {
			t.Fatalf("EmptyBlocks = %v", got)
		}
		want := []ipam.BlockUsage{{pfx(blkA), 13}, {pfx(blkB), 1}, {pfx(blkC), 0}, {pfx(blkD), 0}}
		if got := a.Usage(); !reflect.DeepEqual(got, want) {
			t.Fatalf("Usage = %v, want %v", got, want)
		}
		for i := range 13 {
			mustRelease(t, a, fmt.Sprintf("c%02d", i))
		}
		// The first block never counts as empty.
		if got := a.EmptyBlocks(); !reflect.DeepEqual(got, prefixes(blkC, blkD)) {
			t.Fatalf("EmptyBlocks with an empty first block = %v", got)
		}
		mustRelease(t, a, "c13")
		if got := a.EmptyBlocks(); !reflect.DeepEqual(got, prefixes(blkB, blkC, blkD)) {
			t.Fatalf("EmptyBlocks in claim order = %v", got)
		}
		checkInvariants(t, a, p, st)
	})
	cases := []struct {
		name      string
		b         string
		wantIs    error
		wantInErr string
	}{
		{"empty", blkC, nil, ""},
		{"empty last", blkD, nil, ""},
		{"not held", blkE, ipam.ErrNotFound, "10.9.0.64/28"},
		{"first", blkA, nil, "node's first block"},
		{"holds a lease", blkB, nil, "holds 1 leases"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, st := setup(t)
			before, saves := a.State(), st.Saves()
			err := a.RemoveBlock(pfx(tc.b))
			if tc.wantInErr != "" || tc.wantIs != nil {
				if err == nil || !strings.Contains(err.Error(), tc.wantInErr) || (tc.wantIs != nil && !errors.Is(err, tc.wantIs)) {
					t.Fatalf("RemoveBlock = %v, want error %v containing %q", err, tc.wantIs, tc.wantInErr)
				}
				if !reflect.DeepEqual(a.State(), before) || st.Saves() != saves {
					t.Fatalf("failed RemoveBlock changed the state")
				}
				checkInvariants(t, a, p, st)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if slices.ContainsFunc(a.Claims(), func(c ipam.Claim) bool { return c.Block == pfx(tc.b) }) || len(a.Claims()) != 3 {
				t.Fatalf("Claims after RemoveBlock(%s) = %v", tc.b, a.Claims())
			}
			if slices.Contains(a.EmptyBlocks(), pfx(tc.b)) || st.Saves() != saves+1 {
				t.Fatalf("RemoveBlock not recorded")
			}
			checkInvariants(t, a, p, st)
		})
	}
}

func TestMoveBlock(t *testing.T) {
	p := smallPool(t)
	a, st := newAlloc(t, p, blkA, blkB)
	ls := allocateN(t, a, 15) // c00..c12 in A, c13 c14 in B
	mustRelease(t, a, "c03")  // a hole at 10.9.0.5

	// A block that is not the first: its leases keep their offsets.
	moves, err := a.MoveBlock(pfx(blkB), blockClaim(blkD))
	if err != nil {
		t.Fatal(err)
	}
	want := []ipam.Move{
		{Old: ls[13], New: ipam.Lease{Service: ls[13].Service, Container: "c13", Addr: addr("10.9.0.49")}},
		{Old: ls[14], New: ipam.Lease{Service: ls[14].Service, Container: "c14", Addr: addr("10.9.0.50")}},
	}
	if !reflect.DeepEqual(moves, want) {
		t.Fatalf("moves\n%+v\nwant\n%+v", moves, want)
	}
	if got := a.Claims(); !reflect.DeepEqual(got, claimsOf(blkA, blkD)) {
		t.Fatalf("Claims = %v, want the new block in the old one's place", got)
	}
	if a.NodeAddr() != addr("10.9.0.1") {
		t.Fatalf("NodeAddr moved with a block that is not the first: %s", a.NodeAddr())
	}
	if l, _ := a.Lease("c13"); l != want[0].New {
		t.Fatalf("Lease(c13) = %+v", l)
	}
	if l, _ := a.Lease("c00"); l != ls[0] {
		t.Fatalf("lease of c00 in the first block changed: %+v", l)
	}
	checkInvariants(t, a, p, st)
	// Holes stay holes and the used offsets stay used in the new block.
	if l := mustAllocate(t, a, "web", "h1"); l.Addr != addr("10.9.0.5") {
		t.Fatalf("h1 at %s, want the hole in A", l.Addr)
	}
	if l := mustAllocate(t, a, "web", "h2"); l.Addr != addr("10.9.0.51") {
		t.Fatalf("h2 at %s, want D's next", l.Addr)
	}

	// The first block: the node's address moves with it, and its second
	// address stays the node's.
	saves := st.Saves()
	moves, err = a.MoveBlock(pfx(blkA), blockClaim(blkE))
	if err != nil {
		t.Fatal(err)
	}
	if len(moves) != 13 || st.Saves() != saves+1 {
		t.Fatalf("%d moves, %d saves, want 13 and one save", len(moves), st.Saves()-saves)
	}
	for i, m := range moves {
		if i > 0 && moves[i-1].New.Container >= m.New.Container {
			t.Fatalf("moves not sorted by container: %v", moves)
		}
		old := m.Old.Addr.As4()
		nw := m.New.Addr.As4()
		if !pfx(blkA).Contains(m.Old.Addr) || !pfx(blkE).Contains(m.New.Addr) || old[3]%16 != nw[3]%16 ||
			m.Old.Container != m.New.Container || m.Old.Service != m.New.Service {
			t.Fatalf("move %+v does not keep the offset", m)
		}
	}
	if a.NodeAddr() != addr("10.9.0.65") {
		t.Fatalf("NodeAddr = %s after moving the first block, want 10.9.0.65", a.NodeAddr())
	}
	if got := a.Claims(); !reflect.DeepEqual(got, claimsOf(blkE, blkD)) {
		t.Fatalf("Claims = %v", got)
	}
	checkInvariants(t, a, p, st)
	for i := range 13 {
		mustRelease(t, a, moves[i].New.Container)
	}
	// E empty again: refilled from offset 2, never the node's 10.9.0.65.
	for i := range 13 {
		if l := mustAllocate(t, a, "web", fmt.Sprint("r", i)); l.Addr != addr(fmt.Sprint("10.9.0.", 66+i)) {
			t.Fatalf("refill %d at %s", i, l.Addr)
		}
	}
	checkInvariants(t, a, p, st)

	other := blockClaim(blkC)
	other.Node = "key-b"
	errCases := []struct {
		name      string
		old       string
		c         ipam.Claim
		wantIs    error
		wantInErr string
	}{
		{"not held", blkB, blockClaim(blkC), ipam.ErrNotFound, "10.9.0.16/28"},
		{"target held", blkD, blockClaim(blkE), ipam.ErrExists, "10.9.0.64/28"},
		{"onto itself", blkD, blockClaim(blkD), ipam.ErrExists, ""},
		{"target reserved", blkD, blockClaim("10.9.1.0/28"), nil, "reserved"},
		{"target wrong length", blkD, blockClaim("10.9.0.32/27"), nil, "not a /28"},
		{"target of another node", blkD, other, nil, "key-b"},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			before, saves := a.State(), st.Saves()
			m, err := a.MoveBlock(pfx(tc.old), tc.c)
			if err == nil || !strings.Contains(err.Error(), tc.wantInErr) || (tc.wantIs != nil && !errors.Is(err, tc.wantIs)) || m != nil {
				t.Fatalf("MoveBlock = %v, %v, want error %v containing %q", m, err, tc.wantIs, tc.wantInErr)
			}
			if !reflect.DeepEqual(a.State(), before) || st.Saves() != saves {
				t.Fatalf("failed MoveBlock changed the state")
			}
		})
	}
	checkInvariants(t, a, p, st)
}

// TestRollback: every mutation whose save fails (through Save, or through
// SaveLease for a LeaseStore) leaves memory and store as they were, and the
// same mutation then succeeds with the same result as on an allocator that
// never failed.
func TestRollback(t *testing.T) {
	p := smallPool(t)
	boom := errors.New("disk on fire")
	withBlocks := func(a *ipam.Allocator) error { return a.SetClaims(claimsOf(blkA, blkB, blkC)) }
	// withLeases: A full, c13 and c14 in B, C empty, a hole at c05.
	withLeases := func(a *ipam.Allocator) error {
		if err := withBlocks(a); err != nil {
			return err
		}
		if err := leases(15)(a); err != nil {
			return err
		}
		_, _, err := a.Release("c05")
		return err
	}
	fullFirst := func(a *ipam.Allocator) error {
		if err := withBlocks(a); err != nil {
			return err
		}
		return leases(15)(a)
	}
	renewed := claimsOf(blkA, blkB, blkC)
	for i := range renewed {
		renewed[i].RenewedAt = t0.Add(time.Minute)
	}
	cases := []struct {
		name  string
		setup func(*ipam.Allocator) error
		op    func(*ipam.Allocator) (any, error)
	}{
		{"first claims", nil, func(a *ipam.Allocator) (any, error) { return nil, a.SetClaims(claimsOf(blkA)) }},
		{"renew claims", withLeases, func(a *ipam.Allocator) (any, error) { return nil, a.SetClaims(renewed) }},
		{"drop a block by SetClaims", withLeases, func(a *ipam.Allocator) (any, error) { return nil, a.SetClaims(claimsOf(blkA, blkB)) }},
		{"swap the empty first block", withBlocks, func(a *ipam.Allocator) (any, error) { return nil, a.SetClaims(claimsOf(blkC, blkA)) }},
		{"first AddBlock", nil, func(a *ipam.Allocator) (any, error) { return nil, a.AddBlock(blockClaim(blkB)) }},
		{"AddBlock", withLeases, func(a *ipam.Allocator) (any, error) { return nil, a.AddBlock(blockClaim(blkD)) }},
		{"RemoveBlock", withLeases, func(a *ipam.Allocator) (any, error) { return nil, a.RemoveBlock(pfx(blkC)) }},
		{"RemoveBlock in the middle", withBlocks, func(a *ipam.Allocator) (any, error) { return nil, a.RemoveBlock(pfx(blkB)) }},
		{"MoveBlock", withLeases, func(a *ipam.Allocator) (any, error) { return a.MoveBlock(pfx(blkB), blockClaim(blkD)) }},
		{"MoveBlock first", withLeases, func(a *ipam.Allocator) (any, error) { return a.MoveBlock(pfx(blkA), blockClaim(blkE)) }},
		{"Allocate first", withBlocks, func(a *ipam.Allocator) (any, error) { return a.Allocate("web", "w1") }},
		{"Allocate into a hole", withLeases, func(a *ipam.Allocator) (any, error) { return a.Allocate("web", "w1") }},
		{"Allocate in a later block", fullFirst, func(a *ipam.Allocator) (any, error) { return a.Allocate("web", "w1") }},
		{"Release", withLeases, func(a *ipam.Allocator) (any, error) {
			l, ok, err := a.Release("c13")
			return [2]any{l, ok}, err
		}},
		{"Release in the first block", withLeases, func(a *ipam.Allocator) (any, error) {
			l, ok, err := a.Release("c00")
			return [2]any{l, ok}, err
		}},
	}
	stores := []struct {
		name string
		new  func() (ipam.Store, *ipamtest.Store)
	}{
		{"Save", func() (ipam.Store, *ipamtest.Store) { s := ipamtest.NewStore(); return s, s }},
		{"SaveLease", func() (ipam.Store, *ipamtest.Store) { s := ipamtest.NewLeaseStore(); return s, s.Store }},
	}
	for _, sc := range stores {
		for _, tc := range cases {
			t.Run(sc.name+"/"+tc.name, func(t *testing.T) {
				open := func() (*ipam.Allocator, *ipamtest.Store) {
					store, st := sc.new()
					a, err := ipam.NewAllocator(store, p)
					if err != nil {
						t.Fatal(err)
					}
					if tc.setup != nil {
						if err := tc.setup(a); err != nil {
							t.Fatal(err)
						}
					}
					return a, st
				}
				a, st := open()
				before, stored, saves := a.State(), st.State(), st.Saves()
				usage, empty, node := a.Usage(), a.EmptyBlocks(), a.NodeAddr()
				st.FailNextSave(boom)
				if _, err := tc.op(a); !errors.Is(err, boom) {
					t.Fatalf("op error %v, want %v", err, boom)
				}
				st.FailNextSave(nil)
				if !reflect.DeepEqual(a.State(), before) {
					t.Fatalf("memory changed by a failed save:\n%+v\nwas\n%+v", a.State(), before)
				}
				if !reflect.DeepEqual(a.Usage(), usage) || !reflect.DeepEqual(a.EmptyBlocks(), empty) || a.NodeAddr() != node {
					t.Fatalf("usage, empty blocks or node address changed by a failed save")
				}
				if !reflect.DeepEqual(st.State(), stored) || st.Saves() != saves {
					t.Fatalf("store changed by a failed save")
				}
				checkInvariants(t, a, p, st)
				// Redo, and compare with an allocator that never failed.
				ref, _ := open()
				want, werr := tc.op(ref)
				got, err := tc.op(a)
				if err != nil || werr != nil || !reflect.DeepEqual(got, want) || !reflect.DeepEqual(a.State(), ref.State()) {
					t.Fatalf("after rollback: %v %v, never failed: %v %v", got, err, want, werr)
				}
				// And the indices agree: the next allocation is the same.
				l1, err1 := a.Allocate("next", "next")
				l2, err2 := ref.Allocate("next", "next")
				if l1 != l2 || (err1 == nil) != (err2 == nil) {
					t.Fatalf("next allocation after rollback %v %v, never failed %v %v", l1, err1, l2, err2)
				}
				checkInvariants(t, a, p, st)
			})
		}
	}
}

// TestLeaseStoreUsed: with a LeaseStore, Allocate and Release go through
// SaveLease and block changes through Save.
func TestLeaseStoreUsed(t *testing.T) {
	p := smallPool(t)
	st := ipamtest.NewLeaseStore()
	a, err := ipam.NewAllocator(st, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetClaims(claimsOf(blkA)); err != nil {
		t.Fatal(err)
	}
	mustAllocate(t, a, "web", "w1")
	mustAllocate(t, a, "web", "w2")
	mustRelease(t, a, "w1")
	if err := a.AddBlock(blockClaim(blkB)); err != nil {
		t.Fatal(err)
	}
	if st.LeaseSaves() != 3 || st.Saves() != 5 {
		t.Fatalf("%d SaveLease of %d saves, want 3 of 5", st.LeaseSaves(), st.Saves())
	}
	checkInvariants(t, a, p, st.Store)
}

func TestConcurrentUse(t *testing.T) {
	p := smallPool(t)
	a, st := newAlloc(t, p, blkA)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svc := fmt.Sprint("svc", g)
			for i := range 200 {
				c := fmt.Sprintf("%s-%d", svc, i%12)
				if _, ok := a.Lease(c); ok {
					if _, _, err := a.Release(c); err != nil {
						t.Error(err)
					}
				} else if _, err := a.Allocate(svc, c); errors.Is(err, ipam.ErrFull) {
					held := map[netip.Prefix]bool{}
					for _, cl := range a.Claims() {
						held[cl.Block] = true
					}
					b, err := p.Pick(func(x netip.Prefix) bool { return held[x] }, []byte(svc), netip.Prefix{})
					if err != nil {
						t.Error(err)
						return
					}
					if err := a.AddBlock(blockClaim(b.String())); err != nil && !errors.Is(err, ipam.ErrExists) {
						t.Error(err)
					}
				} else if err != nil {
					t.Error(err)
				}
				if i%20 == 0 {
					for _, b := range a.EmptyBlocks() {
						// Another goroutine may fill it meanwhile.
						if err := a.RemoveBlock(b); err != nil && !errors.Is(err, ipam.ErrNotFound) && !strings.Contains(err.Error(), "holds") {
							t.Error(err)
						}
					}
				}
				a.Leases()
				a.Usage()
			}
		}()
	}
	wg.Wait()
	checkInvariants(t, a, p, st)
}

func TestNewAllocatorNil(t *testing.T) {
	if _, err := ipam.NewAllocator(nil, smallPool(t)); err == nil {
		t.Fatal("NewAllocator(nil store) succeeded")
	}
	if _, err := ipam.NewAllocator(ipamtest.NewStore(), nil); err == nil {
		t.Fatal("NewAllocator(nil pool) succeeded")
	}
}

func TestLoadFailingStore(t *testing.T) {
	st := ipamtest.NewStore()
	boom := errors.New("unreadable")
	st.FailLoad(boom)
	if _, err := ipam.NewAllocator(st, defaultPool(t)); !errors.Is(err, boom) {
		t.Fatalf("NewAllocator = %v, want %v", err, boom)
	}
}

// goodState is a consistent state of the default pool: blocks
// 10.200.3.0/26 (first) and 10.200.9.64/26.
func goodState() ipam.State {
	return ipam.State{
		Version: ipam.StateVersion,
		Claims:  claimsOf("10.200.3.0/26", "10.200.9.64/26"),
		Leases: map[string]ipam.Lease{
			"w1": {Service: "web", Container: "w1", Addr: addr("10.200.3.2")},
			"w2": {Service: "web", Container: "w2", Addr: addr("10.200.3.62")},
			"d1": {Service: "db", Container: "d1", Addr: addr("10.200.9.65")},
		},
	}
}

func TestLoadInconsistent(t *testing.T) {
	setLease := func(ctr, a string) func(*ipam.State) {
		return func(s *ipam.State) { s.Leases[ctr] = ipam.Lease{Service: "web", Container: ctr, Addr: addr(a)} }
	}
	cases := []struct {
		name      string
		edit      func(*ipam.State)
		wantInErr string // "" means it loads
	}{
		{"good", func(*ipam.State) {}, ""},
		{"empty", func(s *ipam.State) { *s = ipam.State{} }, ""},
		{"version 0", func(s *ipam.State) { s.Version = 0 }, ""},
		{"claims only", func(s *ipam.State) { s.Leases = nil }, ""},
		{"offset 1 of a later block", setLease("x", "10.200.9.66"), ""},
		{"version 3", func(s *ipam.State) { s.Version = 3 }, "state version 3"},
		{"leases without claim", func(s *ipam.State) { s.Claims = nil }, "3 leases but no block"},
		{"block reserved", func(s *ipam.State) { s.Claims[1].Block = pfx("10.203.255.64/26") }, "claim 1: block 10.203.255.64/26 overlaps"},
		{"block wrong length", func(s *ipam.State) { s.Claims[1].Block = pfx("10.200.9.64/27") }, "not a /26"},
		{"block not masked", func(s *ipam.State) { s.Claims[1].Block = pfx("10.200.9.65/26") }, "use 10.200.9.64/26"},
		{"block outside", func(s *ipam.State) { s.Claims[1].Block = pfx("10.100.9.64/26") }, "outside the cluster"},
		{"block twice", func(s *ipam.State) { s.Claims[1].Block = s.Claims[0].Block }, "claimed twice"},
		{"two nodes", func(s *ipam.State) { s.Claims[1].Node = "key-b" }, "one node's state"},
		{"lease key differs", func(s *ipam.State) { l := s.Leases["w1"]; l.Container = "x"; s.Leases["w1"] = l }, `"w1" names container "x"`},
		{"empty container", func(s *ipam.State) { s.Leases[""] = ipam.Lease{Service: "web", Addr: addr("10.200.3.9")} }, `container ""`},
		{"no service", func(s *ipam.State) { l := s.Leases["w1"]; l.Service = ""; s.Leases["w1"] = l }, "w1 has no service"},
		{"lease outside the blocks", setLease("x", "10.200.4.2"), "10.200.4.2 of container x is in none"},
		{"lease on a block's first address", setLease("x", "10.200.9.64"), "first or last address of block 10.200.9.64/26"},
		{"lease on a block's last address", setLease("x", "10.200.3.63"), "first or last"},
		{"lease on the node's address", setLease("x", "10.200.3.1"), "node's own"},
		{"address twice", setLease("x", "10.200.3.2"), "both containers w1 and x"},
		{"ipv6 lease", setLease("x", "fd00::2"), "in none of the node's blocks"},
		{"zero address", setLease("x", "0.0.0.0"), "in none"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := goodState()
			tc.edit(&st)
			a, err := ipam.NewAllocator(ipamtest.NewStoreWith(st), defaultPool(t))
			if tc.wantInErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				want := st.Clone()
				want.Version = ipam.StateVersion
				if !reflect.DeepEqual(a.State(), want) {
					t.Fatalf("loaded %+v, stored %+v", a.State(), st)
				}
				checkInvariants(t, a, defaultPool(t), nil)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantInErr) {
				t.Fatalf("NewAllocator = %v, want an error containing %q", err, tc.wantInErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}

// checkInvariants checks what must hold after any sequence of operations:
// the store (if not nil) holds exactly the memory state; the claims are
// claimable blocks of the pool, distinct, of one node; Usage, EmptyBlocks
// and NodeAddr agree with them; every lease is under its container's name,
// has a service, sits in one of the blocks and not on a block's first or
// last address nor on the node's, no address twice; Leases is sorted and
// agrees with Lease; and the state loads back into an allocator unchanged.
func checkInvariants(t testing.TB, a *ipam.Allocator, p *ipam.Pool, st *ipamtest.Store) {
	t.Helper()
	s := a.State()
	if st != nil {
		stored := st.State()
		if st.Saves() == 0 {
			// Nothing saved yet: memory is the empty state of this version.
			stored.Version = ipam.StateVersion
		}
		if !reflect.DeepEqual(s, stored) {
			t.Fatalf("store and memory differ:\nmemory %+v\nstore  %+v", s, stored)
		}
	}
	if s.Version != ipam.StateVersion {
		t.Fatalf("state version %d", s.Version)
	}
	if got := a.Claims(); len(got)+len(s.Claims) > 0 && !reflect.DeepEqual(got, s.Claims) {
		t.Fatalf("Claims() = %v, state %v", a.Claims(), s.Claims)
	}
	blocks := map[netip.Prefix]int{}
	for i, c := range s.Claims {
		if err := p.CheckBlock(c.Block); err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
		if _, ok := blocks[c.Block]; ok {
			t.Fatalf("block %s claimed twice", c.Block)
		}
		if c.Node != s.Claims[0].Node {
			t.Fatalf("claims of nodes %s and %s", s.Claims[0].Node, c.Node)
		}
		blocks[c.Block] = i
	}
	nodeAddr := netip.Addr{}
	if len(s.Claims) > 0 {
		nodeAddr = ipam.NodeAddr(s.Claims[0].Block)
	} else if len(s.Leases) > 0 {
		t.Fatalf("%d leases without a block", len(s.Leases))
	}
	if a.NodeAddr() != nodeAddr {
		t.Fatalf("NodeAddr = %s, want %s", a.NodeAddr(), nodeAddr)
	}
	perBlock := make([]int, len(s.Claims))
	used := map[netip.Addr]string{}
	leases := a.Leases()
	if len(leases) != len(s.Leases) {
		t.Fatalf("Leases() has %d, state %d", len(leases), len(s.Leases))
	}
	for i, l := range leases {
		if i > 0 && leases[i-1].Addr.Compare(l.Addr) >= 0 {
			t.Fatalf("Leases() not sorted by address at %d", i)
		}
		if s.Leases[l.Container] != l || l.Container == "" || l.Service == "" {
			t.Fatalf("lease %+v stored as %+v", l, s.Leases[l.Container])
		}
		if got, ok := a.Lease(l.Container); !ok || got != l {
			t.Fatalf("Lease(%s) = %+v %v", l.Container, got, ok)
		}
		if o, ok := used[l.Addr]; ok {
			t.Fatalf("address %s leased to %s and %s", l.Addr, o, l.Container)
		}
		used[l.Addr] = l.Container
		bp, _ := l.Addr.Prefix(p.BlockBits())
		bi, ok := blocks[bp]
		if !ok {
			t.Fatalf("lease %+v in none of the blocks %v", l, s.Claims)
		}
		perBlock[bi]++
		if l.Addr == bp.Addr() || l.Addr == lastOf(bp) || l.Addr == nodeAddr {
			t.Fatalf("lease %+v on the first or last address of %s or the node's %s", l, bp, nodeAddr)
		}
	}
	var wantUsage []ipam.BlockUsage
	var wantEmpty []netip.Prefix
	for i, c := range s.Claims {
		wantUsage = append(wantUsage, ipam.BlockUsage{Block: c.Block, Leases: perBlock[i]})
		if i > 0 && perBlock[i] == 0 {
			wantEmpty = append(wantEmpty, c.Block)
		}
	}
	if got := a.Usage(); !reflect.DeepEqual(got, wantUsage) && (len(got) > 0 || len(wantUsage) > 0) {
		t.Fatalf("Usage = %v, want %v", got, wantUsage)
	}
	if got := a.EmptyBlocks(); !reflect.DeepEqual(got, wantEmpty) {
		t.Fatalf("EmptyBlocks = %v, want %v", got, wantEmpty)
	}
	b, err := ipam.NewAllocator(ipamtest.NewStoreWith(s), p)
	if err != nil {
		t.Fatalf("state does not load back: %v", err)
	}
	if !reflect.DeepEqual(b.State(), s) || !reflect.DeepEqual(b.Usage(), a.Usage()) {
		t.Fatalf("state loads back as %+v, was %+v", b.State(), s)
	}
}

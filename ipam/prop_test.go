package ipam_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/ipam/ipamtest"
)

// TestAllocatorProperties runs random sequences of Allocate, Release,
// Renumber and SetClaim, some with a failing save, on small pools where
// slices and subnets run full, and checks after every step the invariants of
// checkInvariants plus: errors are only the expected ones, a new address is
// the lowest free one of its slice, a new slice the lowest free one, and a
// renumber keeps every position.
func TestAllocatorProperties(t *testing.T) {
	pools := []struct {
		name                string
		cluster             string
		nodeBits, sliceBits int
	}{
		{"ipv4 /27 nodes of /29 slices", "10.9.0.0/24", 27, 29},
		{"ipv4 /28 nodes of /30 slices", "10.9.0.0/24", 28, 30},
		{"ipv6 /123 nodes of /125 slices", "fd00:9::/120", 123, 125},
	}
	for _, pc := range pools {
		t.Run(pc.name, func(t *testing.T) {
			p, err := ipam.NewPool(pfx(pc.cluster), pc.nodeBits, pc.sliceBits)
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]int{}
			for seed := range uint64(20) {
				runOps(t, p, rand.New(rand.NewPCG(seed, 99)), 300, seen)
			}
			// The sequences must reach the interesting paths, or they prove
			// little.
			for _, k := range []string{"ok", "exhausted", "exists", "injected", "no claim", "renumber", "use renumber"} {
				if seen[k] == 0 {
					t.Errorf("no step ended in %q: %v", k, seen)
				}
			}
		})
	}
}

func runOps(t *testing.T, p *ipam.Pool, r *rand.Rand, steps int, seen map[string]int) {
	st := ipamtest.NewStore()
	a, err := ipam.NewAllocator(st, p)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("injected save failure")
	services := []string{"a", "b", "c", "d"}
	randomSubnet := func() netip.Prefix {
		s, err := p.Pick(nil, fmt.Append(nil, r.Int()), netip.Prefix{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for step := range steps {
		fail := r.IntN(10) == 0
		if fail {
			st.FailNextSave(boom)
		}
		before := a.State()
		what := ""
		var err error
		switch op := r.IntN(10); {
		case op < 5 || before.Claim == nil && op < 8:
			svc, ctr := services[r.IntN(len(services))], fmt.Sprint("c", r.IntN(30))
			what = fmt.Sprintf("Allocate(%s, %s)", svc, ctr)
			var l ipam.Lease
			l, err = a.Allocate(svc, ctr)
			checkAllocate(t, p, before, svc, ctr, l, err, boom)
		case op < 8:
			ctr := fmt.Sprint("c", r.IntN(30))
			what = fmt.Sprintf("Release(%s)", ctr)
			var l ipam.Lease
			var ok bool
			l, ok, err = a.Release(ctr)
			old, had := before.Leases[ctr]
			if err == nil && (ok != had || l != old) {
				t.Fatalf("step %d %s = %+v %v, state had %+v %v", step, what, l, ok, old, had)
			}
		case op < 9:
			c := nodeClaim(randomSubnet().String())
			what = fmt.Sprintf("Renumber(%s)", c.Subnet)
			var moves []ipam.Move
			moves, err = a.Renumber(c)
			if err == nil {
				checkMoves(t, before, c, moves)
				seen["renumber"]++
			}
		default:
			c := nodeClaim(randomSubnet().String())
			if before.Claim != nil && r.IntN(2) == 0 {
				c = *before.Claim
				c.RenewedAt = c.RenewedAt.Add(time.Minute)
			}
			what = fmt.Sprintf("SetClaim(%s)", c.Subnet)
			err = a.SetClaim(c)
			moving := before.Claim != nil && before.Claim.Subnet != c.Subnet && len(before.Leases) > 0
			if moving != (err != nil && !errors.Is(err, boom)) {
				t.Fatalf("step %d %s with %d leases: %v", step, what, len(before.Leases), err)
			}
		}
		// An op that did not get to save leaves the failure armed.
		st.FailNextSave(nil)
		if err != nil && !sameState(a.State(), before) {
			t.Fatalf("step %d %s failed (%v) but changed the state", step, what, err)
		}
		switch {
		case err == nil:
			seen["ok"]++
		case errors.Is(err, boom):
			seen["injected"]++
		case errors.Is(err, ipam.ErrExhausted):
			seen["exhausted"]++
		case errors.Is(err, ipam.ErrExists):
			seen["exists"]++
		case errors.Is(err, ipam.ErrNoClaim):
			seen["no claim"]++
		case strings.Contains(err.Error(), "use Renumber"):
			seen["use renumber"]++
		default:
			t.Fatalf("step %d %s: unexpected error %v", step, what, err)
		}
		checkInvariants(t, a, p, st)
	}
}

// checkAllocate checks the result of one Allocate against the state before.
func checkAllocate(t *testing.T, p *ipam.Pool, before ipam.State, svc, ctr string, l ipam.Lease, err, injected error) {
	t.Helper()
	switch {
	case errors.Is(err, injected):
		return
	case before.Claim == nil:
		if !errors.Is(err, ipam.ErrNoClaim) {
			t.Fatalf("Allocate without claim: %v", err)
		}
		return
	}
	_, exists := before.Leases[ctr]
	if exists != errors.Is(err, ipam.ErrExists) {
		t.Fatalf("Allocate(%s, %s): %v, lease existed: %v", svc, ctr, err, exists)
	}
	if exists {
		return
	}
	perSlice := 1<<(p.Cluster().Addr().BitLen()-p.SliceBits()) - 3
	inSvc := 0
	for _, o := range before.Leases {
		if o.Service == svc {
			inSvc++
		}
	}
	_, hasSlice := before.Slices[svc]
	full := hasSlice && inSvc == perSlice || !hasSlice && uint64(len(before.Slices)) == p.Slices()-1
	if full != errors.Is(err, ipam.ErrExhausted) {
		t.Fatalf("Allocate(%s, %s): %v, full: %v (%d in service, %d slices)", svc, ctr, err, full, inSvc, len(before.Slices))
	}
	if err != nil {
		if !full {
			t.Fatalf("Allocate(%s, %s): unexpected %v", svc, ctr, err)
		}
		return
	}
	// Lowest free: every address between the gateway and the new one is
	// taken, and a new slice has every lower service slice taken.
	used := map[netip.Addr]bool{}
	for _, o := range before.Leases {
		used[o.Addr.Addr()] = true
	}
	for x := l.Gateway.Addr().Next(); x != l.Addr.Addr(); x = x.Next() {
		if !used[x] {
			t.Fatalf("Allocate(%s, %s) = %s but %s was free", svc, ctr, l.Addr, x)
		}
	}
	if !hasSlice {
		taken := map[netip.Prefix]bool{}
		for _, s := range before.Slices {
			taken[s] = true
		}
		node := before.Claim.Subnet
		for x := netip.PrefixFrom(node.Addr(), p.SliceBits()); ; {
			x = netip.PrefixFrom(lastAddr(x).Next(), p.SliceBits())
			if x.Addr() == l.Gateway.Masked().Addr() {
				break
			}
			if !taken[x] {
				t.Fatalf("Allocate(%s, %s) made slice %s but %s was free", svc, ctr, l.Gateway.Masked(), x)
			}
		}
	}
}

// checkMoves: one move per lease, sorted by container, each keeping its
// offset from the node subnet's base.
func checkMoves(t *testing.T, before ipam.State, c ipam.Claim, moves []ipam.Move) {
	t.Helper()
	if len(moves) != len(before.Leases) {
		t.Fatalf("Renumber: %d moves for %d leases", len(moves), len(before.Leases))
	}
	for i, m := range moves {
		if i > 0 && moves[i-1].Old.Container >= m.Old.Container {
			t.Fatalf("moves not sorted by container")
		}
		if before.Leases[m.Old.Container] != m.Old || m.New.Container != m.Old.Container || m.New.Service != m.Old.Service {
			t.Fatalf("move %+v does not start from the lease", m)
		}
		if offset(before.Claim.Subnet, m.Old.Addr.Addr()) != offset(c.Subnet, m.New.Addr.Addr()) ||
			offset(before.Claim.Subnet, m.Old.Gateway.Addr()) != offset(c.Subnet, m.New.Gateway.Addr()) ||
			m.Old.Addr.Bits() != m.New.Addr.Bits() {
			t.Fatalf("move %+v changes the position from %s to %s", m, before.Claim.Subnet, c.Subnet)
		}
	}
}

// offset counts addresses from s's base to a (small subnets only).
func offset(s netip.Prefix, a netip.Addr) int {
	n := 0
	for x := s.Addr(); x != a; x = x.Next() {
		if !s.Contains(x) {
			return -1
		}
		n++
	}
	return n
}

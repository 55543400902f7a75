package ipam_test

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/ipam/ipamtest"
)

func nodeClaim(subnet string) ipam.Claim {
	return ipam.Claim{Node: "key-a", Name: "host-a", Subnet: pfx(subnet), ClaimedAt: t0, RenewedAt: t0}
}

// newAlloc returns an allocator over a fresh fake store, claimed on subnet
// unless subnet is "".
func newAlloc(t testing.TB, p *ipam.Pool, subnet string) (*ipam.Allocator, *ipamtest.Store) {
	t.Helper()
	st := ipamtest.NewStore()
	a, err := ipam.NewAllocator(st, p)
	if err != nil {
		t.Fatal(err)
	}
	if subnet != "" {
		if err := a.SetClaim(nodeClaim(subnet)); err != nil {
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

// tinyPool: /28 node subnets of four /30 slices; a slice holds one container.
func tinyPool(t testing.TB) *ipam.Pool {
	t.Helper()
	p, err := ipam.NewPool(pfx("10.9.0.0/24"), 28, 30)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAllocateLayout(t *testing.T) {
	a, st := newAlloc(t, defaultPool(t), "10.200.3.0/24")
	steps := []struct {
		service, container string
		addr, gw, slice    string
	}{
		{"web", "w1", "10.200.3.34/27", "10.200.3.33/27", "10.200.3.32/27"},
		{"web", "w2", "10.200.3.35/27", "10.200.3.33/27", "10.200.3.32/27"},
		{"db", "d1", "10.200.3.66/27", "10.200.3.65/27", "10.200.3.64/27"},
		{"web", "w3", "10.200.3.36/27", "10.200.3.33/27", "10.200.3.32/27"},
		{"cache", "c1", "10.200.3.98/27", "10.200.3.97/27", "10.200.3.96/27"},
	}
	for i, s := range steps {
		l := mustAllocate(t, a, s.service, s.container)
		want := ipam.Lease{Service: s.service, Container: s.container, Addr: pfx(s.addr), Gateway: pfx(s.gw)}
		if l != want {
			t.Fatalf("step %d: lease %+v, want %+v", i, l, want)
		}
		if got, ok := a.Lease(s.container); !ok || got != want {
			t.Fatalf("Lease(%s) = %+v %v", s.container, got, ok)
		}
		if got, ok := a.Slice(s.service); !ok || got != pfx(s.slice) {
			t.Fatalf("Slice(%s) = %s %v, want %s", s.service, got, ok, s.slice)
		}
		if st.Saves() != i+2 { // the claim, then one per allocation
			t.Fatalf("after %d allocations: %d saves", i+1, st.Saves())
		}
	}
	var got []string
	for _, l := range a.Leases() {
		got = append(got, l.Container)
	}
	if want := []string{"w1", "w2", "w3", "d1", "c1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Leases order %v, want %v (by address)", got, want)
	}
	checkInvariants(t, a, defaultPool(t), st)
}

func TestAllocateErrors(t *testing.T) {
	cases := []struct {
		name      string
		pool      func(testing.TB) *ipam.Pool
		subnet    string
		setup     [][2]string // service, container allocated first
		service   string
		container string
		wantIs    error
		wantInErr []string
	}{
		{"no claim", defaultPool, "", nil, "web", "w1", ipam.ErrNoClaim, []string{"w1", "web"}},
		{"empty service", defaultPool, "10.200.3.0/24", nil, "", "w1", nil, []string{"empty name"}},
		{"empty container", defaultPool, "10.200.3.0/24", nil, "web", "", nil, []string{"empty name"}},
		{"exists same service", defaultPool, "10.200.3.0/24", [][2]string{{"web", "w1"}}, "web", "w1", ipam.ErrExists, []string{"w1", "10.200.3.34/27"}},
		{"exists other service", defaultPool, "10.200.3.0/24", [][2]string{{"web", "w1"}}, "db", "w1", ipam.ErrExists, []string{"w1", "web"}},
		{"tiny slice full", tinyPool, "10.9.0.16/28", [][2]string{{"web", "w1"}}, "web", "w2", ipam.ErrExhausted, []string{"web", "w2", "10.9.0.20/30", "full"}},
		{"no free slice", tinyPool, "10.9.0.16/28", [][2]string{{"a", "a1"}, {"b", "b1"}, {"c", "c1"}}, "d", "d1", ipam.ErrExhausted, []string{"d1", "no free slice", "10.9.0.16/28"}},
		{"default slice full", defaultPool, "10.200.3.0/24", fill("web", 29), "web", "w-extra", ipam.ErrExhausted, []string{"10.200.3.32/27", "full"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.pool(t)
			a, st := newAlloc(t, p, tc.subnet)
			for _, s := range tc.setup {
				mustAllocate(t, a, s[0], s[1])
			}
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

func fill(service string, n int) [][2]string {
	var out [][2]string
	for i := range n {
		out = append(out, [2]string{service, fmt.Sprintf("%s-%d", service, i)})
	}
	return out
}

func TestReleaseAndReuse(t *testing.T) {
	p := defaultPool(t)
	a, st := newAlloc(t, p, "10.200.3.0/24")
	w1 := mustAllocate(t, a, "web", "w1")
	w2 := mustAllocate(t, a, "web", "w2")
	mustAllocate(t, a, "web", "w3")
	d1 := mustAllocate(t, a, "db", "d1")

	if l, ok, err := a.Release("nobody"); err != nil || ok || l != (ipam.Lease{}) {
		t.Fatalf("Release(nobody) = %+v %v %v", l, ok, err)
	}
	saves := st.Saves()
	if l, ok, err := a.Release("w2"); err != nil || !ok || l != w2 {
		t.Fatalf("Release(w2) = %+v %v %v", l, ok, err)
	}
	if st.Saves() != saves+1 {
		t.Fatalf("Release did not save")
	}
	if _, ok := a.Lease("w2"); ok {
		t.Fatalf("w2 still leased")
	}
	// The lowest free address is w2's old one, even for another container.
	if l := mustAllocate(t, a, "web", "w4"); l.Addr != w2.Addr {
		t.Fatalf("w4 got %s, want w2's old %s", l.Addr, w2.Addr)
	}
	// Releasing the last lease of web frees its slice (slice 1) ...
	for _, c := range []string{"w1", "w3", "w4"} {
		if _, ok, err := a.Release(c); err != nil || !ok {
			t.Fatalf("Release(%s): %v %v", c, ok, err)
		}
	}
	if s, ok := a.Slice("web"); ok {
		t.Fatalf("web still has slice %s with no lease", s)
	}
	// ... which the next new service gets, while db keeps slice 2.
	c1 := mustAllocate(t, a, "cache", "c1")
	if c1.Addr != w1.Addr || c1.Gateway != w1.Gateway {
		t.Fatalf("cache got %+v, want web's old slice and first address %s", c1, w1.Addr)
	}
	if l, _ := a.Lease("d1"); l != d1 {
		t.Fatalf("d1 changed to %+v", l)
	}
	// web comes back into the next free slice (3).
	if l := mustAllocate(t, a, "web", "w5"); l.Addr != pfx("10.200.3.98/27") {
		t.Fatalf("web back at %s, want 10.200.3.98/27", l.Addr)
	}
	checkInvariants(t, a, p, st)
}

func TestSetClaim(t *testing.T) {
	p := defaultPool(t)
	later := nodeClaim("10.200.3.0/24")
	later.RenewedAt = t0.Add(time.Hour)
	older := nodeClaim("10.200.3.0/24")
	older.ClaimedAt = t0.Add(-time.Hour)
	cases := []struct {
		name      string
		first     string // subnet claimed before, "" none
		leases    int
		c         ipam.Claim
		wantInErr string
	}{
		{"first claim", "", 0, nodeClaim("10.200.3.0/24"), ""},
		{"renewal", "10.200.3.0/24", 2, later, ""},
		{"claimed-at change", "10.200.3.0/24", 2, older, ""},
		{"other subnet without leases", "10.200.3.0/24", 0, nodeClaim("10.200.9.0/24"), ""},
		{"other subnet with leases", "10.200.3.0/24", 2, nodeClaim("10.200.9.0/24"), "use Renumber"},
		{"reserved", "", 0, nodeClaim("10.200.255.0/24"), "reserved"},
		{"wrong length", "", 0, nodeClaim("10.200.3.0/25"), "not a /24"},
		{"zero subnet", "", 0, ipam.Claim{Node: "k"}, "not a valid prefix"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, st := newAlloc(t, p, tc.first)
			for i := range tc.leases {
				mustAllocate(t, a, "web", fmt.Sprint("w", i))
			}
			before, saves := a.State(), st.Saves()
			err := a.SetClaim(tc.c)
			if tc.wantInErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantInErr) {
					t.Fatalf("SetClaim = %v, want error containing %q", err, tc.wantInErr)
				}
				if !reflect.DeepEqual(a.State(), before) || st.Saves() != saves {
					t.Fatalf("failed SetClaim changed the state")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := a.Claim(); !ok || !reflect.DeepEqual(got, tc.c) {
				t.Fatalf("Claim = %+v %v, want %+v", got, ok, tc.c)
			}
			if st.Saves() != saves+1 || !reflect.DeepEqual(st.State(), a.State()) {
				t.Fatalf("SetClaim not saved")
			}
			if len(a.Leases()) != tc.leases {
				t.Fatalf("leases %d, want %d", len(a.Leases()), tc.leases)
			}
			checkInvariants(t, a, p, st)
		})
	}
	t.Run("no claim", func(t *testing.T) {
		a, _ := newAlloc(t, p, "")
		if c, ok := a.Claim(); ok {
			t.Fatalf("Claim = %+v before any", c)
		}
	})
}

func TestRenumber(t *testing.T) {
	p := defaultPool(t)
	a, st := newAlloc(t, p, "10.200.3.0/24")
	for _, s := range [][2]string{{"web", "w1"}, {"web", "w2"}, {"web", "w3"}, {"db", "d1"}, {"cache", "c1"}, {"db", "d2"}} {
		mustAllocate(t, a, s[0], s[1])
	}
	// Holes: w2's address and the whole of db's slice... keep d2 so db stays.
	for _, c := range []string{"w2", "d1", "c1"} {
		if _, _, err := a.Release(c); err != nil {
			t.Fatal(err)
		}
	}
	before := a.Leases()
	nc := nodeClaim("10.200.9.0/24")
	nc.ClaimedAt = t0.Add(time.Hour)
	moves, err := a.Renumber(nc)
	if err != nil {
		t.Fatal(err)
	}
	want := []ipam.Move{
		{Old: lease("db", "d2", "10.200.3.67/27", "10.200.3.65/27"), New: lease("db", "d2", "10.200.9.67/27", "10.200.9.65/27")},
		{Old: lease("web", "w1", "10.200.3.34/27", "10.200.3.33/27"), New: lease("web", "w1", "10.200.9.34/27", "10.200.9.33/27")},
		{Old: lease("web", "w3", "10.200.3.36/27", "10.200.3.33/27"), New: lease("web", "w3", "10.200.9.36/27", "10.200.9.33/27")},
	}
	if !reflect.DeepEqual(moves, want) {
		t.Fatalf("moves\n%+v\nwant\n%+v", moves, want)
	}
	if len(before) != len(moves) {
		t.Fatalf("%d leases, %d moves", len(before), len(moves))
	}
	if c, _ := a.Claim(); !reflect.DeepEqual(c, nc) {
		t.Fatalf("claim %+v after renumber", c)
	}
	if s, _ := a.Slice("db"); s != pfx("10.200.9.64/27") {
		t.Fatalf("db slice %s", s)
	}
	// Holes stay holes and fill lowest first in the new subnet.
	if l := mustAllocate(t, a, "web", "w4"); l.Addr != pfx("10.200.9.35/27") {
		t.Fatalf("w4 at %s", l.Addr)
	}
	if l := mustAllocate(t, a, "cache", "c2"); l.Addr != pfx("10.200.9.98/27") {
		t.Fatalf("c2 at %s", l.Addr)
	}
	checkInvariants(t, a, p, st)

	for name, c := range map[string]ipam.Claim{
		"other prefix length": nodeClaim("10.200.8.0/23"),
		"outside the cluster": nodeClaim("10.201.9.0/24"),
		"reserved":            nodeClaim("10.200.255.0/24"),
	} {
		t.Run(name, func(t *testing.T) {
			before, saves := a.State(), st.Saves()
			if m, err := a.Renumber(c); err == nil {
				t.Fatalf("Renumber(%s) = %v, want an error", c.Subnet, m)
			}
			if !reflect.DeepEqual(a.State(), before) || st.Saves() != saves {
				t.Fatalf("failed Renumber changed the state")
			}
		})
	}
	t.Run("without claim", func(t *testing.T) {
		a, _ := newAlloc(t, p, "")
		m, err := a.Renumber(nodeClaim("10.200.4.0/24"))
		if err != nil || len(m) != 0 {
			t.Fatalf("Renumber = %v, %v", m, err)
		}
		if c, ok := a.Claim(); !ok || c.Subnet != pfx("10.200.4.0/24") {
			t.Fatalf("claim %+v %v", c, ok)
		}
	})
}

func lease(service, container, a, gw string) ipam.Lease {
	return ipam.Lease{Service: service, Container: container, Addr: pfx(a), Gateway: pfx(gw)}
}

// TestRollback: every mutation whose save fails leaves memory and store as
// they were, and the same mutation then succeeds with the same result as if
// the failure had not happened.
func TestRollback(t *testing.T) {
	// /27 nodes of four /29 slices, five containers a slice.
	p, err := ipam.NewPool(pfx("10.9.0.0/24"), 27, 29)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk on fire")
	cases := []struct {
		name  string
		setup func(*ipam.Allocator) error
		op    func(*ipam.Allocator) (any, error)
	}{
		{"first claim", nil, func(a *ipam.Allocator) (any, error) { return nil, a.SetClaim(nodeClaim("10.9.0.32/27")) }},
		{"renew claim", claimed, func(a *ipam.Allocator) (any, error) {
			c := nodeClaim("10.9.0.32/27")
			c.RenewedAt = t0.Add(time.Minute)
			return nil, a.SetClaim(c)
		}},
		{"allocate new slice", claimed, func(a *ipam.Allocator) (any, error) { return a.Allocate("web", "w1") }},
		{"allocate in slice", withLeases, func(a *ipam.Allocator) (any, error) { return a.Allocate("big", "x") }},
		{"release last of slice", withLeases, func(a *ipam.Allocator) (any, error) {
			l, ok, err := a.Release("w1")
			return [2]any{l, ok}, err
		}},
		{"release one of several", withLeases, func(a *ipam.Allocator) (any, error) {
			l, ok, err := a.Release("b1")
			return [2]any{l, ok}, err
		}},
		{"renumber", withLeases, func(a *ipam.Allocator) (any, error) { return a.Renumber(nodeClaim("10.9.0.96/27")) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pool := p
			a, st := newAlloc(t, pool, "")
			if tc.setup != nil {
				if err := tc.setup(a); err != nil {
					t.Fatal(err)
				}
			}
			before, stored, saves := a.State(), st.State(), st.Saves()
			st.FailNextSave(boom)
			if _, err := tc.op(a); !errors.Is(err, boom) {
				t.Fatalf("op error %v, want %v", err, boom)
			}
			if !reflect.DeepEqual(a.State(), before) {
				t.Fatalf("memory changed by a failed save:\n%+v\nwas\n%+v", a.State(), before)
			}
			if !reflect.DeepEqual(st.State(), stored) || st.Saves() != saves {
				t.Fatalf("store changed by a failed save")
			}
			checkInvariants(t, a, pool, st)
			// Redo on an allocator that never failed: same result.
			ref, _ := newAlloc(t, pool, "")
			if tc.setup != nil {
				tc.setup(ref)
			}
			want, werr := tc.op(ref)
			got, err := tc.op(a)
			if err != nil || werr != nil || !reflect.DeepEqual(got, want) || !reflect.DeepEqual(a.State(), ref.State()) {
				t.Fatalf("after rollback: %v %v, never failed: %v %v", got, err, want, werr)
			}
			checkInvariants(t, a, pool, st)
		})
	}
}

func claimed(a *ipam.Allocator) error { return a.SetClaim(nodeClaim("10.9.0.32/27")) }

// withLeases: w1 alone in web, b1 and b2 in big.
func withLeases(a *ipam.Allocator) error {
	if err := claimed(a); err != nil {
		return err
	}
	for _, s := range [][2]string{{"web", "w1"}, {"big", "b1"}, {"big", "b2"}} {
		if _, err := a.Allocate(s[0], s[1]); err != nil {
			return err
		}
	}
	return nil
}

func TestConcurrentUse(t *testing.T) {
	p := defaultPool(t)
	a, st := newAlloc(t, p, "10.200.3.0/24")
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svc := fmt.Sprint("svc", g)
			for i := range 50 {
				c := fmt.Sprintf("%s-%d", svc, i%10)
				if _, ok := a.Lease(c); ok {
					if _, _, err := a.Release(c); err != nil {
						t.Error(err)
					}
				} else if _, err := a.Allocate(svc, c); err != nil {
					t.Error(err)
				}
				a.Leases()
			}
		}()
	}
	wg.Wait()
	checkInvariants(t, a, p, st)
}

// checkInvariants checks what must hold after any sequence of operations:
// no address twice, every lease inside its service's slice with the slice's
// gateway and not on network, gateway or broadcast, every slice inside the
// claim and not slice 0, no slice twice or without a lease, the store holding
// exactly the memory state, and that state loading back into an allocator.
func checkInvariants(t testing.TB, a *ipam.Allocator, p *ipam.Pool, st *ipamtest.Store) {
	t.Helper()
	s := a.State()
	if !reflect.DeepEqual(s, st.State()) {
		t.Fatalf("store and memory differ:\nmemory %+v\nstore  %+v", s, st.State())
	}
	if s.Claim == nil {
		if len(s.Slices)+len(s.Leases) != 0 {
			t.Fatalf("slices or leases without a claim")
		}
		return
	}
	sliceOwner := map[netip.Prefix]string{}
	for svc, sl := range s.Slices {
		if o, ok := sliceOwner[sl]; ok {
			t.Fatalf("slice %s given to %s and %s", sl, o, svc)
		}
		sliceOwner[sl] = svc
		if sl.Bits() != p.SliceBits() || !s.Claim.Subnet.Contains(sl.Addr()) || sl.Addr() == s.Claim.Subnet.Addr() {
			t.Fatalf("slice %s of %s not a service slice of %s", sl, svc, s.Claim.Subnet)
		}
		if got, ok := a.Slice(svc); !ok || got != sl {
			t.Fatalf("Slice(%s) = %s, state has %s", svc, got, sl)
		}
	}
	used := map[netip.Addr]string{}
	perSlice := map[string]int{}
	leases := a.Leases()
	if len(leases) != len(s.Leases) {
		t.Fatalf("Leases() has %d, state %d", len(leases), len(s.Leases))
	}
	for i, l := range leases {
		if i > 0 && leases[i-1].Addr.Addr().Compare(l.Addr.Addr()) >= 0 {
			t.Fatalf("Leases() not sorted by address at %d", i)
		}
		if s.Leases[l.Container] != l {
			t.Fatalf("lease %+v stored as %+v", l, s.Leases[l.Container])
		}
		if o, ok := used[l.Addr.Addr()]; ok {
			t.Fatalf("address %s leased to %s and %s", l.Addr.Addr(), o, l.Container)
		}
		used[l.Addr.Addr()] = l.Container
		sl, ok := s.Slices[l.Service]
		if !ok {
			t.Fatalf("lease %+v without slice", l)
		}
		perSlice[l.Service]++
		first := sl.Addr()
		gw := first.Next()
		last := netip.PrefixFrom(first, sl.Bits())
		bcast := lastAddr(last)
		if l.Addr.Bits() != sl.Bits() || !sl.Contains(l.Addr.Addr()) || l.Addr.Addr() == first || l.Addr.Addr() == gw || l.Addr.Addr() == bcast {
			t.Fatalf("lease %+v not a container address of slice %s", l, sl)
		}
		if l.Gateway != netip.PrefixFrom(gw, sl.Bits()) {
			t.Fatalf("lease %+v gateway, want %s", l, gw)
		}
	}
	for svc := range s.Slices {
		if perSlice[svc] == 0 {
			t.Fatalf("slice of %s has no lease", svc)
		}
	}
	if _, err := ipam.NewAllocator(ipamtest.NewStoreWith(s), p); err != nil {
		t.Fatalf("state does not load back: %v", err)
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr()
	for range 1<<(a.BitLen()-p.Bits()) - 1 {
		a = a.Next()
	}
	return a
}

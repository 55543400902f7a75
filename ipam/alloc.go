package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Allocator hands out service slices and container addresses inside this
// node's subnet and keeps the node's own claim. Every change is saved to the
// Store before the method returns (a lease made or released through
// LeaseStore.SaveLease when the Store is one, else Save); a failed save
// leaves memory unchanged.
// It is safe for concurrent use; Store calls happen with its lock held.
type Allocator struct {
	pool  *Pool
	store Store

	mu    sync.Mutex
	st    State                // what is saved; maps never nil
	used  bitset               // slice indices in use; 0 (the node's) always
	slice map[string]*svcSlice // service → its slice's index and offsets
}

// svcSlice is one service's slice: its index in the node subnet and the
// address offsets in use (network and gateway are never in it).
type svcSlice struct {
	index uint64
	used  bitset
	n     int // leases
}

// NewAllocator loads the state from store. A stored state that does not fit
// the pool (slices or leases outside the claim, overlapping addresses, a
// lease without its slice, a slice without a lease...) is an error naming
// the first inconsistency found, so that nothing stored is silently dropped.
func NewAllocator(store Store, pool *Pool) (*Allocator, error) {
	if store == nil || pool == nil {
		return nil, errors.New("new ipam allocator: nil store or pool")
	}
	st, err := store.Load()
	if err != nil {
		return nil, err
	}
	a := &Allocator{pool: pool, store: store}
	if err := a.load(st); err != nil {
		if where, ok := store.(fmt.Stringer); ok {
			return nil, fmt.Errorf("load ipam state from %s: %w", where, err)
		}
		return nil, fmt.Errorf("load ipam state: %w", err)
	}
	return a, nil
}

// load checks st against the pool and builds the indices from it.
func (a *Allocator) load(st State) error {
	p := a.pool
	if st.Slices == nil {
		st.Slices = make(map[string]netip.Prefix)
	}
	if st.Leases == nil {
		st.Leases = make(map[string]Lease)
	}
	a.used = bitset{}
	a.used.set(0)
	a.slice = make(map[string]*svcSlice)
	if st.Claim == nil {
		if len(st.Slices) > 0 || len(st.Leases) > 0 {
			return fmt.Errorf("%d slices and %d leases but no claim", len(st.Slices), len(st.Leases))
		}
		a.st = st
		return nil
	}
	subnet := st.Claim.Subnet
	if err := p.CheckSubnet(subnet); err != nil {
		return fmt.Errorf("claim: %w", err)
	}
	byIndex := make(map[uint64]string)
	for _, svc := range sortedKeys(st.Slices) {
		s := st.Slices[svc]
		if svc == "" {
			return fmt.Errorf("slice %s has an empty service name", s)
		}
		if !s.IsValid() || s.Bits() != p.sliceBits || s.Masked() != s || !subnet.Contains(s.Addr()) {
			return fmt.Errorf("slice %s of service %s is not a masked /%d inside the claimed subnet %s", s, svc, p.sliceBits, subnet)
		}
		i := childIndex(subnet, p.sliceBits, s.Addr())
		if i == 0 {
			return fmt.Errorf("slice %s of service %s is slice 0, the node's own", s, svc)
		}
		if other, ok := byIndex[i]; ok {
			return fmt.Errorf("slice %s is given to both services %s and %s", s, other, svc)
		}
		byIndex[i] = svc
		a.used.set(i)
		a.slice[svc] = &svcSlice{index: i, used: bitset{}}
	}
	last := lowMask(p.cluster.Addr().BitLen() - p.sliceBits)
	byAddr := make(map[netip.Addr]string)
	for _, ctr := range sortedKeys(st.Leases) {
		l := st.Leases[ctr]
		if ctr == "" || l.Container != ctr {
			return fmt.Errorf("lease stored under container %q names container %q", ctr, l.Container)
		}
		s, ok := st.Slices[l.Service]
		if !ok {
			return fmt.Errorf("lease of container %s names service %q, which has no slice", ctr, l.Service)
		}
		off, ok := offsetIn(s, l.Addr.Addr())
		if !l.Addr.IsValid() || l.Addr.Bits() != p.sliceBits || !ok {
			return fmt.Errorf("address %s of container %s is not inside slice %s of service %s", l.Addr, ctr, s, l.Service)
		}
		if off < 2 || off >= last {
			return fmt.Errorf("address %s of container %s is the network, gateway or broadcast address of slice %s", l.Addr, ctr, s)
		}
		if gw := gateway(s); l.Gateway != gw {
			return fmt.Errorf("gateway %s of container %s is not %s, the gateway of slice %s", l.Gateway, ctr, gw, s)
		}
		if other, ok := byAddr[l.Addr.Addr()]; ok {
			return fmt.Errorf("address %s is leased to both containers %s and %s", l.Addr.Addr(), other, ctr)
		}
		byAddr[l.Addr.Addr()] = ctr
		ss := a.slice[l.Service]
		ss.used.set(off)
		ss.n++
	}
	for _, svc := range sortedKeys(a.slice) {
		if a.slice[svc].n == 0 {
			return fmt.Errorf("slice %s of service %s has no lease", st.Slices[svc], svc)
		}
	}
	a.st = st
	return nil
}

// gateway is the bridge address of slice s, with s's prefix length.
func gateway(s netip.Prefix) netip.Prefix {
	return netip.PrefixFrom(nth(s, 1), s.Bits())
}

// saveLocked writes the state through the store. The caller holds a.mu.
func (a *Allocator) saveLocked() error { return a.store.Save(a.st) }

// saveLeaseLocked records the change of container's lease (l, or gone when
// !held): through SaveLease when the store is a LeaseStore, else Save. The
// caller holds a.mu and has changed a.st already.
func (a *Allocator) saveLeaseLocked(container string, l Lease, held bool) error {
	if ls, ok := a.store.(LeaseStore); ok {
		return ls.SaveLease(a.st, container, l, held)
	}
	return a.store.Save(a.st)
}

// Claim returns the node's claim, if it has one.
func (a *Allocator) Claim() (Claim, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.Claim == nil {
		return Claim{}, false
	}
	return *a.st.Claim, true
}

// SetClaim records the node's claim (a first claim, or a renewal of the same
// subnet). Changing the subnet while leases exist is an error: use Renumber.
// The subnet must pass the pool's CheckSubnet.
func (a *Allocator) SetClaim(c Claim) error {
	if err := a.pool.CheckSubnet(c.Subnet); err != nil {
		return fmt.Errorf("set claim: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.st.Claim
	if old != nil && old.Subnet != c.Subnet && len(a.st.Leases) > 0 {
		return fmt.Errorf("set claim %s: %d containers have addresses in %s; use Renumber to move them", c.Subnet, len(a.st.Leases), old.Subnet)
	}
	a.st.Claim = &c
	if err := a.saveLocked(); err != nil {
		a.st.Claim = old
		return fmt.Errorf("set claim %s: %w", c.Subnet, err)
	}
	return nil
}

// Allocate leases an address for container in service's slice, making the
// slice if the service has none. ErrExists if the container has a lease,
// ErrExhausted if the slice or the subnet is full, ErrNoClaim if there is no
// claim yet, an error for an empty service or container name.
//
// A new slice is the lowest free one (>= 1); an address is the lowest free
// one of the slice past the gateway.
func (a *Allocator) Allocate(service, container string) (Lease, error) {
	if service == "" || container == "" {
		return Lease{}, fmt.Errorf("allocate container %q in service %q: empty name", container, service)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.Claim == nil {
		return Lease{}, fmt.Errorf("allocate %s in service %s: %w", container, service, ErrNoClaim)
	}
	if l, ok := a.st.Leases[container]; ok {
		return Lease{}, fmt.Errorf("allocate %s in service %s: container has %s in service %s: %w", container, service, l.Addr, l.Service, ErrExists)
	}
	subnet := a.st.Claim.Subnet
	ss, ok := a.slice[service]
	newSlice := !ok
	if newSlice {
		i := a.used.firstClear(1)
		if i >= a.pool.Slices() {
			return Lease{}, fmt.Errorf("allocate %s in service %s: no free slice in %s: %w", container, service, subnet, ErrExhausted)
		}
		ss = &svcSlice{index: i, used: bitset{}}
	}
	s := child(subnet, a.pool.sliceBits, ss.index)
	off := ss.used.firstClear(2)
	if off >= lowMask(s.Addr().BitLen()-s.Bits()) {
		return Lease{}, fmt.Errorf("allocate %s in service %s: slice %s is full: %w", container, service, s, ErrExhausted)
	}
	l := Lease{
		Service:   service,
		Container: container,
		Addr:      netip.PrefixFrom(nth(s, off), s.Bits()),
		Gateway:   gateway(s),
	}
	if newSlice {
		a.used.set(ss.index)
		a.slice[service] = ss
		a.st.Slices[service] = s
	}
	ss.used.set(off)
	ss.n++
	a.st.Leases[container] = l
	if err := a.saveLeaseLocked(container, l, true); err != nil {
		delete(a.st.Leases, container)
		ss.n--
		ss.used.clear(off)
		if newSlice {
			delete(a.st.Slices, service)
			delete(a.slice, service)
			a.used.clear(ss.index)
		}
		return Lease{}, fmt.Errorf("allocate %s in service %s: %w", container, service, err)
	}
	return l, nil
}

// Release frees container's address, and the service's slice with its last
// lease. It returns the released lease and false if there was none. On a
// failed save it returns the error and nothing is released.
func (a *Allocator) Release(container string) (Lease, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.st.Leases[container]
	if !ok {
		return Lease{}, false, nil
	}
	ss := a.slice[l.Service]
	s := a.st.Slices[l.Service]
	off, _ := offsetIn(s, l.Addr.Addr()) // checked when the lease was made
	delete(a.st.Leases, container)
	ss.used.clear(off)
	ss.n--
	lastLease := ss.n == 0
	if lastLease {
		delete(a.st.Slices, l.Service)
		delete(a.slice, l.Service)
		a.used.clear(ss.index)
	}
	if err := a.saveLeaseLocked(container, l, false); err != nil {
		if lastLease {
			a.used.set(ss.index)
			a.slice[l.Service] = ss
			a.st.Slices[l.Service] = s
		}
		ss.n++
		ss.used.set(off)
		a.st.Leases[container] = l
		return Lease{}, false, fmt.Errorf("release %s: %w", container, err)
	}
	return l, true, nil
}

// Lease returns container's lease.
func (a *Allocator) Lease(container string) (Lease, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.st.Leases[container]
	return l, ok
}

// Slice returns service's slice, if the service has one (it has while it has
// a lease).
func (a *Allocator) Slice(service string) (netip.Prefix, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.st.Slices[service]
	return s, ok
}

// Leases returns every lease, sorted by address. The slice is the caller's.
func (a *Allocator) Leases() []Lease {
	a.mu.Lock()
	out := make([]Lease, 0, len(a.st.Leases))
	for _, l := range a.st.Leases {
		out = append(out, l)
	}
	a.mu.Unlock()
	slices.SortFunc(out, func(x, y Lease) int { return x.Addr.Addr().Compare(y.Addr.Addr()) })
	return out
}

// State returns a copy of the allocator's state, as last saved, in the
// canonical form of State.Clone.
func (a *Allocator) State() State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.Clone()
}

// Renumber moves the node to the subnet of c: every slice and lease keeps its
// position relative to the subnet. It returns one Move per lease, sorted by
// container (Old equals New when c keeps the subnet). Claim, slices and
// leases are saved together; on error nothing changes. The subnet must pass
// the pool's CheckSubnet (so it has the pool's node prefix length).
func (a *Allocator) Renumber(c Claim) ([]Move, error) {
	if err := a.pool.CheckSubnet(c.Subnet); err != nil {
		return nil, fmt.Errorf("renumber: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	next := State{
		Claim:  &c,
		Slices: make(map[string]netip.Prefix, len(a.st.Slices)),
		Leases: make(map[string]Lease, len(a.st.Leases)),
	}
	for svc, ss := range a.slice {
		next.Slices[svc] = child(c.Subnet, a.pool.sliceBits, ss.index)
	}
	moves := make([]Move, 0, len(a.st.Leases))
	for ctr, l := range a.st.Leases {
		off, _ := offsetIn(a.st.Slices[l.Service], l.Addr.Addr())
		s := next.Slices[l.Service]
		n := Lease{
			Service:   l.Service,
			Container: ctr,
			Addr:      netip.PrefixFrom(nth(s, off), s.Bits()),
			Gateway:   gateway(s),
		}
		next.Leases[ctr] = n
		moves = append(moves, Move{Old: l, New: n})
	}
	prev := a.st
	a.st = next
	if err := a.saveLocked(); err != nil {
		a.st = prev
		return nil, fmt.Errorf("renumber to %s: %w", c.Subnet, err)
	}
	slices.SortFunc(moves, func(x, y Move) int { return strings.Compare(x.New.Container, y.New.Container) })
	return moves, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

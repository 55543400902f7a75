package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Allocator hands out container addresses from this node's blocks and keeps
// the node's claims on them. Every change is saved to the Store before the
// method returns (a lease made or released through LeaseStore.SaveLease
// when the Store is one, else Save); a failed save leaves memory unchanged.
// It is safe for concurrent use; Store calls happen with its lock held.
//
// It does not claim blocks itself: when Allocate answers ErrFull the caller
// claims one through the mesh and hands it over with AddBlock.
type Allocator struct {
	pool  *Pool
	store Store

	mu     sync.Mutex
	st     State       // what is saved; Leases never nil
	blocks []*blockUse // parallel to st.Claims
}

// blockUse is one block's address offsets in use (first and last never; the
// node's address in the first block always) and its lease count.
type blockUse struct {
	prefix netip.Prefix
	used   bitset
	n      int
}

func newBlockUse(b netip.Prefix, first bool) *blockUse {
	u := &blockUse{prefix: b, used: bitset{}}
	if first {
		u.used.set(1)
	}
	return u
}

// NewAllocator loads the state from store. A stored state that does not fit
// the pool (blocks that are not blocks of the pool, claims of several nodes,
// leases outside the blocks, on a block's first or last address or on the
// node's own, two leases on one address...) is an error naming the first
// inconsistency found, so that nothing stored is silently dropped.
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
	if st.Version != 0 && st.Version != StateVersion {
		return fmt.Errorf("state version %d, this zlmesh reads version %d", st.Version, StateVersion)
	}
	st.Version = StateVersion
	if st.Leases == nil {
		st.Leases = make(map[string]Lease)
	}
	a.blocks = nil
	if len(st.Claims) == 0 && len(st.Leases) > 0 {
		return fmt.Errorf("%d leases but no block", len(st.Leases))
	}
	seen := map[netip.Prefix]bool{}
	for i, c := range st.Claims {
		if err := p.CheckBlock(c.Block); err != nil {
			return fmt.Errorf("claim %d: %w", i, err)
		}
		if seen[c.Block] {
			return fmt.Errorf("block %s is claimed twice", c.Block)
		}
		if c.Node != st.Claims[0].Node {
			return fmt.Errorf("block %s is claimed by node %s, block %s by node %s: one node's state holds one node's claims", st.Claims[0].Block, st.Claims[0].Node, c.Block, c.Node)
		}
		seen[c.Block] = true
		a.blocks = append(a.blocks, newBlockUse(c.Block, i == 0))
	}
	last := p.BlockSize() - 1
	byAddr := make(map[netip.Addr]string)
	for _, ctr := range sortedKeys(st.Leases) {
		l := st.Leases[ctr]
		if ctr == "" || l.Container != ctr {
			return fmt.Errorf("lease stored under container %q names container %q", ctr, l.Container)
		}
		if l.Service == "" {
			return fmt.Errorf("lease of container %s has no service", ctr)
		}
		u, off, ok := a.findLocked(l.Addr)
		if !ok {
			return fmt.Errorf("address %s of container %s is in none of the node's blocks", l.Addr, ctr)
		}
		if off == 0 || off == last {
			return fmt.Errorf("address %s of container %s is the first or last address of block %s", l.Addr, ctr, u.prefix)
		}
		if u == a.blocks[0] && off == 1 {
			return fmt.Errorf("address %s of container %s is the node's own", l.Addr, ctr)
		}
		if other, ok := byAddr[l.Addr]; ok {
			return fmt.Errorf("address %s is leased to both containers %s and %s", l.Addr, other, ctr)
		}
		byAddr[l.Addr] = ctr
		u.used.set(off)
		u.n++
	}
	a.st = st
	return nil
}

// findLocked returns the block holding addr and addr's offset in it.
func (a *Allocator) findLocked(addr netip.Addr) (*blockUse, uint64, bool) {
	for _, u := range a.blocks {
		if off, ok := offsetIn(u.prefix, addr); ok {
			return u, off, true
		}
	}
	return nil, 0, false
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

// Claims returns the node's claims, its first block first. The slice is the
// caller's.
func (a *Allocator) Claims() []Claim {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.st.Claims)
}

// NodeAddr is the node's own address (NodeAddr of its first block); the
// zero Addr before the first claim.
func (a *Allocator) NodeAddr() netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.st.Claims) == 0 {
		return netip.Addr{}
	}
	return NodeAddr(a.st.Claims[0].Block)
}

// SetClaims records the node's claims (a first claim at start, renewals,
// blocks kept from the state dir): cs replaces the recorded claims. Every
// block that holds a lease must stay, and the first block (the node's
// address) must stay first while it holds leases; use MoveBlock to move a
// block's leases elsewhere. Every block must pass the pool's CheckBlock,
// and every claim must be of one node (as NewAllocator requires).
func (a *Allocator) SetClaims(cs []Claim) error {
	if len(cs) == 0 {
		return errors.New("set claims: no block")
	}
	seen := map[netip.Prefix]bool{}
	for _, c := range cs {
		if err := a.pool.CheckBlock(c.Block); err != nil {
			return fmt.Errorf("set claims: %w", err)
		}
		if seen[c.Block] {
			return fmt.Errorf("set claims: block %s twice", c.Block)
		}
		if c.Node != cs[0].Node {
			return fmt.Errorf("set claims: block %s is claimed by node %s, block %s by node %s: one node's state holds one node's claims", cs[0].Block, cs[0].Node, c.Block, c.Node)
		}
		seen[c.Block] = true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, u := range a.blocks {
		if u.n > 0 && !seen[u.prefix] {
			return fmt.Errorf("set claims: block %s holds %d leases; use MoveBlock to move them", u.prefix, u.n)
		}
		if i == 0 && u.n > 0 && cs[0].Block != u.prefix {
			return fmt.Errorf("set claims: block %s is the node's first and holds leases; it must stay first", u.prefix)
		}
		if i > 0 && u.prefix == cs[0].Block && u.used.has(1) {
			return fmt.Errorf("set claims: block %s cannot become the node's first: a container holds its node address", u.prefix)
		}
	}
	prevClaims, prevBlocks := a.st.Claims, a.blocks
	old := map[netip.Prefix]*blockUse{}
	for _, u := range a.blocks {
		old[u.prefix] = u
	}
	blocks := make([]*blockUse, len(cs))
	for i, c := range cs {
		u := newBlockUse(c.Block, i == 0)
		if o, ok := old[c.Block]; ok {
			u.used, u.n = o.used.clone(), o.n
			if i == 0 {
				u.used.set(1)
			} else if o == prevBlocks[0] {
				u.used.clear(1) // no longer the node's address
			}
		}
		blocks[i] = u
	}
	a.st.Claims, a.blocks = slices.Clone(cs), blocks
	if err := a.saveLocked(); err != nil {
		a.st.Claims, a.blocks = prevClaims, prevBlocks
		return fmt.Errorf("set claims: %w", err)
	}
	return nil
}

// AddBlock adds a newly claimed block after the others.
func (a *Allocator) AddBlock(c Claim) error {
	if err := a.pool.CheckBlock(c.Block); err != nil {
		return fmt.Errorf("add block: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, u := range a.blocks {
		if u.prefix == c.Block {
			return fmt.Errorf("add block %s: already held: %w", c.Block, ErrExists)
		}
	}
	if len(a.st.Claims) > 0 && c.Node != a.st.Claims[0].Node {
		return fmt.Errorf("add block %s: claimed by node %s, the node's blocks by %s", c.Block, c.Node, a.st.Claims[0].Node)
	}
	a.st.Claims = append(a.st.Claims, c)
	a.blocks = append(a.blocks, newBlockUse(c.Block, len(a.blocks) == 0))
	if err := a.saveLocked(); err != nil {
		a.st.Claims = a.st.Claims[:len(a.st.Claims)-1]
		a.blocks = a.blocks[:len(a.blocks)-1]
		return fmt.Errorf("add block %s: %w", c.Block, err)
	}
	return nil
}

// RemoveBlock gives up block b, which must hold no lease and must not be
// the first (the node's own) block. ErrNotFound when b is not held.
func (a *Allocator) RemoveBlock(b netip.Prefix) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	i := slices.IndexFunc(a.blocks, func(u *blockUse) bool { return u.prefix == b })
	switch {
	case i < 0:
		return fmt.Errorf("remove block %s: %w", b, ErrNotFound)
	case i == 0:
		return fmt.Errorf("remove block %s: it is the node's first block", b)
	case a.blocks[i].n > 0:
		return fmt.Errorf("remove block %s: it holds %d leases", b, a.blocks[i].n)
	}
	prevClaims, prevBlocks := a.st.Claims, a.blocks
	a.st.Claims = slices.Delete(slices.Clone(a.st.Claims), i, i+1)
	a.blocks = slices.Delete(slices.Clone(a.blocks), i, i+1)
	if err := a.saveLocked(); err != nil {
		a.st.Claims, a.blocks = prevClaims, prevBlocks
		return fmt.Errorf("remove block %s: %w", b, err)
	}
	return nil
}

// EmptyBlocks returns the blocks that hold no lease, the first block (the
// node's own) excepted, in claim order.
func (a *Allocator) EmptyBlocks() []netip.Prefix {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []netip.Prefix
	for i, u := range a.blocks {
		if i > 0 && u.n == 0 {
			out = append(out, u.prefix)
		}
	}
	return out
}

// BlockUsage is one block and how many of its addresses are leased.
type BlockUsage struct {
	Block  netip.Prefix
	Leases int
}

// Usage returns every block with its lease count, in claim order.
func (a *Allocator) Usage() []BlockUsage {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]BlockUsage, len(a.blocks))
	for i, u := range a.blocks {
		out[i] = BlockUsage{Block: u.prefix, Leases: u.n}
	}
	return out
}

// MoveBlock replaces block old (lost in a conflict) by c.Block at the same
// position among the claims: every lease in old moves to the same offset in
// the new block. It returns one Move per moved lease, sorted by container.
// Claims and leases are saved together; on error nothing changes.
func (a *Allocator) MoveBlock(old netip.Prefix, c Claim) ([]Move, error) {
	if err := a.pool.CheckBlock(c.Block); err != nil {
		return nil, fmt.Errorf("move block %s: %w", old, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	i := slices.IndexFunc(a.blocks, func(u *blockUse) bool { return u.prefix == old })
	if i < 0 {
		return nil, fmt.Errorf("move block %s: %w", old, ErrNotFound)
	}
	for _, u := range a.blocks {
		if u.prefix == c.Block {
			return nil, fmt.Errorf("move block %s to %s: already held: %w", old, c.Block, ErrExists)
		}
	}
	if c.Node != a.st.Claims[i].Node {
		return nil, fmt.Errorf("move block %s to %s: claimed by node %s, the node's blocks by %s", old, c.Block, c.Node, a.st.Claims[i].Node)
	}
	u := a.blocks[i]
	next := State{Version: StateVersion, Claims: slices.Clone(a.st.Claims), Leases: make(map[string]Lease, len(a.st.Leases))}
	next.Claims[i] = c
	var moves []Move
	for ctr, l := range a.st.Leases {
		if off, ok := offsetIn(old, l.Addr); ok {
			n := l
			n.Addr = nth(c.Block, off)
			moves = append(moves, Move{Old: l, New: n})
			l = n
		}
		next.Leases[ctr] = l
	}
	moved := &blockUse{prefix: c.Block, used: u.used, n: u.n}
	prev, prevU := a.st, u
	a.st = next
	a.blocks[i] = moved
	if err := a.saveLocked(); err != nil {
		a.st, a.blocks[i] = prev, prevU
		return nil, fmt.Errorf("move block %s to %s: %w", old, c.Block, err)
	}
	slices.SortFunc(moves, func(x, y Move) int { return strings.Compare(x.New.Container, y.New.Container) })
	return moves, nil
}

// Allocate leases an address for container of service: the lowest free
// address of the first block that has one, in claim order. ErrExists if the
// container has a lease, ErrFull if every block is full (claim another and
// AddBlock it), ErrNoClaim if there is no block yet, an error for an empty
// service or container name.
func (a *Allocator) Allocate(service, container string) (Lease, error) {
	if service == "" || container == "" {
		return Lease{}, fmt.Errorf("allocate container %q in service %q: empty name", container, service)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.blocks) == 0 {
		return Lease{}, fmt.Errorf("allocate %s in service %s: %w", container, service, ErrNoClaim)
	}
	if l, ok := a.st.Leases[container]; ok {
		return Lease{}, fmt.Errorf("allocate %s in service %s: container has %s in service %s: %w", container, service, l.Addr, l.Service, ErrExists)
	}
	last := a.pool.BlockSize() - 1
	for _, u := range a.blocks {
		off := u.used.firstClear(1)
		if off >= last {
			continue
		}
		l := Lease{Service: service, Container: container, Addr: nth(u.prefix, off)}
		u.used.set(off)
		u.n++
		a.st.Leases[container] = l
		if err := a.saveLeaseLocked(container, l, true); err != nil {
			delete(a.st.Leases, container)
			u.n--
			u.used.clear(off)
			return Lease{}, fmt.Errorf("allocate %s in service %s: %w", container, service, err)
		}
		return l, nil
	}
	return Lease{}, fmt.Errorf("allocate %s in service %s: all %d blocks are full: %w", container, service, len(a.blocks), ErrFull)
}

// Release frees container's address. It returns the released lease and
// false if there was none. On a failed save it returns the error and
// nothing is released.
func (a *Allocator) Release(container string) (Lease, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.st.Leases[container]
	if !ok {
		return Lease{}, false, nil
	}
	u, off, _ := a.findLocked(l.Addr) // checked when the lease was made
	delete(a.st.Leases, container)
	u.used.clear(off)
	u.n--
	if err := a.saveLeaseLocked(container, l, false); err != nil {
		u.n++
		u.used.set(off)
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

// Leases returns every lease, sorted by address. The slice is the caller's.
func (a *Allocator) Leases() []Lease {
	a.mu.Lock()
	out := make([]Lease, 0, len(a.st.Leases))
	for _, l := range a.st.Leases {
		out = append(out, l)
	}
	a.mu.Unlock()
	slices.SortFunc(out, func(x, y Lease) int { return x.Addr.Compare(y.Addr) })
	return out
}

// State returns a copy of the allocator's state, as last saved, in the
// canonical form of State.Clone.
func (a *Allocator) State() State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.Clone()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

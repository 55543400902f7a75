package ipam

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
)

// maxIndexBits bounds the number of blocks in a cluster (2^62), so that
// counts and indices fit in a uint64. It only matters for IPv6.
const maxIndexBits = 62

// reservedHostBits is the size of the reserved range at the top of the
// cluster: a /24 for IPv4, a /120 for IPv6.
const reservedHostBits = 8

// Pool describes the cluster's address plan. It is immutable and safe for
// concurrent use. The zero Pool is not usable: make one with NewPool or
// DefaultPool.
type Pool struct {
	cluster   netip.Prefix
	blockBits int
	reserved  netip.Prefix
	claimable uint64 // blocks below the first one overlapping reserved
}

// NewPool checks the plan (cluster CIDR, block prefix length) and returns an
// error naming what is wrong: a prefix that is not masked, a cluster too
// small to hold the reserved range and a block beside it, a block prefix not
// longer than the cluster's, or one too long to hold a container (a block
// gives out every address but its first and last, so it is at most a /30 or
// /126).
func NewPool(cluster netip.Prefix, blockBits int) (*Pool, error) {
	if !cluster.IsValid() {
		return nil, errors.New("cluster CIDR is not a valid prefix")
	}
	a := cluster.Addr()
	if a.Is4In6() {
		return nil, fmt.Errorf("cluster CIDR %s is an IPv4-mapped IPv6 prefix; use the plain IPv4 form", cluster)
	}
	if m := cluster.Masked(); m != cluster {
		return nil, fmt.Errorf("cluster CIDR %s is not masked; use %s", cluster, m)
	}
	total := a.BitLen()
	resBits := total - reservedHostBits
	if cluster.Bits() >= resBits {
		return nil, fmt.Errorf("cluster CIDR %s leaves no room beside the reserved /%d of virtual addresses (mesh DNS); use /%d or shorter", cluster, resBits, resBits-1)
	}
	if blockBits <= cluster.Bits() {
		return nil, fmt.Errorf("block prefix /%d does not fit the cluster CIDR %s: it must be longer than /%d", blockBits, cluster, cluster.Bits())
	}
	if blockBits > total-2 {
		return nil, fmt.Errorf("block prefix /%d is too long: a block needs at least 4 addresses (use /%d or shorter)", blockBits, total-2)
	}
	if blockBits-cluster.Bits() > maxIndexBits {
		return nil, fmt.Errorf("cluster CIDR %s holds more than 2^%d blocks of /%d; use a shorter block prefix", cluster, maxIndexBits, blockBits)
	}
	if total-blockBits > 64 {
		return nil, fmt.Errorf("block prefix /%d leaves more than 64 host bits; use /%d or longer", blockBits, total-64)
	}
	reserved := netip.PrefixFrom(lastAddr(cluster), resBits).Masked()
	// Blocks are numbered upwards; every block from the first one that
	// overlaps the reserved range on is not claimable.
	firstReserved := childIndex(cluster, blockBits, reserved.Addr())
	if firstReserved == 0 {
		return nil, fmt.Errorf("block prefix /%d leaves no room for the reserved range %s in the cluster CIDR %s: the only block holds it; use a longer block prefix", blockBits, reserved, cluster)
	}
	return &Pool{cluster: cluster, blockBits: blockBits, reserved: reserved, claimable: firstReserved}, nil
}

// DefaultPool returns the pool of DefaultCluster and DefaultBlockBits.
func DefaultPool() *Pool {
	p, err := NewPool(netip.MustParsePrefix(DefaultCluster), DefaultBlockBits)
	if err != nil {
		panic(err) // the defaults are a valid plan
	}
	return p
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	host := p.Addr().BitLen() - p.Bits()
	return fromAddr(p.Masked().Addr()).add(ones(host)).addr(p.Addr().Is4())
}

// ones is the 128-bit number of n low one bits.
func ones(n int) u128 {
	switch {
	case n <= 0:
		return u128{}
	case n >= 128:
		return u128{^uint64(0), ^uint64(0)}
	case n >= 64:
		return u128{hi: lowMask(n - 64), lo: ^uint64(0)}
	}
	return u128{lo: lowMask(n)}
}

// Cluster is the cluster CIDR.
func (p *Pool) Cluster() netip.Prefix { return p.cluster }

// BlockBits is the prefix length of blocks.
func (p *Pool) BlockBits() int { return p.blockBits }

// BlockSize is the number of addresses in a block (64 for a /26).
func (p *Pool) BlockSize() uint64 { return lowMask(p.cluster.Addr().BitLen()-p.blockBits) + 1 }

// Reserved is the range at the top of the cluster kept for virtual
// addresses (mesh DNS, service VIPs) and never claimed: 10.203.255.0/24 for
// the defaults.
func (p *Pool) Reserved() netip.Prefix { return p.reserved }

// MeshDNS is the mesh DNS address: the reserved range's base + 53.
func (p *Pool) MeshDNS() netip.Addr { return nth(p.reserved, 53) }

// Blocks is the number of claimable blocks (every block below the reserved
// range): 4092 for the defaults.
func (p *Pool) Blocks() uint64 { return p.claimable }

// CheckBlock reports whether b is a claimable block of the pool: a masked
// prefix of the block length inside the cluster, not overlapping the
// reserved range. The error names what is wrong.
func (p *Pool) CheckBlock(b netip.Prefix) error {
	switch {
	case !b.IsValid():
		return errors.New("block is not a valid prefix")
	case b.Addr().Is4() != p.cluster.Addr().Is4() || b.Addr().Is4In6():
		return fmt.Errorf("block %s is not of the cluster %s's address family", b, p.cluster)
	case b.Masked() != b:
		return fmt.Errorf("block %s is not masked; use %s", b, b.Masked())
	case b.Bits() != p.blockBits:
		return fmt.Errorf("block %s is not a /%d", b, p.blockBits)
	case !p.cluster.Contains(b.Addr()):
		return fmt.Errorf("block %s is outside the cluster %s", b, p.cluster)
	case b.Overlaps(p.reserved):
		return fmt.Errorf("block %s overlaps the cluster's reserved range %s", b, p.reserved)
	}
	return nil
}

// Pick chooses a free block: preferred if it is valid and not taken, else
// starting at a position derived from seed (the node's public key, so that
// nodes joining at once spread out) and probing upwards, so that a node
// that grows finds the blocks right after its own first (adjacent blocks
// coalesce into one route). ErrExhausted, naming the cluster CIDR, when
// every block is taken.
//
// The start is FNV-1a-64(seed) mod Blocks(), so the same inputs always give
// the same answer. taken is called synchronously, once per candidate in
// probing order; nil means nothing is taken. An invalid preferred (the zero
// Prefix included) is ignored.
func (p *Pool) Pick(taken func(netip.Prefix) bool, seed []byte, preferred netip.Prefix) (netip.Prefix, error) {
	if taken == nil {
		taken = func(netip.Prefix) bool { return false }
	}
	if preferred.IsValid() && p.CheckBlock(preferred) == nil && !taken(preferred) {
		return preferred, nil
	}
	h := fnv.New64a()
	h.Write(seed)
	start := h.Sum64() % p.claimable
	for i := uint64(0); i < p.claimable; i++ {
		idx := start + i
		if idx >= p.claimable {
			idx -= p.claimable
		}
		b := child(p.cluster, p.blockBits, idx)
		if !taken(b) {
			return b, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("claim a block of cluster CIDR %s: all %d blocks of /%d are taken: %w", p.cluster, p.claimable, p.blockBits, ErrExhausted)
}

// PickNext chooses a free block for a node that holds ours (in claim
// order) and needs one more: the block right after one of ours (the last
// first), so that a growing node's blocks stay adjacent and coalesce into
// few routes; else whatever Pick finds from seed. taken must count ours as
// taken.
func (p *Pool) PickNext(taken func(netip.Prefix) bool, ours []netip.Prefix, seed []byte) (netip.Prefix, error) {
	if taken == nil {
		taken = func(netip.Prefix) bool { return false }
	}
	for i := len(ours) - 1; i >= 0; i-- {
		b := ours[i]
		if p.CheckBlock(b) != nil {
			continue
		}
		idx := childIndex(p.cluster, p.blockBits, b.Addr()) + 1
		if idx >= p.claimable {
			continue
		}
		if next := child(p.cluster, p.blockBits, idx); !taken(next) {
			return next, nil
		}
	}
	return p.Pick(taken, seed, netip.Prefix{})
}

// NodeAddr is a node's own overlay address: the second address of its first
// block (10.200.3.1 for 10.200.3.0/26). It is the zero Addr for an invalid
// block.
func NodeAddr(first netip.Prefix) netip.Addr {
	if !first.IsValid() {
		return netip.Addr{}
	}
	return first.Masked().Addr().Next()
}

// Coalesce returns the smallest set of prefixes covering exactly the
// addresses of ps: duplicates and prefixes inside others dropped, sibling
// pairs merged into their parent, repeatedly. The result is sorted by
// address; ps is not modified. Families are kept apart.
func Coalesce(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.IsValid() {
			out = append(out, p.Masked())
		}
	}
	slices.SortFunc(out, comparePrefix)
	for {
		merged := false
		var next []netip.Prefix
		for i := 0; i < len(out); i++ {
			p := out[i]
			if len(next) > 0 && next[len(next)-1].Overlaps(p) {
				last := next[len(next)-1]
				if p.Bits() < last.Bits() {
					next[len(next)-1] = p
				}
				merged = true
				continue
			}
			// A duplicate of p is no sibling: it is dropped above next round.
			if i+1 < len(out) && p.Bits() > 0 && p.Bits() == out[i+1].Bits() && out[i+1] != p {
				parent, _ := p.Addr().Prefix(p.Bits() - 1)
				if parent.Addr() == p.Addr() && parent.Contains(out[i+1].Addr()) {
					next = append(next, parent)
					i++
					merged = true
					continue
				}
			}
			next = append(next, p)
		}
		out = next
		if !merged {
			return out
		}
		slices.SortFunc(out, comparePrefix)
	}
}

package ipam

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
)

// Dual-stack is derived, not allocated: every IPv4 block of the cluster has
// one IPv6 twin, a /64 of the cluster's IPv6 prefix, and every address in the
// block the twin at the same position in that /64. So a node claims, gossips,
// contests and releases IPv4 blocks only, and the IPv6 side follows without a
// second claim to keep consistent: a block that moves takes its twin along,
// a container's IPv6 address moves with its IPv4 one.
//
// Block i of the cluster (counted from the cluster's base) maps to the /64
// whose subnet bits (the 64 - Cluster6 bits below the prefix) hold i, right
// aligned: with the default /48 and /26 blocks of 10.200.0.0/14,
//
//	10.200.0.0/26   ↦ fdXX:XXXX:XXXX::/64       (block 0)
//	10.200.0.5      ↦ fdXX:XXXX:XXXX::5
//	10.200.1.65     ↦ fdXX:XXXX:XXXX:5::1       (block 5, the node's address)
//	10.203.255.53   ↦ fdXX:XXXX:XXXX:ffc::35    (the mesh DNS)
//
// The block index must fit in those subnet bits: a /48 holds 2^16 blocks, so
// the cluster CIDR may be cut into at most that many (a /14 into /30s).

// DefaultCluster6Bits is the prefix length of the IPv6 cluster prefix the
// node derives when none is given (ULA48).
const DefaultCluster6Bits = 48

// twinSubnetBits is the length of every block's twin: a /64.
const twinSubnetBits = 64

// ula is fc00::/7, the unique local addresses (RFC 4193).
var ula = netip.MustParsePrefix("fc00::/7")

// Twins maps the addresses and prefixes of an IPv4 pool to their IPv6 twins.
// It is immutable and safe for concurrent use.
type Twins struct {
	pool     *Pool
	cluster6 netip.Prefix
}

// NewTwins checks that cluster6 can hold a twin of every block of pool and
// returns the mapping. cluster6 must be a masked unique local prefix
// (fc00::/7, RFC 4193: the overlay must never take addresses that are
// routed on the internet) with room for the pool's block index in the
// subnet bits below it; pool must be an IPv4 pool.
func NewTwins(pool *Pool, cluster6 netip.Prefix) (*Twins, error) {
	if pool == nil || !pool.cluster.Addr().Is4() {
		return nil, errors.New("IPv6 twins need an IPv4 cluster CIDR (an IPv6 cluster CIDR is already IPv6)")
	}
	if err := checkCluster6(cluster6); err != nil {
		return nil, err
	}
	index := pool.blockBits - pool.cluster.Bits()
	if room := twinSubnetBits - cluster6.Bits(); index > room {
		return nil, fmt.Errorf("cluster IPv6 prefix %s is too long for the block mapping: %s holds 2^%d blocks of /%d, and a /%d leaves room for 2^%d /64 twins; use /%d or shorter",
			cluster6, pool.cluster, index, pool.blockBits, cluster6.Bits(), room, twinSubnetBits-index)
	}
	return &Twins{pool: pool, cluster6: cluster6}, nil
}

// checkCluster6 checks an IPv6 cluster prefix by itself.
func checkCluster6(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return errors.New("cluster IPv6 prefix is not a valid prefix")
	case !p.Addr().Is6() || p.Addr().Is4In6():
		return fmt.Errorf("cluster IPv6 prefix %s is not an IPv6 prefix", p)
	case p.Masked() != p:
		return fmt.Errorf("cluster IPv6 prefix %s is not masked; use %s", p, p.Masked())
	case p.Bits() < ula.Bits() || !ula.Contains(p.Addr()):
		return fmt.Errorf("cluster IPv6 prefix %s is not a unique local prefix (inside fc00::/7, e.g. fd12:3456:789a::/48)", p)
	case p.Bits() > twinSubnetBits-1:
		return fmt.Errorf("cluster IPv6 prefix %s is too long for the block mapping: every block needs a /64 below it", p)
	}
	return nil
}

// ULAFor derives the cluster's IPv6 prefix from a secret every node of the
// cluster shares (the cluster key): fd00::/8 and 40 bits of its SHA-256, a
// /48 as RFC 4193 asks for a random global ID. Every node computes the same
// prefix without talking to the others, and two clusters (two keys) get
// different ones.
func ULAFor(secret []byte) netip.Prefix {
	h := sha256.New()
	h.Write([]byte("zlmesh cluster IPv6 prefix\x00"))
	h.Write(secret)
	sum := h.Sum(nil)
	var a [16]byte
	a[0] = 0xfd
	copy(a[1:6], sum[:5])
	return netip.PrefixFrom(netip.AddrFrom16(a), DefaultCluster6Bits)
}

// Cluster6 is the cluster's IPv6 prefix.
func (t *Twins) Cluster6() netip.Prefix { return t.cluster6 }

// Addr returns the IPv6 twin of an IPv4 address of the cluster; ok is false
// for an address outside the cluster CIDR.
func (t *Twins) Addr(a netip.Addr) (netip.Addr, bool) {
	a = a.Unmap()
	off, ok := offsetIn(t.pool.cluster, a)
	if !ok || !a.Is4() {
		return netip.Addr{}, false
	}
	host := 32 - t.pool.blockBits
	index, inBlock := off>>host, off&lowMask(host)
	base := fromAddr(t.cluster6.Addr()).add(shifted(index, 128-twinSubnetBits)).add(u128{lo: inBlock})
	return base.addr(false), true
}

// Prefix returns the IPv6 twin of an IPv4 prefix of the cluster: a block's
// /64, a prefix of several blocks (as Coalesce merges them) the prefix of
// their /64s, a host prefix inside a block the prefix of as many host bits
// at the same place in the block's /64 (a /32 is a /128). ok is false for a
// prefix that is not inside the cluster CIDR.
func (t *Twins) Prefix(p netip.Prefix) (netip.Prefix, bool) {
	p = p.Masked()
	if !p.IsValid() || !p.Addr().Is4() || p.Bits() < t.pool.cluster.Bits() || !t.pool.cluster.Contains(p.Addr()) {
		return netip.Prefix{}, false
	}
	a, _ := t.Addr(p.Addr())
	bits := 128 - (32 - p.Bits())
	if p.Bits() <= t.pool.blockBits {
		bits = twinSubnetBits - (t.pool.blockBits - p.Bits())
	}
	return netip.PrefixFrom(a, bits), true
}

// Prefixes returns the twins of the prefixes of ps that have one, in order.
func (t *Twins) Prefixes(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if q, ok := t.Prefix(p); ok {
			out = append(out, q)
		}
	}
	return out
}

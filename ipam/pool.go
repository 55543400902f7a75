package ipam

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
)

// maxIndexBits bounds the number of node subnets in a cluster and of slices
// in a node subnet (2^62), so that counts and indices fit in a uint64. It only
// matters for IPv6; IPv4 plans stay far below it.
const maxIndexBits = 62

// Pool describes the cluster's address plan. It is immutable and safe for
// concurrent use. The zero Pool is not usable: make one with NewPool or
// DefaultPool.
type Pool struct {
	cluster   netip.Prefix
	nodeBits  int
	sliceBits int
	reserved  netip.Prefix
	subnets   uint64 // claimable node subnets: every node-sized block but the top one
}

// NewPool checks the plan (cluster CIDR, node subnet prefix length, service
// slice prefix length) and returns an error naming what is wrong: a prefix
// that is not masked, a node prefix the cluster cannot hold at least two of
// (one reserved block plus one node), a slice prefix the node subnet cannot
// hold at least two of.
//
// Both families work; the limits are stated for IPv4 and are the same
// relative to 128 bits for IPv6: a node subnet is at most a /29 (so that it
// holds a node slice and one service slice), a slice at most a /30 (network,
// gateway, one container, broadcast). For IPv6 a slice has at most 64 host
// bits and a cluster or node subnet at most 2^62 children.
func NewPool(cluster netip.Prefix, nodeBits, sliceBits int) (*Pool, error) {
	if !cluster.IsValid() {
		return nil, errors.New("ipam pool: cluster prefix is not valid")
	}
	a := cluster.Addr()
	if a.Is4In6() {
		return nil, fmt.Errorf("ipam pool: cluster %s is an IPv4-mapped IPv6 prefix; use the plain IPv4 form", cluster)
	}
	if m := cluster.Masked(); m != cluster {
		return nil, fmt.Errorf("ipam pool: cluster %s is not masked; use %s", cluster, m)
	}
	total := a.BitLen()
	if nodeBits <= cluster.Bits() {
		return nil, fmt.Errorf("ipam pool: node prefix /%d must be longer than the cluster's /%d: the cluster must hold at least 2 node subnets (the top one is reserved)", nodeBits, cluster.Bits())
	}
	if nodeBits > total-2 {
		return nil, fmt.Errorf("ipam pool: node prefix /%d is longer than /%d: a node subnet needs room for slices", nodeBits, total-2)
	}
	if nodeBits-cluster.Bits() > maxIndexBits {
		return nil, fmt.Errorf("ipam pool: cluster %s holds more than 2^%d node subnets of /%d; use a longer cluster prefix or a shorter node prefix", cluster, maxIndexBits, nodeBits)
	}
	if sliceBits <= nodeBits {
		return nil, fmt.Errorf("ipam pool: slice prefix /%d must be longer than the node prefix /%d: a node subnet must hold at least 2 slices (slice 0 is the node's own)", sliceBits, nodeBits)
	}
	if sliceBits > total-2 {
		return nil, fmt.Errorf("ipam pool: slice prefix /%d is longer than /%d: a slice needs a network, a gateway, at least one container and a broadcast address", sliceBits, total-2)
	}
	if total-sliceBits > 64 {
		return nil, fmt.Errorf("ipam pool: slice prefix /%d leaves more than 64 host bits; use /%d or longer", sliceBits, total-64)
	}
	if sliceBits-nodeBits > maxIndexBits {
		return nil, fmt.Errorf("ipam pool: node subnet /%d holds more than 2^%d slices of /%d; use a shorter slice prefix", nodeBits, maxIndexBits, sliceBits)
	}
	n := uint64(1)<<(nodeBits-cluster.Bits()) - 1
	return &Pool{
		cluster:   cluster,
		nodeBits:  nodeBits,
		sliceBits: sliceBits,
		reserved:  child(cluster, nodeBits, n),
		subnets:   n,
	}, nil
}

// DefaultPool returns the pool of DefaultCluster, DefaultNodeBits and
// DefaultSliceBits.
func DefaultPool() *Pool {
	p, err := NewPool(netip.MustParsePrefix(DefaultCluster), DefaultNodeBits, DefaultSliceBits)
	if err != nil {
		panic(err) // the defaults are a valid plan
	}
	return p
}

// Cluster is the cluster CIDR.
func (p *Pool) Cluster() netip.Prefix { return p.cluster }

// NodeBits is the prefix length of node subnets.
func (p *Pool) NodeBits() int { return p.nodeBits }

// SliceBits is the prefix length of service slices.
func (p *Pool) SliceBits() int { return p.sliceBits }

// Reserved is the top node-sized block of the cluster, kept for virtual
// addresses (mesh DNS, service VIPs) and never claimed: 10.200.255.0/24 for
// the defaults.
func (p *Pool) Reserved() netip.Prefix { return p.reserved }

// MeshDNS is the mesh DNS address: the reserved block's base + 53.
func (p *Pool) MeshDNS() netip.Addr { return nth(p.reserved, 53) }

// Subnets is the number of claimable node subnets (every node-sized block of
// the cluster but the reserved one): 255 for the defaults.
func (p *Pool) Subnets() uint64 { return p.subnets }

// Slices is the number of slices in a node subnet, slice 0 (the node's own)
// included: 8 for the defaults.
func (p *Pool) Slices() uint64 { return uint64(1) << (p.sliceBits - p.nodeBits) }

// CheckSubnet reports whether s is a claimable node subnet of the pool: a
// masked prefix of the node prefix length inside the cluster, not the
// reserved block. The error names what is wrong.
func (p *Pool) CheckSubnet(s netip.Prefix) error {
	switch {
	case !s.IsValid():
		return errors.New("node subnet is not a valid prefix")
	case s.Addr().Is4() != p.cluster.Addr().Is4() || s.Addr().Is4In6():
		return fmt.Errorf("node subnet %s is not of the cluster %s's address family", s, p.cluster)
	case s.Masked() != s:
		return fmt.Errorf("node subnet %s is not masked; use %s", s, s.Masked())
	case s.Bits() != p.nodeBits:
		return fmt.Errorf("node subnet %s is not a /%d", s, p.nodeBits)
	case !p.cluster.Contains(s.Addr()):
		return fmt.Errorf("node subnet %s is outside the cluster %s", s, p.cluster)
	case s == p.reserved:
		return fmt.Errorf("node subnet %s is the cluster's reserved block", s)
	}
	return nil
}

// Pick chooses a free node subnet: preferred if it is valid and not taken,
// else starting at a position derived from seed (the node's public key, so
// that nodes joining at once spread out) and probing upwards. ErrExhausted
// when every subnet is taken.
//
// The start is FNV-1a-64(seed) mod Subnets(), so the same inputs always give
// the same answer. taken is called synchronously, once per candidate in
// probing order; nil means nothing is taken. An invalid preferred (the zero
// Prefix included) is ignored.
func (p *Pool) Pick(taken func(netip.Prefix) bool, seed []byte, preferred netip.Prefix) (netip.Prefix, error) {
	if taken == nil {
		taken = func(netip.Prefix) bool { return false }
	}
	if preferred.IsValid() && p.CheckSubnet(preferred) == nil && !taken(preferred) {
		return preferred, nil
	}
	h := fnv.New64a()
	h.Write(seed)
	start := h.Sum64() % p.subnets
	for i := uint64(0); i < p.subnets; i++ {
		idx := start + i
		if idx >= p.subnets {
			idx -= p.subnets
		}
		s := child(p.cluster, p.nodeBits, idx)
		if !taken(s) {
			return s, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("pick node subnet in %s: all %d are taken: %w", p.cluster, p.subnets, ErrExhausted)
}

// OverlayAddr is a node's own overlay address: the first host address of its
// node subnet (10.200.3.1 for 10.200.3.0/24). It is the zero Addr for an
// invalid subnet.
func OverlayAddr(subnet netip.Prefix) netip.Addr {
	if !subnet.IsValid() {
		return netip.Addr{}
	}
	return subnet.Masked().Addr().Next()
}

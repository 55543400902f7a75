// Package ipam is zlmesh's address allocation, pure logic with storage
// behind the Store interface.
//
// Two levels: the cluster CIDR is cut into node subnets, claimed by nodes
// (Claim, the conflict rule, Pick); a node subnet is cut into service slices
// whose addresses are leased to containers (Allocator). The top node-sized
// block of the cluster CIDR is reserved for virtual addresses (the mesh DNS
// address, later service VIPs) and is never claimed. Slice 0 of every node
// subnet belongs to the node itself (its overlay address is the subnet's first
// host address); services get slices 1 and up.
package ipam

import (
	"errors"
	"net/netip"
	"time"
)

// Errors callers branch on.
var (
	ErrExhausted = errors.New("no free address")
	ErrExists    = errors.New("already allocated")
	ErrNotFound  = errors.New("not allocated")
)

// Defaults.
const (
	DefaultCluster   = "10.200.0.0/16"
	DefaultNodeBits  = 24
	DefaultSliceBits = 27
)

// Pool describes the cluster's address plan. It is immutable and safe for
// concurrent use.
type Pool struct{}

// NewPool checks the plan (cluster CIDR, node subnet prefix length, service
// slice prefix length) and returns an error naming what is wrong: a prefix
// that is not masked, a node prefix the cluster cannot hold at least two of
// (one reserved block plus one node), a slice prefix the node subnet cannot
// hold at least two of.
func NewPool(cluster netip.Prefix, nodeBits, sliceBits int) (*Pool, error) { panic("unimplemented") }

func (p *Pool) Cluster() netip.Prefix  { panic("unimplemented") }
func (p *Pool) NodeBits() int          { panic("unimplemented") }
func (p *Pool) SliceBits() int         { panic("unimplemented") }
func (p *Pool) Reserved() netip.Prefix { panic("unimplemented") }

// MeshDNS is the mesh DNS address: the reserved block's base + 53.
func (p *Pool) MeshDNS() netip.Addr { panic("unimplemented") }

// CheckSubnet reports whether s is a claimable node subnet of the pool.
func (p *Pool) CheckSubnet(s netip.Prefix) error { panic("unimplemented") }

// Pick chooses a free node subnet: preferred if it is valid and not taken,
// else starting at a position derived from seed (the node's public key, so
// that nodes joining at once spread out) and probing upwards. ErrExhausted
// when every subnet is taken.
func (p *Pool) Pick(taken func(netip.Prefix) bool, seed []byte, preferred netip.Prefix) (netip.Prefix, error) {
	panic("unimplemented")
}

// OverlayAddr is a node's own overlay address: the first host address of its
// node subnet.
func OverlayAddr(subnet netip.Prefix) netip.Addr { panic("unimplemented") }

// Claim is a node's claim on a node subnet, replicated through the mesh.
type Claim struct {
	Node      string       `json:"node"` // public key, base64
	Name      string       `json:"name"`
	Subnet    netip.Prefix `json:"subnet"`
	ClaimedAt time.Time    `json:"claimed_at"`
	RenewedAt time.Time    `json:"renewed_at"`
}

// Beats reports whether c wins a conflict against o over the same subnet:
// the older claim (ClaimedAt) wins, ties broken by the lower public key.
func (c Claim) Beats(o Claim) bool { panic("unimplemented") }

// Conflict is two claims on one subnet by live nodes.
type Conflict struct {
	Subnet        netip.Prefix
	Winner, Loser Claim
}

// Holders returns, for every subnet that is held, the claim that holds it: a
// claim holds while its node is alive, or for grace after RenewedAt while it
// is not; among several holders of one subnet the one that Beats the others.
func Holders(claims []Claim, alive func(node string) bool, now time.Time, grace time.Duration) map[netip.Prefix]Claim {
	panic("unimplemented")
}

// Conflicts returns every pair (winner, loser) of alive nodes claiming the
// same subnet, one entry per loser.
func Conflicts(claims []Claim, alive func(node string) bool) []Conflict { panic("unimplemented") }

// Lease is one container's address.
type Lease struct {
	Service   string       `json:"service"`
	Container string       `json:"container"`
	Addr      netip.Prefix `json:"addr"`    // address with the slice's prefix length
	Gateway   netip.Prefix `json:"gateway"` // bridge address with the slice's prefix length
}

// Move is one container's address change when the node renumbers.
type Move struct {
	Old, New Lease
}

// State is what a Store keeps.
type State struct {
	Claim  *Claim                  `json:"claim,omitempty"`
	Slices map[string]netip.Prefix `json:"slices,omitempty"` // service → slice
	Leases map[string]Lease        `json:"leases,omitempty"` // container → lease
}

// Store persists State.
type Store interface {
	// Load returns the stored state; an empty State when nothing is stored;
	// an error when what is stored cannot be read.
	Load() (State, error)
	// Save replaces the stored state atomically.
	Save(State) error
}

// NewFileStore returns a Store in one JSON file, written atomically.
func NewFileStore(path string) Store { panic("unimplemented") }

// Allocator hands out service slices and container addresses inside this
// node's subnet and keeps the node's own claim. Every change is saved to the
// Store before the method returns; a failed save leaves memory unchanged.
// It is safe for concurrent use.
type Allocator struct{}

// NewAllocator loads the state from store.
func NewAllocator(store Store, pool *Pool) (*Allocator, error) { panic("unimplemented") }

// Claim returns the node's claim, if it has one.
func (a *Allocator) Claim() (Claim, bool) { panic("unimplemented") }

// SetClaim records the node's claim (a first claim, or a renewal of the same
// subnet). Changing the subnet while leases exist is an error: use Renumber.
func (a *Allocator) SetClaim(c Claim) error { panic("unimplemented") }

// Allocate leases an address for container in service's slice, making the
// slice if the service has none. ErrExists if the container has a lease,
// ErrExhausted if the slice or the subnet is full, an error if there is no
// claim yet.
func (a *Allocator) Allocate(service, container string) (Lease, error) { panic("unimplemented") }

// Release frees container's address, and the service's slice with its last
// lease. It returns the released lease and false if there was none.
func (a *Allocator) Release(container string) (Lease, bool, error) { panic("unimplemented") }

// Lease returns container's lease.
func (a *Allocator) Lease(container string) (Lease, bool) { panic("unimplemented") }

// Leases returns every lease, sorted by address.
func (a *Allocator) Leases() []Lease { panic("unimplemented") }

// Renumber moves the node to the subnet of c: every slice and lease keeps its
// position relative to the subnet. It returns one Move per lease.
func (a *Allocator) Renumber(c Claim) ([]Move, error) { panic("unimplemented") }

// Package ipam is zlmesh's address allocation, pure logic with storage
// behind the Store interface (ipam/disk keeps it in the state dir).
//
// The model is the one large container networks use (Calico's IPAM blocks),
// done over gossip:
//
//   - The cluster CIDR is cut into blocks of one prefix length (Pool; default
//     /26 out of 10.200.0.0/14). A range at the top of the cluster (the top
//     /24 for IPv4, /120 for IPv6) is reserved for virtual addresses (the
//     mesh DNS, later service VIPs): no block that overlaps it is ever
//     claimed.
//   - A node claims blocks on demand: its first at start, another whenever
//     its blocks are full, and it releases a block that stayed empty (Claim,
//     the conflict rule Beats, Holders, Conflicts, Pool.Pick). The first
//     block is the node's own: its overlay address is that block's second
//     address (Pool.NodeAddr).
//   - A container gets a single address (a /32 or /128 route on its host)
//     out of its node's blocks, whatever its service (Allocator). The first
//     and the last address of every block are never given out, so that no
//     container ever holds an address that looks like a network or
//     broadcast address to software with older assumptions.
//
// Nothing here is IPv4-only: addresses are netip values and the arithmetic
// is on 128 bits (u128.go).
package ipam

import (
	"errors"
	"maps"
	"net/netip"
	"slices"
	"time"
)

// Errors callers branch on.
var (
	// ErrExhausted: the cluster has no free block left.
	ErrExhausted = errors.New("exhausted")
	// ErrFull: every block this node holds is full; claim another one
	// (Allocator.AddBlock) and try again.
	ErrFull     = errors.New("no free address in this node's blocks")
	ErrExists   = errors.New("already allocated")
	ErrNotFound = errors.New("not allocated")
	// ErrNoClaim: the node holds no block yet, so nothing can be allocated.
	ErrNoClaim = errors.New("no block claimed")
)

// Defaults: 10.200.0.0/14 holds 4096 blocks of /26 (64 addresses), 4092 of
// them claimable (the top /24 is reserved): a thousand nodes with a block
// each still leave three thousand blocks for growth, and a node with a
// thousand containers holds 17 of them.
const (
	DefaultCluster   = "10.200.0.0/14"
	DefaultBlockBits = 26
)

// Claim is a node's claim on one block, replicated through the mesh.
type Claim struct {
	Node      string       `json:"node"` // public key, base64
	Name      string       `json:"name"`
	Block     netip.Prefix `json:"block"`
	ClaimedAt time.Time    `json:"claimed_at"`
	RenewedAt time.Time    `json:"renewed_at"`
}

// Conflict is two claims on one block by live nodes.
type Conflict struct {
	Block         netip.Prefix
	Winner, Loser Claim
}

// Lease is one container's address.
type Lease struct {
	Service   string     `json:"service"`
	Container string     `json:"container"`
	Addr      netip.Addr `json:"addr"`
}

// Move is one container's address change when a block of the node is
// replaced by another (a lost conflict).
type Move struct {
	Old, New Lease
}

// StateVersion is the version of State this package writes. Version 1 (no
// version field: one node subnet cut into service slices) is migrated by
// ipam/disk.
const StateVersion = 2

// State is what a Store keeps.
type State struct {
	Version int `json:"version"`
	// Claims are the node's blocks, the node's own (first) block first.
	Claims []Claim `json:"claims,omitempty"`
	// Leases maps container → lease.
	Leases map[string]Lease `json:"leases,omitempty"`
}

// Clone returns a deep copy of s in canonical form: empty maps and slices
// become nil, as they come back from a file, so that equal states compare
// equal with reflect.DeepEqual.
func (s State) Clone() State {
	out := State{Version: s.Version}
	if len(s.Claims) > 0 {
		out.Claims = slices.Clone(s.Claims)
	}
	if len(s.Leases) > 0 {
		out.Leases = maps.Clone(s.Leases)
	}
	return out
}

// Store persists State.
//
// The Allocator calls it with its own lock held, one call at a time, and
// lends its maps: Save must neither modify the State it is given nor keep
// its maps after returning (copy what it keeps). The State Load returns
// belongs to the caller.
type Store interface {
	// Load returns the stored state; an empty State when nothing is stored;
	// an error when what is stored cannot be read.
	Load() (State, error)
	// Save replaces the stored state atomically.
	Save(State) error
}

// LeaseStore is a Store that can record the change of one lease without
// rewriting the whole state, so that making or releasing a lease costs the
// same however many leases there are (ipam/disk's store is one). The
// Allocator calls SaveLease instead of Save when it makes or releases a
// lease; a change of blocks still goes through Save.
//
// SaveLease records atomically that container's lease is now l (held true)
// or gone (held false). st is the whole state after the change, lent as
// with Save, for a store that writes the whole state now and then. After a
// crash at any point, Load returns the state before or the state after the
// change.
type LeaseStore interface {
	Store
	SaveLease(st State, container string, l Lease, held bool) error
}

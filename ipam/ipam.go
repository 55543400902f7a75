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
//
// Inside a slice, the first address is the network, the second the gateway
// (the service bridge's address), the last the broadcast; containers get the
// others, lowest free first.
package ipam

import (
	"errors"
	"maps"
	"net/netip"
	"time"
)

// Errors callers branch on.
var (
	ErrExhausted = errors.New("no free address")
	ErrExists    = errors.New("already allocated")
	ErrNotFound  = errors.New("not allocated")
	// ErrNoClaim: the node has no subnet claim yet, so nothing can be
	// allocated.
	ErrNoClaim = errors.New("no node subnet claimed")
)

// Defaults.
const (
	DefaultCluster   = "10.200.0.0/16"
	DefaultNodeBits  = 24
	DefaultSliceBits = 27
)

// Claim is a node's claim on a node subnet, replicated through the mesh.
type Claim struct {
	Node      string       `json:"node"` // public key, base64
	Name      string       `json:"name"`
	Subnet    netip.Prefix `json:"subnet"`
	ClaimedAt time.Time    `json:"claimed_at"`
	RenewedAt time.Time    `json:"renewed_at"`
}

// Conflict is two claims on one subnet by live nodes.
type Conflict struct {
	Subnet        netip.Prefix
	Winner, Loser Claim
}

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

// Clone returns a deep copy of s in canonical form: empty maps become nil,
// as they come back from a file, so that equal states compare equal with
// reflect.DeepEqual.
func (s State) Clone() State {
	var out State
	if len(s.Slices) > 0 {
		out.Slices = maps.Clone(s.Slices)
	}
	if len(s.Leases) > 0 {
		out.Leases = maps.Clone(s.Leases)
	}
	if s.Claim != nil {
		c := *s.Claim
		out.Claim = &c
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
// same however many leases there are (NewFileStore's store is one). The
// Allocator calls SaveLease instead of Save when it makes or releases a
// lease; a new claim and renumbering still go through Save.
//
// SaveLease records atomically that container's lease is now l (held true:
// made or changed; a new slice of its service is l.Addr.Masked()) or gone
// (held false: released, and its service's slice with its last lease). st
// is the whole state after the change, lent as with Save, for a store that
// writes the whole state now and then. After a crash at any point, Load
// returns the state before or the state after the change.
type LeaseStore interface {
	Store
	SaveLease(st State, container string, l Lease, held bool) error
}

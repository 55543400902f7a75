// Package ipam is zlmesh's address allocation, pure logic with storage
// behind the Store interface.
//
// Two levels: the cluster CIDR is cut into node subnets, claimed by nodes
// (Claim, the conflict rule, Pick); a node subnet is cut into service slices
// whose addresses are leased to containers (Allocator). The top node-sized
// block of the cluster CIDR is reserved for virtual addresses (the mesh DNS
// address, later service VIPs) and is never claimed.
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
)

// Pool describes the cluster's address plan.
type Pool struct{}

// NewPool checks the plan: cluster CIDR, node subnet prefix length and
// service slice prefix length.
func NewPool(cluster netip.Prefix, nodeBits, sliceBits int) (*Pool, error) { panic("unimplemented") }

// Claim is a node's claim on a node subnet, replicated through the mesh.
type Claim struct {
	Node      string       `json:"node"` // public key, base64
	Name      string       `json:"name"`
	Subnet    netip.Prefix `json:"subnet"`
	ClaimedAt time.Time    `json:"claimed_at"`
	RenewedAt time.Time    `json:"renewed_at"`
}

// Lease is one container's address.
type Lease struct {
	Service   string       `json:"service"`
	Container string       `json:"container"`
	Addr      netip.Prefix `json:"addr"`    // address with the slice's prefix length
	Gateway   netip.Prefix `json:"gateway"` // bridge address with the slice's prefix length
}

// State is what a Store keeps.
type State struct {
	Claim  *Claim                  `json:"claim,omitempty"`
	Slices map[string]netip.Prefix `json:"slices,omitempty"`
	Leases map[string]Lease        `json:"leases,omitempty"`
}

// Store persists State.
type Store interface {
	Load() (State, error)
	Save(State) error
}

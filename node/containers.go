package node

import (
	"context"
	"fmt"
	"net/netip"
)

// Containers is the container plumbing the node drives: package bridge's
// Manager on Linux (bridgeContainers, containers_linux.go), HCN endpoints
// on Windows (hcnContainers, containers_hcn.go), fakes in tests. It speaks
// the node's own types; each implementation converts to its package's.
//
// The same ContainerSpec (the one recorded when the container was
// attached) is passed to every later call about that container. Errors
// that mean "the container is gone" wrap bridge.ErrNoNamespace (adoption
// and the sweep forget such an attachment); attachError maps the others.
type Containers interface {
	// Attach plumbs the container at s.Address (and s.Address6 when set)
	// and reports what it made; a failed Attach leaves nothing behind.
	Attach(ctx context.Context, s ContainerSpec) (Plumbed, error)
	// Detach undoes Attach; it is idempotent (what is already gone is
	// success).
	Detach(ctx context.Context, s ContainerSpec) error
	// Readdress moves a live attachment from s.Address to newAddr (and
	// s.Address6 to newAddr6, set exactly when s.Address6 is) without
	// detaching it; calling it again finishes a half-done move.
	Readdress(ctx context.Context, s ContainerSpec, newAddr, newAddr6 netip.Prefix) error
	// Alive reports whether the container's namespace is still the one
	// recorded as id (a vanished one is (false, nil)).
	Alive(s ContainerSpec, id NamespaceID) (bool, error)
	// Adopt takes over an attachment made before a restart, repairing
	// what differs from s and listing each repair in Plumbed.Repairs.
	Adopt(ctx context.Context, s ContainerSpec) (Plumbed, error)
	// Inventory lists the plumbing's objects on the host, for garbage
	// collection after adoption.
	Inventory() (ContainerInventory, error)
	// RemoveLink removes one of the plumbing's links (or endpoints) by the
	// name Inventory gave it.
	RemoveLink(name string) error
	// RemoveRoute removes the plumbing's host route to dst.
	RemoveRoute(dst netip.Prefix) error
	// RemoveBridgeIfEmpty removes the bridge name if nothing is attached
	// to it, and reports whether it did.
	RemoveBridgeIfEmpty(name string) (bool, error)
	// Close releases the plumbing's handles; what it made stays.
	Close() error
}

// ContainerSpec is one container attachment as the node decides it: the
// request's names and where the container is, plus the address the node
// leased. It is recorded in the state dir (attachments.json and its
// journal, attachment.Spec); the json keys are the Go field names, the
// format written before the node had its own type, and must not change.
//
// Exactly one way to find the container is set: Netns or PID (Linux, a
// network namespace), HostPeer (Linux, a runtime such as Docker that moves
// the interface itself; no namespace), or ContainerID (Windows, the
// runtime's container id).
type ContainerSpec struct {
	// Service names the container's service (a DNS label).
	Service string `json:"Service"`
	// Container names the attachment (the request's container id); the
	// node's key for it everywhere.
	Container string `json:"Container"`
	// Netns is the path of a file referring to the container's network
	// namespace; "" when PID, HostPeer or ContainerID says where it is.
	Netns string `json:"Netns"`
	// PID is a process in the container's network namespace; 0 for none.
	PID int `json:"PID"`
	// Ifname is the interface name inside the container ("eth0" by
	// default; not used with HostPeer or ContainerID).
	Ifname string `json:"Ifname"`
	// Address is the container's IPv4 address as a full-length prefix;
	// the zero Prefix until the node leased one.
	Address netip.Prefix `json:"Address"`
	// Gateway is the gateway the container routes through, as a
	// full-length link-local prefix of Address's family (gatewayFor).
	Gateway netip.Prefix `json:"Gateway"`
	// Address6 is the container's IPv6 address (the lease's twin) as a
	// /128; the zero Prefix: IPv4 only. Its gateway is gatewayFor's.
	Address6 netip.Prefix `json:"Address6,omitzero"`
	// MTU of the container's interface; 0: the platform's default.
	MTU int `json:"MTU"`
	// HostPeer, when set, leaves the container end of the veth in the host
	// under this name for the runtime to move (Docker's driver).
	HostPeer string `json:"HostPeer"`
	// ContainerID is the runtime's container id of a container attached by
	// id (Windows, containers_hcn.go); "" elsewhere.
	ContainerID string `json:"ContainerID"`
}

// Plumbed is what the plumbing made for an attachment; the node records
// it beside the ContainerSpec (attachment.Attached, same json keys as
// before the node had its own type).
type Plumbed struct {
	// Bridge is the service's bridge (Linux) or the HCN network (Windows).
	Bridge string `json:"bridge"`
	// HostVeth is the host end of the container's veth (Linux); "" on
	// Windows.
	HostVeth string `json:"host_veth"`
	// NetnsID is the container's namespace as attached, for Alive; zero
	// when unknown (HostPeer, Windows).
	NetnsID NamespaceID `json:"netns_id"`
	// Endpoint is the container's HCN endpoint's name (Windows); "" on
	// Linux.
	Endpoint string `json:"endpoint,omitempty"`
	// Repairs lists, after Adopt, what it found wrong and fixed (one short
	// sentence each); empty after Attach. The node does not record it.
	Repairs []string `json:"repairs,omitempty"`
}

// NamespaceID identifies a network namespace (the device and inode of its
// nsfs file): it tells the attached namespace from a later one at the same
// path or behind a reused PID. The zero value means unknown.
type NamespaceID struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

// IsZero reports whether id is unknown.
func (id NamespaceID) IsZero() bool { return id == NamespaceID{} }

func (id NamespaceID) String() string { return fmt.Sprintf("netns:[%d:%d]", id.Dev, id.Ino) }

// ContainerInventory is the plumbing's objects on the host, a snapshot for
// garbage collection: what no attachment owns is removed (adoptAttachments).
type ContainerInventory struct {
	// Links are the host links (Linux veths) or endpoints (Windows) the
	// plumbing made, one per attached container; RemoveLink takes Name.
	Links []PlumbingLink
	// Routes are the plumbing's host routes, one per container address;
	// RemoveRoute takes Dst.
	Routes []PlumbingRoute
	// Bridges are the names of the plumbing's bridges; RemoveBridgeIfEmpty
	// takes them.
	Bridges []string
}

// PlumbingLink is one host link or endpoint of the plumbing's.
type PlumbingLink struct {
	// Name is the link's name: Plumbed.HostVeth or Plumbed.Endpoint of the
	// attachment owning it.
	Name string
	// Container is the container it was made for, "" when unknown.
	Container string
	// Stray is true for a link that is always debris (a temporary peer
	// left by a crash during an attach): it proves no container alive.
	Stray bool
}

// PlumbingRoute is one host route of the plumbing's: a container address
// routed to its bridge.
type PlumbingRoute struct {
	Dst    netip.Prefix // the container's address, full length
	Bridge string       // the link it goes out of; "" when unknown
}

package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"github.com/zlmesh/zlmesh/bridge"
	"github.com/zlmesh/zlmesh/winhcn"
)

// hcnContainers is the Windows container plumbing: Containers over one
// winhcn.Manager, so that attach, detach, adoption, the sweep and
// renumbering run the same node code as on Linux (endpoint.go, adopt.go,
// sweep.go, blocks.go). It is platform-neutral: on Windows it runs over
// winhcn.System() (containers_windows.go), in tests over winhcntest.Fake.
//
// How a ContainerSpec reads here (it is converted to a winhcn.Spec):
// Container names the attachment (the endpoint is
// winhcn.EndpointPrefix+Container, recorded as Plumbed.Endpoint);
// ContainerID is the runtime's container, which must exist (else
// winhcn.ErrNoContainer, wrapped with bridge.ErrNoNamespace so that
// adoption forgets it); Netns, PID, Ifname, MTU and HostPeer are not used
// (validateAttach refuses Netns and PID); Address and Gateway are the
// node's as on Linux (a /32 and the link-local gateway); Address6 stays
// zero (the node gives a container attached by id no IPv6 twin: IPv4 only
// on Windows for now).
//
// The node's HCN network spans the node's blocks: every attach and
// readdress first makes it cover blocks() (adding subnets only, so a block
// just claimed by allocate is there), and blocksChanged, called by the node
// after a block is released or moved, makes it exactly blocks() (falling
// back to adding only when HNS refuses to drop a subnet an endpoint still
// uses; the next change tries again).
type hcnContainers struct {
	m   *winhcn.Manager
	log *slog.Logger
	// blocks returns the node's blocks; nil until useBlocks.
	blocks func() []netip.Prefix
}

// blockFollower is Containers plumbing whose network must follow the
// node's blocks (hcnContainers). The node calls useBlocks once at start,
// before adoption, and blocksChanged after a block is released or moved.
type blockFollower interface {
	useBlocks(blocks func() []netip.Prefix)
	blocksChanged()
}

var (
	_ Containers    = (*hcnContainers)(nil)
	_ blockFollower = (*hcnContainers)(nil)
)

func newHCNContainers(m *winhcn.Manager, log *slog.Logger) *hcnContainers {
	return &hcnContainers{m: m, log: log}
}

// attachesByContainerID reports whether c finds containers by their
// runtime's id (api.AttachRequest.ContainerID) rather than by netns or pid.
func attachesByContainerID(c Containers) bool {
	_, ok := c.(*hcnContainers)
	return ok
}

// followBlocks hands the node's blocks to plumbing that follows them and
// makes its network match them (at start, before adoption).
func (n *Node) followBlocks() {
	f, ok := n.containers.(blockFollower)
	if !ok {
		return
	}
	f.useBlocks(n.blockPrefixes)
	f.blocksChanged()
}

// blocksChanged tells plumbing that follows the node's blocks that they
// changed (a block released or moved).
func (n *Node) blocksChanged() {
	if f, ok := n.containers.(blockFollower); ok {
		f.blocksChanged()
	}
}

// blockPrefixes are the node's blocks as the allocator holds them.
func (n *Node) blockPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, c := range n.alloc.Claims() {
		out = append(out, c.Block)
	}
	return out
}

func (h *hcnContainers) useBlocks(blocks func() []netip.Prefix) { h.blocks = blocks }

func (h *hcnContainers) blocksChanged() {
	if h.blocks == nil {
		return
	}
	want := h.blocks()
	if len(want) == 0 {
		return
	}
	err := h.m.EnsureNetwork(want)
	if err == nil || errors.Is(err, winhcn.ErrBadNetwork) || errors.Is(err, winhcn.ErrUnavailable) {
		if err != nil {
			h.log.Error("hcn network does not follow the node's blocks", "blocks", want, "err", err)
		}
		return
	}
	// HNS keeps a subnet an endpoint still uses (a renumbering that
	// failed): keep the old subnets beside the new ones.
	h.log.Warn("hcn network keeps subnets the node gave up; retried at the next block change", "blocks", want, "err", err)
	if err := h.m.EnsureNetwork(union(want, h.m.Subnets())); err != nil {
		h.log.Error("hcn network does not follow the node's blocks", "blocks", want, "err", err)
	}
}

// ensure makes the network cover the node's blocks, adding subnets only.
func (h *hcnContainers) ensure() error {
	var blocks []netip.Prefix
	if h.blocks != nil {
		blocks = h.blocks()
	}
	return h.m.EnsureNetwork(union(blocks, h.m.Subnets()))
}

func union(a, b []netip.Prefix) []netip.Prefix {
	out := slices.Concat(a, b)
	slices.SortFunc(out, func(x, y netip.Prefix) int {
		if c := x.Addr().Compare(y.Addr()); c != 0 {
			return c
		}
		return x.Bits() - y.Bits()
	})
	return slices.Compact(out)
}

// hcnError wraps a winhcn error so that the node's error handling (the
// API codes of attachError, adoption's "container gone") sees it.
func hcnError(err error) error {
	if errors.Is(err, winhcn.ErrNoContainer) {
		return fmt.Errorf("%w (%w)", err, bridge.ErrNoNamespace)
	}
	return err
}

func (h *hcnContainers) winSpec(s ContainerSpec, addr netip.Prefix) winhcn.Spec {
	return winhcn.Spec{Container: s.Container, ContainerID: s.ContainerID, Address: addr, Gateway: gatewayFor(addr.Addr()).Addr()}
}

func (h *hcnContainers) attached(a winhcn.Attached) Plumbed {
	return Plumbed{Bridge: h.m.NetworkName(), Endpoint: winhcn.EndpointPrefix + a.Container}
}

// Attach gives the container its endpoint at s.Address (see winhcn.Attach:
// nothing is left on error).
func (h *hcnContainers) Attach(ctx context.Context, s ContainerSpec) (Plumbed, error) {
	if s.ContainerID == "" || s.Netns != "" || s.PID != 0 || s.HostPeer != "" {
		return Plumbed{}, fmt.Errorf("attach %s: a Windows container is attached by its container id only: %w", s.Container, bridge.ErrInvalid)
	}
	if err := h.ensure(); err != nil {
		return Plumbed{}, err
	}
	a, err := h.m.Attach(ctx, h.winSpec(s, s.Address))
	if err != nil {
		return Plumbed{}, hcnError(err)
	}
	return h.attached(a), nil
}

// Detach deletes the container's endpoint and its namespace.
func (h *hcnContainers) Detach(_ context.Context, s ContainerSpec) error {
	return h.m.Detach(s.Container)
}

// Readdress gives the container a new endpoint at newAddr (HCN cannot
// change an endpoint's address), in the network grown to cover it.
// newAddr6 is always zero: the node gives HCN endpoints no IPv6 twin.
func (h *hcnContainers) Readdress(ctx context.Context, s ContainerSpec, newAddr, _ netip.Prefix) error {
	if err := h.ensure(); err != nil {
		return err
	}
	_, err := h.m.Attach(ctx, h.winSpec(s, newAddr))
	return hcnError(err)
}

// Alive reports whether the runtime still knows the container.
func (h *hcnContainers) Alive(s ContainerSpec, _ NamespaceID) (bool, error) {
	if s.ContainerID == "" {
		return false, nil
	}
	return h.m.ContainerAlive(s.ContainerID)
}

// Adopt takes over the container's endpoint after a restart: kept when it
// is as recorded, made again (and said so in Repairs) when it is missing
// or differs. A container that is gone is bridge.ErrNoNamespace.
func (h *hcnContainers) Adopt(ctx context.Context, s ContainerSpec) (Plumbed, error) {
	if err := h.ensure(); err != nil {
		return Plumbed{}, err
	}
	before, err := h.m.Inventory()
	if err != nil {
		return Plumbed{}, err
	}
	a, err := h.m.Attach(ctx, h.winSpec(s, s.Address))
	if err != nil {
		return Plumbed{}, hcnError(err)
	}
	made := h.attached(a)
	if !slices.ContainsFunc(before, func(b winhcn.Attached) bool { return b.EndpointID == a.EndpointID }) {
		made.Repairs = append(made.Repairs, fmt.Sprintf("hcn endpoint %s made again at %s", made.Endpoint, s.Address))
	}
	return made, nil
}

// Inventory lists the node's endpoints as links named by endpoint, so
// that adoption removes the ones no attachment owns (Plumbed.Endpoint).
// There are no bridges or routes of the node's own on Windows.
func (h *hcnContainers) Inventory() (ContainerInventory, error) {
	inv, err := h.m.Inventory()
	if err != nil {
		return ContainerInventory{}, err
	}
	var out ContainerInventory
	for _, a := range inv {
		out.Links = append(out.Links, PlumbingLink{Name: winhcn.EndpointPrefix + a.Container, Container: a.Container})
	}
	return out, nil
}

// RemoveLink removes an endpoint of the node's by its name, with its
// namespace.
func (h *hcnContainers) RemoveLink(name string) error {
	c, ok := strings.CutPrefix(name, winhcn.EndpointPrefix)
	if !ok {
		return fmt.Errorf("remove hcn endpoint %s: not one of zlmesh's", name)
	}
	return h.m.Detach(c)
}

func (h *hcnContainers) RemoveRoute(netip.Prefix) error           { return nil }
func (h *hcnContainers) RemoveBridgeIfEmpty(string) (bool, error) { return false, nil }
func (h *hcnContainers) Close() error                             { return nil }

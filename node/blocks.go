package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/bridge"
	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/mesh"
)

// The node's blocks over its life: the first is claimed at start (node.go);
// allocate claims another when every block is full (grow); routineSweep
// gives up a block that stayed empty for Config.BlockReleaseAfter
// (releaseEmptyBlocks); a block lost in a conflict is replaced and its
// containers renumbered (moveBlock, from RoutineClaims).

// hostPrefix is addr as a full-length prefix (a /32 route of its own).
func hostPrefix(addr netip.Addr) netip.Prefix { return netip.PrefixFrom(addr, addr.BitLen()) }

// hostPrefix6 is hostPrefix for an IPv6 twin, the zero Prefix for the zero
// Addr (IPv6 off).
func hostPrefix6(addr netip.Addr) netip.Prefix {
	if !addr.IsValid() {
		return netip.Prefix{}
	}
	return hostPrefix(addr)
}

// gatewayFor is the on-link gateway of a container holding addr: the same
// link-local address on every service bridge (bridge.GatewayFor).
func gatewayFor(addr netip.Addr) netip.Prefix { return bridge.GatewayFor(addr) }

// allocate leases an address for container, claiming a new block when the
// node's blocks are full. The caller holds renumberMu for reading.
func (n *Node) allocate(service, container string) (ipam.Lease, error) {
	l, err := n.alloc.Allocate(service, container)
	if !errors.Is(err, ipam.ErrFull) {
		return l, err
	}
	n.growMu.Lock()
	defer n.growMu.Unlock()
	// Another attach may have grown the node meanwhile, and attaches that
	// do not wait for growMu may take a new block's addresses before this
	// one does: try again after each block claimed.
	for range maxGrowTries {
		if l, err = n.alloc.Allocate(service, container); !errors.Is(err, ipam.ErrFull) {
			return l, err
		}
		if err := n.grow(); err != nil {
			return ipam.Lease{}, err
		}
	}
	return n.alloc.Allocate(service, container)
}

// maxGrowTries bounds the blocks one allocation claims.
const maxGrowTries = 8

// grow claims one more block and records it. The caller holds growMu and
// renumberMu for reading.
func (n *Node) grow() error {
	c, err := n.claimer.Grow()
	if err != nil {
		return fmt.Errorf("claim another block: %w", err)
	}
	if err := n.alloc.AddBlock(c); err != nil {
		n.claimer.Drop(c.Block)
		return fmt.Errorf("record block %s: %w", c.Block, err)
	}
	n.mu.Lock()
	n.claims = append(slices.Clone(n.claims), c)
	blocks := len(n.claims)
	n.mu.Unlock()
	n.metrics.setBlocksHeld(blocks)
	n.events.publish(api.Event{Type: api.EventBlock, Node: n.cfg.Name, NewBlock: c.Block.String(), Message: "claimed"})
	n.log.Info("block claimed", "block", c.Block, "blocks", blocks)
	return nil
}

// releaseEmptyBlocks gives up every block (never the first) that has held
// no lease for Config.BlockReleaseAfter.
func (n *Node) releaseEmptyBlocks(now time.Time) {
	empty := n.alloc.EmptyBlocks()
	n.mu.Lock()
	seen := map[netip.Prefix]bool{}
	var due []netip.Prefix
	for _, b := range empty {
		seen[b] = true
		since, ok := n.emptySince[b]
		if !ok {
			n.emptySince[b] = now
			continue
		}
		if now.Sub(since) >= n.cfg.BlockReleaseAfter {
			due = append(due, b)
		}
	}
	for b := range n.emptySince {
		if !seen[b] {
			delete(n.emptySince, b)
		}
	}
	n.mu.Unlock()
	if len(due) == 0 {
		return
	}
	// No attach runs while blocks go: one could otherwise lease an address
	// in a block being given up.
	n.renumberMu.Lock()
	defer n.renumberMu.Unlock()
	defer n.blocksChanged() // Windows: the HCN network gives them up too
	for _, b := range due {
		if err := n.alloc.RemoveBlock(b); err != nil {
			n.log.Debug("keep block", "block", b, "err", err) // taken meanwhile
			continue
		}
		if err := n.claimer.Drop(b); err != nil {
			n.log.Warn("release block", "block", b, "err", err)
		}
		n.mu.Lock()
		n.claims = slices.DeleteFunc(slices.Clone(n.claims), func(c ipam.Claim) bool { return c.Block == b })
		delete(n.emptySince, b)
		blocks := len(n.claims)
		n.mu.Unlock()
		n.metrics.setBlocksHeld(blocks)
		n.events.publish(api.Event{Type: api.EventBlock, Node: n.cfg.Name, OldBlock: b.String(), Message: "released"})
		n.log.Info("block released", "block", b, "empty_for", n.cfg.BlockReleaseAfter, "blocks", blocks)
	}
}

// moveBlock puts ch.New in the place of a block this node lost: the leases
// in it move to the same positions in the new block, the containers follow,
// and when it was the first block the node's overlay address moves too.
func (n *Node) moveBlock(ch mesh.ClaimChange) {
	n.renumberMu.Lock()
	defer n.renumberMu.Unlock()
	defer n.blocksChanged() // Windows: the HCN network drops the old block, once empty
	moves, err := n.alloc.MoveBlock(ch.Old.Block, ch.New)
	if errors.Is(err, ipam.ErrNotFound) {
		// Released while the conflict was being decided: the claimer's
		// replacement is not needed.
		n.log.Info("lost a block already released", "block", ch.Old.Block)
		if err := n.claimer.Drop(ch.New.Block); err != nil {
			n.log.Warn("give up the replacement block", "block", ch.New.Block, "err", err)
		}
		return
	}
	if err != nil {
		n.log.Error("move block", "block", ch.Old.Block, "to", ch.New.Block, "err", err)
		return
	}
	n.renumberContainers(moves)
	n.renumberGuests(moves)
	claims := n.alloc.Claims()
	if ch.First {
		if err := n.setClaimsLocked(claims); err != nil {
			n.log.Error("move the node's overlay address", "err", err)
		}
		return
	}
	n.mu.Lock()
	n.claims = claims
	n.mu.Unlock()
}

// unmovable says why the node cannot move an attachment to another address
// of its blocks, "" when it can:
//   - handed over as a runtime's fd (CNI) and not visible to the node: its
//     runtime sees it detached (CHECK fails) and attaches it again;
//   - Docker's (HostPeer): Docker moved the interface into a sandbox the
//     node was never given, and keeps the address in its own records (its
//     embedded DNS, docker inspect); the container stays without its
//     mesh interface until it is restarted (docker restart, or stop and
//     start), which makes a new endpoint with an address of this node's
//     blocks.
func unmovable(s ContainerSpec) string {
	switch {
	case s.HostPeer != "":
		return "Docker's interface cannot be readdressed: restart the container for a new address"
	case !reachable(s):
		return "namespace not reachable"
	}
	return ""
}

// renumberContainers moves every attachment in moves to its new address;
// each move is an event. Attachments that cannot be moved (unmovable) are
// detached, each with a detach event saying why. The caller holds
// renumberMu.
func (n *Node) renumberContainers(moves []ipam.Move) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, mv := range moves {
		at, ok := n.attach.get(mv.Old.Container)
		if !ok || mv.Old.Addr == mv.New.Addr {
			continue
		}
		addr, gw := hostPrefix(mv.New.Addr), gatewayFor(mv.New.Addr)
		var addr6 netip.Prefix
		if at.Spec.Address6.IsValid() {
			addr6 = hostPrefix6(n.twin(mv.New.Addr))
		}
		if why := unmovable(at.Spec); why != "" {
			// It cannot be moved, and must not keep an address the
			// winner of its block now gives out: detached.
			n.log.Warn("renumber: container cannot be moved to its new address; detaching it", "container", at.Spec.Container,
				"service", at.Spec.Service, "address", mv.Old.Addr, "lost_to_block", mv.New.Addr, "why", why)
			if err := n.unplug(ctx, at); err != nil {
				n.log.Error("detach unmovable container", "container", at.Spec.Container, "err", err)
				continue
			}
			n.mesh.Store().Delete(serviceKind, n.serviceKey(at.Spec.Container))
			n.unpublishContainer(at.Spec.Container)
			n.events.publish(api.Event{Type: api.EventDetach, Service: at.Spec.Service, Container: at.Spec.Container,
				Address: mv.Old.Addr.String(), Node: n.cfg.Name, Message: "renumbered, " + why})
			continue
		}
		if err := n.containers.Readdress(ctx, at.Spec, addr, addr6); err != nil {
			n.log.Error("renumber container", "container", at.Spec.Container, "from", mv.Old.Addr, "to", mv.New.Addr, "err", err)
			continue
		}
		at.Spec.Address, at.Spec.Gateway, at.Spec.Address6 = addr, gw, addr6
		if err := n.attach.put(at); err != nil {
			n.log.Error("record renumbered container", "container", at.Spec.Container, "err", err)
		}
		n.putServiceRecord(at)
		n.metrics.renumbered(1)
		n.events.publish(api.Event{Type: api.EventMove, Service: at.Spec.Service, Container: at.Spec.Container,
			OldAddress: mv.Old.Addr.String(), Address: mv.New.Addr.String(), Node: n.cfg.Name})
		n.log.Info("container moved", "container", at.Spec.Container, "from", mv.Old.Addr, "to", mv.New.Addr)
	}
}

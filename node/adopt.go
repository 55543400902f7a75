package node

import (
	"context"
	"errors"
	"net/netip"

	"github.com/zlmesh/zlmesh/bridge"
)

// adoptAttachments runs once at start: it takes over the attachments of the
// node's previous life that are still alive (repairing the host side, and
// moving a container to its lease's address if a renumbering was cut short),
// forgets the ones whose container is gone or whose lease is missing,
// releases leases with no attachment (a crash between allocation and
// record), and removes zlmesh links and container routes that belong to no
// attachment.
func (n *Node) adoptAttachments(ctx context.Context) {
	if n.containers == nil {
		return
	}
	kept := n.keepDockerBridges()
	n.followBlocks()        // Windows: the HCN network spans the node's blocks,
	defer n.blocksChanged() // and, once adopted containers moved, only them
	check := n.newAliveCheck()
	for _, at := range n.attach.list() {
		id := at.Spec.Container
		lease, leased := n.alloc.Lease(id)
		if !leased || lease.Service != at.Spec.Service {
			// Not reachable through Attach and Detach (a detach forgets
			// the attachment before it releases the lease), but an
			// attachment whose address is not leased must not stay: the
			// address could go to another container.
			n.log.Error("attachment without its lease; detaching", "container", id, "service", at.Spec.Service, "address", at.Spec.Address)
			n.forgetAttachment(ctx, at)
			continue
		}
		alive, err := check.alive(at)
		if err == nil && alive && !reachable(at.Spec) {
			n.log.Info("adopt: namespace reachable only through its veth; kept as it is", "container", id)
			continue
		}
		if err == nil && alive {
			spec := at.Spec
			addr, gw := hostPrefix(lease.Addr), gatewayFor(lease.Addr)
			var addr6 netip.Prefix // the IPv6 twin, unless IPv6 is off or the runtime addresses it
			// (a container attached by id, on Windows, is IPv4 only: containers_hcn.go)
			switch {
			case spec.HostPeer != "":
				// Docker gave the container its IPv6 address at
				// CreateEndpoint and keeps it: the node cannot change
				// it, so it keeps it while it is still the twin of the
				// lease (not with IPv6 switched off, nor after a change
				// of the cluster's IPv6 prefix).
				if t := hostPrefix6(n.twin(lease.Addr)); t.IsValid() && t == spec.Address6 {
					addr6 = t
				}
			case spec.ContainerID == "":
				addr6 = hostPrefix6(n.twin(lease.Addr))
			}
			if addr != spec.Address || gw != spec.Gateway {
				// Renumbered (the lease moved) but the container not yet,
				// or an attachment of the previous release (a slice
				// address and gateway): move it to its lease. The IPv6
				// address moves along when it had one and keeps one.
				from, new6 := spec, addr6
				if !addr6.IsValid() || !from.Address6.IsValid() {
					from.Address6, new6 = netip.Prefix{}, netip.Prefix{}
				}
				if err := n.containers.Readdress(ctx, from, addr, new6); err != nil {
					n.log.Warn("adopt: move container to its lease's address", "container", id, "from", spec.Address, "to", addr, "err", err)
				}
				spec.Address, spec.Gateway = addr, gw
			}
			// An attachment made before IPv6 (or with another cluster
			// IPv6 prefix) gets its twin from Adopt; with IPv6 switched
			// off its IPv6 host route goes as a stray one below.
			spec.Address6 = addr6
			made, aerr := n.containers.Adopt(ctx, spec)
			if aerr == nil {
				for _, r := range made.Repairs {
					n.log.Info("adopt: repaired", "container", id, "repair", r)
				}
				made.Repairs = nil
				if spec != at.Spec || !sameAttached(made, at.Attached) {
					at.Spec, at.Attached = spec, made
					if err := n.attach.put(at); err != nil {
						n.log.Error("adopt: record attachment", "container", id, "err", err)
					}
				}
				continue
			}
			if !errors.Is(aerr, bridge.ErrNoNamespace) {
				n.log.Error("adopt attachment; keeping it", "container", id, "err", aerr)
				continue
			}
		}
		n.log.Info("container gone while zlmesh was down; detaching", "container", id, "service", at.Spec.Service)
		n.forgetAttachment(ctx, at)
	}
	owned := map[string]bool{}
	services := kept // bridges to keep, empty or not
	routed := map[netip.Prefix]bool{}
	for _, at := range n.attach.list() {
		owned[at.Attached.HostVeth] = true
		if at.Attached.Endpoint != "" { // Windows: the HCN endpoint (containers_hcn.go)
			owned[at.Attached.Endpoint] = true
		}
		services[bridge.BridgeName(at.Spec.Service)] = true
		routed[at.Spec.Address] = true
		if at.Spec.Address6.IsValid() {
			routed[at.Spec.Address6] = true
		}
	}
	for _, l := range n.alloc.Leases() {
		if _, guest := guestOfLease(l.Container); guest {
			continue // restoreGuests' business
		}
		if _, ok := n.attach.get(l.Container); !ok {
			n.log.Info("releasing address with no attachment", "container", l.Container, "address", l.Addr)
			n.releaseLease(l.Container)
		}
	}
	inv, err := n.containers.Inventory()
	if err != nil {
		n.log.Warn("inventory of container links", "err", err)
		return
	}
	for _, v := range inv.Links {
		if !owned[v.Name] {
			n.log.Info("removing stray link", "link", v.Name, "container", v.Container)
			n.containers.RemoveLink(v.Name)
		}
	}
	for _, r := range inv.Routes {
		if !routed[r.Dst] {
			n.log.Info("removing stray container route", "route", r.Dst, "bridge", r.Bridge)
			if err := n.containers.RemoveRoute(r.Dst); err != nil {
				n.log.Warn("stray container route not removed", "route", r.Dst, "err", err)
			}
		}
	}
	for _, b := range inv.Bridges {
		if !services[b] {
			if ok, err := n.containers.RemoveBridgeIfEmpty(b); err != nil || !ok {
				n.log.Warn("stray bridge not removed", "bridge", b, "err", err)
			}
		}
	}
}

// unplug undoes an attachment: its plumbing, the attachment, its lease, in
// this order. A crash between two steps leaves a lease without an
// attachment at worst, which the next start releases (adoptAttachments),
// never an attachment whose address could be leased again. It stops at the
// first step that fails (the lease's release is only logged).
func (n *Node) unplug(ctx context.Context, at attachment) error {
	if err := n.containers.Detach(ctx, at.Spec); err != nil {
		return err
	}
	if err := n.attach.remove(at.Spec.Container); err != nil {
		return err
	}
	n.releaseLease(at.Spec.Container)
	return nil
}

// forgetAttachment is unplug at start, logging what fails.
func (n *Node) forgetAttachment(ctx context.Context, at attachment) {
	if err := n.unplug(ctx, at); err != nil {
		n.log.Error("forget attachment", "container", at.Spec.Container, "err", err)
	}
}

// sameAttached compares what two attachments made, repairs aside.
func sameAttached(a, b Plumbed) bool {
	return a.Bridge == b.Bridge && a.HostVeth == b.HostVeth && a.NetnsID == b.NetnsID
}

package node

import (
	"context"
	"net/netip"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/ipam"
)

// The endpoint pipeline: every way onto the mesh that takes an address from
// this node's blocks (a container on a service bridge, a guest as a
// WireGuard peer) runs the same steps, in this order, each undone when a
// later one fails:
//
//  1. validate the request (the caller);
//  2. claim the endpoint's name, so that no add or remove of it runs
//     meanwhile (the caller, through its store's busy set);
//  3. lease an address from the node's blocks, growing them when full
//     (allocate), with no block move under way (renumberMu);
//  4. plumb it: the plumbing step, behind the plumbing interface;
//  5. journal it in the state dir;
//  6. record it in the replicated store (every node's DNS);
//  7. observe the metric;
//  8. publish the event.
//
// addEndpoint runs steps 3 to 8.

// plumbing is the step of the endpoint pipeline that makes an endpoint
// reachable at its leased address: the bridge veth of a container
// (containerPlumbing), a WireGuard peer on this node's device for a guest
// (guestPlumbing).
type plumbing interface {
	// plumb makes the endpoint reachable at addr, a host address leased
	// from this node's blocks. On error it leaves nothing behind that unplumb
	// would have to remove, or says so by its error (the pipeline calls
	// unplumb only after a later step failed).
	plumb(ctx context.Context, addr netip.Addr) error
	// unplumb undoes plumb; an endpoint already gone is success. It may be
	// called with a context that is already past its request's deadline:
	// the pipeline gives it a fresh one.
	unplumb(ctx context.Context) error
}

// endpointSteps is one endpoint as the pipeline sees it. Every function
// field is required.
type endpointSteps struct {
	// service and lease key the address lease (ipam.Allocator.Allocate's
	// service and container).
	service, lease string
	// reserved, when not "", is the key of a lease made before the
	// endpoint had its name (Docker's IPAM): it is renamed to lease
	// instead of allocating one.
	reserved string
	plumbing plumbing
	// journal records the endpoint durably at addr; on error nothing is
	// recorded.
	journal func(addr netip.Addr) error
	// record puts the endpoint's records in the replicated store.
	record func(addr netip.Addr)
	// observe takes the time from start to the end of step 6.
	observe func(time.Duration)
	// event is the event to publish for the endpoint at addr.
	event func(addr netip.Addr) api.Event
	// fail maps an error of the lease or plumbing steps to the API error
	// returned.
	fail func(error) error
}

// addEndpoint runs the pipeline's steps 3 to 8 for s and returns the leased
// address. The caller has validated the request and holds the endpoint's
// busy claim. A failure at any step undoes the steps before it: no plumbing,
// record or lease is left behind.
func (n *Node) addEndpoint(ctx context.Context, start time.Time, s endpointSteps) (netip.Addr, error) {
	n.renumberMu.RLock() // no block may move under an add
	defer n.renumberMu.RUnlock()
	var lease ipam.Lease
	var err error
	if s.reserved != "" {
		lease, err = n.alloc.Rename(s.reserved, s.lease, s.service)
	} else {
		lease, err = n.allocate(s.service, s.lease)
	}
	if err != nil {
		return netip.Addr{}, s.fail(err)
	}
	addr := lease.Addr
	if err := s.plumbing.plumb(ctx, addr); err != nil {
		n.releaseLease(s.lease)
		return netip.Addr{}, s.fail(err)
	}
	if err := s.journal(addr); err != nil {
		n.undoEndpoint(s)
		return netip.Addr{}, err
	}
	s.record(addr)
	s.observe(time.Since(start))
	n.events.publish(s.event(addr))
	return addr, nil
}

// undoEndpoint removes the plumbing of a failed add and its lease.
func (n *Node) undoEndpoint(s endpointSteps) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.plumbing.unplumb(ctx); err != nil {
		n.log.Error("undo add", "endpoint", s.lease, "err", err)
	}
	n.releaseLease(s.lease)
}

package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/bridge"
	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/winhcn"
)

// Attach attaches a container's network namespace to a service: an address
// from the node's blocks (ipam; a new block is claimed when they are full), the plumbing (bridge), the state file, the
// service record, an event. A failure at any step undoes the steps before
// it: no link, address or lease is left behind.
func (n *Node) Attach(ctx context.Context, req api.AttachRequest) (api.Attachment, error) {
	return n.attachVia(ctx, req, attachHow{})
}

// attachHow is how an attach differs from the control API's: the way in
// (Docker's driver, docker.go) changes where the lease comes from and the
// plumbing's form, not the pipeline.
type attachHow struct {
	// reserved is the key of a lease made before the container was named
	// (Docker's IPAM asks for the address first): it is renamed to the
	// container's. "" allocates.
	reserved string
	// hostPeer leaves the container end of the veth in the host under this
	// name, for the runtime to move (ContainerSpec.HostPeer); the request
	// then names no namespace.
	hostPeer string
	// mtu overrides Config.MTU when not 0.
	mtu int
}

// attachVia is the attach pipeline (see Attach and endpoint.go).
func (n *Node) attachVia(ctx context.Context, req api.AttachRequest, how attachHow) (api.Attachment, error) {
	start := time.Now()
	if n.containers == nil {
		return api.Attachment{}, api.Errorf(api.CodeUnsupported, "container attach is not supported on this platform")
	}
	byID := attachesByContainerID(n.containers)
	if byID && req.Container == "" {
		req.Container = req.ContainerID // Windows: the name defaults to the id
	}
	if err := validateAttach(req, how.hostPeer != "", byID); err != nil {
		return api.Attachment{}, err
	}
	if err := validateOrigin(req.Origin); err != nil {
		return api.Attachment{}, err
	}
	if !n.attach.claim(req.Container) {
		return api.Attachment{}, api.Errorf(api.CodeAlreadyExists, "container %s: an attach or detach is under way", req.Container)
	}
	defer n.attach.release(req.Container)
	if at, ok := n.attach.get(req.Container); ok {
		return api.Attachment{}, api.Errorf(api.CodeAlreadyExists, "container %s is already attached to service %s", req.Container, at.Spec.Service)
	}

	spec := ContainerSpec{
		Service:   req.Service,
		Container: req.Container,
		Netns:     req.Netns,
		PID:       req.PID,
		Ifname:    req.Ifname,
		MTU:       n.cfg.MTU,
		HostPeer:  how.hostPeer,
		// Windows: the container is found by its runtime's id.
		ContainerID: req.ContainerID,
	}
	if how.mtu != 0 {
		spec.MTU = how.mtu
	}
	if spec.Ifname == "" {
		spec.Ifname = bridge.DefaultIfname
	}
	pl := &containerPlumbing{c: n.containers, spec: spec}
	if !byID {
		// A Windows container's HCN endpoint is IPv4 only
		// (containers_hcn.go); any other container gets the IPv6 twin
		// too. Docker's (hostPeer) gets it from the driver's
		// CreateEndpoint answer (dockerplugin), the host side here.
		pl.twin = n.twin
	}
	var at attachment
	_, err := n.addEndpoint(ctx, start, endpointSteps{
		service:  req.Service,
		lease:    req.Container,
		reserved: how.reserved,
		plumbing: pl,
		journal: func(netip.Addr) error {
			// A namespace handed over as the caller's fd is recorded by a
			// path the node can open again, when there is one (origin.go).
			spec := n.durableSpec(pl.spec, req.Origin, pl.made.NetnsID)
			at = attachment{Spec: spec, Attached: pl.made, CreatedAt: time.Now().UTC(), Origin: req.Origin}
			return n.attach.put(at)
		},
		record:  func(netip.Addr) { n.putServiceRecord(at) },
		observe: n.metrics.observeAttach,
		event: func(addr netip.Addr) api.Event {
			return api.Event{Type: api.EventAttach, Service: req.Service, Container: req.Container, Address: addr.String(), Node: n.cfg.Name}
		},
		fail: func(err error) error { return attachError(req, err) },
	})
	if err != nil {
		return api.Attachment{}, err
	}
	n.log.Info("attached", "container", at.Spec.Container, "service", at.Spec.Service, "address", at.Spec.Address, "address6", at.Spec.Address6, "bridge", at.Attached.Bridge, "took", time.Since(start).Round(time.Microsecond))
	return n.apiAttachment(at), nil
}

// containerPlumbing is a container's plumbing step: its veth on the
// service bridge (Containers.Attach). spec is the attach's, without an
// address until plumb; made is what Attach made.
type containerPlumbing struct {
	c    Containers
	spec ContainerSpec
	made Plumbed
	// twin gives the IPv6 address beside the leased one; nil: none.
	twin func(netip.Addr) netip.Addr
}

func (p *containerPlumbing) plumb(ctx context.Context, addr netip.Addr) error {
	p.spec.Address, p.spec.Gateway = hostPrefix(addr), gatewayFor(addr)
	if p.twin != nil {
		p.spec.Address6 = hostPrefix6(p.twin(addr))
	}
	made, err := p.c.Attach(ctx, p.spec)
	p.made = made
	return err
}

func (p *containerPlumbing) unplumb(ctx context.Context) error { return p.c.Detach(ctx, p.spec) }

func (n *Node) releaseLease(container string) {
	if _, _, err := n.alloc.Release(container); err != nil {
		n.log.Error("release address", "container", container, "err", err)
	}
}

// Detach detaches a container; a container that is not attached is success.
// reason is logged and put in the event ("" for a request).
func (n *Node) Detach(ctx context.Context, container, reason string) error {
	if err := bridge.ValidateContainer(container); err != nil {
		return api.Errorf(api.CodeBadRequest, "%v", err)
	}
	if !n.attach.claim(container) {
		return api.Errorf(api.CodeAlreadyExists, "container %s: an attach or detach is under way", container)
	}
	defer n.attach.release(container)
	at, ok := n.attach.get(container)
	if !ok {
		return nil
	}
	if err := n.unplug(ctx, at); err != nil {
		return fmt.Errorf("detach %s: %w", container, err)
	}
	n.mesh.Store().Delete(serviceKind, n.serviceKey(container))
	n.unpublishContainer(container)
	n.events.publish(api.Event{Type: api.EventDetach, Service: at.Spec.Service, Container: container, Address: at.Spec.Address.Addr().String(), Node: n.cfg.Name, Message: reason})
	n.log.Info("detached", "container", container, "service", at.Spec.Service, "reason", reason)
	return nil
}

// validateAttach checks req's names and how it says where the container
// is: netns or pid on Linux, container_id where the plumbing attaches by
// the runtime's container id (byID: Windows, containers_hcn.go).
func validateAttach(req api.AttachRequest, hostPeer, byID bool) error {
	if err := bridge.ValidateService(req.Service); err != nil {
		return api.Errorf(api.CodeBadRequest, "%v", err)
	}
	if err := bridge.ValidateContainer(req.Container); err != nil {
		return api.Errorf(api.CodeBadRequest, "%v", err)
	}
	if byID {
		return validateAttachByID(req)
	}
	switch {
	case req.ContainerID != "":
		return api.Errorf(api.CodeUnsupported, "container_id (a Windows container) is not supported on this platform: give the container's network namespace as netns or pid")
	case hostPeer && (req.Netns != "" || req.PID != 0):
		return api.Errorf(api.CodeBadRequest, "a container whose runtime moves its interface names no namespace")
	case hostPeer:
		return nil
	case req.Netns == "" && req.PID == 0:
		return api.Errorf(api.CodeBadRequest, "give the container's network namespace: netns (a path) or pid")
	case req.Netns != "" && req.PID != 0:
		return api.Errorf(api.CodeBadRequest, "give netns or pid, not both")
	case req.PID < 0:
		return api.Errorf(api.CodeBadRequest, "pid %d is not a process id", req.PID)
	case req.PID == 1:
		return api.Errorf(api.CodeBadRequest, "pid 1 is the init process: its network namespace is the host's, never a container's")
	}
	return nil
}

// attachError maps plumbing and allocation errors to API errors.
func attachError(req api.AttachRequest, err error) error {
	code := api.CodeInternal
	switch {
	case errors.Is(err, winhcn.ErrNoContainer):
		code = api.CodeNotFound
	case errors.Is(err, winhcn.ErrUnavailable), errors.Is(err, winhcn.ErrUnsupported):
		code = api.CodeUnsupported
	case errors.Is(err, bridge.ErrNoNamespace):
		code = api.CodeNoNamespace
	case errors.Is(err, bridge.ErrIfnameTaken):
		code = api.CodeIfnameTaken
	case errors.Is(err, bridge.ErrInvalid):
		code = api.CodeBadRequest
	case errors.Is(err, bridge.ErrExists), errors.Is(err, ipam.ErrExists):
		code = api.CodeAlreadyExists
	case errors.Is(err, bridge.ErrUnsupported):
		code = api.CodeUnsupported
	case errors.Is(err, ipam.ErrExhausted), errors.Is(err, ipam.ErrFull):
		code = api.CodeExhausted
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code = api.CodeNotReady
	}
	return api.Errorf(code, "attach %s to %s: %v", req.Container, req.Service, err)
}

func (n *Node) apiAttachment(at attachment) api.Attachment {
	a := api.Attachment{
		Service:      at.Spec.Service,
		Container:    at.Spec.Container,
		Netns:        at.Spec.Netns,
		PID:          at.Spec.PID,
		Ifname:       at.Spec.Ifname,
		Address:      at.Spec.Address.Addr().String(),
		Prefix:       at.Spec.Address.Bits(),
		Gateway:      at.Spec.Gateway.Addr().String(),
		MTU:          at.Spec.MTU,
		DNS:          n.pool.MeshDNS().String(),
		DNS6:         addrString(n.twin(n.pool.MeshDNS())),
		SearchDomain: n.searchDomain(),
		Bridge:       at.Attached.Bridge,
		HostVeth:     at.Attached.HostVeth,
		Node:         n.cfg.Name,
		CreatedAt:    at.CreatedAt,
		Origin:       at.Origin,
		ContainerID:  at.Spec.ContainerID,
		Endpoint:     at.Attached.Endpoint,
	}
	if at.Spec.Address6.IsValid() {
		a.Address6 = at.Spec.Address6.Addr().String()
		a.Gateway6 = gatewayFor(at.Spec.Address6.Addr()).Addr().String()
	} else {
		a.DNS6 = "" // a container without IPv6 cannot reach it
	}
	return a
}

// addrString is a.String(), "" for the zero Addr.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// Attachments lists this node's attachments.
func (n *Node) Attachments() []api.Attachment {
	out := []api.Attachment{}
	for _, at := range n.attach.list() {
		out = append(out, n.apiAttachment(at))
	}
	return out
}

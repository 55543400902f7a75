package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/bridge"
	"github.com/zlmesh/zlmesh/internal/journal"
	"github.com/zlmesh/zlmesh/internal/statefile"
	"github.com/zlmesh/zlmesh/ipam"
)

// Containers is the container plumbing the node drives: package bridge's
// Manager on Linux. See bridge.Manager for each method's contract.
type Containers interface {
	Attach(ctx context.Context, s bridge.Spec) (bridge.Attached, error)
	Detach(ctx context.Context, s bridge.Spec) error
	Readdress(ctx context.Context, s bridge.Spec, newAddr, newGateway netip.Prefix) error
	Alive(s bridge.Spec, id bridge.NetnsID) (bool, error)
	Adopt(ctx context.Context, s bridge.Spec) (bridge.Attached, error)
	Inventory() (bridge.Inventory, error)
	RemoveLink(name string) error
	RemoveBridgeIfEmpty(name string) (bool, error)
	Close() error
}

// attachFile is the node's record of its attachments, in the state dir:
// a snapshot beside a journal of changes (attachFile+".log", see
// internal/journal), so that recording an attach or a detach is one
// appended, synced record whatever the number of containers. The kernel
// objects outlive the process; this file is how a restarted node knows which
// of them are its own.
const attachFile = "attachments.json"

// serviceKind is the record-store kind of service endpoints; the key is
// "<node>/<container>" and the value an api.ServiceEndpoint.
const serviceKind = "svc"

// sweepEvery is how often attachments are checked for vanished namespaces
// and this node's service records for drift.
const sweepEvery = 2 * time.Second

// attachment is one attached container as the state file keeps it.
type attachment struct {
	Spec      bridge.Spec     `json:"spec"`
	Attached  bridge.Attached `json:"attached"`
	CreatedAt time.Time       `json:"created_at"`
}

// attachState is the snapshot's content.
type attachState struct {
	Attachments map[string]attachment `json:"attachments"`
}

// attachRecord is one journal record: an attachment recorded or changed
// (Put), or a container's attachment forgotten (Del).
type attachRecord struct {
	Put *attachment `json:"put,omitempty"`
	Del string      `json:"del,omitempty"`
}

// attachments is the node's set of attached containers. Attach and detach of
// one container exclude each other through busy; different containers run
// their plumbing in parallel, and only the bookkeeping takes mu (held while
// a change is synced to disk, so the journal's order is memory's order).
type attachments struct {
	path string

	mu   sync.Mutex
	log  *journal.Log
	byID map[string]attachment
	busy map[string]bool // containers with an attach or detach under way
}

func loadAttachments(stateDir string) (*attachments, error) {
	a := &attachments{path: filepath.Join(stateDir, attachFile), busy: map[string]bool{}}
	st := attachState{Attachments: map[string]attachment{}}
	log, err := openJournaled(a.path, "attachments", &st, func(raw []byte) error {
		var r attachRecord
		if err := statefile.Decode(a.path+".log", raw, &r); err != nil {
			return err
		}
		if st.Attachments == nil { // a snapshot saying null
			st.Attachments = map[string]attachment{}
		}
		switch {
		case (r.Put == nil) == (r.Del == ""):
			return errors.New("want exactly one of put and del")
		case r.Put != nil && r.Put.Spec.Container == "":
			return errors.New("attachment without a container id")
		case r.Put != nil:
			st.Attachments[r.Put.Spec.Container] = *r.Put
		default:
			delete(st.Attachments, r.Del)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	a.byID, a.log = st.Attachments, log
	if a.byID == nil { // a snapshot saying null, and no record
		a.byID = map[string]attachment{}
	}
	return a, nil
}

// close closes the journal; the files stay.
func (a *attachments) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.log.Close()
}

// recordLocked appends r to the journal (see appendJournaled); the caller
// holds mu and has already changed byID.
func (a *attachments) recordLocked(r attachRecord) error {
	return appendJournaled(a.log, r, len(a.byID), func() any { return attachState{Attachments: a.byID} })
}

// claim marks container busy; false when an attach or detach of it is
// already under way.
func (a *attachments) claim(container string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.busy[container] {
		return false
	}
	a.busy[container] = true
	return true
}

func (a *attachments) release(container string) {
	a.mu.Lock()
	delete(a.busy, container)
	a.mu.Unlock()
}

func (a *attachments) get(container string) (attachment, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	at, ok := a.byID[container]
	return at, ok
}

// put records at durably; on error memory is unchanged.
func (a *attachments) put(at attachment) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	id := at.Spec.Container
	old, had := a.byID[id]
	a.byID[id] = at
	if err := a.recordLocked(attachRecord{Put: &at}); err != nil {
		if had {
			a.byID[id] = old
		} else {
			delete(a.byID, id)
		}
		return fmt.Errorf("record attachment of %s: %w", id, err)
	}
	return nil
}

// remove forgets container durably; on error memory is unchanged.
func (a *attachments) remove(container string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	old, had := a.byID[container]
	if !had {
		return nil
	}
	delete(a.byID, container)
	if err := a.recordLocked(attachRecord{Del: container}); err != nil {
		a.byID[container] = old
		return fmt.Errorf("forget attachment of %s: %w", container, err)
	}
	return nil
}

func (a *attachments) list() []attachment {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]attachment, 0, len(a.byID))
	for _, at := range a.byID {
		out = append(out, at)
	}
	slices.SortFunc(out, func(x, y attachment) int { return strings.Compare(x.Spec.Container, y.Spec.Container) })
	return out
}

func (a *attachments) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.byID)
}

// Attach attaches a container's network namespace to a service: an address
// from the node's subnet (ipam), the plumbing (bridge), the state file, the
// service record, an event. A failure at any step undoes the steps before
// it: no link, address or lease is left behind.
func (n *Node) Attach(ctx context.Context, req api.AttachRequest) (api.Attachment, error) {
	start := time.Now()
	if n.containers == nil {
		return api.Attachment{}, api.Errorf(api.CodeUnsupported, "container attach is not supported on this platform")
	}
	if err := validateAttach(req); err != nil {
		return api.Attachment{}, err
	}
	if !n.attach.claim(req.Container) {
		return api.Attachment{}, api.Errorf(api.CodeAlreadyExists, "container %s: an attach or detach is under way", req.Container)
	}
	defer n.attach.release(req.Container)
	if at, ok := n.attach.get(req.Container); ok {
		return api.Attachment{}, api.Errorf(api.CodeAlreadyExists, "container %s is already attached to service %s", req.Container, at.Spec.Service)
	}

	n.renumberMu.RLock() // the subnet must not move under an attach
	defer n.renumberMu.RUnlock()
	lease, err := n.alloc.Allocate(req.Service, req.Container)
	if err != nil {
		return api.Attachment{}, attachError(req, err)
	}
	spec := bridge.Spec{
		Service:   req.Service,
		Container: req.Container,
		Netns:     req.Netns,
		PID:       req.PID,
		Ifname:    req.Ifname,
		Address:   lease.Addr,
		Gateway:   lease.Gateway,
		MTU:       n.cfg.MTU,
	}
	if spec.Ifname == "" {
		spec.Ifname = bridge.DefaultIfname
	}
	made, err := n.containers.Attach(ctx, spec)
	if err != nil {
		n.releaseLease(req.Container)
		return api.Attachment{}, attachError(req, err)
	}
	at := attachment{Spec: spec, Attached: made, CreatedAt: time.Now().UTC()}
	if err := n.attach.put(at); err != nil {
		n.undoAttach(spec)
		return api.Attachment{}, err
	}
	n.putServiceRecord(at)
	n.metrics.observeAttach(time.Since(start))
	out := n.apiAttachment(at)
	n.events.publish(api.Event{Type: api.EventAttach, Service: spec.Service, Container: spec.Container, Address: spec.Address.Addr().String(), Node: n.cfg.Name})
	n.log.Info("attached", "container", spec.Container, "service", spec.Service, "address", spec.Address, "bridge", made.Bridge, "took", time.Since(start).Round(time.Microsecond))
	return out, nil
}

// undoAttach removes the plumbing of a failed attach and its lease.
func (n *Node) undoAttach(spec bridge.Spec) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.containers.Detach(ctx, spec); err != nil {
		n.log.Error("undo attach", "container", spec.Container, "err", err)
	}
	n.releaseLease(spec.Container)
}

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

func validateAttach(req api.AttachRequest) error {
	if err := bridge.ValidateService(req.Service); err != nil {
		return api.Errorf(api.CodeBadRequest, "%v", err)
	}
	if err := bridge.ValidateContainer(req.Container); err != nil {
		return api.Errorf(api.CodeBadRequest, "%v", err)
	}
	switch {
	case req.Netns == "" && req.PID == 0:
		return api.Errorf(api.CodeBadRequest, "give the container's network namespace: netns (a path) or pid")
	case req.Netns != "" && req.PID != 0:
		return api.Errorf(api.CodeBadRequest, "give netns or pid, not both")
	case req.PID < 0:
		return api.Errorf(api.CodeBadRequest, "pid %d is not a process id", req.PID)
	}
	return nil
}

// attachError maps plumbing and allocation errors to API errors.
func attachError(req api.AttachRequest, err error) error {
	code := api.CodeInternal
	switch {
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
	case errors.Is(err, ipam.ErrExhausted):
		code = api.CodeExhausted
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code = api.CodeNotReady
	}
	return api.Errorf(code, "attach %s to %s: %v", req.Container, req.Service, err)
}

func (n *Node) serviceKey(container string) string { return n.cfg.Name + "/" + container }

func (n *Node) putServiceRecord(at attachment) {
	v, _ := json.Marshal(api.ServiceEndpoint{
		Service:   at.Spec.Service,
		Container: at.Spec.Container,
		Address:   at.Spec.Address.Addr().String(),
		Node:      n.cfg.Name,
	})
	n.mesh.Store().Put(serviceKind, n.serviceKey(at.Spec.Container), v)
}

func (n *Node) apiAttachment(at attachment) api.Attachment {
	return api.Attachment{
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
		SearchDomain: n.searchDomain(),
		Bridge:       at.Attached.Bridge,
		HostVeth:     at.Attached.HostVeth,
		Node:         n.cfg.Name,
		CreatedAt:    at.CreatedAt,
	}
}

// Attachments lists this node's attachments.
func (n *Node) Attachments() []api.Attachment {
	out := []api.Attachment{}
	for _, at := range n.attach.list() {
		out = append(out, n.apiAttachment(at))
	}
	return out
}

// Services lists every service endpoint in the cluster whose node is alive.
func (n *Node) Services() []api.ServiceEndpoint {
	out := append([]api.ServiceEndpoint{}, records[api.ServiceEndpoint](n, serviceKind, n.mesh.Alive)...)
	slices.SortFunc(out, func(a, b api.ServiceEndpoint) int {
		if c := strings.Compare(a.Service, b.Service); c != 0 {
			return c
		}
		return strings.Compare(a.Container, b.Container)
	})
	return out
}

// routineSweep detaches containers whose namespace is gone, and keeps this
// node's service records equal to its attachments (records written by an
// earlier life of this node come back through anti-entropy after a restart).
func (n *Node) routineSweep() {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.sweepOnce()
		n.reconcilePorts()
	}
}

func (n *Node) sweepOnce() {
	for _, at := range n.attach.list() {
		alive, err := n.containers.Alive(at.Spec, at.Attached.NetnsID)
		if err != nil {
			n.log.Warn("check container namespace", "container", at.Spec.Container, "err", err)
			continue
		}
		if !alive {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := n.Detach(ctx, at.Spec.Container, "namespace gone"); err != nil {
				n.log.Warn("sweep", "container", at.Spec.Container, "err", err)
			}
			cancel()
		}
	}
	n.syncServiceRecords()
}

// syncServiceRecords deletes this node's service records without an
// attachment and writes missing or stale ones.
func (n *Node) syncServiceRecords() {
	want := map[string]attachment{}
	for _, at := range n.attach.list() {
		want[n.serviceKey(at.Spec.Container)] = at
	}
	st := n.mesh.Store()
	for _, r := range st.List(serviceKind) {
		if r.Owner != n.cfg.Name && !strings.HasPrefix(r.Key, n.cfg.Name+"/") {
			continue
		}
		at, ok := want[r.Key]
		if !ok {
			st.Delete(serviceKind, r.Key)
			continue
		}
		var ep api.ServiceEndpoint
		if json.Unmarshal(r.Value, &ep) == nil && ep.Address == at.Spec.Address.Addr().String() && ep.Service == at.Spec.Service && r.Owner == n.cfg.Name {
			delete(want, r.Key)
		}
	}
	for _, at := range want {
		n.putServiceRecord(at)
	}
}

// adoptAttachments runs once at start: it takes over the attachments of the
// node's previous life that are still alive (repairing the host side, and
// moving a container to its lease's address if a renumbering was cut short),
// forgets the ones whose container is gone or whose lease is missing,
// releases leases with no attachment (a crash between allocation and
// record), and removes zlmesh links that belong to no attachment.
func (n *Node) adoptAttachments(ctx context.Context) {
	if n.containers == nil {
		return
	}
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
		alive, err := n.containers.Alive(at.Spec, at.Attached.NetnsID)
		if err == nil && alive {
			spec := at.Spec
			if lease.Addr != spec.Address || lease.Gateway != spec.Gateway {
				// Renumbered (the lease moved) but the container not yet.
				if err := n.containers.Readdress(ctx, spec, lease.Addr, lease.Gateway); err != nil {
					n.log.Warn("adopt: move container to its lease's address", "container", id, "from", spec.Address, "to", lease.Addr, "err", err)
				}
				spec.Address, spec.Gateway = lease.Addr, lease.Gateway
			}
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
	services := map[string]bool{}
	for _, at := range n.attach.list() {
		owned[at.Attached.HostVeth] = true
		services[bridge.BridgeName(at.Spec.Service)] = true
	}
	for _, l := range n.alloc.Leases() {
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
	for _, v := range inv.Veths {
		if !owned[v.Name] {
			n.log.Info("removing stray link", "link", v.Name, "container", v.Container)
			n.containers.RemoveLink(v.Name)
		}
	}
	for _, b := range inv.Bridges {
		if !services[b.Name] {
			if ok, err := n.containers.RemoveBridgeIfEmpty(b.Name); err != nil || !ok {
				n.log.Warn("stray bridge not removed", "bridge", b.Name, "err", err)
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
func sameAttached(a, b bridge.Attached) bool {
	return a.Bridge == b.Bridge && a.HostVeth == b.HostVeth && a.NetnsID == b.NetnsID
}

// renumberContainers moves every attachment to its new address after the
// node changed subnet; each move is an event.
func (n *Node) renumberContainers(moves []ipam.Move) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, mv := range moves {
		at, ok := n.attach.get(mv.Old.Container)
		if !ok || mv.Old.Addr == mv.New.Addr {
			continue
		}
		if err := n.containers.Readdress(ctx, at.Spec, mv.New.Addr, mv.New.Gateway); err != nil {
			n.log.Error("renumber container", "container", at.Spec.Container, "from", mv.Old.Addr, "to", mv.New.Addr, "err", err)
			continue
		}
		at.Spec.Address, at.Spec.Gateway = mv.New.Addr, mv.New.Gateway
		if err := n.attach.put(at); err != nil {
			n.log.Error("record renumbered container", "container", at.Spec.Container, "err", err)
		}
		n.putServiceRecord(at)
		n.metrics.renumbered(1)
		n.events.publish(api.Event{Type: api.EventMove, Service: at.Spec.Service, Container: at.Spec.Container,
			OldAddress: mv.Old.Addr.Addr().String(), Address: mv.New.Addr.Addr().String(), Node: n.cfg.Name})
		n.log.Info("container moved", "container", at.Spec.Container, "from", mv.Old.Addr, "to", mv.New.Addr)
	}
}

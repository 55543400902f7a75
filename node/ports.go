package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
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
	"github.com/zlmesh/zlmesh/natd"
)

// portsFile keeps the ports this node publishes, so they survive a restart
// of the whole cluster (the replicated store alone would lose them). It is a
// snapshot plus a journal of changes (internal/journal, like the
// attachments): a publish costs one synced append, not a rewrite of every
// port.
const portsFile = "ports.json"

// portKind is the record-store kind of published ports; the key is
// "<node>/<proto>/<host address or *>/<host port>", the value an
// api.PortMapping.
const portKind = "port"

// portGrace is how long a port's container may be missing from the cluster's
// service records before the port is removed with it (a container detached
// on another node); a container detached here takes its ports at once. It
// covers a container that is re-attached under the same id (restarted with
// a new namespace, or moved to another node); while missing, the port
// forwards nothing. The clock only runs while this node's record store is
// synced with the cluster (see recordsSynced): a node restarted without a
// peer to sync with cannot tell a vanished container from one it has not
// heard of yet, and keeps its ports.
const portGrace = 30 * time.Second

// NAT is the kernel NAT the node drives: natd's Table.
type NAT = natd.Table

// ports is this node's published ports. mu serializes every change and the
// NAT convergence, so the kernel table is always set from a consistent view.
type ports struct {
	path string

	mu           sync.Mutex
	log          *journal.Log
	byKey        map[string]api.PortMapping
	missingSince map[string]time.Time
	lastErr      string
	// purged is set when the NAT table was purged for `zlmesh down
	// --purge`: from then on nothing may make it again (the sweep would,
	// while the node is still leaving).
	purged bool
}

// errLeaving refuses changes to published ports once the node purged its
// NAT table to leave.
var errLeaving = api.Errorf(api.CodeNotReady, "the node is leaving: its NAT table was purged")

// purgeNAT deletes the NAT table for good and forgets this node's published
// ports (state file and records), so the next start does not bring them
// back: no later reconcile, publish or unpublish of this node's life makes
// the table again. Leave calls it for `zlmesh down --purge`.
func (n *Node) purgeNAT() error {
	if n.nat == nil {
		return nil
	}
	p := n.ports
	p.mu.Lock()
	defer p.mu.Unlock()
	p.purged = true
	for key := range p.byKey {
		n.mesh.Store().Delete(portKind, key)
	}
	clear(p.byKey)
	clear(p.missingSince)
	if err := p.snapshotLocked(); err != nil {
		return fmt.Errorf("forget published ports: %w", err)
	}
	if err := n.nat.Purge(); err != nil {
		return err
	}
	n.metrics.natApplied(nil)
	return nil
}

type portsState struct {
	Ports map[string]api.PortMapping `json:"ports"`
}

// portRecord is one journal record: a port published or its target changed
// (Put under Key), or a port removed (Del).
type portRecord struct {
	Key string           `json:"key"`
	Put *api.PortMapping `json:"put,omitempty"`
	Del bool             `json:"del,omitempty"`
}

func loadPorts(stateDir string) (*ports, error) {
	p := &ports{path: filepath.Join(stateDir, portsFile), missingSince: map[string]time.Time{}}
	st := portsState{Ports: map[string]api.PortMapping{}}
	log, err := openJournaled(p.path, "published ports", &st, func(raw []byte) error {
		var r portRecord
		if err := statefile.Decode(p.path+".log", raw, &r); err != nil {
			return err
		}
		if st.Ports == nil { // a snapshot saying null
			st.Ports = map[string]api.PortMapping{}
		}
		switch {
		case r.Key == "" || (r.Put == nil) == !r.Del:
			return errors.New("want a key and exactly one of put and del")
		case r.Put != nil:
			st.Ports[r.Key] = *r.Put
		default:
			delete(st.Ports, r.Key)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	p.byKey, p.log = st.Ports, log
	if p.byKey == nil { // a snapshot saying null, and no record
		p.byKey = map[string]api.PortMapping{}
	}
	return p, nil
}

// close closes the journal; the files stay.
func (p *ports) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log.Close()
}

// recordLocked appends r to the journal (see appendJournaled); the caller
// holds mu and has already changed byKey.
func (p *ports) recordLocked(r portRecord) error {
	if err := appendJournaled(p.log, r, len(p.byKey), func() any { return portsState{Ports: p.byKey} }); err != nil {
		return fmt.Errorf("record published ports: %w", err)
	}
	return nil
}

// snapshotLocked writes byKey as the new snapshot with an empty journal.
func (p *ports) snapshotLocked() error {
	return rewriteJournaled(p.log, portsState{Ports: p.byKey})
}

func portKey(node, proto, hostAddr string, hostPort int) string {
	if hostAddr == "" {
		hostAddr = "*"
	}
	return fmt.Sprintf("%s/%s/%s/%d", node, proto, hostAddr, hostPort)
}

// Publish publishes a port on this node: connections to the host's address
// (or req.HostAddress) on req.HostPort reach req.ContainerPort of the
// container (anywhere in the cluster), or of one container of the service.
func (n *Node) Publish(req api.PublishRequest) (api.PortMapping, error) {
	if n.nat == nil {
		return api.PortMapping{}, api.Errorf(api.CodeUnsupported, "published ports need kernel NAT, not available on this platform")
	}
	pm, err := n.validatePublish(req)
	if err != nil {
		return api.PortMapping{}, err
	}
	p := n.ports
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.purged {
		return api.PortMapping{}, errLeaving
	}
	key := portKey(n.cfg.Name, pm.Protocol, pm.HostAddress, pm.HostPort)
	for _, other := range p.byKey {
		if other.Protocol == pm.Protocol && other.HostPort == pm.HostPort &&
			(other.HostAddress == "" || pm.HostAddress == "" || other.HostAddress == pm.HostAddress) {
			return api.PortMapping{}, api.Errorf(api.CodeAlreadyExists, "host port %d/%s is already published on %s (to %s)", pm.HostPort, pm.Protocol, orAll(other.HostAddress), other.TargetName())
		}
	}
	target, target6, ok := portTarget(pm, n.targets(), true)
	if !ok {
		what := "container " + pm.Container
		if pm.Service != "" {
			what = "service " + pm.Service
		}
		return api.PortMapping{}, api.Errorf(api.CodeNotFound, "no %s in the cluster", what)
	}
	pm.Target = target.String()
	if target6.IsValid() {
		pm.Target6 = target6.String()
	}
	p.byKey[key] = pm
	if err := n.applyNATLocked(); err != nil {
		delete(p.byKey, key)
		n.applyNATLocked()
		return api.PortMapping{}, fmt.Errorf("publish %d/%s: %w", pm.HostPort, pm.Protocol, err)
	}
	if err := p.recordLocked(portRecord{Key: key, Put: &pm}); err != nil {
		delete(p.byKey, key)
		n.applyNATLocked()
		return api.PortMapping{}, err
	}
	n.putPortRecord(key, pm)
	n.events.publish(api.Event{Type: api.EventPublish, Node: n.cfg.Name, Container: pm.Container, Service: pm.Service, Port: &pm})
	n.log.Info("published", "port", pm.HostPort, "proto", pm.Protocol, "host_address", orAll(pm.HostAddress), "target", pm.Target, "container", pm.Container, "service", pm.Service)
	return pm, nil
}

func orAll(addr string) string {
	if addr == "" {
		return "all addresses"
	}
	return addr
}

func (n *Node) validatePublish(req api.PublishRequest) (api.PortMapping, error) {
	pm := api.PortMapping{
		Node:          n.cfg.Name,
		Container:     req.Container,
		Service:       req.Service,
		Protocol:      strings.ToLower(req.Protocol),
		HostAddress:   req.HostAddress,
		HostPort:      req.HostPort,
		ContainerPort: req.ContainerPort,
	}
	switch {
	case pm.Container == "" && pm.Service == "":
		return pm, api.Errorf(api.CodeBadRequest, "give a container or a service to publish")
	case pm.Container != "" && pm.Service != "":
		return pm, api.Errorf(api.CodeBadRequest, "give a container or a service, not both")
	case pm.Protocol != "tcp" && pm.Protocol != "udp":
		return pm, api.Errorf(api.CodeBadRequest, "protocol %q: want tcp or udp", req.Protocol)
	case pm.HostPort < 1 || pm.HostPort > 65535:
		return pm, api.Errorf(api.CodeBadRequest, "host port %d: want 1-65535", pm.HostPort)
	case pm.ContainerPort < 1 || pm.ContainerPort > 65535:
		return pm, api.Errorf(api.CodeBadRequest, "container port %d: want 1-65535", pm.ContainerPort)
	}
	if pm.Container != "" {
		if err := bridge.ValidateContainer(pm.Container); err != nil {
			return pm, api.Errorf(api.CodeBadRequest, "%v", err)
		}
	} else if err := bridge.ValidateService(pm.Service); err != nil {
		return pm, api.Errorf(api.CodeBadRequest, "%v", err)
	}
	if pm.HostAddress != "" {
		a, err := netip.ParseAddr(pm.HostAddress)
		switch {
		case err != nil || a.Is4In6() || a.Zone() != "":
			return pm, api.Errorf(api.CodeBadRequest, "host address %q: want an IPv4 or IPv6 address of this host", pm.HostAddress)
		case a.Is6() && n.twins == nil:
			return pm, api.Errorf(api.CodeBadRequest, "host address %s: IPv6 is off on this node (--ipv6=false); want an IPv4 address", a)
		case a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified():
			return pm, api.Errorf(api.CodeBadRequest, "host address %s: want a routable address of this host (not loopback, link-local, multicast or unspecified)", a)
		}
		pm.HostAddress = a.String()
	}
	return pm, nil
}

// Unpublish removes a port this node publishes.
func (n *Node) Unpublish(req api.UnpublishRequest) error {
	if n.nat == nil {
		return api.Errorf(api.CodeUnsupported, "published ports need kernel NAT, not available on this platform")
	}
	proto := strings.ToLower(req.Protocol)
	if proto != "tcp" && proto != "udp" {
		return api.Errorf(api.CodeBadRequest, "protocol %q: want tcp or udp", req.Protocol)
	}
	addr := req.HostAddress
	if addr != "" {
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return api.Errorf(api.CodeBadRequest, "host address %q: not an IP address", addr)
		}
		addr = a.String()
	}
	key := portKey(n.cfg.Name, proto, addr, req.HostPort)
	p := n.ports
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.purged {
		return errLeaving
	}
	if _, ok := p.byKey[key]; !ok {
		return api.Errorf(api.CodeNotFound, "host port %d/%s is not published on %s of this node", req.HostPort, proto, orAll(addr))
	}
	return n.removePortLocked(key, "unpublished")
}

// removePortLocked drops one port from the table, the state file and the
// store; the caller holds n.ports.mu.
func (n *Node) removePortLocked(key, reason string) error {
	p := n.ports
	pm := p.byKey[key]
	delete(p.byKey, key)
	delete(p.missingSince, key)
	if err := n.applyNATLocked(); err != nil {
		p.byKey[key] = pm
		return fmt.Errorf("unpublish %d/%s: %w", pm.HostPort, pm.Protocol, err)
	}
	if err := p.recordLocked(portRecord{Key: key, Del: true}); err != nil {
		// Not forgotten on disk: keep it, so that the kernel, memory and
		// the next start agree.
		p.byKey[key] = pm
		n.applyNATLocked()
		return fmt.Errorf("unpublish %d/%s: %w", pm.HostPort, pm.Protocol, err)
	}
	n.mesh.Store().Delete(portKind, key)
	n.events.publish(api.Event{Type: api.EventUnpub, Node: n.cfg.Name, Container: pm.Container, Service: pm.Service, Port: &pm, Message: reason})
	n.log.Info("unpublished", "port", pm.HostPort, "proto", pm.Protocol, "host_address", orAll(pm.HostAddress), "reason", reason)
	return nil
}

// unpublishContainer removes the ports of a container detached here.
func (n *Node) unpublishContainer(container string) {
	if n.nat == nil {
		return
	}
	p := n.ports
	p.mu.Lock()
	defer p.mu.Unlock()
	for key, pm := range p.byKey {
		if pm.Container == container {
			if err := n.removePortLocked(key, "container detached"); err != nil {
				n.log.Error("unpublish port of detached container", "container", container, "err", err)
			}
		}
	}
}

func (n *Node) putPortRecord(key string, pm api.PortMapping) {
	v, _ := json.Marshal(pm)
	n.mesh.Store().Put(portKind, key, v)
}

// Ports lists the published ports of every alive node.
func (n *Node) Ports() []api.PortMapping {
	out := append([]api.PortMapping{}, records[api.PortMapping](n, portKind, n.mesh.Alive)...)
	slices.SortFunc(out, func(a, b api.PortMapping) int {
		return strings.Compare(portKey(a.Node, a.Protocol, a.HostAddress, a.HostPort), portKey(b.Node, b.Protocol, b.HostAddress, b.HostPort))
	})
	return out
}

// serviceEndpoints returns the cluster's service endpoints from the record store:
// every live record, alive owner or not (a target on a node that is down
// comes back with it).
func (n *Node) serviceEndpoints() []api.ServiceEndpoint {
	return records[api.ServiceEndpoint](n, serviceKind, nil)
}

// targetIndex is where every container and service can be reached now,
// built in one pass (a NAT pass resolves every port from one index, so its
// cost grows with ports plus endpoints, not their product).
type targetIndex struct {
	container map[string]targetCand
	service   map[string]targetCand
}

// targetCand is one candidate address; a lower rank is preferred: 0 for
// this node's own attachments, 1 for a record of this node or an alive
// one, 2 for a record of a node that is down (it may come back).
type targetCand struct {
	addr  netip.Addr
	addr6 netip.Addr // its IPv6 address; zero when it has none
	rank  int
}

// newTargetIndex indexes this node's own attachments (rank 0, known
// without gossip: a restarted node resolves its local containers before
// its record store has synced, and a renumbered one at their new address)
// and the cluster's service endpoints (ranked by the node they are on).
// It is pure.
func newTargetIndex(self string, local []attachment, eps []api.ServiceEndpoint, alive func(node string) bool) targetIndex {
	x := targetIndex{container: map[string]targetCand{}, service: map[string]targetCand{}}
	for _, at := range local {
		x.add(at.Spec.Container, at.Spec.Service, targetCand{addr: at.Spec.Address.Addr(), addr6: at.Spec.Address6.Addr()})
	}
	for _, ep := range eps {
		a, err := netip.ParseAddr(ep.Address)
		if err != nil {
			continue
		}
		c := targetCand{addr: a, rank: 2}
		c.addr6, _ = netip.ParseAddr(ep.Address6)
		if ep.Node == self || alive(ep.Node) {
			c.rank = 1
		}
		x.add(ep.Container, ep.Service, c)
	}
	return x
}

func (x targetIndex) add(container, service string, c targetCand) {
	better := func(old targetCand, ok bool) bool {
		return !ok || c.rank < old.rank || c.rank == old.rank && c.addr.Less(old.addr)
	}
	if old, ok := x.container[container]; better(old, ok) {
		x.container[container] = c
	}
	if old, ok := x.service[service]; better(old, ok) {
		x.service[service] = c
	}
}

// resolve finds the overlay address a port forwards to now: the
// container's current address (it follows renumbering), or for a service
// one of its endpoints, a local one first, then the lowest address on an
// alive node.
func (x targetIndex) resolve(pm api.PortMapping) (netip.Addr, bool) {
	c, ok := x.lookup(pm)
	return c.addr, ok
}

// resolve6 is the IPv6 address of the target resolve picks; zero when it
// has none (a node or container without IPv6, a Docker endpoint).
func (x targetIndex) resolve6(pm api.PortMapping) netip.Addr {
	c, _ := x.lookup(pm)
	return c.addr6
}

// lookup is the candidate pm forwards to: its container's, or its
// service's best.
func (x targetIndex) lookup(pm api.PortMapping) (targetCand, bool) {
	if pm.Service != "" {
		c, ok := x.service[pm.Service]
		return c, ok
	}
	c, ok := x.container[pm.Container]
	return c, ok
}

// targets indexes the current targets (see newTargetIndex).
func (n *Node) targets() targetIndex {
	return newTargetIndex(n.cfg.Name, n.attach.list(), n.serviceEndpoints(), n.mesh.Alive)
}

// recordsSynced reports whether this node's record store holds the
// cluster's records: after its first exchange with a peer, or at once when
// it expects no peer (a cluster of one).
func (n *Node) recordsSynced() bool {
	select {
	case <-n.mesh.Synced():
		return true
	default:
		return !n.mesh.HasPeers()
	}
}

// portTarget is where pm forwards now: its container's (or service's)
// current address, and its IPv6 address when it has one (target6 is zero
// otherwise). A port that does not resolve keeps the targets it last had
// (pm.Target, pm.Target6) until this node's record store has synced: after
// a restart the kernel still holds them and nothing says they moved. ok is
// false for a port that forwards nowhere now.
func portTarget(pm api.PortMapping, targets targetIndex, synced bool) (target, target6 netip.AddrPort, ok bool) {
	if a, ok := targets.resolve(pm); ok {
		if a6 := targets.resolve6(pm); a6.IsValid() {
			target6 = netip.AddrPortFrom(a6, uint16(pm.ContainerPort))
		}
		return netip.AddrPortFrom(a, uint16(pm.ContainerPort)), target6, true
	}
	if synced {
		return netip.AddrPort{}, netip.AddrPort{}, false
	}
	last, err := netip.ParseAddrPort(pm.Target)
	last6, _ := netip.ParseAddrPort(pm.Target6)
	return last, last6, err == nil
}

// applyNATLocked converges the kernel NAT table to the node's config: egress
// masquerade for its blocks, and every published port whose target resolves
// now. The caller holds n.ports.mu.
func (n *Node) applyNATLocked() error {
	return n.applyNATWithLocked(n.targets())
}

// applyNATWithLocked is applyNATLocked with the targets already indexed.
func (n *Node) applyNATWithLocked(targets targetIndex) error {
	if n.ports.purged {
		return errLeaving
	}
	n.mu.Lock()
	var local []netip.Prefix
	for _, c := range n.claims {
		local = append(local, c.Block)
	}
	n.mu.Unlock()
	first := n.firstBlock()
	cfg := natd.Config{
		Cluster:    n.pool.Cluster(),
		Local:      ipam.Coalesce(local),
		Overlay:    ipam.NodeAddr(first),
		OverlayIf:  n.cfg.Interface,
		Masquerade: !n.cfg.NoMasquerade,
	}
	if n.twins != nil {
		cfg.Cluster6 = n.twins.Cluster6()
		cfg.Local6 = n.twins.Prefixes(cfg.Local)
		cfg.Overlay6 = n.twin(cfg.Overlay)
		// IPv6 egress only where the host has it (a default route);
		// asked at every pass, so a route that comes later is seen.
		cfg.Masquerade6 = cfg.Masquerade && n.hasIPv6Egress()
	}
	// In map order: natd orders the rules itself.
	cfg.Ports = make([]natd.Port, 0, len(n.ports.byKey))
	synced := n.recordsSynced()
	for _, pm := range n.ports.byKey {
		target, target6, ok := portTarget(pm, targets, synced)
		if !ok {
			continue
		}
		port := natd.Port{Proto: pm.Protocol, HostPort: uint16(pm.HostPort), Target: target}
		if pm.HostAddress != "" {
			port.HostAddr, _ = netip.ParseAddr(pm.HostAddress)
		}
		if n.twins != nil {
			port.Target6 = target6
		}
		if port.HostAddr.Is6() && !port.Target6.IsValid() {
			continue // published on an IPv6 address, its target has none (now)
		}
		cfg.Ports = append(cfg.Ports, port)
	}
	if err := n.nat.Set(cfg); err != nil {
		return err
	}
	n.metrics.natApplied(&cfg)
	return nil
}

// hasIPv6Egress reports whether the host has an IPv6 default route (where
// IPv6 egress masquerade makes sense).
func (n *Node) hasIPv6Egress() bool {
	ok, _ := natd.HasIPv6Egress(0)
	return ok
}

// reconcilePorts re-applies the NAT table (targets follow renumbering and
// service membership), removes ports whose container has been gone from
// the cluster for portGrace, and keeps this node's port records equal to
// its ports.
func (n *Node) reconcilePorts() {
	if n.nat == nil {
		return
	}
	p := n.ports
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.purged {
		return
	}
	now := time.Now()
	targets := n.targets()
	synced := n.recordsSynced()
	for key, pm := range p.byKey {
		if _, ok := targets.resolve(pm); ok || pm.Service != "" || !synced {
			delete(p.missingSince, key)
			continue
		}
		since, seen := p.missingSince[key]
		if !seen {
			p.missingSince[key] = now
			continue
		}
		if now.Sub(since) > portGrace {
			if err := n.removePortLocked(key, "container gone from the cluster"); err != nil {
				n.log.Warn("remove port of a vanished container", "err", err)
			}
		}
	}
	// Remember where each port leads now (the state file keeps it for the
	// next start, the record shows it).
	for k, pm := range p.byKey {
		if target, target6, ok := portTarget(pm, targets, true); ok {
			t, t6 := target.String(), ""
			if target6.IsValid() {
				t6 = target6.String()
			}
			if t != pm.Target || t6 != pm.Target6 {
				pm.Target, pm.Target6 = t, t6
				p.byKey[k] = pm
				if err := p.recordLocked(portRecord{Key: k, Put: &pm}); err != nil {
					n.log.Warn("save published ports", "err", err)
				}
			}
		}
	}
	if err := n.applyNATWithLocked(targets); err != nil {
		if msg := err.Error(); msg != p.lastErr {
			n.log.Error("converge NAT table", "err", err)
			p.lastErr = msg
		}
	} else {
		p.lastErr = ""
	}
	want := maps.Clone(p.byKey)
	st := n.mesh.Store()
	for _, r := range st.List(portKind) {
		if !strings.HasPrefix(r.Key, n.cfg.Name+"/") {
			continue
		}
		pm, ok := want[r.Key]
		if !ok {
			st.Delete(portKind, r.Key)
			continue
		}
		var have api.PortMapping
		if json.Unmarshal(r.Value, &have) == nil && have == pm && r.Owner == n.cfg.Name {
			delete(want, r.Key)
		}
	}
	for k, pm := range want {
		n.putPortRecord(k, pm)
	}
}

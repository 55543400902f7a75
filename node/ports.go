package node

import (
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
	"github.com/zlmesh/zlmesh/internal/statefile"
	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/natd"
)

// portsFile keeps the ports this node publishes, so they survive a restart
// of the whole cluster (the replicated store alone would lose them).
const portsFile = "ports.json"

// portKind is the record-store kind of published ports; the key is
// "<node>/<proto>/<host address or *>/<host port>", the value an
// api.PortMapping.
const portKind = "port"

// portGrace is how long a port's container may be missing from the cluster's
// service records before the port is removed with it (a container detached
// on another node); a container detached here takes its ports at once.
const portGrace = 30 * time.Second

// NAT is the kernel NAT the node drives: natd's Table.
type NAT = natd.Table

// ports is this node's published ports. mu serializes every change and the
// NAT convergence, so the kernel table is always set from a consistent view.
type ports struct {
	path string

	mu           sync.Mutex
	byKey        map[string]api.PortMapping
	missingSince map[string]time.Time
	lastErr      string
}

type portsState struct {
	Ports map[string]api.PortMapping `json:"ports"`
}

func loadPorts(stateDir string) (*ports, error) {
	p := &ports{path: filepath.Join(stateDir, portsFile), byKey: map[string]api.PortMapping{}, missingSince: map[string]time.Time{}}
	var st portsState
	err := statefile.ReadJSON(p.path, &st)
	switch {
	case errors.Is(err, statefile.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		for k, v := range st.Ports {
			p.byKey[k] = v
		}
	}
	return p, nil
}

func (p *ports) saveLocked() error {
	return statefile.WriteJSON(p.path, portsState{Ports: p.byKey})
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
	key := portKey(n.cfg.Name, pm.Protocol, pm.HostAddress, pm.HostPort)
	for _, other := range p.byKey {
		if other.Protocol == pm.Protocol && other.HostPort == pm.HostPort &&
			(other.HostAddress == "" || pm.HostAddress == "" || other.HostAddress == pm.HostAddress) {
			return api.PortMapping{}, api.Errorf(api.CodeAlreadyExists, "host port %d/%s is already published on %s (to %s)", pm.HostPort, pm.Protocol, orAll(other.HostAddress), portTargetName(other))
		}
	}
	target, ok := n.resolveTarget(pm)
	if !ok {
		what := "container " + pm.Container
		if pm.Service != "" {
			what = "service " + pm.Service
		}
		return api.PortMapping{}, api.Errorf(api.CodeNotFound, "no %s in the cluster", what)
	}
	pm.Target = netip.AddrPortFrom(target, uint16(pm.ContainerPort)).String()
	p.byKey[key] = pm
	if err := n.applyNATLocked(); err != nil {
		delete(p.byKey, key)
		n.applyNATLocked()
		return api.PortMapping{}, fmt.Errorf("publish %d/%s: %w", pm.HostPort, pm.Protocol, err)
	}
	if err := p.saveLocked(); err != nil {
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

func portTargetName(pm api.PortMapping) string {
	if pm.Service != "" {
		return "service " + pm.Service
	}
	return "container " + pm.Container
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
		if err != nil || !a.Is4() {
			return pm, api.Errorf(api.CodeBadRequest, "host address %q: want an IPv4 address of this host", pm.HostAddress)
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
	if err := p.saveLocked(); err != nil {
		return err
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
	out := []api.PortMapping{}
	for _, r := range n.mesh.Store().List(portKind) {
		var pm api.PortMapping
		if json.Unmarshal(r.Value, &pm) != nil || !n.mesh.Alive(r.Owner) {
			continue
		}
		out = append(out, pm)
	}
	slices.SortFunc(out, func(a, b api.PortMapping) int {
		return strings.Compare(portKey(a.Node, a.Protocol, a.HostAddress, a.HostPort), portKey(b.Node, b.Protocol, b.HostAddress, b.HostPort))
	})
	return out
}

// serviceEndpoints returns the cluster's service endpoints from the record store:
// every live record, alive owner or not (a target on a node that is down
// comes back with it).
func (n *Node) serviceEndpoints() []api.ServiceEndpoint {
	var out []api.ServiceEndpoint
	for _, r := range n.mesh.Store().List(serviceKind) {
		var ep api.ServiceEndpoint
		if json.Unmarshal(r.Value, &ep) == nil {
			out = append(out, ep)
		}
	}
	return out
}

// resolveTarget finds the overlay address a port forwards to now: the
// container's current address (it follows renumbering), or for a service
// one of its endpoints, a local one first, then the lowest address of an
// alive node.
func (n *Node) resolveTarget(pm api.PortMapping) (netip.Addr, bool) {
	var best netip.Addr
	bestRank := 3
	for _, ep := range n.serviceEndpoints() {
		if pm.Container != "" && ep.Container != pm.Container || pm.Service != "" && ep.Service != pm.Service {
			continue
		}
		a, err := netip.ParseAddr(ep.Address)
		if err != nil {
			continue
		}
		rank := 2
		switch {
		case ep.Node == n.cfg.Name:
			rank = 0
		case n.mesh.Alive(ep.Node):
			rank = 1
		}
		if rank < bestRank || rank == bestRank && a.Less(best) {
			best, bestRank = a, rank
		}
	}
	return best, best.IsValid()
}

// applyNATLocked converges the kernel NAT table to the node's config: egress
// masquerade for its subnet, and every published port whose target resolves
// now. The caller holds n.ports.mu.
func (n *Node) applyNATLocked() error {
	n.mu.Lock()
	claim := n.claim
	n.mu.Unlock()
	cfg := natd.Config{
		Cluster:    n.pool.Cluster(),
		NodeSubnet: claim.Subnet,
		Overlay:    ipam.OverlayAddr(claim.Subnet),
		OverlayIf:  n.cfg.Interface,
		Masquerade: !n.cfg.NoMasquerade,
	}
	keys := make([]string, 0, len(n.ports.byKey))
	for k := range n.ports.byKey {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		pm := n.ports.byKey[k]
		target, ok := n.resolveTarget(pm)
		if !ok {
			continue
		}
		port := natd.Port{Proto: pm.Protocol, HostPort: uint16(pm.HostPort), Target: netip.AddrPortFrom(target, uint16(pm.ContainerPort))}
		if pm.HostAddress != "" {
			port.HostAddr, _ = netip.ParseAddr(pm.HostAddress)
		}
		cfg.Ports = append(cfg.Ports, port)
	}
	return n.nat.Set(cfg)
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
	now := time.Now()
	for key, pm := range p.byKey {
		if _, ok := n.resolveTarget(pm); ok || pm.Service != "" {
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
	if err := n.applyNATLocked(); err != nil {
		if msg := err.Error(); msg != p.lastErr {
			n.log.Error("converge NAT table", "err", err)
			p.lastErr = msg
		}
	} else {
		p.lastErr = ""
	}
	want := map[string]api.PortMapping{}
	for k, pm := range p.byKey {
		if target, ok := n.resolveTarget(pm); ok {
			pm.Target = netip.AddrPortFrom(target, uint16(pm.ContainerPort)).String()
		}
		want[k] = pm
	}
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

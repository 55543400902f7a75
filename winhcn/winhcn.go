// Package winhcn attaches Windows containers to the mesh as endpoints of one
// Host Compute Network (HCN) network per node, the Windows counterpart of
// package bridge.
//
// The node's network (Config.NetworkName, "zlmesh") spans the node's
// address blocks (EnsureNetwork, called again whenever blocks come and go).
// Each container gets one endpoint, named EndpointPrefix+container id, with
// the static address and gateway the caller gives, the cluster routed to
// the gateway (the node), outbound NAT for everything but the cluster, an
// ACL letting the cluster in, and the mesh DNS; and its own HCN namespace,
// which the runtime puts the container in. Detach deletes the endpoint and
// the namespace. Inventory and Sweep are for adoption after a restart and
// the orphan sweep, as bridge's are on Linux.
//
// The HCN service sits behind the HCN interface: System on Windows
// (github.com/Microsoft/hcsshim/hcn), winhcntest.Fake everywhere, which is
// what the logic here is tested against. Under Wine every hcn call fails
// ("Module not found"): System answers ErrUnavailable there.
//
// Addresses are inputs: winhcn does not know how the node cuts its blocks
// or picks gateways; it takes the blocks, the container's address and its
// gateway as given.
//
// How the node drives it (one Manager per node, on Windows over System()):
//   - at start, and whenever its claimed blocks change: EnsureNetwork(blocks);
//   - then adoption: Inventory(), and for each entry the node's journal
//     knows, Attach again with the recorded address (kept as it is when
//     unchanged) if Alive, else Detach and release the lease;
//   - the orphan sweep: Sweep(keep) with keep = "in the journal";
//   - attach (by container id): lease an address and gateway, Attach;
//     the answer's NamespaceID goes back to the runtime;
//   - detach and renumbering: Detach, or Attach with the new address;
//   - `down --purge`: RemoveNetwork.
package winhcn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// Sentinel errors, wrapped with the operation and the object.
var (
	// ErrUnsupported: not Windows.
	ErrUnsupported = errors.New("winhcn: Windows container networking needs Windows")
	// ErrUnavailable: the HCN service cannot be reached (no HNS, or Wine).
	ErrUnavailable = errors.New("winhcn: host compute network service unavailable")
	// ErrNotFound: no such network, endpoint or namespace.
	ErrNotFound = errors.New("not found")
	// ErrBadNetwork: a network of our name exists in a state we cannot
	// use (another type) and still has endpoints, so it is not replaced.
	ErrBadNetwork = errors.New("network in a bad state")
	// ErrNoNetwork: Attach before EnsureNetwork, or with no blocks.
	ErrNoNetwork = errors.New("no network (EnsureNetwork with at least one block first)")
	// ErrNotInBlocks: an attach address outside every block.
	ErrNotInBlocks = errors.New("address outside the node's blocks")
	// ErrNoContainer: Spec.ContainerID names no container the host's
	// compute service knows.
	ErrNoContainer = errors.New("no such container")
)

// EndpointPrefix starts the name of every endpoint zlmesh makes; the rest
// is the container id. Endpoints without it are never touched.
const EndpointPrefix = "zlmesh-"

// Defaults of Config.
const (
	DefaultNetworkName    = "zlmesh"
	DefaultNetworkType    = "Internal"
	DefaultSettleTimeout  = 10 * time.Second
	DefaultSettleInterval = 250 * time.Millisecond
)

// Network is an HCN network as winhcn sees it.
type Network struct {
	ID      string
	Name    string
	Type    string
	Subnets []netip.Prefix
}

// Route is an endpoint route.
type Route struct {
	Dst     netip.Prefix
	NextHop netip.Addr
}

// Endpoint is an HCN endpoint as winhcn makes it.
type Endpoint struct {
	ID          string
	Name        string
	NetworkID   string
	NamespaceID string
	// Address is the container's address with its prefix length.
	Address netip.Prefix
	// Routes: the default route and the cluster, via the gateway.
	Routes []Route
	// DNSServers and DNSSearch configure the container's resolver.
	DNSServers []netip.Addr
	DNSSearch  []string
	// NATExceptions are the destinations outbound NAT leaves alone (the
	// cluster); everything else leaves with the host's address.
	NATExceptions []netip.Prefix
	// AllowIn are the sources an inbound ACL lets in (the cluster).
	AllowIn []netip.Prefix
}

// HCN is the part of the Host Compute Network service winhcn uses. Errors
// for missing objects wrap ErrNotFound; an unreachable service wraps
// ErrUnavailable. Calls may block (HNS is slow); they are made one at a
// time by a Manager.
type HCN interface {
	// Networks lists every HCN network (ours is found by name).
	Networks() ([]Network, error)
	// CreateNetwork creates n (ID empty) and returns it with its ID.
	CreateNetwork(n Network) (Network, error)
	// SetNetworkSubnets makes subnets the network's address spaces.
	SetNetworkSubnets(id string, subnets []netip.Prefix) error
	// DeleteNetwork deletes a network (its endpoints must be gone).
	DeleteNetwork(id string) error
	// Endpoints lists the endpoints of a network.
	Endpoints(networkID string) ([]Endpoint, error)
	// CreateEndpoint creates e (ID empty) on its network. Right after
	// CreateNetwork this fails for a while (the network settles).
	CreateEndpoint(e Endpoint) (Endpoint, error)
	// DeleteEndpoint deletes an endpoint, taking it out of any container
	// it was put into first.
	DeleteEndpoint(id string) error
	// CreateNamespace creates an empty namespace and returns its ID.
	CreateNamespace() (string, error)
	// AttachNamespace puts the endpoint in the namespace.
	AttachNamespace(endpointID, namespaceID string) error
	// NamespaceExists reports whether the namespace exists.
	NamespaceExists(id string) (bool, error)
	// DeleteNamespace deletes a namespace.
	DeleteNamespace(id string) error
	// ContainerExists reports whether the host compute service knows a
	// container (compute system) of this id.
	ContainerExists(id string) (bool, error)
	// AttachContainer puts the endpoint into the running container (a
	// hot add); an endpoint already in it is success.
	AttachContainer(containerID, endpointID string) error
}

// Config of a Manager. Zero fields take the defaults.
type Config struct {
	// NetworkName is the node's HCN network; default "zlmesh".
	NetworkName string
	// NetworkType is its HCN type; default "Internal".
	NetworkType string
	// Cluster are the mesh's prefixes: routed to the gateway, excepted
	// from outbound NAT, let in by the ACL.
	Cluster []netip.Prefix
	// DNSServers (the mesh DNS) and DNSSearch go to every endpoint.
	DNSServers []netip.Addr
	DNSSearch  []string
	// SettleTimeout bounds the retries of CreateEndpoint while a new
	// network settles; SettleInterval is the wait between them.
	SettleTimeout  time.Duration
	SettleInterval time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

// Spec is one attach request.
type Spec struct {
	// Container names the attachment (a DNS-label-like string); the
	// endpoint is EndpointPrefix+Container.
	Container string
	// ContainerID, when not "", is the runtime's container (its compute
	// system id): Attach fails with ErrNoContainer when there is no such
	// container, and puts the endpoint into it. "" leaves the namespace
	// for the runtime to give to a container it has yet to start.
	ContainerID string
	// Address is the container's address with the prefix length it sees
	// (a /32 with a link-local gateway, or a block-sized prefix).
	Address netip.Prefix
	// Gateway is the container's next hop (the node).
	Gateway netip.Addr
}

// Attached is a container's endpoint.
type Attached struct {
	Container   string
	EndpointID  string
	NamespaceID string
	Address     netip.Prefix
}

// Manager attaches and detaches containers on the node's network. Its
// methods are safe for concurrent use (one HCN call at a time).
type Manager struct {
	hcn HCN
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	network Network // zero until EnsureNetwork
}

// New returns a Manager over h.
func New(h HCN, cfg Config) *Manager {
	if cfg.NetworkName == "" {
		cfg.NetworkName = DefaultNetworkName
	}
	if cfg.NetworkType == "" {
		cfg.NetworkType = DefaultNetworkType
	}
	if cfg.SettleTimeout <= 0 {
		cfg.SettleTimeout = DefaultSettleTimeout
	}
	if cfg.SettleInterval <= 0 {
		cfg.SettleInterval = DefaultSettleInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{hcn: h, cfg: cfg, log: cfg.Logger}
}

// EnsureNetwork makes the node's network exist with exactly blocks as its
// subnets (declarative; call it again whenever the node's blocks change).
// A network of our name of another type is replaced when it has no
// endpoints, else ErrBadNetwork (nothing changed).
func (m *Manager) EnsureNetwork(blocks []netip.Prefix) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	name := m.cfg.NetworkName
	fail := func(err error) error { return fmt.Errorf("ensure hcn network %s: %w", name, err) }
	want := canonical(blocks)
	if len(want) == 0 {
		return fail(fmt.Errorf("no blocks: %w", ErrNoNetwork))
	}
	nets, err := m.hcn.Networks()
	if err != nil {
		return fail(err)
	}
	var have *Network
	for i := range nets {
		if nets[i].Name == name {
			have = &nets[i]
			break
		}
	}
	if have != nil && !strings.EqualFold(have.Type, m.cfg.NetworkType) {
		eps, err := m.hcn.Endpoints(have.ID)
		if err != nil {
			return fail(err)
		}
		if len(eps) > 0 {
			return fail(fmt.Errorf("type %s, want %s, and %d endpoints on it: %w", have.Type, m.cfg.NetworkType, len(eps), ErrBadNetwork))
		}
		m.log.Warn("replacing hcn network of another type", "network", name, "type", have.Type, "want", m.cfg.NetworkType)
		if err := m.hcn.DeleteNetwork(have.ID); err != nil {
			return fail(fmt.Errorf("delete the old one: %w", err))
		}
		have = nil
	}
	if have == nil {
		n, err := m.hcn.CreateNetwork(Network{Name: name, Type: m.cfg.NetworkType, Subnets: want})
		if err != nil {
			return fail(err)
		}
		m.log.Info("hcn network created", "network", name, "id", n.ID, "subnets", want)
		m.network = n
		return nil
	}
	if !slices.Equal(canonical(have.Subnets), want) {
		if err := m.hcn.SetNetworkSubnets(have.ID, want); err != nil {
			return fail(fmt.Errorf("set subnets %v: %w", want, err))
		}
		m.log.Info("hcn network subnets set", "network", name, "subnets", want, "were", have.Subnets)
		have.Subnets = want
	}
	m.network = *have
	return nil
}

// canonical sorts and dedups prefixes (masked).
func canonical(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Masked())
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out)
}

// endpointFor is the endpoint Attach makes for s.
func (m *Manager) endpointFor(s Spec) Endpoint {
	def := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if s.Address.Addr().Is6() {
		def = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	routes := []Route{{Dst: def, NextHop: s.Gateway}}
	for _, c := range m.cfg.Cluster {
		routes = append(routes, Route{Dst: c, NextHop: s.Gateway})
	}
	return Endpoint{
		Name:          EndpointPrefix + s.Container,
		NetworkID:     m.network.ID,
		Address:       s.Address,
		Routes:        routes,
		DNSServers:    slices.Clone(m.cfg.DNSServers),
		DNSSearch:     slices.Clone(m.cfg.DNSSearch),
		NATExceptions: slices.Clone(m.cfg.Cluster),
		AllowIn:       slices.Clone(m.cfg.Cluster),
	}
}

// Attach gives container s.Container an endpoint with s's address and
// gateway in a namespace of its own, and returns them. Idempotent: an
// endpoint of ours for the container with the same address (a retry, or
// adoption after a restart) is kept; one with another address is replaced.
// While a just-made network settles, CreateEndpoint is retried every
// SettleInterval up to SettleTimeout (or ctx). On error nothing is left.
func (m *Manager) Attach(ctx context.Context, s Spec) (Attached, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fail := func(err error) (Attached, error) {
		return Attached{}, fmt.Errorf("attach container %s to hcn network %s: %w", s.Container, m.cfg.NetworkName, err)
	}
	if err := checkContainer(s.Container); err != nil {
		return fail(err)
	}
	if s.ContainerID != "" {
		if err := checkContainer(s.ContainerID); err != nil {
			return fail(err)
		}
		ok, err := m.hcn.ContainerExists(s.ContainerID)
		if err != nil {
			return fail(fmt.Errorf("look up container %s: %w", s.ContainerID, err))
		}
		if !ok {
			return fail(fmt.Errorf("container id %s: %w", s.ContainerID, ErrNoContainer))
		}
	}
	if !s.Address.IsValid() || !s.Gateway.IsValid() {
		return fail(errors.New("address and gateway are required"))
	}
	if m.network.ID == "" {
		return fail(ErrNoNetwork)
	}
	if !slices.ContainsFunc(m.network.Subnets, func(b netip.Prefix) bool { return b.Contains(s.Address.Addr()) }) {
		return fail(fmt.Errorf("%s not in %v: %w", s.Address.Addr(), m.network.Subnets, ErrNotInBlocks))
	}
	eps, err := m.hcn.Endpoints(m.network.ID)
	if err != nil {
		return fail(err)
	}
	name := EndpointPrefix + s.Container
	for _, e := range eps {
		if e.Name != name {
			continue
		}
		if e.Address == s.Address && e.NamespaceID != "" {
			if ok, err := m.hcn.NamespaceExists(e.NamespaceID); err == nil && ok {
				if s.ContainerID != "" {
					if err := m.hcn.AttachContainer(s.ContainerID, e.ID); err != nil {
						return fail(fmt.Errorf("put endpoint %s into container %s: %w", e.ID, s.ContainerID, err))
					}
				}
				return Attached{Container: s.Container, EndpointID: e.ID, NamespaceID: e.NamespaceID, Address: e.Address}, nil
			}
		}
		// Another address, or half made: start over.
		if err := m.removeLocked(e); err != nil {
			return fail(fmt.Errorf("replace endpoint %s: %w", e.ID, err))
		}
	}

	want := m.endpointFor(s)
	ep, err := m.createEndpointSettling(ctx, want)
	if err != nil {
		return fail(err)
	}
	ns, err := m.hcn.CreateNamespace()
	if err != nil {
		m.hcn.DeleteEndpoint(ep.ID)
		return fail(fmt.Errorf("create namespace: %w", err))
	}
	if err := m.hcn.AttachNamespace(ep.ID, ns); err != nil {
		m.hcn.DeleteEndpoint(ep.ID)
		m.hcn.DeleteNamespace(ns)
		return fail(fmt.Errorf("put endpoint %s in namespace %s: %w", ep.ID, ns, err))
	}
	if s.ContainerID != "" {
		if err := m.hcn.AttachContainer(s.ContainerID, ep.ID); err != nil {
			m.hcn.DeleteEndpoint(ep.ID)
			m.hcn.DeleteNamespace(ns)
			return fail(fmt.Errorf("put endpoint %s into container %s: %w", ep.ID, s.ContainerID, err))
		}
	}
	m.log.Info("hcn endpoint attached", "container", s.Container, "endpoint", ep.ID, "namespace", ns, "address", s.Address)
	return Attached{Container: s.Container, EndpointID: ep.ID, NamespaceID: ns, Address: s.Address}, nil
}

// createEndpointSettling is CreateEndpoint with the bounded retry a new
// network needs. ErrUnavailable is not retried.
func (m *Manager) createEndpointSettling(ctx context.Context, e Endpoint) (Endpoint, error) {
	deadline := time.Now().Add(m.cfg.SettleTimeout)
	for attempt := 1; ; attempt++ {
		ep, err := m.hcn.CreateEndpoint(e)
		if err == nil {
			if attempt > 1 {
				m.log.Info("hcn endpoint created after the network settled", "endpoint", e.Name, "attempts", attempt)
			}
			return ep, nil
		}
		if errors.Is(err, ErrUnavailable) || time.Now().Add(m.cfg.SettleInterval).After(deadline) {
			return Endpoint{}, fmt.Errorf("create endpoint %s (%d attempts in %v): %w", e.Name, attempt, m.cfg.SettleTimeout, err)
		}
		select {
		case <-ctx.Done():
			return Endpoint{}, fmt.Errorf("create endpoint %s: %w (last error: %v)", e.Name, ctx.Err(), err)
		case <-time.After(m.cfg.SettleInterval):
		}
	}
}

// removeLocked deletes an endpoint and its namespace; what is gone already
// is not an error.
func (m *Manager) removeLocked(e Endpoint) error {
	if err := m.hcn.DeleteEndpoint(e.ID); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete endpoint %s: %w", e.ID, err)
	}
	if e.NamespaceID != "" {
		if err := m.hcn.DeleteNamespace(e.NamespaceID); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("delete namespace %s: %w", e.NamespaceID, err)
		}
	}
	return nil
}

// Detach deletes the container's endpoint and its namespace. A container
// without an endpoint (never attached, or detached already) is not an
// error.
func (m *Manager) Detach(container string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	fail := func(err error) error {
		return fmt.Errorf("detach container %s from hcn network %s: %w", container, m.cfg.NetworkName, err)
	}
	if m.network.ID == "" {
		return nil
	}
	eps, err := m.hcn.Endpoints(m.network.ID)
	if err != nil {
		return fail(err)
	}
	for _, e := range eps {
		if e.Name == EndpointPrefix+container {
			if err := m.removeLocked(e); err != nil {
				return fail(err)
			}
			m.log.Info("hcn endpoint detached", "container", container, "endpoint", e.ID, "namespace", e.NamespaceID)
		}
	}
	return nil
}

// Inventory lists our endpoints on the network (for adoption after a
// restart): container id, endpoint, namespace, address. Alive says whether
// the container's namespace still exists.
func (m *Manager) Inventory() ([]Attached, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.network.ID == "" {
		return nil, nil
	}
	eps, err := m.hcn.Endpoints(m.network.ID)
	if err != nil {
		return nil, fmt.Errorf("inventory of hcn network %s: %w", m.cfg.NetworkName, err)
	}
	var out []Attached
	for _, e := range eps {
		c, ok := strings.CutPrefix(e.Name, EndpointPrefix)
		if !ok {
			continue
		}
		out = append(out, Attached{Container: c, EndpointID: e.ID, NamespaceID: e.NamespaceID, Address: e.Address})
	}
	slices.SortFunc(out, func(a, b Attached) int { return strings.Compare(a.Container, b.Container) })
	return out, nil
}

// ContainerAlive reports whether the host compute service still knows the
// container id (a container attached by ContainerID is alive while it does).
func (m *Manager) ContainerAlive(id string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ok, err := m.hcn.ContainerExists(id)
	if err != nil {
		return false, fmt.Errorf("look up container %s: %w", id, err)
	}
	return ok, nil
}

// Subnets returns the node's network's subnets as the last EnsureNetwork
// left them (nil before).
func (m *Manager) Subnets() []netip.Prefix {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.network.Subnets)
}

// NetworkName is the node's HCN network's name.
func (m *Manager) NetworkName() string { return m.cfg.NetworkName }

// Alive reports whether a's namespace still exists (the container's
// network is there).
func (m *Manager) Alive(a Attached) (bool, error) {
	if a.NamespaceID == "" {
		return false, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ok, err := m.hcn.NamespaceExists(a.NamespaceID)
	if err != nil {
		return false, fmt.Errorf("namespace %s of container %s: %w", a.NamespaceID, a.Container, err)
	}
	return ok, nil
}

// Sweep deletes our endpoints (and namespaces) whose container keep does
// not want: the orphans of containers that went while the node was down.
// It returns the containers swept; it goes on after an error and returns
// the errors joined.
func (m *Manager) Sweep(keep func(container string) bool) ([]string, error) {
	inv, err := m.Inventory()
	if err != nil {
		return nil, err
	}
	var swept []string
	var errs []error
	for _, a := range inv {
		if keep(a.Container) {
			continue
		}
		if err := m.Detach(a.Container); err != nil {
			errs = append(errs, err)
			continue
		}
		swept = append(swept, a.Container)
	}
	return swept, errors.Join(errs...)
}

// RemoveNetwork deletes every endpoint of ours with its namespace, then the
// network (when no endpoint of anyone else is left on it): for `zlmesh
// down --purge`. A missing network is not an error.
func (m *Manager) RemoveNetwork() error {
	if _, err := m.Sweep(func(string) bool { return false }); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.network.ID == "" {
		return nil
	}
	eps, err := m.hcn.Endpoints(m.network.ID)
	if err != nil {
		return fmt.Errorf("remove hcn network %s: %w", m.cfg.NetworkName, err)
	}
	if len(eps) > 0 {
		return fmt.Errorf("remove hcn network %s: %d endpoints not ours left on it", m.cfg.NetworkName, len(eps))
	}
	if err := m.hcn.DeleteNetwork(m.network.ID); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("remove hcn network %s: %w", m.cfg.NetworkName, err)
	}
	m.network = Network{}
	return nil
}

// checkContainer accepts the container ids the control API accepts:
// 1 to 128 characters of letters, digits, '-', '_' and '.'.
func checkContainer(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("container id %q: want 1 to 128 characters", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("container id %q: only letters, digits, '-', '_' and '.'", id)
		}
	}
	return nil
}

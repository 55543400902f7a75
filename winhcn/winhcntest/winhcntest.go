// Package winhcntest is an in-memory winhcn.HCN for tests on every
// platform: networks, endpoints and namespaces with generated IDs, a
// settle period after CreateNetwork during which CreateEndpoint fails (as
// HNS does for about 2 s), an unavailable mode (as under Wine) and
// injectable failures.
package winhcntest

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/zlmesh/zlmesh/winhcn"
)

// Fake is a winhcn.HCN in memory. Safe for concurrent use.
type Fake struct {
	mu         sync.Mutex
	seq        int
	networks   map[string]*winhcn.Network
	endpoints  map[string]*winhcn.Endpoint
	namespaces map[string]bool
	settling   map[string]int // network id → CreateEndpoint failures left
	containers map[string]bool
	inside     map[string]string // endpoint id → container id it was put into

	// SettleFailures is how many CreateEndpoint calls fail on a network
	// after CreateNetwork (HNS's settle time).
	SettleFailures int
	// Unavailable makes every call fail with winhcn.ErrUnavailable.
	Unavailable bool
	// Fail, when it returns an error for an operation ("networks",
	// "create-network", "set-subnets", "delete-network", "endpoints",
	// "create-endpoint", "delete-endpoint", "create-namespace",
	// "attach-namespace", "namespace-exists", "delete-namespace",
	// "container-exists", "attach-container"), makes
	// that call fail with it.
	Fail func(op string) error
	// Calls counts calls per operation.
	Calls map[string]int
}

var _ winhcn.HCN = (*Fake)(nil)

// New returns an empty fake.
func New() *Fake {
	return &Fake{
		networks:   map[string]*winhcn.Network{},
		endpoints:  map[string]*winhcn.Endpoint{},
		namespaces: map[string]bool{},
		settling:   map[string]int{},
		containers: map[string]bool{},
		inside:     map[string]string{},
		Calls:      map[string]int{},
	}
}

func (f *Fake) enter(op string) error {
	f.Calls[op]++
	if f.Unavailable {
		return fmt.Errorf("%s: Module not found: %w", op, winhcn.ErrUnavailable)
	}
	if f.Fail != nil {
		return f.Fail(op)
	}
	return nil
}

func (f *Fake) id(kind string) string {
	f.seq++
	return fmt.Sprintf("%s-%04d", kind, f.seq)
}

// AddNetwork puts a network in directly (someone else's, or ours from a
// previous run) and returns its ID.
func (f *Fake) AddNetwork(n winhcn.Network) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	n.ID = f.id("net")
	f.networks[n.ID] = &n
	return n.ID
}

// AddEndpoint puts an endpoint in directly (with its namespace, if named,
// created too) and returns its ID.
func (f *Fake) AddEndpoint(e winhcn.Endpoint) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	e.ID = f.id("ep")
	f.endpoints[e.ID] = &e
	if e.NamespaceID != "" {
		f.namespaces[e.NamespaceID] = true
	}
	return e.ID
}

// RemoveNamespace deletes a namespace behind winhcn's back (the
// container went away).
func (f *Fake) RemoveNamespace(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.namespaces, id)
}

// AddContainer makes a container (compute system) of this id known, as a
// runtime does when it creates one.
func (f *Fake) AddContainer(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers[id] = true
}

// RemoveContainer forgets a container (it was removed).
func (f *Fake) RemoveContainer(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.containers, id)
}

// Container returns the container an endpoint was put into ("" for none).
func (f *Fake) Container(endpointID string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inside[endpointID]
}

// State returns copies of every network and endpoint and the namespace IDs.
func (f *Fake) State() (nets []winhcn.Network, eps []winhcn.Endpoint, namespaces []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.networks {
		nets = append(nets, *n)
	}
	for _, e := range f.endpoints {
		eps = append(eps, *e)
	}
	for ns := range f.namespaces {
		namespaces = append(namespaces, ns)
	}
	slices.SortFunc(eps, func(a, b winhcn.Endpoint) int { return cmpString(a.Name, b.Name) })
	slices.Sort(namespaces)
	return nets, eps, namespaces
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func notFound(kind, id string) error { return fmt.Errorf("%s %s: %w", kind, id, winhcn.ErrNotFound) }

func (f *Fake) Networks() ([]winhcn.Network, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("networks"); err != nil {
		return nil, err
	}
	var out []winhcn.Network
	for _, n := range f.networks {
		c := *n
		c.Subnets = slices.Clone(n.Subnets)
		out = append(out, c)
	}
	return out, nil
}

func (f *Fake) CreateNetwork(n winhcn.Network) (winhcn.Network, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("create-network"); err != nil {
		return winhcn.Network{}, err
	}
	for _, x := range f.networks {
		if x.Name == n.Name {
			return winhcn.Network{}, fmt.Errorf("create network %s: a network of that name exists", n.Name)
		}
	}
	n.ID = f.id("net")
	n.Subnets = slices.Clone(n.Subnets)
	f.networks[n.ID] = &n
	f.settling[n.ID] = f.SettleFailures
	return n, nil
}

func (f *Fake) SetNetworkSubnets(id string, subnets []netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("set-subnets"); err != nil {
		return err
	}
	n, ok := f.networks[id]
	if !ok {
		return notFound("network", id)
	}
	// HNS refuses to drop a subnet an endpoint still uses.
	for _, e := range f.endpoints {
		if e.NetworkID == id && !slices.ContainsFunc(subnets, func(s netip.Prefix) bool { return s.Contains(e.Address.Addr()) }) {
			return fmt.Errorf("set subnets of %s: endpoint %s (%s) would be outside them", id, e.Name, e.Address)
		}
	}
	n.Subnets = slices.Clone(subnets)
	return nil
}

func (f *Fake) DeleteNetwork(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("delete-network"); err != nil {
		return err
	}
	if _, ok := f.networks[id]; !ok {
		return notFound("network", id)
	}
	for _, e := range f.endpoints {
		if e.NetworkID == id {
			return fmt.Errorf("delete network %s: endpoint %s still on it", id, e.Name)
		}
	}
	delete(f.networks, id)
	return nil
}

func (f *Fake) Endpoints(networkID string) ([]winhcn.Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("endpoints"); err != nil {
		return nil, err
	}
	if _, ok := f.networks[networkID]; !ok {
		return nil, notFound("network", networkID)
	}
	var out []winhcn.Endpoint
	for _, e := range f.endpoints {
		if e.NetworkID == networkID {
			out = append(out, *e)
		}
	}
	slices.SortFunc(out, func(a, b winhcn.Endpoint) int { return cmpString(a.Name, b.Name) })
	return out, nil
}

func (f *Fake) CreateEndpoint(e winhcn.Endpoint) (winhcn.Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("create-endpoint"); err != nil {
		return winhcn.Endpoint{}, err
	}
	n, ok := f.networks[e.NetworkID]
	if !ok {
		return winhcn.Endpoint{}, notFound("network", e.NetworkID)
	}
	if f.settling[n.ID] > 0 {
		f.settling[n.ID]--
		return winhcn.Endpoint{}, fmt.Errorf("create endpoint %s: network %s not ready (HNS settling)", e.Name, n.ID)
	}
	if !slices.ContainsFunc(n.Subnets, func(s netip.Prefix) bool { return s.Contains(e.Address.Addr()) }) {
		return winhcn.Endpoint{}, fmt.Errorf("create endpoint %s: %s outside the network's subnets %v", e.Name, e.Address, n.Subnets)
	}
	for _, x := range f.endpoints {
		if x.Name == e.Name {
			return winhcn.Endpoint{}, errors.New("create endpoint " + e.Name + ": name exists")
		}
		if x.NetworkID == n.ID && x.Address.Addr() == e.Address.Addr() {
			return winhcn.Endpoint{}, fmt.Errorf("create endpoint %s: address %s in use by %s", e.Name, e.Address, x.Name)
		}
	}
	e.ID = f.id("ep")
	f.endpoints[e.ID] = &e
	return e, nil
}

func (f *Fake) DeleteEndpoint(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("delete-endpoint"); err != nil {
		return err
	}
	if _, ok := f.endpoints[id]; !ok {
		return notFound("endpoint", id)
	}
	delete(f.endpoints, id)
	delete(f.inside, id)
	return nil
}

func (f *Fake) CreateNamespace() (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("create-namespace"); err != nil {
		return "", err
	}
	id := f.id("ns")
	f.namespaces[id] = true
	return id, nil
}

func (f *Fake) AttachNamespace(endpointID, namespaceID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("attach-namespace"); err != nil {
		return err
	}
	e, ok := f.endpoints[endpointID]
	if !ok {
		return notFound("endpoint", endpointID)
	}
	if !f.namespaces[namespaceID] {
		return notFound("namespace", namespaceID)
	}
	e.NamespaceID = namespaceID
	return nil
}

func (f *Fake) NamespaceExists(id string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("namespace-exists"); err != nil {
		return false, err
	}
	return f.namespaces[id], nil
}

func (f *Fake) DeleteNamespace(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("delete-namespace"); err != nil {
		return err
	}
	if !f.namespaces[id] {
		return notFound("namespace", id)
	}
	delete(f.namespaces, id)
	return nil
}

func (f *Fake) ContainerExists(id string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("container-exists"); err != nil {
		return false, err
	}
	return f.containers[id], nil
}

func (f *Fake) AttachContainer(containerID, endpointID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("attach-container"); err != nil {
		return err
	}
	if _, ok := f.endpoints[endpointID]; !ok {
		return notFound("endpoint", endpointID)
	}
	if !f.containers[containerID] {
		return notFound("container", containerID)
	}
	f.inside[endpointID] = containerID
	return nil
}

// Package dockerplugin serves Docker's plugin protocols for zlmesh: the
// libnetwork remote network driver (NetworkDriver.*) and the remote IPAM
// driver (IpamDriver.*), over HTTP on a unix socket that Docker finds by
// its name (/run/docker/plugins/zlmesh.sock: the driver is "zlmesh").
//
// The package knows neither the OS nor netlink: everything it makes goes
// through the Node interface, which package node implements with its one
// attach pipeline (lease, plumbing, journal, record, event). Tests drive it
// with a fake Node.
//
// # Docker's order of calls, and what zlmesh does at each
//
// `docker network create -d zlmesh --ipam-driver zlmesh web`:
//
//  1. IpamDriver.RequestPool: 0.0.0.0/0 as the pool (PoolID "zlmesh-v4";
//     see anyPool for why not the cluster CIDR, which a --subnet naming it
//     gets), with the link-local gateway every service bridge holds
//     (169.254.1.1/32) as the pool's gateway, so Docker asks no address for
//     a gateway of its own;
//  2. NetworkDriver.CreateNetwork: the network's service (-o
//     zlmesh.service=NAME, else the network's name, looked up through
//     Docker's API at the first endpoint because the driver is never told
//     it) and options, saved in the Store.
//
// `docker run --network web` (and stop, rm):
//
//  1. IpamDriver.RequestAddress: Docker asks the address before the
//     endpoint exists, so the node leases it under a pending key
//     ("docker-ipam-<random>"); a pending lease no CreateEndpoint takes
//     over within Config.PendingTTL is released (dockerd died between the
//     two), and the node releases leases without an attachment at its start;
//  2. NetworkDriver.CreateEndpoint, with that address: the node's attach
//     pipeline runs with the pending lease renamed to the endpoint's
//     container key ("docker-" + the endpoint id's first 12 characters,
//     also its DNS label) and plumbing that leaves the container end of the
//     veth in the host under a zlmesh name (bridge's HostPeer form);
//  3. NetworkDriver.Join: the answer names that link (Docker moves it into
//     the sandbox and renames it eth0), the gateway 169.254.1.1 and a
//     connected route to it (the container holds a /32, so without that
//     route Docker could not add its default route via the gateway);
//     Docker sets the address from step 1;
//  4. NetworkDriver.ProgramExternalConnectivity: -p mappings become the
//     node's published ports (fixed host ports only);
//  5. on stop: RevokeExternalConnectivity (ports gone), Leave (Docker
//     moves the link back to the host), DeleteEndpoint (the node detaches:
//     veth, host route, record, lease), IpamDriver.ReleaseAddress (nothing
//     left to do: the lease went with the detach).
//
// DNS: Docker gives every container of a user-defined network its embedded
// resolver (127.0.0.11 in resolv.conf), which answers Docker's container
// names and forwards the rest to the daemon's --dns servers. The network
// protocol has no field for a resolver, so zlmesh's mesh DNS is set as
// dockerd's --dns (or docker run --dns) and reached through the embedded
// resolver: container names of one host keep working and mesh names
// (service.zone) resolve too.
package dockerplugin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DriverName is the name Docker knows the network and IPAM drivers by: the
// socket's file name without ".sock".
const DriverName = "zlmesh"

// ContainerPrefix starts the container key of every attachment made
// through Docker.
const ContainerPrefix = "docker-"

// pendingPrefix starts the key of a lease made by RequestAddress and not yet
// taken over by an endpoint.
const pendingPrefix = "docker-ipam-"

// PoolID is the one pool zlmesh's IPAM hands out (IPv4).
const PoolID = "zlmesh-v4"

// DefaultPendingTTL is how long an address RequestAddress leased waits for
// its CreateEndpoint.
const DefaultPendingTTL = 2 * time.Minute

// ContainerKey is the container key (node attachment, lease, DNS label) of
// a Docker endpoint: ContainerPrefix and the endpoint id's first 12
// characters, as Docker shortens ids. ok is false for an id that is not at
// least 12 lowercase hex characters.
func ContainerKey(endpointID string) (string, bool) {
	if len(endpointID) < 12 {
		return "", false
	}
	for i := 0; i < len(endpointID); i++ {
		c := endpointID[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", false
		}
	}
	return ContainerPrefix + endpointID[:12], true
}

// Node is the zlmesh node as the plugin uses it. Methods may block on the
// node's plumbing (milliseconds) and are called concurrently.
type Node interface {
	// Pool returns the cluster CIDR of the family (IPv6 when v6) and the
	// gateway every container of that family routes through (a
	// full-length link-local prefix); ok is false when the node serves no
	// such family.
	Pool(v6 bool) (pool, gateway netip.Prefix, ok bool)
	// Reserve leases one address of the node's blocks under key, which no
	// container uses (claiming a block when the node's are full).
	Reserve(key string) (netip.Addr, error)
	// Unreserve releases the lease under key if no attachment holds it;
	// no lease is success.
	Unreserve(key string) error
	// Attach runs the node's attach pipeline for ep: the lease under
	// ep.Reserved becomes ep.Container's in ep.Service (or, on failure,
	// is released), and the container end of the veth is left in the
	// host as Attachment.Peer for Docker to move.
	Attach(ctx context.Context, ep Endpoint) (Attachment, error)
	// Attachment returns the attachment of container.
	Attachment(container string) (Attachment, bool)
	// Attachments lists the attachments whose container key starts with
	// ContainerPrefix.
	Attachments() []Attachment
	// Detach detaches container (its ports too); not attached is success.
	Detach(ctx context.Context, container string) error
	// Publish publishes p to container.
	Publish(container string, p Port) error
	// UnpublishAll removes every port published to container.
	UnpublishAll(container string) error
	// KeepBridges says which services have a Docker network: their
	// bridges stay while no container is on them (a network's next
	// container then pays for no bridge, nor its last one for deleting
	// it). Each call replaces the set of the one before; a service it no
	// longer names loses its bridge once that has no port. The calls come
	// one at a time, the last with the current set.
	KeepBridges(services []string)
}

// Endpoint is an attach request of the plugin.
type Endpoint struct {
	Container string // ContainerKey of the endpoint
	Service   string
	Reserved  string // the pending lease's key
	MTU       int    // 0: the node's
}

// Attachment is what the node made for an endpoint.
type Attachment struct {
	Container string
	Service   string
	Address   netip.Prefix // full length
	Gateway   netip.Prefix // full-length link-local
	// Address6 is the IPv6 twin of Address (full length), Gateway6 its
	// full-length link-local gateway; both zero when the node serves no
	// IPv6. The plugin hands them to Docker in the CreateEndpoint and
	// Join answers: the network needs no --ipv6 (libnetwork's sandbox
	// enables IPv6 on each interface that has an IPv6 address).
	Address6 netip.Prefix
	Gateway6 netip.Prefix
	Peer     string // the veth end Docker moves (in the host until Join)
	HostVeth string
	Created  time.Time
}

// Port is one published port.
type Port struct {
	Proto         string // "tcp" or "udp"
	HostAddress   string // "" for all
	HostPort      int
	ContainerPort int
}

// ErrNoNetwork is what DockerAPI answers for a network Docker does not have.
var ErrNoNetwork = errors.New("no such network in Docker")

// DockerAPI is the little of Docker's engine API the plugin reads: the
// driver protocol never tells a network's name, nor which endpoints Docker
// still has after a restart of either side.
type DockerAPI interface {
	// NetworkName returns the name of network id (ErrNoNetwork if gone).
	NetworkName(ctx context.Context, id string) (string, error)
	// NetworkEndpoints returns the endpoint ids of the containers joined
	// to network id (ErrNoNetwork if gone).
	NetworkEndpoints(ctx context.Context, id string) ([]string, error)
}

// Network is one zlmesh network of Docker, as saved.
type Network struct {
	// Service is the zlmesh service its containers join; "" until the
	// network's name is looked up (Named).
	Service string `json:"service,omitempty"`
	// Named: the service is the network's name (no -o zlmesh.service).
	Named bool `json:"named,omitempty"`
	// MTU from -o com.docker.network.driver.mtu; 0 for the node's.
	MTU int `json:"mtu,omitempty"`
}

// State is what the plugin saves: Docker creates a network once, and
// sends its endpoints for years.
type State struct {
	Networks map[string]Network `json:"networks"` // by Docker's network id
}

// Store keeps the State. Save replaces it atomically.
type Store interface {
	Load() (State, error)
	Save(State) error
}

// MemStore is a Store in memory (nothing survives the process).
type MemStore struct {
	mu sync.Mutex
	st State
}

func (m *MemStore) Load() (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.clone(), nil
}

func (m *MemStore) Save(st State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st = st.clone()
	return nil
}

func (s State) clone() State {
	out := State{Networks: map[string]Network{}}
	for k, v := range s.Networks {
		out.Networks[k] = v
	}
	return out
}

// Config configures a Plugin.
type Config struct {
	// Node is required.
	Node Node
	// Docker looks networks up; nil means none: networks need -o
	// zlmesh.service=NAME, and Reconcile does nothing.
	Docker DockerAPI
	// Store keeps the networks; nil is a MemStore.
	Store Store
	// PendingTTL is how long a RequestAddress lease waits for its
	// CreateEndpoint; 0 means DefaultPendingTTL.
	PendingTTL time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Plugin serves both protocols. Its methods are safe for concurrent use.
type Plugin struct {
	cfg Config
	log *slog.Logger

	keepMu sync.Mutex // orders the calls of keepBridges

	mu       sync.Mutex // guards the fields below
	networks map[string]Network
	pending  map[netip.Addr]pendingLease
}

type pendingLease struct {
	key string
	at  time.Time
}

// New loads the saved networks and makes a Plugin.
func New(cfg Config) (*Plugin, error) {
	if cfg.Node == nil {
		return nil, errors.New("docker plugin: no node")
	}
	if cfg.Store == nil {
		cfg.Store = &MemStore{}
	}
	if cfg.PendingTTL <= 0 {
		cfg.PendingTTL = DefaultPendingTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := cfg.Store.Load()
	if err != nil {
		return nil, fmt.Errorf("docker plugin: load networks: %w", err)
	}
	st = st.clone()
	p := &Plugin{cfg: cfg, log: log, networks: st.Networks, pending: map[netip.Addr]pendingLease{}}
	p.keepBridges()
	return p, nil
}

// keepBridges tells the node the services of the saved networks
// (Node.KeepBridges). It runs after every change of them, outside mu;
// keepMu makes the last call carry the latest set.
func (p *Plugin) keepBridges() {
	p.keepMu.Lock()
	defer p.keepMu.Unlock()
	p.mu.Lock()
	seen := map[string]bool{}
	var services []string
	for _, nw := range p.networks {
		if nw.Service != "" && !seen[nw.Service] {
			seen[nw.Service] = true
			services = append(services, nw.Service)
		}
	}
	p.mu.Unlock()
	sort.Strings(services)
	p.cfg.Node.KeepBridges(services)
}

// Handler returns the HTTP handler of both protocols.
func (p *Plugin) Handler() http.Handler {
	mux := http.NewServeMux()
	plain := func(name string, fn func() any) {
		mux.HandleFunc("POST /"+name, func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, io.LimitReader(r.Body, 1<<16))
			reply(w, http.StatusOK, fn())
		})
	}
	plain("Plugin.Activate", func() any {
		return activateResponse{Implements: []string{"NetworkDriver", "IpamDriver"}}
	})
	plain("NetworkDriver.GetCapabilities", func() any {
		return capabilitiesResponse{Scope: "local", ConnectivityScope: "global"}
	})
	plain("IpamDriver.GetCapabilities", func() any { return ipamCapabilitiesResponse{} })
	plain("IpamDriver.GetDefaultAddressSpaces", func() any {
		return addressSpacesResponse{LocalDefaultAddressSpace: "zlmesh-local", GlobalDefaultAddressSpace: "zlmesh-global"}
	})
	route(mux, p, "NetworkDriver.CreateNetwork", false, p.createNetwork)
	route(mux, p, "NetworkDriver.DeleteNetwork", false, p.deleteNetwork)
	route(mux, p, "NetworkDriver.CreateEndpoint", false, p.createEndpoint)
	route(mux, p, "NetworkDriver.EndpointOperInfo", false, p.endpointOperInfo)
	route(mux, p, "NetworkDriver.DeleteEndpoint", false, p.deleteEndpoint)
	route(mux, p, "NetworkDriver.Join", false, p.join)
	route(mux, p, "NetworkDriver.Leave", false, p.leave)
	route(mux, p, "NetworkDriver.ProgramExternalConnectivity", false, p.programExternal)
	route(mux, p, "NetworkDriver.RevokeExternalConnectivity", false, p.revokeExternal)
	route(mux, p, "NetworkDriver.DiscoverNew", false, p.discover)
	route(mux, p, "NetworkDriver.DiscoverDelete", false, p.discover)
	route(mux, p, "IpamDriver.RequestPool", true, p.requestPool)
	route(mux, p, "IpamDriver.ReleasePool", true, p.releasePool)
	route(mux, p, "IpamDriver.RequestAddress", true, p.requestAddress)
	route(mux, p, "IpamDriver.ReleaseAddress", true, p.releaseAddress)
	return mux
}

// route serves one method: the body decoded into Req (HTTP 400 with
// {"Err"} when it does not decode), fn's answer, or its error in the
// protocol's shape with HTTP 200.
func route[Req any](mux *http.ServeMux, p *Plugin, name string, ipam bool, fn func(context.Context, Req) (any, error)) {
	mux.HandleFunc("POST /"+name, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		var req Req
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		if err := dec.Decode(&req); err != nil {
			p.log.Warn("docker: bad request", "method", name, "err", err)
			reply(w, http.StatusBadRequest, errResponse{Err: fmt.Sprintf("%s: request does not decode: %v", name, err)})
			return
		}
		out, err := fn(r.Context(), req)
		if err != nil {
			p.log.Warn("docker: request failed", "method", name, "err", err)
			if ipam {
				reply(w, http.StatusOK, ipamErrResponse{Error: err.Error()})
			} else {
				reply(w, http.StatusOK, errResponse{Err: err.Error()})
			}
			return
		}
		p.log.Debug("docker: request", "method", name, "took", time.Since(start))
		reply(w, http.StatusOK, out)
	})
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", ContentType)
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

type empty struct{}

// --- IPAM ---

func (p *Plugin) requestPool(_ context.Context, req requestPoolRequest) (any, error) {
	pool, gw, ok := p.cfg.Node.Pool(req.V6)
	switch {
	case !ok && req.V6:
		return nil, errors.New("zlmesh serves no IPv6 addresses: create the network without --ipv6")
	case !ok:
		return nil, errors.New("zlmesh serves no IPv4 addresses")
	case req.SubPool != "":
		return nil, fmt.Errorf("zlmesh picks addresses from its node's blocks: --ip-range %s is not supported", req.SubPool)
	case len(req.Options) > 0:
		return nil, fmt.Errorf("zlmesh's IPAM has no options (--ipam-opt %s)", firstKey(req.Options))
	}
	answer := anyPool(req.V6)
	if req.Pool != "" {
		want, err := netip.ParsePrefix(req.Pool)
		if err != nil || want.Masked() != pool {
			return nil, fmt.Errorf("zlmesh's addresses come from the cluster range %s: --subnet %s is not it (leave --subnet out)", pool, req.Pool)
		}
		answer = pool
	}
	return requestPoolResponse{PoolID: poolID(req.V6), Pool: answer.String(), Data: map[string]string{labelGateway: gw.String()}}, nil
}

// anyPool is the pool RequestPool answers when Docker names none:
// 0.0.0.0/0 (::/0), as Calico's IPAM does. libnetwork checks a local
// network's pool against the host's routes and asks again, forever, while
// they overlap (requestPoolHelper); the cluster range always overlaps the
// node's own routes (the TUN's, the containers' /32s), and 0.0.0.0/0 is the
// one pool libnetwork exempts from the check (types.IsIPNetValid).
// Addresses still come from the node's blocks (RequestAddress).
func anyPool(v6 bool) netip.Prefix {
	if v6 {
		return netip.MustParsePrefix("::/0")
	}
	return netip.MustParsePrefix("0.0.0.0/0")
}

// ourPool reports whether a pool Docker hands back (CreateNetwork's
// IPv4Data) is one RequestPool answered.
func ourPool(got string, cluster netip.Prefix) bool {
	return got == anyPool(cluster.Addr().Is6()).String() || got == cluster.String()
}

func poolID(v6 bool) string {
	if v6 {
		return "zlmesh-v6"
	}
	return PoolID
}

func (p *Plugin) releasePool(_ context.Context, req releasePoolRequest) (any, error) {
	return empty{}, nil // one pool for all networks, never given up
}

func (p *Plugin) requestAddress(_ context.Context, req requestAddressRequest) (any, error) {
	if req.PoolID != PoolID {
		return nil, fmt.Errorf("pool %q is not zlmesh's (want %s)", req.PoolID, PoolID)
	}
	if req.Options[requestAddrType] == gatewayAddrType {
		return nil, fmt.Errorf("zlmesh networks route through the link-local gateway of every service bridge: --gateway %s is not supported", req.Address)
	}
	if req.Address != "" {
		return nil, fmt.Errorf("zlmesh picks each container's address from its node's blocks: a chosen address (%s) is not supported", req.Address)
	}
	p.ExpirePending()
	key := pendingPrefix + randomHex(6)
	addr, err := p.cfg.Node.Reserve(key)
	if err != nil {
		return nil, fmt.Errorf("lease an address: %w", err)
	}
	p.mu.Lock()
	p.pending[addr] = pendingLease{key: key, at: p.cfg.Now()}
	p.mu.Unlock()
	p.log.Debug("docker: address reserved", "address", addr, "key", key)
	return requestAddressResponse{Address: netip.PrefixFrom(addr, addr.BitLen()).String()}, nil
}

func (p *Plugin) releaseAddress(_ context.Context, req releaseAddressRequest) (any, error) {
	addr, err := parseAddr(req.Address)
	if err != nil {
		return nil, fmt.Errorf("release address %q: %v", req.Address, err)
	}
	p.mu.Lock()
	pl, ok := p.pending[addr]
	delete(p.pending, addr)
	p.mu.Unlock()
	if !ok {
		return empty{}, nil // an endpoint's: released with its detach
	}
	if err := p.cfg.Node.Unreserve(pl.key); err != nil {
		return nil, fmt.Errorf("release address %s: %w", addr, err)
	}
	return empty{}, nil
}

// ExpirePending releases the leases of RequestAddress that no
// CreateEndpoint took over within Config.PendingTTL. The node calls it
// periodically; RequestAddress calls it too.
func (p *Plugin) ExpirePending() {
	now := p.cfg.Now()
	p.mu.Lock()
	var due []netip.Addr
	var keys []string
	for a, pl := range p.pending {
		if now.Sub(pl.at) >= p.cfg.PendingTTL {
			due, keys = append(due, a), append(keys, pl.key)
			delete(p.pending, a)
		}
	}
	p.mu.Unlock()
	for i, key := range keys {
		if err := p.cfg.Node.Unreserve(key); err != nil {
			p.log.Error("docker: release expired address", "address", due[i], "err", err)
			continue
		}
		p.log.Info("docker: address released, no endpoint took it", "address", due[i], "after", p.cfg.PendingTTL)
	}
}

// Pending returns the number of addresses leased by RequestAddress and not
// yet taken by an endpoint.
func (p *Plugin) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pending)
}

// --- networks ---

func (p *Plugin) createNetwork(_ context.Context, req createNetworkRequest) (any, error) {
	if req.NetworkID == "" {
		return nil, errors.New("create network: no NetworkID")
	}
	nw, err := p.networkFromOptions(req)
	if err != nil {
		return nil, fmt.Errorf("create network %s: %w", short(req.NetworkID), err)
	}
	if err := p.addNetwork(req.NetworkID, nw); err != nil {
		return nil, fmt.Errorf("create network %s: %w", short(req.NetworkID), err)
	}
	p.keepBridges()
	return empty{}, nil
}

// addNetwork saves network id (a repeated create with the same options is
// success).
func (p *Plugin) addNetwork(id string, nw Network) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if old, ok := p.networks[id]; ok {
		if old == nw || old.Named && nw.Named && old.MTU == nw.MTU {
			return nil
		}
		return errors.New("it exists with other options")
	}
	if err := p.conflictLocked(id, nw); err != nil {
		return err
	}
	if err := p.saveLocked(func(m map[string]Network) { m[id] = nw }); err != nil {
		return err
	}
	p.log.Info("docker: network created", "network", short(id), "service", nw.Service, "named", nw.Named, "mtu", nw.MTU)
	return nil
}

// networkFromOptions reads and checks CreateNetwork's options and IPAM data.
func (p *Plugin) networkFromOptions(req createNetworkRequest) (Network, error) {
	nw := Network{Named: true}
	if v, ok := req.Options[labelEnableIPv6]; ok && v == true {
		return nw, errors.New("zlmesh serves no IPv6 addresses: create the network without --ipv6")
	}
	if g, ok := req.Options[labelGeneric]; ok && g != nil {
		opts, ok := g.(map[string]any)
		if !ok {
			return nw, fmt.Errorf("option %s is %T, want an object", labelGeneric, g)
		}
		for k, v := range opts {
			s, ok := v.(string)
			if !ok {
				return nw, fmt.Errorf("option %s is %T, want a string", k, v)
			}
			switch k {
			case optService:
				if err := validLabel(s); err != nil {
					return nw, fmt.Errorf("option %s=%q: %v", k, s, err)
				}
				nw.Service, nw.Named = s, false
			case labelMTU:
				mtu, err := strconv.Atoi(s)
				if err != nil || mtu < 68 || mtu > 65535 {
					return nw, fmt.Errorf("option %s=%q: want an MTU from 68 to 65535", k, s)
				}
				nw.MTU = mtu
			default:
				return nw, fmt.Errorf("unknown option %q (zlmesh knows %s and %s)", k, optService, labelMTU)
			}
		}
	}
	if len(req.IPv6Data) > 0 {
		return nw, errors.New("zlmesh serves no IPv6 addresses")
	}
	pool, _, _ := p.cfg.Node.Pool(false)
	if len(req.IPv4Data) != 1 || !ourPool(req.IPv4Data[0].Pool, pool) {
		got := "none"
		if len(req.IPv4Data) > 0 {
			got = req.IPv4Data[0].Pool
		}
		return nw, fmt.Errorf("the network's addresses (pool %s) are not zlmesh's (%s): create it with --ipam-driver %s", got, pool, DriverName)
	}
	return nw, nil
}

// conflictLocked refuses a second network of one service with other
// options (the service's bridge is one, with one MTU).
func (p *Plugin) conflictLocked(id string, nw Network) error {
	if nw.Service == "" {
		return nil
	}
	for otherID, o := range p.networks {
		if otherID != id && o.Service == nw.Service && o.MTU != nw.MTU {
			return fmt.Errorf("network %s already maps to service %s with other options (mtu %d, not %d)", short(otherID), nw.Service, o.MTU, nw.MTU)
		}
	}
	return nil
}

// saveLocked applies change to a copy of the networks, saves it, and keeps
// it only when saved.
func (p *Plugin) saveLocked(change func(map[string]Network)) error {
	next := State{Networks: p.networks}.clone()
	change(next.Networks)
	if err := p.cfg.Store.Save(next); err != nil {
		return fmt.Errorf("save docker networks: %w", err)
	}
	p.networks = next.Networks
	return nil
}

func (p *Plugin) deleteNetwork(_ context.Context, req networkRequest) (any, error) {
	p.mu.Lock()
	if _, ok := p.networks[req.NetworkID]; !ok {
		p.mu.Unlock()
		return empty{}, nil
	}
	err := p.saveLocked(func(m map[string]Network) { delete(m, req.NetworkID) })
	p.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("delete network %s: %w", short(req.NetworkID), err)
	}
	p.log.Info("docker: network deleted", "network", short(req.NetworkID))
	p.keepBridges()
	return empty{}, nil
}

// network returns network id with its service known, looking its name up
// in Docker when the service is the network's name.
func (p *Plugin) network(ctx context.Context, id string) (Network, error) {
	p.mu.Lock()
	nw, ok := p.networks[id]
	p.mu.Unlock()
	if !ok {
		return nw, fmt.Errorf("network %s is not a zlmesh network of this node (was it created with -d %s?)", short(id), DriverName)
	}
	if nw.Service != "" {
		return nw, nil
	}
	if p.cfg.Docker == nil {
		return nw, fmt.Errorf("network %s: name its service with -o %s=NAME (the node cannot ask Docker for the network's name)", short(id), optService)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	name, err := p.cfg.Docker.NetworkName(ctx, id)
	if err != nil {
		return nw, fmt.Errorf("network %s: look up its name in Docker: %w", short(id), err)
	}
	if err := validLabel(name); err != nil {
		return nw, fmt.Errorf("network %q cannot be a service name (%v): recreate it with -o %s=NAME", name, err, optService)
	}
	cur, named, err := p.nameNetwork(id, name)
	if err != nil {
		return nw, err
	}
	if named {
		p.keepBridges()
	}
	return cur, nil
}

// nameNetwork saves name as network id's service, unless it has one
// already (then named is false).
func (p *Plugin) nameNetwork(id, name string) (_ Network, named bool, _ error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, ok := p.networks[id]
	if !ok {
		return cur, false, fmt.Errorf("network %s was deleted meanwhile", short(id))
	}
	if cur.Service != "" {
		return cur, false, nil
	}
	cur.Service = name
	if err := p.conflictLocked(id, cur); err != nil {
		return cur, false, fmt.Errorf("network %s: %w", name, err)
	}
	if err := p.saveLocked(func(m map[string]Network) { m[id] = cur }); err != nil {
		return cur, false, err
	}
	p.log.Info("docker: network named", "network", short(id), "service", name)
	return cur, true, nil
}

// --- endpoints ---

func (p *Plugin) createEndpoint(ctx context.Context, req createEndpointRequest) (any, error) {
	key, ok := ContainerKey(req.EndpointID)
	if !ok {
		return nil, fmt.Errorf("create endpoint: endpoint id %q is not a Docker id", req.EndpointID)
	}
	if req.Interface == nil || req.Interface.Address == "" {
		return nil, fmt.Errorf("create endpoint %s: no address: create the network with --ipam-driver %s", short(req.EndpointID), DriverName)
	}
	if req.Interface.AddressIPv6 != "" {
		return nil, fmt.Errorf("create endpoint %s: IPv6 address %s from another IPAM: zlmesh gives each container its IPv6 address itself (create the network without --ipv6)", short(req.EndpointID), req.Interface.AddressIPv6)
	}
	addr, err := parseAddr(req.Interface.Address)
	if err != nil {
		return nil, fmt.Errorf("create endpoint %s: address %q: %v", short(req.EndpointID), req.Interface.Address, err)
	}
	nw, err := p.network(ctx, req.NetworkID)
	if err != nil {
		return nil, fmt.Errorf("create endpoint %s: %w", short(req.EndpointID), err)
	}
	if at, ok := p.cfg.Node.Attachment(key); ok {
		if at.Address.Addr() == addr && at.Service == nw.Service {
			return endpointAnswer(at), nil // a repeated request
		}
		return nil, fmt.Errorf("create endpoint %s: container %s is attached already (%s in %s)", short(req.EndpointID), key, at.Address, at.Service)
	}
	p.mu.Lock()
	pl, ok := p.pending[addr]
	delete(p.pending, addr)
	p.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("create endpoint %s: address %s was not handed out by zlmesh's IPAM on this node: create the network with --ipam-driver %s", short(req.EndpointID), addr, DriverName)
	}
	at, err := p.cfg.Node.Attach(ctx, Endpoint{Container: key, Service: nw.Service, Reserved: pl.key, MTU: nw.MTU})
	if err != nil {
		if uerr := p.cfg.Node.Unreserve(pl.key); uerr != nil {
			p.log.Error("docker: release address of a failed endpoint", "address", addr, "err", uerr)
		}
		return nil, fmt.Errorf("create endpoint %s: %w", short(req.EndpointID), err)
	}
	p.log.Info("docker: endpoint created", "endpoint", short(req.EndpointID), "container", key, "service", at.Service, "address", at.Address, "address6", at.Address6, "peer", at.Peer)
	return endpointAnswer(at), nil
}

// endpointAnswer is CreateEndpoint's answer for at: the IPv6 address, if
// it has one (Docker asked for none, the network having no --ipv6, and
// libnetwork's remote driver sets the answered one on the endpoint:
// drivers/remote/driver.go CreateEndpoint); nothing else (the IPv4 address
// is IPAM's, the MAC the kernel's).
func endpointAnswer(at Attachment) createEndpointResponse {
	if !at.Address6.IsValid() {
		return createEndpointResponse{}
	}
	return createEndpointResponse{Interface: &endpointInterface{AddressIPv6: at.Address6.String()}}
}

func (p *Plugin) endpointOperInfo(_ context.Context, req endpointRequest) (any, error) {
	v := map[string]any{}
	if key, ok := ContainerKey(req.EndpointID); ok {
		if at, ok := p.cfg.Node.Attachment(key); ok {
			v["zlmesh.container"] = at.Container
			v["zlmesh.service"] = at.Service
			v["zlmesh.address"] = at.Address.String()
			if at.Address6.IsValid() {
				v["zlmesh.address6"] = at.Address6.String()
			}
			v["zlmesh.host_veth"] = at.HostVeth
		}
	}
	return endpointInfoResponse{Value: v}, nil
}

func (p *Plugin) deleteEndpoint(ctx context.Context, req endpointRequest) (any, error) {
	key, ok := ContainerKey(req.EndpointID)
	if !ok {
		return nil, fmt.Errorf("delete endpoint: endpoint id %q is not a Docker id", req.EndpointID)
	}
	if err := p.cfg.Node.Detach(ctx, key); err != nil {
		return nil, fmt.Errorf("delete endpoint %s: %w", short(req.EndpointID), err)
	}
	p.log.Info("docker: endpoint deleted", "endpoint", short(req.EndpointID), "container", key)
	return empty{}, nil
}

func (p *Plugin) join(_ context.Context, req joinRequest) (any, error) {
	key, ok := ContainerKey(req.EndpointID)
	if !ok {
		return nil, fmt.Errorf("join: endpoint id %q is not a Docker id", req.EndpointID)
	}
	at, ok := p.cfg.Node.Attachment(key)
	if !ok {
		return nil, fmt.Errorf("join endpoint %s: this node never created it", short(req.EndpointID))
	}
	if at.Peer == "" {
		return nil, fmt.Errorf("join endpoint %s: container %s was not attached through Docker", short(req.EndpointID), key)
	}
	resp := joinResponse{
		InterfaceName: &interfaceName{SrcName: at.Peer, DstPrefix: "eth"},
		// The container holds a /32: the gateway is reachable only
		// through this connected route, which Docker adds with the
		// interface, before its default route via the gateway.
		StaticRoutes: []staticRoute{{Destination: at.Gateway.String(), RouteType: routeConnected}},
	}
	if at.Gateway.Addr().Is4() {
		resp.Gateway = at.Gateway.Addr().String()
	} else {
		resp.GatewayIPv6 = at.Gateway.Addr().String()
	}
	if at.Address6.IsValid() && at.Gateway6.IsValid() {
		// The same for the IPv6 twin: the connected route to its
		// gateway, then the default route via it.
		resp.StaticRoutes = append(resp.StaticRoutes, staticRoute{Destination: at.Gateway6.String(), RouteType: routeConnected})
		resp.GatewayIPv6 = at.Gateway6.Addr().String()
	}
	return resp, nil
}

func (p *Plugin) leave(_ context.Context, req endpointRequest) (any, error) {
	return empty{}, nil // Docker moves the link back; DeleteEndpoint detaches
}

func (p *Plugin) programExternal(_ context.Context, req externalConnectivityRequest) (any, error) {
	key, ok := ContainerKey(req.EndpointID)
	if !ok {
		return nil, fmt.Errorf("publish ports: endpoint id %q is not a Docker id", req.EndpointID)
	}
	ports, err := portsFromOptions(req.Options)
	if err != nil {
		return nil, fmt.Errorf("publish ports of endpoint %s: %w", short(req.EndpointID), err)
	}
	if _, ok := p.cfg.Node.Attachment(key); !ok {
		return nil, fmt.Errorf("publish ports of endpoint %s: this node never created it", short(req.EndpointID))
	}
	// Idempotent: what an earlier call published goes first.
	if err := p.cfg.Node.UnpublishAll(key); err != nil {
		return nil, fmt.Errorf("publish ports of endpoint %s: %w", short(req.EndpointID), err)
	}
	for _, pt := range ports {
		if err := p.cfg.Node.Publish(key, pt); err != nil {
			if uerr := p.cfg.Node.UnpublishAll(key); uerr != nil {
				err = errors.Join(err, uerr)
			}
			return nil, fmt.Errorf("publish %d/%s of endpoint %s: %w", pt.HostPort, pt.Proto, short(req.EndpointID), err)
		}
	}
	return empty{}, nil
}

// portsFromOptions reads Docker's port map (-p) from the options.
func portsFromOptions(opts map[string]any) ([]Port, error) {
	raw, ok := opts[labelPortMap]
	if !ok || raw == nil {
		return nil, nil
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	var binds []portBinding
	if err := json.Unmarshal(b, &binds); err != nil {
		return nil, fmt.Errorf("port map: %v", err)
	}
	var out []Port
	for _, pb := range binds {
		pt := Port{HostPort: pb.HostPort, ContainerPort: pb.Port}
		switch pb.Proto {
		case protoTCP:
			pt.Proto = "tcp"
		case protoUDP:
			pt.Proto = "udp"
		default:
			return nil, fmt.Errorf("port %d: protocol %d: zlmesh publishes tcp and udp", pb.Port, pb.Proto)
		}
		switch {
		case pb.HostPort == 0:
			return nil, fmt.Errorf("port %d/%s: zlmesh publishes fixed host ports: give -p HOSTPORT:%d", pb.Port, pt.Proto, pb.Port)
		case pb.HostPortEnd != 0 && pb.HostPortEnd != pb.HostPort:
			return nil, fmt.Errorf("port %d/%s: host port ranges (%d-%d) are not supported", pb.Port, pt.Proto, pb.HostPort, pb.HostPortEnd)
		case pb.HostPort < 1 || pb.HostPort > 65535 || pb.Port < 1 || pb.Port > 65535:
			return nil, fmt.Errorf("port %d:%d/%s out of range", pb.HostPort, pb.Port, pt.Proto)
		}
		if pb.HostIP != "" {
			a, err := netip.ParseAddr(pb.HostIP)
			if err != nil || !a.Is4() {
				return nil, fmt.Errorf("port %d/%s: host address %q: zlmesh publishes on IPv4 addresses", pb.Port, pt.Proto, pb.HostIP)
			}
			if !a.IsUnspecified() {
				pt.HostAddress = a.String()
			}
		}
		out = append(out, pt)
	}
	return out, nil
}

func (p *Plugin) revokeExternal(_ context.Context, req endpointRequest) (any, error) {
	key, ok := ContainerKey(req.EndpointID)
	if !ok {
		return nil, fmt.Errorf("unpublish ports: endpoint id %q is not a Docker id", req.EndpointID)
	}
	if err := p.cfg.Node.UnpublishAll(key); err != nil {
		return nil, fmt.Errorf("unpublish ports of endpoint %s: %w", short(req.EndpointID), err)
	}
	return empty{}, nil
}

func (p *Plugin) discover(_ context.Context, req discoveryNotification) (any, error) {
	return empty{}, nil // the mesh finds its nodes itself
}

// --- agreement with Docker ---

// Reconcile detaches the Docker attachments that Docker no longer has
// (dockerd restarted or died while zlmesh was down, containers gone
// without DeleteEndpoint): for every saved network it asks Docker for its
// joined endpoints, and detaches the attachments older than grace (an
// endpoint between CreateEndpoint and Join is not listed yet) that none
// of them holds. A network Docker no longer has is forgotten. Nothing is
// detached when any lookup fails otherwise. It returns the containers
// detached.
func (p *Plugin) Reconcile(ctx context.Context, grace time.Duration) ([]string, error) {
	if p.cfg.Docker == nil {
		return nil, nil
	}
	p.mu.Lock()
	ids := make([]string, 0, len(p.networks))
	for id := range p.networks {
		ids = append(ids, id)
	}
	p.mu.Unlock()
	sort.Strings(ids)
	keep := map[string]bool{}
	var gone []string
	for _, id := range ids {
		eps, err := p.cfg.Docker.NetworkEndpoints(ctx, id)
		if errors.Is(err, ErrNoNetwork) {
			gone = append(gone, id)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reconcile with Docker: network %s: %w", short(id), err)
		}
		for _, ep := range eps {
			if key, ok := ContainerKey(ep); ok {
				keep[key] = true
			}
		}
	}
	if len(gone) > 0 {
		p.mu.Lock()
		err := p.saveLocked(func(m map[string]Network) {
			for _, id := range gone {
				delete(m, id)
			}
		})
		p.mu.Unlock()
		if err != nil {
			return nil, err
		}
		for _, id := range gone {
			p.log.Info("docker: network gone from Docker, forgotten", "network", short(id))
		}
		p.keepBridges()
	}
	now := p.cfg.Now()
	var detached []string
	var errs []error
	for _, at := range p.cfg.Node.Attachments() {
		if keep[at.Container] || now.Sub(at.Created) < grace {
			continue
		}
		if err := p.cfg.Node.Detach(ctx, at.Container); err != nil {
			errs = append(errs, err)
			continue
		}
		detached = append(detached, at.Container)
		p.log.Info("docker: detached an endpoint Docker no longer has", "container", at.Container, "service", at.Service, "address", at.Address)
	}
	return detached, errors.Join(errs...)
}

// --- helpers ---

// parseAddr reads an address Docker sends: "10.200.0.5/32" or "10.200.0.5".
func parseAddr(s string) (netip.Addr, error) {
	if strings.Contains(s, "/") {
		pf, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}, err
		}
		return pf.Addr(), nil
	}
	return netip.ParseAddr(s)
}

// validLabel checks a service name: a DNS label of [a-z0-9-], 1 to 63
// characters, not starting or ending with '-' (the node checks it again).
func validLabel(s string) error {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return errors.New("a service name is 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%q at %d: a service name is lowercase a-z, 0-9 and '-'", c, i)
		}
	}
	return nil
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func firstKey(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys[0]
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

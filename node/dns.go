package node

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/dnsd"
	"github.com/zlmesh/zlmesh/mesh"
)

// dnsRefreshEvery bounds how stale the mesh DNS can be when an event was
// missed; changes normally reach it at once through mesh events.
const dnsRefreshEvery = 2 * time.Second

// dnsCoalesce is how long the DNS loop gathers events before rebuilding.
const dnsCoalesce = 200 * time.Millisecond

// startDNS makes the mesh DNS server, hooks it into the packet path at the
// mesh DNS address (queries to it never reach WireGuard) and starts the
// optional socket listeners.
func (n *Node) startDNS() error {
	upstreams := n.cfg.DNSUpstreams
	if upstreams == nil {
		var err error
		if upstreams, err = dnsd.ResolvConfUpstreams("/etc/resolv.conf"); err != nil {
			n.log.Warn("no DNS upstreams from /etc/resolv.conf; names outside the mesh answer SERVFAIL", "err", err)
		}
	}
	cfg := dnsd.Config{
		Zone:      n.cfg.DNSZone,
		TTL:       n.cfg.DNSTTL,
		Addr:      n.pool.MeshDNS(),
		Addr6:     n.twin(n.pool.MeshDNS()), // zero with IPv6 off
		Cluster:   n.pool.Cluster(),
		Upstreams: upstreams,
		Logger:    n.log.With("component", "dnsd"),
		Observe:   n.metrics.observeDNS,
	}
	if n.twins != nil {
		cfg.Cluster6 = n.twins.Cluster6() // PTR under ip6.arpa
	}
	srv, err := dnsd.New(cfg)
	if err != nil {
		return fmt.Errorf("mesh DNS: %w", err)
	}
	n.dns = srv
	remove, err := srv.Hook(n.wrap, n.meshDNS()...)
	if err != nil {
		return fmt.Errorf("mesh DNS on the packet path: %w", err)
	}
	n.undo = append(n.undo, remove)
	for _, addr := range n.meshDNS() {
		if lp, ok := n.cfg.Plumbing.(LocalPlumbing); ok {
			if err := n.serveDNSLocal(srv, lp, addr); err != nil {
				n.log.Warn("mesh DNS: no kernel sockets at its address; answering on the packet path only", "address", addr, "err", err)
			}
		}
	}
	for _, addr := range n.cfg.DNSListen {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return fmt.Errorf("--dns-listen %s: %w", addr, err)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			pc.Close()
			return fmt.Errorf("--dns-listen %s: %w", addr, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		n.undo = append(n.undo, cancel)
		go srv.Serve(ctx, pc, l)
	}
	n.refreshDNS()
	n.log.Info("mesh DNS", "address", n.meshDNS(), "zone", n.zone(), "upstreams", upstreams, "listen", n.cfg.DNSListen)
	return nil
}

// meshDNS lists the mesh DNS's addresses: the reserved IPv4 one and, with
// IPv6 on, its twin.
func (n *Node) meshDNS() []netip.Addr {
	out := []netip.Addr{n.pool.MeshDNS()}
	if a6 := n.twin(n.pool.MeshDNS()); a6.IsValid() {
		out = append(out, a6)
	}
	return out
}

// serveDNSLocal serves a mesh DNS address from kernel sockets: the
// address is made local to the host (on its loopback) and answered by
// GOMAXPROCS UDP sockets sharing it (SO_REUSEPORT, batched reads and
// writes) and a TCP listener, with the same resolver core as the packet
// path. Queries from this host's containers then go bridge → host → socket
// and back, never through the TUN; the packet-path hook keeps answering
// what does arrive there. If the sockets cannot be opened (another
// resolver bound the wildcard address on port 53), the address is released
// again, so that queries never reach a foreign server.
func (n *Node) serveDNSLocal(srv *dnsd.Server, lp LocalPlumbing, addr netip.Addr) error {
	if err := lp.HoldLocal(addr); err != nil {
		return err
	}
	release := func() {
		if err := lp.ReleaseLocal(addr); err != nil {
			n.log.Warn("release the mesh DNS address", "err", err)
		}
	}
	pcs, l, err := dnsd.ListenShared(netip.AddrPortFrom(addr, 53), runtime.GOMAXPROCS(0))
	if err != nil {
		release()
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, len(pcs))
	for i, pc := range pcs {
		var tcp net.Listener
		if i == 0 {
			tcp = l
		}
		go func() {
			defer func() { done <- struct{}{} }()
			if err := srv.Serve(ctx, pc, tcp); err != nil {
				n.log.Error("mesh DNS socket", "err", err)
			}
		}()
	}
	n.undo = append(n.undo, func() {
		cancel()
		for range pcs {
			<-done
		}
		release()
	})
	n.log.Info("mesh DNS on kernel sockets", "address", addr, "udp_sockets", len(pcs))
	return nil
}

// zone is the mesh DNS zone with its trailing dot.
func (n *Node) zone() string {
	z := n.cfg.DNSZone
	if z == "" {
		z = dnsd.DefaultZone
	}
	if !strings.HasSuffix(z, ".") {
		z += "."
	}
	return strings.ToLower(z)
}

// searchDomain is the mesh DNS zone without its trailing dot.
func (n *Node) searchDomain() string { return strings.TrimSuffix(n.zone(), ".") }

// routineDNS keeps the mesh DNS equal to the cluster's records: service
// endpoints of alive nodes, alive nodes' overlay addresses, and published
// ports as SRV records.
func (n *Node) routineDNS() {
	ch, cancel := n.mesh.Subscribe()
	defer cancel()
	t := time.NewTicker(dnsRefreshEvery)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
			// Coalesce a burst of events (a runtime attaching many
			// containers) into one rebuild of the zone: freshness within
			// a fraction of a second is plenty, and rebuilding per event
			// costs the attach path CPU.
			time.Sleep(dnsCoalesce)
			for len(ch) > 0 {
				<-ch
			}
		case <-t.C:
		}
		n.refreshDNS()
	}
}

// refreshDNS builds a snapshot from the store and membership and installs it
// when it differs from the last one.
func (n *Node) refreshDNS() {
	snap := n.dnsSnapshot()
	if n.lastDNS != nil && snapshotsEqual(*n.lastDNS, snap) {
		return
	}
	if err := n.dns.SetSnapshot(snap); err != nil {
		n.log.Warn("mesh DNS: records skipped", "err", err)
	}
	n.lastDNS = &snap
}

func (n *Node) dnsSnapshot() dnsd.Snapshot {
	var snap dnsd.Snapshot
	alive := map[string]bool{}
	// A node holds the twin of its overlay address when it runs IPv6 with
	// our prefix (as for its WireGuard peer).
	mine6 := n.cluster6()
	dual := map[string]bool{}
	twinOn := func(node string, a netip.Addr) netip.Addr {
		if !dual[node] {
			return netip.Addr{}
		}
		return n.twin(a)
	}
	for _, m := range n.mesh.Members() {
		if m.State != mesh.StateAlive && m.State != mesh.StateSuspect {
			continue
		}
		alive[m.Name] = true
		dual[m.Name] = mine6 != "" && m.Meta.Cluster6 == mine6
		if a, err := netip.ParseAddr(m.Meta.OverlayIP); err == nil {
			snap.Nodes = append(snap.Nodes, dnsd.NodeRecord{Name: m.Name, Addr: a, Addr6: twinOn(m.Name, a)})
		}
	}
	serviceOf := map[string]string{} // container → service
	addrOf := map[string]netip.Addr{}
	isAlive := func(owner string) bool { return alive[owner] }
	for _, ep := range records[api.ServiceEndpoint](n, serviceKind, isAlive) {
		a, err := netip.ParseAddr(ep.Address)
		if err != nil {
			continue
		}
		a6, _ := netip.ParseAddr(ep.Address6) // zero when it has none: no AAAA
		snap.Endpoints = append(snap.Endpoints, dnsd.Endpoint{Service: ep.Service, Container: ep.Container, Node: ep.Node, Addr: a, Addr6: a6})
		serviceOf[ep.Container] = ep.Service
		addrOf[ep.Container] = a
	}
	for _, g := range records[api.GuestRecord](n, guestKind, isAlive) {
		if a, err := netip.ParseAddr(g.Address); err == nil {
			// A guest holds its twin when its node runs IPv6 (its
			// config says so); nodes switch IPv6 forwarding on at
			// start (defaultNAT), so the twin answers from the start.
			snap.Guests = append(snap.Guests, dnsd.GuestRecord{Name: g.Name, Node: g.Node, Addr: a, Addr6: twinOn(g.Node, a)})
		}
	}
	for _, pm := range records[api.PortMapping](n, portKind, isAlive) {
		pr := dnsd.PortRecord{Proto: pm.Protocol, Port: uint16(pm.ContainerPort)}
		if pm.Service != "" {
			pr.Service = pm.Service
		} else if svc, ok := serviceOf[pm.Container]; ok {
			pr.Service, pr.Target = svc, addrOf[pm.Container]
		} else {
			continue
		}
		snap.Ports = append(snap.Ports, pr)
	}
	slices.SortFunc(snap.Nodes, func(a, b dnsd.NodeRecord) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(snap.Guests, func(a, b dnsd.GuestRecord) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(snap.Endpoints, func(a, b dnsd.Endpoint) int {
		return strings.Compare(a.Service+"/"+a.Container, b.Service+"/"+b.Container)
	})
	slices.SortFunc(snap.Ports, func(a, b dnsd.PortRecord) int {
		return cmp.Or(strings.Compare(a.Service, b.Service), strings.Compare(a.Proto, b.Proto),
			cmp.Compare(a.Port, b.Port), a.Target.Compare(b.Target))
	})
	return snap
}

func snapshotsEqual(a, b dnsd.Snapshot) bool {
	return slices.Equal(a.Nodes, b.Nodes) && slices.Equal(a.Endpoints, b.Endpoints) && slices.Equal(a.Ports, b.Ports) && slices.Equal(a.Guests, b.Guests)
}

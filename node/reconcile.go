package node

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/mesh"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// resyncEvery bounds how long a missed event can leave WireGuard out of date:
// the peer loop also runs on this tick.
const resyncEvery = 5 * time.Second

// startLoops starts the node's long-lived goroutines. Each stops when n.stop
// is closed; Close waits for them.
//
//   - RoutinePeers: mesh view → WireGuard peers, routes, peer events;
//   - RoutineClaims: a lost subnet conflict → renumbering;
//   - RoutineMeshEvents: membership and record events → a kick for the
//     peer loop;
//   - RoutineDNS: service records, members and ports → the mesh DNS;
//   - RoutineSweep: containers whose namespace vanished → detached; this
//     node's service and port records kept equal to its attachments and
//     ports; the NAT table converged (port targets follow renumbering).
func (n *Node) startLoops() {
	n.goLoop("RoutinePeers", n.routinePeers)
	n.goLoop("RoutineClaims", n.routineClaims)
	n.goLoop("RoutineMeshEvents", n.routineMeshEvents)
	n.goLoop("RoutineDNS", n.routineDNS)
	if n.containers != nil {
		n.goLoop("RoutineSweep", n.routineSweep)
	}
}

func (n *Node) goLoop(name string, fn func()) {
	n.loops.Add(1)
	go func() {
		defer n.loops.Done()
		n.log.Debug("routine started", "routine", name)
		defer n.log.Debug("routine stopped", "routine", name)
		fn()
	}()
}

// kickPeers asks the peer loop to run soon; it never blocks.
func (n *Node) kickPeers() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func (n *Node) routineMeshEvents() {
	ch, cancel := n.mesh.Subscribe()
	defer cancel()
	for {
		select {
		case <-n.stop:
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
			n.kickPeers()
		}
	}
}

func (n *Node) routinePeers() {
	t := time.NewTicker(resyncEvery)
	defer t.Stop()
	for {
		if err := n.reconcilePeers(); err != nil {
			n.log.Warn("reconcile peers", "err", err)
		}
		select {
		case <-n.stop:
			return
		case <-n.kick:
			// Let a burst of gossip settle into one pass.
			time.Sleep(50 * time.Millisecond)
		case <-t.C:
		}
	}
}

// reconcilePeers makes the WireGuard peers and the routes match the mesh
// view, and reports peers coming and going. Only differences are applied.
func (n *Node) reconcilePeers() error {
	members := n.mesh.Members()
	want := desiredPeers(n.key.PublicKey(), members, n.claimer.Holders())

	n.mu.Lock()
	defer n.mu.Unlock()
	n.peerEventsLocked(members)
	text, err := n.dev.IpcGet()
	if err != nil {
		return fmt.Errorf("read WireGuard peers: %w", err)
	}
	dev := parseUAPIPeers(text)
	if keepaliveRoles(n.key, want, dev, n.peerAdded, time.Now(), n.cfg.Keepalive) {
		time.AfterFunc(handshakeSettle, n.kickPeers)
	}
	if set := uapiPeerDiff(dev, want, n.peerEndpoints); set != "" {
		if err := n.dev.IpcSet(set); err != nil {
			return fmt.Errorf("set WireGuard peers: %w", err)
		}
		endpoints := make(map[wgtypes.Key]netip.AddrPort, len(want))
		for _, p := range want {
			endpoints[p.Key] = p.Endpoint
		}
		n.peerEndpoints = endpoints
		n.log.Debug("WireGuard peers set", "peers", len(want), "uapi", strings.ReplaceAll(set, "\n", " "))
	}
	var routes []netip.Prefix
	for _, p := range want {
		if slices.Contains(p.AllowedIPs, p.Subnet) {
			routes = append(routes, p.Subnet)
		}
	}
	slices.SortFunc(routes, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	if !slices.Equal(routes, n.routes) {
		if err := n.cfg.Plumbing.SetRoutes(n.cfg.Interface, routes); err != nil {
			return fmt.Errorf("set routes on %s: %w", n.cfg.Interface, err)
		}
		n.routes = routes
	}
	return nil
}

// peerEventsLocked publishes peer_up and peer_down events for members whose
// liveness changed since the last pass.
func (n *Node) peerEventsLocked(members []mesh.Member) {
	seen := map[string]bool{}
	for _, m := range members {
		if m.Self {
			continue
		}
		seen[m.Name] = true
		alive := m.State == mesh.StateAlive || m.State == mesh.StateSuspect
		was, known := n.alive[m.Name]
		switch {
		case alive && (!known || !was):
			n.events.publish(api.Event{Type: api.EventPeerUp, Peer: m.Name, Address: m.Meta.OverlayIP})
			n.log.Info("peer up", "peer", m.Name, "subnet", m.Meta.NodeSubnet, "endpoint", m.Meta.Endpoint)
		case !alive && known && was:
			n.events.publish(api.Event{Type: api.EventPeerDown, Peer: m.Name, Message: string(m.State)})
			n.log.Info("peer down", "peer", m.Name, "state", m.State)
		}
		n.alive[m.Name] = alive
	}
	for name, was := range n.alive {
		if !seen[name] {
			if was {
				n.events.publish(api.Event{Type: api.EventPeerDown, Peer: name, Message: "forgotten"})
			}
			delete(n.alive, name)
		}
	}
}

// routineClaims renumbers the node when it loses a subnet conflict.
func (n *Node) routineClaims() {
	for {
		select {
		case <-n.stop:
			return
		case ch, ok := <-n.claimer.Changes():
			if !ok {
				return
			}
			n.renumber(ch)
		}
	}
}

// renumber moves the node to the subnet the claimer picked after losing a
// conflict: leases, the TUN address and the meta follow, and the change is
// reported as an event and a log line naming both nodes and both subnets.
func (n *Node) renumber(ch mesh.ClaimChange) {
	n.metrics.conflictLost()
	n.log.Warn("lost subnet conflict, renumbering",
		"subnet", ch.Old.Subnet, "winner", ch.Winner.Name, "winner_key", ch.Winner.Node,
		"loser", ch.Old.Name, "new_subnet", ch.New.Subnet)
	n.events.publish(api.Event{
		Type:      api.EventConflict,
		Winner:    ch.Winner.Name,
		Loser:     n.cfg.Name,
		OldSubnet: ch.Old.Subnet.String(),
		NewSubnet: ch.New.Subnet.String(),
	})
	if err := n.applyClaim(ch.New); err != nil {
		n.log.Error("renumber", "err", err)
		return
	}
	n.events.publish(api.Event{
		Type:      api.EventRenumber,
		Node:      n.cfg.Name,
		OldSubnet: ch.Old.Subnet.String(),
		NewSubnet: ch.New.Subnet.String(),
		Address:   ipam.OverlayAddr(ch.New.Subnet).String(),
		Message:   fmt.Sprintf("lost %s to %s", ch.Old.Subnet, ch.Winner.Name),
	})
	n.kickPeers()
}

package node

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/zlmesh/zlmesh/api"
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
//   - RoutineClaims: a lost block conflict → renumbering;
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
	n.goLoop("RoutineGuests", n.routineGuests)
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
	members := n.samePlan(n.mesh.Members())
	want := desiredPeers(n.key.PublicKey(), members, n.claimer.Holders(), n.twins)

	n.mu.Lock()
	defer n.mu.Unlock()
	n.peerEventsLocked(members)
	text, err := n.dev.IpcGet()
	if err != nil {
		return fmt.Errorf("read WireGuard peers: %w", err)
	}
	dev := parseUAPIPeers(text)
	want = n.withoutGuestsLocked(dev, want)
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
		routes = append(routes, p.Blocks...)
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

// samePlan drops the members whose address plan differs from this node's
// (another --cluster-cidr or --block-prefix, or another --cluster-cidr6 when
// both run IPv6): their blocks cannot be routed or contested consistently,
// so they get no WireGuard peer. Each is logged as an error once.
func (n *Node) samePlan(members []mesh.Member) []mesh.Member {
	mine, mine6 := n.plan(), n.cluster6()
	return slices.DeleteFunc(members, func(m mesh.Member) bool {
		if m.Self {
			return false
		}
		other4 := m.Meta.Plan != "" && m.Meta.Plan != mine
		other6 := m.Meta.Cluster6 != "" && mine6 != "" && m.Meta.Cluster6 != mine6
		if !other4 && !other6 {
			return false
		}
		theirs := m.Meta.Plan + " " + m.Meta.Cluster6
		n.mu.Lock()
		logged := n.planWarned[m.Name] == theirs
		n.planWarned[m.Name] = theirs
		n.mu.Unlock()
		switch {
		case logged:
		case other4:
			n.log.Error("peer runs another address plan; ignoring it (every node of a cluster needs the same --cluster-cidr and --block-prefix)",
				"peer", m.Name, "peer_plan", m.Meta.Plan, "plan", mine)
		default:
			n.log.Error("peer runs another cluster IPv6 prefix; ignoring it (every node of a cluster needs the same --cluster-cidr6, or the same cluster key when it is derived)",
				"peer", m.Name, "peer_cluster6", m.Meta.Cluster6, "cluster6", mine6)
		}
		return true
	})
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
			n.log.Info("peer up", "peer", m.Name, "first_block", m.Meta.FirstBlock, "endpoint", m.Meta.Endpoint)
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

// routineClaims renumbers a block's containers when the node loses it in
// a conflict.
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

// renumber moves the node from a block it lost to the block the claimer
// picked in its place: leases, containers (and the TUN address and the meta
// when it was the first block) follow, and the change is reported as
// events and a log line naming both nodes and both blocks.
func (n *Node) renumber(ch mesh.ClaimChange) {
	n.metrics.conflictLost()
	n.log.Warn("lost block conflict, renumbering",
		"block", ch.Old.Block, "winner", ch.Winner.Name, "winner_key", ch.Winner.Node,
		"loser", ch.Old.Name, "new_block", ch.New.Block, "first", ch.First)
	n.events.publish(api.Event{
		Type:     api.EventConflict,
		Winner:   ch.Winner.Name,
		Loser:    n.cfg.Name,
		OldBlock: ch.Old.Block.String(),
		NewBlock: ch.New.Block.String(),
	})
	n.moveBlock(ch)
	n.events.publish(api.Event{
		Type:     api.EventRenumber,
		Node:     n.cfg.Name,
		OldBlock: ch.Old.Block.String(),
		NewBlock: ch.New.Block.String(),
		Address:  n.alloc.NodeAddr().String(),
		Message:  fmt.Sprintf("lost %s to %s", ch.Old.Block, ch.Winner.Name),
	})
	n.kickPeers()
}

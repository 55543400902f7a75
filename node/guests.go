package node

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/ipam"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Guests are plain WireGuard clients (VMs, laptops, phones running no
// zlmesh) that join the mesh through this node: each is a WireGuard peer of
// this node only, with AllowedIPs its /32, an address leased from this
// node's blocks (so every other node routes it through this node with no
// change: this node's AllowedIPs on them are its blocks), and a record in
// the replicated store (NAME.guest.<zone> in every node's DNS). They go
// through the endpoint pipeline (endpoint.go) with guestPlumbing as the
// plumbing step, persist in guestsFile, come back on restart with the same
// key and address (restoreGuests), and follow their block when it moves
// (renumberGuests). zlmesh never stores a guest's private key.

// guestsFile is the node's record of its guests in the state dir (a
// journalMap: snapshot plus guestsFile+".log").
const guestsFile = "guests.json"

// guestKind is the record-store kind of guests; the key is "<node>/<name>",
// the value an api.GuestRecord.
const guestKind = "guest"

// guestService is the ipam service of guest leases; their lease key is
// guestLeasePrefix+name (no container id holds a '/').
const (
	guestService     = "guest"
	guestLeasePrefix = "guest/"
)

// guestKeepalive is the PersistentKeepalive of a guest's config, in seconds:
// it keeps a guest behind NAT reachable.
const guestKeepalive = 25

func guestLease(name string) string { return guestLeasePrefix + name }

// guestOfLease returns the guest name of a lease key, if it is a guest's.
func guestOfLease(key string) (string, bool) { return strings.CutPrefix(key, guestLeasePrefix) }

// guest is one guest as the state file keeps it. No private key, ever.
type guest struct {
	Name      string     `json:"name"`
	PublicKey string     `json:"public_key"` // base64
	Address   netip.Addr `json:"address"`
	// Endpoint is the --endpoint override of its config ("" for this
	// node's own).
	Endpoint  string    `json:"endpoint,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// OldAddress is set when the guest was renumbered after its config
	// was handed out: the address that config holds.
	OldAddress netip.Addr `json:"old_address,omitzero"`
	// LastEndpoint is where the guest was last heard from (kept by
	// RoutineGuests when it changes), so that a restarted node can start
	// the handshake itself instead of waiting for the guest to give up on
	// its old session (15 s or more).
	LastEndpoint string `json:"last_endpoint,omitempty"`
}

func (g guest) key() wgtypes.Key {
	k, _ := wgtypes.ParseKey(g.PublicKey)
	return k
}

// validateGuest checks a request and returns the guest's public key (made
// here when none is given: priv is then set).
func validateGuest(req api.GuestRequest) (pub wgtypes.Key, priv *wgtypes.Key, err error) {
	if err := validGuestName(req.Name); err != nil {
		return pub, nil, api.Errorf(api.CodeBadRequest, "%v", err)
	}
	if req.Endpoint != "" {
		host, port, err := net.SplitHostPort(req.Endpoint)
		p, perr := strconv.ParseUint(port, 10, 16)
		if err != nil || host == "" || perr != nil || p == 0 {
			return pub, nil, api.Errorf(api.CodeBadRequest, "guest %s: endpoint %q is not host:port", req.Name, req.Endpoint)
		}
	}
	if req.PublicKey == "" {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return pub, nil, fmt.Errorf("guest %s: make a key pair: %w", req.Name, err)
		}
		return k.PublicKey(), &k, nil
	}
	pub, err = wgtypes.ParseKey(req.PublicKey)
	if err != nil || pub == (wgtypes.Key{}) {
		return pub, nil, api.Errorf(api.CodeBadRequest, "guest %s: public key %q is not a WireGuard key (32 bytes, base64)", req.Name, req.PublicKey)
	}
	return pub, nil, nil
}

// validGuestName accepts a DNS label: 1 to 63 of a-z, 0-9 and '-', not at
// either end.
func validGuestName(name string) error {
	switch {
	case name == "":
		return errors.New("guest name is empty")
	case len(name) > 63:
		return fmt.Errorf("guest name %.20q... is %d characters, more than 63", name, len(name))
	case name[0] == '-' || name[len(name)-1] == '-':
		return fmt.Errorf("guest name %q starts or ends with '-'", name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') && c != '-' {
			return fmt.Errorf("guest name %q has %q at %d (a DNS label: only a-z, 0-9 and '-')", name, c, i)
		}
	}
	return nil
}

// AddGuest adds a guest through the endpoint pipeline: validate, claim the
// name and the key, lease an address (a new block when the node's are
// full), a WireGuard peer (guestPlumbing), the state file, the record, the
// metric, the event. A failure at any step undoes the steps before it.
func (n *Node) AddGuest(ctx context.Context, req api.GuestRequest) (api.Guest, error) {
	start := time.Now()
	pub, priv, err := validateGuest(req)
	if err != nil {
		return api.Guest{}, err
	}
	keyClaim := "key/" + pub.String() // names hold no '/'
	if !n.guests.claim(req.Name) {
		return api.Guest{}, api.Errorf(api.CodeAlreadyExists, "guest %s: an add or remove is under way", req.Name)
	}
	defer n.guests.release(req.Name)
	if !n.guests.claim(keyClaim) {
		return api.Guest{}, api.Errorf(api.CodeAlreadyExists, "guest %s: public key %s is being added for another guest", req.Name, pub)
	}
	defer n.guests.release(keyClaim)
	if _, ok := n.guests.get(req.Name); ok {
		return api.Guest{}, api.Errorf(api.CodeAlreadyExists, "guest %s already exists", req.Name)
	}
	if who := n.keyUser(pub); who != "" {
		return api.Guest{}, api.Errorf(api.CodeAlreadyExists, "guest %s: public key %s is already %s's", req.Name, pub, who)
	}
	g := guest{Name: req.Name, PublicKey: pub.String(), Endpoint: req.Endpoint, CreatedAt: time.Now().UTC()}
	_, err = n.addEndpoint(ctx, start, endpointSteps{
		service:  guestService,
		lease:    guestLease(req.Name),
		plumbing: &guestPlumbing{n: n, key: pub},
		journal: func(addr netip.Addr) error {
			g.Address = addr
			return n.guests.put(g.Name, g)
		},
		record:  func(netip.Addr) { n.putGuestRecord(g) },
		observe: n.metrics.observeGuestAdd,
		event: func(addr netip.Addr) api.Event {
			return api.Event{Type: api.EventGuestAdd, Guest: g.Name, Address: addr.String(), Node: n.cfg.Name}
		},
		fail: func(err error) error { return guestError(req.Name, err) },
	})
	if err != nil {
		return api.Guest{}, err
	}
	n.log.Info("guest added", "guest", g.Name, "address", g.Address, "public_key", g.PublicKey, "key_made_here", priv != nil,
		"took", time.Since(start).Round(time.Microsecond))
	return n.apiGuest(g, nil, priv), nil
}

// keyUser names who holds pub already: this node, a member of the mesh, or
// a guest of this node; "" when nobody.
func (n *Node) keyUser(pub wgtypes.Key) string {
	if pub == n.key.PublicKey() {
		return "this node"
	}
	for _, m := range n.mesh.Members() {
		if m.Meta.PublicKey == pub.String() {
			return "node " + m.Name
		}
	}
	for _, g := range n.guests.list() {
		if g.PublicKey == pub.String() {
			return "guest " + g.Name
		}
	}
	return ""
}

// guestError maps allocation and plumbing errors to API errors.
func guestError(name string, err error) error {
	code := api.CodeInternal
	switch {
	case errors.Is(err, ipam.ErrExhausted), errors.Is(err, ipam.ErrFull):
		code = api.CodeExhausted
	case errors.Is(err, ipam.ErrExists):
		code = api.CodeAlreadyExists
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code = api.CodeNotReady
	}
	return api.Errorf(code, "add guest %s: %v", name, err)
}

// RemoveGuest removes a guest: its peer, its record in the state dir, its
// address, its records. CodeNotFound when there is no such guest.
func (n *Node) RemoveGuest(ctx context.Context, name string) error {
	if err := validGuestName(name); err != nil {
		return api.Errorf(api.CodeBadRequest, "%v", err)
	}
	if !n.guests.claim(name) {
		return api.Errorf(api.CodeAlreadyExists, "guest %s: an add or remove is under way", name)
	}
	defer n.guests.release(name)
	g, ok := n.guests.get(name)
	if !ok {
		return api.Errorf(api.CodeNotFound, "no guest %s on this node", name)
	}
	// Peer, state, lease, in this order: a crash between two steps leaves
	// a lease without a guest at worst, which the next start releases.
	if err := (&guestPlumbing{n: n, key: g.key()}).unplumb(ctx); err != nil {
		return fmt.Errorf("remove guest %s: %w", name, err)
	}
	if err := n.guests.remove(name); err != nil {
		return fmt.Errorf("remove guest %s: %w", name, err)
	}
	n.releaseLease(guestLease(name))
	n.mesh.Store().Delete(guestKind, n.guestKey(name))
	n.events.publish(api.Event{Type: api.EventGuestRemove, Guest: name, Address: g.Address.String(), Node: n.cfg.Name})
	n.log.Info("guest removed", "guest", name, "address", g.Address)
	return nil
}

// Guests lists this node's guests with their WireGuard state.
func (n *Node) Guests() ([]api.Guest, error) {
	text, err := n.dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("read WireGuard peers: %w", err)
	}
	dev := parseUAPIPeers(text)
	out := []api.Guest{}
	for _, g := range n.guests.list() {
		out = append(out, n.apiGuest(g, dev[g.PublicKey], nil))
	}
	return out, nil
}

// apiGuest is g as the API shows it; d is its device peer (nil: not read),
// priv the private key made by this add (nil: none).
func (n *Node) apiGuest(g guest, d *devPeer, priv *wgtypes.Key) api.Guest {
	out := api.Guest{
		Name:      g.Name,
		PublicKey: g.PublicKey,
		Address:   g.Address.String(),
		Address6:  addrString(n.twin(g.Address)),
		DNSName:   g.Name + "." + guestKind + "." + n.searchDomain(),
		Node:      n.cfg.Name,
		Config:    n.guestConfig(g, priv),
		State:     api.GuestWaiting,
		CreatedAt: g.CreatedAt,
	}
	if priv != nil {
		out.PrivateKey = priv.String()
	}
	if g.OldAddress.IsValid() {
		out.Renumbered, out.OldAddress = true, g.OldAddress.String()
	}
	if d != nil {
		out.Endpoint = d.Endpoint
		out.LastHandshake = d.LastHandshake
		out.RxBytes, out.TxBytes = d.RxBytes, d.TxBytes
		if guestConnected(d, time.Now()) {
			out.State = api.GuestConnected
		}
	}
	return out
}

func guestConnected(d *devPeer, now time.Time) bool {
	return d != nil && !d.LastHandshake.IsZero() && now.Sub(d.LastHandshake) < api.GuestHandshakeWindow
}

// guestConfig renders g's wg-quick configuration: its only peer is this
// node, through which the whole cluster CIDR (the mesh DNS address
// included) is reached, and with IPv6 on the cluster's IPv6 prefix, the
// guest holding its IPv6 twin too.
func (n *Node) guestConfig(g guest, priv *wgtypes.Key) string {
	ep := g.Endpoint
	if ep == "" {
		ep = n.endpoint().String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# zlmesh guest %s (%s.%s.%s) through node %s\n", g.Name, g.Name, guestKind, n.searchDomain(), n.cfg.Name)
	b.WriteString("[Interface]\n")
	if priv != nil {
		fmt.Fprintf(&b, "PrivateKey = %s\n", priv)
	} else {
		fmt.Fprintf(&b, "# PrivateKey = <the private key of %s>\n", g.PublicKey)
	}
	addrs, dns, allowed := hostPrefix(g.Address).String(), n.pool.MeshDNS().String(), n.pool.Cluster().String()
	if a6 := n.twin(g.Address); a6.IsValid() {
		addrs += ", " + hostPrefix(a6).String()
		dns += ", " + n.twin(n.pool.MeshDNS()).String()
		allowed += ", " + n.twins.Cluster6().String()
	}
	fmt.Fprintf(&b, "Address = %s\n", addrs)
	fmt.Fprintf(&b, "DNS = %s, %s\n", dns, n.searchDomain())
	b.WriteString("\n[Peer]\n")
	fmt.Fprintf(&b, "PublicKey = %s\n", n.key.PublicKey())
	fmt.Fprintf(&b, "Endpoint = %s\n", ep)
	fmt.Fprintf(&b, "AllowedIPs = %s\n", allowed)
	fmt.Fprintf(&b, "PersistentKeepalive = %d\n", guestKeepalive)
	return b.String()
}

// guestPlumbing is a guest's plumbing step: a WireGuard peer on this node's
// device with AllowedIPs the guest's /32. The peer is registered in
// n.guestPeers under n.mu together with the device change, so that
// reconcilePeers (which holds n.mu) never sees a guest peer it does not
// know and never removes one.
type guestPlumbing struct {
	n   *Node
	key wgtypes.Key
	// dial, when valid, is the guest's last endpoint: plumb sets it with a
	// persistent keepalive, which starts a handshake at once (a restarted
	// node); RoutineGuests turns the keepalive off once the guest is
	// connected (a guest that roamed or went away is not chased).
	dial netip.AddrPort
}

func (p *guestPlumbing) plumb(_ context.Context, addr netip.Addr) error {
	n := p.n
	n.mu.Lock()
	defer n.mu.Unlock()
	n.guestPeers[p.key] = addr
	set := fmt.Sprintf("public_key=%s\nreplace_allowed_ips=true\nallowed_ip=%s\n", hex.EncodeToString(p.key[:]), hostPrefix(addr))
	if a6 := n.twin(addr); a6.IsValid() {
		set += fmt.Sprintf("allowed_ip=%s\n", hostPrefix(a6))
	}
	if p.dial.IsValid() {
		set += fmt.Sprintf("endpoint=%s\npersistent_keepalive_interval=%d\n", p.dial, guestKeepalive)
	}
	if err := n.dev.IpcSet(set); err != nil {
		delete(n.guestPeers, p.key)
		n.dev.IpcSet(fmt.Sprintf("public_key=%s\nremove=true\n", hex.EncodeToString(p.key[:])))
		return fmt.Errorf("WireGuard peer %s: %w", p.key, err)
	}
	return nil
}

func (p *guestPlumbing) unplumb(context.Context) error {
	n := p.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.dev.IpcSet(fmt.Sprintf("public_key=%s\nremove=true\n", hex.EncodeToString(p.key[:]))); err != nil {
		return fmt.Errorf("remove WireGuard peer %s: %w", p.key, err)
	}
	delete(n.guestPeers, p.key)
	return nil
}

// withoutGuestsLocked drops the guests' peers from the device's peers and
// from the wanted mesh peers before uapiPeerDiff compares them: the diff
// neither removes a guest's peer nor gives a guest's key to a mesh node
// (a guest keeps its key; the node is logged). The caller holds n.mu.
func (n *Node) withoutGuestsLocked(dev map[string]*devPeer, want []wgPeer) []wgPeer {
	if len(n.guestPeers) == 0 {
		return want
	}
	for k := range n.guestPeers {
		delete(dev, k.String())
	}
	out := want[:0]
	for _, p := range want {
		if _, ok := n.guestPeers[p.Key]; ok {
			n.log.Error("a node holds a guest's public key; no peer for it", "peer", p.Name, "public_key", p.Key)
			continue
		}
		out = append(out, p)
	}
	return out
}

func (n *Node) guestKey(name string) string { return n.cfg.Name + "/" + name }

func (n *Node) putGuestRecord(g guest) {
	v, _ := json.Marshal(api.GuestRecord{Name: g.Name, Address: g.Address.String(), Node: n.cfg.Name})
	n.mesh.Store().Put(guestKind, n.guestKey(g.Name), v)
}

// loadGuests opens the guests' state file.
func loadGuests(stateDir string) (*journalMap[guest], error) {
	return openJournalMap[guest](filepath.Join(stateDir, guestsFile), "guests")
}

// restoreGuests runs once at start, once the WireGuard device is up: every
// guest of the previous life gets its peer back with the same key, at its
// lease's address (a lease moved while the node was down renumbers the
// guest); a guest whose lease is missing is forgotten; a guest lease
// without a guest (a crash between lease and record) is released.
func (n *Node) restoreGuests() {
	for _, g := range n.guests.list() {
		lease, ok := n.alloc.Lease(guestLease(g.Name))
		if !ok || lease.Service != guestService {
			n.log.Error("guest without its lease; removing it", "guest", g.Name, "address", g.Address)
			if err := n.guests.remove(g.Name); err != nil {
				n.log.Error("forget guest", "guest", g.Name, "err", err)
			}
			continue
		}
		if lease.Addr != g.Address {
			n.log.Warn("guest renumbered while the node was down; it needs its new config", "guest", g.Name, "from", g.Address, "to", lease.Addr)
			if !g.OldAddress.IsValid() {
				g.OldAddress = g.Address
			}
			g.Address = lease.Addr
			if err := n.guests.put(g.Name, g); err != nil {
				n.log.Error("record renumbered guest", "guest", g.Name, "err", err)
			}
			n.events.publish(api.Event{Type: api.EventGuestMove, Guest: g.Name, OldAddress: g.OldAddress.String(), Address: g.Address.String(), Node: n.cfg.Name,
				Message: "the guest needs its new config (zlmesh guest list)"})
		}
		dial, _ := netip.ParseAddrPort(g.LastEndpoint)
		if err := (&guestPlumbing{n: n, key: g.key(), dial: dial}).plumb(context.Background(), g.Address); err != nil {
			n.log.Error("restore guest", "guest", g.Name, "err", err)
			continue
		}
		n.log.Info("guest restored", "guest", g.Name, "address", g.Address, "last_endpoint", g.LastEndpoint)
	}
	for _, l := range n.alloc.Leases() {
		if name, ok := guestOfLease(l.Container); ok {
			if _, have := n.guests.get(name); !have {
				n.log.Info("releasing guest address with no guest", "guest", name, "address", l.Addr)
				n.releaseLease(l.Container)
			}
		}
	}
}

// renumberGuests moves every guest in moves to its new address: its peer's
// AllowedIPs, its state, its record, an event saying it needs its new
// config. The caller holds renumberMu.
func (n *Node) renumberGuests(moves []ipam.Move) {
	for _, mv := range moves {
		name, ok := guestOfLease(mv.Old.Container)
		if !ok || mv.Old.Addr == mv.New.Addr {
			continue
		}
		g, ok := n.guests.get(name)
		if !ok {
			continue
		}
		if err := (&guestPlumbing{n: n, key: g.key()}).plumb(context.Background(), mv.New.Addr); err != nil {
			n.log.Error("renumber guest", "guest", name, "from", mv.Old.Addr, "to", mv.New.Addr, "err", err)
			continue
		}
		if !g.OldAddress.IsValid() {
			g.OldAddress = g.Address
		}
		g.Address = mv.New.Addr
		if err := n.guests.put(name, g); err != nil {
			n.log.Error("record renumbered guest", "guest", name, "err", err)
		}
		n.putGuestRecord(g)
		n.events.publish(api.Event{Type: api.EventGuestMove, Guest: name, OldAddress: mv.Old.Addr.String(), Address: mv.New.Addr.String(), Node: n.cfg.Name,
			Message: "the guest needs its new config (zlmesh guest list)"})
		n.log.Warn("guest renumbered; it needs its new config", "guest", name, "from", mv.Old.Addr, "to", mv.New.Addr)
	}
}

// guestEvery is how often RoutineGuests checks handshakes and records.
const guestEvery = 2 * time.Second

// routineGuests publishes guest_up and guest_down as guests' handshakes
// come and go, and keeps this node's guest records equal to its guests.
func (n *Node) routineGuests() {
	t := time.NewTicker(guestEvery)
	defer t.Stop()
	up := map[string]bool{}
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.guestEvents(up, time.Now())
		n.syncGuestRecords()
	}
}

// guestEvents publishes a guest_up or guest_down for each guest whose
// connected state (guestConnected) changed since the last call; up holds
// the last states.
func (n *Node) guestEvents(up map[string]bool, now time.Time) {
	text, err := n.dev.IpcGet()
	if err != nil {
		return
	}
	dev := parseUAPIPeers(text)
	seen := map[string]bool{}
	for _, g := range n.guests.list() {
		seen[g.Name] = true
		d := dev[g.PublicKey]
		conn := guestConnected(d, now)
		n.followGuest(g, d, conn)
		switch {
		case conn && !up[g.Name]:
			n.events.publish(api.Event{Type: api.EventGuestUp, Guest: g.Name, Address: g.Address.String(), Node: n.cfg.Name, Message: d.Endpoint})
			n.log.Info("guest up", "guest", g.Name, "endpoint", d.Endpoint)
		case !conn && up[g.Name]:
			n.events.publish(api.Event{Type: api.EventGuestDown, Guest: g.Name, Address: g.Address.String(), Node: n.cfg.Name, Message: "no handshake"})
			n.log.Info("guest down", "guest", g.Name)
		}
		up[g.Name] = conn
	}
	for name := range up {
		if !seen[name] {
			delete(up, name)
		}
	}
}

// followGuest records where a guest was last heard from when that changed
// (it roamed, or it is new), and turns off the persistent keepalive a
// restore set once the guest is connected.
func (n *Node) followGuest(g guest, d *devPeer, connected bool) {
	if d == nil {
		return
	}
	if connected && d.Keepalive != 0 {
		k := g.key()
		n.mu.Lock()
		if _, ok := n.guestPeers[k]; ok {
			if err := n.dev.IpcSet(fmt.Sprintf("public_key=%s\nupdate_only=true\npersistent_keepalive_interval=0\n", hex.EncodeToString(k[:]))); err != nil {
				n.log.Warn("guest keepalive off", "guest", g.Name, "err", err)
			}
		}
		n.mu.Unlock()
	}
	if d.Endpoint == "" || d.Endpoint == g.LastEndpoint || !n.guests.claim(g.Name) {
		return
	}
	defer n.guests.release(g.Name)
	cur, ok := n.guests.get(g.Name)
	if !ok || cur.PublicKey != g.PublicKey {
		return // removed meanwhile
	}
	cur.LastEndpoint = d.Endpoint
	if err := n.guests.put(cur.Name, cur); err != nil {
		n.log.Warn("record guest endpoint", "guest", g.Name, "err", err)
		return
	}
	if g.LastEndpoint != "" {
		n.log.Info("guest roamed", "guest", g.Name, "from", g.LastEndpoint, "to", d.Endpoint)
	}
}

// syncGuestRecords deletes this node's guest records without a guest and
// writes missing or stale ones (records of an earlier life come back
// through anti-entropy, or not at all after a restart of the whole
// cluster).
func (n *Node) syncGuestRecords() {
	want := map[string]guest{}
	for _, g := range n.guests.list() {
		want[n.guestKey(g.Name)] = g
	}
	st := n.mesh.Store()
	for _, r := range st.List(guestKind) {
		if r.Owner != n.cfg.Name && !strings.HasPrefix(r.Key, n.cfg.Name+"/") {
			continue
		}
		g, ok := want[r.Key]
		if !ok {
			st.Delete(guestKind, r.Key)
			continue
		}
		var rec api.GuestRecord
		if json.Unmarshal(r.Value, &rec) == nil && rec.Address == g.Address.String() && r.Owner == n.cfg.Name {
			delete(want, r.Key)
		}
	}
	for _, g := range want {
		n.putGuestRecord(g)
	}
}

// Package node runs one zlmesh node: it is the only package that wires the
// others together.
//
// Start brings a node up in this order, undoing every step already made if a
// later one fails:
//
//  1. the state dir (locked, so one node owns it) and the private key;
//  2. the address allocator over the state dir (ipam); the attachments of
//     the previous life (live ones adopted, the rest cleaned up); the
//     published ports and the NAT table (kept in the kernel meanwhile);
//  3. the control socket (listening, not yet serving);
//  4. the TUN, wrapped in the packet-path tun.Wrapper;
//  5. the wireguard-go device on the Wrapper, its UDP port and its UAPI
//     socket (so `wg show` works);
//  6. membership (mesh): gossip, the record store, re-join;
//  7. the block claims (the first block holds the node's overlay address;
//     stored blocks another node took meanwhile are replaced and their
//     containers renumbered), the TUN's overlay address, this node's meta,
//     the NAT table, the mesh DNS hooked into the packet path;
//  8. Docker's driver socket (docker.go) when asked for, the reconcile
//     loops, then the control socket starts serving.
//
// The reconcile loops (reconcile.go) turn what the mesh says into kernel and
// WireGuard state: members and block claims → WireGuard peers and routes; a
// lost block conflict → renumbering of that block's containers (and of the
// node when it was its first block); empty blocks → released (blocks.go);
// records → the mesh DNS (dns.go); vanished namespaces → detach (sweep.go);
// published ports → the NAT table (ports.go).
package node

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/dnsd"
	"github.com/zlmesh/zlmesh/internal/buildinfo"
	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/ipam/disk"
	"github.com/zlmesh/zlmesh/mesh"
	"github.com/zlmesh/zlmesh/tun"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Version is the software version gossiped in every node's meta: the main
// module's version from the binary's build info, as `zlmesh version` shows.
var Version = buildinfo.Get().Version

// Files in the state dir besides the private key.
const (
	ipamFile  = "ipam.json"  // the block claims and container leases (and its journal ipam.json.log)
	peersFile = "peers.json" // peers seen, for re-joining
	lockFile  = "state.lock" // held while a node runs on this state dir
)

// Node is a running zlmesh node. Its methods are safe for concurrent use.
type Node struct {
	cfg  Config
	log  *slog.Logger
	key  wgtypes.Key
	pool *ipam.Pool
	// twins maps the overlay's IPv4 addresses and blocks to their IPv6
	// twins; nil with IPv6 off (Config.NoIPv6).
	twins *ipam.Twins

	alloc      *ipam.Allocator
	attach     *attachments
	guests     *journalMap[guest] // this node's guests (guests.go)
	containers Containers         // nil where container plumbing is unsupported
	renumberMu sync.RWMutex       // held for writing while a block of the node moves
	growMu     sync.Mutex         // one block claim at a time
	metrics    *metrics
	ports      *ports
	nat        NAT // nil where kernel NAT is unsupported
	dns        *dnsd.Server
	lastDNS    *dnsd.Snapshot // owned by RoutineDNS after Start
	wrap       *tun.Wrapper
	dev        *device.Device
	uapi       net.Listener
	mesh       *mesh.Mesh
	claimer    *mesh.Claimer
	events     *eventHub
	us         *userspaceNode // nil in kernel mode

	ctlLn  net.Listener
	ctlSrv *http.Server
	docker *dockerServer // nil without Config.DockerPlugin

	startedAt time.Time
	kick      chan struct{} // wakes the reconcile loop; never blocks
	stop      chan struct{} // closed to stop the loops
	loops     sync.WaitGroup
	done      chan struct{} // closed when the node has stopped
	closeOnce sync.Once
	closeErr  error
	undo      []func() // teardown of what Start made, in making order

	// mu guards the fields below.
	mu            sync.Mutex
	claims        []ipam.Claim                   // the node's blocks, first block first
	emptySince    map[netip.Prefix]time.Time     // blocks seen empty, for release
	planWarned    map[string]string              // peer → the other plan it was logged with
	peerEndpoints map[wgtypes.Key]netip.AddrPort // endpoint last set per peer
	peerAdded     map[wgtypes.Key]time.Time      // when each peer was added, for keepaliveRoles
	routes        []netip.Prefix
	alive         map[string]bool            // peer name → alive, for peer up/down events
	guestPeers    map[wgtypes.Key]netip.Addr // guests' WireGuard peers and their addresses (guestPlumbing)
}

// Start brings a node up (see the package comment for the order). On error
// nothing it made is left behind. ctx bounds the start only.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if err := cfg.Normalize(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:           cfg,
		log:           cfg.Logger,
		events:        newEventHub(),
		startedAt:     time.Now().UTC(),
		kick:          make(chan struct{}, 1),
		stop:          make(chan struct{}),
		done:          make(chan struct{}),
		peerEndpoints: map[wgtypes.Key]netip.AddrPort{},
		peerAdded:     map[wgtypes.Key]time.Time{},
		alive:         map[string]bool{},
		guestPeers:    map[wgtypes.Key]netip.Addr{},
		emptySince:    map[netip.Prefix]time.Time{},
		planWarned:    map[string]string{},
		metrics:       newMetrics(),
	}
	defer func() {
		if err != nil {
			n.teardown()
		}
	}()
	if cfg.Userspace != nil {
		if err := n.initUserspace(); err != nil {
			return nil, err
		}
		cfg = n.cfg
	}

	// 1. State dir and key.
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	unlock, err := lockStateDir(filepath.Join(cfg.StateDir, lockFile))
	if err != nil {
		return nil, err
	}
	n.undo = append(n.undo, unlock)
	key, created, err := loadOrCreateKey(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	n.key = key
	n.log = n.log.With("node", cfg.Name)
	n.log.Info("identity", "public_key", key.PublicKey().String(), "new", created)

	// 2. Allocator.
	if n.pool, err = ipam.NewPool(cfg.ClusterCIDR, cfg.BlockPrefix); err != nil {
		return nil, err
	}
	if !cfg.NoIPv6 {
		if n.twins, err = ipam.NewTwins(n.pool, cfg.ClusterCIDR6); err != nil {
			return nil, err
		}
	}
	store := disk.New(filepath.Join(cfg.StateDir, ipamFile), cfg.BlockPrefix)
	n.undo = append(n.undo, func() { store.Close() })
	if n.alloc, err = ipam.NewAllocator(store, n.pool); err != nil {
		return nil, err
	}
	if store.Migrated {
		n.log.Warn("migrated ipam.json from node subnets to blocks; every container keeps its address, but containers attached before the upgrade keep their old resolver address until their runtime attaches them again",
			"blocks", len(n.alloc.Claims()), "leases", len(n.alloc.Leases()), "mesh_dns", n.pool.MeshDNS())
	}

	// Guests of the previous life (their peers come back with the device,
	// restoreGuests), loaded first so that adoption keeps their leases.
	if n.guests, err = loadGuests(cfg.StateDir); err != nil {
		return nil, err
	}
	n.undo = append(n.undo, n.guests.close)

	// Attachments of the previous life: adopt the live ones, forget the
	// rest, before anything else can attach.
	if n.attach, err = loadAttachments(cfg.StateDir); err != nil {
		return nil, err
	}
	n.undo = append(n.undo, n.attach.close)
	if n.containers = cfg.Containers; n.containers == nil && n.us == nil {
		if n.containers, err = defaultContainers(n.log, cfg); err != nil {
			return nil, err
		}
	}
	if n.containers != nil {
		n.undo = append(n.undo, func() { n.containers.Close() })
		n.adoptAttachments(ctx)
	}

	// Published ports and the NAT table: the kernel kept the rules while
	// zlmesh was down; the first convergence after the claim adopts them.
	if n.ports, err = loadPorts(cfg.StateDir); err != nil {
		return nil, err
	}
	n.undo = append(n.undo, n.ports.close)
	if n.nat = cfg.NAT; n.nat == nil && n.us == nil {
		if n.nat, err = defaultNAT(n.log, n.cfg); err != nil {
			return nil, err
		}
	}
	if n.nat != nil {
		n.undo = append(n.undo, func() { n.nat.Close() })
	}

	// 3. Control socket.
	if n.ctlLn, err = listenControl(cfg.Socket, cfg.ControlGroup); err != nil {
		return nil, err
	}
	n.undo = append(n.undo, func() { n.ctlLn.Close(); os.Remove(cfg.Socket) })

	// 4. TUN and the packet path.
	rawTUN, err := cfg.NewTUN(cfg.Interface, cfg.MTU)
	if err != nil {
		return nil, fmt.Errorf("create TUN %s: %w", cfg.Interface, err)
	}
	n.wrap = tun.NewWrapper(rawTUN)

	// 5. WireGuard.
	bind := cfg.Bind
	if bind == nil {
		bind = conn.NewDefaultBind()
	}
	n.dev = device.NewDevice(n.wrap, bind, wgLogger(n.log))
	n.undo = append(n.undo, n.dev.Close) // closes the TUN too
	if err := n.dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hex.EncodeToString(key[:]), cfg.ListenPort)); err != nil {
		return nil, fmt.Errorf("configure WireGuard: %w", err)
	}
	if err := n.dev.Up(); err != nil {
		return nil, fmt.Errorf("WireGuard listen port %d: %w", cfg.ListenPort, err)
	}
	if n.uapi, err = uapiListen(cfg.Interface, n.dev, n.log); err != nil {
		if n.us == nil {
			return nil, fmt.Errorf("UAPI socket for %s: %w", cfg.Interface, err)
		}
		n.log.Warn("no UAPI socket: `wg show` will not see this node", "interface", cfg.Interface, "err", err)
	} else {
		n.undo = append(n.undo, func() { n.uapi.Close() })
	}
	n.undo = append(n.undo, func() { n.uapi.Close() })
	n.restoreGuests()

	// 6. Membership.
	mcfg := mesh.Config{
		Name:           cfg.Name,
		BindAddr:       cfg.BindAddr.String(),
		BindPort:       cfg.GossipPort,
		ClusterKey:     cfg.ClusterKey,
		Join:           cfg.Join,
		KnownPeersFile: filepath.Join(cfg.StateDir, peersFile),
		Meta:           mesh.Meta{PublicKey: key.PublicKey().String(), Version: Version},
		Tuning:         cfg.Gossip,
		Logger:         n.log.With("component", "mesh"),
	}
	if cfg.AdvertiseAddr.IsValid() {
		mcfg.AdvertiseAddr = cfg.AdvertiseAddr.String()
		mcfg.AdvertisePort = cfg.GossipPort
		mcfg.Meta.Endpoint = netip.AddrPortFrom(cfg.AdvertiseAddr, uint16(cfg.ListenPort)).String()
	}
	if n.mesh, err = mesh.Start(mcfg); err != nil {
		return nil, fmt.Errorf("gossip on port %d: %w", cfg.GossipPort, err)
	}
	n.undo = append(n.undo, func() { n.mesh.Shutdown() })

	// 7. Block claims and overlay address.
	ccfg := mesh.ClaimerConfig{
		Node:      key.PublicKey().String(),
		Name:      cfg.Name,
		Grace:     cfg.DeadGrace,
		Preferred: cfg.FirstBlock,
		Stored:    n.alloc.Claims(),
		// metrics: the claimer reports won conflicts; lost ones come as
		// changes (renumber).
		ConflictWon: func(ipam.Claim) { n.metrics.conflictWon() },
	}
	n.claimer = mesh.NewClaimer(n.mesh, n.pool, ccfg)
	claims, changes, err := n.claimer.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("claim blocks: %w", err)
	}
	for _, ch := range changes {
		n.moveBlock(ch)
	}
	if err := n.applyClaims(claims); err != nil {
		return nil, err
	}
	n.reconcilePorts()
	if err := n.startDNS(); err != nil {
		return nil, err
	}
	if n.us != nil {
		if err := n.startUserspace(); err != nil {
			return nil, err
		}
	}

	// 8. Docker's driver socket, loops and the control socket.
	if err := n.startDockerPlugin(); err != nil {
		return nil, err
	}
	n.startLoops()
	n.ctlSrv = &http.Server{Handler: n.controlHandler(), ReadHeaderTimeout: 10 * time.Second}
	go n.ctlSrv.Serve(n.ctlLn)
	n.log.Info("up", "blocks", len(claims), "first_block", claims[0].Block, "overlay", ipam.NodeAddr(claims[0].Block),
		"interface", cfg.Interface, "listen_port", cfg.ListenPort, "gossip_port", cfg.GossipPort, "socket", cfg.Socket)
	return n, nil
}

// applyClaims records claims as this node's blocks (the first block first)
// in the state dir, sets the TUN's overlay address (the first block's) and
// gossips the new meta. A block whose leases must move is handed to
// moveBlock first.
func (n *Node) applyClaims(claims []ipam.Claim) error {
	n.renumberMu.Lock()
	defer n.renumberMu.Unlock()
	if err := n.alloc.SetClaims(claims); err != nil {
		return fmt.Errorf("record blocks: %w", err)
	}
	return n.setClaimsLocked(claims)
}

// setClaimsLocked makes claims the node's in memory, on the TUN and in its
// meta; the caller holds renumberMu and has recorded them.
func (n *Node) setClaimsLocked(claims []ipam.Claim) error {
	overlay := ipam.NodeAddr(claims[0].Block)
	if err := n.cfg.Plumbing.SetAddress(n.cfg.Interface, netip.PrefixFrom(overlay, n.pool.Cluster().Bits())); err != nil {
		return fmt.Errorf("address %s on %s: %w", overlay, n.cfg.Interface, err)
	}
	if overlay6 := n.twin(overlay); overlay6.IsValid() {
		if err := n.cfg.Plumbing.SetAddress(n.cfg.Interface, netip.PrefixFrom(overlay6, n.twins.Cluster6().Bits())); err != nil {
			return fmt.Errorf("address %s on %s: %w (a host without IPv6 runs with --ipv6=false)", overlay6, n.cfg.Interface, err)
		}
	}
	n.mu.Lock()
	n.claims = slices.Clone(claims)
	n.mu.Unlock()
	n.metrics.setBlocksHeld(len(claims))
	return n.updateMeta()
}

// twin is the IPv6 twin of an overlay address; the zero Addr with IPv6 off
// or for an address outside the cluster.
func (n *Node) twin(a netip.Addr) netip.Addr {
	if n.twins == nil {
		return netip.Addr{}
	}
	a6, _ := n.twins.Addr(a)
	return a6
}

// cluster6 is this node's IPv6 cluster prefix as Meta.Cluster6 carries it
// ("" with IPv6 off).
func (n *Node) cluster6() string {
	if n.twins == nil {
		return ""
	}
	return n.twins.Cluster6().String()
}

// plan is this node's address plan as Meta.Plan carries it.
func (n *Node) plan() string {
	return fmt.Sprintf("%s/%d", n.pool.Cluster(), n.pool.BlockBits())
}

// firstBlock is the node's first block (zero before the first claim).
func (n *Node) firstBlock() netip.Prefix {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.claims) == 0 {
		return netip.Prefix{}
	}
	return n.claims[0].Block
}

// updateMeta gossips this node's current meta.
func (n *Node) updateMeta() error {
	first := n.firstBlock()
	meta := mesh.Meta{
		PublicKey:  n.key.PublicKey().String(),
		Endpoint:   n.endpoint().String(),
		FirstBlock: first.String(),
		OverlayIP:  ipam.NodeAddr(first).String(),
		Plan:       n.plan(),
		Cluster6:   n.cluster6(),
		Version:    Version,
	}
	if err := n.mesh.UpdateMeta(meta); err != nil {
		return fmt.Errorf("gossip meta: %w", err)
	}
	return nil
}

// endpoint is this node's WireGuard endpoint as peers should dial it: the
// advertised address, or the address gossip advertises, with the listen port.
func (n *Node) endpoint() netip.AddrPort {
	addr := n.cfg.AdvertiseAddr
	if !addr.IsValid() {
		for _, m := range n.mesh.Members() {
			if m.Self {
				addr = m.Addr.Addr()
			}
		}
	}
	return netip.AddrPortFrom(addr, uint16(n.cfg.ListenPort))
}

// Done is closed when the node has stopped (Close, Leave, or `zlmesh down`).
func (n *Node) Done() <-chan struct{} { return n.done }

// Close stops the node without leaving the cluster: peers see it die and hold
// its blocks for the grace period; a restart with the same state dir comes
// back with the same key and blocks. The TUN goes away with the process;
// bridges, containers and NAT rules stay.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.log.Info("stopping")
		close(n.stop)
		if n.ctlSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			n.ctlSrv.Shutdown(ctx)
			cancel()
		}
		n.loops.Wait()
		n.teardown()
		close(n.done)
	})
	return n.closeErr
}

// Leave leaves the cluster gracefully, then stops: its block claims are
// released at once and peers drop it without waiting for failure detection.
// purge also removes the NAT table (published ports and masquerade), which a
// plain stop leaves in place.
func (n *Node) Leave(timeout time.Duration, purge bool) error {
	if purge {
		if err := n.purgeNAT(); err != nil {
			n.log.Error("purge NAT table", "err", err)
		}
	}
	n.claimer.Release()
	if err := n.mesh.Leave(timeout); err != nil {
		n.log.Warn("leave", "err", err)
	}
	return n.Close()
}

// teardown undoes what Start made, newest first.
func (n *Node) teardown() {
	for i := len(n.undo) - 1; i >= 0; i-- {
		n.undo[i]()
	}
	n.undo = nil
}

// Status reports the node's view of itself.
func (n *Node) Status() api.Status {
	n.mu.Lock()
	claims := slices.Clone(n.claims)
	n.mu.Unlock()
	alive := 0
	var gossip string
	for _, m := range n.mesh.Members() {
		if m.State == mesh.StateAlive {
			alive++
		}
		if m.Self {
			gossip = m.Addr.String()
		}
	}
	var first netip.Prefix
	blocks := []string{}
	for i, c := range claims {
		if i == 0 {
			first = c.Block
		}
		blocks = append(blocks, c.Block.String())
	}
	return api.Status{
		Name:         n.cfg.Name,
		PublicKey:    n.key.PublicKey().String(),
		OverlayIP:    ipam.NodeAddr(first).String(),
		FirstBlock:   first.String(),
		Blocks:       blocks,
		Endpoint:     n.endpoint().String(),
		GossipAddr:   gossip,
		ClusterCIDR:  n.pool.Cluster().String(),
		ClusterCIDR6: n.cluster6(),
		OverlayIP6:   addrString(n.twin(ipam.NodeAddr(first))),
		MeshDNS6:     addrString(n.twin(n.pool.MeshDNS())),
		Interface:    n.cfg.Interface,
		MTU:          n.cfg.MTU,
		Version:      Version,
		MeshDNS:      n.pool.MeshDNS().String(),
		SearchDomain: n.searchDomain(),
		Members:      alive,
		KnownPeers:   len(n.mesh.KnownPeers()),
		Alone:        n.mesh.Alone(),
		Attachments:  n.attach.len(),
		StartedAt:    n.startedAt,
		Userspace:    n.userspaceStatus(),
	}
}

// Peers joins the mesh view with the WireGuard device's peer entries.
func (n *Node) Peers() ([]api.Peer, error) {
	text, err := n.dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("read WireGuard peers: %w", err)
	}
	dev := parseUAPIPeers(text)
	blocks := map[string][]string{}
	for b, c := range n.claimer.Holders() {
		blocks[c.Node] = append(blocks[c.Node], b.String())
	}
	for _, bs := range blocks {
		slices.Sort(bs)
	}
	var out []api.Peer
	for _, m := range n.mesh.Members() {
		if m.Self {
			continue
		}
		p := api.Peer{
			Name:       m.Name,
			PublicKey:  m.Meta.PublicKey,
			Endpoint:   m.Meta.Endpoint,
			FirstBlock: m.Meta.FirstBlock,
			Blocks:     blocks[m.Meta.PublicKey],
			OverlayIP:  m.Meta.OverlayIP,
			State:      string(m.State),
			Version:    m.Meta.Version,
			AllowedIPs: []string{},
		}
		if d, ok := dev[m.Meta.PublicKey]; ok {
			if d.Endpoint != "" {
				p.Endpoint = d.Endpoint
			}
			p.AllowedIPs = d.AllowedIPs
			p.LastHandshake = d.LastHandshake
			p.RxBytes, p.TxBytes = d.RxBytes, d.TxBytes
		}
		out = append(out, p)
	}
	return out, nil
}

// wgLogger routes wireguard-go's log lines into slog.
func wgLogger(log *slog.Logger) *device.Logger {
	l := log.With("component", "wireguard")
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			if l.Enabled(context.Background(), slog.LevelDebug) {
				l.Debug(fmt.Sprintf(format, args...))
			}
		},
		Errorf: func(format string, args ...any) { l.Error(fmt.Sprintf(format, args...)) },
	}
}

// listenUnixSocket opens the control socket: its directory is made if missing
// (0750), a stale socket file from a crashed node is replaced, a live one is
// an error, and the socket is mode 0660. (listenControl picks it or a pipe.)
func listenUnixSocket(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if _, err := os.Stat(path); err == nil {
		c, derr := net.DialTimeout("unix", path, time.Second)
		if derr == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another zlmesh is listening there", path)
		}
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return ln, nil
}

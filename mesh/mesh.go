// Package mesh is cluster membership over hashicorp/memberlist: each node's
// meta, a replicated record store, membership events, the cluster key,
// re-joining remembered peers, and the block claim protocol.
//
// A Mesh is one running member. Its goroutines: memberlist's own (probe,
// gossip, push/pull, listeners), routineMaintain (re-joins remembered
// peers, persists them, forgets old tombstones and dead members) and
// routineSync (the store sync, see sync.go). Leave and Shutdown stop all
// of them.
//
// Records ride in the room memberlist's gossip packets leave after its own
// messages. During a burst of joins memberlist's alive messages fill that
// room for several seconds, so records wait; sending them in packets of
// their own was tried and measured (bench/sim): it doubled the packet rate
// and made the 200-node simulation's membership converge much later,
// without getting the claims there sooner. Live member markers are queued
// apart and take only the room the other records leave (recordQueue).
//
// Membership state comes from memberlist, with these additions, because
// memberlist v0.7.0 does not tell the application a member's state
// (Node.State is left zero in the event callbacks, hashicorp/memberlist#266):
//
//   - dead vs left: a node that leaves first deletes its own marker record
//     (kind "mesh.member", key = its name) and waits briefly for that
//     tombstone to spread, then leaves memberlist. A member that memberlist
//     reports gone is "left" when its marker is a tombstone, else "dead";
//     a tombstone that arrives later turns "dead" into "left" (with a
//     MemberLeft event). A node puts its marker at every start.
//   - the marker's value is the node's gossip address: a node that learns
//     (by broadcast or the store's anti-entropy) the marker of a node it has
//     never seen as a member re-joins it within 1-2 s, which repairs
//     memberlist's own membership when its alive broadcast missed a node
//     (memberlist would wait for push/pull, up to minutes in a large
//     cluster; its transmit queue loses broadcasts, hashicorp/memberlist#263,
//     which bench/sim hit in about one 50-node burst join in three).
//   - suspect: memberlist gives no callback for suspicion, so a suspected
//     member is reported alive until it is declared dead; StateSuspect is
//     never reported by this version.
//
// Record kinds starting with "mesh." are the package's own.
package mesh

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Errors callers branch on.
var (
	// ErrClosed is returned by methods that need gossip after Leave or
	// Shutdown.
	ErrClosed = errors.New("mesh is closed")
	// ErrMetaTooLarge is returned when the encoded Meta exceeds
	// memberlist.MetaMaxSize (512 bytes).
	ErrMetaTooLarge = errors.New("node meta too large")
	// ErrBadAddress is wrapped by errors about a malformed host:port.
	ErrBadAddress = errors.New("bad address")
	// ErrKeyMismatch is matched (errors.Is) by a join error that is most
	// likely caused by a different cluster key on the two sides, or a key
	// on one side only.
	ErrKeyMismatch = errors.New(keyHintText)
)

// DefaultPort is the default gossip port (UDP and TCP).
const DefaultPort = 7946

// storeRetransmitMult sets how many times each node sends a record it
// learned or wrote: storeRetransmitMult × ceil(log10(members+1)), as
// memberlist does for its own messages. Every node that learns a record
// passes it on (an epidemic); the few nodes such an epidemic misses (about
// e^-k of them for k sends) are repaired by the store sync (sync.go).
const storeRetransmitMult = 4

// kindMember is the kind of the per-node marker records (key = node name):
// put at start, deleted on Leave. See the package doc.
const kindMember = "mesh.member"

// Meta is what every node gossips about itself (memberlist node meta, at most
// 512 bytes encoded as compact JSON).
type Meta struct {
	PublicKey  string `json:"k"`
	Endpoint   string `json:"e"` // underlay ip:port of WireGuard
	FirstBlock string `json:"s"` // the node's first block (holds OverlayIP)
	// Plan is the node's address plan, "<cluster CIDR>/<block prefix>"
	// (10.200.0.0/14/26): nodes of one cluster must agree on it, and a node
	// ignores a peer whose plan differs.
	Plan string `json:"p,omitempty"`
	// Cluster6 is the cluster's IPv6 prefix the node derives its blocks'
	// IPv6 twins from (fd12:3456:789a::/48); "" for a node with IPv6 off.
	// Two nodes that both carry one must carry the same.
	Cluster6  string `json:"p6,omitempty"`
	OverlayIP string `json:"o"`
	Version   string `json:"v"`
}

// encodeMeta returns meta as compact JSON, or ErrMetaTooLarge.
func encodeMeta(meta Meta) ([]byte, error) {
	b, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("encode node meta: %w", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes encoded, limit %d", ErrMetaTooLarge, len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// Config configures a Mesh. The zero value of every field but Name is
// usable.
type Config struct {
	// Name is the node's unique name in the cluster.
	Name string
	// BindAddr and BindPort are where gossip listens (UDP and TCP);
	// defaults 0.0.0.0 and DefaultPort (7946). An IPv4 or IPv6 address;
	// for 0.0.0.0 and :: Go opens one dual-stack socket (where the system
	// has IPv6), so either answers on both families. A negative BindPort
	// picks a free port (tests); Mesh.Addr tells which.
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort are what other nodes dial (IPv4 or
	// IPv6). Default for a specific BindAddr: that address; for an
	// unspecified one: memberlist's choice (the first RFC 6890 private
	// address, IPv4 first), else the first global IPv6 address of an up
	// interface (an IPv6-only host), else Start fails with
	// ErrNoAdvertiseAddr. AdvertisePort defaults to the bound port.
	AdvertiseAddr string
	AdvertisePort int
	// ClusterKey seals gossip (16, 24 or 32 bytes; AES-GCM through
	// memberlist's keyring, incoming and outgoing verified). Nil disables
	// encryption; only tests do that.
	ClusterKey []byte
	// Join lists seed addresses (host:port) tried at start and again
	// whenever this node is alone.
	Join []string
	// KnownPeersFile persists the peers seen, for re-joining; "" keeps them
	// in memory only.
	KnownPeersFile string
	// Meta is the node's initial meta.
	Meta Meta
	// Tuning holds the timers; zero fields take DefaultTuning's values.
	Tuning Tuning
	// Transport replaces UDP/TCP sockets (tests use meshtest's memory
	// transport); BindAddr and BindPort are then unused.
	Transport memberlist.NodeAwareTransport
	// Logger receives memberlist's log lines and the mesh's own; nil
	// discards.
	Logger *slog.Logger
}

// Tuning holds the failure detector, gossip and re-join timers. Zero fields
// take DefaultTuning's values. The first six are memberlist's (see
// memberlist.Config) and default to memberlist.DefaultLANConfig.
type Tuning struct {
	ProbeInterval       time.Duration
	ProbeTimeout        time.Duration
	GossipInterval      time.Duration
	PushPullInterval    time.Duration
	SuspicionMult       int
	GossipToTheDeadTime time.Duration
	// DeadNodeReclaimTime is how long after a member was declared dead
	// memberlist accepts the same name at another address (a node that
	// restarted with a new address). memberlist's own default (0) refuses
	// that until the dead member is forgotten (GossipToTheDeadTime after
	// its death, when memberlist reaps it); ours is 5s. A node restarted at
	// its old address needs neither: it refutes its old incarnation at
	// once. A smaller value only matters for two live processes claiming
	// one name, which memberlist refuses anyway while the first is alive.
	DeadNodeReclaimTime time.Duration
	// TCPTimeout bounds a push/pull exchange, including a join attempt;
	// Leave and Shutdown may wait this long for an attempt under way.
	TCPTimeout time.Duration
	// RejoinMin and RejoinMax bound the backoff of re-join attempts per
	// remembered peer (defaults 1s and 30s, with ±25% jitter).
	RejoinMin, RejoinMax time.Duration
	// ForgetPeersAfter is how long a remembered peer not seen alive is
	// kept (default 7 days). When it is forgotten, the records it owns
	// (its member marker, service endpoints, ports; not its block
	// claim, which the Claimer keeps for its grace) are deleted from the
	// store, so that nodes that never come back do not stay in it for
	// ever; one that does come back writes them again.
	ForgetPeersAfter time.Duration
	// TombstoneTTL is how long a deleted record is remembered (default
	// 48h; see Store).
	TombstoneTTL time.Duration
	// SyncInterval is how often the store sync offers repairs to a random
	// member (default 2s; see sync.go).
	SyncInterval time.Duration
	// EventBuffer is the channel size of each Subscribe (default 256).
	EventBuffer int
}

// DefaultTuning returns the defaults: memberlist's LAN timers plus the
// mesh's own.
func DefaultTuning() Tuning {
	lan := memberlist.DefaultLANConfig()
	return Tuning{
		ProbeInterval:       lan.ProbeInterval,
		ProbeTimeout:        lan.ProbeTimeout,
		GossipInterval:      lan.GossipInterval,
		PushPullInterval:    lan.PushPullInterval,
		SuspicionMult:       lan.SuspicionMult,
		GossipToTheDeadTime: lan.GossipToTheDeadTime,
		DeadNodeReclaimTime: 5 * time.Second,
		TCPTimeout:          lan.TCPTimeout,
		RejoinMin:           time.Second,
		RejoinMax:           30 * time.Second,
		ForgetPeersAfter:    7 * 24 * time.Hour,
		TombstoneTTL:        48 * time.Hour,
		SyncInterval:        2 * time.Second,
		EventBuffer:         256,
	}
}

// withDefaults fills the zero fields of t from DefaultTuning.
func (t Tuning) withDefaults() Tuning {
	d := DefaultTuning()
	setDur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	setDur(&t.ProbeInterval, d.ProbeInterval)
	setDur(&t.ProbeTimeout, d.ProbeTimeout)
	setDur(&t.GossipInterval, d.GossipInterval)
	setDur(&t.PushPullInterval, d.PushPullInterval)
	setDur(&t.GossipToTheDeadTime, d.GossipToTheDeadTime)
	setDur(&t.DeadNodeReclaimTime, d.DeadNodeReclaimTime)
	setDur(&t.TCPTimeout, d.TCPTimeout)
	setDur(&t.RejoinMin, d.RejoinMin)
	setDur(&t.RejoinMax, d.RejoinMax)
	setDur(&t.ForgetPeersAfter, d.ForgetPeersAfter)
	setDur(&t.TombstoneTTL, d.TombstoneTTL)
	setDur(&t.SyncInterval, d.SyncInterval)
	if t.SuspicionMult <= 0 {
		t.SuspicionMult = d.SuspicionMult
	}
	if t.EventBuffer <= 0 {
		t.EventBuffer = d.EventBuffer
	}
	t.RejoinMax = max(t.RejoinMax, t.RejoinMin)
	return t
}

// MemberState is a member's state as gossip sees it.
type MemberState string

const (
	StateAlive   MemberState = "alive"
	StateSuspect MemberState = "suspect" // not reported by memberlist v0.7.0; see the package doc
	StateDead    MemberState = "dead"
	StateLeft    MemberState = "left"
)

// Member is one node of the cluster.
type Member struct {
	Name  string
	Addr  netip.AddrPort // gossip address
	Meta  Meta
	State MemberState
	Self  bool
}

// Mesh is a running member of a cluster. Its methods are safe for
// concurrent use.
type Mesh struct {
	name string
	cfg  Config
	tun  Tuning
	log  *slog.Logger

	ml     *memberlist.Memberlist
	store  *Store
	queue  *recordQueue
	events eventHub

	// meta is this node's meta, as given and as gossiped.
	meta struct {
		sync.Mutex
		meta    Meta
		encoded []byte
	}
	updateMu sync.Mutex // serializes UpdateMeta

	members memberTable
	numLive atomic.Int32 // alive members, this node included
	book    peerBook

	counters       meshCounters // Stats (stats.go)
	unregisterSink func()

	synced     chan struct{}
	syncedOnce sync.Once
	syncWork   chan message // summaries and digests for routineSync

	leaveSent     chan struct{} // closed when the leave marker's broadcast is done
	leaveSentOnce sync.Once

	// life guards the stop sequence.
	life struct {
		sync.Mutex
		closing bool
	}
	leaving atomic.Bool
	// mlReady is set once m.ml is: gossip handlers run (and may call
	// onChange) while memberlist.Create has not returned yet.
	mlReady atomic.Bool
	stop    chan struct{}
	wg      sync.WaitGroup
}

// Start creates the member and tries the seeds of cfg.Join and the
// remembered peers. It does not wait for them: the attempts run in the
// background, at once and then with backoff, and Start does not fail when
// none answers. Synced tells when the first state exchange with a peer is
// done. Start fails on a bad config (naming the field), a known-peers file
// that does not parse, or a port that cannot be bound.
func Start(cfg Config) (*Mesh, error) {
	if cfg.Name == "" {
		return nil, errors.New("mesh: config: Name is empty")
	}
	if cfg.ClusterKey != nil {
		if err := checkKey(cfg.ClusterKey); err != nil {
			return nil, fmt.Errorf("mesh: config: ClusterKey: %w", err)
		}
	}
	for _, a := range cfg.Join {
		if err := checkAddr(a); err != nil {
			return nil, fmt.Errorf("mesh: config: Join: %w", err)
		}
	}
	if cfg.Transport == nil && cfg.AdvertiseAddr == "" && unspecifiedBind(cfg.BindAddr) {
		a, err := defaultAdvertiseAddr()
		if err != nil {
			return nil, fmt.Errorf("mesh: config: AdvertiseAddr: %w", err)
		}
		cfg.AdvertiseAddr = a.String()
	}
	encMeta, err := encodeMeta(cfg.Meta)
	if err != nil {
		return nil, fmt.Errorf("mesh: config: Meta: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = discardLogger
	}
	log = log.With("node", cfg.Name)
	tun := cfg.Tuning.withDefaults()

	m := &Mesh{
		name:      cfg.Name,
		cfg:       cfg,
		tun:       tun,
		log:       log,
		synced:    make(chan struct{}),
		leaveSent: make(chan struct{}),
		stop:      make(chan struct{}),
		syncWork:  make(chan message, syncQueue),
	}
	m.meta.meta = cfg.Meta
	m.meta.encoded = encMeta
	m.members.byName = make(map[string]*memberEntry)
	m.events.init(tun.EventBuffer, log)
	if err := m.book.init(cfg.KnownPeersFile, cfg.Join, cfg.Name, tun.RejoinMin, tun.RejoinMax); err != nil {
		return nil, fmt.Errorf("mesh: %w", err)
	}
	m.store = newStore(cfg.Name, tun.TombstoneTTL, time.Now, log)
	m.store.setInternal(m.onChange)
	lan := memberlist.DefaultLANConfig()
	m.queue = newRecordQueue(func() int { return max(int(m.numLive.Load()), 1) }, storeRetransmitMult)

	mlc := m.memberlistConfig(lan)
	ml, err := memberlist.Create(mlc)
	if err != nil {
		m.unregisterSink()
		return nil, fmt.Errorf("mesh: start memberlist for %s: %w", cfg.Name, err)
	}
	m.ml = ml
	m.mlReady.Store(true)
	// The marker says "this node is running" and where (see the package
	// doc and peers.go).
	m.store.Put(kindMember, m.name, []byte(m.Addr().String()))

	m.wg.Add(2)
	go m.routineMaintain()
	go m.routineSync()
	log.Info("mesh started", "addr", m.Addr().String(), "encrypted", cfg.ClusterKey != nil,
		"seeds", len(cfg.Join), "known_peers", m.book.count())
	return m, nil
}

// memberlistConfig builds memberlist's config on the LAN preset.
func (m *Mesh) memberlistConfig(lan *memberlist.Config) *memberlist.Config {
	cfg, tun := m.cfg, m.tun
	c := lan
	c.Name = cfg.Name
	c.BindAddr = "0.0.0.0"
	if cfg.BindAddr != "" {
		c.BindAddr = cfg.BindAddr
	}
	switch {
	case cfg.BindPort < 0:
		c.BindPort = 0 // memberlist picks a free port
	case cfg.BindPort == 0:
		c.BindPort = DefaultPort
	default:
		c.BindPort = cfg.BindPort
	}
	c.AdvertiseAddr = cfg.AdvertiseAddr
	c.AdvertisePort = c.BindPort
	if cfg.AdvertisePort > 0 {
		c.AdvertisePort = cfg.AdvertisePort
	}
	if cfg.Transport != nil {
		c.Transport = cfg.Transport
	}
	if cfg.ClusterKey != nil {
		kr, err := memberlist.NewKeyring(nil, cfg.ClusterKey)
		if err != nil {
			panic("mesh: keyring from a checked key: " + err.Error()) // checkKey ran before
		}
		c.Keyring = kr
		c.GossipVerifyIncoming = true
		c.GossipVerifyOutgoing = true
	}
	c.ProbeInterval = tun.ProbeInterval
	c.ProbeTimeout = tun.ProbeTimeout
	c.GossipInterval = tun.GossipInterval
	c.PushPullInterval = tun.PushPullInterval
	c.SuspicionMult = tun.SuspicionMult
	c.GossipToTheDeadTime = tun.GossipToTheDeadTime
	c.DeadNodeReclaimTime = tun.DeadNodeReclaimTime
	c.TCPTimeout = tun.TCPTimeout
	c.Delegate = (*delegate)(m)
	c.Events = (*eventDelegate)(m)
	c.Conflict = (*eventDelegate)(m)
	c.Logger = newMemberlistLogger(m.log)
	c.MetricLabels, m.unregisterSink = m.registerSink()
	return c
}

// LocalName returns this node's name.
func (m *Mesh) LocalName() string { return m.name }

// Addr returns the gossip address other nodes reach this node at.
func (m *Mesh) Addr() netip.AddrPort {
	n := m.ml.LocalNode()
	return nodeAddr(n.Addr, n.Port)
}

// Members returns every member gossip knows of, this node included, sorted
// by name. Dead and left members stay listed until memberlist forgets them
// (Tuning.GossipToTheDeadTime after they went).
func (m *Mesh) Members() []Member {
	return m.members.list()
}

// Member returns the member called name.
func (m *Mesh) Member(name string) (Member, bool) {
	return m.members.get(name)
}

// NumAlive returns the number of alive members, this node included.
func (m *Mesh) NumAlive() int { return int(m.numLive.Load()) }

// Alive reports whether the member called name is alive.
func (m *Mesh) Alive(name string) bool {
	mem, ok := m.members.get(name)
	return ok && mem.State == StateAlive
}

// UpdateMeta replaces this node's meta and gossips it. It does not wait for
// the update to reach the others. ErrMetaTooLarge if the encoded meta
// exceeds 512 bytes; ErrClosed after Leave or Shutdown.
func (m *Mesh) UpdateMeta(meta Meta) error {
	enc, err := encodeMeta(meta)
	if err != nil {
		return fmt.Errorf("mesh: update meta: %w", err)
	}
	m.updateMu.Lock()
	defer m.updateMu.Unlock()
	if m.closed() {
		return fmt.Errorf("mesh: update meta: %w", ErrClosed)
	}
	m.meta.Lock()
	m.meta.meta = meta
	m.meta.encoded = enc
	m.meta.Unlock()
	// UpdateNode queues the new alive message at once; its wait for the
	// broadcast to finish is not needed, and its timeout error is dropped.
	_ = m.ml.UpdateNode(time.Millisecond)
	return nil
}

// LocalMeta returns this node's current meta.
func (m *Mesh) LocalMeta() Meta {
	m.meta.Lock()
	defer m.meta.Unlock()
	return m.meta.meta
}

// Store returns the replicated record store.
func (m *Mesh) Store() *Store { return m.store }

// Synced is closed after the first state exchange (push/pull) with another
// member, in either direction: from then on this node has the cluster's
// records, as of that exchange.
func (m *Mesh) Synced() <-chan struct{} { return m.synced }

// Alone reports whether this node is the only alive member although it
// remembers peers or has seeds.
func (m *Mesh) Alone() bool {
	return m.numLive.Load() <= 1 && m.book.hasTargets()
}

// HasPeers reports whether this node has seeds or remembers peers (it
// expects to be part of a cluster).
func (m *Mesh) HasPeers() bool { return m.book.hasTargets() }

// KnownPeers returns the remembered peers, sorted by name.
func (m *Mesh) KnownPeers() []KnownPeer { return m.book.list() }

// Join contacts each address (host:port) and merges state with it. Every
// address is checked first: a malformed one fails the call before anything
// is sent (ErrBadAddress, naming it). It returns how many answered, and an
// error per address that did not (nil when all did); an error caused by a
// cluster key mismatch matches ErrKeyMismatch.
func (m *Mesh) Join(addrs []string) (int, error) {
	for _, a := range addrs {
		if err := checkAddr(a); err != nil {
			return 0, fmt.Errorf("mesh: join: %w", err)
		}
	}
	if m.closed() {
		return 0, fmt.Errorf("mesh: join: %w", ErrClosed)
	}
	n := 0
	var errs []error
	for _, a := range addrs {
		if err := m.joinOne(a); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// joinOne runs one memberlist join and returns a one-line error.
func (m *Mesh) joinOne(addr string) error {
	_, err := m.ml.Join([]string{addr})
	if err == nil {
		return nil
	}
	je := &JoinError{Addr: addr, Reason: flattenMemberlistError(err), cause: err}
	je.KeyMismatch = keyHint(je.Reason) != ""
	if je.KeyMismatch {
		m.log.Warn("join refused", "addr", addr, "err", je.Reason, "hint", keyHintText)
	}
	return je
}

// JoinError is the failure of a join attempt to one address.
type JoinError struct {
	Addr        string
	Reason      string // memberlist's reason, on one line
	KeyMismatch bool   // the reason points at a cluster key mismatch
	cause       error
}

func (e *JoinError) Error() string {
	s := "join " + e.Addr + ": " + e.Reason
	if e.KeyMismatch {
		s += " (" + keyHintText + ")"
	}
	return s
}

// Unwrap returns memberlist's error.
func (e *JoinError) Unwrap() error { return e.cause }

// Is makes a key mismatch match ErrKeyMismatch.
func (e *JoinError) Is(target error) bool { return target == ErrKeyMismatch && e.KeyMismatch }

// flattenMemberlistError turns memberlist's multierror text ("1 error
// occurred:\n\t* Failed to join …\n\n") into one line.
func flattenMemberlistError(err error) string {
	var parts []string
	for line := range strings.SplitSeq(err.Error(), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasSuffix(line, "error occurred:") || strings.HasSuffix(line, "errors occurred:") {
			continue
		}
		parts = append(parts, strings.TrimPrefix(line, "* "))
	}
	return strings.Join(parts, "; ")
}

// checkAddr checks a host:port join address.
func checkAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%w %q: want host:port", ErrBadAddress, a)
	}
	if host == "" {
		return fmt.Errorf("%w %q: empty host", ErrBadAddress, a)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("%w %q: port must be 1-65535", ErrBadAddress, a)
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if !validHostname(host) {
		return fmt.Errorf("%w %q: host is neither an IP address nor a host name", ErrBadAddress, a)
	}
	return nil
}

// validHostname accepts DNS names made of letters, digits, '-' and '.'.
func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// nodeAddr converts memberlist's address to a netip.AddrPort.
func nodeAddr(ip net.IP, port uint16) netip.AddrPort {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a.Unmap(), port)
}

// closed reports whether Leave or Shutdown has begun.
func (m *Mesh) closed() bool {
	m.life.Lock()
	defer m.life.Unlock()
	return m.life.closing
}

// Leave announces a graceful leave, waits up to timeout for it to spread
// (others then see this node "left" at once, not "dead"), and stops
// everything like Shutdown. It is idempotent, and a no-op after Shutdown.
// It returns an error when the leave announcement was not confirmed sent
// within timeout; the node has stopped all the same.
func (m *Mesh) Leave(timeout time.Duration) error {
	if !m.beginClose() {
		return nil
	}
	deadline := time.Now().Add(timeout)
	m.leaving.Store(true)
	m.stopRoutines()

	// 1. The marker tombstone says "left" (see the package doc); give it
	// up to half the time to be gossiped before memberlist's leave.
	var err error
	if _, ok := m.store.Delete(kindMember, m.name); ok && m.numLive.Load() > 1 {
		select {
		case <-m.leaveSent:
		case <-time.After(timeout / 2):
		}
	}
	// 2. memberlist's own leave (a dead message about ourselves).
	if lerr := m.ml.Leave(max(time.Until(deadline), time.Millisecond)); lerr != nil {
		err = fmt.Errorf("mesh: leave: %w", lerr)
		m.log.Warn("leave not confirmed", "err", lerr)
	}
	m.finishClose()
	m.log.Info("mesh left")
	return err
}

// Shutdown stops gossip without leaving: the others find this node dead by
// probing. It is idempotent, and a no-op after Leave. It may wait up to
// Tuning.TCPTimeout for a join attempt under way.
func (m *Mesh) Shutdown() error {
	if !m.beginClose() {
		return nil
	}
	m.stopRoutines()
	m.finishClose()
	m.log.Info("mesh shut down")
	return nil
}

// beginClose marks the mesh closing; false if it already was.
func (m *Mesh) beginClose() bool {
	m.life.Lock()
	defer m.life.Unlock()
	if m.life.closing {
		return false
	}
	m.life.closing = true
	return true
}

// stopRoutines stops routineMaintain and waits for it and its join
// attempts.
func (m *Mesh) stopRoutines() {
	close(m.stop)
	m.wg.Wait()
}

// finishClose shuts memberlist down, saves the known peers and closes the
// event channels.
func (m *Mesh) finishClose() {
	if err := m.ml.Shutdown(); err != nil {
		m.log.Warn("memberlist shutdown", "err", err)
	}
	m.book.touchAlive(m.members.aliveOthers(m.name), time.Now())
	m.savePeers(true)
	m.events.close()
	m.unregisterSink()
}

// sortedMembers sorts members by name.
func sortedMembers(ms []Member) []Member {
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return ms
}

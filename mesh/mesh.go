// Package mesh is cluster membership over hashicorp/memberlist: each node's
// meta, a replicated record store, membership events, the cluster key,
// re-joining remembered peers, and the node-subnet claim protocol.
package mesh

import (
	"log/slog"
	"net/netip"
	"time"

	"github.com/hashicorp/memberlist"
)

// Meta is what every node gossips about itself (memberlist node meta, at most
// 512 bytes encoded).
type Meta struct {
	PublicKey  string `json:"k"`
	Endpoint   string `json:"e"` // underlay ip:port of WireGuard
	NodeSubnet string `json:"s"`
	OverlayIP  string `json:"o"`
	Version    string `json:"v"`
}

// Config configures a Mesh. The zero value of every field but Name is
// usable.
type Config struct {
	// Name is the node's unique name in the cluster.
	Name string
	// BindAddr and BindPort are where gossip listens (UDP and TCP);
	// defaults 0.0.0.0 and 7946.
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort are what other nodes dial; default:
	// memberlist's choice from the bind address.
	AdvertiseAddr string
	AdvertisePort int
	// ClusterKey seals gossip (16, 24 or 32 bytes). Nil disables
	// encryption; only tests do that.
	ClusterKey []byte
	// Join lists seed addresses (host:port) tried at start and remembered.
	Join []string
	// KnownPeersFile persists the peers seen, for re-joining; "" keeps them
	// in memory only.
	KnownPeersFile string
	// Meta is the node's initial meta.
	Meta Meta
	// Tuning holds the timers; the zero value means DefaultTuning.
	Tuning Tuning
	// Transport replaces UDP/TCP sockets (tests use a memory transport).
	Transport memberlist.NodeAwareTransport
	// Logger receives memberlist's log lines and the mesh's own; nil
	// discards.
	Logger *slog.Logger
}

// Tuning holds the failure detector, gossip and re-join timers.
type Tuning struct {
	ProbeInterval       time.Duration
	ProbeTimeout        time.Duration
	GossipInterval      time.Duration
	PushPullInterval    time.Duration
	SuspicionMult       int
	GossipToTheDeadTime time.Duration
	// DeadNodeReclaimTime is how long memberlist keeps a dead member
	// before forgetting it.
	DeadNodeReclaimTime time.Duration
	// RejoinMin and RejoinMax bound the backoff of re-join attempts.
	RejoinMin, RejoinMax time.Duration
	// TombstoneTTL is how long a deleted record is remembered.
	TombstoneTTL time.Duration
}

// MemberState is a member's state as gossip sees it.
type MemberState string

const (
	StateAlive   MemberState = "alive"
	StateSuspect MemberState = "suspect"
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

// Mesh is a running member of a cluster.
type Mesh struct{}

// Start creates the member and tries the seeds of cfg.Join and the remembered
// peers; it does not fail when none answers (it keeps trying).
func Start(cfg Config) (*Mesh, error) { panic("unimplemented") }

// Members returns every member gossip knows of, this node included.
func (m *Mesh) Members() []Member { panic("unimplemented") }

// UpdateMeta replaces this node's meta and gossips it.
func (m *Mesh) UpdateMeta(meta Meta) error { panic("unimplemented") }

// Store returns the replicated record store.
func (m *Mesh) Store() *Store { panic("unimplemented") }

// Alone reports whether this node is the only alive member although it
// remembers peers.
func (m *Mesh) Alone() bool { panic("unimplemented") }

// Leave announces a graceful leave and waits up to timeout for it to spread.
func (m *Mesh) Leave(timeout time.Duration) error { panic("unimplemented") }

// Shutdown stops gossip without leaving.
func (m *Mesh) Shutdown() error { panic("unimplemented") }

// Record is one entry of the replicated store.
type Record struct {
	Kind    string
	Key     string
	Value   []byte
	Owner   string // name of the node that wrote it
	Clock   uint64 // hybrid logical clock of the write
	Deleted bool
}

// Store is the replicated record store.
type Store struct{}

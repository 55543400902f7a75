package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/zlmesh/zlmesh/ipam"
)

// KindClaim is the store kind of node-subnet claims: key = the node's public
// key, value = the JSON of its ipam.Claim, owner = the node's name. A node
// has at most one claim.
const KindClaim = "claim"

// Claimer defaults.
const (
	DefaultClaimGrace    = 24 * time.Hour
	DefaultClaimSyncWait = 5 * time.Second
	maxRenewEvery        = time.Hour
	// claimChangeBuffer is the size of the Changes channel.
	claimChangeBuffer = 16
	// claimCheckGap is the least time between two checks triggered by
	// changes: a burst of changes is looked at once.
	claimCheckGap = 250 * time.Millisecond
)

// ErrNoClaim is returned by Release before Acquire succeeded.
var ErrNoClaim = errors.New("no node-subnet claim")

// ClaimerConfig configures a Claimer.
type ClaimerConfig struct {
	// Node is this node's public key (base64), the claim's identity.
	// Required.
	Node string
	// Name is this node's name, for logs and status; default the mesh's
	// LocalName.
	Name string
	// Grace is how long a claim of a node that is not alive holds its
	// subnet after its last renewal (default 24h). A claim deleted by
	// Release frees the subnet at once.
	Grace time.Duration
	// RenewEvery is how often the claim's RenewedAt is refreshed (default
	// Grace/8, at most 1h).
	RenewEvery time.Duration
	// Preferred is the subnet the operator asks for; used when the node
	// has no claim to keep and it is free. Zero: none.
	Preferred netip.Prefix
	// Stored is the claim from the state dir, if any: kept when it is
	// still this node's.
	Stored *ipam.Claim
	// SyncWait bounds how long Acquire waits for the first state exchange
	// with a peer when the node has seeds or remembered peers (default
	// 5s).
	SyncWait time.Duration
	// Logger; nil uses the mesh's.
	Logger *slog.Logger
	// ConflictWon, when not nil, is called once for each conflict this
	// node wins over its subnet (once per losing claim), from the
	// claimer's goroutine; it must not block. Losses come on Changes.
	ConflictWon func(loser ipam.Claim)
}

// ClaimChange tells that this node lost a conflict over its subnet and moved:
// Old is the claim it had, New the one it has now, Winner the claim that
// kept the subnet.
type ClaimChange struct {
	Old, New ipam.Claim
	Winner   ipam.Claim
}

// Claimer runs the node-subnet claim protocol on a Mesh's store:
//
//  1. Acquire: wait briefly for a first sync when the node has peers; keep
//     the stored claim unless another node holds the subnet with a claim
//     that beats it; otherwise pick a free subnet (ipam.Pool.Pick with the
//     held subnets as taken: held = alive, or not alive but renewed within
//     Grace); publish it.
//  2. routineClaims, on claim or membership changes (at most every
//     250ms; decoded claims are cached from a store subscription) and
//     every RenewEvery: if this node loses a conflict (ipam.Conflicts among
//     alive nodes: the older claim wins, ties by public key), pick a new
//     free subnet, publish it, log both nodes and subnets and deliver a
//     ClaimChange; keep our record in the store equal to our claim;
//     renew RenewedAt; forget claims of nodes gone for twice the Grace.
//  3. Release deletes the claim (a tombstone): its subnet is free at once.
//
// A claim's node is alive when a member whose Meta.PublicKey is the claim's
// Node is alive, or when it is this node. Records merge last-writer-wins by
// clock, so an older state of a claim never comes back.
//
// A Claimer is safe for concurrent use. Its goroutine stops on Release,
// Close, or when the Mesh stops; Changes is closed then.
type Claimer struct {
	m    *Mesh
	pool *ipam.Pool
	cfg  ClaimerConfig
	log  *slog.Logger

	changes chan ClaimChange
	stop    chan struct{}
	done    chan struct{}
	kick    chan struct{} // a claim record changed (1-buffered)

	// cache holds the decoded claim records (key → record and claim),
	// kept by a store subscription from Acquire on, so that a check does
	// not decode every claim again.
	cacheMu sync.Mutex
	cache   map[string]cachedClaim

	mu       sync.Mutex
	current  ipam.Claim
	acquired bool
	running  bool
	won      map[string]bool // losing claims already reported to ConflictWon
	stopped  bool
}

// NewClaimer returns a Claimer for this node; Acquire starts it. The
// defaults of cfg are applied here.
func NewClaimer(m *Mesh, pool *ipam.Pool, cfg ClaimerConfig) *Claimer {
	if cfg.Name == "" {
		cfg.Name = m.LocalName()
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultClaimGrace
	}
	if cfg.RenewEvery <= 0 {
		cfg.RenewEvery = min(cfg.Grace/8, maxRenewEvery)
	}
	if cfg.SyncWait <= 0 {
		cfg.SyncWait = DefaultClaimSyncWait
	}
	log := cfg.Logger
	if log == nil {
		log = m.log
	}
	return &Claimer{
		m: m, pool: pool, cfg: cfg, log: log,
		changes: make(chan ClaimChange, claimChangeBuffer),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		kick:    make(chan struct{}, 1),
	}
}

// cachedClaim is a claim record and, unless deleted or bad, its claim.
type cachedClaim struct {
	rec   Record
	claim ipam.Claim
	ok    bool
}

// onRecord keeps the cache (a store callback: quick, never blocks).
func (c *Claimer) onRecord(r Record) {
	if r.Kind != KindClaim {
		return
	}
	cc := cachedClaim{rec: Record{Kind: r.Kind, Key: r.Key, Owner: r.Owner, Clock: r.Clock, Deleted: r.Deleted}}
	if !r.Deleted {
		cl, err := decodeClaim(r)
		if err != nil {
			c.log.Warn("skip bad claim record", "key", r.Key, "owner", r.Owner, "err", err)
		} else {
			cc.claim, cc.ok = cl, true
		}
	}
	cc.rec.Value = r.Value // for the order only; not modified
	c.cacheMu.Lock()
	// Deliveries are in order, but the first fill (List) may have seen a
	// newer version than a late delivery: keep the greater.
	if old, ok := c.cache[r.Key]; !ok || compareRecords(cc.rec, old.rec) >= 0 {
		c.cache[r.Key] = cc
	}
	c.cacheMu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Acquire gets this node a subnet (see Claimer), publishes the claim and
// starts the background protocol. It may block up to SyncWait (or until
// ctx ends, then it goes on without the sync). Called again, it returns the
// current claim. Errors: no Node, ipam.ErrExhausted, ErrClosed.
func (c *Claimer) Acquire(ctx context.Context) (ipam.Claim, error) {
	if c.cfg.Node == "" {
		return ipam.Claim{}, errors.New("mesh: acquire node subnet: ClaimerConfig.Node (public key) is empty")
	}
	c.mu.Lock()
	if c.acquired {
		defer c.mu.Unlock()
		return c.current, nil
	}
	c.mu.Unlock()
	if c.m.closed() {
		return ipam.Claim{}, fmt.Errorf("mesh: acquire node subnet: %w", ErrClosed)
	}
	if c.m.HasPeers() {
		wait, cancel := context.WithTimeout(ctx, c.cfg.SyncWait)
		select {
		case <-c.m.Synced():
		case <-wait.Done():
			c.log.Warn("no peer answered before claiming a node subnet; claiming from what this node knows", "waited", c.cfg.SyncWait)
		}
		cancel()
	}

	// Subscribe before deciding, so that no change after the decision is
	// missed by the routine.
	c.cacheMu.Lock()
	c.cache = make(map[string]cachedClaim)
	c.cacheMu.Unlock()
	unsubStore := c.m.store.Subscribe(c.onRecord)
	for _, r := range c.m.store.List(KindClaim) {
		c.onRecord(r)
	}
	events, unsubEvents := c.m.Subscribe()
	unsubscribe := func() { unsubEvents(); unsubStore() }
	now := time.Now().UTC()
	claims := c.claims()
	alive := c.aliveFunc()
	claim, kept, err := c.decide(claims, alive, now)
	if err != nil {
		unsubscribe()
		return ipam.Claim{}, fmt.Errorf("mesh: acquire node subnet for %s: %w", c.cfg.Name, err)
	}
	c.mu.Lock()
	c.current = claim
	c.acquired, c.running = true, true
	c.mu.Unlock()
	c.publish(claim)
	if kept {
		c.log.Info("node subnet kept", "subnet", claim.Subnet, "claimed_at", claim.ClaimedAt)
	} else {
		c.log.Info("node subnet claimed", "subnet", claim.Subnet)
	}
	go c.routineClaims(events, unsubscribe)
	return claim, nil
}

// decide returns the claim to hold: the stored one (or the cluster's copy
// of ours) if it may be kept, else a new pick. A lapsed claim (older than
// the grace) counts as made now, so a node back from a long outage never
// takes its old subnet back from a node that legitimately claimed it.
func (c *Claimer) decide(claims []ipam.Claim, alive func(string) bool, now time.Time) (ipam.Claim, bool, error) {
	var keep []ipam.Claim
	if s := c.cfg.Stored; s != nil && s.Node == c.cfg.Node {
		keep = append(keep, *s)
	}
	for _, cl := range claims {
		if cl.Node == c.cfg.Node {
			keep = append(keep, cl) // the cluster remembers our claim
		}
	}
	for _, k := range keep {
		if c.pool.CheckSubnet(k.Subnet) != nil {
			continue
		}
		// A claim the cluster let go (not renewed within the grace: the
		// node was away longer than that) is a new claim: it keeps the
		// subnet only if nobody took it meanwhile, and it no longer beats
		// a node that did, even one whose claim is not known here yet.
		if now.Sub(k.RenewedAt) >= c.cfg.Grace {
			k.ClaimedAt = now
		}
		if !c.beatenOn(k, claims, alive, now) {
			k.Name = c.cfg.Name
			k.RenewedAt = now
			return normClaim(k), true, nil
		}
		c.log.Warn("stored node subnet is held by another node, claiming a new one", "subnet", k.Subnet)
	}
	subnet, err := c.pick(claims, alive, now, c.cfg.Preferred)
	if err != nil {
		return ipam.Claim{}, false, err
	}
	return normClaim(ipam.Claim{Node: c.cfg.Node, Name: c.cfg.Name, Subnet: subnet, ClaimedAt: now, RenewedAt: now}), false, nil
}

// beatenOn reports whether another node holds k's subnet with a claim that
// beats k.
func (c *Claimer) beatenOn(k ipam.Claim, claims []ipam.Claim, alive func(string) bool, now time.Time) bool {
	for _, o := range claims {
		if o.Node == c.cfg.Node || o.Subnet != k.Subnet {
			continue
		}
		holds := alive(o.Node) || now.Sub(o.RenewedAt) < c.cfg.Grace
		if holds && o.Beats(k) {
			return true
		}
	}
	return false
}

// pick chooses a subnet no other node holds.
func (c *Claimer) pick(claims []ipam.Claim, alive func(string) bool, now time.Time, preferred netip.Prefix) (netip.Prefix, error) {
	var others []ipam.Claim
	for _, cl := range claims {
		if cl.Node != c.cfg.Node {
			others = append(others, cl)
		}
	}
	held := ipam.Holders(others, alive, now, c.cfg.Grace)
	return c.pool.Pick(func(s netip.Prefix) bool { _, ok := held[s]; return ok }, []byte(c.cfg.Node), preferred)
}

// routineClaims is the background protocol (see Claimer).
func (c *Claimer) routineClaims(events <-chan Event, unsubscribe func()) {
	defer close(c.done)
	defer close(c.changes)
	defer unsubscribe()
	c.log.Debug("routine claims started")
	defer c.log.Debug("routine claims stopped")

	renew := time.NewTicker(c.cfg.RenewEvery)
	defer renew.Stop()
	// A periodic check catches what dropped events or passing grace
	// periods would otherwise leave unnoticed.
	recheck := time.NewTicker(min(c.cfg.RenewEvery, 10*time.Second))
	defer recheck.Stop()
	// Changes trigger a check at most every claimCheckGap.
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	pending := false
	var last time.Time
	trigger := func() {
		if !pending {
			pending = true
			debounce.Reset(max(time.Until(last.Add(claimCheckGap)), 0))
		}
	}
	check := func() {
		pending = false
		last = time.Now()
		c.check()
	}
	check()
	for {
		select {
		case <-c.stop:
			return
		case ev, ok := <-events:
			if !ok {
				return // the mesh stopped
			}
			if ev.Type != EventRecord {
				trigger()
			}
		case <-c.kick:
			trigger()
		case <-debounce.C:
			check()
		case <-renew.C:
			c.renew()
		case <-recheck.C:
			check()
		}
	}
}

// check resolves a lost conflict, keeps our record right, and forgets
// claims long gone.
func (c *Claimer) check() {
	now := time.Now().UTC()
	claims := c.claims()
	alive := c.aliveFunc()
	c.mu.Lock()
	cur := c.current
	c.mu.Unlock()

	for _, cf := range ipam.Conflicts(claims, alive) {
		if cf.Winner.Node == c.cfg.Node && cf.Subnet == cur.Subnet {
			c.noteWon(cf.Loser)
		}
		if cf.Loser.Node != c.cfg.Node || cf.Subnet != cur.Subnet {
			continue
		}
		subnet, err := c.pick(claims, alive, now, netip.Prefix{})
		if err != nil {
			c.log.Error("lost the node subnet but no other is free", "subnet", cur.Subnet, "winner", cf.Winner.Name, "err", err)
			return
		}
		next := normClaim(ipam.Claim{Node: c.cfg.Node, Name: c.cfg.Name, Subnet: subnet, ClaimedAt: now, RenewedAt: now})
		c.mu.Lock()
		c.current = next
		c.mu.Unlock()
		c.publish(next)
		c.log.Warn("node subnet conflict lost, moving to a new subnet",
			"loser", c.cfg.Name, "old_subnet", cur.Subnet, "new_subnet", next.Subnet,
			"winner", cf.Winner.Name, "winner_node", cf.Winner.Node, "winner_claimed_at", cf.Winner.ClaimedAt,
			"our_claimed_at", cur.ClaimedAt)
		change := ClaimChange{Old: cur, New: next, Winner: cf.Winner}
		select {
		case c.changes <- change:
		default:
			// The receiver is claimChangeBuffer changes behind: drop the
			// oldest, Current() is the truth.
			select {
			case <-c.changes:
			default:
			}
			c.changes <- change
		}
		return // the next event (our own record) checks again
	}

	// Our record must be our claim (a stale copy from an earlier run may
	// have won by clock).
	if rec, ok := c.m.store.Get(KindClaim, c.cfg.Node); !ok || !sameClaim(decodeClaimOrZero(rec), cur) {
		c.publish(cur)
	}
	// Forget claims whose node has been gone for twice the grace.
	for _, cl := range claims {
		if cl.Node != c.cfg.Node && !alive(cl.Node) && now.Sub(cl.RenewedAt) > 2*c.cfg.Grace {
			if _, ok := c.m.store.Delete(KindClaim, cl.Node); ok {
				c.log.Info("forgot the claim of a node gone for long", "node", cl.Name, "subnet", cl.Subnet, "renewed_at", cl.RenewedAt)
			}
		}
	}
}

// renew refreshes RenewedAt.
func (c *Claimer) renew() {
	c.mu.Lock()
	c.current.RenewedAt = time.Now().UTC()
	cur := c.current
	c.mu.Unlock()
	c.publish(cur)
}

// publish writes our claim to the store.
func (c *Claimer) publish(cl ipam.Claim) {
	b, err := json.Marshal(cl)
	if err != nil {
		c.log.Error("encode claim", "err", err) // cannot happen for ipam.Claim
		return
	}
	c.m.store.Put(KindClaim, c.cfg.Node, b)
}

// claims returns every claim in the store; records that do not decode, or
// whose key is not their node, are skipped (logged when they arrive).
func (c *Claimer) claims() []ipam.Claim {
	c.cacheMu.Lock()
	if c.cache != nil {
		out := make([]ipam.Claim, 0, len(c.cache))
		for _, cc := range c.cache {
			if cc.ok {
				out = append(out, cc.claim)
			}
		}
		c.cacheMu.Unlock()
		return out
	}
	c.cacheMu.Unlock()
	recs := c.m.store.List(KindClaim)
	out := make([]ipam.Claim, 0, len(recs))
	for _, r := range recs {
		cl, err := decodeClaim(r)
		if err != nil {
			c.log.Warn("skip bad claim record", "key", r.Key, "owner", r.Owner, "err", err)
			continue
		}
		out = append(out, cl)
	}
	return out
}

// aliveFunc returns the liveness of claims' nodes by public key.
func (c *Claimer) aliveFunc() func(string) bool {
	alive := c.m.members.alivePublicKeys()
	alive[c.cfg.Node] = true
	return func(node string) bool { return alive[node] }
}

// Current returns the claim this node holds (zero before Acquire).
func (c *Claimer) Current() ipam.Claim {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current
}

// Changes delivers a ClaimChange each time this node loses its subnet. It is
// buffered (16); a receiver that far behind loses the oldest change. It is
// closed when the Claimer stops.
func (c *Claimer) Changes() <-chan ClaimChange { return c.changes }

// Holders returns, for every held subnet, the claim holding it, as this
// node sees the cluster now.
func (c *Claimer) Holders() map[netip.Prefix]ipam.Claim {
	return ipam.Holders(c.claims(), c.aliveFunc(), time.Now(), c.cfg.Grace)
}

// Release stops the Claimer and deletes this node's claim, so that its
// subnet is free at once (a graceful leave: call it before Mesh.Leave).
// ErrNoClaim before Acquire.
func (c *Claimer) Release() error {
	c.mu.Lock()
	acquired := c.acquired
	c.mu.Unlock()
	if !acquired {
		return fmt.Errorf("mesh: release node subnet: %w", ErrNoClaim)
	}
	c.Close()
	if _, ok := c.m.store.Delete(KindClaim, c.cfg.Node); ok {
		c.log.Info("node subnet released", "subnet", c.Current().Subnet)
	}
	return nil
}

// Close stops the Claimer's goroutine without releasing the claim (it holds
// for Grace after its last renewal once the node is gone). Idempotent.
func (c *Claimer) Close() {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return
	}
	c.stopped = true
	running := c.running
	c.mu.Unlock()
	close(c.stop)
	if running {
		<-c.done
	}
}

// decodeClaim decodes a claim record and checks that it is its key's.
func decodeClaim(r Record) (ipam.Claim, error) {
	var cl ipam.Claim
	if err := json.Unmarshal(r.Value, &cl); err != nil {
		return ipam.Claim{}, fmt.Errorf("claim %s does not decode: %w", r.Key, err)
	}
	if cl.Node != r.Key {
		return ipam.Claim{}, fmt.Errorf("claim under key %s is for node %s", r.Key, cl.Node)
	}
	return normClaim(cl), nil
}

func decodeClaimOrZero(r Record) ipam.Claim {
	cl, _ := decodeClaim(r)
	return cl
}

// normClaim puts the times in UTC without monotonic readings, as JSON
// brings them back.
func normClaim(c ipam.Claim) ipam.Claim {
	c.ClaimedAt = c.ClaimedAt.UTC().Round(0)
	c.RenewedAt = c.RenewedAt.UTC().Round(0)
	return c
}

func sameClaim(a, b ipam.Claim) bool {
	return a.Node == b.Node && a.Name == b.Name && a.Subnet == b.Subnet &&
		a.ClaimedAt.Equal(b.ClaimedAt) && a.RenewedAt.Equal(b.RenewedAt)
}

// noteWon calls ConflictWon once per losing claim.
func (c *Claimer) noteWon(loser ipam.Claim) {
	if c.cfg.ConflictWon == nil {
		return
	}
	key := loser.Node + " " + loser.Subnet.String() + " " + loser.ClaimedAt.String()
	c.mu.Lock()
	if c.won == nil {
		c.won = map[string]bool{}
	}
	seen := c.won[key]
	c.won[key] = true
	c.mu.Unlock()
	if !seen {
		c.cfg.ConflictWon(loser)
	}
}

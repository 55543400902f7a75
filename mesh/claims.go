package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/zlmesh/zlmesh/ipam"
)

// KindClaim is the store kind of block claims: key = the node's public key,
// value = the JSON of its claimSet (every block it holds, each with its
// claim time), owner = the node's name. One record per node, so that two
// nodes claiming one block both stay visible (the conflict rule needs both)
// and a node's claims change together.
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

// ErrNoClaim is returned by Release, Grow and Drop before Acquire
// succeeded.
var ErrNoClaim = errors.New("no block claim")

// ClaimerConfig configures a Claimer.
type ClaimerConfig struct {
	// Node is this node's public key (base64), the claim's identity.
	// Required.
	Node string
	// Name is this node's name, for logs and status; default the mesh's
	// LocalName.
	Name string
	// Grace is how long a claim of a node that is not alive holds its
	// blocks after its last renewal (default 24h). A claim deleted by
	// Release or Drop frees its blocks at once.
	Grace time.Duration
	// RenewEvery is how often the claim's RenewedAt is refreshed (default
	// Grace/8, at most 1h).
	RenewEvery time.Duration
	// Preferred is the first block the operator asks for; used when the
	// node has no claim to keep and it is free. Zero: none.
	Preferred netip.Prefix
	// Stored are the claims from the state dir, first block first: each
	// is kept when it is still this node's.
	Stored []ipam.Claim
	// SyncWait bounds how long Acquire waits for the first state exchange
	// with a peer when the node has seeds or remembered peers (default
	// 5s).
	SyncWait time.Duration
	// Logger; nil uses the mesh's.
	Logger *slog.Logger
	// ConflictWon, when not nil, is called once for each conflict this
	// node wins over one of its blocks (once per losing claim), from the
	// claimer's goroutine; it must not block. Losses come on Changes.
	ConflictWon func(loser ipam.Claim)
}

// ClaimChange tells that this node lost one of its blocks (a conflict, or a
// stored block taken meanwhile) and holds another in its place: Old is the
// claim it had, New the one it has now at the same position among its
// blocks, Winner the claim that kept the block. First is true when Old was
// the node's first block (its overlay address moves).
type ClaimChange struct {
	Old, New ipam.Claim
	Winner   ipam.Claim
	First    bool
}

// Claimer runs the block claim protocol on a Mesh's store:
//
//  1. Acquire: wait briefly for a first sync when the node has peers; keep
//     each stored block unless another node holds it with a claim that
//     beats ours (a kept block lapsed past the grace counts as claimed now);
//     a stored block that cannot be kept is replaced by a free one at the
//     same position (a ClaimChange); a node with nothing stored picks its
//     first block (ipam.Pool.Pick with the blocks others hold as taken:
//     held = alive, or not alive but renewed within Grace); publish.
//  2. Grow claims one more free block, Drop gives one up (not the first).
//  3. routineClaims, on claim or membership changes (at most every 250ms;
//     decoded claims are cached from a store subscription) and every
//     RenewEvery: for every block this node loses in a conflict
//     (ipam.Conflicts among alive nodes: the older claim wins, ties by
//     public key), pick a free block in its place, publish, log both nodes
//     and blocks and deliver a ClaimChange; keep our record in the store
//     equal to our claims; renew RenewedAt; forget the claims of nodes gone
//     for twice the Grace.
//  4. Release deletes the record (a tombstone): every block is free at once.
//
// A claim's node is alive when a member whose Meta.PublicKey is the claim's
// Node is alive, or when it is this node. Records merge last-writer-wins by
// clock, so an older state of a node's claims never comes back.
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

	// cache holds the decoded claim records (key → record and claims),
	// kept by a store subscription from Acquire on, so that a check does
	// not decode every record again.
	cacheMu sync.Mutex
	cache   map[string]cachedClaim

	mu       sync.Mutex
	current  []ipam.Claim // first block first
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

// cachedClaim is a claim record and, unless deleted or bad, its claims.
type cachedClaim struct {
	rec    Record
	claims []ipam.Claim
	ok     bool
}

// onRecord keeps the cache (a store callback: quick, never blocks).
func (c *Claimer) onRecord(r Record) {
	if r.Kind != KindClaim {
		return
	}
	cc := cachedClaim{rec: Record{Kind: r.Kind, Key: r.Key, Owner: r.Owner, Clock: r.Clock, Deleted: r.Deleted}}
	if !r.Deleted {
		cl, err := decodeClaims(r)
		if err != nil {
			c.log.Warn("skip bad claim record", "key", r.Key, "owner", r.Owner, "err", err)
		} else {
			cc.claims, cc.ok = cl, true
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

// Acquire gets this node its blocks (see Claimer), publishes them and
// starts the background protocol. It returns the claims held, first block
// first, and one ClaimChange per stored block that could not be kept (the
// caller moves that block's leases). It may block up to SyncWait (or until
// ctx ends, then it goes on without the sync). Called again, it returns the
// current claims and no change. Errors: no Node, ipam.ErrExhausted,
// ErrClosed.
func (c *Claimer) Acquire(ctx context.Context) ([]ipam.Claim, []ClaimChange, error) {
	if c.cfg.Node == "" {
		return nil, nil, errors.New("mesh: acquire blocks: ClaimerConfig.Node (public key) is empty")
	}
	c.mu.Lock()
	if c.acquired {
		defer c.mu.Unlock()
		return slices.Clone(c.current), nil, nil
	}
	c.mu.Unlock()
	if c.m.closed() {
		return nil, nil, fmt.Errorf("mesh: acquire blocks: %w", ErrClosed)
	}
	if c.m.HasPeers() {
		wait, cancel := context.WithTimeout(ctx, c.cfg.SyncWait)
		select {
		case <-c.m.Synced():
		case <-wait.Done():
			c.log.Warn("no peer answered before claiming blocks; claiming from what this node knows", "waited", c.cfg.SyncWait)
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
	claims, changes, err := c.decide(c.claims(), c.aliveFunc(), now)
	if err != nil {
		unsubscribe()
		return nil, nil, fmt.Errorf("mesh: acquire blocks for %s: %w", c.cfg.Name, err)
	}
	c.mu.Lock()
	c.current = claims
	c.acquired, c.running = true, true
	c.mu.Unlock()
	c.publish(claims)
	c.log.Info("blocks claimed", "blocks", blockList(claims), "kept", len(claims)-len(changes))
	for _, ch := range changes {
		c.log.Warn("stored block is held by another node, claimed another in its place",
			"block", ch.Old.Block, "new_block", ch.New.Block, "winner", ch.Winner.Name)
	}
	go c.routineClaims(events, unsubscribe)
	return slices.Clone(claims), changes, nil
}

// decide returns the claims to hold: each stored block (or the cluster's
// copy of our claim on it) if it may be kept, else a new pick in its place;
// a first pick when nothing is stored. A lapsed claim (not renewed within
// the grace) counts as made now, so a node back from a long outage never
// takes its old block back from a node that legitimately claimed it.
func (c *Claimer) decide(claims []ipam.Claim, alive func(string) bool, now time.Time) ([]ipam.Claim, []ClaimChange, error) {
	// Ours in the cluster's copy, by block: it may carry a later renewal.
	cluster := map[netip.Prefix]ipam.Claim{}
	for _, cl := range claims {
		if cl.Node == c.cfg.Node {
			cluster[cl.Block] = cl
		}
	}
	var stored []ipam.Claim
	for _, s := range c.cfg.Stored {
		if s.Node == c.cfg.Node && c.pool.CheckBlock(s.Block) == nil &&
			!slices.ContainsFunc(stored, func(o ipam.Claim) bool { return o.Block == s.Block }) {
			stored = append(stored, s)
		}
	}
	if len(stored) == 0 && len(cluster) > 0 {
		// A state dir lost, the cluster remembers: take its copy, lowest
		// block first.
		for _, cl := range cluster {
			stored = append(stored, cl)
		}
		slices.SortFunc(stored, func(a, b ipam.Claim) int { return a.Block.Addr().Compare(b.Block.Addr()) })
	}
	var out []ipam.Claim
	var changes []ClaimChange
	var lost []int // positions in out to fill with new picks
	winners := map[int]ipam.Claim{}
	for _, s := range stored {
		k := s
		if cl, ok := cluster[s.Block]; ok && cl.RenewedAt.After(k.RenewedAt) {
			k.RenewedAt = cl.RenewedAt
			k.ClaimedAt = cl.ClaimedAt
		}
		if now.Sub(k.RenewedAt) >= c.cfg.Grace {
			k.ClaimedAt = now
		}
		k.Name = c.cfg.Name
		if w, beaten := c.beatenOn(k, claims, alive, now); beaten {
			winners[len(out)] = w
			lost = append(lost, len(out))
		}
		k.RenewedAt = now
		out = append(out, normClaim(k))
	}
	if len(out) == 0 {
		b, err := c.pick(claims, nil, alive, now, c.cfg.Preferred)
		if err != nil {
			return nil, nil, err
		}
		return []ipam.Claim{c.newClaim(b, now)}, nil, nil
	}
	for _, i := range lost {
		b, err := c.pick(claims, out, alive, now, netip.Prefix{})
		if err != nil {
			return nil, nil, err
		}
		old := out[i]
		out[i] = c.newClaim(b, now)
		changes = append(changes, ClaimChange{Old: old, New: out[i], Winner: winners[i], First: i == 0})
	}
	return out, changes, nil
}

func (c *Claimer) newClaim(b netip.Prefix, now time.Time) ipam.Claim {
	return normClaim(ipam.Claim{Node: c.cfg.Node, Name: c.cfg.Name, Block: b, ClaimedAt: now, RenewedAt: now})
}

// beatenOn reports whether another node holds k's block with a claim that
// beats k, and that claim.
func (c *Claimer) beatenOn(k ipam.Claim, claims []ipam.Claim, alive func(string) bool, now time.Time) (ipam.Claim, bool) {
	for _, o := range claims {
		if o.Node == c.cfg.Node || o.Block != k.Block {
			continue
		}
		holds := alive(o.Node) || now.Sub(o.RenewedAt) < c.cfg.Grace
		if holds && o.Beats(k) {
			return o, true
		}
	}
	return ipam.Claim{}, false
}

// pick chooses a block no other node holds and that is not in ours.
func (c *Claimer) pick(claims, ours []ipam.Claim, alive func(string) bool, now time.Time, preferred netip.Prefix) (netip.Prefix, error) {
	return c.pool.Pick(c.takenFunc(claims, ours, alive, now), []byte(c.cfg.Node), preferred)
}

// takenFunc reports a block as taken when another node holds it or it is
// in ours.
func (c *Claimer) takenFunc(claims, ours []ipam.Claim, alive func(string) bool, now time.Time) func(netip.Prefix) bool {
	var others []ipam.Claim
	for _, cl := range claims {
		if cl.Node != c.cfg.Node {
			others = append(others, cl)
		}
	}
	held := ipam.Holders(others, alive, now, c.cfg.Grace)
	mine := map[netip.Prefix]bool{}
	for _, cl := range ours {
		mine[cl.Block] = true
	}
	return func(b netip.Prefix) bool { _, ok := held[b]; return ok || mine[b] }
}

// Grow claims one more free block, after the others, and publishes it.
// ipam.ErrExhausted (naming the cluster CIDR) when none is free; ErrNoClaim
// before Acquire.
func (c *Claimer) Grow() (ipam.Claim, error) {
	claims, alive, now := c.claims(), c.aliveFunc(), time.Now().UTC()
	c.mu.Lock()
	if !c.acquired || c.stopped {
		c.mu.Unlock()
		return ipam.Claim{}, fmt.Errorf("mesh: grow: %w", ErrNoClaim)
	}
	taken := c.takenFunc(claims, c.current, alive, now)
	var ours []netip.Prefix
	for _, cl := range c.current {
		ours = append(ours, cl.Block)
	}
	b, err := c.pool.PickNext(taken, ours, []byte(c.cfg.Node))
	if err != nil {
		c.mu.Unlock()
		return ipam.Claim{}, fmt.Errorf("mesh: grow: %w", err)
	}
	cl := c.newClaim(b, now)
	c.current = append(slices.Clone(c.current), cl)
	cur := c.current
	c.mu.Unlock()
	c.publish(cur)
	c.log.Info("block claimed", "block", b, "blocks", len(cur))
	return cl, nil
}

// Drop gives up block b (not the first): it is free at once. Dropping a
// block not held is success.
func (c *Claimer) Drop(b netip.Prefix) error {
	c.mu.Lock()
	if !c.acquired {
		c.mu.Unlock()
		return fmt.Errorf("mesh: drop block %s: %w", b, ErrNoClaim)
	}
	i := slices.IndexFunc(c.current, func(cl ipam.Claim) bool { return cl.Block == b })
	if i == 0 {
		c.mu.Unlock()
		return fmt.Errorf("mesh: drop block %s: it is the node's first block", b)
	}
	if i < 0 {
		c.mu.Unlock()
		return nil
	}
	c.current = slices.Delete(slices.Clone(c.current), i, i+1)
	cur := c.current
	c.mu.Unlock()
	c.publish(cur)
	c.log.Info("block released", "block", b, "blocks", len(cur))
	return nil
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

// check resolves lost conflicts, keeps our record right, and forgets
// claims long gone.
func (c *Claimer) check() {
	now := time.Now().UTC()
	claims := c.claims()
	alive := c.aliveFunc()

	var changes []ClaimChange
	var won []ipam.Claim
	c.mu.Lock()
	for _, cf := range ipam.Conflicts(claims, alive) {
		if cf.Winner.Node == c.cfg.Node && slices.ContainsFunc(c.current, func(cl ipam.Claim) bool { return cl.Block == cf.Block }) {
			won = append(won, cf.Loser)
		}
		if cf.Loser.Node != c.cfg.Node {
			continue
		}
		i := slices.IndexFunc(c.current, func(cl ipam.Claim) bool { return cl.Block == cf.Block })
		if i < 0 {
			continue // a stale copy of a block we no longer hold
		}
		b, err := c.pick(claims, c.current, alive, now, netip.Prefix{})
		if err != nil {
			c.log.Error("lost a block but no other is free", "block", cf.Block, "winner", cf.Winner.Name, "err", err)
			continue
		}
		old := c.current[i]
		next := slices.Clone(c.current)
		next[i] = c.newClaim(b, now)
		c.current = next
		c.log.Warn("block conflict lost, moving to a new block",
			"loser", c.cfg.Name, "old_block", old.Block, "new_block", b, "first", i == 0,
			"winner", cf.Winner.Name, "winner_node", cf.Winner.Node, "winner_claimed_at", cf.Winner.ClaimedAt,
			"our_claimed_at", old.ClaimedAt)
		changes = append(changes, ClaimChange{Old: old, New: next[i], Winner: cf.Winner, First: i == 0})
	}
	cur := c.current
	c.mu.Unlock()
	for _, l := range won {
		c.noteWon(l)
	}
	if len(changes) > 0 {
		c.publish(cur)
		for _, ch := range changes {
			c.deliver(ch)
		}
		return // the next event (our own record) checks again
	}

	// Our record must be our claims (a stale copy from an earlier run may
	// have won by clock).
	if rec, ok := c.m.store.Get(KindClaim, c.cfg.Node); !ok || !sameRecord(rec, c.cfg.Node, c.cfg.Name, cur) {
		c.publish(cur)
	}
	// Forget the claims of nodes gone for twice the grace.
	forgot := map[string]bool{}
	for _, cl := range claims {
		if cl.Node != c.cfg.Node && !forgot[cl.Node] && !alive(cl.Node) && now.Sub(cl.RenewedAt) > 2*c.cfg.Grace {
			forgot[cl.Node] = true
			if _, ok := c.m.store.Delete(KindClaim, cl.Node); ok {
				c.log.Info("forgot the claims of a node gone for long", "node", cl.Name, "renewed_at", cl.RenewedAt)
			}
		}
	}
}

// deliver hands a change to the receiver of Changes.
func (c *Claimer) deliver(change ClaimChange) {
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
}

// renew refreshes RenewedAt.
func (c *Claimer) renew() {
	now := time.Now().UTC().Round(0)
	c.mu.Lock()
	next := slices.Clone(c.current)
	for i := range next {
		next[i].RenewedAt = now
	}
	c.current = next
	c.mu.Unlock()
	c.publish(next)
}

// claimSet is the wire form of one node's claims (the value of its
// KindClaim record): times in Unix milliseconds, each block with its own
// claim time, one renewal for all. It is kept small, so that a node with a
// few dozen blocks still fits one gossip packet.
type claimSet struct {
	Node      string       `json:"n"`
	Name      string       `json:"m"`
	RenewedAt int64        `json:"r"`
	Blocks    []claimBlock `json:"b"`
}

// claimBlock is [block, claimed_at_ms].
type claimBlock struct {
	Block     netip.Prefix
	ClaimedAt int64
}

func (b claimBlock) MarshalJSON() ([]byte, error) {
	return json.Marshal([]any{b.Block.String(), b.ClaimedAt})
}

func (b *claimBlock) UnmarshalJSON(data []byte) error {
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	if len(raw) != 2 {
		return fmt.Errorf("block claim has %d fields, want 2", len(raw))
	}
	var s string
	if err := json.Unmarshal(raw[0], &s); err != nil {
		return err
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return err
	}
	b.Block = p
	return json.Unmarshal(raw[1], &b.ClaimedAt)
}

// publish writes our claims to the store.
func (c *Claimer) publish(cl []ipam.Claim) {
	b, err := encodeClaims(c.cfg.Node, c.cfg.Name, cl)
	if err != nil {
		c.log.Error("encode claims", "err", err) // cannot happen for valid claims
		return
	}
	c.m.store.Put(KindClaim, c.cfg.Node, b)
}

func encodeClaims(node, name string, cl []ipam.Claim) ([]byte, error) {
	set := claimSet{Node: node, Name: name}
	for _, x := range cl {
		set.RenewedAt = max(set.RenewedAt, x.RenewedAt.UnixMilli())
		set.Blocks = append(set.Blocks, claimBlock{Block: x.Block, ClaimedAt: x.ClaimedAt.UnixMilli()})
	}
	return json.Marshal(set)
}

// claims returns every claim in the store; records that do not decode, or
// whose key is not their node, are skipped (logged when they arrive).
func (c *Claimer) claims() []ipam.Claim {
	c.cacheMu.Lock()
	if c.cache != nil {
		var out []ipam.Claim
		for _, cc := range c.cache {
			if cc.ok {
				out = append(out, cc.claims...)
			}
		}
		c.cacheMu.Unlock()
		return c.inPlan(out)
	}
	c.cacheMu.Unlock()
	var out []ipam.Claim
	for _, r := range c.m.store.List(KindClaim) {
		cl, err := decodeClaims(r)
		if err != nil {
			c.log.Warn("skip bad claim record", "key", r.Key, "owner", r.Owner, "err", err)
			continue
		}
		out = append(out, cl...)
	}
	return c.inPlan(out)
}

// inPlan drops the claims on prefixes that are not blocks of this node's
// plan (a node started with another --cluster-cidr or --block-prefix): they
// can be neither held nor contested here. The node refuses such a peer (see
// Meta.Plan).
func (c *Claimer) inPlan(cl []ipam.Claim) []ipam.Claim {
	return slices.DeleteFunc(cl, func(x ipam.Claim) bool { return c.pool.CheckBlock(x.Block) != nil })
}

// aliveFunc returns the liveness of claims' nodes by public key.
func (c *Claimer) aliveFunc() func(string) bool {
	alive := c.m.members.alivePublicKeys()
	alive[c.cfg.Node] = true
	return func(node string) bool { return alive[node] }
}

// Current returns the claims this node holds, first block first (nil
// before Acquire). The slice is the caller's.
func (c *Claimer) Current() []ipam.Claim {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.current)
}

// Changes delivers a ClaimChange each time this node loses a block. It is
// buffered (16); a receiver that far behind loses the oldest change. It is
// closed when the Claimer stops.
func (c *Claimer) Changes() <-chan ClaimChange { return c.changes }

// Holders returns, for every held block, the claim holding it, as this
// node sees the cluster now.
func (c *Claimer) Holders() map[netip.Prefix]ipam.Claim {
	return ipam.Holders(c.claims(), c.aliveFunc(), time.Now(), c.cfg.Grace)
}

// Release stops the Claimer and deletes this node's claims, so that its
// blocks are free at once (a graceful leave: call it before Mesh.Leave).
// ErrNoClaim before Acquire.
func (c *Claimer) Release() error {
	c.mu.Lock()
	acquired := c.acquired
	c.mu.Unlock()
	if !acquired {
		return fmt.Errorf("mesh: release blocks: %w", ErrNoClaim)
	}
	c.Close()
	if _, ok := c.m.store.Delete(KindClaim, c.cfg.Node); ok {
		c.log.Info("blocks released", "blocks", blockList(c.Current()))
	}
	return nil
}

// Close stops the Claimer's goroutine without releasing the claims (they
// hold for Grace after their last renewal once the node is gone).
// Idempotent.
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

// decodeClaims decodes a claim record and checks that it is its key's.
func decodeClaims(r Record) ([]ipam.Claim, error) {
	var set claimSet
	if err := json.Unmarshal(r.Value, &set); err != nil {
		return nil, fmt.Errorf("claims %s do not decode: %w", r.Key, err)
	}
	if set.Node != r.Key {
		return nil, fmt.Errorf("claims under key %s are for node %s", r.Key, set.Node)
	}
	out := make([]ipam.Claim, 0, len(set.Blocks))
	for _, b := range set.Blocks {
		out = append(out, ipam.Claim{
			Node: set.Node, Name: set.Name, Block: b.Block,
			ClaimedAt: time.UnixMilli(b.ClaimedAt).UTC(),
			RenewedAt: time.UnixMilli(set.RenewedAt).UTC(),
		})
	}
	return out, nil
}

// normClaim puts the times in UTC at millisecond precision without
// monotonic readings, as the wire brings them back.
func normClaim(c ipam.Claim) ipam.Claim {
	c.ClaimedAt = c.ClaimedAt.UTC().Truncate(time.Millisecond)
	c.RenewedAt = c.RenewedAt.UTC().Truncate(time.Millisecond)
	return c
}

// sameRecord reports whether rec is exactly what publish would write for
// cl. Comparing the encodings, not decoded claims, matters: a record holds
// one renewal time for all blocks (the latest), so claims whose renewal
// times differ (a block grown or replaced since the last renewal) never
// decode back equal, and comparing them would republish an unchanged
// record on every check.
func sameRecord(rec Record, node, name string, cl []ipam.Claim) bool {
	want, err := encodeClaims(node, name, cl)
	return err == nil && !rec.Deleted && string(rec.Value) == string(want)
}

func blockList(cl []ipam.Claim) []string {
	out := make([]string, len(cl))
	for i, c := range cl {
		out[i] = c.Block.String()
	}
	return out
}

// noteWon calls ConflictWon once per losing claim.
func (c *Claimer) noteWon(loser ipam.Claim) {
	if c.cfg.ConflictWon == nil {
		return
	}
	key := loser.Node + " " + loser.Block.String() + " " + loser.ClaimedAt.String()
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

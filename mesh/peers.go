package mesh

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/zlmesh/zlmesh/internal/statefile"
)

// KnownPeer is a member this node has seen alive, remembered for
// re-joining.
type KnownPeer struct {
	Name     string    `json:"name"`
	Addr     string    `json:"addr"` // gossip host:port
	LastSeen time.Time `json:"last_seen"`
}

// knownPeersFile is the KnownPeersFile format.
type knownPeersFile struct {
	Version int         `json:"version"`
	Peers   []KnownPeer `json:"peers"`
}

const (
	knownPeersVersion = 1
	// persistSeenEvery: a peer's LastSeen is written again when it moved
	// on by this much, so the file stays fresh without a write per tick.
	persistSeenEvery = time.Hour
	// maxJoinsInFlight bounds the concurrent re-join attempts of a node
	// that is alone; a node with alive members makes one at a time (any
	// success merges the partition for all).
	maxJoinsInFlight = 4
)

// peerBook holds the re-join targets: remembered peers (by name) and seeds
// (by address).
type peerBook struct {
	path       string
	self       string
	minB, maxB time.Duration // backoff bounds (Tuning.RejoinMin, RejoinMax)

	mu    sync.Mutex
	peers map[string]*target
	seeds []*target
	dirty bool // the set changed since the last save
}

// target is one re-join target and its backoff.
type target struct {
	KnownPeer        // Name is "" for a seed
	alt       string // another address seen for this name (restarted elsewhere)
	savedSeen time.Time
	backoff   time.Duration
	next      time.Time
	busy      bool
	// hinted: known from its marker record only, never seen as a member
	// here (memberlist's broadcast of it missed this node).
	hinted bool
}

// init loads the known peers file (absent is empty) and takes the seeds.
func (b *peerBook) init(path string, seeds []string, self string, minB, maxB time.Duration) error {
	b.path, b.self = path, self
	b.minB, b.maxB = minB, maxB
	b.peers = make(map[string]*target)
	for _, s := range seeds {
		b.seeds = append(b.seeds, &target{KnownPeer: KnownPeer{Addr: s}})
	}
	if path == "" {
		return nil
	}
	var f knownPeersFile
	if err := statefile.ReadJSON(path, &f); err != nil {
		if errors.Is(err, statefile.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("known peers: %w", err)
	}
	if f.Version != knownPeersVersion {
		return fmt.Errorf("known peers file %s has version %d, want %d", path, f.Version, knownPeersVersion)
	}
	for _, p := range f.Peers {
		if p.Name == "" || p.Name == self || checkAddr(p.Addr) != nil {
			continue
		}
		b.peers[p.Name] = &target{KnownPeer: p, savedSeen: p.LastSeen}
	}
	return nil
}

// seen records a member seen alive at addr.
func (b *peerBook) seen(name, addr string, now time.Time) {
	if name == b.self {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.peers[name]
	if !ok {
		t = &target{KnownPeer: KnownPeer{Name: name}}
		b.peers[name] = t
		b.dirty = true
	}
	if t.Addr != addr {
		t.Addr = addr
		b.dirty = true
	}
	t.alt = ""
	t.LastSeen = now
	t.backoff, t.next = 0, time.Time{}
	t.hinted = false
}

// hint remembers a node named by its marker record, unless already known.
func (b *peerBook) hint(name, addr string, seen time.Time) {
	if name == b.self {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.peers[name]; ok {
		return
	}
	b.peers[name] = &target{KnownPeer: KnownPeer{Name: name, Addr: addr, LastSeen: seen}, hinted: true}
	b.dirty = true
}

// conflict remembers that name was announced from another address.
func (b *peerBook) conflict(name, addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t, ok := b.peers[name]; ok && t.Addr != addr {
		t.alt = addr
	}
}

// touchAlive refreshes LastSeen of the alive peers (name → addr).
func (b *peerBook) touchAlive(alive map[string]string, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for name := range alive {
		if t, ok := b.peers[name]; ok {
			t.LastSeen = now
			t.backoff, t.next = 0, time.Time{}
		}
	}
}

// forget drops the peers not seen since cutoff.
func (b *peerBook) forget(cutoff time.Time) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var gone []string
	for name, t := range b.peers {
		if t.LastSeen.Before(cutoff) && !t.busy {
			delete(b.peers, name)
			gone = append(gone, name)
			b.dirty = true
		}
	}
	return gone
}

// due returns the targets to try now, marking them busy: remembered peers
// that are not alive, and seeds when this node is alone (no alive member).
// Targets at an alive member's address, or at ours, are skipped.
//
// Pacing, so that a busy cluster does not flood itself with push/pulls:
// alone, up to maxJoinsInFlight attempts run at once and a target is tried
// as soon as it is due; with alive members, one attempt at a time, and a
// peer that just went away is first tried after a random delay between
// RejoinMin and RejoinMax: a false "dead" is refuted by memberlist itself
// meanwhile, a restarted peer re-joins by itself, and the attempts of the
// whole cluster at one lost peer spread over that window (any one success
// heals a partition for everyone). A peer known from its marker record only
// is first tried after RejoinMin to 2×RejoinMin: its marker (broadcast
// after the alive message, or repaired by the store sync) came when its
// alive message should have, so memberlist's broadcast most likely missed
// this node, and only few nodes are in that case (memberlist's own repair, push/pull, is a minute away at 50 nodes;
// bench/sim saw such members missing for 24–45 s with the long window).
func (b *peerBook) due(now time.Time, alive map[string]string, ownAddr string) []*target {
	alone := len(alive) == 0
	limit := 1
	if alone {
		limit = maxJoinsInFlight
	}
	aliveAddr := make(map[string]bool, len(alive))
	for _, a := range alive {
		aliveAddr[a] = true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var cands []*target
	busy := 0
	consider := func(t *target) {
		switch {
		case t.busy:
			busy++
		case t.Addr == ownAddr || aliveAddr[t.Addr]:
		case t.next.IsZero() && !alone && t.hinted:
			// Known from its marker only: memberlist's broadcast of
			// it most likely missed us.
			t.next = now.Add(b.minB + rand.N(b.minB+1))
		case t.next.IsZero() && !alone:
			t.next = now.Add(b.minB + rand.N(b.maxB-b.minB+1))
		case t.next.After(now):
		default:
			cands = append(cands, t)
		}
	}
	for name, t := range b.peers {
		if _, ok := alive[name]; !ok {
			consider(t)
		}
	}
	if alone {
		for _, t := range b.seeds {
			consider(t)
		}
	}
	rand.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	cands = cands[:min(len(cands), max(limit-busy, 0))]
	for _, t := range cands {
		t.busy = true
	}
	return cands
}

// result records the outcome of an attempt on t and schedules the next.
func (b *peerBook) result(t *target, ok bool, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t.busy = false
	if ok {
		// Joined: if the peer does not show up alive, try again soon.
		t.backoff = 0
		t.next = now.Add(b.minB)
		return
	}
	t.backoff = min(max(t.backoff*2, b.minB), b.maxB)
	jitter := time.Duration(rand.Int64N(int64(t.backoff)/2+1)) - t.backoff/4 // ±25%
	t.next = now.Add(t.backoff + jitter)
}

// hasTargets reports whether there is any seed or remembered peer.
func (b *peerBook) hasTargets() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.peers) > 0 || len(b.seeds) > 0
}

func (b *peerBook) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.peers)
}

// list returns the remembered peers sorted by name.
func (b *peerBook) list() []KnownPeer {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]KnownPeer, 0, len(b.peers))
	for _, t := range b.peers {
		out = append(out, t.KnownPeer)
	}
	slices.SortFunc(out, func(a, b KnownPeer) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// toSave returns the file contents when the set changed, or a LastSeen
// moved on by persistSeenEvery, or force; nil otherwise. It marks the book
// saved.
func (b *peerBook) toSave(force bool) *knownPeersFile {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.path == "" {
		return nil
	}
	stale := false
	for _, t := range b.peers {
		if t.LastSeen.Sub(t.savedSeen) >= persistSeenEvery {
			stale = true
		}
	}
	if !b.dirty && !stale && !force {
		return nil
	}
	f := &knownPeersFile{Version: knownPeersVersion, Peers: make([]KnownPeer, 0, len(b.peers))}
	for _, t := range b.peers {
		f.Peers = append(f.Peers, t.KnownPeer)
		t.savedSeen = t.LastSeen
	}
	slices.SortFunc(f.Peers, func(a, b KnownPeer) int { return strings.Compare(a.Name, b.Name) })
	b.dirty = false
	return f
}

// markDirty asks for another save (after a failed one).
func (b *peerBook) markDirty() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dirty = true
}

// savePeers writes the known peers file when needed.
func (m *Mesh) savePeers(force bool) {
	f := m.book.toSave(force)
	if f == nil {
		return
	}
	if err := statefile.WriteJSON(m.book.path, f); err != nil {
		m.log.Error("save known peers", "err", err)
		m.book.markDirty()
	}
}

// routineMaintain re-joins remembered peers that are not alive (and the
// seeds when alone) with backoff, persists the known peers, forgets old
// peers, dead members and tombstones. It runs until Leave or Shutdown,
// then waits for its join attempts.
func (m *Mesh) routineMaintain() {
	defer m.wg.Done()
	m.log.Debug("routine maintain started")
	defer m.log.Debug("routine maintain stopped")

	var attempts sync.WaitGroup
	defer attempts.Wait()
	tick := min(max(m.tun.RejoinMin/2, 10*time.Millisecond), 500*time.Millisecond)
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	ownAddr := m.Addr().String()
	var lastGC time.Time
	wasAlone := false
	for {
		now := time.Now()
		alive := m.members.aliveOthers(m.name)
		m.book.touchAlive(alive, now)
		for _, name := range m.book.forget(now.Add(-m.tun.ForgetPeersAfter)) {
			// Not alive (touchAlive just renewed every alive one); its
			// claim is the Claimer's business (held for the grace).
			n := m.store.DeleteOwnedBy(name, KindClaim)
			m.log.Info("forget peer not seen for long", "peer", name, "after", m.tun.ForgetPeersAfter, "records_deleted", n)
		}
		m.members.prune(now.Add(-m.tun.GossipToTheDeadTime))

		alone := len(alive) == 0 && m.book.hasTargets()
		if alone && !wasAlone {
			m.log.Info("alone: re-joining remembered peers and seeds")
		} else if !alone && wasAlone {
			if len(alive) > 0 {
				m.log.Info("re-joined the cluster", "alive_members", len(alive)+1)
			} else {
				m.log.Info("no remembered peer or seed left to re-join: a cluster of one")
			}
		}
		wasAlone = alone

		for _, t := range m.book.due(now, alive, ownAddr) {
			attempts.Add(1)
			go func() {
				defer attempts.Done()
				m.attempt(t)
			}()
		}
		m.savePeers(false)
		if now.Sub(lastGC) >= time.Minute {
			if n := m.store.gc(); n > 0 {
				m.log.Debug("forgot expired tombstones", "count", n)
			}
			lastGC = now
		}

		select {
		case <-m.stop:
			return
		case <-ticker.C:
		}
	}
}

// attempt tries to join t at its address, then at the alternative one.
func (m *Mesh) attempt(t *target) {
	m.book.mu.Lock()
	addrs := []string{t.Addr}
	if t.alt != "" {
		addrs = append(addrs, t.alt)
	}
	name := t.Name
	m.book.mu.Unlock()

	ok := false
	for _, a := range addrs {
		err := m.joinOne(a)
		if err == nil {
			ok = true
			m.log.Debug("joined", "peer", name, "addr", a)
			break
		}
		if !errors.Is(err, ErrKeyMismatch) { // joinOne logged those
			m.log.Debug("re-join failed", "peer", name, "err", err)
		}
	}
	if ok {
		m.counters.rejoins.Add(1)
	} else {
		m.counters.rejoinFailures.Add(1)
	}
	m.book.result(t, ok, time.Now())
}

package mesh

import (
	"math/rand/v2"
	"time"

	"github.com/hashicorp/memberlist"
)

// The store sync repairs what broadcasts miss, faster than memberlist's
// push/pull (Tuning.PushPullInterval, scaled up with the cluster size: 60s
// at 50 nodes, 120s at 200). A broadcast is an epidemic: each node sends a
// record it learns k times (storeRetransmitMult × log10 of the cluster
// size) and about e^-k of the nodes are missed — a few nodes per burst of
// changes in a cluster of 50.
//
//  1. Every Tuning.SyncInterval (jittered) a node sends its store summary
//     (record count and the wrapping sum of the records' hashes, a UDP
//     packet of a few dozen bytes) to a random alive member.
//  2. A member whose summary differs answers with its digest (per record:
//     hash of kind and key, clock, hash of the version) over a stream.
//  3. The first node sends back, over a stream, the records that member
//     lacks or holds an older version of (a msgState message: not passed
//     on as a broadcast).
//
// So each node is offered repairs by about one member per interval. In a
// settled cluster the sync costs one small packet per node per interval.
// A node whose store changed during the last interval neither sends a
// summary nor answers one: while changes are still being broadcast, a
// repair would mostly carry what is on its way anyway.
// Messages are handled by routineSync one at a time; when it is behind,
// further summaries and digests are dropped (the next interval brings new
// ones).

// syncQueue is how many summaries and digests wait for routineSync.
const syncQueue = 16

// routineSync sends summaries and answers summaries and digests until
// Leave or Shutdown.
func (m *Mesh) routineSync() {
	defer m.wg.Done()
	m.log.Debug("routine sync started")
	defer m.log.Debug("routine sync stopped")
	timer := time.NewTimer(m.syncDelay())
	defer timer.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-timer.C:
			m.sendSummary()
			timer.Reset(m.syncDelay())
		case msg := <-m.syncWork:
			m.handleSync(msg)
		}
	}
}

// syncDelay is SyncInterval ±25%.
func (m *Mesh) syncDelay() time.Duration {
	i := m.tun.SyncInterval
	return i*3/4 + rand.N(i/2+1)
}

// sendSummary sends our summary to a random alive member.
func (m *Mesh) sendSummary() {
	if !m.store.quietSince(time.Now().Add(-m.tun.SyncInterval)) {
		return
	}
	alive := m.members.aliveOthers(m.name)
	if len(alive) == 0 {
		return
	}
	names := make([]string, 0, len(alive))
	for name := range alive {
		names = append(names, name)
	}
	to, ok := m.syncTarget(names[rand.IntN(len(names))])
	if !ok {
		return
	}
	if err := m.ml.SendBestEffort(to, encodeSummary(m.name, m.store.summary())); err != nil {
		m.log.Debug("send store summary", "to", to.Name, "err", err)
	}
}

// handleSync answers a summary with our digest when the stores differ, and
// a digest with the records its sender lacks.
func (m *Mesh) handleSync(msg message) {
	to, ok := m.syncTarget(msg.from)
	if !ok {
		return
	}
	var out []byte
	switch msg.typ {
	case msgSummary:
		if msg.summary == m.store.summary() || !m.store.quietSince(time.Now().Add(-m.tun.SyncInterval)) {
			return
		}
		out = encodeDigest(m.name, m.store.digest())
	case msgDigest:
		recs := m.store.newerThan(msg.digest)
		if len(recs) == 0 {
			return
		}
		size := 0
		for i, r := range recs {
			if size += recordSize(r); size > MaxStateSize {
				recs = recs[:i] // the rest in a later round
				break
			}
		}
		out = encodeMessage(msgState, m.name, recs)
	default:
		return
	}
	if err := m.ml.SendReliable(to, out); err != nil {
		m.log.Debug("store sync", "to", to.Name, "err", err)
	}
}

// syncTarget returns the memberlist node of an alive member.
func (m *Mesh) syncTarget(name string) (*memberlist.Node, bool) {
	mem, ok := m.members.get(name)
	if !ok || mem.State != StateAlive || mem.Self || !mem.Addr.IsValid() {
		return nil, false
	}
	return &memberlist.Node{Name: mem.Name, Addr: mem.Addr.Addr().AsSlice(), Port: mem.Addr.Port()}, true
}

package mesh

import (
	"sync"

	"github.com/hashicorp/memberlist"
)

// Sizes of what the store sends.
const (
	// maxBroadcastSize is the largest single-record message queued for
	// broadcast: it must fit one gossip packet (memberlist's UDPBufferSize,
	// 1400, less its compound, encryption and label overhead). Larger
	// records spread by push/pull only.
	maxBroadcastSize = 1200
	// MaxStateSize bounds the store's push/pull state (memberlist refuses
	// more than 20 MiB). Beyond it tombstones are left out first, then
	// records, with an error logged. 200 nodes with a few records of a few
	// hundred bytes each need well under 1 MiB.
	MaxStateSize = 8 << 20
)

// delegate is the memberlist.Delegate of a Mesh: node meta, the store's
// broadcasts, and the store's push/pull state. memberlist calls it from its
// own goroutines, never under its node lock.
type delegate Mesh

// NodeMeta returns the encoded meta; Start and UpdateMeta checked its size.
func (d *delegate) NodeMeta(limit int) []byte {
	m := (*Mesh)(d)
	m.meta.Lock()
	defer m.meta.Unlock()
	if len(m.meta.encoded) > limit {
		return nil
	}
	return m.meta.encoded
}

// NotifyMsg takes a broadcast from a member. buf is memberlist's and is
// not kept.
func (d *delegate) NotifyMsg(buf []byte) {
	m := (*Mesh)(d)
	msg, err := decodeMessage(buf)
	if err != nil {
		m.log.Warn("drop malformed gossip message", "from", msg.from, "bytes", len(buf), "err", err)
		return
	}
	m.store.merge(msg.records, originGossip)
}

// GetBroadcasts hands memberlist the queued record broadcasts.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.queue.GetBroadcasts(overhead, limit)
}

// LocalState returns the whole store for push/pull.
func (d *delegate) LocalState(join bool) []byte {
	m := (*Mesh)(d)
	recs := m.store.snapshot()
	size := 0
	for i, r := range recs {
		size += recordSize(r)
		if size > MaxStateSize {
			m.log.Error("store too large for push/pull, sending part of it",
				"records", len(recs), "sent", i, "limit_bytes", MaxStateSize)
			recs = recs[:i] // live records sort first: tombstones go first
			break
		}
	}
	return encodeMessage(msgState, m.name, recs)
}

// MergeRemoteState merges a peer's store from push/pull.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	m := (*Mesh)(d)
	msg, err := decodeMessage(buf)
	if err != nil {
		m.log.Warn("drop malformed push/pull state", "from", msg.from, "bytes", len(buf), "err", err)
		return
	}
	if msg.typ != msgState {
		m.log.Warn("drop push/pull state of the wrong type", "from", msg.from, "type", msg.typ)
		return
	}
	m.store.merge(msg.records, originSync)
	m.syncedOnce.Do(func() { close(m.synced) })
}

// onChange is the store's internal hook: it broadcasts local and gossiped
// changes (changes learned by push/pull spread by push/pull), keeps the
// member marker right, and publishes the change.
func (m *Mesh) onChange(c change) {
	r := c.rec
	if c.origin != originSync {
		m.queueBroadcast(r)
	}
	if r.Kind == kindMember {
		switch {
		case r.Key == m.name && r.Deleted && !m.leaving.Load():
			// A marker tombstone of a previous run of this node that wins
			// over our marker (its clock ran ahead): say we are running.
			m.store.Put(kindMember, m.name, nil)
		case r.Key != m.name && r.Deleted:
			m.markLeft(r.Key)
		}
	}
	m.events.publish(Event{Type: EventRecord, Record: r})
}

// queueBroadcast queues r for gossip.
func (m *Mesh) queueBroadcast(r Record) {
	msg := encodeMessage(msgRecords, m.name, []Record{r})
	if len(msg) > maxBroadcastSize {
		m.log.Debug("record too large to broadcast, left to push/pull", "kind", r.Kind, "key", r.Key, "bytes", len(msg))
		return
	}
	b := &recordBroadcast{name: r.Kind + "\x00" + r.Key, msg: msg}
	if r.Kind == kindMember && r.Key == m.name && r.Deleted {
		b.done, b.once = m.leaveSent, &m.leaveSentOnce
	}
	m.queue.QueueBroadcast(b)
}

// recordBroadcast is one record's message in the transmit queue; a newer
// version of the same record replaces it (NamedBroadcast).
type recordBroadcast struct {
	name string
	msg  []byte
	done chan struct{} // closed by Finished, if set
	once *sync.Once
}

var _ memberlist.NamedBroadcast = (*recordBroadcast)(nil)

func (b *recordBroadcast) Name() string { return b.name }

func (b *recordBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(memberlist.NamedBroadcast)
	return ok && o.Name() == b.name
}

func (b *recordBroadcast) Message() []byte { return b.msg }

func (b *recordBroadcast) Finished() {
	if b.done != nil {
		b.once.Do(func() { close(b.done) })
	}
}

package mesh

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Sizes of what the store sends.
const (
	// maxBroadcastSize is the largest encoded record queued for broadcast:
	// it must fit one gossip packet (memberlist's UDPBufferSize, 1400, less
	// its compound, encryption and label overhead, and our header). Larger
	// records spread by anti-entropy only.
	maxBroadcastSize = 1100
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

// NotifyMsg takes a message from a member: a broadcast, a sync repair, or
// a sync summary or digest (queued for routineSync). buf is memberlist's and
// is not kept.
func (d *delegate) NotifyMsg(buf []byte) {
	m := (*Mesh)(d)
	msg, err := decodeMessage(buf)
	if err != nil {
		m.log.Warn("drop malformed gossip message", "from", msg.from, "bytes", len(buf), "err", err)
		return
	}
	switch msg.typ {
	case msgRecords:
		m.store.merge(msg.records, originGossip)
	case msgState:
		m.store.merge(msg.records, originSync)
	case msgSummary, msgDigest:
		select {
		case m.syncWork <- msg:
		default:
			m.log.Debug("store sync behind, dropped a message", "from", msg.from, "type", msg.typ)
		}
	}
}

// GetBroadcasts hands memberlist the queued records that fit the room
// left in its gossip packet, as one message.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	if msg := (*Mesh)(d).takeBroadcasts(limit - overhead); msg != nil {
		return [][]byte{msg}
	}
	return nil
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
		case r.Key == m.name && r.Deleted && !m.leaving.Load() && m.mlReady.Load():
			// A marker tombstone of a previous run of this node that wins
			// over our marker (its clock ran ahead): say we are running.
			// Before memberlist.Create has returned there is no address
			// yet; Start puts the marker (with a later clock) right after.
			m.store.Put(kindMember, m.name, []byte(m.Addr().String()))
		case r.Key != m.name && r.Deleted:
			m.markLeft(r.Key)
		case r.Key != m.name && checkAddr(string(r.Value)) == nil:
			m.book.hint(r.Key, string(r.Value), time.Now())
		}
	}
	m.events.publish(Event{Type: EventRecord, Record: r})
}

// queueBroadcast queues r for gossip. The queue holds bare encoded
// records; takeBroadcasts puts the ones that fit a packet in one message.
func (m *Mesh) queueBroadcast(r Record) {
	enc := appendRecord(nil, r)
	if len(enc) > maxBroadcastSize {
		m.log.Debug("record too large to broadcast, left to anti-entropy", "kind", r.Kind, "key", r.Key, "bytes", len(enc))
		return
	}
	b := &recordBroadcast{name: r.Kind + "\x00" + r.Key, msg: enc}
	if r.Kind == kindMember && r.Key == m.name && r.Deleted {
		b.done, b.once = m.leaveSent, &m.leaveSentOnce
	}
	// A live member marker is not urgent: it repairs membership where
	// memberlist's own broadcast of a node missed (see the package doc),
	// or overrides a stale tombstone of an earlier run. It takes the room
	// the other records leave, so that a burst of joins does not delay
	// the claims.
	m.queue.push(b, r.Kind == kindMember && !r.Deleted)
}

// takeBroadcasts returns a msgRecords message of at most limit bytes with
// the queued records due for sending (each counts one transmission), or
// nil when none is queued or fits.
func (m *Mesh) takeBroadcasts(limit int) []byte {
	header := 2 + binary.MaxVarintLen64 + len(m.name) + binary.MaxVarintLen64
	recs := m.queue.take(limit - header)
	if len(recs) == 0 {
		return nil
	}
	size := header
	for _, r := range recs {
		size += len(r)
	}
	b := make([]byte, 0, size)
	b = append(b, wireVersion, msgRecords)
	b = appendString(b, m.name)
	b = binary.AppendUvarint(b, uint64(len(recs)))
	for _, r := range recs {
		b = append(b, r...)
	}
	return b
}

// recordBroadcast is one record in the transmit queue (encoded bare, see
// takeBroadcasts); a newer version of the same record replaces it
// (NamedBroadcast).
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

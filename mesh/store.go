package mesh

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"hash/fnv"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// Record is one entry of the replicated store, identified by (Kind, Key).
//
// Records are values: the store hands out copies, and Value is never shared
// with the store's own copy except in change callbacks (see
// Store.Subscribe), which must not modify it.
type Record struct {
	Kind    string
	Key     string
	Value   []byte
	Owner   string // name of the node that wrote it
	Clock   uint64 // hybrid logical clock of the write (Unix milliseconds, bumped past every clock seen)
	Deleted bool   // a tombstone: the record was deleted at Clock
}

// Time returns the wall-clock time encoded in the record's clock. It is the
// time of the write, or slightly later when the writer's clock lagged behind
// a clock it had seen.
func (r Record) Time() time.Time { return time.UnixMilli(int64(r.Clock)) }

// compareRecords is the store's total order on versions of one record:
// Clock, then Owner, then Deleted (a tombstone after a live record), then
// Value bytes. The greater version wins a merge, which makes merging
// commutative, associative and idempotent.
func compareRecords(a, b Record) int {
	if c := cmp.Compare(a.Clock, b.Clock); c != 0 {
		return c
	}
	if c := strings.Compare(a.Owner, b.Owner); c != 0 {
		return c
	}
	if a.Deleted != b.Deleted {
		if a.Deleted {
			return 1
		}
		return -1
	}
	return bytes.Compare(a.Value, b.Value)
}

// Limits on records.
const (
	// MaxValueSize is the largest Value the store takes. Values larger than
	// about 1 KB are not broadcast (they do not fit a gossip packet) and
	// spread by anti-entropy only (Tuning.PushPullInterval).
	MaxValueSize = 64 << 10
	// maxNameSize bounds Kind, Key and Owner.
	maxNameSize = 1 << 10
	// maxClockAhead is how far into the future a remote record's clock may
	// be. A record beyond it is refused: taking it would pin every later
	// write of this node to a clock that far ahead.
	maxClockAhead = 24 * time.Hour
)

// recordID identifies a record.
type recordID struct{ kind, key string }

// storeEntry is a stored version, its recordHash, and when this node
// learned it.
type storeEntry struct {
	rec     Record
	hash    uint64
	learned time.Time
}

// keyHash hashes a record's identity (FNV-1a 64: the same on every node).
func keyHash(kind, key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(kind))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return h.Sum64()
}

// recordHash hashes a whole version of a record (FNV-1a 64).
func recordHash(r Record) uint64 {
	h := fnv.New64a()
	var buf [9]byte
	for _, s := range []string{r.Kind, r.Key, r.Owner} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	binary.BigEndian.PutUint64(buf[:8], r.Clock)
	if r.Deleted {
		buf[8] = 1
	}
	h.Write(buf[:])
	h.Write(r.Value)
	return h.Sum64()
}

// origin tells where a change came from.
type origin uint8

const (
	originLocal  origin = iota // Put or Delete on this node
	originGossip               // a broadcast from a member
	originSync                 // push/pull anti-entropy, or Merge
)

// change is one state change of the store, in the order it happened.
type change struct {
	rec    Record
	origin origin
}

// Store is the replicated record store of a Mesh: records (Kind, Key) →
// Value with last-writer-wins merging under compareRecords' total order.
// Every local change is broadcast to the cluster, and passed on by every
// node that learns it from a broadcast.
//
// Broadcasts reach nearly every node within a few gossip rounds; the store
// sync (every Tuning.SyncInterval, see sync.go) repairs the few they miss,
// and memberlist's push/pull exchanges the whole store as a last resort.
//
// Deletes leave a tombstone so that the delete wins over older versions
// still travelling. A tombstone is kept for Tuning.TombstoneTTL after this
// node learned it, then forgotten. The tradeoff: a node that was cut off
// for longer than the TTL and still holds the older live version brings it
// back when it returns (the delete is lost); a longer TTL costs memory and
// push/pull size for every delete. Tombstones older than the TTL (by their
// clock) that arrive for a key this node does not hold are ignored, so
// forgotten tombstones do not bounce between nodes.
//
// A Store is safe for concurrent use. After the Mesh stops, the store keeps
// working locally (nothing is sent any more).
type Store struct {
	owner string
	ttl   time.Duration
	now   func() time.Time
	log   *slog.Logger

	mu      sync.Mutex
	recs    map[recordID]*storeEntry
	sum     uint64    // wrapping sum of the entries' hashes (summary)
	changed time.Time // last change
	highest uint64    // highest clock written or seen
	// The change pipeline: changes are appended under mu in the order they
	// happen and delivered by exactly one draining goroutine at a time,
	// outside mu.
	pending  []change
	draining bool
	internal func(change) // the Mesh's hook, called before subscribers
	subs     []storeSub
	nextSub  int
}

type storeSub struct {
	id int
	fn func(Record)
}

// newStore returns an empty store whose writes are owned by owner.
func newStore(owner string, ttl time.Duration, now func() time.Time, log *slog.Logger) *Store {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = discardLogger
	}
	return &Store{owner: owner, ttl: ttl, now: now, log: log, recs: make(map[recordID]*storeEntry)}
}

// tickLocked returns the clock of a local write: max(wall clock in ms,
// highest clock seen + 1).
func (s *Store) tickLocked() uint64 {
	c := max(uint64(max(s.now().UnixMilli(), 0)), s.highest+1)
	s.highest = c
	return c
}

// Put writes value (copied) under (kind, key), owned by this node, and
// returns the new record. Put panics if value is longer than MaxValueSize
// or kind or key longer than 1 KiB (a programming error).
func (s *Store) Put(kind, key string, value []byte) Record {
	if len(value) > MaxValueSize || len(kind) > maxNameSize || len(key) > maxNameSize {
		panic("mesh: Store.Put: record too large")
	}
	s.mu.Lock()
	r := Record{Kind: kind, Key: key, Value: bytes.Clone(value), Owner: s.owner, Clock: s.tickLocked()}
	if r.Value == nil {
		r.Value = []byte{}
	}
	s.setLocked(r, originLocal)
	s.mu.Unlock()
	s.drain()
	return cloneRecord(r)
}

// Delete replaces the live record (kind, key) by a tombstone owned by this
// node and returns the tombstone. It returns false and writes nothing when
// there is no live record.
func (s *Store) Delete(kind, key string) (Record, bool) {
	s.mu.Lock()
	e, ok := s.recs[recordID{kind, key}]
	if !ok || e.rec.Deleted {
		s.mu.Unlock()
		return Record{}, false
	}
	r := Record{Kind: kind, Key: key, Owner: s.owner, Clock: s.tickLocked(), Deleted: true}
	s.setLocked(r, originLocal)
	s.mu.Unlock()
	s.drain()
	return r, true
}

// Get returns the live record (kind, key).
func (s *Store) Get(kind, key string) (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.recs[recordID{kind, key}]
	if !ok || e.rec.Deleted {
		return Record{}, false
	}
	return cloneRecord(e.rec), true
}

// Version returns the clock of the live record (kind, key) without copying
// it: a cheap "has it changed" test.
func (s *Store) Version(kind, key string) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.recs[recordID{kind, key}]
	if !ok || e.rec.Deleted {
		return 0, false
	}
	return e.rec.Clock, true
}

// lookup returns the record (kind, key), tombstone or not.
func (s *Store) lookup(kind, key string) (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.recs[recordID{kind, key}]
	if !ok {
		return Record{}, false
	}
	return cloneRecord(e.rec), true
}

// List returns the live records of kind, sorted by key.
func (s *Store) List(kind string) []Record {
	s.mu.Lock()
	var out []Record
	for id, e := range s.recs {
		if id.kind == kind && !e.rec.Deleted {
			out = append(out, cloneRecord(e.rec))
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Record) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// DeleteOwnedBy replaces every live record whose Owner is owner, of any
// kind but those in skip, by a tombstone owned by this node, and returns
// how many. It is how
// the records of a node gone for good leave the cluster (see
// Tuning.ForgetPeersAfter); a node that comes back writes its records
// again, with a later clock.
func (s *Store) DeleteOwnedBy(owner string, skip ...string) int {
	s.mu.Lock()
	n := 0
	for id, e := range s.recs {
		if e.rec.Owner != owner || e.rec.Deleted || slices.Contains(skip, id.kind) {
			continue
		}
		s.setLocked(Record{Kind: id.kind, Key: id.key, Owner: s.owner, Clock: s.tickLocked(), Deleted: true}, originLocal)
		n++
	}
	s.mu.Unlock()
	s.drain()
	return n
}

// Merge takes a version of a record from elsewhere: it replaces the stored
// version when it is greater in the store's order. It returns true when the
// store changed. A merged record is not broadcast; it spreads by
// anti-entropy (store sync and push/pull). Merge is commutative, associative and idempotent. A record
// without owner or clock, with oversized fields, or with a clock more than
// a day ahead of this node's clock is refused (false, logged).
func (s *Store) Merge(r Record) bool {
	return s.merge([]Record{r}, originSync) > 0
}

// merge takes a batch of records and returns how many changed the store.
func (s *Store) merge(recs []Record, o origin) int {
	s.mu.Lock()
	n := 0
	for _, r := range recs {
		if s.mergeLocked(r, o) {
			n++
		}
	}
	s.mu.Unlock()
	if n > 0 {
		s.drain()
	}
	return n
}

func (s *Store) mergeLocked(r Record, o origin) bool {
	now := s.now()
	switch {
	case r.Owner == "" || r.Clock == 0:
		s.log.Warn("drop record without owner or clock", "kind", r.Kind, "key", r.Key, "owner", r.Owner)
		return false
	case len(r.Value) > MaxValueSize || len(r.Kind) > maxNameSize || len(r.Key) > maxNameSize || len(r.Owner) > maxNameSize:
		s.log.Warn("drop oversized record", "kind", r.Kind, "key", r.Key, "owner", r.Owner)
		return false
	case r.Clock > uint64(now.Add(maxClockAhead).UnixMilli()):
		s.log.Warn("drop record with a clock far ahead of ours", "kind", r.Kind, "key", r.Key, "owner", r.Owner, "clock", r.Time())
		return false
	}
	s.highest = max(s.highest, r.Clock)
	id := recordID{r.Kind, r.Key}
	e, ok := s.recs[id]
	if ok && compareRecords(r, e.rec) <= 0 {
		return false
	}
	if !ok && r.Deleted && r.Time().Before(now.Add(-s.ttl)) {
		return false // an expired tombstone for a record we do not hold
	}
	r = cloneRecord(r)
	if !r.Deleted && r.Value == nil {
		r.Value = []byte{}
	}
	if r.Deleted && len(r.Value) == 0 {
		r.Value = nil
	}
	s.setLocked(r, o)
	return true
}

// setLocked stores r and queues the change.
func (s *Store) setLocked(r Record, o origin) {
	id := recordID{r.Kind, r.Key}
	if old, ok := s.recs[id]; ok {
		s.sum -= old.hash
	}
	e := &storeEntry{rec: r, hash: recordHash(r), learned: s.now()}
	s.changed = e.learned
	s.sum += e.hash
	s.recs[id] = e
	s.pending = append(s.pending, change{rec: r, origin: o})
}

// quietSince reports whether the store has not changed since t.
func (s *Store) quietSince(t time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed.Before(t)
}

// summary returns the store's fingerprint.
func (s *Store) summary() summary {
	s.mu.Lock()
	defer s.mu.Unlock()
	return summary{count: uint64(len(s.recs)), sum: s.sum}
}

// digest returns a digest entry per record.
func (s *Store) digest() []digestEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]digestEntry, 0, len(s.recs))
	for id, e := range s.recs {
		out = append(out, digestEntry{key: keyHash(id.kind, id.key), clock: e.rec.Clock, hash: e.hash})
	}
	return out
}

// newerThan returns the records the holder of digest d lacks or has an
// older version of (by clock; on equal clocks, any other version). The
// records share their values with the store: read them only.
func (s *Store) newerThan(d []digestEntry) []Record {
	theirs := make(map[uint64]digestEntry, len(d))
	for _, e := range d {
		theirs[e.key] = e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Record
	for id, e := range s.recs {
		t, ok := theirs[keyHash(id.kind, id.key)]
		if !ok || e.rec.Clock > t.clock || (e.rec.Clock == t.clock && e.hash != t.hash) {
			out = append(out, e.rec)
		}
	}
	return out
}

// gc forgets tombstones learned more than the TTL ago and returns how many.
func (s *Store) gc() int {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, e := range s.recs {
		if e.rec.Deleted && now.Sub(e.learned) > s.ttl {
			delete(s.recs, id)
			s.sum -= e.hash
			n++
		}
	}
	return n
}

// snapshot returns every record, tombstones included, live ones first,
// each group sorted by kind and key. The records share their values with
// the store: read them only.
func (s *Store) snapshot() []Record {
	s.mu.Lock()
	out := make([]Record, 0, len(s.recs))
	for _, e := range s.recs {
		out = append(out, e.rec)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Record) int {
		if a.Deleted != b.Deleted {
			if a.Deleted {
				return 1
			}
			return -1
		}
		if c := strings.Compare(a.Kind, b.Kind); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
	return out
}

// Subscribe calls fn with every change of the store (local writes, merged
// remote records, tombstones) in the order the changes happened, one call
// at a time. fn never runs under the store lock, so it may call the store
// (a write from fn is delivered after fn returns); it runs on the goroutine
// of some change, possibly one of memberlist's, so it must be quick and must
// not block: hand work to a goroutine or use Mesh.Subscribe's buffered
// channel. The Record's Value must not be modified. The returned func
// cancels; fn may still run once if a delivery is under way.
func (s *Store) Subscribe(fn func(Record)) (cancel func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextSub++
	id := s.nextSub
	s.subs = append(s.subs, storeSub{id: id, fn: fn})
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.subs = slices.DeleteFunc(s.subs, func(sub storeSub) bool { return sub.id == id })
	}
}

// setInternal installs the Mesh's change hook.
func (s *Store) setInternal(fn func(change)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.internal = fn
}

// drain delivers the pending changes unless another goroutine is already
// doing so (it will pick ours up).
func (s *Store) drain() {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		return
	}
	s.draining = true
	for len(s.pending) > 0 {
		batch := s.pending
		s.pending = nil
		internal := s.internal
		subs := slices.Clone(s.subs)
		s.mu.Unlock()
		for _, c := range batch {
			if internal != nil {
				internal(c)
			}
			for _, sub := range subs {
				sub.fn(c.rec)
			}
		}
		s.mu.Lock()
	}
	s.draining = false
	s.mu.Unlock()
}

func cloneRecord(r Record) Record {
	if r.Value != nil {
		r.Value = bytes.Clone(r.Value)
	}
	return r
}

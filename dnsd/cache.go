package dnsd

import (
	"encoding/binary"
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// The cache keeps forwarded answers in wire form, ready to copy: a hit
// copies the message, patches the ID, flags and question name, and
// decrements the TTLs at offsets found when the answer was stored.

const cacheShards = 16

// cache is a bounded map of answers, sharded to spread lock contention, each
// shard evicting with the CLOCK (second chance) algorithm. Lookups take a
// shard's read lock only.
type cache struct {
	seed     maphash.Seed
	perShard int
	shards   [cacheShards]cacheShard
}

type cacheShard struct {
	mu   sync.RWMutex
	m    map[string]*cacheEntry
	ring []*cacheEntry // CLOCK ring; an entry's slot is its index
	hand int
}

// cacheEntry is one stored answer. Everything but ref is immutable once the
// entry is in the cache.
type cacheEntry struct {
	key  string
	msg  []byte   // whole answer: ID 0, question name lowercased, no OPT
	ttls []uint16 // offsets of the TTL fields of msg's records
	ends []uint16 // end offset of each record, in order
	// an, ns, ar count the records of each section.
	an, ns, ar int
	stored     int64 // cache clock when stored
	expires    int64 // cache clock when it may no longer be served
	slot       int
	ref        atomic.Bool // CLOCK's referenced bit
}

func newCache(size int) *cache {
	c := &cache{seed: maphash.MakeSeed(), perShard: max(1, (size+cacheShards-1)/cacheShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[string]*cacheEntry)
	}
	return c
}

// cacheKey appends the cache key of r: its lowercased wire name, type,
// class and DO bit.
func cacheKey(dst []byte, r *request) []byte {
	dst = append(dst, r.name()...)
	dst = binary.BigEndian.AppendUint16(dst, r.qtype)
	dst = binary.BigEndian.AppendUint16(dst, r.qclass)
	if r.do {
		return append(dst, 1)
	}
	return append(dst, 0)
}

func (c *cache) shard(key []byte) *cacheShard {
	return &c.shards[maphash.Bytes(c.seed, key)%cacheShards]
}

// get returns the live entry for key, or nil.
func (c *cache) get(key []byte, now int64) *cacheEntry {
	sh := c.shard(key)
	sh.mu.RLock()
	e := sh.m[string(key)]
	sh.mu.RUnlock()
	if e == nil || now >= e.expires {
		return nil
	}
	if !e.ref.Load() {
		e.ref.Store(true)
	}
	return e
}

// put stores e, replacing an entry with the same key, or evicting one.
func (c *cache) put(e *cacheEntry, now int64) {
	sh := c.shard([]byte(e.key))
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if old := sh.m[e.key]; old != nil {
		e.slot = old.slot
		sh.ring[e.slot] = e
		sh.m[e.key] = e
		return
	}
	if len(sh.ring) < c.perShard {
		e.slot = len(sh.ring)
		sh.ring = append(sh.ring, e)
		sh.m[e.key] = e
		return
	}
	// Second chance: clear referenced bits until an unreferenced or expired
	// entry comes under the hand. Two turns always find one.
	for range 2 * len(sh.ring) {
		v := sh.ring[sh.hand]
		if v.ref.Load() && now < v.expires {
			v.ref.Store(false)
			sh.hand = (sh.hand + 1) % len(sh.ring)
			continue
		}
		break
	}
	v := sh.ring[sh.hand]
	delete(sh.m, v.key)
	e.slot = sh.hand
	sh.ring[sh.hand] = e
	sh.m[e.key] = e
	sh.hand = (sh.hand + 1) % len(sh.ring)
}

// len returns the number of entries (for tests).
func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		c.shards[i].mu.RLock()
		n += len(c.shards[i].m)
		c.shards[i].mu.RUnlock()
	}
	return n
}

// appendTo appends the answer in e for r at cache clock now: r's ID, case
// and flags, TTLs decremented by the whole seconds e has been stored,
// truncated to limit bytes at a record boundary (with TC when answer or
// authority records were left out).
func (e *cacheEntry) appendTo(dst []byte, r *request, now int64, limit int) []byte {
	if r.edns {
		limit -= optRRLen
	}
	// Keep the longest prefix of whole records that fits.
	qend := headerLen + len(r.question)
	end, kept := len(e.msg), len(e.ends)
	if end > limit {
		end, kept = qend, 0
		for kept < len(e.ends) && int(e.ends[kept]) <= limit {
			end = int(e.ends[kept])
			kept++
		}
	}
	an := min(kept, e.an)
	ns := min(kept-an, e.ns)
	ar := kept - an - ns
	tc := an+ns < e.an+e.ns

	start := len(dst)
	dst = append(dst, e.msg[:end]...)
	m := dst[start:]
	binary.BigEndian.PutUint16(m[0:], r.id)
	flags := binary.BigEndian.Uint16(m[2:])
	flags &= 0xF // upstream rcode
	if e.msg[3]&flagAD != 0 && (r.do || r.flags&flagAD != 0) {
		flags |= flagAD
	}
	flags |= flagQR | flagRA | r.flags&(opcodeMask|flagRD|flagCD)
	if tc {
		flags |= flagTC
	}
	binary.BigEndian.PutUint16(m[2:], flags)
	copy(m[headerLen:], r.qname) // same name, the client's case
	elapsed := uint32((now - e.stored) / 1e9)
	for _, off := range e.ttls {
		if int(off) >= end {
			break
		}
		ttl := binary.BigEndian.Uint32(m[off:])
		binary.BigEndian.PutUint32(m[off:], ttl-min(ttl, elapsed))
	}
	if r.edns {
		dst = appendOPT(dst, r, rcodeSuccess)
		ar++
	}
	setCounts(dst[start:], an, ns, ar)
	return dst
}

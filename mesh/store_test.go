package mesh

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable time source.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newTestStore(owner string, clk *fakeClock) *Store {
	return newStore(owner, time.Hour, clk.now, nil)
}

func ms(t time.Time) uint64 { return uint64(t.UnixMilli()) }

func TestStoreHybridClock(t *testing.T) {
	clk := &fakeClock{t: epoch}
	s := newTestStore("a", clk)
	r1 := s.Put("k", "x", []byte("1"))
	if r1.Clock != ms(epoch) || r1.Owner != "a" {
		t.Fatalf("first put %+v, want clock = wall ms %d", r1, ms(epoch))
	}
	r2 := s.Put("k", "x", []byte("2")) // same millisecond
	if r2.Clock != r1.Clock+1 {
		t.Errorf("second put in the same ms: clock %d, want %d", r2.Clock, r1.Clock+1)
	}
	// A remote record from a node whose clock runs 10s ahead pushes ours.
	ahead := ms(epoch.Add(10 * time.Second))
	s.Merge(Record{Kind: "k", Key: "y", Value: []byte("r"), Owner: "b", Clock: ahead})
	if r3 := s.Put("k", "x", []byte("3")); r3.Clock != ahead+1 {
		t.Errorf("put after seeing %d: clock %d, want %d", ahead, r3.Clock, ahead+1)
	}
	// A merge that loses still advances the clock.
	s.Merge(Record{Kind: "k", Key: "y", Value: []byte("old"), Owner: "b", Clock: 5})
	further := ahead + 100
	s.Merge(Record{Kind: "k", Key: "x", Value: []byte("z"), Owner: "0", Clock: further - 1})
	s.Merge(Record{Kind: "k", Key: "x", Value: []byte("z"), Owner: "0", Clock: further})
	if r := s.Put("k", "w", nil); r.Clock != further+1 {
		t.Errorf("clock %d, want %d", r.Clock, further+1)
	}
	// Wall clock overtakes.
	clk.add(time.Minute)
	if r := s.Put("k", "w", nil); r.Clock != ms(clk.now()) {
		t.Errorf("clock %d, want wall ms %d", r.Clock, ms(clk.now()))
	}
}

func TestStoreMergeOrder(t *testing.T) {
	base := Record{Kind: "k", Key: "x", Value: []byte("m"), Owner: "b", Clock: ms(epoch)}
	with := func(f func(*Record)) Record { r := base; r.Value = []byte("m"); f(&r); return r }
	tests := []struct {
		name     string
		incoming Record
		wins     bool
	}{
		{"identical", base, false},
		{"newer clock", with(func(r *Record) { r.Clock++; r.Owner = "a" }), true},
		{"older clock", with(func(r *Record) { r.Clock--; r.Owner = "z" }), false},
		{"same clock, higher owner", with(func(r *Record) { r.Owner = "c"; r.Value = []byte("a") }), true},
		{"same clock, lower owner", with(func(r *Record) { r.Owner = "a"; r.Value = []byte("z") }), false},
		{"same clock and owner, tombstone", with(func(r *Record) { r.Deleted = true; r.Value = nil }), true},
		{"same clock and owner, greater value", with(func(r *Record) { r.Value = []byte("n") }), true},
		{"same clock and owner, smaller value", with(func(r *Record) { r.Value = []byte("l") }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestStore("self", &fakeClock{t: epoch})
			if !s.Merge(base) {
				t.Fatal("first merge did not change the store")
			}
			if got := s.Merge(tt.incoming); got != tt.wins {
				t.Errorf("Merge = %v, want %v", got, tt.wins)
			}
			want := base
			if tt.wins {
				want = tt.incoming
			}
			got, _ := s.lookup("k", "x")
			if compareRecords(got, want) != 0 || got.Deleted != want.Deleted {
				t.Errorf("stored %+v, want %+v", got, want)
			}
		})
	}
}

func TestStoreDeleteAndGC(t *testing.T) {
	clk := &fakeClock{t: epoch}
	s := newTestStore("a", clk)
	if _, ok := s.Delete("k", "x"); ok {
		t.Error("delete of a missing record reported true")
	}
	put := s.Put("k", "x", []byte("v"))
	tomb, ok := s.Delete("k", "x")
	if !ok || !tomb.Deleted || tomb.Clock <= put.Clock || tomb.Value != nil {
		t.Fatalf("delete = %+v, %v", tomb, ok)
	}
	if _, ok := s.Delete("k", "x"); ok {
		t.Error("second delete reported true")
	}
	if _, ok := s.Get("k", "x"); ok {
		t.Error("Get finds a deleted record")
	}
	// The older live version arriving late does not come back.
	if s.Merge(put) {
		t.Error("an older live version replaced the tombstone")
	}
	clk.add(59 * time.Minute)
	if n := s.gc(); n != 0 {
		t.Errorf("gc before the TTL removed %d", n)
	}
	clk.add(2 * time.Minute)
	if n := s.gc(); n != 1 {
		t.Errorf("gc after the TTL removed %d, want 1", n)
	}
	if _, ok := s.lookup("k", "x"); ok {
		t.Error("tombstone still there after gc")
	}
	// The expired tombstone coming back from a peer is not taken again…
	if s.Merge(tomb) {
		t.Error("an expired tombstone for an absent record was stored")
	}
	// …but a fresh one is (it must win over older versions in flight).
	fresh := Record{Kind: "k", Key: "y", Owner: "b", Clock: ms(clk.now()), Deleted: true}
	if !s.Merge(fresh) {
		t.Error("a fresh tombstone for an absent record was refused")
	}
	// An expired tombstone still deletes an older live record held here.
	old := Record{Kind: "k", Key: "z", Value: []byte("v"), Owner: "b", Clock: ms(epoch)}
	s.Merge(old)
	oldTomb := old
	oldTomb.Clock++
	oldTomb.Deleted = true
	oldTomb.Value = nil
	if !s.Merge(oldTomb) {
		t.Error("an old tombstone did not delete the older live record")
	}
}

func TestStoreRefuses(t *testing.T) {
	clk := &fakeClock{t: epoch}
	ok := Record{Kind: "k", Key: "x", Value: []byte("v"), Owner: "b", Clock: ms(epoch)}
	tests := []struct {
		name string
		mod  func(*Record)
	}{
		{"no owner", func(r *Record) { r.Owner = "" }},
		{"zero clock", func(r *Record) { r.Clock = 0 }},
		{"clock two days ahead", func(r *Record) { r.Clock = ms(epoch.Add(48 * time.Hour)) }},
		{"max clock", func(r *Record) { r.Clock = ^uint64(0) }},
		{"value too large", func(r *Record) { r.Value = make([]byte, MaxValueSize+1) }},
		{"key too large", func(r *Record) { r.Key = string(make([]byte, maxNameSize+1)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestStore("a", clk)
			r := ok
			tt.mod(&r)
			if s.Merge(r) {
				t.Errorf("Merge(%s) changed the store", tt.name)
			}
			if got := s.Put("k", "y", nil); got.Clock != ms(epoch) {
				t.Errorf("clock moved to %d by a refused record", got.Clock)
			}
		})
	}
}

func TestStoreListSortedLiveOnly(t *testing.T) {
	s := newTestStore("a", &fakeClock{t: epoch})
	s.Put("svc", "c", []byte("3"))
	s.Put("svc", "a", []byte("1"))
	s.Put("svc", "b", []byte("2"))
	s.Put("other", "a", []byte("x"))
	s.Delete("svc", "b")
	got := s.List("svc")
	if len(got) != 2 || got[0].Key != "a" || got[1].Key != "c" {
		t.Fatalf("List = %+v", got)
	}
	got[0].Value[0] = 'X' // copies: the store is not touched
	if r, _ := s.Get("svc", "a"); string(r.Value) != "1" {
		t.Errorf("List shares values with the store")
	}
}

func TestStoreSubscribe(t *testing.T) {
	s := newTestStore("a", &fakeClock{t: epoch})
	var got []string
	cancel := s.Subscribe(func(r Record) {
		// Not under the store lock: reading and writing from here works.
		if _, ok := s.Get(r.Kind, r.Key); !ok && !r.Deleted {
			t.Errorf("callback for %s/%s cannot see it", r.Kind, r.Key)
		}
		if r.Key == "x" && !r.Deleted {
			s.Put("k", "echo", r.Value)
		}
		got = append(got, fmt.Sprintf("%s=%s/%v", r.Key, r.Value, r.Deleted))
	})
	s.Put("k", "x", []byte("1"))
	s.Delete("k", "x")
	s.Merge(Record{Kind: "k", Key: "r", Value: []byte("2"), Owner: "b", Clock: ms(epoch) + 10})
	s.Merge(Record{Kind: "k", Key: "r", Value: []byte("2"), Owner: "b", Clock: ms(epoch) + 10}) // no change
	cancel()
	s.Put("k", "after", nil)
	want := []string{"x=1/false", "echo=1/false", "x=/true", "r=2/false"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("changes %q, want %q", got, want)
	}
}

// TestStoreMergeProperties merges random versions (duplicates, tombstones,
// equal clocks from different owners) in random orders, batches and
// interleavings into several stores, and checks that all end identical and
// equal to the maximum of every record, and that no store ever goes back to
// an older version of a record.
func TestStoreMergeProperties(t *testing.T) {
	for seed := range uint64(50) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			clk := &fakeClock{t: epoch}
			var versions []Record
			for range 60 {
				r := Record{
					Kind:  []string{"claim", "svc"}[rng.IntN(2)],
					Key:   []string{"x", "y", "z"}[rng.IntN(3)],
					Owner: []string{"a", "b", "c"}[rng.IntN(3)],
					Clock: ms(epoch) + uint64(rng.IntN(4)), // many equal clocks
				}
				if rng.IntN(3) == 0 {
					r.Deleted = true
				} else {
					r.Value = []byte{byte('0' + rng.IntN(3))}
				}
				versions = append(versions, r)
				if rng.IntN(4) == 0 {
					versions = append(versions, r) // duplicate
				}
			}
			want := make(map[recordID]Record)
			for _, r := range versions {
				id := recordID{r.Kind, r.Key}
				if cur, ok := want[id]; !ok || compareRecords(r, cur) > 0 {
					want[id] = r
				}
			}

			const n = 5
			stores := make([]*Store, n)
			for i := range stores {
				stores[i] = newTestStore(fmt.Sprint("s", i), clk)
			}
			// Each store gets every version, in its own order, in batches
			// of random size, some merged twice.
			for _, s := range stores {
				perm := rng.Perm(len(versions))
				for i := 0; i < len(perm); {
					size := 1 + rng.IntN(8)
					var batch []Record
					for _, p := range perm[i:min(i+size, len(perm))] {
						batch = append(batch, versions[p])
					}
					i += size
					before := s.snapshot()
					s.merge(batch, originSync)
					if rng.IntN(3) == 0 {
						s.merge(batch, originGossip) // idempotent
					}
					checkMonotone(t, before, s.snapshot())
				}
			}
			// Associativity: two stores with half the versions each,
			// merged into each other, equal the rest.
			x, y := newTestStore("x", clk), newTestStore("y", clk)
			x.merge(versions[:len(versions)/2], originSync)
			y.merge(versions[len(versions)/2:], originSync)
			x.merge(y.snapshot(), originSync)
			y.merge(x.snapshot(), originSync)
			stores = append(stores, x, y)

			for i, s := range stores {
				got := stateOf(s)
				if len(got) != len(want) {
					t.Fatalf("store %d has %d records, want %d", i, len(got), len(want))
				}
				for id, w := range want {
					if g, ok := got[id]; !ok || compareRecords(g, w) != 0 || g.Deleted != w.Deleted {
						t.Errorf("store %d: %v = %+v, want %+v", i, id, g, w)
					}
				}
			}
		})
	}
}

func stateOf(s *Store) map[recordID]Record {
	out := make(map[recordID]Record)
	for _, r := range s.snapshot() {
		out[recordID{r.Kind, r.Key}] = r
	}
	return out
}

// checkMonotone fails if any record of before is replaced by a smaller
// version or vanished in after.
func checkMonotone(t *testing.T, before, after []Record) {
	t.Helper()
	now := make(map[recordID]Record)
	for _, r := range after {
		now[recordID{r.Kind, r.Key}] = r
	}
	for _, b := range before {
		a, ok := now[recordID{b.Kind, b.Key}]
		if !ok || compareRecords(a, b) < 0 {
			t.Fatalf("%s/%s went back from %+v to %+v", b.Kind, b.Key, b, a)
		}
	}
}

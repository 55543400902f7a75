package mesh

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestSummaryDigestNewerThan(t *testing.T) {
	clk := &fakeClock{t: epoch}
	a, b := newTestStore("a", clk), newTestStore("b", clk)
	a.Put("k", "x", []byte("1"))
	a.Put("k", "y", []byte("2"))
	b.merge(a.snapshot(), originSync)
	if a.summary() != b.summary() {
		t.Fatalf("equal stores, summaries %+v and %+v", a.summary(), b.summary())
	}
	// b misses a newer x, a tombstone of y, and a new z; b alone has w.
	a.Put("k", "x", []byte("3"))
	a.Delete("k", "y")
	a.Put("k", "z", nil)
	b.Put("k", "w", nil)
	if a.summary() == b.summary() {
		t.Fatal("different stores, same summary")
	}
	var keys []string
	for _, r := range a.newerThan(b.digest()) {
		keys = append(keys, r.Key)
	}
	slices.Sort(keys)
	if want := []string{"x", "y", "z"}; !reflect.DeepEqual(keys, want) {
		t.Errorf("a offers b %v, want %v", keys, want)
	}
	b.merge(a.newerThan(b.digest()), originSync)
	a.merge(b.newerThan(a.digest()), originSync)
	if a.summary() != b.summary() || !reflect.DeepEqual(stateOf(a), stateOf(b)) {
		t.Errorf("after the exchange the stores differ")
	}
	if got := a.newerThan(b.digest()); len(got) != 0 {
		t.Errorf("still offering %v", got)
	}
	// The summary follows gc.
	clk.add(2 * time.Hour)
	before := a.summary()
	a.gc()
	if after := a.summary(); after == before || after.count != before.count-1 {
		t.Errorf("summary after gc %+v, before %+v", after, before)
	}
}

func TestStoreSyncRepairsWithoutBroadcast(t *testing.T) {
	c := newCluster(t)
	c.tun.PushPullInterval = time.Hour // only the store sync can help
	c.tun.SyncInterval = 100 * time.Millisecond
	c.startAll("a", "b", "c")
	// Merge does not broadcast: the record exists on a only.
	r := Record{Kind: "svc", Key: "only-on-a", Value: []byte("v"), Owner: "x", Clock: uint64(time.Now().UnixMilli())}
	if !c.node("a").Store().Merge(r) {
		t.Fatal("merge refused")
	}
	eventually(t, 10*time.Second, "record repaired onto b and c", func() bool {
		for _, n := range []string{"b", "c"} {
			if got, ok := c.node(n).Store().Get("svc", "only-on-a"); !ok || got.Clock != r.Clock {
				return false
			}
		}
		return true
	})
}

func TestMembershipRepairedFromMarkers(t *testing.T) {
	c := newCluster(t)
	c.tun.PushPullInterval = time.Hour
	c.startAll("a", "b")
	// c runs alone, unknown to a and b (as if memberlist's broadcast of
	// its alive message had missed them); only its marker record, with its
	// address, reaches a.
	n := c.start("c", nil)
	marker, ok := n.Store().lookup(kindMember, "c")
	if !ok || string(marker.Value) != n.Addr().String() {
		t.Fatalf("c's marker %+v", marker)
	}
	time.Sleep(3 * c.tun.RejoinMax)
	if c.node("a").Alive("c") {
		t.Fatal("a found c without the marker")
	}
	c.node("a").Store().Merge(marker)
	eventually(t, 10*time.Second, "a, b and c all alive everywhere", func() bool { return c.converged("a", "b", "c") })
}

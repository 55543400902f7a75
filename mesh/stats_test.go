package mesh

import (
	"testing"
	"time"
)

// TestStatsMove checks that each counter of Stats moves with its event: a
// member that stops answering is suspected, then dies; a leave is not a
// death; a partition healed by re-join counts re-joins; records and
// tombstones are counted by kind.
func TestStatsMove(t *testing.T) {
	c := newCluster(t)
	c.startAll("a", "b", "c")
	a := c.node("a")
	if st := a.Stats(); st.Suspected != 0 || st.Died != 0 || st.Records[kindMember] != 3 {
		t.Fatalf("fresh stats %+v", st)
	}

	a.Store().Put("svc", "k1", []byte("1"))
	a.Store().Put("svc", "k2", []byte("2"))
	a.Store().Delete("svc", "k2")
	if st := a.Stats(); st.Records["svc"] != 1 || st.Tombstones != 1 {
		t.Errorf("records %v tombstones %d, want svc 1 and 1", st.Records, st.Tombstones)
	}

	c.node("b").Leave(time.Second)
	eventually(t, 10*time.Second, "a sees b leave", func() bool { m, _ := a.Member("b"); return m.State == StateLeft })
	if st := a.Stats(); st.Died != 0 {
		t.Errorf("a leave counted as a death: %+v", st)
	}

	// Re-join attempts count, failed (during the partition) or not: after
	// the heal memberlist may merge the two by itself before a re-join
	// does, so which of the two moves is a race.
	attempts := func() uint64 {
		sa, sc := a.Stats(), c.node("c").Stats()
		return sa.Rejoins + sa.RejoinFailures + sc.Rejoins + sc.RejoinFailures
	}
	before := attempts()
	c.net.Partition([]string{"a"}, []string{"c"})
	eventually(t, 10*time.Second, "a suspects c and finds it dead", func() bool {
		st := a.Stats()
		return st.Suspected >= 1 && st.Died == 1
	})
	c.net.Heal()
	eventually(t, 30*time.Second, "a and c together again after re-join attempts", func() bool {
		return c.converged("a", "c") && attempts() > before
	})
}

package mesh

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// After a Grow a node's claim record must stay put while nothing changes.
//
// It did not: the record carries one RenewedAt for all blocks (the
// greatest), the grown block's RenewedAt is later than the first's, so
// check compared decoded claims that never matched and republished the
// record on every check (every 250 ms, each write kicking the next check),
// until a renewal (Grace/8, 3 h) aligned the times. Found by bench/sim;
// check now compares the encoded record (sameRecord).
func TestClaimRecordQuietAfterGrow(t *testing.T) {
	c := newCluster(t)
	pool := mustPool(t, "10.200.0.0/16", 26)
	c.startAll("a", "b")
	a := c.claimer(c.node("a"), pool, ClaimerConfig{Preferred: netip.MustParsePrefix("10.200.1.0/26")})
	time.Sleep(10 * time.Millisecond) // the grown block's times differ from the first's
	if _, err := a.Grow(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	var n atomic.Int64
	cancel := c.node("a").Store().Subscribe(func(r Record) {
		if r.Kind == KindClaim && r.Key == "pk-a" {
			n.Add(1)
		}
	})
	time.Sleep(2 * time.Second)
	cancel()
	if got := n.Load(); got != 0 {
		t.Errorf("a wrote its unchanged claim record %d times in 2s after a Grow", got)
	}
}

package mesh

import (
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// After a Grow a node's claim record must stay put while nothing changes.
//
// It does not yet: the record carries one RenewedAt for all blocks (the
// greatest), the grown block's RenewedAt is later than the first's, so
// check's sameClaims never matches the decoded record and republishes it on
// every check (every 250 ms, each write kicking the next check), until a
// renewal (Grace/8, 3 h) aligns the times. Found by bench/sim. Skipped
// unless ZLMESH_REPRO_GROW=1 until claims.go is fixed (compare the encoded
// record, or give every block the same RenewedAt on Grow and on a re-pick).
func TestClaimRecordQuietAfterGrow(t *testing.T) {
	if os.Getenv("ZLMESH_REPRO_GROW") == "" {
		t.Skip("known bug (see the comment); ZLMESH_REPRO_GROW=1 runs it")
	}
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

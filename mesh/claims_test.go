package mesh

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/ipam"
)

func mustPool(t testing.TB, cluster string, blockBits int) *ipam.Pool {
	t.Helper()
	p, err := ipam.NewPool(netip.MustParsePrefix(cluster), blockBits)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// claimer makes and starts node name's Claimer (Node = "pk-"+name, as the
// cluster's Meta.PublicKey).
func (c *cluster) claimer(m *Mesh, pool *ipam.Pool, cfg ClaimerConfig) *Claimer {
	c.t.Helper()
	cfg.Node = "pk-" + m.LocalName()
	cl := NewClaimer(m, pool, cfg)
	c.t.Cleanup(cl.Close)
	if _, _, err := cl.Acquire(context.Background()); err != nil {
		c.t.Fatalf("acquire for %s: %v", m.LocalName(), err)
	}
	return cl
}

// claimsView returns node → first block of the claims m's store holds.
func claimsView(m *Mesh) map[string]netip.Prefix {
	out := make(map[string]netip.Prefix)
	for _, r := range m.Store().List(KindClaim) {
		if cl, err := decodeClaims(r); err == nil && len(cl) > 0 {
			out[cl[0].Node] = cl[0].Block
		}
	}
	return out
}

// blocksView returns node → every block of the claims m's store holds.
func blocksView(m *Mesh) map[string][]netip.Prefix {
	out := make(map[string][]netip.Prefix)
	for _, r := range m.Store().List(KindClaim) {
		if cl, err := decodeClaims(r); err == nil {
			for _, c := range cl {
				out[c.Node] = append(out[c.Node], c.Block)
			}
		}
	}
	return out
}

// firstOf is a Claimer's first claim.
func firstOf(cl *Claimer) ipam.Claim {
	cur := cl.Current()
	if len(cur) == 0 {
		return ipam.Claim{}
	}
	return cur[0]
}

func TestClaimsBurstJoin(t *testing.T) {
	c := newCluster(t)
	// memberlist's LAN probe and gossip timers for 30 nodes: the fast test
	// timers overload a busy 2-core machine under -race (false failures).
	lan := DefaultTuning()
	c.tun.GossipInterval = lan.GossipInterval
	c.tun.ProbeInterval = lan.ProbeInterval
	c.tun.ProbeTimeout = lan.ProbeTimeout
	c.tun.PushPullInterval = 2 * time.Second
	c.tun.TCPTimeout = 3 * time.Second
	c.tun.GossipToTheDeadTime = 10 * time.Second
	// 60 claimable /26 blocks (the top /24 is reserved) for 30 nodes:
	// start positions collide often.
	pool := mustPool(t, "10.200.0.0/20", 26)
	const n = 30
	seed := c.start("n00", nil)
	names := []string{"n00"}
	for i := 1; i < n; i++ {
		names = append(names, fmt.Sprintf("n%02d", i))
	}
	var wg sync.WaitGroup
	claimers := make([]*Claimer, n)
	var changes sync.Map
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var m *Mesh
			if i == 0 {
				m = seed
			} else {
				m = c.start(name, nil, seed.Addr().String())
			}
			cl := c.claimer(m, pool, ClaimerConfig{SyncWait: 2 * time.Second})
			claimers[i] = cl
			go func() {
				for ch := range cl.Changes() {
					changes.Store(name+ch.Old.Block.String(), ch)
				}
			}()
		}()
	}
	wg.Wait()

	// problem describes what is not converged yet, "" when all is.
	problem := func() string {
		want := make(map[string]netip.Prefix)
		used := make(map[netip.Prefix]string)
		for i, cl := range claimers {
			cur := firstOf(cl)
			if o, dup := used[cur.Block]; dup {
				return fmt.Sprintf("%s and %s both hold %s", o, names[i], cur.Block)
			}
			used[cur.Block] = names[i]
			want["pk-"+names[i]] = cur.Block
		}
		for _, name := range names {
			view := claimsView(c.node(name))
			for k, v := range want {
				if view[k] != v {
					return fmt.Sprintf("%s sees %s at %s, want %s (alive: %d members)", name, k, view[k], v, len(strings.Split(aliveSet(c.node(name)), ",")))
				}
			}
		}
		return ""
	}
	start := time.Now()
	for p := problem(); p != ""; p = problem() {
		if time.Since(start) > 60*time.Second {
			t.Fatalf("not converged after 60s: %s", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("converged %v after the claims were acquired", time.Since(start))
	nChanges := 0
	changes.Range(func(_, v any) bool {
		ch := v.(ClaimChange)
		if ch.Winner.Block != ch.Old.Block || ch.New.Block == ch.Old.Block || !ch.Winner.Beats(ch.Old) {
			t.Errorf("bad change %+v", ch)
		}
		nChanges++
		return true
	})
	t.Logf("%d conflicts resolved during the burst", nChanges)
	for _, cl := range claimers {
		if err := pool.CheckBlock(firstOf(cl).Block); err != nil {
			t.Error(err)
		}
	}
}

func TestClaimsPartitionSamePreferred(t *testing.T) {
	c := newCluster(t)
	pool := mustPool(t, "10.200.0.0/16", 24)
	c.startAll("a", "b", "c")
	want := netip.MustParsePrefix("10.200.42.0/24")
	c.net.Partition([]string{"a", "b", "x"}, []string{"c", "y"})
	eventually(t, 10*time.Second, "partitioned", func() bool { return !c.node("a").Alive("c") && !c.node("c").Alive("a") })

	var wonMu sync.Mutex
	var won []ipam.Claim
	x := c.claimer(c.start("x", nil, c.node("a").Addr().String()), pool, ClaimerConfig{Preferred: want, SyncWait: time.Second,
		ConflictWon: func(l ipam.Claim) { wonMu.Lock(); won = append(won, l); wonMu.Unlock() }})
	time.Sleep(10 * time.Millisecond) // x's claim is the older
	y := c.claimer(c.start("y", nil, c.node("c").Addr().String()), pool, ClaimerConfig{Preferred: want, SyncWait: time.Second})
	if firstOf(x).Block != want || firstOf(y).Block != want {
		t.Fatalf("during the partition x has %s and y %s, both want %s", firstOf(x).Block, firstOf(y).Block, want)
	}

	c.net.Heal()
	select {
	case ch := <-y.Changes():
		if ch.Old.Block != want || ch.New.Block == want || ch.Winner.Node != "pk-x" || ch.Winner.Block != want {
			t.Errorf("y's change %+v", ch)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("y got no ClaimChange after the heal")
	}
	select {
	case ch := <-x.Changes():
		t.Errorf("x, the older claim, moved: %+v", ch)
	default:
	}
	if firstOf(x).Block != want || firstOf(y).Block == want {
		t.Errorf("x has %s, y has %s", firstOf(x).Block, firstOf(y).Block)
	}
	if len(c.logs.find(slog.LevelWarn, "conflict lost", "pk-x", want.String(), firstOf(y).Block.String(), `node="y"`)) == 0 {
		t.Error("no log line naming both nodes and subnets")
	}
	eventually(t, 10*time.Second, "every node sees the resolution", func() bool {
		for _, n := range []string{"a", "b", "c", "x", "y"} {
			v := claimsView(c.node(n))
			if v["pk-x"] != want || v["pk-y"] != firstOf(y).Block {
				return false
			}
		}
		return true
	})
	wonMu.Lock()
	defer wonMu.Unlock()
	if len(won) != 1 || won[0].Node != "pk-y" || won[0].Block != want {
		t.Errorf("x's ConflictWon calls %+v, want one for y's claim of %s", won, want)
	}
}

func TestClaimDeadNodeHeldForGrace(t *testing.T) {
	c := newCluster(t)
	pool := mustPool(t, "10.200.0.0/16", 24)
	const grace = 2 * time.Second
	c.startAll("a", "b")
	s := netip.MustParsePrefix("10.200.7.0/24")
	b := c.claimer(c.node("b"), pool, ClaimerConfig{Preferred: s, Grace: grace})
	eventually(t, 5*time.Second, "a sees b's claim", func() bool { return claimsView(c.node("a"))["pk-b"] == s })
	c.node("b").Shutdown()
	died := firstOf(b).RenewedAt
	eventually(t, 5*time.Second, "b dead on a", func() bool { return !c.node("a").Alive("b") })

	// Within the grace: held, a newcomer asking for it gets another.
	cn := c.claimer(c.start("c", nil, c.node("a").Addr().String()), pool, ClaimerConfig{Preferred: s, Grace: grace, SyncWait: time.Second})
	if time.Since(died) >= grace {
		t.Skip("machine too slow for this grace period")
	}
	if firstOf(cn).Block == s {
		t.Fatalf("c took %s within b's grace", s)
	}
	if h := cn.Holders()[s]; h.Node != "pk-b" {
		t.Errorf("holder of %s is %+v, want b", s, h)
	}
	// After it: free.
	eventually(t, 2*grace, "b's subnet free after the grace", func() bool {
		_, held := cn.Holders()[s]
		return !held
	})
	d := c.claimer(c.start("d", nil, c.node("a").Addr().String()), pool, ClaimerConfig{Preferred: s, Grace: grace, SyncWait: time.Second})
	if firstOf(d).Block != s {
		t.Errorf("d got %s after b's grace, want %s", firstOf(d).Block, s)
	}
}

func TestClaimReleasedFreeAtOnce(t *testing.T) {
	c := newCluster(t)
	pool := mustPool(t, "10.200.0.0/16", 24)
	c.startAll("a", "b")
	s := netip.MustParsePrefix("10.200.9.0/24")
	b := c.claimer(c.node("b"), pool, ClaimerConfig{Preferred: s}) // grace 24h
	eventually(t, 5*time.Second, "a sees b's claim", func() bool { return claimsView(c.node("a"))["pk-b"] == s })
	if err := b.Release(); err != nil {
		t.Fatal(err)
	}
	if err := c.node("b").Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	for range b.Changes() { // closed
	}
	eventually(t, 5*time.Second, "b's claim gone on a", func() bool { _, ok := claimsView(c.node("a"))["pk-b"]; return !ok })
	cn := c.claimer(c.start("c", nil, c.node("a").Addr().String()), pool, ClaimerConfig{Preferred: s, SyncWait: time.Second})
	if firstOf(cn).Block != s {
		t.Errorf("c got %s, want the released %s", firstOf(cn).Block, s)
	}
}

func TestClaimKeepAcrossRestart(t *testing.T) {
	c := newCluster(t)
	pool := mustPool(t, "10.200.0.0/16", 24)
	c.startAll("a", "b")
	first := c.claimer(c.node("b"), pool, ClaimerConfig{RenewEvery: 50 * time.Millisecond})
	stored := firstOf(first)
	eventually(t, 5*time.Second, "renewal reaches a", func() bool {
		r, ok := c.node("a").Store().Get(KindClaim, "pk-b")
		if !ok {
			return false
		}
		cl, _ := decodeClaims(r)
		return len(cl) > 0 && cl[0].RenewedAt.After(stored.RenewedAt)
	})
	first.Close()
	addr := c.node("b").Addr()
	c.node("b").Shutdown()

	tests := []struct {
		name   string
		stored []ipam.Claim
	}{
		{"from the state dir", []ipam.Claim{stored}},
		{"from the cluster's copy", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := c.net.NewTransportAt("b", addr)
			if err != nil {
				t.Fatal(err)
			}
			m := c.start("b", tr)
			cl := c.claimer(m, pool, ClaimerConfig{Stored: tt.stored, Preferred: netip.MustParsePrefix("10.200.200.0/24"), SyncWait: 2 * time.Second})
			got := firstOf(cl)
			if got.Block != stored.Block || !got.ClaimedAt.Equal(stored.ClaimedAt) {
				t.Errorf("after restart %+v, want subnet %s claimed at %v", got, stored.Block, stored.ClaimedAt)
			}
			cl.Close()
			m.Shutdown()
		})
	}
}

func TestClaimStoredButTaken(t *testing.T) {
	c := newCluster(t)
	pool := mustPool(t, "10.200.0.0/16", 24)
	c.startAll("a", "b")
	s := netip.MustParsePrefix("10.200.5.0/24")
	old := time.Now().Add(-time.Hour).UTC()
	// a holds s with an older claim than the one b has in its state dir.
	a := c.claimer(c.node("a"), pool, ClaimerConfig{Stored: []ipam.Claim{{Node: "pk-a", Block: s, ClaimedAt: old.Add(-time.Hour), RenewedAt: old}}})
	if firstOf(a).Block != s {
		t.Fatalf("a has %s", firstOf(a).Block)
	}
	eventually(t, 5*time.Second, "b sees a's claim", func() bool { return claimsView(c.node("b"))["pk-a"] == s })
	b := c.claimer(c.node("b"), pool, ClaimerConfig{Stored: []ipam.Claim{{Node: "pk-b", Block: s, ClaimedAt: old, RenewedAt: old}}})
	if firstOf(b).Block == s || !firstOf(b).ClaimedAt.After(old) {
		t.Errorf("b kept %+v although a's older claim holds it", b.Current())
	}
}

func TestClaimerErrors(t *testing.T) {
	c := newCluster(t)
	pool := mustPool(t, "10.200.0.0/16", 24)
	a := c.start("a", nil)
	cl := NewClaimer(a, pool, ClaimerConfig{})
	if _, _, err := cl.Acquire(context.Background()); err == nil {
		t.Error("Acquire without Node succeeded")
	}
	if err := cl.Release(); err == nil {
		t.Error("Release before Acquire succeeded")
	}
	// A full pool.
	tiny := mustPool(t, "10.200.0.0/23", 24) // one claimable block
	c.claimer(a, tiny, ClaimerConfig{})
	b := c.start("b", nil, a.Addr().String())
	eventually(t, 5*time.Second, "joined", func() bool { return c.converged("a", "b") })
	bc := NewClaimer(b, tiny, ClaimerConfig{Node: "pk-b", SyncWait: time.Second})
	if _, _, err := bc.Acquire(context.Background()); err == nil {
		t.Error("Acquire in a full pool succeeded")
	}
	a.Shutdown()
	if _, _, err := NewClaimer(a, pool, ClaimerConfig{Node: "pk-a"}).Acquire(context.Background()); err == nil {
		t.Error("Acquire after Shutdown succeeded")
	}
}

// A node back after more than the grace finds its subnet taken: it claims
// another one, and the node that took the subnet meanwhile keeps it, although
// the returning node's stored claim is older.
func TestClaimLapsedYieldsToNewHolder(t *testing.T) {
	c := newCluster(t)
	pool := mustPool(t, "10.200.0.0/16", 24)
	const grace = time.Hour
	c.startAll("a", "b")
	s := netip.MustParsePrefix("10.200.9.0/24")
	lapsed := ipam.Claim{Node: "pk-b", Block: s, ClaimedAt: time.Now().Add(-30 * 24 * time.Hour).UTC(), RenewedAt: time.Now().Add(-2 * grace).UTC()}
	a := c.claimer(c.node("a"), pool, ClaimerConfig{Preferred: s, Grace: grace})
	if firstOf(a).Block != s {
		t.Fatalf("a has %s, want %s", firstOf(a).Block, s)
	}
	eventually(t, 5*time.Second, "b sees a's claim", func() bool { return claimsView(c.node("b"))["pk-a"] == s })
	b := c.claimer(c.node("b"), pool, ClaimerConfig{Stored: []ipam.Claim{lapsed}, Grace: grace})
	if firstOf(b).Block == s {
		t.Fatalf("b took %s back from a with a lapsed claim", s)
	}
	time.Sleep(500 * time.Millisecond) // the claim loops run; no conflict may move a
	if firstOf(a).Block != s {
		t.Errorf("a lost %s to a lapsed claim", s)
	}
	// Nobody took it: a lapsed claim is kept, as a new claim.
	c2 := newCluster(t)
	c2.startAll("x")
	x := c2.claimer(c2.node("x"), pool, ClaimerConfig{Stored: []ipam.Claim{{Node: "pk-x", Block: s, ClaimedAt: lapsed.ClaimedAt, RenewedAt: lapsed.RenewedAt}}, Grace: grace})
	if got := firstOf(x); got.Block != s || !got.ClaimedAt.After(lapsed.RenewedAt) {
		t.Errorf("x with a lapsed claim on a free subnet got %+v, want %s claimed now", got, s)
	}
}

// Grow claims blocks beside the first one, every node sees them, Drop frees
// one at once for others, and the first block cannot be dropped.
func TestClaimGrowAndDrop(t *testing.T) {
	c := newCluster(t)
	pool := mustPool(t, "10.200.0.0/16", 26)
	c.startAll("a", "b")
	a := c.claimer(c.node("a"), pool, ClaimerConfig{Preferred: netip.MustParsePrefix("10.200.1.0/26")})
	var grown []netip.Prefix
	for range 3 {
		cl, err := a.Grow()
		if err != nil {
			t.Fatal(err)
		}
		grown = append(grown, cl.Block)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.200.1.0/26")}
	want = append(want, grown...)
	if !slices.Equal(grown, []netip.Prefix{netip.MustParsePrefix("10.200.1.64/26"), netip.MustParsePrefix("10.200.1.128/26"), netip.MustParsePrefix("10.200.1.192/26")}) {
		t.Errorf("grown %v, want the blocks right after the first", grown)
	}
	if got := len(a.Current()); got != 4 {
		t.Fatalf("a holds %d blocks, want 4", got)
	}
	eventually(t, 5*time.Second, "b sees a's four blocks", func() bool {
		return slices.Equal(blocksView(c.node("b"))["pk-a"], want)
	})
	if err := a.Drop(want[0]); err == nil {
		t.Error("Drop of the first block succeeded")
	}
	if err := a.Drop(grown[1]); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "b sees the drop", func() bool { return len(blocksView(c.node("b"))["pk-a"]) == 3 })
	b := c.claimer(c.node("b"), pool, ClaimerConfig{Preferred: grown[1]})
	if got := firstOf(b).Block; got != grown[1] {
		t.Errorf("b got %s, want the dropped %s", got, grown[1])
	}
}

// A conflict over a node's second block moves only that block: the first
// stays, and the change says it was not the first.
func TestClaimConflictOnGrownBlock(t *testing.T) {
	c := newCluster(t)
	pool := mustPool(t, "10.200.0.0/16", 26)
	c.startAll("a", "c")
	contested := netip.MustParsePrefix("10.200.7.64/26")
	c.net.Partition([]string{"a", "x"}, []string{"c", "y"})
	eventually(t, 10*time.Second, "partitioned", func() bool { return !c.node("a").Alive("c") && !c.node("c").Alive("a") })
	x := c.claimer(c.start("x", nil, c.node("a").Addr().String()), pool, ClaimerConfig{Preferred: contested, SyncWait: time.Second})
	time.Sleep(10 * time.Millisecond) // x's claim is the older
	y := c.claimer(c.start("y", nil, c.node("c").Addr().String()), pool, ClaimerConfig{Preferred: netip.MustParsePrefix("10.200.7.0/26"), SyncWait: time.Second})
	// y grows into the block right after its first, contested, while it
	// cannot see x.
	if _, err := y.Grow(); err != nil {
		t.Fatal(err)
	}
	if got := y.Current(); len(got) != 2 || got[1].Block != contested {
		t.Fatalf("y holds %v, want its second block to be %s", got, contested)
	}
	c.net.Heal()
	select {
	case ch := <-y.Changes():
		if ch.Old.Block != contested || ch.First || ch.New.Block == contested || ch.Winner.Node != "pk-x" {
			t.Errorf("y's change %+v", ch)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("y got no ClaimChange after the heal")
	}
	got := y.Current()
	if len(got) != 2 || got[0].Block != netip.MustParsePrefix("10.200.7.0/26") || got[1].Block == contested {
		t.Errorf("y holds %v after the conflict", got)
	}
	if firstOf(x).Block != contested {
		t.Errorf("x lost %s", contested)
	}
}

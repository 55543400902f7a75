package mesh

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/ipam"
)

func mustPool(t testing.TB, cluster string, nodeBits, sliceBits int) *ipam.Pool {
	t.Helper()
	p, err := ipam.NewPool(netip.MustParsePrefix(cluster), nodeBits, sliceBits)
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
	if _, err := cl.Acquire(context.Background()); err != nil {
		c.t.Fatalf("acquire for %s: %v", m.LocalName(), err)
	}
	return cl
}

// claimsView returns node → subnet of the claims m's store holds.
func claimsView(m *Mesh) map[string]netip.Prefix {
	out := make(map[string]netip.Prefix)
	for _, r := range m.Store().List(KindClaim) {
		if cl, err := decodeClaim(r); err == nil {
			out[cl.Node] = cl.Subnet
		}
	}
	return out
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
	// 31 claimable /26 subnets for 30 nodes: start positions collide often.
	pool := mustPool(t, "10.200.0.0/21", 26, 28)
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
					changes.Store(name+ch.Old.Subnet.String(), ch)
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
			cur := cl.Current()
			if o, dup := used[cur.Subnet]; dup {
				return fmt.Sprintf("%s and %s both hold %s", o, names[i], cur.Subnet)
			}
			used[cur.Subnet] = names[i]
			want["pk-"+names[i]] = cur.Subnet
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
		if ch.Winner.Subnet != ch.Old.Subnet || ch.New.Subnet == ch.Old.Subnet || !ch.Winner.Beats(ch.Old) {
			t.Errorf("bad change %+v", ch)
		}
		nChanges++
		return true
	})
	t.Logf("%d conflicts resolved during the burst", nChanges)
	for _, cl := range claimers {
		if err := pool.CheckSubnet(cl.Current().Subnet); err != nil {
			t.Error(err)
		}
	}
}

func TestClaimsPartitionSamePreferred(t *testing.T) {
	c := newCluster(t)
	pool := mustPool(t, "10.200.0.0/16", 24, 27)
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
	if x.Current().Subnet != want || y.Current().Subnet != want {
		t.Fatalf("during the partition x has %s and y %s, both want %s", x.Current().Subnet, y.Current().Subnet, want)
	}

	c.net.Heal()
	select {
	case ch := <-y.Changes():
		if ch.Old.Subnet != want || ch.New.Subnet == want || ch.Winner.Node != "pk-x" || ch.Winner.Subnet != want {
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
	if x.Current().Subnet != want || y.Current().Subnet == want {
		t.Errorf("x has %s, y has %s", x.Current().Subnet, y.Current().Subnet)
	}
	if len(c.logs.find(slog.LevelWarn, "conflict lost", "pk-x", want.String(), y.Current().Subnet.String(), `node="y"`)) == 0 {
		t.Error("no log line naming both nodes and subnets")
	}
	eventually(t, 10*time.Second, "every node sees the resolution", func() bool {
		for _, n := range []string{"a", "b", "c", "x", "y"} {
			v := claimsView(c.node(n))
			if v["pk-x"] != want || v["pk-y"] != y.Current().Subnet {
				return false
			}
		}
		return true
	})
	wonMu.Lock()
	defer wonMu.Unlock()
	if len(won) != 1 || won[0].Node != "pk-y" || won[0].Subnet != want {
		t.Errorf("x's ConflictWon calls %+v, want one for y's claim of %s", won, want)
	}
}

func TestClaimDeadNodeHeldForGrace(t *testing.T) {
	c := newCluster(t)
	pool := mustPool(t, "10.200.0.0/16", 24, 27)
	const grace = 2 * time.Second
	c.startAll("a", "b")
	s := netip.MustParsePrefix("10.200.7.0/24")
	b := c.claimer(c.node("b"), pool, ClaimerConfig{Preferred: s, Grace: grace})
	eventually(t, 5*time.Second, "a sees b's claim", func() bool { return claimsView(c.node("a"))["pk-b"] == s })
	c.node("b").Shutdown()
	died := b.Current().RenewedAt
	eventually(t, 5*time.Second, "b dead on a", func() bool { return !c.node("a").Alive("b") })

	// Within the grace: held, a newcomer asking for it gets another.
	cn := c.claimer(c.start("c", nil, c.node("a").Addr().String()), pool, ClaimerConfig{Preferred: s, Grace: grace, SyncWait: time.Second})
	if time.Since(died) >= grace {
		t.Skip("machine too slow for this grace period")
	}
	if cn.Current().Subnet == s {
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
	if d.Current().Subnet != s {
		t.Errorf("d got %s after b's grace, want %s", d.Current().Subnet, s)
	}
}

func TestClaimReleasedFreeAtOnce(t *testing.T) {
	c := newCluster(t)
	pool := mustPool(t, "10.200.0.0/16", 24, 27)
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
	if cn.Current().Subnet != s {
		t.Errorf("c got %s, want the released %s", cn.Current().Subnet, s)
	}
}

func TestClaimKeepAcrossRestart(t *testing.T) {
	c := newCluster(t)
	pool := mustPool(t, "10.200.0.0/16", 24, 27)
	c.startAll("a", "b")
	first := c.claimer(c.node("b"), pool, ClaimerConfig{RenewEvery: 50 * time.Millisecond})
	stored := first.Current()
	eventually(t, 5*time.Second, "renewal reaches a", func() bool {
		r, ok := c.node("a").Store().Get(KindClaim, "pk-b")
		if !ok {
			return false
		}
		cl, _ := decodeClaim(r)
		return cl.RenewedAt.After(stored.RenewedAt)
	})
	first.Close()
	addr := c.node("b").Addr()
	c.node("b").Shutdown()

	tests := []struct {
		name   string
		stored *ipam.Claim
	}{
		{"from the state dir", &stored},
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
			got := cl.Current()
			if got.Subnet != stored.Subnet || !got.ClaimedAt.Equal(stored.ClaimedAt) {
				t.Errorf("after restart %+v, want subnet %s claimed at %v", got, stored.Subnet, stored.ClaimedAt)
			}
			cl.Close()
			m.Shutdown()
		})
	}
}

func TestClaimStoredButTaken(t *testing.T) {
	c := newCluster(t)
	pool := mustPool(t, "10.200.0.0/16", 24, 27)
	c.startAll("a", "b")
	s := netip.MustParsePrefix("10.200.5.0/24")
	old := time.Now().Add(-time.Hour).UTC()
	// a holds s with an older claim than the one b has in its state dir.
	a := c.claimer(c.node("a"), pool, ClaimerConfig{Stored: &ipam.Claim{Node: "pk-a", Subnet: s, ClaimedAt: old.Add(-time.Hour), RenewedAt: old}})
	if a.Current().Subnet != s {
		t.Fatalf("a has %s", a.Current().Subnet)
	}
	eventually(t, 5*time.Second, "b sees a's claim", func() bool { return claimsView(c.node("b"))["pk-a"] == s })
	b := c.claimer(c.node("b"), pool, ClaimerConfig{Stored: &ipam.Claim{Node: "pk-b", Subnet: s, ClaimedAt: old, RenewedAt: old}})
	if b.Current().Subnet == s || !b.Current().ClaimedAt.After(old) {
		t.Errorf("b kept %+v although a's older claim holds it", b.Current())
	}
}

func TestClaimerErrors(t *testing.T) {
	c := newCluster(t)
	pool := mustPool(t, "10.200.0.0/16", 24, 27)
	a := c.start("a", nil)
	cl := NewClaimer(a, pool, ClaimerConfig{})
	if _, err := cl.Acquire(context.Background()); err == nil {
		t.Error("Acquire without Node succeeded")
	}
	if err := cl.Release(); err == nil {
		t.Error("Release before Acquire succeeded")
	}
	// A full pool.
	tiny := mustPool(t, "10.200.0.0/23", 24, 27) // one claimable subnet
	c.claimer(a, tiny, ClaimerConfig{})
	b := c.start("b", nil, a.Addr().String())
	eventually(t, 5*time.Second, "joined", func() bool { return c.converged("a", "b") })
	bc := NewClaimer(b, tiny, ClaimerConfig{Node: "pk-b", SyncWait: time.Second})
	if _, err := bc.Acquire(context.Background()); err == nil {
		t.Error("Acquire in a full pool succeeded")
	}
	a.Shutdown()
	if _, err := NewClaimer(a, pool, ClaimerConfig{Node: "pk-a"}).Acquire(context.Background()); err == nil {
		t.Error("Acquire after Shutdown succeeded")
	}
}

// A node back after more than the grace finds its subnet taken: it claims
// another one, and the node that took the subnet meanwhile keeps it, although
// the returning node's stored claim is older.
func TestClaimLapsedYieldsToNewHolder(t *testing.T) {
	c := newCluster(t)
	pool := mustPool(t, "10.200.0.0/16", 24, 27)
	const grace = time.Hour
	c.startAll("a", "b")
	s := netip.MustParsePrefix("10.200.9.0/24")
	lapsed := &ipam.Claim{Node: "pk-b", Subnet: s, ClaimedAt: time.Now().Add(-30 * 24 * time.Hour).UTC(), RenewedAt: time.Now().Add(-2 * grace).UTC()}
	a := c.claimer(c.node("a"), pool, ClaimerConfig{Preferred: s, Grace: grace})
	if a.Current().Subnet != s {
		t.Fatalf("a has %s, want %s", a.Current().Subnet, s)
	}
	eventually(t, 5*time.Second, "b sees a's claim", func() bool { return claimsView(c.node("b"))["pk-a"] == s })
	b := c.claimer(c.node("b"), pool, ClaimerConfig{Stored: lapsed, Grace: grace})
	if b.Current().Subnet == s {
		t.Fatalf("b took %s back from a with a lapsed claim", s)
	}
	time.Sleep(500 * time.Millisecond) // the claim loops run; no conflict may move a
	if a.Current().Subnet != s {
		t.Errorf("a lost %s to a lapsed claim", s)
	}
	// Nobody took it: a lapsed claim is kept, as a new claim.
	c2 := newCluster(t)
	c2.startAll("x")
	x := c2.claimer(c2.node("x"), pool, ClaimerConfig{Stored: &ipam.Claim{Node: "pk-x", Subnet: s, ClaimedAt: lapsed.ClaimedAt, RenewedAt: lapsed.RenewedAt}, Grace: grace})
	if got := x.Current(); got.Subnet != s || !got.ClaimedAt.After(lapsed.RenewedAt) {
		t.Errorf("x with a lapsed claim on a free subnet got %+v, want %s claimed now", got, s)
	}
}

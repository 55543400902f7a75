//go:build linux

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/testbed"
)

// forgetFast makes memberlist forget dead members a few seconds after
// declaring them dead (GossipToTheDeadTime), so a partition can outlast it
// within a test; the re-join path is the production one.
var forgetFast = []string{"--gossip-to-the-dead=4s", "--gossip-dead-reclaim=2s"}

// A partition longer than memberlist's dead-member forget time heals by
// itself: every host pings every other afterwards, with no command issued;
// meanwhile a host cut off alone says so in its status.
func TestPartitionHealsByItself(t *testing.T) {
	tb := cluster(t, 5, forgetFast...)
	hs := tb.Hosts()
	before := subnets(t, hs)
	if err := tb.Partition(hs[:2], hs[2:]); err != nil {
		t.Fatal(err)
	}
	// Each side drops the other (failure detection), then forgets it.
	eventually(t, 60*time.Second, func() error {
		for _, h := range hs[:2] {
			if st := status(t, h); st.Members != 2 {
				return fmt.Errorf("%s sees %d alive members, want 2", h.Name, st.Members)
			}
		}
		return nil
	})
	// Past the forget time: gossip no longer knows the other side at all,
	// so only re-joining remembered peers can bring the two halves back.
	eventually(t, 60*time.Second, func() error {
		for i, h := range hs {
			peers, err := h.Client().Peers(context.Background())
			if err != nil {
				return err
			}
			sameSide := 2 // h3, h4, h5 know each other
			if i < 2 {
				sameSide = 1 // h1 and h2 know each other
			}
			if len(peers) != sameSide {
				return fmt.Errorf("%s still knows %s", h.Name, peerStates(peers))
			}
		}
		return nil
	})
	if err := tb.Heal(); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	waitWhole(t, tb, hs, 60*time.Second)
	pingAll(t, hs, 30*time.Second)
	t.Logf("whole again %v after the heal", time.Since(healed).Round(time.Millisecond))
	if after := subnets(t, hs); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("subnets changed across the partition: %v → %v", before, after)
	}

	// A host cut off alone knows it is alone.
	h5 := hs[4]
	if err := tb.Cut(h5); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, func() error {
		if st := status(t, h5); !st.Alone {
			return fmt.Errorf("cut-off h5: alone=%v members=%d known=%d", st.Alone, st.Members, st.KnownPeers)
		}
		return nil
	})
	if err := tb.Restore(h5); err != nil {
		t.Fatal(err)
	}
	waitWhole(t, tb, hs, 60*time.Second)
	if st := status(t, h5); st.Alone {
		t.Errorf("h5 still says alone after the link came back")
	}
}

// Two new hosts, one on each side of a partition, ask for the same subnet;
// after the heal the older claim keeps it, the other renumbers, reports it in
// an event, and every host reaches both.
func TestPartitionSubnetConflict(t *testing.T) {
	tb := cluster(t, 4, forgetFast...)
	hs := tb.Hosts()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	want := "10.200.77.0/26"
	a, b := contestSubnet(t, ctx, tb, want, hs[:2], hs[2:])
	bKey := status(t, b).PublicKey

	events := watchEvents(t, ctx, b)
	if err := tb.Heal(); err != nil {
		t.Fatal(err)
	}
	all := tb.Hosts()
	waitWhole(t, tb, all, 90*time.Second)
	eventually(t, 30*time.Second, func() error {
		if got := status(t, b).FirstBlock; got == want {
			return fmt.Errorf("%s still holds %s", b.Name, want)
		}
		return nil
	})
	if got := status(t, a).FirstBlock; got != want {
		t.Errorf("the older claim lost: %s now has %s", a.Name, got)
	}
	if status(t, b).PublicKey != bKey {
		t.Errorf("%s changed identity while renumbering", b.Name)
	}
	eventually(t, 10*time.Second, func() error {
		for _, ev := range events() {
			if ev.Type == api.EventRenumber && ev.OldBlock == want && ev.NewBlock != "" {
				return nil
			}
		}
		return fmt.Errorf("no renumber event from %s; got %+v", b.Name, events())
	})
	log, _ := b.ReadLog()
	if !containsAll(log, want, a.Name) {
		t.Errorf("%s's log does not name the winner and the subnet", b.Name)
	}
	pingAll(t, all, 30*time.Second)
}

// Restarting the seed alone, then every host one by one: the mesh stays or
// becomes whole each time, with the same keys and subnets.
func TestRestartSeedAndRolling(t *testing.T) {
	tb := cluster(t, 4)
	hs := tb.Hosts()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ids := identities(t, hs)
	restart := func(h *testbed.Host) {
		t.Helper()
		if err := h.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		waitReady(t, h)
		waitWhole(t, tb, hs, 60*time.Second)
		if got := identities(t, hs); fmt.Sprint(got) != fmt.Sprint(ids) {
			t.Fatalf("after restarting %s: identities %v, want %v", h.Name, got, ids)
		}
	}
	restart(hs[0])
	pingAll(t, hs, 30*time.Second)
	for _, h := range hs {
		restart(h)
	}
	pingAll(t, hs, 30*time.Second)
}

// kill -9 every zlmesh at once, then start them again in reverse order: the
// same keys, the same subnets, one whole mesh (the last hosts' seed is down
// when they start; they find each other through the peers they remember).
func TestKillAllRestartReverse(t *testing.T) {
	tb := cluster(t, 4)
	hs := tb.Hosts()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ids := identities(t, hs)
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Add(1)
		go func() { defer wg.Done(); h.Kill() }()
	}
	wg.Wait()
	for i := len(hs) - 1; i >= 0; i-- {
		if err := hs[i].Start(ctx); err != nil {
			t.Fatal(err)
		}
		waitReady(t, hs[i])
	}
	waitWhole(t, tb, hs, 60*time.Second)
	if got := identities(t, hs); fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("identities %v, want %v", got, ids)
	}
	pingAll(t, hs, 30*time.Second)
}

// contestSubnet makes a subnet conflict: it adds two hosts a and b,
// partitions sideA+a from sideB+b, starts a (through the cluster's seed,
// which must be on side A) asking for subnet, then, a second later so that
// a's claim is strictly older, b asking for it too through sideB[0], where
// the subnet looks free. It returns once both hold subnet; it skips the
// test when a founding host already holds it.
func contestSubnet(t *testing.T, ctx context.Context, tb *testbed.Testbed, subnet string, sideA, sideB []*testbed.Host) (a, b *testbed.Host) {
	t.Helper()
	for _, h := range tb.Hosts() {
		if status(t, h).FirstBlock == subnet {
			t.Skipf("a founding host already holds %s", subnet)
		}
	}
	a, err := tb.AddHost(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err = tb.AddHost(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.Partition(append(slices.Clone(sideA), a), append(slices.Clone(sideB), b)); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx, "--first-block", subnet); err != nil {
		t.Fatal(err)
	}
	waitReady(t, a)
	time.Sleep(1100 * time.Millisecond) // claim times are compared: a's strictly older
	if err := b.Start(ctx, "--first-block", subnet, "--join", sideB[0].GossipAddr().String()); err != nil {
		t.Fatal(err)
	}
	waitReady(t, b)
	for _, h := range []*testbed.Host{a, b} {
		if got := status(t, h).FirstBlock; got != subnet {
			t.Fatalf("%s got %s, want %s: the conflict did not happen", h.Name, got, subnet)
		}
	}
	return a, b
}

func waitReady(t *testing.T, h *testbed.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := h.WaitReady(ctx); err != nil {
		t.Fatalf("%s: %v\n%s", h.Name, err, h.LogTail(30))
	}
}

// subnets maps host name → node subnet.
func subnets(t *testing.T, hs []*testbed.Host) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, h := range hs {
		out[h.Name] = status(t, h).FirstBlock
	}
	return out
}

// identities maps host name → "public key subnet".
func identities(t *testing.T, hs []*testbed.Host) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, h := range hs {
		st := status(t, h)
		out[h.Name] = st.PublicKey + " " + st.FirstBlock
	}
	return out
}

// watchEvents follows a host's event stream until the test ends and returns
// a function giving the events seen so far.
func watchEvents(t *testing.T, ctx context.Context, h *testbed.Host) func() []api.Event {
	var mu sync.Mutex
	var evs []api.Event
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	ready := make(chan struct{})
	go func() {
		close(ready)
		h.Client().Events(ctx, func(ev api.Event) error {
			mu.Lock()
			evs = append(evs, ev)
			mu.Unlock()
			return nil
		})
	}()
	<-ready
	time.Sleep(200 * time.Millisecond) // the stream is open before what the test does next
	return func() []api.Event {
		mu.Lock()
		defer mu.Unlock()
		return append([]api.Event(nil), evs...)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}

// A node declared dead keeps its subnet for the grace period: a newcomer
// asking for it gets another one, and the dead node, restarted, comes back
// with its own.
func TestDeadFirstBlockHeld(t *testing.T) {
	tb := cluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h3 := tb.Host("h3")
	was := status(t, h3)
	if err := h3.Kill(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if st := status(t, tb.Host("h1")); st.Members != 2 {
			return fmt.Errorf("h1 sees %d alive members, want 2", st.Members)
		}
		return nil
	})
	h4, err := tb.AddHost(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := h4.Start(ctx, "--first-block", was.FirstBlock); err != nil {
		t.Fatal(err)
	}
	waitReady(t, h4)
	if got := status(t, h4).FirstBlock; got == was.FirstBlock {
		t.Fatalf("a newcomer got dead h3's %s within the grace period", got)
	}
	if err := h3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitReady(t, h3)
	if st := status(t, h3); st.FirstBlock != was.FirstBlock || st.PublicKey != was.PublicKey {
		t.Errorf("h3 came back as %s %s, want %s %s", st.PublicKey, st.FirstBlock, was.PublicKey, was.FirstBlock)
	}
	waitWhole(t, tb, tb.Hosts(), 60*time.Second)
	pingAll(t, tb.Hosts(), 30*time.Second)
}

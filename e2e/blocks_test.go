//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/testbed"
)

// attachAll makes and attaches the containers names[i] to services[i] on h,
// a few at a time, and returns their attachments by name.
func attachAll(t *testing.T, ctx context.Context, tb *testbed.Testbed, h *testbed.Host, names, services []string) map[string]api.Attachment {
	t.Helper()
	cs := make([]*testbed.Container, len(names))
	for i, name := range names {
		cs[i] = addContainer(t, tb, h, name)
	}
	out := map[string]api.Attachment{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	errs := make(chan error, len(names))
	for i, c := range cs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			a, err := c.Attach(ctx, services[i])
			if err != nil {
				errs <- fmt.Errorf("attach %s to %s: %v", c, services[i], err)
				return
			}
			mu.Lock()
			out[names[i]] = a
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("%v\n%s", err, h.LogTail(20))
	}
	return out
}

// hostRoutes lists the host routes of h's containers (protocol 122, package
// bridge's) as "dst dev".
func hostRoutes(ctx context.Context, h *testbed.Host) ([]string, error) {
	out, err := h.Exec(ctx, "ip", "-j", "route", "show", "proto", "122")
	if err != nil {
		return nil, err
	}
	var rs []struct {
		Dst string `json:"dst"`
		Dev string `json:"dev"`
	}
	if err := json.Unmarshal(out, &rs); err != nil {
		return nil, fmt.Errorf("ip -j route: %v: %s", err, out)
	}
	var s []string
	for _, r := range rs {
		s = append(s, r.Dst+" "+r.Dev)
	}
	slices.Sort(s)
	return s, nil
}

// TestBlocksManyServices is the capacity the block model exists for: one
// host with 40 services of 3 containers each and one service of 150 (the
// old model stopped at 7 services and 29 containers a service). Every
// container gets a /32 out of the host's blocks, claimed as they fill; a
// container on a second host reaches a sample of both kinds; containers of
// one service and of two services on one host reach each other; after
// everything is detached no link, host route, lease or attachment is left,
// and the node gives back every block but its first once they stayed
// empty for --block-release-after.
func TestBlocksManyServices(t *testing.T) {
	tb := cluster(t, 2, "--block-release-after", "2s")
	h1, h2 := tb.Host("h1"), tb.Host("h2")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	var names, svcs []string
	for i := range 40 {
		for j := range 3 {
			names = append(names, fmt.Sprintf("s%dc%d", i, j))
			svcs = append(svcs, fmt.Sprintf("svc%d", i))
		}
	}
	for j := range 150 {
		names = append(names, fmt.Sprintf("big%d", j))
		svcs = append(svcs, "big")
	}
	start := time.Now()
	atts := attachAll(t, ctx, tb, h1, names, svcs)
	t.Logf("%d containers attached on h1 in %v", len(atts), time.Since(start).Round(time.Millisecond))

	st := status(t, h1)
	var blocks []netip.Prefix
	for _, b := range st.Blocks {
		blocks = append(blocks, mustPrefix(t, b))
	}
	// 270 containers and the node's address need at least 5 blocks of 62.
	if len(blocks) < 5 {
		t.Errorf("h1 holds %d blocks %v for %d containers", len(blocks), st.Blocks, len(atts))
	}
	seen := map[string]string{}
	for name, a := range atts {
		addr := netip.MustParseAddr(a.Address)
		if !slices.ContainsFunc(blocks, func(b netip.Prefix) bool { return b.Contains(addr) }) || a.Prefix != 32 || a.Gateway != "169.254.1.1" {
			t.Errorf("%s: %s/%d via %s is not a /32 of h1's blocks %v via the link-local gateway", name, a.Address, a.Prefix, a.Gateway, st.Blocks)
		}
		if other, dup := seen[a.Address]; dup {
			t.Errorf("%s and %s both have %s", other, name, a.Address)
		}
		seen[a.Address] = name
	}
	routes, err := hostRoutes(ctx, h1)
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != len(atts) {
		t.Errorf("h1 has %d container routes for %d containers", len(routes), len(atts))
	}
	// Every other node routes h1's blocks to it (coalesced): checked by the
	// cluster's invariants at the end of the test, and here by traffic.
	probe := addContainer(t, tb, h2, "probe")
	mustAttach(t, probe, "probe")
	r := rand.New(rand.NewPCG(10, 10))
	var sample []string
	for _, i := range r.Perm(120)[:15] {
		sample = append(sample, names[i])
	}
	for _, i := range r.Perm(150)[:15] {
		sample = append(sample, names[120+i])
	}
	to := map[*testbed.Container]string{}
	for _, name := range sample {
		to[tb.Container("h1", name)] = atts[name].Address
	}
	eventually(t, 30*time.Second, func() error {
		if fails := pingPairs(ctx, []*testbed.Container{probe}, to); len(fails) > 0 {
			return fmt.Errorf("%d of %d pings from h2 failed: %s", len(fails), len(to), strings.Join(fails, "; "))
		}
		return nil
	})
	// On h1: one service's containers and two services' reach each other.
	local := map[*testbed.Container]string{}
	for _, name := range []string{"s0c0", "s0c1", "s1c0", "big0", "big149"} {
		local[tb.Container("h1", name)] = atts[name].Address
	}
	pingContainers(t, tb, local, 30*time.Second)

	// Detach everything.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := h1.Client().Detach(ctx, tb.Container("h1", name).ID()); err != nil {
				t.Errorf("detach %s: %v", name, err)
			}
		}()
	}
	wg.Wait()
	eventually(t, 30*time.Second, func() error {
		st := status(t, h1)
		if len(st.Blocks) != 1 || st.Blocks[0] != st.FirstBlock {
			return fmt.Errorf("h1 still holds blocks %v", st.Blocks)
		}
		v, err := viewOf(ctx, h1, nil)
		if err != nil {
			return err
		}
		if len(v.Kernel.Veths)+len(v.Kernel.Bridges)+len(v.Kernel.Addrs)+len(v.Leases)+len(v.Attached)+len(v.API) > 0 {
			return fmt.Errorf("left on h1: %+v", v)
		}
		if routes, err := hostRoutes(ctx, h1); err != nil || len(routes) > 0 {
			return fmt.Errorf("container routes left on h1: %v %v", routes, err)
		}
		return nil
	})
	// The other node sees h1 with its first block only.
	eventually(t, 20*time.Second, func() error {
		for _, p := range peersOf(t, h2) {
			if p.Name == "h1" && (len(p.Blocks) != 1 || p.Blocks[0] != st.FirstBlock) {
				return fmt.Errorf("h2 sees h1 holding %v", p.Blocks)
			}
		}
		return nil
	})
}

func peersOf(t *testing.T, h *testbed.Host) []api.Peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ps, err := h.Client().Peers(ctx)
	if err != nil {
		t.Fatalf("%s: peers: %v", h.Name, err)
	}
	return ps
}

// TestBlocksConflictOnGrownBlock makes two nodes hold one block through
// growth: during a partition a holds 10.200.78.16/28 as its first block,
// and b, whose first block is the one before it, fills that and grows into
// the next, which looks free on its side. After the heal exactly one node
// (a, the older claim) holds each block; b moved the containers of the
// block it lost to another block (keeping their offsets), kept its first
// block and the containers in it, and says so in events; the mesh DNS
// answers the new addresses everywhere, and every container reaches every
// other.
func TestBlocksConflictOnGrownBlock(t *testing.T) {
	tb := cluster(t, 2, append([]string{"--block-prefix", "28"}, forgetFast...)...)
	h1, h2 := tb.Host("h1"), tb.Host("h2")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	first, contested := "10.200.78.0/28", "10.200.78.16/28"
	for _, h := range tb.Hosts() {
		for _, b := range status(t, h).Blocks {
			if b == first || b == contested {
				t.Skipf("a founding host already holds %s", b)
			}
		}
	}
	a, err := tb.AddHost(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tb.AddHost(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.Partition([]*testbed.Host{h1, a}, []*testbed.Host{h2, b}); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx, "--first-block", contested); err != nil {
		t.Fatal(err)
	}
	waitReady(t, a)
	time.Sleep(1100 * time.Millisecond) // claim times are compared: a's strictly older
	if err := b.Start(ctx, "--first-block", first, "--join", h2.GossipAddr().String()); err != nil {
		t.Fatal(err)
	}
	waitReady(t, b)

	ca := addContainer(t, tb, a, "ca")
	aa := mustAttach(t, ca, "web")
	// A /28 gives out 14 addresses, the first block 13 (the node has one):
	// the 14th and 15th container go to b's second block.
	var names, svcs []string
	for i := range 15 {
		names = append(names, fmt.Sprintf("b%d", i))
		svcs = append(svcs, []string{"web", "db"}[i%2])
	}
	bs := attachAll(t, ctx, tb, b, names, svcs)
	if got := status(t, b).Blocks; !slices.Equal(got, []string{first, contested}) {
		t.Fatalf("b holds %v, want %s then %s: the conflict did not happen", got, first, contested)
	}
	var grown []string
	for name, at := range bs {
		if mustPrefix(t, contested).Contains(netip.MustParseAddr(at.Address)) {
			grown = append(grown, name)
		}
	}
	if len(grown) != 2 {
		t.Fatalf("%d of b's containers are in %s, want 2", len(grown), contested)
	}
	events := watchEvents(t, ctx, b)
	if err := tb.Heal(); err != nil {
		t.Fatal(err)
	}
	waitWhole(t, tb, tb.Hosts(), 90*time.Second)
	var moved netip.Prefix
	eventually(t, 30*time.Second, func() error {
		st := status(t, b)
		if len(st.Blocks) != 2 || st.Blocks[0] != first || st.Blocks[1] == contested {
			return fmt.Errorf("b holds %v", st.Blocks)
		}
		moved = mustPrefix(t, st.Blocks[1])
		if got := status(t, a).Blocks; !slices.Equal(got, []string{contested}) {
			return fmt.Errorf("a holds %v, want %s", got, contested)
		}
		return nil
	})
	want := map[*testbed.Container]string{ca: aa.Address}
	for name, at := range bs {
		addr := netip.MustParseAddr(at.Address)
		if slices.Contains(grown, name) {
			off := addr.As4()[3] - mustPrefix(t, contested).Addr().As4()[3]
			n := moved.Addr().As4()
			n[3] += off
			addr = netip.AddrFrom4(n)
		}
		want[tb.Container(b.Name, name)] = addr.String()
	}
	eventually(t, 20*time.Second, func() error {
		seen := map[string]api.Event{}
		conflict := false
		for _, ev := range events() {
			switch ev.Type {
			case api.EventMove:
				seen[ev.Container] = ev
			case api.EventConflict:
				conflict = conflict || (ev.OldBlock == contested && ev.Winner == a.Name && ev.Loser == b.Name)
			}
		}
		if !conflict {
			return fmt.Errorf("no %s event naming %s, %s and %s", api.EventConflict, contested, a.Name, b.Name)
		}
		for _, name := range grown {
			c := tb.Container(b.Name, name)
			if ev, ok := seen[c.ID()]; !ok || ev.OldAddress != bs[name].Address || ev.Address != want[c] {
				return fmt.Errorf("no %s event for %s from %s to %s; got %+v", api.EventMove, name, bs[name].Address, want[c], ev)
			}
		}
		if len(seen) != len(grown) {
			return fmt.Errorf("%d containers moved, want %d: %v", len(seen), len(grown), seen)
		}
		return nil
	})
	// The mesh DNS answers the moved containers' new addresses from a
	// container on the other side.
	eventually(t, 20*time.Second, func() error {
		for _, name := range grown {
			c := tb.Container(b.Name, name)
			fqdn := c.ID() + "." + bs[name].Service + ".zl"
			if got := digShort(ctx, ca, fqdn); !slices.Equal(got, []string{want[c]}) {
				return fmt.Errorf("%s answers %v, want %s", fqdn, got, want[c])
			}
		}
		return nil
	})
	pingContainers(t, tb, want, 30*time.Second)
}

package node

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/ipam/disk"
	"github.com/zlmesh/zlmesh/mesh"
	"github.com/zlmesh/zlmesh/mesh/meshtest"
)

// blocksNode is the part of a Node that claims, grows and releases blocks:
// an in-memory mesh of its own, a Claimer on a small plan (/28 blocks: 13
// containers in the first, 14 in the others) and an allocator on disk.
func blocksNode(t *testing.T) *Node {
	t.Helper()
	dir := t.TempDir()
	m, err := mesh.Start(mesh.Config{Name: "h1", Transport: meshtest.NewNetwork().NewTransport("h1"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	pool, err := ipam.NewPool(netip.MustParsePrefix("10.200.0.0/16"), 28)
	if err != nil {
		t.Fatal(err)
	}
	store := disk.New(filepath.Join(dir, ipamFile), 28)
	t.Cleanup(func() { store.Close() })
	alloc, err := ipam.NewAllocator(store, pool)
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{
		cfg:        Config{Name: "h1", BlockReleaseAfter: time.Minute},
		log:        slog.New(slog.DiscardHandler),
		pool:       pool,
		mesh:       m,
		alloc:      alloc,
		events:     newEventHub(),
		emptySince: map[netip.Prefix]time.Time{},
	}
	n.claimer = mesh.NewClaimer(m, pool, mesh.ClaimerConfig{Node: "pk-h1", Preferred: netip.MustParsePrefix("10.200.7.0/28")})
	t.Cleanup(n.claimer.Close)
	claims, _, err := n.claimer.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := alloc.SetClaims(claims); err != nil {
		t.Fatal(err)
	}
	n.claims = claims
	return n
}

func blockList(cs []ipam.Claim) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Block.String())
	}
	return out
}

// A node whose blocks are full claims the next block (the one right after
// its last) for the next container, and every view of its blocks (the
// claimer's, the allocator's on disk, the node's) agrees; blocks that stay
// empty for BlockReleaseAfter are given back, never the first; an empty
// block that gets a lease again before its time is kept.
func TestBlocksGrowAndRelease(t *testing.T) {
	n := blocksNode(t)
	for i := range 40 {
		if _, err := n.allocate("web", fmt.Sprintf("c%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"10.200.7.0/28", "10.200.7.16/28", "10.200.7.32/28"}
	agree := func(want []string) {
		t.Helper()
		n.mu.Lock()
		mine := blockList(n.claims)
		n.mu.Unlock()
		for what, got := range map[string][]string{
			"node":      mine,
			"claimer":   blockList(n.claimer.Current()),
			"allocator": blockList(n.alloc.Claims()),
		} {
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s holds %v, want %v", what, got, want)
			}
		}
	}
	agree(want)

	// Empty the second and third blocks (c13..c39), keep the first full.
	for i := 13; i < 40; i++ {
		if _, _, err := n.alloc.Release(fmt.Sprintf("c%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now()
	n.releaseEmptyBlocks(t0) // seen empty now
	agree(want)
	// One gets a lease again before its time: it stays.
	if l, err := n.allocate("web", "back"); err != nil || !netip.MustParsePrefix("10.200.7.16/28").Contains(l.Addr) {
		t.Fatalf("allocate after emptying: %v %v, want an address of 10.200.7.16/28", l, err)
	}
	n.releaseEmptyBlocks(t0.Add(30 * time.Second))
	agree(want)
	n.releaseEmptyBlocks(t0.Add(2 * time.Minute))
	agree(want[:2])
	// Emptied too: seen empty now, released a minute later; the first
	// block never goes.
	n.alloc.Release("back")
	for i := range 13 {
		n.alloc.Release(fmt.Sprintf("c%d", i))
	}
	n.releaseEmptyBlocks(t0.Add(3 * time.Minute))
	n.releaseEmptyBlocks(t0.Add(5 * time.Minute))
	agree(want[:1])
}

package ipam

import (
	"net/netip"
	"slices"
	"time"
)

// Beats reports whether c wins a conflict against o over the same block:
// the older claim (ClaimedAt) wins, ties broken by the lower public key
// (Node, compared as strings). A claim never beats another claim of the same
// node on the same block (itself or a stale copy of it).
func (c Claim) Beats(o Claim) bool {
	if c.Node == o.Node && c.Block == o.Block {
		return false
	}
	if !c.ClaimedAt.Equal(o.ClaimedAt) {
		return c.ClaimedAt.Before(o.ClaimedAt)
	}
	return c.Node < o.Node
}

// first orders claims totally: Beats order, then for copies of one node's
// claim the latest renewal, then the name. The first claim of a block under
// it is the one that beats the others, whatever the input order.
func first(a, b Claim) int {
	if !a.ClaimedAt.Equal(b.ClaimedAt) {
		return a.ClaimedAt.Compare(b.ClaimedAt)
	}
	if a.Node != b.Node {
		if a.Node < b.Node {
			return -1
		}
		return 1
	}
	if !a.RenewedAt.Equal(b.RenewedAt) {
		return -a.RenewedAt.Compare(b.RenewedAt)
	}
	switch {
	case a.Name < b.Name:
		return -1
	case a.Name > b.Name:
		return 1
	}
	return 0
}

// usable reports whether a claim's block is worth looking at: a valid,
// masked prefix. Claims on anything else are ignored by Holders and Conflicts.
func usable(c Claim) bool {
	return c.Block.IsValid() && c.Block.Masked() == c.Block
}

// Holders returns, for every block that is held, the claim that holds it: a
// claim holds while its node is alive, or for grace after RenewedAt while it
// is not; among several holders of one block the one that Beats the others.
//
// alive nil counts every node as alive. Claims on an invalid or unmasked
// block are ignored. The answer does not depend on the order of claims; the
// map is the caller's.
func Holders(claims []Claim, alive func(node string) bool, now time.Time, grace time.Duration) map[netip.Prefix]Claim {
	if alive == nil {
		alive = func(string) bool { return true }
	}
	held := make(map[netip.Prefix]Claim)
	for _, c := range claims {
		if !usable(c) {
			continue
		}
		if !alive(c.Node) && now.Sub(c.RenewedAt) >= grace {
			continue
		}
		if h, ok := held[c.Block]; !ok || first(c, h) < 0 {
			held[c.Block] = c
		}
	}
	return held
}

// Conflicts returns every pair (winner, loser) of alive nodes claiming the
// same block, one entry per losing node: the winner is the claim that Beats
// the others. Several copies of one node's claim count as one claimant.
//
// alive nil counts every node as alive. Claims on an invalid or unmasked
// block are ignored. The result is sorted by block, then by loser in Beats
// order, whatever the order of claims.
func Conflicts(claims []Claim, alive func(node string) bool) []Conflict {
	if alive == nil {
		alive = func(string) bool { return true }
	}
	// block → node → that node's first claim
	byBlock := make(map[netip.Prefix]map[string]Claim)
	for _, c := range claims {
		if !usable(c) || !alive(c.Node) {
			continue
		}
		nodes := byBlock[c.Block]
		if nodes == nil {
			nodes = make(map[string]Claim)
			byBlock[c.Block] = nodes
		}
		if o, ok := nodes[c.Node]; !ok || first(c, o) < 0 {
			nodes[c.Node] = c
		}
	}
	var out []Conflict
	for block, nodes := range byBlock {
		if len(nodes) < 2 {
			continue
		}
		cs := make([]Claim, 0, len(nodes))
		for _, c := range nodes {
			cs = append(cs, c)
		}
		slices.SortFunc(cs, first)
		for _, loser := range cs[1:] {
			out = append(out, Conflict{Block: block, Winner: cs[0], Loser: loser})
		}
	}
	slices.SortFunc(out, func(a, b Conflict) int {
		if c := comparePrefix(a.Block, b.Block); c != 0 {
			return c
		}
		return first(a.Loser, b.Loser)
	})
	return out
}

// comparePrefix orders prefixes by address, then by length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

//go:build linux

package e2e

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/testbed"
)

// chaosSeed is the schedule CI plays; $ZLMESH_CHAOS_SEED replays another
// (bench/chaos.sh draws random ones).
const chaosSeed = 1

// Seven hosts with four containers each over six services; a seeded
// sequence of a kill -9, a clean restart, a link cut and a partition, each
// of 40-70 s but the restart, overlapping; then no action: every host and
// every container reaches every other, every node lists the same
// endpoints, no address or block is held twice, and nothing leaked (links,
// routes, leases, attachments on disk). testbed.Chaos does the work and
// MeshView.Problems lists the invariants.
func TestChaos(t *testing.T) {
	seed := uint64(chaosSeed)
	if s := os.Getenv("ZLMESH_CHAOS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("ZLMESH_CHAOS_SEED=%q: %v", s, err)
		}
	}
	bin := testbed.BuildZlmesh(t)
	tb := testbed.New(t, testbed.Options{
		Hosts:  7,
		Binary: bin,
		Args:   func(*testbed.Host) []string { return testbed.ChaosNodeArgs },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	res, err := tb.Chaos(ctx, testbed.ChaosOptions{Plan: testbed.ChaosPlan{Seed: seed, Faults: 4}})
	if err != nil {
		t.Fatalf("chaos seed %d: %v\n%s", seed, err, diagnose(tb.Hosts()))
	}
	t.Logf("chaos seed %d: %d containers; setup %v, faults %v, converged %v after the last undo",
		seed, len(res.Containers), res.Setup.Round(100*time.Millisecond), res.Faults.Round(100*time.Millisecond),
		res.Converge.Round(100*time.Millisecond))
}

package testbed

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ChaosNodeArgs are the zlmesh arguments a chaos run gives every node:
// memberlist's timers shortened so failure detection takes seconds and a
// dead member is forgotten 4 s later, so a 40-70 s fault outlasts both and
// healing takes zlmesh's re-join of remembered peers. The code paths are the
// production ones; the timers stay loose enough that a loaded 2-core machine
// does not declare live nodes dead.
var ChaosNodeArgs = []string{
	"--gossip-probe-interval=500ms", "--gossip-probe-timeout=300ms",
	"--gossip-suspicion-mult=3", "--gossip-interval=100ms",
	"--gossip-push-pull-interval=2s", "--rejoin-max=2s",
	"--gossip-to-the-dead=4s", "--gossip-dead-reclaim=2s",
}

// ChaosBlockArgs are the zlmesh arguments a chaos run adds for addresses:
// blocks of 8 addresses (6 given out, the first block also holds the
// node's overlay address), so 4 containers nearly fill a node's first block
// and churn claims more, and a block left empty is released after 10 s,
// within the run.
var ChaosBlockArgs = []string{"--block-prefix=29", "--block-release-after=10s"}

// ChaosOptions configure Testbed.Chaos. Zero values mean the defaults.
type ChaosOptions struct {
	// Plan draws the schedule; Plan.Hosts nil means every host.
	Plan ChaosPlan
	// ContainersPerHost containers are made on every host (0 means 4),
	// spread over Services services (0 means 6): container j of the i-th
	// host joins service svc<(i·ContainersPerHost + j) mod Services>, so
	// every service has containers on several hosts.
	ContainersPerHost, Services int
	// Ready bounds the wait for the mesh before the chaos (0 means 2 min)
	// and Settle the wait after the last fault was undone (0 means 2 min).
	Ready, Settle time.Duration
	// Released adds, after the faults, that no node holds a block other
	// than its first with no container in it (MeshView.Released): for
	// nodes that release empty blocks quickly (ChaosBlockArgs).
	Released bool
}

// ChaosResult is what a chaos run did and measured.
type ChaosResult struct {
	Seed     uint64
	Schedule []Fault
	// Containers are the containers made, with their services.
	Containers map[*Container]string
	// Setup is the time to attach the containers and converge before the
	// chaos, Faults the time the schedule took to play, and Converge the
	// time from the last undo until every invariant held and every ping
	// answered.
	Setup, Faults, Converge time.Duration
	// View is the last view taken (the converged one on success).
	View MeshView
	// Lagging are the problems of the last check after the faults that
	// found any: what converged last (nil when the first check passed).
	Lagging []string
	// Consistent is the time from the last undo until every invariant of
	// MeshView.Problems held (Converge adds the pings); -1 when never.
	Consistent time.Duration
}

// Chaos runs one chaos test on tb, whose hosts run zlmesh (started, not
// necessarily ready): it makes and attaches the containers, waits until the
// mesh converges (WaitConverged), plays the schedule drawn from o.Plan
// (Play), then takes no action and waits until the mesh converges again.
// The result is filled as far as the run got. It logs through the testbed's
// Logf: the schedule first, then every step.
func (tb *Testbed) Chaos(ctx context.Context, o ChaosOptions) (ChaosResult, error) {
	if o.ContainersPerHost == 0 {
		o.ContainersPerHost = 4
	}
	if o.Services == 0 {
		o.Services = DefaultChaosServices
	}
	if o.Plan.Services == 0 {
		o.Plan.Services = o.Services
	}
	if o.Ready == 0 {
		o.Ready = 2 * time.Minute
	}
	if o.Settle == 0 {
		o.Settle = 2 * time.Minute
	}
	hosts := tb.Hosts()
	if o.Plan.Hosts == nil {
		for _, h := range hosts {
			o.Plan.Hosts = append(o.Plan.Hosts, h.Name)
		}
	}
	res := ChaosResult{Seed: o.Plan.Seed, Containers: map[*Container]string{}}
	sched, err := ChaosSchedule(o.Plan)
	if err != nil {
		return res, err
	}
	res.Schedule = sched
	logf := tb.logf
	logf("chaos seed %d: %d hosts, %d containers on each over %d services, %d faults until t+%v:\n  %s",
		o.Plan.Seed, len(hosts), o.ContainersPerHost, o.Services, len(sched), ChaosEnd(sched), strings.Join(faultLines(sched), "\n  "))

	begin := time.Now()
	rctx, cancel := context.WithTimeout(ctx, o.Ready)
	err = tb.WaitReady(rctx)
	cancel()
	if err != nil {
		return res, err
	}
	for i, h := range hosts {
		for j := range o.ContainersPerHost {
			svc := fmt.Sprintf("svc%d", (i*o.ContainersPerHost+j)%o.Services)
			c, err := tb.AddContainer(ctx, h, fmt.Sprintf("c%d", j+1))
			if err != nil {
				return res, err
			}
			res.Containers[c] = svc
			if _, err := c.Attach(ctx, svc); err != nil {
				return res, fmt.Errorf("attach %s to %s: %w", c, svc, err)
			}
		}
	}
	res.View, err = tb.WaitConverged(ctx, res.Containers, o.Ready)
	res.Setup = time.Since(begin)
	if err != nil {
		return res, fmt.Errorf("before the chaos: %w", err)
	}
	logf("chaos: converged before the faults (%v to attach and converge)", res.Setup.Round(100*time.Millisecond))

	begin = time.Now()
	err = tb.Play(ctx, sched, res.Containers)
	res.Faults = time.Since(begin)
	if err != nil {
		return res, err
	}
	logf("chaos: every fault undone after %v; waiting, with no action, for the mesh to converge", res.Faults.Round(100*time.Millisecond))
	begin = time.Now()
	conv, err := tb.waitConverged(ctx, res.Containers, o.Settle, o.Released)
	res.View, res.Lagging, res.Consistent, res.Converge = conv.view, conv.lagging, conv.consistent, time.Since(begin)
	if err != nil {
		return res, fmt.Errorf("chaos seed %d, after the faults: %w", o.Plan.Seed, err)
	}
	lag := "the first check passed"
	if len(res.Lagging) > 0 {
		lag = fmt.Sprintf("the last check before found %d problems:\n  %s", len(res.Lagging),
			strings.Join(res.Lagging[:min(10, len(res.Lagging))], "\n  "))
	}
	logf("chaos: converged %v after the last fault was undone (consistent after %v, the rest was pings); %s",
		res.Converge.Round(100*time.Millisecond), res.Consistent.Round(100*time.Millisecond), lag)
	return res, nil
}

func faultLines(fs []Fault) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.String()
	}
	return slices.Clip(out)
}

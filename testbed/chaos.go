package testbed

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Chaos: a seeded random sequence of faults played on a testbed. The
// schedule is pure (ChaosSchedule: the same plan and seed give the same
// faults, on any machine), so a failing run is repeated by its seed; Play
// runs one on a testbed and undoes every fault before it returns.

// FaultKind names one kind of fault.
type FaultKind string

// The faults a schedule is made of.
const (
	// FaultKill SIGKILLs the host's daemon (kill -9: no clean-up) and
	// starts it again after the fault's hold.
	FaultKill FaultKind = "kill"
	// FaultRestart stops the daemon cleanly (SIGTERM) and starts it again
	// at once (Host.Restart).
	FaultRestart FaultKind = "restart"
	// FaultCut takes the host off the underlay for the hold (Testbed.Cut).
	FaultCut FaultKind = "cut"
	// FaultPartition splits the hosts into groups that do not reach each
	// other for the hold (Testbed.Partition).
	FaultPartition FaultKind = "partition"
	// FaultChurn attaches new containers on the host, then detaches some
	// of its others (and removes them), wherever the host stands (cut off
	// or partitioned, say): new addresses, new blocks when its blocks are
	// full (see ChaosBlockArgs), claimed where the rest of the mesh may not
	// see it, and blocks left empty to be released.
	FaultChurn FaultKind = "churn"
)

// FaultKinds are all kinds. A schedule with at least as many faults as
// kinds draws its first ones from them, each once, in a random order.
var FaultKinds = []FaultKind{FaultKill, FaultRestart, FaultCut, FaultPartition, FaultChurn}

// Fault is one step of a chaos schedule.
type Fault struct {
	// At is when the fault begins, from the start of the run.
	At   time.Duration
	Kind FaultKind
	// Host is the host a kill, restart, cut or churn hits ("h3").
	Host string `json:",omitempty"`
	// Groups are a partition's groups of host names (every host in one).
	Groups [][]string `json:",omitempty"`
	// Hold is how long a kill, cut or partition lasts before it is undone
	// (0 for a restart or churn).
	Hold time.Duration `json:",omitempty"`
	// Gone is, for a kill, how many of the host's containers are removed
	// (their namespaces deleted) while its node is down: the node must
	// sweep them when it starts. For churn, how many are detached and
	// removed.
	Gone int `json:",omitempty"`
	// Attach are, for churn, the services of the containers made and
	// attached on the host.
	Attach []string `json:",omitempty"`
}

// End is when the fault is undone (At for a restart).
func (f Fault) End() time.Duration { return f.At + f.Hold }

func (f Fault) String() string {
	at := fmt.Sprintf("t+%v", f.At.Round(100*time.Millisecond))
	switch f.Kind {
	case FaultKill:
		gone := ""
		if f.Gone > 0 {
			gone = fmt.Sprintf(", remove %d of its containers meanwhile", f.Gone)
		}
		return fmt.Sprintf("%s kill -9 %s, start again after %v%s", at, f.Host, f.Hold.Round(100*time.Millisecond), gone)
	case FaultChurn:
		return fmt.Sprintf("%s churn on %s: attach %d to %s, then remove %d", at, f.Host, len(f.Attach), strings.Join(f.Attach, ","), f.Gone)
	case FaultRestart:
		return fmt.Sprintf("%s restart %s", at, f.Host)
	case FaultCut:
		return fmt.Sprintf("%s cut %s off for %v", at, f.Host, f.Hold.Round(100*time.Millisecond))
	case FaultPartition:
		gs := make([]string, len(f.Groups))
		for i, g := range f.Groups {
			gs[i] = "{" + strings.Join(g, ",") + "}"
		}
		return fmt.Sprintf("%s partition %s for %v", at, strings.Join(gs, " | "), f.Hold.Round(100*time.Millisecond))
	}
	return fmt.Sprintf("%s %s %s", at, f.Kind, f.Host)
}

// ChaosPlan says what a schedule may contain. The zero value of each field
// means its default.
type ChaosPlan struct {
	// Seed picks the schedule: the same plan and seed give the same faults.
	Seed uint64
	// Hosts are the host names faults hit (at least 2).
	Hosts []string
	// Faults is how many faults (0 means 5). When it is at least
	// len(Kinds), every kind occurs.
	Faults int
	// Kinds are the kinds to draw from (nil means FaultKinds).
	Kinds []FaultKind
	// MinHold and MaxHold bound how long a kill, cut or partition lasts
	// (0 means 40 s and 70 s: longer than failure detection and the fast
	// forget time of ChaosNodeArgs, so the mesh must re-join, not just
	// resume).
	MinHold, MaxHold time.Duration
	// MinGap and MaxGap bound the time from one fault's start to the
	// next's (0 means 2 s and 15 s), so faults overlap. A fault that has
	// no free host (each host has one host fault at a time) or would
	// overlap the running partition (one at a time) waits for it.
	MinGap, MaxGap time.Duration
	// RestartBusy is how long a host is kept free of other faults after a
	// restart or churn (0 means 15 s, to let a clean stop finish).
	RestartBusy time.Duration
	// Services is how many services churn attaches to, svc0… (0 means 6,
	// as ChaosOptions.Services).
	Services int
}

// Defaults of ChaosPlan.
const (
	DefaultChaosFaults   = 5
	DefaultChaosMinHold  = 40 * time.Second
	DefaultChaosMaxHold  = 70 * time.Second
	DefaultChaosMinGap   = 2 * time.Second
	DefaultChaosMaxGap   = 15 * time.Second
	defaultRestartBusy   = 15 * time.Second
	DefaultChaosServices = 6
)

func (p ChaosPlan) withDefaults() (ChaosPlan, error) {
	if p.Faults == 0 {
		p.Faults = DefaultChaosFaults
	}
	if p.Kinds == nil {
		p.Kinds = FaultKinds
	}
	if p.MinHold == 0 {
		p.MinHold = DefaultChaosMinHold
	}
	if p.MaxHold == 0 {
		p.MaxHold = max(DefaultChaosMaxHold, p.MinHold)
	}
	if p.MinGap == 0 {
		p.MinGap = DefaultChaosMinGap
	}
	if p.MaxGap == 0 {
		p.MaxGap = max(DefaultChaosMaxGap, p.MinGap)
	}
	if p.RestartBusy == 0 {
		p.RestartBusy = defaultRestartBusy
	}
	if p.Services == 0 {
		p.Services = DefaultChaosServices
	}
	switch {
	case len(p.Hosts) < 2:
		return p, fmt.Errorf("chaos plan: %d hosts: want at least 2", len(p.Hosts))
	case p.Faults < 0:
		return p, fmt.Errorf("chaos plan: %d faults", p.Faults)
	case len(p.Kinds) == 0:
		return p, errors.New("chaos plan: no fault kinds")
	case p.MinHold < 0 || p.MaxHold < p.MinHold:
		return p, fmt.Errorf("chaos plan: hold %v to %v", p.MinHold, p.MaxHold)
	case p.MinGap < 0 || p.MaxGap < p.MinGap:
		return p, fmt.Errorf("chaos plan: gap %v to %v", p.MinGap, p.MaxGap)
	case p.Services < 1:
		return p, fmt.Errorf("chaos plan: %d services", p.Services)
	}
	seen := map[string]bool{}
	for _, h := range p.Hosts {
		if h == "" || seen[h] {
			return p, fmt.Errorf("chaos plan: host name %q empty or repeated", h)
		}
		seen[h] = true
	}
	for _, k := range p.Kinds {
		if !slices.Contains(FaultKinds, k) {
			return p, fmt.Errorf("chaos plan: unknown fault kind %q (want one of %v)", k, FaultKinds)
		}
	}
	return p, nil
}

// ChaosSchedule draws a schedule from plan: Faults faults in order of At,
// each host hit by at most one kill, restart, cut or churn at a time (a
// restart or churn keeps the host for RestartBusy), at most one partition
// at a time. It is a pure function of plan (math/rand/v2's PCG,
// seeded by plan.Seed).
func ChaosSchedule(plan ChaosPlan) ([]Fault, error) {
	p, err := plan.withDefaults()
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(p.Seed, 0x7a6c6d657368)) // "zlmesh"
	between := func(lo, hi time.Duration) time.Duration {
		if hi <= lo {
			return lo
		}
		// Whole 100 ms steps keep printed schedules exact.
		steps := int64((hi - lo) / (100 * time.Millisecond))
		return lo + time.Duration(rng.Int64N(steps+1))*100*time.Millisecond
	}
	// The first faults take every kind once, in a random order.
	var kinds []FaultKind
	if p.Faults >= len(p.Kinds) {
		kinds = slices.Clone(p.Kinds)
		rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	}
	busy := map[string]time.Duration{} // host → free from
	var partitionEnd time.Duration
	var out []Fault
	var at time.Duration
	for i := range p.Faults {
		if i > 0 {
			at += between(p.MinGap, p.MaxGap)
		}
		kind := p.Kinds[rng.IntN(len(p.Kinds))]
		if i < len(kinds) {
			kind = kinds[i]
		}
		f := Fault{Kind: kind}
		if kind == FaultPartition {
			at = max(at, partitionEnd)
			f.At, f.Hold = at, between(p.MinHold, p.MaxHold)
			f.Groups = partitionGroups(rng, p.Hosts)
			partitionEnd = f.End()
			out = append(out, f)
			continue
		}
		// The hosts free at `at`; when none is, wait for the first to free up.
		var free []string
		for _, h := range p.Hosts {
			if busy[h] <= at {
				free = append(free, h)
			}
		}
		if len(free) == 0 {
			first := slices.MinFunc(p.Hosts, func(a, b string) int { return cmp.Compare(busy[a], busy[b]) })
			at = busy[first]
			free = []string{first}
		}
		f.At, f.Host = at, free[rng.IntN(len(free))]
		switch kind {
		case FaultRestart:
			busy[f.Host] = at + p.RestartBusy
		case FaultChurn:
			f.Gone = 1 + rng.IntN(2)
			for range 1 + rng.IntN(3) {
				f.Attach = append(f.Attach, fmt.Sprintf("svc%d", rng.IntN(p.Services)))
			}
			busy[f.Host] = at + p.RestartBusy
		default:
			f.Hold = between(p.MinHold, p.MaxHold)
			busy[f.Host] = f.End()
			if kind == FaultKill {
				f.Gone = rng.IntN(2)
			}
		}
		out = append(out, f)
	}
	return out, nil
}

// partitionGroups splits hosts into 2 groups (3, one time in four, with 5
// hosts or more), each non-empty, in a random arrangement.
func partitionGroups(rng *rand.Rand, hosts []string) [][]string {
	hs := slices.Clone(hosts)
	rng.Shuffle(len(hs), func(i, j int) { hs[i], hs[j] = hs[j], hs[i] })
	n := 2
	if len(hs) >= 5 && rng.IntN(4) == 0 {
		n = 3
	}
	// n-1 distinct cut points in 1…len-1.
	cuts := rng.Perm(len(hs) - 1)[:n-1]
	for i := range cuts {
		cuts[i]++
	}
	slices.Sort(cuts)
	var groups [][]string
	prev := 0
	for _, c := range append(cuts, len(hs)) {
		g := slices.Clone(hs[prev:c])
		slices.SortFunc(g, compareHostNames)
		groups = append(groups, g)
		prev = c
	}
	return groups
}

// compareHostNames orders "h2" before "h10".
func compareHostNames(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

// ChaosEnd is when the last fault of a schedule is undone.
func ChaosEnd(faults []Fault) time.Duration {
	var end time.Duration
	for _, f := range faults {
		end = max(end, f.End())
	}
	return end
}

// chaosStep is one thing Play does: a fault's start or its undoing.
type chaosStep struct {
	at    time.Duration
	fault Fault
	index int // of the fault in its schedule
	undo  bool
}

func chaosSteps(faults []Fault) []chaosStep {
	var steps []chaosStep
	for i, f := range faults {
		steps = append(steps, chaosStep{at: f.At, fault: f, index: i})
		if f.Kind != FaultRestart && f.Kind != FaultChurn {
			steps = append(steps, chaosStep{at: f.End(), fault: f, index: i, undo: true})
		}
	}
	// Undo before do at the same moment: a partition that ends when the
	// next begins must be healed first, not after.
	slices.SortStableFunc(steps, func(a, b chaosStep) int {
		if a.at != b.at {
			return int(a.at - b.at)
		}
		switch {
		case a.undo && !b.undo:
			return -1
		case b.undo && !a.undo:
			return 1
		}
		return 0
	})
	return steps
}

// Play runs a schedule on tb: each fault at its time from now, each undone
// after its hold (a killed host is started again with its command, a cut
// host restored, a partition healed). want are the containers expected
// attached, with their services (nil: none); the containers a kill or churn
// removes are deleted from it and those churn attaches added, named
// f<fault>n<j>, so it stays what the mesh must hold. A kill or churn takes
// the host's first containers of want by ID.
//
// A step that takes long (a clean stop waits for the daemon) delays the
// steps after it; each is logged with the time it really ran. Play returns
// when the last fault is undone, or at the first failed step or when ctx
// ends; then it first undoes whatever is still in force (heal, restore
// every cut host, start every stopped host), so the testbed is whole again
// in every case but the hosts' readiness.
func (tb *Testbed) Play(ctx context.Context, faults []Fault, want map[*Container]string) (err error) {
	logf := tb.logf
	defer func() {
		if uerr := tb.undoFaults(faults); uerr != nil {
			err = errors.Join(err, fmt.Errorf("undo chaos: %w", uerr))
		}
	}()
	if want == nil {
		want = map[*Container]string{}
	}
	start := time.Now()
	for _, s := range chaosSteps(faults) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("chaos stopped before %s: %w", s.fault, ctx.Err())
		case <-time.After(time.Until(start.Add(s.at))):
		}
		what, err := tb.playStep(ctx, s, want)
		logf("chaos t+%v: %s", time.Since(start).Round(100*time.Millisecond), what)
		if err != nil {
			return fmt.Errorf("chaos step %q (%s): %w", what, s.fault, err)
		}
	}
	return nil
}

func (tb *Testbed) playStep(ctx context.Context, s chaosStep, want map[*Container]string) (string, error) {
	f := s.fault
	var h *Host
	if f.Host != "" {
		if h = tb.Host(f.Host); h == nil {
			return f.Kind.String() + " " + f.Host, fmt.Errorf("no host %s in testbed %s", f.Host, tb.Prefix)
		}
	}
	switch {
	case f.Kind == FaultKill && !s.undo:
		if err := h.Kill(); err != nil {
			return "kill -9 " + h.Name, err
		}
		gone, err := removeContainers(h, f.Gone, want)
		return fmt.Sprintf("kill -9 %s%s", h.Name, listed(", removed ", gone)), err
	case f.Kind == FaultKill:
		return "start " + h.Name, h.Start(ctx)
	case f.Kind == FaultRestart:
		return "restart " + h.Name, h.Restart(ctx)
	case f.Kind == FaultChurn:
		return tb.churn(ctx, h, s, want)
	case f.Kind == FaultCut && !s.undo:
		return "cut " + h.Name, tb.Cut(h)
	case f.Kind == FaultCut:
		return "restore " + h.Name, tb.Restore(h)
	case f.Kind == FaultPartition && !s.undo:
		var groups [][]*Host
		for _, g := range f.Groups {
			var hs []*Host
			for _, n := range g {
				x := tb.Host(n)
				if x == nil {
					return "partition", fmt.Errorf("no host %s in testbed %s", n, tb.Prefix)
				}
				hs = append(hs, x)
			}
			groups = append(groups, hs)
		}
		return fmt.Sprintf("partition %v", f.Groups), tb.Partition(groups...)
	case f.Kind == FaultPartition:
		return "heal", tb.Heal()
	}
	return string(f.Kind), fmt.Errorf("unknown fault kind %q", f.Kind)
}

// churn makes and attaches one container on h per service of f.Attach,
// then detaches and removes f.Gone of h's other containers: attaching first
// makes a node whose blocks are full claim another one.
func (tb *Testbed) churn(ctx context.Context, h *Host, s chaosStep, want map[*Container]string) (string, error) {
	f := s.fault
	what := "churn on " + h.Name
	old := hostContainers(h, want)
	var made []string
	for j, svc := range f.Attach {
		c, err := tb.AddContainer(ctx, h, fmt.Sprintf("f%dn%d", s.index, j+1))
		if err != nil {
			return what, err
		}
		want[c] = svc
		a, err := c.Attach(ctx, svc)
		if err != nil {
			return what, fmt.Errorf("attach %s to %s: %w", c, svc, err)
		}
		made = append(made, fmt.Sprintf("%s=%s@%s", c.Name, a.Address, svc))
	}
	var gone []string
	for _, c := range old[:min(f.Gone, len(old))] {
		if err := h.Client().Detach(ctx, c.ID()); err != nil {
			return what, fmt.Errorf("detach %s: %w", c, err)
		}
		if err := c.Remove(); err != nil {
			return what, err
		}
		delete(want, c)
		gone = append(gone, c.Name)
	}
	return what + listed(": attached ", made) + listed(", detached ", gone), nil
}

// removeContainers removes (without detaching) the first n of h's
// containers in want.
func removeContainers(h *Host, n int, want map[*Container]string) ([]string, error) {
	var gone []string
	cs := hostContainers(h, want)
	for _, c := range cs[:min(n, len(cs))] {
		if err := c.Remove(); err != nil {
			return gone, err
		}
		delete(want, c)
		gone = append(gone, c.Name)
	}
	return gone, nil
}

// hostContainers are h's containers in want, by ID.
func hostContainers(h *Host, want map[*Container]string) []*Container {
	var cs []*Container
	for c := range want {
		if c.Host == h {
			cs = append(cs, c)
		}
	}
	slices.SortFunc(cs, func(a, b *Container) int { return strings.Compare(a.ID(), b.ID()) })
	return cs
}

func listed(label string, xs []string) string {
	if len(xs) == 0 {
		return ""
	}
	return label + strings.Join(xs, " ")
}

func (k FaultKind) String() string { return string(k) }

// undoFaults heals, restores every cut host and starts every host of the
// schedule whose daemon does not run.
func (tb *Testbed) undoFaults(faults []Fault) error {
	errs := []error{tb.Heal()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, h := range tb.Hosts() {
		if tb.IsCut(h) {
			errs = append(errs, tb.Restore(h))
		}
		hit := slices.ContainsFunc(faults, func(f Fault) bool { return f.Host == h.Name })
		if hit && !h.Running() {
			errs = append(errs, h.Start(ctx))
		}
	}
	return errors.Join(errs...)
}

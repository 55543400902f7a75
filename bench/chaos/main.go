// Command chaos runs zlmesh chaos tests on a fresh testbed each round: the
// same runner as the e2e test TestChaos (testbed.Chaos), with a random seed
// per round unless one is given, printed first so any run can be replayed
// with -seed. A round makes containers over several services on every host,
// plays a seeded schedule of kill -9, clean restarts, link cuts and
// partitions, takes no action afterwards, and passes when the mesh
// converges: every host and container reaches every other, every node lists
// the same endpoints, nothing is held twice, nothing leaked
// (testbed.MeshView.Problems).
//
// On a failure it prints the problems and copies every host's zlmesh log to
// -logs/<seed>/, then stops with exit status 1.
//
// Everything runs inside testbed namespaces (random prefix), removed on exit.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/zlmesh/zlmesh/testbed"
)

type options struct {
	binary               string
	seed                 uint64
	rounds, hosts        int
	faults               int
	containers, services int
	minHold, maxHold     time.Duration
	maxGap, settle       time.Duration
	kinds, args, logs    string
	verbose, keep        bool
	released             bool
}

func main() {
	var o options
	flag.StringVar(&o.binary, "binary", "", "zlmesh binary")
	flag.Uint64Var(&o.seed, "seed", 0, "seed of the first round (0: random); round i uses seed+i")
	flag.IntVar(&o.rounds, "rounds", 1, "rounds, each on a fresh testbed")
	flag.IntVar(&o.hosts, "hosts", 7, "hosts")
	flag.IntVar(&o.faults, "faults", 8, "faults per round")
	flag.IntVar(&o.containers, "containers", 4, "containers per host")
	flag.IntVar(&o.services, "services", 6, "services the containers are spread over")
	flag.DurationVar(&o.minHold, "min-hold", testbed.DefaultChaosMinHold, "shortest kill, cut or partition")
	flag.DurationVar(&o.maxHold, "max-hold", testbed.DefaultChaosMaxHold, "longest kill, cut or partition")
	flag.DurationVar(&o.maxGap, "max-gap", testbed.DefaultChaosMaxGap, "longest time from one fault's start to the next's")
	flag.DurationVar(&o.settle, "settle", 2*time.Minute, "how long the mesh may take to converge after the last fault")
	flag.StringVar(&o.kinds, "kinds", "", "fault kinds, comma-separated (default: kill,restart,cut,partition)")
	flag.StringVar(&o.args, "args", strings.Join(append(slices.Clone(testbed.ChaosNodeArgs), testbed.ChaosBlockArgs...), " "), "`zlmesh up` arguments of every node, space-separated")
	flag.StringVar(&o.logs, "logs", "/tmp/zlmesh-chaos", "where the logs of a failed round go (<logs>/<seed>/)")
	flag.BoolVar(&o.released, "released", true, "a block but the first with no container is a leak (the default -args release empty blocks after 10 s)")
	flag.BoolVar(&o.verbose, "v", false, "log every testbed step")
	flag.BoolVar(&o.keep, "keep-logs", false, "keep the logs of rounds that pass too")
	flag.Parse()
	if o.binary == "" || o.rounds < 1 {
		fmt.Fprintln(os.Stderr, "usage: chaos -binary PATH [-seed N] [-rounds N] [-faults N] [-hosts N] …")
		os.Exit(2)
	}
	if o.seed == 0 {
		var b [8]byte
		rand.Read(b[:])
		o.seed = binary.BigEndian.Uint64(b[:]) >> 1 // fits in an int64 for flag parsing and shells
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("%-20s %6s %8s %9s %10s %10s  %s\n", "seed", "faults", "setup", "chaos", "consistent", "converge", "result")
	for i := range o.rounds {
		seed := o.seed + uint64(i)
		if err := round(ctx, o, seed); err != nil {
			fmt.Fprintf(os.Stderr, "\nchaos seed %d: %v\nreplay: SEED=%d FAULTS=%d HOSTS=%d bench/chaos.sh\n", seed, err, seed, o.faults, o.hosts)
			os.Exit(1)
		}
	}
}

func round(ctx context.Context, o options, seed uint64) error {
	logf := func(string, ...any) {}
	if o.verbose {
		logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	}
	args := strings.Fields(o.args)
	tb, err := testbed.Up(ctx, testbed.Options{
		Hosts:  o.hosts,
		Prefix: testbed.RandomPrefix(),
		Binary: o.binary,
		Args:   func(*testbed.Host) []string { return args },
		Logf:   logf,
	})
	if err != nil {
		return err
	}
	defer tb.Close()
	var kinds []testbed.FaultKind
	if o.kinds != "" {
		for _, k := range strings.Split(o.kinds, ",") {
			kinds = append(kinds, testbed.FaultKind(strings.TrimSpace(k)))
		}
	}
	res, err := tb.Chaos(ctx, testbed.ChaosOptions{
		Plan: testbed.ChaosPlan{Seed: seed, Faults: o.faults, Kinds: kinds,
			MinHold: o.minHold, MaxHold: o.maxHold, MaxGap: o.maxGap},
		ContainersPerHost: o.containers,
		Services:          o.services,
		Settle:            o.settle,
		Released:          o.released,
	})
	result := "ok"
	if err != nil {
		result = "FAIL"
	}
	consistent := "-"
	if res.Faults > 0 && res.Consistent >= 0 {
		consistent = res.Consistent.Round(100 * time.Millisecond).String()
	}
	fmt.Printf("%-20d %6d %8s %9s %10s %10s  %s\n", seed, len(res.Schedule), round1(res.Setup), round1(res.Faults), consistent, round1(res.Converge), result)
	if err == nil && o.keep {
		dir := filepath.Join(o.logs, fmt.Sprint(seed))
		if err := copyLogs(tb, dir); err != nil {
			return err
		}
		fmt.Printf("%22slogs: %s\n", "", dir)
	}
	if err == nil {
		for i, p := range res.Lagging {
			if i == 3 {
				fmt.Printf("%22s… %d more\n", "", len(res.Lagging)-3)
				break
			}
			fmt.Printf("%22slast to converge: %s\n", "", p)
		}
		return nil
	}
	fmt.Fprintf(os.Stderr, "schedule of seed %d:\n", seed)
	for _, f := range res.Schedule {
		fmt.Fprintf(os.Stderr, "  %s\n", f)
	}
	dir := filepath.Join(o.logs, fmt.Sprint(seed))
	if cerr := copyLogs(tb, dir); cerr != nil {
		err = errors.Join(err, cerr)
	} else {
		fmt.Fprintf(os.Stderr, "zlmesh logs of every host: %s\n", dir)
	}
	return err
}

func round1(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(100 * time.Millisecond).String()
}

func copyLogs(tb *testbed.Testbed, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, h := range tb.Hosts() {
		s, err := h.ReadLog()
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, h.Name+".log"), []byte(s), 0o644); err != nil {
			return err
		}
	}
	return nil
}

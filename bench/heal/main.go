// Command heal measures how long a 5-host zlmesh testbed takes to become one
// mesh again after a partition {h1,h2} | {h3,h4,h5} heals: from removing the
// partition until every host pings every other host's overlay address.
//
// Two partitions are measured, interleaved over several rounds:
//
//   - short: healed before failure detection declares anyone dead (WireGuard
//     and gossip just resume);
//   - long: held until both sides have declared the other dead AND gossip
//     has forgotten it (--gossip-to-the-dead), so only zlmesh's re-join of
//     remembered peers can bring the halves together.
//
// The baseline, measured in the same rounds on the same testbed, is the
// floor of the measurement itself: the time a full ping matrix takes on the
// whole, unpartitioned mesh.
//
// Everything runs inside testbed namespaces (random prefix), removed on exit.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/testbed"
)

func main() {
	binary := flag.String("binary", "", "zlmesh binary")
	rounds := flag.Int("rounds", 3, "rounds of each measurement")
	short := flag.Duration("short", 2*time.Second, "length of the short partition")
	forget := flag.Duration("forget", 5*time.Second, "--gossip-to-the-dead of the nodes (the long partition outlasts it)")
	extra := flag.String("args", "", "extra `zlmesh up` arguments, space-separated")
	flag.Parse()
	if *binary == "" || *rounds < 1 {
		fmt.Fprintln(os.Stderr, "usage: heal -binary PATH [-rounds N] [-short D] [-forget D] [-args '...']")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *binary, *rounds, *short, *forget, strings.Fields(*extra)); err != nil {
		fmt.Fprintln(os.Stderr, "heal:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, binary string, rounds int, short, forget time.Duration, extra []string) error {
	args := append([]string{"--gossip-to-the-dead=" + forget.String()}, extra...)
	tb, err := testbed.Up(ctx, testbed.Options{
		Hosts:  5,
		Prefix: testbed.RandomPrefix(),
		Binary: binary,
		Args:   func(*testbed.Host) []string { return args },
		Logf:   func(string, ...any) {},
	})
	if err != nil {
		return err
	}
	defer tb.Close()
	hs := tb.Hosts()
	ready, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := tb.WaitReady(ready); err != nil {
		return fmt.Errorf("the nodes never came up: %w", err)
	}
	if err := waitMatrix(ctx, hs, time.Minute); err != nil {
		return fmt.Errorf("the mesh never became whole: %w", err)
	}
	var floor, shortHeal, longHeal []time.Duration
	for r := 0; r < rounds; r++ {
		start := time.Now()
		if err := waitMatrix(ctx, hs, time.Minute); err != nil {
			return err
		}
		floor = append(floor, time.Since(start))

		d, err := partitionAndHeal(ctx, tb, hs, func() error {
			time.Sleep(short)
			return nil
		})
		if err != nil {
			return fmt.Errorf("short partition: %w", err)
		}
		shortHeal = append(shortHeal, d)

		d, err = partitionAndHeal(ctx, tb, hs, func() error { return waitForgotten(ctx, hs, 3*time.Minute) })
		if err != nil {
			return fmt.Errorf("long partition: %w", err)
		}
		longHeal = append(longHeal, d)
	}
	fmt.Printf("%-44s %10s %10s %10s %8s\n", "5 hosts, {h1,h2} | {h3,h4,h5}", "median", "min", "max", "÷ floor")
	row := func(name string, ds []time.Duration) {
		fmt.Printf("%-44s %10s %10s %10s %8.1f\n", name, ms(median(ds)), ms(slices.Min(ds)), ms(slices.Max(ds)),
			float64(median(ds))/float64(median(floor)))
	}
	row("floor: ping matrix of the whole mesh", floor)
	row(fmt.Sprintf("heal after %v (nobody declared dead)", short), shortHeal)
	row(fmt.Sprintf("heal after forgetting (--gossip-to-the-dead %v)", forget), longHeal)
	return nil
}

// partitionAndHeal partitions the hosts, runs hold, heals, and returns the
// time from the heal until the full ping matrix succeeds.
func partitionAndHeal(ctx context.Context, tb *testbed.Testbed, hs []*testbed.Host, hold func() error) (time.Duration, error) {
	if err := tb.Partition(hs[:2], hs[2:]); err != nil {
		return 0, err
	}
	if err := hold(); err != nil {
		tb.Heal()
		return 0, err
	}
	if err := tb.Heal(); err != nil {
		return 0, err
	}
	start := time.Now()
	if err := waitMatrix(ctx, hs, 3*time.Minute); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// waitForgotten waits until each side knows only its own side: both have
// declared the other dead and gossip has forgotten it.
func waitForgotten(ctx context.Context, hs []*testbed.Host, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		for i, h := range hs {
			peers, err := h.Client().Peers(ctx)
			want := 2
			if i < 2 {
				want = 1
			}
			if err != nil || len(peers) != want {
				ok = false
				break
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the sides did not forget each other within %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitMatrix repeats the full ping matrix (every host to every other host's
// overlay address, concurrently) until one pass succeeds.
func waitMatrix(ctx context.Context, hs []*testbed.Host, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	overlay := map[*testbed.Host]netip.Addr{}
	for _, h := range hs {
		st, err := statusOf(ctx, h)
		if err != nil {
			return err
		}
		overlay[h], _ = netip.ParseAddr(st.OverlayIP)
	}
	for {
		var mu sync.Mutex
		failed := 0
		var wg sync.WaitGroup
		for _, from := range hs {
			for _, to := range hs {
				if from == to {
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
					defer cancel()
					if from.Ping(pctx, overlay[to].String()) != nil {
						mu.Lock()
						failed++
						mu.Unlock()
					}
				}()
			}
		}
		wg.Wait()
		if failed == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%d pings still failing after %v", failed, timeout)
		}
	}
}

func statusOf(ctx context.Context, h *testbed.Host) (api.Status, error) {
	return h.Client().Status(ctx)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

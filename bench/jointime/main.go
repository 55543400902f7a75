// Command jointime measures how long a new host takes to join a zlmesh
// mesh: from the start of `zlmesh up --join` on the new host until every
// other host has had an ICMP echo answered by the new host's overlay
// address. It is run by bench/join.sh.
//
// For each mesh size N (-sizes, default 3,5,10) it builds a testbed (package
// testbed, random prefix) of N-1 running hosts, waits until they all ping
// each other over the overlay, then, -rounds times, adds a fresh host (a new
// namespace, a new key, no state), starts it and measures; the new host
// then leaves the mesh gracefully (`zlmesh down`) and the next round adds
// another one, so every round is the join of the N-th host. Rounds of the
// different sizes are interleaved (3, 5, 10, 3, 5, 10, …) so that the
// machine's load spreads over all of them alike; all testbeds live at once.
//
// Besides the total it reports the phases, from the new host's clock:
// control socket ready (Start returned: gossip joined, subnet claimed) and
// the first and last of the other hosts to get an answer.
//
// Needs root. Everything runs inside the testbeds' namespaces; they are
// removed on exit, also on ^C.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/testbed"
)

func main() {
	binary := flag.String("binary", "", "zlmesh `binary` the hosts run (required)")
	sizes := flag.String("sizes", "3,5,10", "mesh sizes N, comma-separated (the new host is the N-th)")
	rounds := flag.Int("rounds", 3, "joins measured per size")
	timeout := flag.Duration("timeout", 30*time.Second, "give up on one join after this long")
	args := flag.String("args", "", "extra `arguments` for every host's zlmesh up, space-separated")
	flag.Parse()
	if *binary == "" {
		fmt.Fprintln(os.Stderr, "jointime: -binary is required")
		os.Exit(2)
	}
	var ns []int
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 2 || n > 50 {
			fmt.Fprintf(os.Stderr, "jointime: -sizes %q: want numbers from 2 to 50\n", *sizes)
			os.Exit(2)
		}
		ns = append(ns, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, *binary, ns, *rounds, *timeout, strings.Fields(*args))
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "jointime:", err)
		os.Exit(1)
	}
}

// mesh is one testbed of N-1 running hosts waiting for the N-th.
type mesh struct {
	n    int
	tb   *testbed.Testbed
	last *testbed.Host // the host of the previous round, left
}

// result is one measured join.
type result struct {
	ready time.Duration // control socket answers
	first time.Duration // first other host answered
	all   time.Duration // last other host answered: the join time
}

func run(ctx context.Context, binary string, sizes []int, rounds int, timeout time.Duration, extra []string) error {
	var meshes []*mesh
	defer func() {
		for _, m := range meshes {
			if err := m.tb.Close(); err != nil {
				fmt.Fprintln(os.Stderr, "jointime: close testbed:", err)
			}
		}
	}()
	for _, n := range sizes {
		m, err := newMesh(ctx, binary, n, extra)
		if m != nil {
			meshes = append(meshes, m)
		}
		if err != nil {
			return err
		}
	}
	res := make(map[int][]result)
	for r := 1; r <= rounds; r++ {
		for _, m := range meshes {
			jr, err := m.join(ctx, timeout)
			if err != nil {
				return fmt.Errorf("N=%d round %d: %w", m.n, r, err)
			}
			fmt.Fprintf(os.Stderr, "N=%-2d round %d: join %v (socket ready %v, first answer %v)\n",
				m.n, r, jr.all.Round(time.Millisecond), jr.ready.Round(time.Millisecond), jr.first.Round(time.Millisecond))
			res[m.n] = append(res[m.n], jr)
		}
	}
	fmt.Printf("%-6s %6s %12s %12s %12s %12s\n", "hosts", "rounds", "join median", "join max", "ready med", "1st ans med")
	for _, n := range sizes {
		rs := res[n]
		all := pick(rs, func(r result) time.Duration { return r.all })
		fmt.Printf("%-6d %6d %12s %12s %12s %12s\n", n, len(rs),
			ms(median(all)), ms(slices.Max(all)),
			ms(median(pick(rs, func(r result) time.Duration { return r.ready }))),
			ms(median(pick(rs, func(r result) time.Duration { return r.first }))))
	}
	return nil
}

func newMesh(ctx context.Context, binary string, n int, extra []string) (*mesh, error) {
	var sfx [3]byte
	rand.Read(sfx[:])
	tb, err := testbed.Up(ctx, testbed.Options{
		Hosts:   n - 1,
		Prefix:  "zbj" + hex.EncodeToString(sfx[:]),
		Binary:  binary,
		Args:    func(*testbed.Host) []string { return extra },
		NoStart: true,
	})
	if err != nil {
		return nil, fmt.Errorf("testbed of %d hosts: %w", n-1, err)
	}
	m := &mesh{n: n, tb: tb}
	// The seed first, then the others, as an operator would.
	hosts := tb.Hosts()
	for i, h := range hosts {
		if err := h.Start(ctx); err != nil {
			return m, err
		}
		if i == 0 {
			if err := wait(ctx, h); err != nil {
				return m, err
			}
		}
	}
	for _, h := range hosts {
		if err := wait(ctx, h); err != nil {
			return m, err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := pingAll(wctx, hosts); err != nil {
		return m, fmt.Errorf("mesh of %d hosts never became whole: %w", n-1, err)
	}
	return m, nil
}

func wait(ctx context.Context, h *testbed.Host) error {
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return h.WaitReady(wctx)
}

// pingAll waits until every host pings every other host's overlay address.
// Addresses are asked again after a failure: a host that lost a subnet
// conflict (hosts started at once may pick the same one) renumbers.
func pingAll(ctx context.Context, hosts []*testbed.Host) error {
	for i, h := range hosts {
		for j, o := range hosts {
			if i == j {
				continue
			}
			for {
				err := pingOnce(ctx, h, o)
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					return fmt.Errorf("%s → %s: %w", h, o, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	return nil
}

func pingOnce(ctx context.Context, from, to *testbed.Host) error {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	st, err := to.Client().Status(ctx)
	if err != nil {
		return err
	}
	return from.Ping(ctx, st.OverlayIP)
}

// join adds a fresh host, starts it and measures until every other host
// got an answer from its overlay address; then it makes the host leave.
func (m *mesh) join(ctx context.Context, timeout time.Duration) (result, error) {
	var r result
	if m.last != nil {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := m.last.Client().Down(dctx, api.DownRequest{})
		cancel()
		if err != nil {
			return r, fmt.Errorf("down %s: %w", m.last, err)
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		for m.last.Running() && sctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		if err := m.last.Stop(ctx); err != nil {
			return r, err
		}
		// Let the others drop it before the next one comes.
		time.Sleep(time.Second)
	}
	var others []*testbed.Host
	for _, o := range m.tb.Hosts() {
		if o.Running() {
			others = append(others, o)
		}
	}
	h, err := m.tb.AddHost(ctx)
	if err != nil {
		return r, err
	}
	m.last = h
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	begin := time.Now()
	if err := h.Start(ctx); err != nil {
		return r, err
	}
	// Its overlay address is known once Start returned (the claim is
	// made then); poll its control socket for it.
	var overlay string
	for {
		sctx, scancel := context.WithTimeout(ctx, 200*time.Millisecond)
		st, err := h.Client().Status(sctx)
		scancel()
		if err == nil && st.OverlayIP != "" {
			overlay = st.OverlayIP
			break
		}
		if ctx.Err() != nil {
			return r, fmt.Errorf("%s never answered on its control socket; log:\n%s", h, h.LogTail(20))
		}
		if !h.Running() {
			return r, fmt.Errorf("%s exited; log:\n%s", h, h.LogTail(20))
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.ready = time.Since(begin)

	// Every other host sends an echo every 10 ms (each waiting up to
	// 500 ms for its answer) until one is answered.
	got := make([]time.Duration, len(others))
	var wg sync.WaitGroup
	for i, o := range others {
		wg.Go(func() {
			got[i] = pingUntil(ctx, o, overlay, begin)
		})
	}
	wg.Wait()
	for i, d := range got {
		if d < 0 {
			return r, fmt.Errorf("%s never got an answer from %s (%s) in %v; new host's log:\n%s",
				others[i], h, overlay, timeout, h.LogTail(30))
		}
	}
	r.first, r.all = slices.Min(got), slices.Max(got)
	return r, nil
}

// pingUntil pings addr from h every 10 ms until one echo is answered, and
// returns when (since begin), or -1 when ctx ended first.
func pingUntil(ctx context.Context, h *testbed.Host, addr string, begin time.Time) time.Duration {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		first = time.Duration(-1)
		wg    sync.WaitGroup
	)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		wg.Go(func() {
			pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer pcancel()
			if err := h.Ping(pctx, addr); err != nil {
				return
			}
			at := time.Since(begin)
			mu.Lock()
			if first < 0 || at < first {
				first = at
			}
			mu.Unlock()
			cancel()
		})
		select {
		case <-ctx.Done():
			wg.Wait()
			return first
		case <-t.C:
		}
	}
}

func pick(rs []result, f func(result) time.Duration) []time.Duration {
	out := make([]time.Duration, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 0, 64) + " ms"
}

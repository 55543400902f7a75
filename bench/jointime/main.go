// Command jointime measures how long a new host takes to join a zlmesh
// mesh: from the start of `zlmesh up --join` on the new host until every
// other host has had an ICMP echo answered by the new host's overlay
// address. It is run by bench/join.sh.
//
// With -wireguard-go, every round also measures a baseline on the same new
// host: a standalone wireguard-go configured statically (static.go), the
// floor under any join.
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
	wgBin := flag.String("wireguard-go", "", "standalone wireguard-go `binary` for the static baseline (empty: no baseline)")
	flag.Parse()
	if *binary == "" {
		fmt.Fprintln(os.Stderr, "jointime: -binary is required")
		os.Exit(2)
	}
	if *rounds < 1 {
		fmt.Fprintln(os.Stderr, "jointime: -rounds must be at least 1")
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
	err := run(ctx, *binary, *wgBin, ns, *rounds, *timeout, strings.Fields(*args))
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
	wg   *static       // the baseline; nil without -wireguard-go
}

// result is one measured join.
type result struct {
	ready time.Duration // control socket answers
	first time.Duration // first other host answered
	all   time.Duration // last other host answered: the join time
}

func run(ctx context.Context, binary, wgBin string, sizes []int, rounds int, timeout time.Duration, extra []string) error {
	var meshes []*mesh
	defer func() {
		for _, m := range meshes {
			if err := m.tb.Close(); err != nil {
				fmt.Fprintln(os.Stderr, "jointime: close testbed:", err)
			}
		}
	}()
	for _, n := range sizes {
		m, err := newMesh(ctx, binary, wgBin, n, extra)
		if m != nil {
			meshes = append(meshes, m)
		}
		if err != nil {
			return err
		}
	}
	res := make(map[int][]result)
	base := make(map[int][]time.Duration)
	for r := 1; r <= rounds; r++ {
		for _, m := range meshes {
			jr, b, err := m.round(ctx, r, timeout)
			if err != nil {
				return fmt.Errorf("N=%d round %d: %w", m.n, r, err)
			}
			line := fmt.Sprintf("N=%-2d round %d: zlmesh join %v (socket ready %v, first answer %v)",
				m.n, r, jr.all.Round(time.Millisecond), jr.ready.Round(time.Millisecond), jr.first.Round(time.Millisecond))
			if m.wg != nil {
				line += fmt.Sprintf("; static wireguard-go %v", b.Round(time.Millisecond))
				base[m.n] = append(base[m.n], b)
			}
			fmt.Fprintln(os.Stderr, line)
			res[m.n] = append(res[m.n], jr)
		}
	}
	fmt.Printf("%-6s %6s %12s %12s %12s %12s %14s %10s\n", "hosts", "rounds", "join median", "join max",
		"ready med", "1st ans med", "static wg med", "zl/static")
	for _, n := range sizes {
		rs := res[n]
		all := pick(rs, func(r result) time.Duration { return r.all })
		b, ratio := "-", "-"
		if len(base[n]) > 0 {
			b = ms(median(base[n]))
			ratio = fmt.Sprintf("%.1f", float64(median(all))/float64(median(base[n])))
		}
		fmt.Printf("%-6d %6d %12s %12s %12s %12s %14s %10s\n", n, len(rs),
			ms(median(all)), ms(slices.Max(all)),
			ms(median(pick(rs, func(r result) time.Duration { return r.ready }))),
			ms(median(pick(rs, func(r result) time.Duration { return r.first }))), b, ratio)
	}
	return nil
}

// round adds a fresh host and measures its zlmesh join and (with a
// baseline) its static wireguard-go join, in an order that alternates
// from round to round.
func (m *mesh) round(ctx context.Context, r int, timeout time.Duration) (result, time.Duration, error) {
	if err := m.leave(ctx); err != nil {
		return result{}, 0, err
	}
	var others []*testbed.Host
	for _, o := range m.tb.Hosts() {
		if o.Running() {
			others = append(others, o)
		}
	}
	h, err := m.tb.AddHost(ctx)
	if err != nil {
		return result{}, 0, err
	}
	m.last = h
	var (
		jr result
		b  time.Duration
	)
	steps := []func() error{
		func() (err error) { jr, err = m.join(ctx, h, others, timeout); return err },
	}
	if m.wg != nil {
		steps = append(steps, func() (err error) { b, err = m.wg.join(ctx, h, others, timeout); return err })
		if r%2 == 0 {
			steps[0], steps[1] = steps[1], steps[0]
		}
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return jr, b, err
		}
	}
	return jr, b, nil
}

func newMesh(ctx context.Context, binary, wgBin string, n int, extra []string) (*mesh, error) {
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
	if wgBin != "" {
		if m.wg, err = newStatic(ctx, tb, wgBin, hosts); err != nil {
			return m, err
		}
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
					return fmt.Errorf("%s → %s: %w\n%s\n%s", h, o, err, diagnose(h), diagnose(o))
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	return nil
}

// diagnose returns what a host's WireGuard and routes look like, and its
// log's tail, for a failure message.
func diagnose(h *testbed.Host) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wg, _ := h.Exec(ctx, "wg", "show", "zl0")
	routes, _ := h.Exec(ctx, "ip", "route")
	return fmt.Sprintf("--- %s: wg show zl0\n%s--- %s: ip route\n%s--- %s: log\n%s", h, wg, h, routes, h, h.LogTail(40))
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

// leave makes the host of the previous round leave the mesh (`zlmesh
// down`) and drops it from the baseline.
func (m *mesh) leave(ctx context.Context) error {
	if m.last == nil {
		return nil
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := m.last.Client().Down(dctx, api.DownRequest{})
	cancel()
	if err != nil {
		return fmt.Errorf("down %s: %w", m.last, err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	for m.last.Running() && sctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := m.last.Stop(ctx); err != nil {
		return err
	}
	if m.wg != nil {
		if err := m.wg.leave(ctx, m.last); err != nil {
			return err
		}
	}
	// Let the others drop it before the next one comes.
	time.Sleep(time.Second)
	return nil
}

// join starts zlmesh on the fresh host h and measures until every one of
// others got an answer from its overlay address.
func (m *mesh) join(ctx context.Context, h *testbed.Host, others []*testbed.Host, timeout time.Duration) (result, error) {
	var r result
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
	got, err := pingAllUntil(ctx, others, overlay, begin)
	if err != nil {
		return r, fmt.Errorf("%w in %v; new host's log:\n%s", err, timeout, h.LogTail(30))
	}
	r.first, r.all = slices.Min(got), slices.Max(got)
	return r, nil
}

// pingAllUntil has every one of others ping addr until it is answered, and
// returns when the last one was (since begin).
func pingAllUntil(ctx context.Context, others []*testbed.Host, addr string, begin time.Time) ([]time.Duration, error) {
	got := make([]time.Duration, len(others))
	var wg sync.WaitGroup
	for i, o := range others {
		wg.Go(func() { got[i] = pingUntil(ctx, o, addr, begin) })
	}
	wg.Wait()
	for i, d := range got {
		if d < 0 {
			return got, fmt.Errorf("%s never got an answer from %s", others[i], addr)
		}
	}
	return got, nil
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

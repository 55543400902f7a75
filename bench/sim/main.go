// Command sim is zlmesh's in-process cluster simulation benchmark. For each
// cluster size it starts every node at once (a burst join through one seed)
// and measures, for zlmesh (mesh + block Claimer on the replicated store,
// in the default block plan) and, in the same run, for plain memberlist
// with LAN defaults (no zlmesh store):
//
//	membership  time until every node sees every node alive
//	claims      time until every node knows every block claim: each node's
//	            view of the holders (Claimer.Holders) is exactly every
//	            node's current blocks, each held by that node (zlmesh only;
//	            no two nodes hold one block then). Every -grow-every'th
//	            node claims -grow-burst more blocks (Grow) during the burst,
//	            at a random moment in its first 2s, as a node started with
//	            many containers does
//	growth      once claims are known everywhere, -grow-nodes nodes each
//	            Grow one block at the same moment: time until every node
//	            knows every grown block (zlmesh only)
//	detect      time until every node has dropped a node killed silently
//	conflicts   block conflicts resolved (zlmesh only)
//
// and prints a table with the ratios zlmesh / memberlist. Both run with the
// same timers (memberlist.DefaultLANConfig), the same AES-GCM cluster key,
// the same transport (meshtest's memory network by default, or real UDP/TCP
// on 127.0.0.1 with -loopback), and the same join retry (1s, ±25%).
//
// Usage: go run ./bench/sim [-nodes 50,200] [-loopback] [-timeout 2m]
// [-grow-every 10] [-grow-burst 2] [-grow-nodes 20]
// [-only zlmesh|memberlist] [-cpuprofile file]; SIM_DEBUG=1 prints progress
// (alive members seen, claims missing, traffic) every 5s and each conflict.
package main

import (
	"context"
	crand "crypto/rand"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/mesh"
	"github.com/zlmesh/zlmesh/mesh/meshtest"
)

// only restricts the run to one system ("" runs both).
var only string

// Growth during and after the burst (see the package doc).
var growEvery, growBurst, growNodes int

func main() {
	sizes := flag.String("nodes", "50,200", "comma-separated cluster sizes")
	loopback := flag.Bool("loopback", false, "use real UDP/TCP on 127.0.0.1 (random ports) instead of the memory network")
	timeout := flag.Duration("timeout", 2*time.Minute, "give up waiting for one measure after this long")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.StringVar(&only, "only", "", `run only "zlmesh" or "memberlist"`)
	flag.IntVar(&growEvery, "grow-every", 10, "every this many'th node grows during the burst (0: none)")
	flag.IntVar(&growBurst, "grow-burst", 2, "blocks each growing node adds during the burst")
	flag.IntVar(&growNodes, "grow-nodes", 20, "nodes that grow one block at once after convergence (0: no growth measure)")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "sim:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if err := run(*sizes, *loopback, *timeout); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "sim:", err)
		os.Exit(1)
	}
}

// result is one system's figures for one cluster size.
type result struct {
	membership, claims, records, growth, detect time.Duration
	conflicts                                   int64
	blocks                                      int            // blocks held when claims were known everywhere
	traffic                                     meshtest.Stats // memory network only
	err                                         error
}

func run(sizesFlag string, loopback bool, timeout time.Duration) error {
	var sizes []int
	for f := range strings.SplitSeq(sizesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 3 {
			return fmt.Errorf("bad -nodes entry %q: want a number >= 3", f)
		}
		sizes = append(sizes, n)
	}
	transport := "memory network (meshtest)"
	if loopback {
		transport = "UDP/TCP on 127.0.0.1"
	}
	fmt.Printf("zlmesh simulation: burst join through one seed, then one node killed silently\n")
	fmt.Printf("transport: %s; timers: memberlist LAN defaults; AES-GCM cluster key; GOMAXPROCS=%d\n\n", transport, runtime.GOMAXPROCS(0))

	type row struct {
		n        int
		zl, base result
	}
	var rows []row
	for _, n := range sizes {
		fmt.Fprintf(os.Stderr, "%d nodes: plain memberlist...\n", n)
		var base result
		if only != "zlmesh" {
			base = runMemberlist(n, loopback, timeout)
		}
		fmt.Fprintf(os.Stderr, "%d nodes: zlmesh...\n", n)
		var zl result
		if only != "memberlist" {
			zl = runZlmesh(n, loopback, timeout)
		}
		rows = append(rows, row{n, zl, base})
	}

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "nodes\tmeasure\tzlmesh\tmemberlist\tratio\t")
	for _, r := range rows {
		for _, e := range []error{r.zl.err, r.base.err} {
			if e != nil {
				fmt.Fprintf(w, "%d\terror\t%v\t\t\t\n", r.n, e)
			}
		}
		fmt.Fprintf(w, "%d\tmembership converged\t%s\t%s\t%s\t\n", r.n, secs(r.zl.membership), secs(r.base.membership), ratio(r.zl.membership, r.base.membership))
		fmt.Fprintf(w, "%d\tevery claim known everywhere\t%s\t%s\t%s\t\n", r.n, secs(r.zl.claims), "(membership) "+secs(r.base.membership), ratio(r.zl.claims, r.base.membership))
		fmt.Fprintf(w, "%d\tevery node's latest claim record everywhere\t%s\t%s\t%s\t\n", r.n, secs(r.zl.records), "(membership) "+secs(r.base.membership), ratio(r.zl.records, r.base.membership))
		if growNodes > 0 {
			fmt.Fprintf(w, "%d\t%d nodes grow 1 block: known everywhere\t%s\t-\t-\t\n", r.n, min(growNodes, r.n), secs(r.zl.growth))
		}
		fmt.Fprintf(w, "%d\tblocks held (1 node in %d grew %d in the burst)\t%d\t-\t-\t\n", r.n, growEvery, growBurst, r.zl.blocks)
		fmt.Fprintf(w, "%d\tkilled node dropped everywhere\t%s\t%s\t%s\t\n", r.n, secs(r.zl.detect), secs(r.base.detect), ratio(r.zl.detect, r.base.detect))
		fmt.Fprintf(w, "%d\tclaim conflicts resolved\t%d\t-\t-\t\n", r.n, r.zl.conflicts)
		if !loopback {
			fmt.Fprintf(w, "%d\tpackets / KiB sent (whole run)\t%d / %d\t%d / %d\t%s\t\n", r.n,
				r.zl.traffic.Packets, r.zl.traffic.PacketBytes>>10, r.base.traffic.Packets, r.base.traffic.PacketBytes>>10,
				ratio(time.Duration(r.zl.traffic.PacketBytes), time.Duration(r.base.traffic.PacketBytes)))
		}
	}
	w.Flush()
	fmt.Println("\nratio = zlmesh / memberlist; \"every claim known\" is compared with memberlist's membership convergence.")
	for _, r := range rows {
		if r.zl.err != nil || r.base.err != nil {
			return fmt.Errorf("some measures failed")
		}
	}
	return nil
}

func secs(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func ratio(a, b time.Duration) string {
	if a <= 0 || b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(a)/float64(b))
}

// waitFor polls cond every step until it holds; it returns the time since
// start, or an error after timeout.
func waitFor(start time.Time, step, timeout time.Duration, what string, cond func() bool) (time.Duration, error) {
	for !cond() {
		if time.Since(start) > timeout {
			return 0, fmt.Errorf("%s: not reached within %v", what, timeout)
		}
		time.Sleep(step)
	}
	return time.Since(start), nil
}

func clusterKey() []byte {
	key := make([]byte, 32)
	if _, err := crand.Read(key); err != nil {
		panic(err)
	}
	return key
}

func nodeName(i int) string { return fmt.Sprintf("node-%03d", i) }

// runZlmesh measures zlmesh: meshes with block Claimers on the default plan
// (a /14 of /26 blocks).
func runZlmesh(n int, loopback bool, timeout time.Duration) (res result) {
	key := clusterKey()
	network := meshtest.NewNetwork()
	pool, err := ipam.NewPool(netip.MustParsePrefix(ipam.DefaultCluster), ipam.DefaultBlockBits)
	if err != nil {
		res.err = err
		return res
	}
	tuning := mesh.DefaultTuning()
	cfgFor := func(i int, seed string) mesh.Config {
		cfg := mesh.Config{
			Name:       nodeName(i),
			ClusterKey: key,
			Meta:       mesh.Meta{PublicKey: fmt.Sprintf("pk-%03d", i)},
			Tuning:     tuning,
		}
		if seed != "" {
			cfg.Join = []string{seed}
		}
		if loopback {
			cfg.BindAddr, cfg.BindPort = "127.0.0.1", -1
		} else {
			cfg.Transport = network.NewTransport(cfg.Name)
		}
		return cfg
	}

	meshes := make([]*mesh.Mesh, n)
	claimers := make([]*mesh.Claimer, n)
	var conflicts atomic.Int64
	defer func() {
		var wg sync.WaitGroup
		for i := range meshes {
			wg.Go(func() {
				if claimers[i] != nil {
					claimers[i].Close()
				}
				if meshes[i] != nil {
					meshes[i].Shutdown()
				}
			})
		}
		wg.Wait()
	}()

	start := time.Now()
	seed, err := mesh.Start(cfgFor(0, ""))
	if err != nil {
		res.err = err
		return res
	}
	meshes[0] = seed
	seedAddr := seed.Addr().String()
	var wg sync.WaitGroup
	var startErr atomic.Value
	for i := range n {
		wg.Go(func() {
			m := seed
			if i > 0 {
				var err error
				if m, err = mesh.Start(cfgFor(i, seedAddr)); err != nil {
					startErr.Store(err)
					return
				}
				meshes[i] = m
			}
			cl := mesh.NewClaimer(m, pool, mesh.ClaimerConfig{Node: fmt.Sprintf("pk-%03d", i)})
			if _, _, err := cl.Acquire(context.Background()); err != nil {
				startErr.Store(err)
				return
			}
			claimers[i] = cl
			if growEvery > 0 && i%growEvery == 0 {
				// A node started with many containers: it grows soon
				// after its first block, while the burst is going on.
				go func() {
					time.Sleep(rand.N(2 * time.Second))
					for range growBurst {
						if _, err := cl.Grow(); err != nil {
							fmt.Fprintf(os.Stderr, "  grow on %s: %v\n", m.LocalName(), err)
						}
					}
				}()
			}
			go func() {
				for range cl.Changes() {
					conflicts.Add(1)
					if os.Getenv("SIM_DEBUG") != "" {
						fmt.Fprintf(os.Stderr, "  %v conflict on %s\n", time.Since(start).Round(time.Millisecond), m.LocalName())
					}
				}
			}()
		})
	}
	wg.Wait()
	if e, ok := startErr.Load().(error); ok {
		res.err = e
		return res
	}

	// Membership and claims, polled together.
	var memDone, claimsDone, recordsDone time.Duration
	lastDbg := time.Now()
	_, res.err = waitFor(start, 50*time.Millisecond, timeout, "zlmesh convergence", func() bool {
		if memDone == 0 && allAlive(meshes, n) {
			memDone = time.Since(start)
		}
		if claimsDone == 0 && claimsEverywhere(meshes, claimers) {
			claimsDone = time.Since(start)
		}
		if recordsDone == 0 && recordsEverywhere(meshes, claimers) {
			recordsDone = time.Since(start)
		}
		if os.Getenv("SIM_DEBUG") != "" && time.Since(lastDbg) > 5*time.Second {
			lastDbg = time.Now()
			lo, hi := n, 0
			for _, m := range meshes {
				lo, hi = min(lo, m.NumAlive()), max(hi, m.NumAlive())
			}
			fmt.Fprintf(os.Stderr, "  %v alive seen: min %d max %d, nodes lacking a claim %d, %+v\n", time.Since(start).Round(time.Second), lo, hi, debugMissing(meshes, claimers), network.Stats())
		}
		return memDone > 0 && claimsDone > 0
	})
	res.membership, res.claims, res.records, res.conflicts = memDone, claimsDone, recordsDone, conflicts.Load()
	if res.err != nil {
		return res
	}
	for _, cl := range claimers {
		res.blocks += len(cl.Current())
	}

	// Growth at steady state: growNodes nodes (spread over the cluster,
	// not the victim) each claim one more block at the same moment.
	if growNodes > 0 {
		var growers []int
		for k := range min(growNodes, n) {
			if i := (k*n/min(growNodes, n) + 1) % n; i != n/2 {
				growers = append(growers, i)
			}
		}
		grown := time.Now()
		var gwg sync.WaitGroup
		for _, i := range growers {
			gwg.Go(func() {
				if _, err := claimers[i].Grow(); err != nil {
					startErr.Store(fmt.Errorf("grow on %s: %w", meshes[i].LocalName(), err))
				}
			})
		}
		gwg.Wait()
		if e, ok := startErr.Load().(error); ok {
			res.err = e
			return res
		}
		res.growth, res.err = waitFor(grown, 50*time.Millisecond, timeout, "zlmesh growth", func() bool {
			return claimsEverywhere(meshes, claimers)
		})
		if res.err != nil {
			return res
		}
	}

	// Kill one node silently.
	victim := n / 2
	name := meshes[victim].LocalName()
	claimers[victim].Close()
	killed := time.Now()
	meshes[victim].Shutdown()
	res.detect, res.err = waitFor(killed, 50*time.Millisecond, timeout, "zlmesh detection", func() bool {
		for i, m := range meshes {
			if i != victim && m.Alive(name) {
				return false
			}
		}
		return true
	})
	res.traffic = network.Stats()
	return res
}

// allAlive reports whether every mesh sees n members alive.
func allAlive(meshes []*mesh.Mesh, n int) bool {
	for _, m := range meshes {
		if m.NumAlive() != n {
			return false
		}
	}
	return true
}

// claimsEverywhere reports whether the current claims are pairwise distinct
// and every node knows every block claim: each node's view of the holders
// of blocks (Claimer.Holders, what the node routes by) is exactly the set
// of all nodes' current blocks, each held by the node that holds it.
func claimsEverywhere(meshes []*mesh.Mesh, claimers []*mesh.Claimer) bool {
	want := make(map[netip.Prefix]string)
	for _, cl := range claimers {
		for _, c := range cl.Current() {
			if _, dup := want[c.Block]; dup {
				return false
			}
			want[c.Block] = c.Node
		}
	}
	for _, cl := range claimers {
		if !knowsAll(cl, want) {
			return false
		}
	}
	return true
}

// recordsEverywhere reports whether every node's store holds every node's
// claim record at least at the version that node's own store has (the
// measure before blocks: it looks at record clocks, not at what the
// records say; kept beside claimsEverywhere for comparison).
func recordsEverywhere(meshes []*mesh.Mesh, claimers []*mesh.Claimer) bool {
	want := make(map[string]uint64, len(claimers))
	for i, cl := range claimers {
		cur := cl.Current()
		if len(cur) == 0 {
			return false
		}
		clock, ok := meshes[i].Store().Version(mesh.KindClaim, cur[0].Node)
		if !ok {
			return false
		}
		want[cur[0].Node] = clock
	}
	for _, m := range meshes {
		for key, clock := range want {
			if c, ok := m.Store().Version(mesh.KindClaim, key); !ok || c < clock {
				return false
			}
		}
	}
	return true
}

// knowsAll reports whether cl's view of the block holders is exactly want
// (block → holder's public key).
func knowsAll(cl *mesh.Claimer, want map[netip.Prefix]string) bool {
	h := cl.Holders()
	if len(h) != len(want) {
		return false
	}
	for b, node := range want {
		if c, ok := h[b]; !ok || c.Node != node {
			return false
		}
	}
	return true
}

// runMemberlist measures plain memberlist with LAN defaults.
func runMemberlist(n int, loopback bool, timeout time.Duration) (res result) {
	key := clusterKey()
	network := meshtest.NewNetwork()
	lists := make([]*memberlist.Memberlist, n)
	defer func() {
		var wg sync.WaitGroup
		for _, l := range lists {
			if l != nil {
				wg.Go(func() { l.Shutdown() })
			}
		}
		wg.Wait()
	}()
	create := func(i int) (*memberlist.Memberlist, error) {
		c := memberlist.DefaultLANConfig()
		c.Name = nodeName(i)
		c.Keyring, _ = memberlist.NewKeyring(nil, key)
		c.Logger = log.New(io.Discard, "", 0)
		if loopback {
			c.BindAddr, c.BindPort = "127.0.0.1", 0
		} else {
			c.Transport = network.NewTransport(c.Name)
		}
		return memberlist.Create(c)
	}

	start := time.Now()
	seed, err := create(0)
	if err != nil {
		res.err = err
		return res
	}
	lists[0] = seed
	seedAddr := seed.LocalNode().Address()
	var wg sync.WaitGroup
	var startErr atomic.Value
	stop := make(chan struct{})
	for i := 1; i < n; i++ {
		wg.Go(func() {
			l, err := create(i)
			if err != nil {
				startErr.Store(err)
				return
			}
			lists[i] = l
			// Retry like the mesh does: 1s ±25% until it worked.
			for {
				if _, err := l.Join([]string{seedAddr}); err == nil {
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(750*time.Millisecond + rand.N(500*time.Millisecond)):
				}
			}
		})
	}
	lastDbg := time.Now()
	res.membership, res.err = waitFor(start, 50*time.Millisecond, timeout, "memberlist convergence", func() bool {
		if os.Getenv("SIM_DEBUG") != "" && time.Since(lastDbg) > 5*time.Second {
			lastDbg = time.Now()
			lo, hi := n, 0
			for _, l := range lists {
				if l != nil {
					lo, hi = min(lo, l.NumMembers()), max(hi, l.NumMembers())
				}
			}
			fmt.Fprintf(os.Stderr, "  %v members seen: min %d max %d, %+v\n", time.Since(start).Round(time.Second), lo, hi, network.Stats())
		}
		for _, l := range lists {
			if l == nil || l.NumMembers() != n {
				return false
			}
		}
		return true
	})
	close(stop)
	wg.Wait()
	if e, ok := startErr.Load().(error); ok {
		res.err = e
	}
	if res.err != nil {
		return res
	}

	victim := n / 2
	name := lists[victim].LocalNode().Name
	killed := time.Now()
	lists[victim].Shutdown()
	res.detect, res.err = waitFor(killed, 50*time.Millisecond, timeout, "memberlist detection", func() bool {
		for i, l := range lists {
			if i == victim {
				continue
			}
			for _, m := range l.Members() {
				if m.Name == name {
					return false
				}
			}
		}
		return true
	})
	res.traffic = network.Stats()
	return res
}

// debugMissing counts the nodes whose view of the block holders is not
// yet every node's current blocks.
func debugMissing(meshes []*mesh.Mesh, claimers []*mesh.Claimer) int {
	want := make(map[netip.Prefix]string)
	for _, cl := range claimers {
		for _, c := range cl.Current() {
			want[c.Block] = c.Node
		}
	}
	missing := 0
	for _, cl := range claimers {
		if !knowsAll(cl, want) {
			missing++
		}
	}
	return missing
}

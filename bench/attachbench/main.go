// Command attachbench measures container attach in a testbed host, with the
// baselines in the same run (see bench/attach.sh, which builds and runs it):
//
//  1. latency: N sequential attaches through the node's control socket,
//     from this process (the machine's namespace) to zlmesh in a testbed
//     host, each into a fresh container namespace made beforehand;
//  2. the same N attaches done the classic way, by shelling out to `ip`
//     from one bash script inside the host (veth created into the netns,
//     address, lo and eth0 up, default route, master, up);
//  3. the same N attaches by Debian's CNI bridge plugin with host-local IPAM,
//     invoked directly with the CNI environment from a bash script inside
//     the host;
//  4. throughput: TOTAL attaches by C concurrent clients over S services,
//     then the daemon's resident memory (VmRSS) with TOTAL attached, then
//     TOTAL detaches by the same clients.
//
// Everything lives in a testbed with a random prefix, removed on exit (also
// on ^C). No packet leaves its namespaces.
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/testbed"
)

func main() {
	binary := flag.String("binary", "", "zlmesh binary (required)")
	n := flag.Int("n", 200, "sequential attaches per method for the latency runs")
	total := flag.Int("total", 1000, "attaches for the throughput and memory run")
	clients := flag.Int("clients", 8, "concurrent clients for the throughput run")
	services := flag.Int("services", 4, "services the throughput run spreads its containers over")
	cniDir := flag.String("cni", "/usr/lib/cni", "directory of the CNI plugins (bridge, host-local)")
	stateDir := flag.String("state-dir", "", "zlmesh state dir (default: the testbed's, under /run/<prefix>)")
	skip := flag.String("skip", "", "comma-separated parts to skip: ip, cni, throughput")
	logLevel := flag.String("log-level", "warn", "zlmesh's --log-level")
	keepLog := flag.String("keep-log", "", "copy zlmesh's log to this file before the testbed goes")
	hold := flag.Duration("hold", 0, "wait this long with the throughput run's containers attached (to inspect the daemon)")
	settle := flag.Duration("settle", 10*time.Second, "how long after the throughput run's last attach VmRSS is read a second time")
	prefix := flag.String("prefix", "", "testbed prefix (default: a random one)")
	flag.Parse()
	if *binary == "" {
		fmt.Fprintln(os.Stderr, "attachbench: -binary is required")
		os.Exit(2)
	}
	if err := run(*binary, *n, *total, *clients, *services, *cniDir, *stateDir, *skip, *logLevel, *keepLog, *hold, *settle, *prefix); err != nil {
		fmt.Fprintln(os.Stderr, "attachbench:", err)
		os.Exit(1)
	}
}

func run(binary string, n, total, clients, services int, cniDir, stateDir, skip, logLevel, keepLog string, hold, settle time.Duration, prefix string) error {
	skipped := map[string]bool{}
	for _, s := range strings.Split(skip, ",") {
		skipped[strings.TrimSpace(s)] = true
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The default plan: blocks of /26 claimed as the containers come.
	args := []string{"--log-level", logLevel}
	if stateDir != "" {
		dir, err := os.MkdirTemp(stateDir, "zlt-attachbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		args = append(args, "--state-dir", dir)
	}
	if prefix == "" {
		prefix = testbed.RandomPrefix()
	}
	upCtx, cancel := context.WithTimeout(ctx, time.Minute)
	tb, err := testbed.Up(upCtx, testbed.Options{
		Prefix: prefix,
		Hosts:  1,
		Binary: binary,
		Args:   func(*testbed.Host) []string { return args },
	})
	cancel()
	if err != nil {
		return err
	}
	defer tb.Close()
	h := tb.Host("h1")
	if keepLog != "" {
		defer func() {
			if b, err := os.ReadFile(h.LogFile); err == nil {
				os.WriteFile(keepLog, b, 0o644)
			}
		}()
	}
	readyCtx, cancel := context.WithTimeout(ctx, time.Minute)
	err = h.WaitReady(readyCtx)
	cancel()
	if err != nil {
		return err
	}
	cl := h.Client()

	// Each phase makes its container namespaces first (their creation is
	// not measured) and removes them after, so every method runs with the
	// same number of namespaces on the machine: `ip -n` copies the mount
	// table on every call, so its cost grows with the netns mounts.
	mk := func(prefix string, count int) ([]*testbed.Container, error) {
		out := make([]*testbed.Container, count)
		for i := range out {
			c, err := tb.AddContainer(ctx, h, fmt.Sprintf("%s%d", prefix, i))
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	}
	rm := func(cs []*testbed.Container) error {
		for _, c := range cs {
			if err := c.Remove(); err != nil {
				return err
			}
		}
		return nil
	}
	rssIdle, _ := vmRSS(h.PID())

	// 1. zlmesh, sequential, through the socket.
	zl, err := mk("z", n)
	if err != nil {
		return err
	}
	lat := make([]time.Duration, 0, n)
	for _, c := range zl {
		t0 := time.Now()
		_, err := cl.Attach(ctx, api.AttachRequest{Service: "lat", Container: c.ID(), Netns: c.Netns})
		d := time.Since(t0)
		if err != nil {
			return fmt.Errorf("zlmesh attach %s: %w", c.ID(), err)
		}
		lat = append(lat, d)
	}
	for _, c := range zl {
		if err := cl.Detach(ctx, c.ID()); err != nil {
			return fmt.Errorf("detach %s: %w", c.ID(), err)
		}
	}
	if err := rm(zl); err != nil {
		return err
	}
	results := []result{{"zlmesh (control socket)", lat}}

	// 2. ip from a script.
	if !skipped["ip"] {
		cs, err := mk("i", n)
		if err != nil {
			return err
		}
		d, err := ipScript(ctx, h, cs)
		if err != nil {
			return err
		}
		results = append(results, result{"ip commands (bash)", d})
		if err := rm(cs); err != nil {
			return err
		}
	}
	// 3. CNI bridge + host-local.
	if !skipped["cni"] {
		cs, err := mk("c", n)
		if err != nil {
			return err
		}
		d, err := cniScript(ctx, h, cs, cniDir)
		if err != nil {
			return err
		}
		results = append(results, result{"CNI bridge + host-local", d})
		if err := rm(cs); err != nil {
			return err
		}
	}

	fmt.Printf("attach latency: %d sequential attaches per method, a fresh netns each, in testbed %s\n", n, tb.Prefix)
	fmt.Printf("%-26s %9s %9s %9s\n", "method", "p50 ms", "p99 ms", "mean ms")
	for _, r := range results {
		fmt.Printf("%-26s %9.2f %9.2f %9.2f\n", r.name, ms(pct(r.d, 50)), ms(pct(r.d, 99)), ms(mean(r.d)))
	}
	for _, r := range results[1:] {
		fmt.Printf("ratio %s / zlmesh: p50 %.1fx, p99 %.1fx\n", r.name,
			ms(pct(r.d, 50))/ms(pct(lat, 50)), ms(pct(r.d, 99))/ms(pct(lat, 99)))
	}

	if skipped["throughput"] {
		return nil
	}
	bulk, err := mk("b", total)
	if err != nil {
		return err
	}

	// 4. Throughput, memory, detach throughput.
	attachRate, attachLat, err := parallel(ctx, bulk, clients, func(i int, c *testbed.Container) error {
		_, err := cl.Attach(ctx, api.AttachRequest{Service: fmt.Sprintf("svc%d", i%services), Container: c.ID(), Netns: c.Netns})
		return err
	})
	if err != nil {
		return fmt.Errorf("throughput attach: %w", err)
	}
	atts, err := cl.Attachments(ctx)
	if err != nil {
		return err
	}
	rssFull, err := vmRSS(h.PID())
	if err != nil {
		return err
	}
	time.Sleep(settle)
	rssSettled, err := vmRSS(h.PID())
	if err != nil {
		return err
	}
	if hold > 0 {
		fmt.Fprintf(os.Stderr, "attachbench: holding %d attachments for %v (zlmesh pid %d)\n", len(atts), hold, h.PID())
		time.Sleep(hold)
	}
	detachRate, detachLat, err := parallel(ctx, bulk, clients, func(_ int, c *testbed.Container) error {
		return cl.Detach(ctx, c.ID())
	})
	if err != nil {
		return fmt.Errorf("throughput detach: %w", err)
	}
	fmt.Printf("\nthroughput: %d containers over %d services, %d concurrent clients\n", total, services, clients)
	fmt.Printf("attach: %8.0f attaches/s  (per attach p50 %.2f ms, p99 %.2f ms)\n", attachRate, ms(pct(attachLat, 50)), ms(pct(attachLat, 99)))
	fmt.Printf("detach: %8.0f detaches/s  (per detach p50 %.2f ms, p99 %.2f ms)\n", detachRate, ms(pct(detachLat, 50)), ms(pct(detachLat, 99)))
	fmt.Printf("zlmesh VmRSS: %.1f MiB idle; with %d attached %.1f MiB right after the attaches, %.1f MiB %v later\n",
		float64(rssIdle)/1024, len(atts), float64(rssFull)/1024, float64(rssSettled)/1024, settle)
	return nil
}

type result struct {
	name string
	d    []time.Duration
}

// parallel runs fn over items with k workers; it returns operations per
// second over the whole run and each operation's latency.
func parallel(ctx context.Context, items []*testbed.Container, k int, fn func(int, *testbed.Container) error) (float64, []time.Duration, error) {
	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(items) || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				err := fn(i, items[i])
				d := time.Since(t0)
				mu.Lock()
				lat = append(lat, d)
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("%s: %w", items[i].ID(), err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	return float64(len(items)) / el.Seconds(), lat, firstErr
}

// ipScript attaches cs the classic way, with `ip`, from one bash run inside
// the host; bash times each attach with $EPOCHREALTIME.
func ipScript(ctx context.Context, h *testbed.Host, cs []*testbed.Container) ([]time.Duration, error) {
	var b strings.Builder
	b.WriteString("set -e\nbr=zlb-ipbase\nip link add $br mtu 1420 type bridge\nip addr add 10.201.0.1/16 dev $br\nip link set $br up\n")
	for i, c := range cs {
		addr := fmt.Sprintf("10.201.%d.%d", (i+2)/256, (i+2)%256)
		veth := fmt.Sprintf("zlvip%d", i)
		fmt.Fprintf(&b, "s=$EPOCHREALTIME\n"+
			"ip link add %[1]s mtu 1420 type veth peer name eth0 mtu 1420 netns %[2]s\n"+
			"ip -n %[2]s addr add %[3]s/16 dev eth0\n"+
			"ip -n %[2]s link set lo up\n"+
			"ip -n %[2]s link set eth0 up\n"+
			"ip -n %[2]s route add default via 10.201.0.1\n"+
			"ip link set %[1]s master $br\n"+
			"ip link set %[1]s up\n"+
			"echo $s $EPOCHREALTIME\n", veth, c.NetnsName, addr)
	}
	return timedScript(ctx, h, "ip", b.String())
}

// cniScript attaches cs with the CNI bridge plugin and host-local IPAM,
// invoked directly (CNI_COMMAND=ADD, config on stdin) from one bash run
// inside the host.
func cniScript(ctx context.Context, h *testbed.Host, cs []*testbed.Container, cniDir string) ([]time.Duration, error) {
	if _, err := os.Stat(filepath.Join(cniDir, "bridge")); err != nil {
		return nil, fmt.Errorf("CNI bridge plugin: %w (install containernetworking-plugins)", err)
	}
	// h.Dir is /run/zlmesh inside the host: the config and host-local's
	// lease files stay in the testbed.
	dataDir := filepath.Join(h.Dir, "cni-ipam")
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"zlbench","type":"bridge","bridge":"zlb-cnibase","isGateway":true,"ipMasq":false,"mtu":1420,`+
		`"ipam":{"type":"host-local","ranges":[[{"subnet":"10.202.0.0/16","gateway":"10.202.0.1"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":%q}}`, dataDir)
	confPath := filepath.Join(h.Dir, "cni.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "set -e\nexport CNI_COMMAND=ADD CNI_IFNAME=eth0 CNI_PATH=%s\n", cniDir)
	for _, c := range cs {
		fmt.Fprintf(&b, "s=$EPOCHREALTIME\nCNI_CONTAINERID=%s CNI_NETNS=%s %s/bridge <%s >/dev/null\necho $s $EPOCHREALTIME\n",
			c.ID(), c.Netns, cniDir, confPath)
	}
	return timedScript(ctx, h, "cni", b.String())
}

// timedScript runs script with bash inside h and parses its "start end"
// lines (seconds with microseconds) into durations.
func timedScript(ctx context.Context, h *testbed.Host, name, script string) ([]time.Duration, error) {
	path := filepath.Join(h.Dir, name+".sh")
	if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
		return nil, err
	}
	out, err := h.Exec(ctx, "bash", path)
	if err != nil {
		return nil, fmt.Errorf("%s baseline: %w", name, err)
	}
	var ds []time.Duration
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("%s baseline: unexpected line %q", name, line)
		}
		s, err1 := strconv.ParseFloat(f[0], 64)
		e, err2 := strconv.ParseFloat(f[1], 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%s baseline: unexpected line %q", name, line)
		}
		ds = append(ds, time.Duration(math.Round((e-s)*1e9)))
	}
	return ds, nil
}

// vmRSS returns the resident set of pid in KiB.
func vmRSS(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func mean(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	var t time.Duration
	for _, x := range d {
		t += x
	}
	return t / time.Duration(len(d))
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

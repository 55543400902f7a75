// Command attachbench measures container attach in a testbed host, with the
// baselines in the same run (see bench/attach.sh, which builds and runs it):
//
//  1. the classic way, once, with nothing attached: N attaches by shelling
//     out to `ip` from one bash script inside the host (veth created into
//     the netns, address, lo and eth0 up, default route, master, up);
//  2. for each size S of -sizes (default 0, 500, 1000): fill host h1 up to
//     S containers attached by zlmesh (C concurrent clients over 4
//     services, through the control socket; the node claims blocks as it
//     grows) and host h2 to S containers attached by Debian's CNI bridge
//     plugin with host-local IPAM (4 networks, one bridge each, like the 4
//     services; h2's zlmesh idles), then N sequential attaches of each
//     method, each into a fresh container namespace made beforehand:
//     zlmesh through h1's control socket, from this process (the
//     machine's namespace) to zlmesh in the testbed host, with zlmesh's
//     CPU time (user+sys) per attach over them; CNI invoked directly with
//     the CNI environment from a bash script inside h2. The measured
//     attaches stay attached (the next size's fill counts them);
//  3. zlmesh's resident memory (VmRSS) idle with nothing attached, and
//     with the largest size attached (right after the fill and -settle
//     later), before that size's latency attaches;
//  4. every zlmesh container detached by the C clients at once.
//
// It prints p50/p99 per size and method, CNI / zlmesh at each size, and
// zlmesh at each size / zlmesh at the first. Everything lives in a testbed
// with a random prefix, removed on exit (also on ^C). No packet leaves its
// namespaces.
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
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
	n := flag.Int("n", 100, "sequential attaches per method and size for the latency runs")
	sizesFlag := flag.String("sizes", "0,500,1000", "comma-separated numbers of containers already attached when latency is measured")
	clients := flag.Int("clients", 8, "concurrent clients for the fills and the final detach")
	services := flag.Int("services", 4, "services (CNI networks) the fills spread their containers over")
	cniDir := flag.String("cni", "/usr/lib/cni", "directory of the CNI plugins (bridge, host-local)")
	stateDir := flag.String("state-dir", "", "zlmesh state dir (default: the testbed's, under /run/<prefix>)")
	skip := flag.String("skip", "", "comma-separated parts to skip: ip, cni, detach")
	logLevel := flag.String("log-level", "warn", "zlmesh's --log-level")
	keepLog := flag.String("keep-log", "", "copy zlmesh's log to this file before the testbed goes")
	hold := flag.Duration("hold", 0, "wait this long at the largest size (to inspect the daemon)")
	settle := flag.Duration("settle", 10*time.Second, "how long after the largest fill VmRSS is read a second time")
	prefix := flag.String("prefix", "", "testbed prefix (default: a random one)")
	noIPv6 := flag.Bool("no-ipv6-default", false, "set net.ipv6.conf.default.disable_ipv6=1 in h1 before any attach (diagnosis: new links get no IPv6 routes)")
	perf := flag.String("perf", "", "record zlmesh with `perf record -g` during its latency attaches at each size, to <this>.<size>")
	flag.Parse()
	if *binary == "" {
		fmt.Fprintln(os.Stderr, "attachbench: -binary is required")
		os.Exit(2)
	}
	var sizes []int
	for f := range strings.SplitSeq(*sizesFlag, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 0 || (len(sizes) > 0 && v < sizes[len(sizes)-1]) {
			fmt.Fprintf(os.Stderr, "attachbench: bad -sizes %q: want ascending numbers >= 0\n", *sizesFlag)
			os.Exit(2)
		}
		sizes = append(sizes, v)
	}
	cfg := config{binary: *binary, n: *n, sizes: sizes, clients: *clients, services: *services, cniDir: *cniDir,
		stateDir: *stateDir, skip: *skip, logLevel: *logLevel, keepLog: *keepLog, hold: *hold, settle: *settle, prefix: *prefix, perf: *perf, noIPv6: *noIPv6}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "attachbench:", err)
		os.Exit(1)
	}
}

type config struct {
	binary                                    string
	n                                         int
	sizes                                     []int
	clients, services                         int
	cniDir, stateDir, skip, logLevel, keepLog string
	hold, settle                              time.Duration
	prefix, perf                              string
	noIPv6                                    bool
}

// sizeResult is one size's latencies.
type sizeResult struct {
	size            int
	zl, cni         []time.Duration
	zlFill, cniFill float64 // attaches/s of the fill up to size (0: no fill)
	zlUser, zlSys   float64 // zlmesh's CPU time (user, sys) per latency attach, ms
	load            string
}

func run(cfg config) error {
	skipped := map[string]bool{}
	for _, s := range strings.Split(cfg.skip, ",") {
		skipped[strings.TrimSpace(s)] = true
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The default plan: blocks of /26 claimed as the containers come.
	args := []string{"--log-level", cfg.logLevel}
	if cfg.stateDir != "" {
		dir, err := os.MkdirTemp(cfg.stateDir, "zlt-attachbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		args = append(args, "--state-dir", dir)
	}
	prefix := cfg.prefix
	if prefix == "" {
		prefix = testbed.RandomPrefix()
	}
	upCtx, cancel := context.WithTimeout(ctx, time.Minute)
	tb, err := testbed.Up(upCtx, testbed.Options{
		Prefix: prefix,
		Hosts:  2,
		Binary: cfg.binary,
		Args:   func(*testbed.Host) []string { return args },
	})
	cancel()
	if err != nil {
		return err
	}
	defer tb.Close()
	// zlmesh's containers go to h1, the CNI plugin's to h2 (whose zlmesh
	// idles): each host's namespace holds exactly one method's links and
	// routes, so "at 1000" means 1000 on that host for both.
	h, h2 := tb.Host("h1"), tb.Host("h2")
	if cfg.keepLog != "" {
		defer func() {
			if b, err := os.ReadFile(h.LogFile); err == nil {
				os.WriteFile(cfg.keepLog, b, 0o644)
			}
		}()
	}
	readyCtx, cancel := context.WithTimeout(ctx, time.Minute)
	err = tb.WaitReady(readyCtx)
	cancel()
	if err != nil {
		return err
	}
	cl := h.Client()
	if cfg.noIPv6 {
		if out, err := h.Exec(ctx, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
			return fmt.Errorf("disable IPv6 on new links in h1: %w: %s", err, out)
		}
	}

	// Container namespaces are made before each timed part (their creation
	// is not measured).
	var made atomic.Int64
	mkOn := func(on *testbed.Host, count int) ([]*testbed.Container, error) {
		out := make([]*testbed.Container, count)
		for i := range out {
			c, err := tb.AddContainer(ctx, on, fmt.Sprintf("c%d", made.Add(1)))
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	}
	mk := func(count int) ([]*testbed.Container, error) { return mkOn(h, count) }
	rm := func(cs []*testbed.Container) error {
		for _, c := range cs {
			if err := c.Remove(); err != nil {
				return err
			}
		}
		return nil
	}
	rssIdle, _ := vmRSS(h.PID())
	fmt.Printf("attach latency in testbed %s: %d sequential attaches per method and size, a fresh netns each; sizes %v\n",
		tb.Prefix, cfg.n, cfg.sizes)

	// 1. ip from a script, with nothing attached.
	var ipLat []time.Duration
	if !skipped["ip"] {
		cs, err := mk(cfg.n)
		if err != nil {
			return err
		}
		if ipLat, err = ipScript(ctx, h, cs); err != nil {
			return err
		}
		if err := rm(cs); err != nil {
			return err
		}
	}

	// 2. Sizes.
	cni := &cniBase{h: h2, dir: cfg.cniDir, services: cfg.services}
	if !skipped["cni"] {
		if err := cni.setup(); err != nil {
			return err
		}
	}
	var zlAll []*testbed.Container
	cniCount := 0
	var results []sizeResult
	var rssFull, rssSettled, rssN int
	for k, size := range cfg.sizes {
		r := sizeResult{size: size}
		// zlmesh fill.
		if add := size - len(zlAll); add > 0 {
			cs, err := mk(add)
			if err != nil {
				return err
			}
			base := len(zlAll)
			rate, _, err := parallel(ctx, cs, cfg.clients, func(i int, c *testbed.Container) error {
				_, err := cl.Attach(ctx, api.AttachRequest{Service: fmt.Sprintf("svc%d", (base+i)%cfg.services), Container: c.ID(), Netns: c.Netns})
				return err
			})
			if err != nil {
				return fmt.Errorf("fill to %d: %w", size, err)
			}
			zlAll = append(zlAll, cs...)
			r.zlFill = rate
		}
		// CNI fill.
		if !skipped["cni"] {
			if add := size - cniCount; add > 0 {
				cs, err := mkOn(h2, add)
				if err != nil {
					return err
				}
				d, err := cni.add(ctx, cs, "fill", cniCount)
				if err != nil {
					return fmt.Errorf("CNI fill to %d: %w", size, err)
				}
				var tot time.Duration
				for _, x := range d {
					tot += x
				}
				r.cniFill = float64(len(d)) / tot.Seconds()
				cniCount += add
			}
		}
		if k == len(cfg.sizes)-1 {
			atts, err := cl.Attachments(ctx)
			if err != nil {
				return err
			}
			rssN = len(atts)
			if rssFull, err = vmRSS(h.PID()); err != nil {
				return err
			}
			time.Sleep(cfg.settle)
			if rssSettled, err = vmRSS(h.PID()); err != nil {
				return err
			}
			if cfg.hold > 0 {
				fmt.Fprintf(os.Stderr, "attachbench: holding %d attachments for %v (zlmesh pid %d)\n", len(atts), cfg.hold, h.PID())
				time.Sleep(cfg.hold)
			}
		}
		r.load = loadAvg()
		// Latency: alternate which method goes first.
		zlFirst := k%2 == 0
		for _, which := range []bool{zlFirst, !zlFirst} {
			if which {
				cs, err := mk(cfg.n)
				if err != nil {
					return err
				}
				var stopPerf func()
				if cfg.perf != "" {
					if stopPerf, err = startPerf(h.PID(), fmt.Sprintf("%s.%d", cfg.perf, size)); err != nil {
						return err
					}
				}
				u0, s0, _ := cpuTicks(h.PID())
				for _, c := range cs {
					t0 := time.Now()
					_, err := cl.Attach(ctx, api.AttachRequest{Service: "lat", Container: c.ID(), Netns: c.Netns})
					d := time.Since(t0)
					if err != nil {
						return fmt.Errorf("zlmesh attach %s at %d: %w", c.ID(), size, err)
					}
					r.zl = append(r.zl, d)
				}
				if u1, s1, err := cpuTicks(h.PID()); err == nil {
					r.zlUser = float64(u1-u0) * 1000 / clockTicks / float64(len(cs))
					r.zlSys = float64(s1-s0) * 1000 / clockTicks / float64(len(cs))
				}
				if stopPerf != nil {
					stopPerf()
				}
				zlAll = append(zlAll, cs...)
			} else if !skipped["cni"] {
				cs, err := mkOn(h2, cfg.n)
				if err != nil {
					return err
				}
				if r.cni, err = cni.add(ctx, cs, "lat", 0); err != nil {
					return fmt.Errorf("CNI at %d: %w", size, err)
				}
				cniCount += cfg.n
			}
		}
		results = append(results, r)
		fmt.Fprintf(os.Stderr, "attachbench: size %d done (load %s)\n", size, r.load)
	}

	// Report.
	fmt.Printf("%6s %-8s %9s %9s %9s %12s %16s %11s\n", "size", "method", "p50 ms", "p99 ms", "mean ms", "fill att/s", "CPU usr+sys ms/att", "load")
	for _, r := range results {
		fmt.Printf("%6d %-8s %9.2f %9.2f %9.2f %12.0f %7.2f + %6.2f %11s\n", r.size, "zlmesh", ms(pct(r.zl, 50)), ms(pct(r.zl, 99)), ms(mean(r.zl)), r.zlFill, r.zlUser, r.zlSys, r.load)
		if r.cni != nil {
			fmt.Printf("%6d %-8s %9.2f %9.2f %9.2f %12.0f\n", r.size, "CNI", ms(pct(r.cni, 50)), ms(pct(r.cni, 99)), ms(mean(r.cni)), r.cniFill)
		}
	}
	if ipLat != nil {
		fmt.Printf("%6d %-8s %9.2f %9.2f %9.2f\n", 0, "ip", ms(pct(ipLat, 50)), ms(pct(ipLat, 99)), ms(mean(ipLat)))
	}
	first := results[0]
	fmt.Println("ratios (target: zlmesh p50 <= 5 ms, CNI/zlmesh >= 3x, zlmesh at the largest / at the first <= 1.2x):")
	for _, r := range results {
		line := fmt.Sprintf("  at %4d: zlmesh p50 %.2f ms", r.size, ms(pct(r.zl, 50)))
		if r.cni != nil {
			line += fmt.Sprintf("; CNI/zlmesh p50 %.1fx, p99 %.1fx", ms(pct(r.cni, 50))/ms(pct(r.zl, 50)), ms(pct(r.cni, 99))/ms(pct(r.zl, 99)))
		}
		line += fmt.Sprintf("; zlmesh at %d / at %d: p50 %.2fx, p99 %.2fx", r.size, first.size,
			ms(pct(r.zl, 50))/ms(pct(first.zl, 50)), ms(pct(r.zl, 99))/ms(pct(first.zl, 99)))
		if r.cni != nil && first.cni != nil {
			line += fmt.Sprintf("; CNI at %d / at %d: p50 %.2fx", r.size, first.size, ms(pct(r.cni, 50))/ms(pct(first.cni, 50)))
		}
		fmt.Println(line)
	}
	if ipLat != nil {
		fmt.Printf("  ip/zlmesh at 0: p50 %.1fx\n", ms(pct(ipLat, 50))/ms(pct(first.zl, 50)))
	}
	fmt.Printf("zlmesh VmRSS: %.1f MiB idle with nothing attached; with %d attached %.1f MiB right after the fill, %.1f MiB %v later\n",
		float64(rssIdle)/1024, rssN, float64(rssFull)/1024, float64(rssSettled)/1024, cfg.settle)

	// 4. Detach everything.
	if !skipped["detach"] {
		rate, lat, err := parallel(ctx, zlAll, cfg.clients, func(_ int, c *testbed.Container) error {
			return cl.Detach(ctx, c.ID())
		})
		if err != nil {
			return fmt.Errorf("detach: %w", err)
		}
		fmt.Printf("detach of all %d by %d clients: %.0f detaches/s (per detach p50 %.2f ms, p99 %.2f ms)\n",
			len(zlAll), cfg.clients, rate, ms(pct(lat, 50)), ms(pct(lat, 99)))
	}
	return nil
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
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
	b.WriteString("set -e\nbr=ipb-base\nip link add $br mtu 1420 type bridge\nip addr add 10.211.0.1/16 dev $br\nip link set $br up\n")
	for i, c := range cs {
		addr := fmt.Sprintf("10.211.%d.%d", (i+2)/256, (i+2)%256)
		veth := fmt.Sprintf("ipbv%d", i)
		fmt.Fprintf(&b, "s=$EPOCHREALTIME\n"+
			"ip link add %[1]s mtu 1420 type veth peer name eth0 mtu 1420 netns %[2]s\n"+
			"ip -n %[2]s addr add %[3]s/16 dev eth0\n"+
			"ip -n %[2]s link set lo up\n"+
			"ip -n %[2]s link set eth0 up\n"+
			"ip -n %[2]s route add default via 10.211.0.1\n"+
			"ip link set %[1]s master $br\n"+
			"ip link set %[1]s up\n"+
			"echo $s $EPOCHREALTIME\n", veth, c.NetnsName, addr)
	}
	return timedScript(ctx, h, "ip", b.String())
}

// cniBase attaches containers with the CNI bridge plugin and host-local
// IPAM, invoked directly (CNI_COMMAND=ADD, config on stdin) from one bash
// run inside the host per batch. Like zlmesh's services it uses one network
// (bridge, /20 range) per fill service and one for the latency attaches:
// a Linux bridge takes at most 1024 ports.
type cniBase struct {
	h        *testbed.Host
	dir      string
	services int
}

// conf returns the path of network name's config (made by setup).
func (c *cniBase) conf(name string) string { return filepath.Join(c.h.Dir, "cni-"+name+".conf") }

func (c *cniBase) setup() error {
	if _, err := os.Stat(filepath.Join(c.dir, "bridge")); err != nil {
		return fmt.Errorf("CNI bridge plugin: %w (install containernetworking-plugins)", err)
	}
	// h.Dir is /run/zlmesh inside the host: the configs and host-local's
	// lease files stay in the testbed.
	dataDir := filepath.Join(c.h.Dir, "cni-ipam")
	names := []string{"lat"}
	for i := range c.services {
		names = append(names, fmt.Sprintf("fill%d", i))
	}
	for i, name := range names {
		conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"zlbench-%[1]s","type":"bridge","bridge":"cnb-%[1]s","isGateway":true,"ipMasq":false,"mtu":1420,`+
			`"ipam":{"type":"host-local","ranges":[[{"subnet":"10.212.%[2]d.0/20","gateway":"10.212.%[2]d.1"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":%[3]q}}`,
			name, 16*i, dataDir)
		if err := os.WriteFile(c.conf(name), []byte(conf), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// add attaches cs: to the "lat" network, or with kind "fill" spread over
// the fill networks (the i-th container, counting from base, to fill<i%services>).
func (c *cniBase) add(ctx context.Context, cs []*testbed.Container, kind string, base int) ([]time.Duration, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "set -e\nexport CNI_COMMAND=ADD CNI_IFNAME=eth0 CNI_PATH=%s\n", c.dir)
	for i, ct := range cs {
		conf := c.conf("lat")
		if kind == "fill" {
			conf = c.conf(fmt.Sprintf("fill%d", (base+i)%c.services))
		}
		fmt.Fprintf(&b, "s=$EPOCHREALTIME\nCNI_CONTAINERID=%s CNI_NETNS=%s %s/bridge <%s >/dev/null\necho $s $EPOCHREALTIME\n",
			ct.ID(), ct.Netns, c.dir, conf)
	}
	return timedScript(ctx, c.h, "cni-"+kind, b.String())
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

// clockTicks is the kernel's USER_HZ (the unit of /proc/<pid>/stat times).
const clockTicks = 100

// cpuTicks returns utime and stime of pid, in clock ticks.
func cpuTicks(pid int) (user, sys int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command (which may hold spaces) in parentheses.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b)[i+1:])
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	return u, st, nil
}

// startPerf runs `perf record -g -p pid -o out` until the returned func
// stops it (SIGINT, then waits for perf to write its file).
func startPerf(pid int, out string) (func(), error) {
	cmd := exec.Command("perf", "record", "-q", "-g", "-p", strconv.Itoa(pid), "-o", out)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf record: %w", err)
	}
	time.Sleep(300 * time.Millisecond) // perf attaches
	return func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}, nil
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

//go:build linux

// Command dockerbench measures `docker run --rm` on a zlmesh network
// against Docker's default bridge network, in the same run (see
// bench/docker.sh, which builds and runs it):
//
//  1. a one-host testbed whose zlmesh serves the Docker driver, and one
//     dockerd in the host's network namespace (nsenter --net) with its
//     default bridge (docker0, no iptables) and the zlmesh driver
//     registered under a name of its own;
//  2. a busybox image imported from busybox-static, a zlmesh network
//     "bench" and a user-defined bridge network "ubench", one warm-up run
//     on each network;
//  3. N rounds of `docker run --rm <image> true` on the zlmesh network, on
//     the default bridge and on the user-defined bridge, the order
//     reversed every other round, each run's wall time measured around
//     the client;
//  4. p50, mean and p90 of each, and the ratios zlmesh / default bridge
//     (the target) and zlmesh / user-defined bridge (which, like zlmesh's
//     network, gets Docker's embedded DNS resolver).
//
// -log-level and -keep-log run zlmesh with another log level and keep its
// log (with debug, each plugin request's time).
//
// Everything lives in the testbed and dockerd's own directory, removed on
// exit (also on ^C).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/zlmesh/zlmesh/testbed"
)

func main() {
	binary := flag.String("binary", "", "zlmesh binary (required)")
	n := flag.Int("n", 20, "runs per network")
	prefix := flag.String("prefix", "", "testbed prefix (default: a random one)")
	resident := flag.Bool("resident", false, "keep one container running on the zlmesh network meanwhile")
	logLevel := flag.String("log-level", "warn", "zlmesh's --log-level")
	keepLog := flag.String("keep-log", "", "copy zlmesh's log to this file at the end")
	flag.Parse()
	if *binary == "" {
		fmt.Fprintln(os.Stderr, "dockerbench: -binary is required")
		os.Exit(2)
	}
	if err := run(*binary, *n, *prefix, *resident, *logLevel, *keepLog); err != nil {
		fmt.Fprintln(os.Stderr, "dockerbench:", err)
		os.Exit(1)
	}
}

func run(binary string, n int, prefix string, resident bool, logLevel, keepLog string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if prefix == "" {
		prefix = testbed.RandomPrefix()
	}
	dir, err := os.MkdirTemp("", "zlt-dkb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	upCtx, cancel := context.WithTimeout(ctx, time.Minute)
	tb, err := testbed.Up(upCtx, testbed.Options{
		Prefix: prefix,
		Hosts:  1,
		Binary: binary,
		Args: func(h *testbed.Host) []string {
			return []string{"--log-level", logLevel, "--docker-plugin",
				"--docker-plugin-socket", filepath.Join(h.Dir, "docker-plugin.sock"),
				"--docker-socket", filepath.Join(dir, "d", "docker.sock")}
		},
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
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	err = h.WaitReady(rctx)
	cancel()
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	d, err := testbed.StartDockerd(dctx, h, testbed.DockerdOptions{
		Dir:           filepath.Join(dir, "d"),
		PluginSocket:  filepath.Join(h.Dir, "docker-plugin.sock"),
		PluginName:    "zlt-" + prefix + "-h1",
		DefaultBridge: true,
	})
	cancel()
	if err != nil {
		return err
	}
	defer d.Stop()
	tarball, err := testbed.BusyboxRootfs(filepath.Join(dir, "image"))
	if err != nil {
		return err
	}
	const image = "zlmesh-busybox:bench"
	if _, err := d.Run(ctx, "import", tarball, image); err != nil {
		return err
	}
	if _, err := d.Run(ctx, "network", "create", "-d", d.Plugin, "--ipam-driver", d.Plugin, "bench"); err != nil {
		return err
	}
	if resident {
		if _, err := d.Run(ctx, "run", "-d", "--name", "resident", "--network", "bench", image, "sleep", "3600"); err != nil {
			return err
		}
	}
	// A user-defined bridge network too: Docker gives containers of
	// user-defined networks (zlmesh's included) its embedded DNS
	// resolver, and the default bridge none; this column tells that
	// cost apart from the driver's.
	if _, err := d.Run(ctx, "network", "create", "ubench"); err != nil {
		return err
	}
	nets := []string{"bench", "bridge", "ubench"}
	once := func(network string) (time.Duration, error) {
		t0 := time.Now()
		_, err := d.Run(ctx, "run", "--rm", "--network", network, image, "true")
		return time.Since(t0), err
	}
	for _, nw := range nets { // warm-up
		if _, err := once(nw); err != nil {
			return err
		}
	}
	took := map[string][]time.Duration{}
	for i := 0; i < n; i++ {
		order := slices.Clone(nets)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		for _, nw := range order {
			t, err := once(nw)
			if err != nil {
				return err
			}
			took[nw] = append(took[nw], t)
		}
	}
	if resident {
		if _, err := d.Run(ctx, "rm", "-f", "resident"); err != nil {
			return err
		}
	}
	if out, _ := d.Run(ctx, "ps", "-aq"); out != "" {
		return fmt.Errorf("containers left after run --rm: %s", out)
	}
	atts, err := h.Client().Attachments(ctx)
	if err != nil {
		return err
	}
	if len(atts) != 0 {
		return fmt.Errorf("%d attachments left after run --rm", len(atts))
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("docker run --rm <busybox> true, %d runs per network, alternating, resident container %v (load %s)\n", n, resident, string(load[:14]))
	fmt.Printf("%-14s %8s %8s %8s\n", "network", "p50 ms", "mean ms", "p90 ms")
	stats := map[string][3]float64{}
	for _, nw := range nets {
		ts := slices.Clone(took[nw])
		slices.Sort(ts)
		var sum time.Duration
		for _, t := range ts {
			sum += t
		}
		s := [3]float64{ms(ts[len(ts)/2]), ms(sum / time.Duration(len(ts))), ms(ts[len(ts)*9/10])}
		stats[nw] = s
		name := map[string]string{"bench": "zlmesh", "bridge": "bridge", "ubench": "user bridge"}[nw]
		fmt.Printf("%-14s %8.1f %8.1f %8.1f\n", name, s[0], s[1], s[2])
	}
	z, b, u := stats["bench"], stats["bridge"], stats["ubench"]
	fmt.Printf("zlmesh / bridge: p50 %.2fx, mean %.2fx, p90 %.2fx (target <= 1.1x)\n", z[0]/b[0], z[1]/b[1], z[2]/b[2])
	fmt.Printf("zlmesh / user bridge: p50 %.2fx, mean %.2fx, p90 %.2fx\n", z[0]/u[0], z[1]/u[1], z[2]/u[2])
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

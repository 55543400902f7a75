// Command dnschurn detaches and attaches again the containers of one
// service on one testbed host at a steady rate, so that the mesh DNS is
// measured while its zone changes (bench/dns-mesh.sh with CHURN=1):
//
//	dnschurn -dir /run/<prefix> -host h1 -service churn -rate 50 -for 10s
//
// Each operation (a detach or an attach) is one control-socket call; every
// attach and detach changes the node's service records, which the mesh DNS
// folds into its zone. It prints the rate it achieved and the attach and
// detach latency p50 and p99, and leaves every container attached.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/zlmesh/zlmesh/testbed"
)

func main() {
	dir := flag.String("dir", "", "the testbed's directory (zlmesh testbed status shows it)")
	host := flag.String("host", "h1", "host whose containers churn")
	service := flag.String("service", "churn", "service of the containers that churn")
	rate := flag.Float64("rate", 50, "operations (attach or detach) per second")
	dur := flag.Duration("for", 10*time.Second, "how long to churn")
	flag.Parse()
	if err := run(*dir, *host, *service, *rate, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "dnschurn:", err)
		os.Exit(1)
	}
}

func run(dir, host, service string, rate float64, dur time.Duration) error {
	if dir == "" || rate <= 0 {
		return fmt.Errorf("want -dir and a positive -rate")
	}
	tb, err := testbed.Load(dir)
	if err != nil {
		return err
	}
	h := tb.Host(host)
	if h == nil {
		return fmt.Errorf("no host %s in %s", host, dir)
	}
	cl := h.Client()
	ctx := context.Background()
	list, err := cl.Attachments(ctx)
	if err != nil {
		return err
	}
	var cs []*testbed.Container
	for _, c := range tb.Containers() {
		for _, a := range list {
			if a.Container == c.ID() && a.Service == service {
				cs = append(cs, c)
			}
		}
	}
	if len(cs) == 0 {
		return fmt.Errorf("no container of service %s attached on %s", service, host)
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	end := time.Now().Add(dur)
	var ops int
	var attach, detach []time.Duration
	start := time.Now()
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		c := cs[(i/2)%len(cs)]
		t0 := time.Now()
		if i%2 == 0 {
			err = cl.Detach(ctx, c.ID())
			detach = append(detach, time.Since(t0))
		} else {
			_, err = c.Attach(ctx, service)
			attach = append(attach, time.Since(t0))
		}
		if err != nil {
			return fmt.Errorf("op %d on %s: %w", i, c, err)
		}
		ops++
	}
	// Leave every container attached.
	if ops%2 == 1 {
		c := cs[((ops-1)/2)%len(cs)]
		if _, err := c.Attach(ctx, service); err != nil {
			return err
		}
	}
	took := time.Since(start)
	fmt.Printf("churn: %d ops in %v (%.1f ops/s); attach p50 %v p99 %v; detach p50 %v p99 %v\n", ops, took.Round(time.Millisecond),
		float64(ops)/took.Seconds(), pct(attach, 50), pct(attach, 99), pct(detach, 50), pct(detach, 99))
	return nil
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	d = slices.Clone(d)
	slices.Sort(d)
	return d[min(len(d)-1, len(d)*p/100)].Round(10 * time.Microsecond)
}

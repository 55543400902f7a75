// Command natpub measures publishing through a node's control socket, for
// bench/nat-mesh.sh: one publish (and its unpublish) on a node with no
// other port, the time to publish N ports one after the other, and one
// publish with those N present. It removes every port it made. It is a
// bench helper, not part of zlmesh.
//
//	natpub -socket /run/zt/h1/zlmesh.sock -container zt-h1-web1 -n 1000
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/zlmesh/zlmesh/api"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "natpub:", err)
		os.Exit(1)
	}
}

func run() error {
	socket := flag.String("socket", api.DefaultSocket, "control socket of the node")
	container := flag.String("container", "", "container to publish to")
	n := flag.Int("n", 1000, "ports present for the second measurement")
	reps := flag.Int("reps", 100, "publishes measured at each size")
	base := flag.Int("base", 20000, "first host port used")
	flag.Parse()
	if *container == "" {
		return fmt.Errorf("-container is required")
	}
	c := api.NewClient(*socket)
	defer c.Close()
	ctx := context.Background()
	pub := func(port int) error {
		_, err := c.Publish(ctx, api.PublishRequest{Container: *container, Protocol: "tcp", HostPort: port, ContainerPort: 80})
		return err
	}
	unpub := func(port int) error {
		return c.Unpublish(ctx, api.UnpublishRequest{Protocol: "tcp", HostPort: port})
	}
	// one measures reps publishes of one more port, each followed by its
	// unpublish (timed apart).
	one := func() (p, u time.Duration, err error) {
		probe := *base + *n + 1
		for range *reps {
			t0 := time.Now()
			if err := pub(probe); err != nil {
				return 0, 0, err
			}
			t1 := time.Now()
			if err := unpub(probe); err != nil {
				return 0, 0, err
			}
			p += t1.Sub(t0)
			u += time.Since(t1)
		}
		return p / time.Duration(*reps), u / time.Duration(*reps), nil
	}
	p0, u0, err := one()
	if err != nil {
		return err
	}
	t0 := time.Now()
	made := 0
	defer func() {
		for i := range made {
			unpub(*base + i)
		}
	}()
	for i := range *n {
		if err := pub(*base + i); err != nil {
			return fmt.Errorf("port %d of %d: %w", i, *n, err)
		}
		made++
	}
	all := time.Since(t0)
	p1, u1, err := one()
	if err != nil {
		return err
	}
	fmt.Printf("publish %d ports one by one:        %8.1f ms (%.2f ms each)\n", *n, ms(all), ms(all)/float64(*n))
	fmt.Printf("one publish with 0 present:          %8.2f ms   unpublish %.2f ms\n", ms(p0), ms(u0))
	fmt.Printf("one publish with %d present:       %8.2f ms   unpublish %.2f ms\n", *n, ms(p1), ms(u1))
	fmt.Printf("ratio (%d / 0):                    %8.2f     unpublish %.2f\n", *n, float64(p1)/float64(p0), float64(u1)/float64(u0))
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

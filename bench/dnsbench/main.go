// Command dnsbench serves a mesh zone of generated names with dnsd on a UDP
// and TCP socket, for bench/dns.sh to measure with dnsperf.
//
//	dnsbench -listen 198.18.53.3:53 -names 100
//
// It serves svc0.zl … svc<N-1>.zl, each with one endpoint at
// 10.200.<i/250>.<i%250+1>, the same names bench/dns.sh gives dnsmasq, and
// runs until SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/zlmesh/zlmesh/dnsd"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dnsbench:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:5353", "UDP and TCP address to serve on")
	names := flag.Int("names", 100, "number of service names to serve")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *names < 1 || *names > 250*250 {
		return fmt.Errorf("-names %d: want 1 to %d", *names, 250*250)
	}

	s, err := dnsd.New(dnsd.Config{
		Cluster: netip.MustParsePrefix("10.200.0.0/16"),
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	var snap dnsd.Snapshot
	for i := range *names {
		snap.Endpoints = append(snap.Endpoints, dnsd.Endpoint{
			Service:   fmt.Sprintf("svc%d", i),
			Container: "c0",
			Node:      "bench",
			Addr:      netip.AddrFrom4([4]byte{10, 200, byte(i / 250), byte(i%250 + 1)}),
		})
	}
	if err := s.SetSnapshot(snap); err != nil {
		return err
	}

	pc, err := net.ListenPacket("udp", *listen)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		pc.Close()
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fmt.Printf("dnsbench: serving %d names on %s\n", *names, *listen)
	err = s.Serve(ctx, pc, l)
	st := s.Stats()
	fmt.Printf("dnsbench: stopped: queries %d local %d formerr %d dropped %d\n", st.Queries, st.Local, st.FormErr, st.Dropped)
	return err
}

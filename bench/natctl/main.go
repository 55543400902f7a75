// Command natctl applies a natd configuration in the current network
// namespace, for bench/nat.sh: run it under `ip netns exec`. It is a bench
// helper, not part of zlmesh.
//
//	natctl -subnet 10.200.3.0/24 -overlay 10.200.3.1 -publish tcp:8080:10.200.3.34:5201
//	natctl -purge
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/zlmesh/zlmesh/natd"
)

type ports []natd.Port

func (p *ports) String() string { return fmt.Sprint(*p) }

// Set parses proto:hostport:target, e.g. tcp:8080:10.200.3.34:80.
func (p *ports) Set(s string) error {
	f := strings.SplitN(s, ":", 3)
	if len(f) != 3 {
		return fmt.Errorf("publish %q: want proto:hostport:addr:port", s)
	}
	hp, err := strconv.ParseUint(f[1], 10, 16)
	if err != nil {
		return fmt.Errorf("publish %q: host port: %w", s, err)
	}
	t, err := netip.ParseAddrPort(f[2])
	if err != nil {
		return fmt.Errorf("publish %q: target: %w", s, err)
	}
	*p = append(*p, natd.Port{Proto: f[0], HostPort: uint16(hp), Target: t})
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "natctl:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg natd.Config
	var pub ports
	cluster := flag.String("cluster", "10.200.0.0/16", "cluster CIDR")
	subnet := flag.String("subnet", "10.200.3.0/24", "node subnet")
	overlay := flag.String("overlay", "10.200.3.1", "overlay address")
	flag.StringVar(&cfg.OverlayIf, "overlay-if", "zl0", "overlay interface")
	flag.BoolVar(&cfg.Masquerade, "masquerade", true, "egress masquerade")
	flag.Var(&pub, "publish", "proto:hostport:addr:port (repeatable)")
	purge := flag.Bool("purge", false, "delete the table and exit")
	flag.Parse()

	t, err := natd.New(natd.Options{})
	if err != nil {
		return err
	}
	defer t.Close()
	if *purge {
		return t.Purge()
	}
	if cfg.Cluster, err = netip.ParsePrefix(*cluster); err != nil {
		return err
	}
	local, err := netip.ParsePrefix(*subnet)
	if err != nil {
		return err
	}
	cfg.Local = []netip.Prefix{local}
	if cfg.Overlay, err = netip.ParseAddr(*overlay); err != nil {
		return err
	}
	cfg.Ports = pub
	if err := natd.ApplySysctls(); err != nil {
		return err
	}
	return t.Set(cfg)
}

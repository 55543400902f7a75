package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/zlmesh/zlmesh/api"
)

// clientFlags are the flags every control-socket subcommand has.
type clientFlags struct {
	socket  string
	timeout time.Duration
	out     output
}

func (c *clientFlags) register(fs *flag.FlagSet, listing bool) {
	def := api.DefaultSocket
	if env := os.Getenv("ZLMESH_SOCKET"); env != "" {
		def = env
	}
	fs.StringVar(&c.socket, "socket", def, "control socket of the node (env ZLMESH_SOCKET)")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "give up after this long")
	if listing {
		c.out.register(fs)
	}
}

// parse parses args and checks the flags; it returns a context bounded by
// --timeout and a client.
func (c *clientFlags) parse(fs *flag.FlagSet, args []string) (context.Context, context.CancelFunc, *api.Client, error) {
	if err := fs.Parse(args); err != nil {
		return nil, nil, nil, err
	}
	if err := noArgs(fs); err != nil {
		return nil, nil, nil, err
	}
	if c.out.format != "" {
		if err := c.out.check(); err != nil {
			return nil, nil, nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	return ctx, cancel, api.NewClient(c.socket), nil
}

func runStatus(args []string) error {
	var cf clientFlags
	fs := newFlagSet("status", "status [-o json] [--socket PATH]")
	cf.register(fs, true)
	ctx, cancel, cl, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	st, err := cl.Status(ctx)
	if err != nil {
		return err
	}
	return cf.out.print(st, func(w io.Writer) {
		row := func(k string, v any) { fmt.Fprintf(w, "%s:\t%v\n", k, v) }
		row("name", st.Name)
		row("public key", st.PublicKey)
		row("overlay ip", st.OverlayIP)
		if st.OverlayIP6 != "" {
			row("overlay ip6", st.OverlayIP6)
		}
		row("blocks", fmt.Sprintf("%s (first %s)", strings.Join(st.Blocks, ", "), st.FirstBlock))
		row("endpoint", st.Endpoint)
		row("gossip", st.GossipAddr)
		row("cluster cidr", st.ClusterCIDR)
		if st.ClusterCIDR6 != "" {
			row("cluster cidr6", st.ClusterCIDR6)
		}
		if u := st.Userspace; u != nil {
			row("mode", "userspace (gVisor netstack, no kernel interface)")
			row("socks5", orNone(u.SOCKS5))
			row("http proxy", orNone(u.HTTPProxy))
			row("forwards", orNone(strings.Join(u.Forwards, ", ")))
		} else {
			row("interface", fmt.Sprintf("%s (mtu %d)", st.Interface, st.MTU))
		}
		dns := st.MeshDNS
		if st.MeshDNS6 != "" {
			dns += ", " + st.MeshDNS6
		}
		row("mesh dns", fmt.Sprintf("%s (search %s)", dns, st.SearchDomain))
		members := fmt.Sprintf("%d alive, %d known peers", st.Members, st.KnownPeers)
		if st.Alone {
			members += " — ALONE: no remembered peer answers; re-joining"
		}
		row("members", members)
		row("attachments", st.Attachments)
		row("version", st.Version)
		row("up since", st.StartedAt.Local().Format(time.RFC3339))
	})
}

func runPeers(args []string) error {
	var cf clientFlags
	fs := newFlagSet("peers", "peers [-o json] [--socket PATH]")
	cf.register(fs, true)
	ctx, cancel, cl, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	peers, err := cl.Peers(ctx)
	if err != nil {
		return err
	}
	if peers == nil {
		peers = []api.Peer{}
	}
	return cf.out.print(peers, func(w io.Writer) {
		fmt.Fprintln(w, "NAME\tSTATE\tENDPOINT\tALLOWED IPS\tHANDSHAKE\tRX\tTX\tVERSION")
		for _, p := range peers {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", p.Name, p.State, p.Endpoint,
				strings.Join(p.AllowedIPs, ","), ago(p.LastHandshake), p.RxBytes, p.TxBytes, p.Version)
		}
	})
}

// ago renders a handshake time as "12s ago", or "never".
func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func runDown(args []string) error {
	var cf clientFlags
	fs := newFlagSet("down", "down [--purge] [--socket PATH]")
	cf.register(fs, false)
	purge := fs.Bool("purge", false, "also remove what a plain stop keeps (the NAT table with published ports)")
	ctx, cancel, cl, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	if err := cl.Down(ctx, api.DownRequest{Purge: *purge}); err != nil {
		return err
	}
	// Wait until the node has left and its socket stops answering.
	for ctx.Err() == nil {
		if _, err := cl.Status(ctx); err != nil {
			fmt.Println("left the cluster; node stopped")
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("node did not stop within %v", cf.timeout)
}

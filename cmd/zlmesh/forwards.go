package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/netproxy"
)

func runForward(args []string) error {
	var cf clientFlags
	fs := newFlagSet("forward", "forward PORT[/tcp|udp][:LOCALADDR:LOCALPORT]  (userspace mode)")
	cf.register(fs, true)
	ctx, cancel, cl, err := cf.parseArgs(fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	if fs.NArg() != 1 {
		return errors.New("want one PORT[/tcp|udp][:LOCALADDR:LOCALPORT] (see -h)")
	}
	f, err := netproxy.ParseForward(fs.Arg(0))
	if err != nil {
		return err
	}
	out, err := cl.AddForward(ctx, api.Forward{Protocol: f.Proto, Port: int(f.Port), Target: f.Target.String()})
	if err != nil {
		return err
	}
	return cf.out.print(out, func(w io.Writer) {
		fmt.Fprintf(w, "forwarding %d/%s -> %s\n", out.Port, out.Protocol, out.Target)
	})
}

func runUnforward(args []string) error {
	var cf clientFlags
	fs := newFlagSet("unforward", "unforward PORT[/tcp|udp]  (userspace mode)")
	cf.register(fs, false)
	ctx, cancel, cl, err := cf.parseArgs(fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	if fs.NArg() != 1 {
		return errors.New("want one PORT[/tcp|udp] (see -h)")
	}
	portStr, proto, _ := strings.Cut(fs.Arg(0), "/")
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("%q: want PORT[/tcp|udp]", fs.Arg(0))
	}
	return cl.RemoveForward(ctx, api.UnforwardRequest{Protocol: proto, Port: port})
}

func runForwards(args []string) error {
	var cf clientFlags
	fs := newFlagSet("forwards", "forwards [-o json]  (userspace mode)")
	cf.register(fs, true)
	ctx, cancel, cl, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	list, err := cl.Forwards(ctx)
	if err != nil {
		return err
	}
	return cf.out.print(list, func(w io.Writer) {
		fmt.Fprintln(w, "PORT\tPROTOCOL\tTARGET")
		for _, f := range list {
			fmt.Fprintf(w, "%d\t%s\t%s\n", f.Port, f.Protocol, f.Target)
		}
	})
}

// parseArgs is parse for subcommands that take positional arguments (the
// flags come first).
func (c *clientFlags) parseArgs(fs *flag.FlagSet, args []string) (context.Context, context.CancelFunc, *api.Client, error) {
	if err := fs.Parse(args); err != nil {
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

// orNone is s, or "none" when s is empty.
func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

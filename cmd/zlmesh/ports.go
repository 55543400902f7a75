package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/zlmesh/zlmesh/api"
)

// parsePortSpec parses HOST[:CONTAINER][/tcp|udp]; the container port
// defaults to the host port and the protocol to tcp.
func parsePortSpec(s string) (host, container int, proto string, err error) {
	spec, proto, _ := strings.Cut(s, "/")
	if proto == "" {
		proto = "tcp"
	}
	bad := fmt.Errorf("--port %q: want HOST[:CONTAINER][/tcp|udp], e.g. 8080:80/tcp", s)
	hs, cs, hasC := strings.Cut(spec, ":")
	if host, err = strconv.Atoi(hs); err != nil {
		return 0, 0, "", bad
	}
	container = host
	if hasC {
		if container, err = strconv.Atoi(cs); err != nil {
			return 0, 0, "", bad
		}
	}
	return host, container, proto, nil
}

func runPublish(args []string) error {
	var cf clientFlags
	var req api.PublishRequest
	fs := newFlagSet("publish", "publish (--container ID | --service S) --port HOST[:CONTAINER][/tcp|udp] [--host-address A]")
	cf.register(fs, true)
	fs.StringVar(&req.Container, "container", "", "container to forward to (anywhere in the cluster)")
	fs.StringVar(&req.Service, "service", "", "service to forward to (one of its containers)")
	port := fs.String("port", "", "HOST[:CONTAINER][/tcp|udp], e.g. 8080:80/tcp")
	fs.StringVar(&req.HostAddress, "host-address", "", "publish on this host address only (default: all)")
	ctx, cancel, cl, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	if *port == "" {
		return errors.New("--port is required (see -h)")
	}
	if req.HostPort, req.ContainerPort, req.Protocol, err = parsePortSpec(*port); err != nil {
		return err
	}
	pm, err := cl.Publish(ctx, req)
	if err != nil {
		return err
	}
	return cf.out.print(pm, func(w io.Writer) {
		fmt.Fprintf(w, "published %s:%d/%s -> %s (%s)\n", orAll(pm.HostAddress), pm.HostPort, pm.Protocol, pm.Target, pm.TargetName())
	})
}

func runUnpublish(args []string) error {
	var cf clientFlags
	var req api.UnpublishRequest
	fs := newFlagSet("unpublish", "unpublish --port HOST[/tcp|udp] [--host-address A]")
	cf.register(fs, false)
	port := fs.String("port", "", "HOST[/tcp|udp] as published")
	fs.StringVar(&req.HostAddress, "host-address", "", "the host address it was published on (default: all)")
	ctx, cancel, cl, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	if *port == "" {
		return errors.New("--port is required (see -h)")
	}
	if req.HostPort, _, req.Protocol, err = parsePortSpec(*port); err != nil {
		return err
	}
	return cl.Unpublish(ctx, req)
}

func runPorts(args []string) error {
	var cf clientFlags
	fs := newFlagSet("ports", "ports [-o json]")
	cf.register(fs, true)
	ctx, cancel, cl, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	list, err := cl.Ports(ctx)
	if err != nil {
		return err
	}
	return cf.out.print(list, func(w io.Writer) {
		fmt.Fprintln(w, "NODE\tHOST PORT\tPROTO\tHOST ADDRESS\tTARGET\tTO")
		for _, p := range list {
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\n", p.Node, p.HostPort, p.Protocol, orAll(p.HostAddress), p.Target, p.TargetName())
		}
	})
}

func orAll(a string) string {
	if a == "" {
		return "*"
	}
	return a
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/zlmesh/zlmesh/api"
)

func runAttach(args []string) error {
	var cf clientFlags
	var req api.AttachRequest
	fs := newFlagSet("attach", "attach --service S --container ID (--netns PATH | --pid N) [--ifname eth0] [-o json]\n   or, on Windows: attach --service S --container-id ID [--container NAME] [-o json]")
	cf.register(fs, true)
	fs.StringVar(&req.Service, "service", "", "service name (a DNS label: lowercase letters, digits, '-')")
	fs.StringVar(&req.Container, "container", "", "container id")
	fs.StringVar(&req.Netns, "netns", "", "path of the container's network namespace (e.g. /run/netns/web1)")
	fs.IntVar(&req.PID, "pid", 0, "a process in the container's network namespace")
	fs.StringVar(&req.Ifname, "ifname", "", "interface name inside the container (default eth0)")
	fs.StringVar(&req.ContainerID, "container-id", "", "Windows: the runtime's container id (instead of --netns/--pid); --container defaults to it")
	ctx, cancel, cl, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	if req.Service == "" || req.Container == "" && req.ContainerID == "" {
		return errors.New("--service and --container (or, on Windows, --container-id) are required (see -h)")
	}
	a, err := cl.Attach(ctx, req)
	if err != nil {
		return err
	}
	return cf.out.print(a, func(w io.Writer) {
		fmt.Fprintf(w, "container:\t%s\nservice:\t%s\naddress:\t%s/%d\ngateway:\t%s\n", a.Container, a.Service, a.Address, a.Prefix, a.Gateway)
		dns := a.DNS
		if a.Address6 != "" {
			fmt.Fprintf(w, "address6:\t%s/128\ngateway6:\t%s\n", a.Address6, a.Gateway6)
			dns += ", " + a.DNS6
		}
		fmt.Fprintf(w, "mtu:\t%d\ndns:\t%s (search %s)\nbridge:\t%s\n", a.MTU, dns, a.SearchDomain, a.Bridge)
	})
}

func runDetach(args []string) error {
	var cf clientFlags
	fs := newFlagSet("detach", "detach --container ID")
	cf.register(fs, false)
	container := fs.String("container", "", "container id")
	ctx, cancel, cl, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	if *container == "" {
		return errors.New("--container is required (see -h)")
	}
	return cl.Detach(ctx, *container)
}

func runAttachments(args []string) error {
	var cf clientFlags
	fs := newFlagSet("attachments", "attachments [-o json]")
	cf.register(fs, true)
	ctx, cancel, cl, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	list, err := cl.Attachments(ctx)
	if err != nil {
		return err
	}
	return cf.out.print(list, func(w io.Writer) {
		fmt.Fprintln(w, "CONTAINER\tSERVICE\tADDRESS\tGATEWAY\tBRIDGE\tNETNS\tORIGIN")
		for _, a := range list {
			ns := a.Netns
			if a.PID != 0 {
				ns = fmt.Sprintf("pid %d", a.PID)
			}
			fmt.Fprintf(w, "%s\t%s\t%s/%d\t%s\t%s\t%s\t%s\n", a.Container, a.Service, a.Address, a.Prefix, a.Gateway, a.Bridge, ns, originText(a.Origin))
		}
	})
}

func runServices(args []string) error {
	var cf clientFlags
	fs := newFlagSet("services", "services [-o json]")
	cf.register(fs, true)
	ctx, cancel, cl, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	list, err := cl.Services(ctx)
	if err != nil {
		return err
	}
	return cf.out.print(list, func(w io.Writer) {
		fmt.Fprintln(w, "SERVICE\tCONTAINER\tADDRESS\tNODE")
		for _, s := range list {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.Service, s.Container, s.Address, s.Node)
		}
	})
}

// runEvents follows the event stream until interrupted; -o json prints the
// events as the node sends them (newline-delimited JSON).
func runEvents(args []string) error {
	var cf clientFlags
	fs := newFlagSet("events", "events [-o json]")
	cf.register(fs, true)
	_, cancel, cl, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	cancel()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	enc := json.NewEncoder(os.Stdout)
	err = cl.Events(ctx, func(ev api.Event) error {
		if cf.out.format == "json" {
			return enc.Encode(ev)
		}
		fmt.Println(formatEvent(ev))
		return nil
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// formatEvent renders one event as a readable line.
func formatEvent(ev api.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %-16s", ev.Time.Local().Format("15:04:05.000"), ev.Type)
	add := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, " %s=%s", k, v)
		}
	}
	add("node", ev.Node)
	add("peer", ev.Peer)
	add("service", ev.Service)
	add("container", ev.Container)
	add("guest", ev.Guest)
	add("from", ev.OldAddress)
	add("address", ev.Address)
	add("winner", ev.Winner)
	add("loser", ev.Loser)
	add("old_block", ev.OldBlock)
	add("new_block", ev.NewBlock)
	if ev.Port != nil {
		add("port", fmt.Sprintf("%d/%s->%s", ev.Port.HostPort, ev.Port.Protocol, ev.Port.Target))
	}
	add("message", ev.Message)
	return b.String()
}

// originText shows who made an attachment: "-" for the API, "cni
// network=N id=ID ifname=I" for the CNI plugin (the runtime's container id
// cut to 12 characters, as runtimes show it).
func originText(o *api.Origin) string {
	if o == nil {
		return "-"
	}
	id := o.ContainerID
	if len(id) > 12 {
		id = id[:12]
	}
	parts := []string{o.Kind}
	for _, kv := range [][2]string{{"network", o.Network}, {"id", id}, {"ifname", o.Ifname}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+"="+kv[1])
		}
	}
	return strings.Join(parts, " ")
}

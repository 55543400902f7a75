package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/zlmesh/zlmesh/api"
)

// runGuest dispatches `zlmesh guest add|list|rm|config`.
func runGuest(args []string) error {
	sub := map[string]func([]string) error{
		"add":    runGuestAdd,
		"list":   runGuestList,
		"ls":     runGuestList,
		"rm":     runGuestRemove,
		"config": runGuestConfig,
	}
	if len(args) == 0 || sub[args[0]] == nil {
		fmt.Fprint(os.Stderr, `usage: zlmesh guest <command>

A guest is a plain WireGuard client (a VM, a laptop, a phone running no
zlmesh) that joins the mesh through this node, as NAME.guest.<zone>.

commands:
  add NAME [--public-key KEY] [--endpoint HOST:PORT] [-o json]
             add a guest and print its wg-quick config (with a private key
             made here, shown only this once, unless --public-key is given)
  list       list this node's guests (state, endpoint, handshake, bytes)
  config NAME  print a guest's current config (without its private key)
  rm NAME    remove a guest
`)
		if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			return flag.ErrHelp
		}
		return fmt.Errorf("unknown guest command %q", args[0])
	}
	return sub[args[0]](args[1:])
}

// guestName takes the guest name from the front of args (before the flags).
func guestName(cmd string, args []string) (string, []string, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return "", args, nil // the flag set prints its usage
		}
		return "", nil, fmt.Errorf("give the guest's name: zlmesh guest %s NAME (see -h)", cmd)
	}
	return args[0], args[1:], nil
}

func runGuestAdd(args []string) error {
	var cf clientFlags
	var req api.GuestRequest
	name, args, err := guestName("add", args)
	if err != nil {
		return err
	}
	req.Name = name
	fs := newFlagSet("guest add", "guest add NAME [--public-key KEY] [--endpoint HOST:PORT] [-o json]")
	cf.register(fs, true)
	fs.StringVar(&req.PublicKey, "public-key", "", "the guest's WireGuard public key (base64); without it a key pair is made and the private key shown only in this answer")
	fs.StringVar(&req.Endpoint, "endpoint", "", "the Endpoint the guest dials (HOST:PORT, for NAT or a DNS name); default this node's underlay address and WireGuard port")
	ctx, cancel, cl, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	g, err := cl.AddGuest(ctx, req)
	if err != nil {
		return err
	}
	if cf.out.format != "json" {
		// The config alone on stdout (`zlmesh guest add vm1 > vm1.conf`).
		fmt.Fprintf(os.Stderr, "guest %s added: %s (%s) through node %s\n", g.Name, g.Address, g.DNSName, g.Node)
		if g.PrivateKey != "" {
			fmt.Fprintln(os.Stderr, "its private key is in this config only: zlmesh keeps no copy")
		}
		fmt.Print(g.Config)
		return nil
	}
	return cf.out.print(g, nil)
}

func runGuestList(args []string) error {
	var cf clientFlags
	fs := newFlagSet("guest list", "guest list [-o json]")
	cf.register(fs, true)
	ctx, cancel, cl, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	list, err := cl.Guests(ctx)
	if err != nil {
		return err
	}
	if list == nil {
		list = []api.Guest{}
	}
	return cf.out.print(list, func(w io.Writer) {
		fmt.Fprintln(w, "NAME\tADDRESS\tSTATE\tENDPOINT\tHANDSHAKE\tRX\tTX\tNOTE")
		for _, g := range list {
			note := ""
			if g.Renumbered {
				note = "RENUMBERED from " + g.OldAddress + ": give it its new config (zlmesh guest config " + g.Name + ")"
			}
			ep := g.Endpoint
			if ep == "" {
				ep = "-"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", g.Name, g.Address, g.State, ep, ago(g.LastHandshake), g.RxBytes, g.TxBytes, note)
		}
	})
}

func runGuestConfig(args []string) error {
	var cf clientFlags
	name, args, err := guestName("config", args)
	if err != nil {
		return err
	}
	fs := newFlagSet("guest config", "guest config NAME")
	cf.register(fs, false)
	ctx, cancel, cl, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	list, err := cl.Guests(ctx)
	if err != nil {
		return err
	}
	for _, g := range list {
		if g.Name == name {
			fmt.Print(g.Config)
			return nil
		}
	}
	return &api.Error{Code: api.CodeNotFound, Message: "no guest " + name + " on this node"}
}

func runGuestRemove(args []string) error {
	var cf clientFlags
	name, args, err := guestName("rm", args)
	if err != nil {
		return err
	}
	fs := newFlagSet("guest rm", "guest rm NAME")
	cf.register(fs, false)
	ctx, cancel, cl, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	if name == "" {
		return errors.New("give the guest's name (see -h)")
	}
	return cl.RemoveGuest(ctx, name)
}

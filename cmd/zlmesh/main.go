// Command zlmesh is the WireGuard mesh node for container hosts: `zlmesh up`
// runs the node; the other subcommands talk to a running node through its
// control socket, or drive the network-namespace testbed.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "zlmesh:", err)
		os.Exit(1)
	}
}

// commands maps subcommand names to their entry points; each parses its own
// flags from args and returns an error for main to print.
var commands = map[string]func(args []string) error{
	"up":      runUp,
	"genkey":  runGenkey,
	"version": runVersion,
	"status":  runStatus,
	"peers":   runPeers,
	"down":    runDown,

	"attach":      runAttach,
	"detach":      runDetach,
	"attachments": runAttachments,
	"services":    runServices,
	"events":      runEvents,

	"publish":   runPublish,
	"unpublish": runUnpublish,
	"ports":     runPorts,

	"cni":       runCNI,
	"service":   runService,
	"forward":   runForward,
	"unforward": runUnforward,
	"forwards":  runForwards,
	"guest":     runGuest,

	"testbed": runTestbed,
}

func run(args []string) error {
	if len(args) == 0 {
		usage()
		return errors.New("missing subcommand")
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage()
		return flag.ErrHelp
	}
	cmd, ok := commands[args[0]]
	if !ok {
		usage()
		return fmt.Errorf("unknown subcommand %q", args[0])
	}
	return cmd(args[1:])
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: zlmesh <command> [flags]

commands:
  up         run the node (see zlmesh up -h)
  genkey     print a new cluster key
  version    print this binary's version, commit, Go and library versions (-o json)
  status     show this node
  peers      show the other nodes and their WireGuard state
  down       leave the cluster gracefully and stop the node
  attach     attach a container's network namespace to a service
  detach     detach a container
  attachments  list this node's attached containers
  services   list every service endpoint in the cluster
  events     follow the node's events (peers, attach, detach, renumber)
  publish    publish a host port to a container or service anywhere in the mesh
  unpublish  remove a published port
  ports      list every published port in the cluster
  cni        install or uninstall the CNI plugin and a network configuration
  service    Windows: install or uninstall the zlmesh service (service install [up flags] | uninstall)
  forward    userspace mode: make this node's overlay address answer on a port (PORT[/tcp|udp][:LOCALADDR:LOCALPORT])
  unforward  userspace mode: remove a forward (PORT[/tcp|udp])
  forwards   userspace mode: list this node's forwards
  guest      add, list or remove guests: plain WireGuard clients on the mesh
  testbed    run the network-namespace testbed (up, status, down, demo)

Client commands talk to the node's control socket (--socket, env
ZLMESH_SOCKET, default /run/zlmesh/zlmesh.sock; on Windows the named pipe
\\.\pipe\zlmesh) and accept -o json.
`)
}

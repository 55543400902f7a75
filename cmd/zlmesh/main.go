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
	"testbed": runTestbed,
}

func run(args []string) error {
	if len(args) == 0 {
		usage()
		return errors.New("missing subcommand")
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
  testbed    run the network-namespace testbed (up, status, down, demo)
`)
}

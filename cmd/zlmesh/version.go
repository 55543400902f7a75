package main

import (
	"fmt"
	"io"

	"github.com/zlmesh/zlmesh/internal/buildinfo"
)

// runVersion is `zlmesh version [-o json]`: this binary's version, commit,
// Go version and the wireguard-go and memberlist versions, from its build
// info. The version is the one a node started from this binary gossips
// (`zlmesh status`, and the VERSION column of `zlmesh peers` on the others).
func runVersion(args []string) error {
	var out output
	fs := newFlagSet("version", "version [-o json]")
	out.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if err := out.check(); err != nil {
		return err
	}
	i := buildinfo.Get()
	return out.print(i, func(w io.Writer) {
		fmt.Fprintf(w, "version\t%s\n", i.Version)
		fmt.Fprintf(w, "commit\t%s\n", i.Commit)
		fmt.Fprintf(w, "go\t%s\n", i.GoVersion)
		fmt.Fprintf(w, "wireguard-go\t%s\n", i.WireGuard)
		fmt.Fprintf(w, "memberlist\t%s\n", i.Memberlist)
	})
}

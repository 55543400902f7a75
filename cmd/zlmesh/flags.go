package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
)

// listFlag is a repeatable flag that also accepts comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// prefixFlag is an optional netip.Prefix.
type prefixFlag struct{ p *netip.Prefix }

func (f prefixFlag) String() string {
	if f.p == nil || !f.p.IsValid() {
		return ""
	}
	return f.p.String()
}
func (f prefixFlag) Set(v string) error {
	p, err := netip.ParsePrefix(v)
	if err != nil {
		return fmt.Errorf("not a CIDR prefix: %v", err)
	}
	if p != p.Masked() {
		return fmt.Errorf("%s has host bits set (did you mean %s?)", p, p.Masked())
	}
	*f.p = p
	return nil
}

// addrFlag is an optional netip.Addr.
type addrFlag struct{ a *netip.Addr }

func (f addrFlag) String() string {
	if f.a == nil || !f.a.IsValid() {
		return ""
	}
	return f.a.String()
}
func (f addrFlag) Set(v string) error {
	a, err := netip.ParseAddr(v)
	if err != nil {
		return fmt.Errorf("not an IP address: %v", err)
	}
	*f.a = a
	return nil
}

// newFlagSet makes a flag set for a subcommand whose parse errors come back
// as errors (main prints them once) and whose -h prints usage and the flags.
func newFlagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("zlmesh "+name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: zlmesh %s\n\nflags:\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

// applyConfigFile sets flags of fs from a config file with the same keys as
// the flags: one `key = value` per line (or `key value`), '#' starts a
// comment, a key may repeat for list flags. Keys in skip (set by a source
// that wins over the file) are checked but not applied.
func applyConfigFile(fs *flag.FlagSet, path string, skip map[string]bool) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	return parseConfig(fs, f, path, skip)
}

func parseConfig(fs *flag.FlagSet, r io.Reader, name string, skip map[string]bool) error {
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if i := strings.Index(text, "#"); i >= 0 {
			text = strings.TrimSpace(text[:i])
		}
		if text == "" {
			continue
		}
		key, value, ok := strings.Cut(text, "=")
		if !ok {
			key, value, ok = strings.Cut(text, " ")
		}
		key, value = strings.TrimSpace(key), strings.Trim(strings.TrimSpace(value), `"`)
		key = strings.TrimLeft(key, "-")
		if !ok || key == "" {
			return fmt.Errorf("%s:%d: want `key = value`", name, line)
		}
		if key == "config" {
			return fmt.Errorf("%s:%d: a config file cannot name another config file", name, line)
		}
		if fs.Lookup(key) == nil {
			return fmt.Errorf("%s:%d: unknown key %q (keys are the flag names of `zlmesh up -h`)", name, line, key)
		}
		if skip[key] {
			continue
		}
		if err := fs.Set(key, value); err != nil {
			return fmt.Errorf("%s:%d: %s: %v", name, line, key, err)
		}
	}
	return sc.Err()
}

// output is the -o flag of listing commands.
type output struct{ format string }

func (o *output) register(fs *flag.FlagSet) {
	fs.StringVar(&o.format, "o", "table", "output format: table or json")
}

func (o *output) check() error {
	if o.format != "table" && o.format != "json" {
		return fmt.Errorf("-o %q: want table or json", o.format)
	}
	return nil
}

// print writes v as indented JSON with -o json, else calls table with a
// tabwriter.
func (o *output) print(v any, table func(w io.Writer)) error {
	if o.format == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// noArgs rejects stray positional arguments.
func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see -h)", fs.Arg(0))
	}
	return nil
}

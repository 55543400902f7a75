package main

// `zlmesh testbed …`: drive the network-namespace testbed (package testbed)
// from a shell. Every subcommand finds its testbed by --prefix (default zt)
// and --dir (default /run/<prefix>); `up` leaves the testbed running for the
// others, `down` removes it, `demo` brings its own up and always removes it.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/testbed"
)

const testbedUsage = `usage: zlmesh testbed <command> [flags] [args]

Runs zlmesh hosts in Linux network namespaces on this machine: an underlay
switch (192.0.2.0/24), an outside network (198.51.100.0/24) with its own DNS
resolver, hosts h1…hN and containers. Needs root. Nothing it runs can reach
anything outside these namespaces.

commands:
  up         build a testbed and start zlmesh on every host
  status     show hosts (namespace, addresses, socket, daemon) and containers
  down       remove a testbed, also one whose creator died
  exec       run a command in a host, a container, "out" or "sw"
  start      start a host's zlmesh (stop, kill, restart likewise)
  cut        take a host off the underlay (restore puts it back)
  partition  drop traffic between host groups (heal ends it)
  demo       bring up 3 hosts, show the mesh and pings, tear it all down

Every command takes --prefix (default zt) and --dir (default /run/<prefix>).
Run 'zlmesh testbed <command> -h' for its flags.
`

// runTestbed implements `zlmesh testbed ...`.
func runTestbed(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, testbedUsage)
		return errors.New("testbed: missing command")
	}
	cmds := map[string]func([]string) error{
		"up":        tbUp,
		"status":    tbStatus,
		"down":      tbDown,
		"exec":      tbExec,
		"start":     func(a []string) error { return tbHostOp("start", a) },
		"stop":      func(a []string) error { return tbHostOp("stop", a) },
		"kill":      func(a []string) error { return tbHostOp("kill", a) },
		"restart":   func(a []string) error { return tbHostOp("restart", a) },
		"cut":       func(a []string) error { return tbHostOp("cut", a) },
		"restore":   func(a []string) error { return tbHostOp("restore", a) },
		"partition": tbPartition,
		"heal":      tbHeal,
		"demo":      tbDemo,
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(os.Stdout, testbedUsage)
		return flag.ErrHelp
	}
	fn, ok := cmds[args[0]]
	if !ok {
		fmt.Fprint(os.Stderr, testbedUsage)
		return fmt.Errorf("testbed: unknown command %q", args[0])
	}
	return fn(args[1:])
}

// tbFlags are the flags every subcommand shares.
type tbFlags struct {
	fs     *flag.FlagSet
	prefix string
	dir    string
	output string
}

// newTBFlags makes the flag set of a subcommand. usage is its first help
// line(s); withOutput adds -o.
func newTBFlags(name, usage string, withOutput bool) *tbFlags {
	f := &tbFlags{fs: flag.NewFlagSet("zlmesh testbed "+name, flag.ContinueOnError)}
	f.fs.StringVar(&f.prefix, "prefix", testbed.DefaultPrefix, "testbed `prefix`: names every namespace (<prefix>-h1, …)")
	f.fs.StringVar(&f.dir, "dir", "", "testbed `directory` (default /run/<prefix>)")
	if withOutput {
		f.fs.StringVar(&f.output, "o", "table", "output `format`: table or json")
	}
	f.fs.Usage = func() {
		fmt.Fprintf(f.fs.Output(), "%s\nflags:\n", usage)
		f.fs.PrintDefaults()
	}
	return f
}

// parse parses flags that may stand before, between or after the positional
// arguments, and returns the positional ones.
func (f *tbFlags) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := f.fs.Parse(args); err != nil {
			return nil, err
		}
		args = f.fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if f.output != "" && f.output != "table" && f.output != "json" {
		return nil, fmt.Errorf("-o %q: want table or json", f.output)
	}
	return pos, nil
}

func (f *tbFlags) dirOrDefault() string {
	if f.dir != "" {
		return f.dir
	}
	return "/run/" + f.prefix
}

// load opens the testbed the flags name.
func (f *tbFlags) load() (*testbed.Testbed, error) {
	tb, err := testbed.Load(f.dirOrDefault())
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no testbed %q in %s (start one with `zlmesh testbed up`)", f.prefix, f.dirOrDefault())
	}
	return tb, err
}

// stderrLogf prints the testbed's progress lines to stderr.
func stderrLogf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "  "+format+"\n", args...)
}

// signalContext is cancelled by SIGINT or SIGTERM. Until stop is called
// further signals are swallowed, so a second Ctrl-C cannot interrupt a
// teardown.
func signalContext() (context.Context, func()) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// containerSpec is one --containers entry: host:service:name.
type containerSpec struct{ host, service, name string }

func parseContainerSpecs(s string) ([]containerSpec, error) {
	var specs []containerSpec
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	for _, item := range strings.Split(s, ",") {
		parts := strings.Split(strings.TrimSpace(item), ":")
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			return nil, fmt.Errorf("--containers entry %q: want host:service:name, e.g. h1:web:web1", item)
		}
		specs = append(specs, containerSpec{parts[0], parts[1], parts[2]})
	}
	return specs, nil
}

func tbUp(args []string) error {
	f := newTBFlags("up", `usage: zlmesh testbed up [--hosts N] [--prefix zt] [--dir D] [--containers h1:web:web1,...] [--userspace h3] [--underlay ipv4|dual|ipv6]

Builds a testbed and starts zlmesh on every host (h1 is the seed the others
join), waits until every control socket answers, makes and attaches the
containers, and prints the status. The testbed keeps running after this
command exits; 'zlmesh testbed down' removes it. On any failure everything
is removed again.`, true)
	hosts := f.fs.Int("hosts", testbed.DefaultHosts, "number of hosts")
	underlay := underlayFlag(f.fs)
	binary := f.fs.String("binary", "", "zlmesh `binary` the hosts run (default: this one)")
	seed := f.fs.Int("seed", 1, "number of the host the others --join")
	extra := f.fs.String("args", "", "extra `arguments` for every host's zlmesh up, space-separated")
	containers := f.fs.String("containers", "", "containers to make and attach, comma-separated `host:service:name` entries")
	noStart := f.fs.Bool("no-start", false, "build the testbed but start no zlmesh (containers are made, not attached)")
	wait := f.fs.Duration("wait", 60*time.Second, "how long to wait for the hosts to be ready (0: do not wait)")
	var userspace listFlag
	f.fs.Var(&userspace, "userspace", "`hosts` (e.g. h3; repeat or comma-separate) whose zlmesh runs in userspace mode as user "+testbed.UserspaceUser+" with no capabilities and no /dev/net/tun")
	usExtra := f.fs.String("userspace-args", "", "extra `arguments` for the userspace hosts' zlmesh up only (e.g. --socks5-listen 127.0.0.1:1080 --forward 8080), space-separated")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("testbed up: unexpected arguments %q", pos)
	}
	specs, err := parseContainerSpecs(*containers)
	if err != nil {
		return err
	}
	if len(specs) > 0 && !*noStart && *wait == 0 {
		return errors.New("testbed up: --containers needs the hosts ready to attach them: drop --wait 0")
	}
	if *binary == "" {
		if *binary, err = os.Executable(); err != nil {
			return err
		}
	}
	extraArgs := strings.Fields(*extra)
	ctx, stop := signalContext()
	defer stop()
	tb, err := testbed.Up(ctx, testbed.Options{
		Hosts: *hosts, Prefix: f.prefix, Dir: f.dir, Binary: *binary, Seed: *seed, NoStart: *noStart,
		Args: func(h *testbed.Host) []string {
			if h.Userspace {
				return append(slices.Clone(extraArgs), strings.Fields(*usExtra)...)
			}
			return extraArgs
		},
		Logf: stderrLogf, Userspace: userspace, Underlay: *underlay,
	})
	if err != nil {
		return err
	}
	err = upRest(ctx, tb, specs, *noStart, *wait)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbed up failed; removing it again")
		if cerr := tb.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return err
	}
	return printStatus(tb, f.output)
}

// upRest waits for the hosts and makes the containers of `testbed up`.
func upRest(ctx context.Context, tb *testbed.Testbed, specs []containerSpec, noStart bool, wait time.Duration) error {
	if !noStart && wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		if err := tb.WaitReady(wctx); err != nil {
			return err
		}
	}
	for _, s := range specs {
		h := tb.Host(s.host)
		if h == nil {
			return fmt.Errorf("--containers %s:%s:%s: no host %s", s.host, s.service, s.name, s.host)
		}
		c, err := tb.AddContainer(ctx, h, s.name)
		if err != nil {
			return err
		}
		if noStart {
			continue
		}
		a, err := c.Attach(ctx, s.service)
		if err != nil {
			return fmt.Errorf("attach %s to %s: %w", c, s.service, err)
		}
		stderrLogf("container %s attached to %s: %s/%d", c, s.service, a.Address, a.Prefix)
	}
	return nil
}

// hostStatus and tbStatusView are what `testbed status` shows.
type hostStatus struct {
	Name     string `json:"name"`
	Netns    string `json:"netns"`
	Underlay string `json:"underlay"`
	// Underlay6 is the host's IPv6 underlay address when it has one beside
	// an IPv4 one (a dual-stack underlay).
	Underlay6 string `json:"underlay6,omitempty"`
	Overlay   string `json:"overlay"`
	Blocks    string `json:"blocks"`
	Socket    string `json:"socket"`
	Running   bool   `json:"running"`
	PID       int    `json:"pid,omitempty"`
	Cut       bool   `json:"cut,omitempty"`
	Log       string `json:"log"`
	// Mode is "kernel" or "userspace" (unprivileged, no TUN).
	Mode string `json:"mode"`
}

type containerStatus struct {
	Name  string `json:"name"`
	Host  string `json:"host"`
	Netns string `json:"netns"`
	// Address is the container's eth0 address as the host's zlmesh knows it
	// ("-" when not attached or the node does not answer).
	Address string `json:"address"`
	// Address6 is its IPv6 address ("" when it has none).
	Address6 string `json:"address6,omitempty"`
	Service  string `json:"service,omitempty"`
}

type tbStatusView struct {
	Prefix     string            `json:"prefix"`
	Dir        string            `json:"dir"`
	Hosts      []hostStatus      `json:"hosts"`
	Containers []containerStatus `json:"containers"`
	Partition  [][]string        `json:"partition,omitempty"`
}

// collectStatus asks every host's socket (in parallel, briefly) for its
// status and attachments.
func collectStatus(tb *testbed.Testbed) tbStatusView {
	v := tbStatusView{Prefix: tb.Prefix, Dir: tb.Dir, Partition: tb.Partitioned()}
	hosts := tb.Hosts()
	v.Hosts = make([]hostStatus, len(hosts))
	atts := make([][]api.Attachment, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		v.Hosts[i] = hostStatus{Name: h.Name, Netns: h.NetnsName, Underlay: h.Underlay.String(), Overlay: "-", Blocks: "-",
			Socket: h.Socket, Running: h.Running(), PID: h.PID(), Cut: tb.IsCut(h), Log: h.LogFile, Mode: "kernel"}
		if h.Underlay6.IsValid() && h.Underlay6 != h.Underlay {
			v.Hosts[i].Underlay6 = h.Underlay6.String()
		}
		if h.Userspace {
			v.Hosts[i].Mode = "userspace"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if st, err := h.Client().Status(ctx); err == nil {
				v.Hosts[i].Overlay, v.Hosts[i].Blocks = orDash(st.OverlayIP), orDash(strings.Join(st.Blocks, ","))
				atts[i], _ = h.Client().Attachments(ctx)
			}
		}()
	}
	wg.Wait()
	for _, c := range tb.Containers() {
		cs := containerStatus{Name: c.Name, Host: c.Host.Name, Netns: c.NetnsName, Address: "-"}
		for i, h := range hosts {
			if h != c.Host {
				continue
			}
			for _, a := range atts[i] {
				if a.Container == c.ID() {
					cs.Address, cs.Address6, cs.Service = a.Address, a.Address6, a.Service
				}
			}
		}
		v.Containers = append(v.Containers, cs)
	}
	return v
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printStatus(tb *testbed.Testbed, output string) error {
	v := collectStatus(tb)
	if output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	fmt.Printf("testbed %s (dir %s)\n", v.Prefix, v.Dir)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "HOST\tNETNS\tUNDERLAY\tOVERLAY\tBLOCKS\tMODE\tZLMESH\tSOCKET")
	for _, h := range v.Hosts {
		state := "stopped"
		if h.Running {
			state = fmt.Sprintf("running (pid %d)", h.PID)
		}
		if h.Cut {
			state += ", cut"
		}
		mode := h.Mode
		if mode == "userspace" {
			mode = "userspace (" + testbed.UserspaceUser + ", no caps)"
		}
		underlay := h.Underlay
		if h.Underlay6 != "" {
			underlay += "," + h.Underlay6
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, h.Netns, underlay, h.Overlay, h.Blocks, mode, state, h.Socket)
	}
	w.Flush()
	if len(v.Containers) > 0 {
		fmt.Println()
		fmt.Fprintln(w, "CONTAINER\tHOST\tNETNS\tSERVICE\tADDRESS")
		for _, c := range v.Containers {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", c.Name, c.Host, c.Netns, orDash(c.Service), c.Address)
		}
		w.Flush()
	}
	if len(v.Partition) > 0 {
		var g []string
		for _, p := range v.Partition {
			g = append(g, strings.Join(p, ","))
		}
		fmt.Printf("\npartitioned: %s\n", strings.Join(g, " | "))
	}
	return nil
}

func tbStatus(args []string) error {
	f := newTBFlags("status", `usage: zlmesh testbed status [-o json]

Shows every host (namespace, underlay address, overlay address and node
blocks as its zlmesh reports them, or "-" when its socket does not answer,
daemon state, socket) and every container.`, true)
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("testbed status: unexpected arguments %q", pos)
	}
	tb, err := f.load()
	if err != nil {
		return err
	}
	return printStatus(tb, f.output)
}

func tbDown(args []string) error {
	f := newTBFlags("down", `usage: zlmesh testbed down [--prefix zt] [--dir D]

Removes the testbed: stops every zlmesh (SIGTERM, then SIGKILL), kills every
process in its namespaces, deletes the namespaces, /etc/netns/<prefix>-* and
its directory. Works without a state file too (sweeping by prefix), and
succeeds when there is nothing to remove.`, false)
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("testbed down: unexpected arguments %q", pos)
	}
	if err := testbed.Destroy(f.prefix, f.dir); err != nil {
		return err
	}
	fmt.Printf("testbed %s removed\n", f.prefix)
	return nil
}

// target finds where `exec` runs: a host, a container, the outside or the
// switch namespace.
func execTarget(ctx context.Context, tb *testbed.Testbed, name string, argv []string) (*exec.Cmd, error) {
	switch name {
	case "out", "outside":
		return tb.OutsideCmd(ctx, argv...), nil
	case "sw", "switch":
		return tb.SwitchCmd(ctx, argv...), nil
	}
	if h := tb.Host(name); h != nil {
		return h.Cmd(ctx, argv...)
	}
	var found []*testbed.Container
	for _, c := range tb.Containers() {
		if c.String() == name || c.NetnsName == name || c.Name == name {
			found = append(found, c)
		}
	}
	switch len(found) {
	case 1:
		return found[0].Cmd(ctx, argv...), nil
	case 0:
		return nil, fmt.Errorf("no host or container %q in testbed %s", name, tb.Prefix)
	default:
		return nil, fmt.Errorf("container name %q is ambiguous: say host/name (e.g. %s)", name, found[0])
	}
}

func tbExec(args []string) error {
	f := newTBFlags("exec", `usage: zlmesh testbed exec <target> -- <command> [args...]

Runs a command in a host (h1: its network and private mount namespace), a
container (h1/web1, or web1 when unique), the outside network ("out") or the
switch ("sw"), with this terminal's input and output, and exits with its
exit code.`, false)
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	rest := f.fs.Args()
	if len(rest) == 0 {
		f.fs.Usage()
		return errors.New("testbed exec: missing target")
	}
	target, argv := rest[0], rest[1:]
	if len(argv) > 0 && argv[0] == "--" {
		argv = argv[1:]
	}
	if len(argv) == 0 {
		return errors.New("testbed exec: missing command after the target")
	}
	tb, err := f.load()
	if err != nil {
		return err
	}
	cmd, err := execTarget(context.Background(), tb, target, argv)
	if err != nil {
		return err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// The command gets Ctrl-C itself (same process group); we wait for it.
	signal.Ignore(os.Interrupt)
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() > 0 {
		os.Exit(ee.ExitCode())
	}
	return err
}

func tbHostOp(op string, args []string) error {
	descr := map[string]string{
		"start":   "Starts the host's zlmesh; arguments after -- are appended to its command.",
		"stop":    "Stops the host's zlmesh: SIGTERM, then SIGKILL after --timeout.",
		"kill":    "SIGKILLs the host's zlmesh (no cleanup, like a crash).",
		"restart": "Stops the host's zlmesh and starts it again with the same arguments.",
		"cut":     "Takes the host off the underlay (its switch port goes down).",
		"restore": "Puts a cut host back on the underlay.",
	}
	synopsis := "usage: zlmesh testbed " + op + " <host>"
	if op == "start" {
		synopsis += " [-- extra zlmesh up arguments]"
	}
	f := newTBFlags(op, synopsis+"\n\n"+descr[op], false)
	wait := time.Duration(0)
	if op == "start" || op == "restart" {
		f.fs.DurationVar(&wait, "wait", 0, "wait this long for the control socket to answer (0: do not wait)")
	}
	timeout := f.fs.Duration("timeout", testbed.DefaultStopTimeout, "for stop and restart: SIGKILL after this long")
	var extra []string
	if i := slices.Index(args, "--"); i >= 0 && op == "start" {
		args, extra = args[:i], args[i+1:]
	}
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		f.fs.Usage()
		return fmt.Errorf("testbed %s: want one host", op)
	}
	tb, err := f.load()
	if err != nil {
		return err
	}
	h := tb.Host(pos[0])
	if h == nil {
		return fmt.Errorf("testbed %s: no host %q", op, pos[0])
	}
	ctx, stop := signalContext()
	defer stop()
	switch op {
	case "start":
		err = h.Start(ctx, extra...)
	case "stop":
		if !h.Running() {
			return fmt.Errorf("%s is not running", h.Name)
		}
		sctx, cancel := context.WithTimeout(ctx, *timeout)
		err = h.Stop(sctx)
		cancel()
	case "kill":
		if !h.Running() {
			return fmt.Errorf("%s is not running", h.Name)
		}
		err = h.Kill()
	case "restart":
		sctx, cancel := context.WithTimeout(ctx, *timeout)
		err = h.Restart(sctx)
		cancel()
	case "cut":
		err = tb.Cut(h)
	case "restore":
		err = tb.Restore(h)
	}
	if err != nil {
		return err
	}
	if wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		if err := h.WaitReady(wctx); err != nil {
			return err
		}
	}
	past := map[string]string{"start": "started", "stop": "stopped", "kill": "killed", "restart": "restarted", "cut": "cut off", "restore": "restored"}
	fmt.Printf("%s %s\n", h.Name, past[op])
	return nil
}

// hostGroups parses partition arguments: one comma-separated group each.
func hostGroups(tb *testbed.Testbed, args []string) ([][]*testbed.Host, error) {
	var groups [][]*testbed.Host
	for _, a := range args {
		var g []*testbed.Host
		for _, n := range strings.Split(a, ",") {
			if n = strings.TrimSpace(n); n == "" {
				continue
			}
			h := tb.Host(n)
			if h == nil {
				return nil, fmt.Errorf("no host %q in testbed %s", n, tb.Prefix)
			}
			g = append(g, h)
		}
		groups = append(groups, g)
	}
	return groups, nil
}

func tbPartition(args []string) error {
	f := newTBFlags("partition", `usage: zlmesh testbed partition h1,h2 h3,h4,h5 ...

Drops all traffic between hosts of different groups (hosts in no group keep
talking to everyone). Replaces any earlier partition; 'heal' ends it.`, false)
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) < 2 {
		f.fs.Usage()
		return errors.New("testbed partition: want at least two groups")
	}
	tb, err := f.load()
	if err != nil {
		return err
	}
	groups, err := hostGroups(tb, pos)
	if err != nil {
		return err
	}
	if err := tb.Partition(groups...); err != nil {
		return err
	}
	fmt.Printf("partitioned: %s\n", strings.Join(pos, " | "))
	return nil
}

func tbHeal(args []string) error {
	f := newTBFlags("heal", "usage: zlmesh testbed heal\n\nEnds the partition.", false)
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("testbed heal: unexpected arguments %q", pos)
	}
	tb, err := f.load()
	if err != nil {
		return err
	}
	if err := tb.Heal(); err != nil {
		return err
	}
	fmt.Println("healed")
	return nil
}

// notImplemented reports whether err says the node does not offer an
// endpoint at all (an older or unfinished zlmesh), as opposed to a failure.
func notImplemented(err error) bool {
	var ae *api.Error
	return errors.As(err, &ae) && (ae.Code == api.CodeUnsupported ||
		ae.Status == http.StatusNotFound && ae.Code != api.CodeNotFound || ae.Status == http.StatusMethodNotAllowed)
}

func tbDemo(args []string) error {
	f := newTBFlags("demo", `usage: zlmesh testbed demo [--prefix ztdemo] [--underlay ipv4|dual|ipv6]

Brings up 3 hosts running this zlmesh, waits until the mesh is whole, prints
each host's peers and a ping matrix over the overlay, then attaches
containers (web on h1 and h2, db on h3), prints their ping matrices (IPv4
and, dual-stack, IPv6) and what
'dig +short web.zl' answers in db, and removes everything — also on Ctrl-C
and on failure (then the exit code is non-zero).`, false)
	f.prefix = "ztdemo"
	f.fs.Lookup("prefix").DefValue = "ztdemo"
	timeout := f.fs.Duration("timeout", 90*time.Second, "how long to wait for the mesh")
	underlay := underlayFlag(f.fs)
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("testbed demo: unexpected arguments %q", pos)
	}
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	fmt.Printf("== bringing up testbed %s: 3 hosts running %s\n", f.prefix, bin)
	tb, err := testbed.Up(ctx, testbed.Options{Hosts: 3, Prefix: f.prefix, Dir: f.dir, Binary: bin, Logf: stderrLogf, Underlay: *underlay})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("== tearing down")
		if cerr := tb.Close(); cerr != nil {
			fmt.Fprintln(os.Stderr, "teardown:", cerr)
		}
	}()
	wctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := tb.WaitReady(wctx); err != nil { // the error carries the log
		return err
	}
	err = demo(wctx, tb, os.Stdout)
	if ctx.Err() != nil {
		return errors.New("demo interrupted")
	}
	if err != nil {
		for _, h := range tb.Hosts() {
			if s := h.LogTail(15); s != "" {
				fmt.Fprintf(os.Stderr, "--- last lines of %s's log:\n%s\n", h.Name, s)
			}
		}
	}
	return err
}

// demo runs the demo's steps on a testbed whose hosts are ready; ctx bounds
// the whole run.
func demo(ctx context.Context, tb *testbed.Testbed, out io.Writer) error {
	hosts := tb.Hosts()
	fmt.Fprintln(out, "== waiting until every host sees the other two alive")
	status, err := waitWhole(ctx, hosts)
	if err != nil {
		return err
	}
	for _, h := range hosts {
		peers, err := h.Client().Peers(ctx)
		if err != nil {
			return fmt.Errorf("peers of %s: %w", h.Name, err)
		}
		slices.SortFunc(peers, func(a, b api.Peer) int { return strings.Compare(a.Name, b.Name) })
		fmt.Fprintf(out, "\n%s (%s, overlay %s, blocks %s) sees:\n", h.Name, h.Underlay, status[h].OverlayIP, strings.Join(status[h].Blocks, ","))
		w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "  PEER\tSTATE\tENDPOINT\tOVERLAY\tALLOWED IPS\tHANDSHAKE\tRX\tTX")
		for _, p := range peers {
			hs := "never"
			if !p.LastHandshake.IsZero() {
				hs = time.Since(p.LastHandshake).Round(time.Second).String() + " ago"
			}
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", p.Name, p.State, p.Endpoint, p.OverlayIP,
				strings.Join(p.AllowedIPs, ","), hs, p.RxBytes, p.TxBytes)
		}
		w.Flush()
	}

	fmt.Fprintln(out, "\n== ping over the overlay (host → host)")
	var names, addrs []string
	for _, h := range hosts {
		names, addrs = append(names, h.Name), append(addrs, status[h].OverlayIP)
	}
	pingers := make([]func(context.Context, string) (time.Duration, error), len(hosts))
	for i, h := range hosts {
		pingers[i] = h.PingRTT
	}
	failed := pingMatrix(ctx, out, names, pingers, names, addrs)

	fmt.Fprintln(out, "\n== containers: web on h1 and h2, db on h3")
	specs := []struct {
		host      *testbed.Host
		service   string
		container string
	}{{hosts[0], "web", "web1"}, {hosts[1], "web", "web2"}, {hosts[2], "db", "db1"}}
	var cs []*testbed.Container
	var cnames, caddrs, caddrs6 []string
	for _, s := range specs {
		c, err := tb.AddContainer(ctx, s.host, s.container)
		if err != nil {
			return err
		}
		a, err := c.Attach(ctx, s.service)
		if notImplemented(err) {
			fmt.Fprintf(out, "attach is not available in this zlmesh yet (%v): skipping the containers\n", err)
			return demoResult(out, failed)
		}
		if err != nil {
			return fmt.Errorf("attach %s to %s: %w", c, s.service, err)
		}
		six := ""
		if a.Address6 != "" {
			six = fmt.Sprintf(" and %s/128", a.Address6)
			caddrs6 = append(caddrs6, a.Address6)
		}
		fmt.Fprintf(out, "  %-5s on %s: %s/%d%s (service %s, gateway %s)\n", c.Name, s.host.Name, a.Address, a.Prefix, six, s.service, a.Gateway)
		cs = append(cs, c)
		cnames, caddrs = append(cnames, c.Name), append(caddrs, a.Address)
	}
	fmt.Fprintln(out, "\n== ping between containers")
	cpingers := make([]func(context.Context, string) (time.Duration, error), len(cs))
	for i, c := range cs {
		cpingers[i] = c.PingRTT
	}
	failed += pingMatrix(ctx, out, cnames, cpingers, cnames, caddrs)
	if len(caddrs6) == len(cs) {
		fmt.Fprintln(out, "\n== ping between containers over IPv6 (their addresses' twins)")
		failed += pingMatrix(ctx, out, cnames, cpingers, cnames, caddrs6)
	}

	fmt.Fprintln(out, "\n== dig +short web.zl in db1")
	// The service records of web1 and web2 travel by gossip: give them a
	// few seconds to reach h3.
	var got []byte
	var missing []string
	start := time.Now()
	for {
		got, err = cs[2].Exec(ctx, "dig", "+short", "+time=2", "+tries=2", "web.zl")
		if err != nil {
			return fmt.Errorf("dig web.zl in db1: %w", err)
		}
		missing = missing[:0]
		for _, a := range caddrs[:2] {
			if !strings.Contains(string(got), a) {
				missing = append(missing, a)
			}
		}
		if len(missing) == 0 || time.Since(start) > 10*time.Second {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	fmt.Fprint(out, indent(string(got)))
	fmt.Fprintf(out, "  (complete %v after the first query)\n", time.Since(start).Round(time.Millisecond))
	for _, a := range missing {
		fmt.Fprintf(out, "  missing %s\n", a)
		failed++
	}
	return demoResult(out, failed)
}

func demoResult(out io.Writer, failed int) error {
	if failed > 0 {
		return fmt.Errorf("demo: %d checks failed", failed)
	}
	fmt.Fprintln(out, "\n== all good")
	return nil
}

func indent(s string) string {
	if s == "" {
		return "  (no answer)\n"
	}
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}

// waitWhole waits until every host reports all hosts as members and every
// other host as an alive peer, and returns their statuses.
func waitWhole(ctx context.Context, hosts []*testbed.Host) (map[*testbed.Host]api.Status, error) {
	for {
		status := map[*testbed.Host]api.Status{}
		whole := true
		var why string
		for _, h := range hosts {
			st, err := h.Client().Status(ctx)
			if err != nil {
				whole, why = false, fmt.Sprintf("%s: %v", h.Name, err)
				break
			}
			status[h] = st
			peers, err := h.Client().Peers(ctx)
			alive := 0
			for _, p := range peers {
				if p.State == api.PeerAlive {
					alive++
				}
			}
			if err != nil || st.Members != len(hosts) || alive != len(hosts)-1 || st.OverlayIP == "" {
				whole, why = false, fmt.Sprintf("%s: %d members, %d alive peers (%v)", h.Name, st.Members, alive, err)
				break
			}
		}
		if whole {
			return status, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the mesh is not whole: %s: %w", why, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// pingMatrix prints a table of pings from every source to every address
// (three tries each; the first packet may wait for a handshake) and returns
// how many failed.
func pingMatrix(ctx context.Context, out io.Writer, from []string, ping []func(context.Context, string) (time.Duration, error), to, addrs []string) int {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(w, "  from \\ to\t")
	for i := range to {
		fmt.Fprintf(w, "%s %s\t", to[i], addrs[i])
	}
	fmt.Fprintln(w)
	failed := 0
	for i := range from {
		fmt.Fprintf(w, "  %s\t", from[i])
		for j := range to {
			var rtt time.Duration
			var err error
			for range 3 {
				if rtt, err = ping[i](ctx, addrs[j]); err == nil {
					break
				}
			}
			if err != nil {
				failed++
				fmt.Fprint(w, "FAIL\t")
				continue
			}
			fmt.Fprintf(w, "%.2f ms\t", float64(rtt.Microseconds())/1000)
		}
		fmt.Fprintln(w)
	}
	w.Flush()
	return failed
}

// underlayFlag defines --underlay on fs: the testbed's underlay family.
func underlayFlag(fs *flag.FlagSet) *testbed.UnderlayFamily {
	f := testbed.UnderlayIPv4
	fs.Func("underlay", "the underlay's address `family`: ipv4 (192.0.2.0/24), dual (and 2001:db8:0:2::/64) or ipv6 (2001:db8:0:2::/64 only; zlmesh gossips and handshakes over IPv6) (default ipv4)", func(s string) error {
		v, err := testbed.ParseUnderlayFamily(s)
		if err == nil {
			f = v
		}
		return err
	})
	return &f
}

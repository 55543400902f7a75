package testbed

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/zlmesh/zlmesh/internal/statefile"
)

// Testbed is a running lab: the switch, the outside namespace with its
// resolver, the hosts and their containers. Make one with Up (or New in a
// test), or Load one another process made; Close removes everything.
type Testbed struct {
	// Prefix names everything the testbed made; Dir holds its files; KeyFile
	// is the cluster key (32 random bytes, base64, mode 0600).
	Prefix  string
	Dir     string
	KeyFile string

	opts Options // defaults filled; Args/Command are nil after Load

	mu         sync.Mutex // guards everything below and the hostState/containerState records
	st         *state
	hosts      []*Host
	containers []*Container
	closed     bool
	seq        int // numbers background process logs
}

// switchNetns, outsideNetns and hostNetns name the namespaces.
func (tb *Testbed) switchNetns() string  { return tb.Prefix + "-sw" }
func (tb *Testbed) outsideNetns() string { return tb.Prefix + "-out" }

// Up builds a testbed: the switch and outside namespaces, the resolver, the
// hosts with their holders, and (unless NoStart) starts every host's daemon.
// It does not wait for the daemons to be ready (see WaitReady). On any error
// everything made so far is removed again before Up returns. Up needs root.
func Up(ctx context.Context, o Options) (tb *Testbed, err error) {
	if err := supported(); err != nil {
		return nil, err
	}
	o, err = o.withDefaults()
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("testbed %s: needs root for network namespaces", o.Prefix)
	}
	begin := time.Now()
	if names, err := listNetns(o.Prefix); err != nil {
		return nil, err
	} else if len(names) > 0 {
		return nil, fmt.Errorf("testbed %s: namespaces %s exist (remove them with `zlmesh testbed down --prefix %s`): %w",
			o.Prefix, strings.Join(names, ", "), o.Prefix, ErrExists)
	}
	created, err := makeDir(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("testbed %s: %w", o.Prefix, err)
	}
	tb = &Testbed{
		Prefix:  o.Prefix,
		Dir:     o.Dir,
		KeyFile: filepath.Join(o.Dir, "cluster.key"),
		opts:    o,
		st: &state{
			Version:      stateVersion,
			Prefix:       o.Prefix,
			Dir:          o.Dir,
			DirCreated:   created,
			Binary:       o.Binary,
			Seed:         o.Seed,
			MeshDNS:      o.MeshDNS,
			SearchDomain: o.SearchDomain,
			Owner:        self(),
			Ephemeral:    o.ephemeral,
		},
	}
	defer func() {
		if err != nil {
			if cerr := tb.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("clean up after failed up: %w", cerr))
			}
			tb = nil
		}
	}()
	tb.mu.Lock()
	err = tb.buildLocked(ctx)
	tb.mu.Unlock()
	if err != nil {
		return tb, err
	}
	if !o.NoStart {
		for _, h := range tb.Hosts() {
			if err := h.Start(ctx); err != nil {
				return tb, err
			}
		}
	}
	o.Logf("testbed %s: up with %d hosts in %s (dir %s)", tb.Prefix, o.Hosts, time.Since(begin).Round(time.Millisecond), tb.Dir)
	return tb, nil
}

// buildLocked makes the switch, the outside namespace and the hosts of a new
// testbed, recording each piece before the next can fail. tb.mu is held.
func (tb *Testbed) buildLocked(ctx context.Context) error {
	if err := tb.saveLocked(); err != nil {
		return err
	}
	if err := writeKey(tb.KeyFile); err != nil {
		return err
	}
	if err := makeSharedDir(tb.mirrorDir()); err != nil {
		return fmt.Errorf("testbed %s: %w", tb.Prefix, err)
	}
	for _, ns := range []string{tb.switchNetns(), tb.outsideNetns()} {
		if err := tb.addNetnsLocked(ns); err != nil {
			return err
		}
	}
	if err := buildSwitch(tb.switchNetns(), tb.outsideNetns()); err != nil {
		return fmt.Errorf("testbed %s: %w", tb.Prefix, err)
	}
	if err := tb.startResolverLocked(ctx); err != nil {
		return err
	}
	for i := 1; i <= tb.opts.Hosts; i++ {
		if _, err := tb.addHostLocked(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// self describes this process, as the owner of the testbeds it makes.
func self() *procState {
	start, _, err := procStartTime(os.Getpid())
	if err != nil {
		return nil
	}
	return &procState{PID: os.Getpid(), Start: start, Argv: os.Args}
}

// sweepStale removes the testbeds New made (in the default /run/<prefix>
// directories) whose owning process is gone, and returns their prefixes.
func sweepStale() ([]string, error) {
	files, err := filepath.Glob("/run/*/" + stateFile)
	if err != nil {
		return nil, err
	}
	var swept []string
	var errs []error
	for _, f := range files {
		st, err := readState(filepath.Dir(f))
		if err != nil || !st.Ephemeral || st.Owner == nil || alive(st.Owner) {
			continue
		}
		if err := Destroy(st.Prefix, st.Dir); err != nil {
			errs = append(errs, err)
			continue
		}
		swept = append(swept, st.Prefix)
	}
	return swept, errors.Join(errs...)
}

// makeDir makes dir, or accepts it if it exists and is empty; created says
// whether Up made it (and so removes it whole on Close).
func makeDir(dir string) (created bool, err error) {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return false, fmt.Errorf("make dir: %w", err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("dir %s: %w", dir, err)
	case slices.ContainsFunc(ents, func(e os.DirEntry) bool { return e.Name() == stateFile }):
		return false, fmt.Errorf("dir %s holds a testbed (%s): %w", dir, stateFile, ErrExists)
	case len(ents) > 0:
		return false, fmt.Errorf("dir %s is not empty", dir)
	}
	return false, nil
}

// writeKey writes a fresh cluster key: 32 random bytes, base64, mode 0600.
func writeKey(path string) error {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return fmt.Errorf("cluster key: %w", err)
	}
	return statefile.WriteAtomic(path, []byte(base64.StdEncoding.EncodeToString(k[:])), 0o600)
}

// saveLocked writes the state file. tb.mu is held.
func (tb *Testbed) saveLocked() error {
	return writeState(tb.st)
}

// mirrorDir is where the testbed's namespaces are mirrored for the hosts
// (inside a host it is /run/netns; see makeSharedDir).
func (tb *Testbed) mirrorDir() string { return filepath.Join(tb.Dir, "netns") }

// addNetnsLocked creates a namespace, records it before anything else can
// fail, and mirrors it into the hosts. tb.mu is held.
func (tb *Testbed) addNetnsLocked(name string) error {
	if err := createNetns(name); err != nil {
		return err
	}
	tb.st.Namespaces = append(tb.st.Namespaces, name)
	if err := tb.saveLocked(); err != nil {
		return err
	}
	return mirrorNetns(name, tb.mirrorDir())
}

// resolverArgv is the outside resolver: answers only its fixed names and
// NXDOMAIN for the rest (--local=/#/), never reads resolv.conf, never
// forwards, listens on ResolverAddr only.
func resolverArgv() []string {
	argv := []string{"dnsmasq",
		"--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--local=/#/",
		"--listen-address=" + ResolverAddr.String(), "--bind-interfaces",
		"--pid-file=", "--user=root", "--log-facility=-",
	}
	names := make([]string, 0, len(OutsideNames))
	for n := range OutsideNames {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		argv = append(argv, "--host-record="+n+","+OutsideNames[n].String())
	}
	aliases := make([]string, 0, len(OutsideCNAMEs))
	for n := range OutsideCNAMEs {
		aliases = append(aliases, n)
	}
	sort.Strings(aliases)
	for _, n := range aliases {
		argv = append(argv, "--cname="+n+","+OutsideCNAMEs[n])
	}
	return argv
}

// startResolverLocked starts dnsmasq in the outside namespace and waits until
// it answers. tb.mu is held.
func (tb *Testbed) startResolverLocked(ctx context.Context) error {
	logPath := filepath.Join(tb.Dir, "resolver.log")
	log, err := openLog(logPath)
	if err != nil {
		return fmt.Errorf("testbed %s: resolver: %w", tb.Prefix, err)
	}
	defer log.Close()
	cmd := command(nil, resolverArgv())
	cmd.Stdout, cmd.Stderr = log, log
	p, err := spawn(cmd, tb.outsideNetns(), tb.outsideNetns())
	if err != nil {
		return fmt.Errorf("testbed %s: resolver: %w", tb.Prefix, err)
	}
	p.Log = logPath
	tb.st.Resolver = p
	if err := tb.saveLocked(); err != nil {
		return err
	}
	// Ask it from inside the outside namespace until it answers.
	probe := []string{"dig", "+time=1", "+tries=1", "+short", "@" + ResolverAddr.String(), "outside.test"}
	for {
		out, _ := command(ctx, netnsArgv(tb.outsideNetns(), probe)).Output()
		if strings.TrimSpace(string(out)) == OutsideAddr.String() {
			return nil
		}
		if !alive(p) {
			return fmt.Errorf("testbed %s: resolver exited: %s", tb.Prefix, tail(logPath, 10))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testbed %s: resolver does not answer: %w", tb.Prefix, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Mount points bound over inside every host (made on the machine if missing).
const (
	wireguardRun = "/var/run/wireguard"
	zlmeshRun    = "/run/zlmesh"
	zlmeshLib    = "/var/lib/zlmesh"
	resolvConf   = "/etc/resolv.conf"
)

// holderScript runs as `sh -c holderScript zltb-holder <wireguard> <hostdir>
// <state> <resolv.conf> <mirror>` in the host's fresh (slave) mount
// namespace: it makes the host's private view, says ready, and becomes the
// sleeping holder. Its /run/netns is the testbed's mirror, a slave of a
// shared mount, so namespaces made later appear in it.
const holderScript = `set -e
mount --bind "$1" ` + wireguardRun + `
mount --bind "$2" ` + zlmeshRun + `
mount --bind "$3" ` + zlmeshLib + `
mount --bind "$5" /run/netns
if [ -e ` + resolvConf + ` ]; then mount --bind "$4" ` + resolvConf + `; fi
echo ready
exec sleep infinity >/dev/null`

// startHolderLocked starts h's holder and waits until its mounts are made.
// tb.mu is held.
func (tb *Testbed) startHolderLocked(ctx context.Context, h *Host) (*procState, error) {
	for _, d := range []string{wireguardRun, zlmeshRun, zlmeshLib, "/run/netns"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("mount point %s: %w", d, err)
		}
	}
	logPath := filepath.Join(h.Dir, "holder.log")
	log, err := openLog(logPath)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := command(nil, []string{"unshare", "--mount", "--propagation", "slave",
		"sh", "-c", holderScript, "zltb-holder", h.WireGuardDir, h.Dir, h.StateDir, h.ResolvConf, tb.mirrorDir()})
	cmd.Stdout, cmd.Stderr = w, log
	// The holder is forked from a thread inside the host's network
	// namespace, so it (and its mount namespace) lives there.
	p, err := spawn(cmd, h.NetnsName, h.NetnsName)
	w.Close()
	if err != nil {
		return nil, err
	}
	p.Log = logPath
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(r).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if s == "ready\n" {
			return p, nil
		}
		killProc(p)
		return nil, fmt.Errorf("holder of %s failed: %s", h.Name, tail(logPath, 10))
	case <-ctx.Done():
		killProc(p)
		r.Close()
		return nil, fmt.Errorf("holder of %s: %w", h.Name, ctx.Err())
	}
}

// newHost builds the Host value for number i from its record.
func (tb *Testbed) newHost(hs *hostState) *Host {
	dir := filepath.Join(tb.Dir, hs.Name)
	return &Host{
		Name:         hs.Name,
		Index:        hs.Index,
		NetnsName:    hs.Netns,
		Netns:        netnsPath(hs.Netns),
		Underlay:     hs.Underlay,
		Dir:          dir,
		StateDir:     filepath.Join(dir, "state"),
		Socket:       filepath.Join(dir, "zlmesh.sock"),
		LogFile:      filepath.Join(dir, "zlmesh.log"),
		WireGuardDir: filepath.Join(dir, "wireguard"),
		ResolvConf:   filepath.Join(dir, "resolv.conf"),
		tb:           tb,
		st:           hs,
	}
}

// addHostLocked makes host number i: its directories, namespace, switch
// port and holder. tb.mu is held.
func (tb *Testbed) addHostLocked(ctx context.Context, i int) (*Host, error) {
	if i > MaxHosts {
		return nil, fmt.Errorf("testbed %s: host h%d: at most %d hosts", tb.Prefix, i, MaxHosts)
	}
	hs := &hostState{Name: hostName(i), Index: i, Netns: tb.Prefix + "-" + hostName(i), Underlay: hostAddr(i)}
	h := tb.newHost(hs)
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{h.Dir, 0o755}, {h.StateDir, 0o700}, {h.WireGuardDir, 0o755}} {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("testbed %s: host %s: %w", tb.Prefix, h.Name, err)
		}
	}
	resolv := fmt.Sprintf("# testbed %s: the outside resolver\nnameserver %s\n", tb.Prefix, ResolverAddr)
	if err := os.WriteFile(h.ResolvConf, []byte(resolv), 0o644); err != nil {
		return nil, fmt.Errorf("testbed %s: host %s: %w", tb.Prefix, h.Name, err)
	}
	if err := tb.addNetnsLocked(hs.Netns); err != nil {
		return nil, fmt.Errorf("testbed %s: host %s: %w", tb.Prefix, h.Name, err)
	}
	tb.st.Hosts = append(tb.st.Hosts, hs)
	tb.hosts = append(tb.hosts, h)
	if err := plugHost(tb.switchNetns(), h.Name, hs.Netns, hs.Underlay); err != nil {
		return nil, fmt.Errorf("testbed %s: host %s: %w", tb.Prefix, h.Name, err)
	}
	holder, err := tb.startHolderLocked(ctx, h)
	if err != nil {
		return nil, fmt.Errorf("testbed %s: host %s: %w", tb.Prefix, h.Name, err)
	}
	hs.Holder = holder
	hs.Command = tb.commandFor(h)
	if err := tb.saveLocked(); err != nil {
		return nil, err
	}
	tb.opts.Logf("testbed %s: host %s at %s (netns %s)", tb.Prefix, h.Name, hs.Underlay, hs.Netns)
	return h, nil
}

// commandFor returns the daemon command of h: Options.Command, or the zlmesh
// contract (see the package documentation) plus Options.Args; nil when there
// is no binary.
func (tb *Testbed) commandFor(h *Host) []string {
	if tb.opts.Command != nil {
		return tb.opts.Command(h)
	}
	if tb.st.Binary == "" {
		return nil
	}
	argv := []string{tb.st.Binary, "up",
		"--name", h.Name,
		"--state-dir", h.StateDir,
		"--socket", h.Socket,
		"--advertise-addr", h.Underlay.String(),
		"--cluster-key-file", tb.KeyFile,
		"--dns-upstream", DNSUpstream,
	}
	if h.Index != tb.st.Seed {
		argv = append(argv, "--join", netip.AddrPortFrom(hostAddr(tb.st.Seed), GossipPort).String())
	}
	if tb.opts.Args != nil {
		argv = append(argv, tb.opts.Args(h)...)
	}
	return argv
}

// Load opens the testbed whose state file is in dir, made by this or another
// process, so it can be driven and closed. Options.Args and Command are not
// saved: hosts added to a loaded testbed run the default zlmesh command.
func Load(dir string) (*Testbed, error) {
	if err := supported(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	st, err := readState(dir)
	if err != nil {
		return nil, err
	}
	o, err := Options{Prefix: st.Prefix, Dir: st.Dir, Binary: st.Binary, Seed: st.Seed, Hosts: 1,
		MeshDNS: st.MeshDNS, SearchDomain: st.SearchDomain, NoStart: true}.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("testbed state in %s: %w", dir, err)
	}
	o.Hosts = len(st.Hosts)
	tb := &Testbed{Prefix: st.Prefix, Dir: st.Dir, KeyFile: filepath.Join(st.Dir, "cluster.key"), opts: o, st: st}
	for _, hs := range st.Hosts {
		tb.hosts = append(tb.hosts, tb.newHost(hs))
	}
	for _, cs := range st.Containers {
		h := tb.hostLocked(cs.Host)
		if h == nil {
			return nil, fmt.Errorf("testbed state in %s: container %s on unknown host %s", dir, cs.Name, cs.Host)
		}
		tb.containers = append(tb.containers, tb.newContainer(h, cs))
	}
	return tb, nil
}

// SetLogf sets the function that receives the testbed's log lines (nil: none).
func (tb *Testbed) SetLogf(logf func(format string, args ...any)) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	tb.mu.Lock()
	tb.opts.Logf = logf
	tb.mu.Unlock()
}

// Hosts returns the hosts in order. The slice is the caller's.
func (tb *Testbed) Hosts() []*Host {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return slices.Clone(tb.hosts)
}

// Host returns the host named name ("h1", or its namespace name "zt-h1"), or
// nil.
func (tb *Testbed) Host(name string) *Host {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.hostLocked(name)
}

func (tb *Testbed) hostLocked(name string) *Host {
	for _, h := range tb.hosts {
		if h.Name == name || h.NetnsName == name {
			return h
		}
	}
	return nil
}

// AddHost adds the next host (h<N+1>) to the running underlay: namespace,
// switch port, holder. It is not started; its command is made like the
// others' (joining the seed).
func (tb *Testbed) AddHost(ctx context.Context) (*Host, error) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.closed {
		return nil, ErrClosed
	}
	next := 1
	for _, h := range tb.hosts {
		next = max(next, h.Index+1)
	}
	h, err := tb.addHostLocked(ctx, next)
	if err != nil {
		// Keep the records of what was made: Close removes it.
		tb.saveLocked()
		return nil, err
	}
	return h, nil
}

// WaitReady waits until every host's control socket answers (Host.WaitReady).
func (tb *Testbed) WaitReady(ctx context.Context) error {
	for _, h := range tb.Hosts() {
		if err := h.WaitReady(ctx); err != nil {
			return err
		}
	}
	return nil
}

// forget drops a background process from the records.
func (tb *Testbed) forget(p *procState) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.closed {
		return
	}
	tb.st.Background = slices.DeleteFunc(tb.st.Background, func(q *procState) bool { return q.PID == p.PID && q.Start == p.Start })
	tb.saveLocked()
}

// startBackground starts argv (already wrapped for its namespace) as a
// background process logged to <dir>/bg/<n>-<prog>.log.
func (tb *Testbed) startBackground(argv, userArgv []string, where string) (*Process, error) {
	if len(userArgv) == 0 {
		return nil, fmt.Errorf("start in %s: empty command", where)
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.closed {
		return nil, ErrClosed
	}
	dir := filepath.Join(tb.Dir, "bg")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	tb.seq++
	logPath := filepath.Join(dir, fmt.Sprintf("%d-%s.log", tb.seq, filepath.Base(userArgv[0])))
	log, err := openLog(logPath)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := command(nil, argv)
	cmd.Stdout, cmd.Stderr = log, log
	p, err := spawn(cmd, "", where)
	if err != nil {
		return nil, err
	}
	p.Log = logPath
	tb.st.Background = append(tb.st.Background, p)
	if err := tb.saveLocked(); err != nil {
		killProc(p)
		return nil, err
	}
	return &Process{Log: logPath, tb: tb, p: p}, nil
}

// ExecOutside runs argv in the outside namespace and returns its combined
// output; a non-zero exit is an error carrying the output.
func (tb *Testbed) ExecOutside(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("exec outside: empty command")
	}
	return run(command(ctx, netnsArgv(tb.outsideNetns(), argv)), tb.outsideNetns(), argv)
}

// OutsideCmd returns a command that runs argv in the outside namespace, for
// callers that wire its input and output themselves.
func (tb *Testbed) OutsideCmd(ctx context.Context, argv ...string) *exec.Cmd {
	return command(ctx, netnsArgv(tb.outsideNetns(), argv))
}

// StartOutside starts argv in the background in the outside namespace (a
// test server on OutsideAddr, say). It runs until Process.Stop or Close.
func (tb *Testbed) StartOutside(ctx context.Context, argv ...string) (*Process, error) {
	return tb.startBackground(netnsArgv(tb.outsideNetns(), argv), argv, tb.outsideNetns())
}

// ExecSwitch runs argv in the switch namespace (tcpdump -i br0, nft list
// ruleset, …).
func (tb *Testbed) ExecSwitch(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("exec in switch: empty command")
	}
	return run(command(ctx, netnsArgv(tb.switchNetns(), argv)), tb.switchNetns(), argv)
}

// SwitchCmd returns a command that runs argv in the switch namespace.
func (tb *Testbed) SwitchCmd(ctx context.Context, argv ...string) *exec.Cmd {
	return command(ctx, netnsArgv(tb.switchNetns(), argv))
}

// Close removes everything the testbed made: it stops the daemons (SIGTERM,
// SIGKILL after 2 s), kills every other process it started and every process
// left in its namespaces, deletes the namespaces, /etc/netns entries and its
// directory. It may be called more than once; later calls return nil. When
// something cannot be removed the error says what, and the state file stays
// so Destroy can try again.
func (tb *Testbed) Close() error {
	tb.mu.Lock()
	if tb.closed {
		tb.mu.Unlock()
		return nil
	}
	tb.closed = true
	st, logf := tb.st, tb.opts.Logf
	tb.mu.Unlock()
	begin := time.Now()
	err := destroy(st)
	if err == nil {
		logf("testbed %s: removed in %s", st.Prefix, time.Since(begin).Round(time.Millisecond))
	}
	return err
}

// Destroy removes the testbed with the given prefix whose state is in dir
// ("" means /run/<prefix>), also when the process that made it died: it loads
// the state file if there is one (its prefix wins) and then sweeps by prefix
// — every process in a <prefix>-* network namespace, the namespaces,
// /etc/netns/<prefix>-* and the directory (only when it holds a state file or
// cluster key, or is the default /run/<prefix>). Destroying what is already
// gone succeeds.
func Destroy(prefix, dir string) error {
	if err := supported(); err != nil {
		return err
	}
	if !prefixRE.MatchString(prefix) {
		return fmt.Errorf("testbed prefix %q: want 1-10 characters, a lowercase letter then lowercase letters or digits", prefix)
	}
	if dir == "" {
		dir = "/run/" + prefix
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	st, err := readState(dir)
	switch {
	case err == nil:
		if st.Prefix != prefix {
			// The state file knows best; sweep the given prefix too.
			if serr := destroy(&state{Prefix: prefix}); serr != nil {
				return serr
			}
		}
		return destroy(st)
	case errors.Is(err, statefile.ErrNotExist):
		// Without a state file the directory is only removed when it
		// looks like a testbed's; its mirror mounts are always undone.
		st = &state{Prefix: prefix, Dir: dir, keepDir: true}
		if dir == "/run/"+prefix || exists(filepath.Join(dir, "cluster.key")) {
			st.DirCreated, st.keepDir = true, false
		}
		return destroy(st)
	default:
		// A state file that does not parse: sweep by prefix, keep the file.
		if serr := destroy(&state{Prefix: prefix}); serr != nil {
			return errors.Join(err, serr)
		}
		return fmt.Errorf("swept testbed %s by prefix, but %w", prefix, err)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// closeGrace is how long Close lets daemons exit after SIGTERM.
const closeGrace = 2 * time.Second

// destroy removes everything st records and everything carrying st.Prefix.
func destroy(st *state) error {
	var errs []error
	// 1. Daemons get a short chance to exit cleanly, all at once.
	var wg sync.WaitGroup
	var emu sync.Mutex
	addErr := func(err error) {
		if err != nil {
			emu.Lock()
			errs = append(errs, err)
			emu.Unlock()
		}
	}
	for _, hs := range st.Hosts {
		if p := hs.Daemon; alive(p) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				addErr(stopProc(context.Background(), p, closeGrace))
			}()
		}
	}
	wg.Wait()
	// 2. Everything else it started.
	others := slices.Clone(st.Background)
	others = append(others, st.Resolver)
	for _, hs := range st.Hosts {
		others = append(others, hs.Holder)
	}
	for _, p := range others {
		if alive(p) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				addErr(killProc(p))
			}()
		}
	}
	wg.Wait()
	// 3. Whatever still lives in its namespaces, then the namespaces.
	names := slices.Clone(st.Namespaces)
	swept, err := listNetns(st.Prefix)
	addErr(err)
	for _, n := range swept {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	for _, n := range names {
		addErr(killNetnsProcs(n))
	}
	if st.Dir != "" {
		addErr(unmountMirror(st.Prefix, filepath.Join(st.Dir, "netns")))
	}
	for _, n := range slices.Backward(names) {
		addErr(deleteNetns(n))
	}
	// 4. /etc/netns entries.
	etc := slices.Clone(st.EtcNetns)
	if m, err := filepath.Glob("/etc/netns/" + st.Prefix + "-*"); err == nil {
		for _, d := range m {
			if !slices.Contains(etc, filepath.Base(d)) {
				etc = append(etc, filepath.Base(d))
			}
		}
	}
	for _, n := range etc {
		if err := os.RemoveAll(filepath.Join("/etc/netns", n)); err != nil {
			addErr(fmt.Errorf("remove /etc/netns/%s: %w", n, err))
		}
	}
	// 5. Check, and only then drop the files (with the state file, which a
	// retry would need).
	if left, err := listNetns(st.Prefix); err == nil && len(left) > 0 {
		addErr(fmt.Errorf("namespaces left: %s", strings.Join(left, ", ")))
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove testbed %s: %w", st.Prefix, errors.Join(errs...))
	}
	if st.Dir != "" && !st.keepDir {
		if err := removeDir(st.Dir, st.DirCreated); err != nil {
			return fmt.Errorf("remove testbed %s: %w", st.Prefix, err)
		}
	}
	return nil
}

// killNetnsProcs SIGKILLs every process in the named namespace and waits up
// to killWait for them to be gone.
func killNetnsProcs(name string) error {
	deadline := time.Now().Add(killWait)
	for {
		pids, err := pidsInNetns(name)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v in netns %s do not exit", pids, name)
		}
		for _, pid := range pids {
			killPID(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// removeDir removes the testbed directory, or only its contents when the
// directory existed before Up.
func removeDir(dir string, whole bool) error {
	if whole {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("remove %s: %w", dir, err)
		}
		return nil
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("remove %s: %w", filepath.Join(dir, e.Name()), err)
		}
	}
	return nil
}

var _ io.Closer = (*Testbed)(nil)

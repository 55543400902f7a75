package testbed

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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

// switchNetns and outsideNetns name the fixed namespaces.
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
			Underlay:     o.Underlay,
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
	if err := buildSwitch(tb.switchNetns(), tb.outsideNetns(), tb.opts.Underlay); err != nil {
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
		MeshDNS: st.MeshDNS, SearchDomain: st.SearchDomain, Underlay: st.Underlay, NoStart: true}.withDefaults()
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

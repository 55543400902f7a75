package testbed

// Removing a testbed: Close, Destroy and the sweep by prefix.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/zlmesh/zlmesh/internal/statefile"
)

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

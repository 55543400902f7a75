//go:build linux

// Package nstest gives tests their own Linux network namespaces: created on a
// locked OS thread, named with a recognizable prefix, removed by t.Cleanup.
// Tests that need one call RequireRoot first; it skips with a clear message
// when not root (CI runs as root, so there they always run).
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (CI runs as root)")
	}
}

// NS is a named network namespace made for one test.
type NS struct {
	Name string // e.g. "zlt-bridge-4711-1a2b"
	Path string // /run/netns/<Name>
	// Handle is an open fd on the namespace; it is closed on cleanup.
	Handle netns.NsHandle
	// NL is a netlink handle bound to the namespace.
	NL *netlink.Handle
}

// New makes a fresh network namespace named prefix-<pid>-<random>, with lo
// up, and registers its removal with t.Cleanup. prefix should start with
// "zlt-". A test binary that dies without running its cleanups (killed by
// -timeout, a panic off the test goroutine) leaves its namespaces behind:
// New first removes those of test processes that are gone (SweepStale).
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	RequireRoot(t)
	if swept, err := SweepStale(); len(swept) > 0 || err != nil {
		t.Logf("nstest: removed namespaces of dead test processes: %v (%v)", swept, err)
	}
	var b [2]byte
	rand.Read(b[:])
	name := fmt.Sprintf("%s-%d-%s", prefix, os.Getpid(), hex.EncodeToString(b[:]))
	if len(name) > 40 {
		t.Fatalf("netns name %q too long", name)
	}
	h, err := newNamed(name)
	if err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	ns := &NS{Name: name, Path: "/run/netns/" + name, Handle: h}
	t.Cleanup(func() { ns.remove() })
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	ns.NL = nl
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("lo up in %s: %v", name, err)
	}
	return ns
}

// staleName matches the namespaces New makes: "zlt-…-<pid>-<4 hex>".
var staleName = regexp.MustCompile(`^zlt-[a-z0-9-]+-([0-9]+)-[0-9a-f]{4}$`)

// SweepStale removes the namespaces New made in test processes that no
// longer exist, and returns their names. A namespace whose process is alive
// (or whose name New did not make) is never touched.
func SweepStale() ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var swept []string
	var errs []error
	for _, e := range entries {
		m := staleName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat("/proc/" + m[1]); err == nil {
			continue // its process runs (or the pid was reused: keep it)
		}
		if err := netns.DeleteNamed(e.Name()); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", e.Name(), err))
			continue
		}
		swept = append(swept, e.Name())
	}
	return swept, errors.Join(errs...)
}

func newNamed(name string) (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return 0, err
	}
	defer orig.Close()
	h, err := netns.NewNamed(name) // switches this thread into the new namespace
	if serr := netns.Set(orig); serr != nil {
		// The thread is stuck in a foreign namespace: do not unlock it,
		// so the runtime retires it.
		runtime.LockOSThread()
		return 0, fmt.Errorf("restore netns: %w", serr)
	}
	return h, err
}

func (ns *NS) remove() {
	if ns.NL != nil {
		ns.NL.Close()
	}
	ns.Handle.Close()
	netns.DeleteNamed(ns.Name)
}

// Do runs fn on a locked OS thread inside the namespace and returns the thread
// to its original namespace afterwards.
func (ns *NS) Do(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns.Handle); err != nil {
		return fmt.Errorf("enter netns %s: %w", ns.Name, err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			runtime.LockOSThread() // never reuse a thread stuck in a foreign netns
		}
	}()
	return fn()
}

//go:build linux

package nstest

import (
	"fmt"
	"os"
	"testing"

	"github.com/vishvananda/netns"
)

func TestNewAndCleanup(t *testing.T) {
	var path string
	t.Run("make", func(t *testing.T) {
		ns := New(t, "zlt-nstest")
		path = ns.Path
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("netns file: %v", err)
		}
		var inside netns.NsHandle
		if err := ns.Do(func() error {
			h, err := netns.Get()
			inside = h
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer inside.Close()
		if !inside.Equal(ns.Handle) {
			t.Errorf("Do did not run inside the namespace")
		}
	})
	if path == "" {
		t.Skip("not root")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("netns %s left behind: %v", path, err)
	}
}

// A namespace New made in a test process that is gone is swept by the next
// New; one of a live process, or not named by New, is left alone.
func TestSweepStale(t *testing.T) {
	RequireRoot(t)
	// A pid that is not running: past the kernel's pid_max.
	dead := "zlt-nstest-4194399-ab12"
	live := fmt.Sprintf("zlt-nstest-%d-cd34", os.Getppid())
	other := "zlt-nstest-keep"
	for _, name := range []string{dead, live, other} {
		h, err := newNamed(name)
		if err != nil {
			t.Fatal(err)
		}
		h.Close()
		t.Cleanup(func() { netns.DeleteNamed(name) })
	}
	New(t, "zlt-nstest")
	for name, want := range map[string]bool{dead: false, live: true, other: true} {
		_, err := os.Stat("/run/netns/" + name)
		if got := err == nil; got != want {
			t.Errorf("%s exists %v after New, want %v", name, got, want)
		}
	}
}

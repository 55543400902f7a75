//go:build linux

package nstest

import (
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

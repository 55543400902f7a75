package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/tun"
	"github.com/zlmesh/zlmesh/winhcn"
	"github.com/zlmesh/zlmesh/winhcn/winhcntest"
)

// A Windows host without the Wintun driver: Start fails with one line that
// says what is missing (tun.Create's ErrNoTUN, naming wintun.dll), and
// leaves nothing behind: the control socket (or pipe) and the state dir's
// lock are free, so the same start fails the same way again, and no HCN
// network or endpoint was made.
func TestStartWithoutWintun(t *testing.T) {
	f := winhcntest.New()
	dir := t.TempDir()
	socket := filepath.Join(t.TempDir(), "zlmesh.sock")
	if runtime.GOOS == "windows" {
		socket = fmt.Sprintf(`\\.\pipe\zlmesh-test-nowintun-%d`, os.Getpid())
	}
	noWintun := func(name string, _ int) (tun.Device, error) {
		// What tun.Create says on Windows without wintun.dll.
		return nil, fmt.Errorf("create wintun %s: Unable to load library: The specified module could not be found. (put wintun.dll from wintun.net next to zlmesh.exe): %w", name, tun.ErrNoTUN)
	}
	start := func() error {
		n, err := Start(context.Background(), Config{
			Name:       "w1",
			StateDir:   dir,
			Socket:     socket,
			ClusterKey: make([]byte, 32),
			NewTUN:     noWintun,
			NAT:        &fakeNAT{},
			Containers: newHCNContainers(winhcn.New(f, winhcn.Config{SettleInterval: time.Millisecond}), slog.New(slog.DiscardHandler)),
			Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err == nil {
			n.Close()
			t.Fatal("Start without Wintun succeeded")
		}
		return err
	}
	for i := range 2 {
		err := start()
		if !errors.Is(err, tun.ErrNoTUN) || !strings.Contains(err.Error(), "wintun.dll") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("start %d: %v, want one line with ErrNoTUN naming wintun.dll", i+1, err)
		}
	}
	if runtime.GOOS != "windows" {
		if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("control socket left: %v", err)
		}
	}
	if nets, eps, nss := f.State(); len(nets)+len(eps)+len(nss) != 0 {
		t.Errorf("HCN objects left: %v %v %v", nets, eps, nss)
	}
}

package testbed

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// TB is the part of testing.TB that New and BuildZlmesh use: *testing.T
// and *testing.B satisfy it. It is declared here so that this package,
// which the zlmesh binary links for `zlmesh testbed`, does not import
// package testing.
type TB interface {
	Helper()
	Skip(args ...any)
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
	Failed() bool
}

// RandomPrefix returns "zt" and three random lowercase letters, for tests
// that must never clash with another testbed on the machine.
func RandomPrefix() string {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	var b [3]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return "zt" + string(b[:])
}

// upTimeout bounds New's Up.
const upTimeout = 60 * time.Second

// New brings a testbed up for a test: it skips the test when not root (CI
// runs as root), picks a random prefix when o.Prefix is empty, logs through
// t.Logf when o.Logf is nil, fails the test when Up fails, and registers
// Close with t.Cleanup (which also runs when the test fails or panics). When
// the test failed, the cleanup first logs the tail of every host's log.
//
// A test binary killed by its -timeout runs no cleanups, so New first removes
// the testbeds earlier New calls made whose test process is gone.
func New(t TB, o Options) *Testbed {
	t.Helper()
	if err := supported(); err != nil {
		t.Skip(err)
	}
	if os.Geteuid() != 0 {
		t.Skip("testbed needs root for network namespaces (CI runs as root)")
	}
	if o.Prefix == "" {
		o.Prefix = RandomPrefix()
	}
	if o.Logf == nil {
		o.Logf = t.Logf
	}
	o.ephemeral = true
	if swept, err := sweepStale(); len(swept) > 0 || err != nil {
		t.Logf("testbed: removed stale testbeds of dead test processes: %v (%v)", swept, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), upTimeout)
	defer cancel()
	tb, err := Up(ctx, o)
	if err != nil {
		t.Fatalf("testbed up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range tb.Hosts() {
				if s := h.LogTail(30); s != "" {
					t.Logf("testbed %s: last lines of %s's log:\n%s", tb.Prefix, h.Name, s)
				}
			}
		}
		if err := tb.Close(); err != nil {
			t.Errorf("testbed close: %v", err)
		}
	})
	return tb
}

// The zlmesh binary built once per process for end-to-end tests.
var built struct {
	mu   sync.Mutex
	dir  string
	path string
}

// BinaryEnv names an environment variable that, when set, is the zlmesh
// binary Binary returns instead of building one.
const BinaryEnv = "ZLMESH_TESTBED_BINARY"

// Binary returns the path of a zlmesh binary built from the module the
// current directory is in (`go build ./cmd/zlmesh` into a temporary
// directory), built once per process (a failed build is tried again on the
// next call); or $ZLMESH_TESTBED_BINARY when set. Call RemoveBinary when done
// (from TestMain) to delete the build. Safe for concurrent use.
func Binary(ctx context.Context) (string, error) {
	if p := os.Getenv(BinaryEnv); p != "" {
		return filepath.Abs(p)
	}
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.path != "" {
		return built.path, nil
	}
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("build zlmesh: go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("build zlmesh: not inside a Go module")
	}
	dir, err := os.MkdirTemp("", "zlmesh-testbed-bin-")
	if err != nil {
		return "", fmt.Errorf("build zlmesh: %w", err)
	}
	path := filepath.Join(dir, "zlmesh")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", path, "./cmd/zlmesh")
	cmd.Dir = filepath.Dir(mod)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("build zlmesh: %w: %s", err, out)
	}
	built.dir, built.path = dir, path
	return path, nil
}

// RemoveBinary deletes the binary Binary built (if any); a later Binary
// builds it again.
func RemoveBinary() {
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	built.dir, built.path = "", ""
}

// BuildZlmesh returns the zlmesh binary for a test (see Binary), failing the
// test when it cannot be built.
func BuildZlmesh(t TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p, err := Binary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

//go:build linux

package natd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os/exec"
	"testing"

	"github.com/zlmesh/zlmesh/internal/nstest"
)

// baseConfig is the node of the test topology: node subnet 10.200.3.0/24,
// overlay 10.200.3.1 on "zl0".
func baseConfig() Config {
	return Config{
		Cluster:    netip.MustParsePrefix("10.200.0.0/16"),
		Local:      []netip.Prefix{netip.MustParsePrefix("10.200.3.0/24")},
		Overlay:    netip.MustParseAddr("10.200.3.1"),
		OverlayIf:  "zl0",
		Masquerade: true,
	}
}

// openTable opens natd's table in ns and closes it at the end of the test.
func openTable(t testing.TB, ns *nstest.NS, name string) *nftTable {
	t.Helper()
	tb, err := New(Options{TableName: name, NetNS: int(ns.Handle), Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { tb.Close() })
	return tb.(*nftTable)
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// dump is `nft -j list table inet <name>` inside ns, exactly as printed
// (handles included), or "" when the table does not exist.
func dump(t testing.TB, ns *nstest.NS, name string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns.Name, "nft", "-j", "list", "table", "inet", name).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("No such file or directory")) {
			return ""
		}
		t.Fatalf("nft list table inet %s: %v: %s", name, err, out)
	}
	return string(out)
}

// listing is `nft list table inet <name>` inside ns (for failure messages).
func listing(t testing.TB, ns *nstest.NS, name string) string {
	t.Helper()
	out, _ := exec.Command("ip", "netns", "exec", ns.Name, "nft", "list", "table", "inet", name).CombinedOutput()
	return string(out)
}

// normalized is a dump without handles (which differ between two tables of
// the same content), with set elements in a stable order.
func normalized(t testing.TB, d string) string {
	t.Helper()
	if d == "" {
		return ""
	}
	var v any
	if err := json.Unmarshal([]byte(d), &v); err != nil {
		t.Fatalf("parse nft json: %v", err)
	}
	var strip func(any) any
	strip = func(x any) any {
		switch x := x.(type) {
		case map[string]any:
			delete(x, "handle")
			delete(x, "metainfo")
			for k, e := range x {
				x[k] = strip(e)
			}
		case []any:
			for i, e := range x {
				x[i] = strip(e)
			}
		}
		return x
	}
	b, _ := json.Marshal(strip(v))
	return string(b)
}

// runIn runs a command inside ns and returns its combined output.
func runIn(ns *nstest.NS, name string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %v in %s: %w: %s", name, args, ns.Name, err, out)
	}
	return string(out), nil
}

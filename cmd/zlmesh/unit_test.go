package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestSystemdUnit runs `systemd-analyze verify` on dist/zlmesh.service, on
// a copy whose ExecStart names a zlmesh built into a temp dir (verify wants
// the binary to exist; nothing is installed), and checks the settings the
// unit promises.
func TestSystemdUnit(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("systemd units are Linux only")
	}
	unit, err := os.ReadFile("../../dist/zlmesh.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\nType=notify\n", "\nRestart=on-failure\n", "\nRuntimeDirectory=zlmesh\n", "\nStateDirectory=zlmesh\n",
		"\nGroup=zlmesh\n", "\nCapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_NET_BIND_SERVICE\n",
		"\nExecStart=/usr/local/bin/zlmesh up --config /etc/zlmesh/zlmesh.conf\n",
	} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("unit lacks %q", strings.TrimSpace(want))
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: scripts/deps.sh installs it (Debian package systemd)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "zlmesh")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	copy := bytes.Replace(unit, []byte("ExecStart=/usr/local/bin/zlmesh "), []byte("ExecStart="+bin+" "), 1)
	path := filepath.Join(dir, "zlmesh.service")
	if err := os.WriteFile(path, copy, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

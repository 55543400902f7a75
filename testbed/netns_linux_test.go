//go:build linux

package testbed

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netns"
)

// netnsCaseEnv names the case TestNetnsCoexistsWithIproute2 runs when the
// test binary is started again inside a private mount namespace.
const netnsCaseEnv = "ZLMESH_TESTBED_NETNS_CASE"

// TestNetnsCoexistsWithIproute2 runs `ip netns add` between a testbed's Up
// and its Close and checks that Close removes every namespace and mount it
// made, and that iproute2's namespace is then removed as usual, on each kind
// of machine: /run/netns not yet a mount point; already a mount point
// (iproute2 came first); not a mount point with another program's namespace
// mounted in it (the testbed then leaves the directory alone and iproute2
// binds over the testbed's namespaces).
//
// Each case runs in a copy of this test binary inside a private mount
// namespace with a fresh tmpfs on /run, so that the machine's /run/netns is
// never changed and its state does not matter.
func TestNetnsCoexistsWithIproute2(t *testing.T) {
	if c := os.Getenv(netnsCaseEnv); c != "" {
		netnsCase(t, c)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("testbed needs root for network namespaces (CI runs as root)")
	}
	for _, c := range []string{"plain", "iproute2-first", "foreign"} {
		t.Run(c, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run", "^TestNetnsCoexistsWithIproute2$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), netnsCaseEnv+"="+c)
			// Go makes the new mount namespace private (MS_REC|MS_PRIVATE
			// on /): nothing mounted there reaches the machine's.
			cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "\nPASS") {
				t.Fatalf("case %s: %v\n%s", c, err, out)
			}
			t.Logf("case %s:\n%s", c, out)
		})
	}
}

// netnsCase runs one case of TestNetnsCoexistsWithIproute2; the process is
// in a private mount namespace.
func netnsCase(t *testing.T, c string) {
	if err := syscall.Mount("zlmesh-testbed-run", "/run", "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatalf("tmpfs on /run: %v", err)
	}
	if err := os.Mkdir(netnsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	prefix := RandomPrefix()
	ipNetns := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"netns"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip netns %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	isMount := func() bool { return isMountRoot(netnsDir) }

	// Names of the others' namespaces: not the testbed's prefix.
	other := "zo" + prefix
	foreign := other + "-foreign"
	switch c {
	case "plain":
	case "iproute2-first":
		ipNetns("add", other+"-first")
		if !isMount() {
			t.Fatal("ip netns add did not make /run/netns a mount point")
		}
	case "foreign":
		// A namespace mounted on the plain directory, as an older
		// testbed (netns.NewNamed) does.
		err := onThread(func() error {
			h, err := netns.NewNamed(foreign)
			if err == nil {
				h.Close()
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if isMount() {
			t.Fatal("making a namespace with netns.NewNamed made /run/netns a mount point")
		}
	default:
		t.Fatalf("unknown case %q", c)
	}

	ctx := testCtx(t)
	tb, err := Up(ctx, Options{Prefix: prefix, Hosts: 2, Command: sleeper})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	if _, err := tb.AddContainer(ctx, tb.Hosts()[0], "web"); err != nil {
		t.Fatal(err)
	}
	if want := c != "foreign"; isMount() != want {
		t.Errorf("after Up /run/netns is a mount point: %v, want %v", !want, want)
	}
	ipNetns("add", other+"-x") // as the README's attach example invites
	pids := allPIDs(tb)
	if err := tb.Close(); err != nil {
		t.Fatalf("Close after ip netns add: %v", err)
	}
	// The testbed's namespaces are gone, mounts included (hidden ones
	// too: mountinfo lists every mount of this namespace).
	for _, n := range []string{"-x", "-first"} {
		if _, err := os.Stat(netnsPath(other + n)); err == nil {
			ipNetns("del", other+n)
		}
	}
	if c == "foreign" {
		if err := deleteNetns(foreign); err != nil {
			t.Errorf("remove the foreign namespace: %v", err)
		}
	}
	assertGone(t, prefix, tb.Dir, pids)
	if ents, err := os.ReadDir(netnsDir); err != nil || len(ents) > 0 {
		t.Errorf("/run/netns holds %v (%v), want nothing", ents, err)
	}
}

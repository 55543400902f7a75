//go:build linux

package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// sleeper is the daemon command of tests that do not need zlmesh.
func sleeper(*Host) []string { return []string{"sleep", "1000"} }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// mustPing fails the test unless from reaches addr (one retry: the first
// echo also waits for ARP).
func mustPing(t *testing.T, ctx context.Context, from *Host, addr string) {
	t.Helper()
	err := from.Ping(ctx, addr)
	if err != nil {
		err = from.Ping(ctx, addr)
	}
	if err != nil {
		t.Errorf("%s → %s: %v", from.Name, addr, err)
	}
}

// mustNotPing fails the test if from reaches addr within half a second
// (answers inside the testbed take well under a millisecond).
func mustNotPing(t *testing.T, ctx context.Context, from *Host, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if err := from.Ping(ctx, addr); err == nil {
		t.Errorf("%s → %s: got an answer, want none", from.Name, addr)
	}
}

func TestUnderlayOutsideAndResolver(t *testing.T) {
	tb := New(t, Options{Hosts: 3, Command: sleeper})
	ctx := testCtx(t)
	hosts := tb.Hosts()

	t.Run("every host pings every other", func(t *testing.T) {
		for _, a := range hosts {
			for _, b := range hosts {
				if a != b {
					mustPing(t, ctx, a, b.Underlay.String())
				}
			}
		}
	})
	t.Run("hosts reach the switch and the outside", func(t *testing.T) {
		for _, h := range hosts {
			mustPing(t, ctx, h, SwitchAddr.String())
			mustPing(t, ctx, h, OutsideAddr.String())
			mustPing(t, ctx, h, ResolverAddr.String())
		}
	})
	t.Run("nothing beyond the testbed is routed", func(t *testing.T) {
		// Checked on the route tables, without sending anything anywhere:
		// neither the switch nor the outside has a default route.
		for _, where := range []struct {
			name string
			run  func(context.Context, ...string) ([]byte, error)
		}{{"switch", tb.ExecSwitch}, {"outside", tb.ExecOutside}} {
			out, err := where.run(ctx, "ip", "-4", "route", "show", "default")
			if err != nil || strings.TrimSpace(string(out)) != "" {
				t.Errorf("%s default route: %q %v, want none", where.name, out, err)
			}
		}
		out, err := tb.ExecOutside(ctx, "ip", "-4", "route")
		if err != nil || strings.Count(strings.TrimSpace(string(out)), "\n") != 1 || !strings.Contains(string(out), "192.0.2.0/24 via 198.51.100.1") {
			t.Errorf("outside routes: %q %v, want its own network and the way back to the underlay only", out, err)
		}
	})
	t.Run("outside resolver", func(t *testing.T) {
		h := hosts[1]
		cases := []struct {
			name, qtype, want, status string
		}{
			{"outside.test", "A", OutsideAddr.String(), "NOERROR"},
			{"resolver.test", "A", ResolverAddr.String(), "NOERROR"},
			{"alias.test", "A", "outside.test.\n" + OutsideAddr.String(), "NOERROR"},
			{"unknown.test", "A", "", "NXDOMAIN"},
			{"example.com", "A", "", "NXDOMAIN"}, // never forwarded
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				out, err := h.Exec(ctx, "dig", "+time=1", "+tries=1", "@"+ResolverAddr.String(), c.name, c.qtype)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(out), "status: "+c.status) {
					t.Errorf("status: want %s in\n%s", c.status, out)
				}
				short, err := h.Exec(ctx, "dig", "+time=1", "+tries=1", "+short", "@"+ResolverAddr.String(), c.name, c.qtype)
				if err != nil || strings.TrimSpace(string(short)) != c.want {
					t.Errorf("answer %q (%v), want %q", short, err, c.want)
				}
			})
		}
		// The host's own resolv.conf points at the outside resolver.
		out, err := h.Exec(ctx, "dig", "+time=1", "+tries=1", "+short", "outside.test")
		if err != nil || strings.TrimSpace(string(out)) != OutsideAddr.String() {
			t.Errorf("dig outside.test through the host's resolv.conf: %q %v", out, err)
		}
	})
	t.Run("TCP and UDP to servers outside", func(t *testing.T) {
		for _, proto := range []string{"tcp", "udp"} {
			addr := OutsideAddr.String() + ":5201"
			srv, err := tb.StartOutside(ctx, HelperArgv(proto+"-echo", addr)...)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Stop()
			for !strings.Contains(srv.Output(), "listening") && srv.Running() && ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond)
			}
			msg := strings.Repeat("x", 1000)
			out, err := hosts[2].Exec(ctx, HelperArgv(proto+"-send", addr, msg)...)
			if err != nil || string(out) != msg {
				t.Fatalf("%s-send: %d bytes back, %v", proto, len(out), err)
			}
			want := fmt.Sprintf("%s from %s:", proto, hosts[2].Underlay)
			for !strings.Contains(srv.Output(), want) && ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond)
			}
			if !strings.Contains(srv.Output(), want) || !strings.Contains(srv.Output(), ": 1000 bytes") {
				t.Errorf("the %s server outside says %q, want %q… 1000 bytes", proto, srv.Output(), want)
			}
		}
	})
	t.Run("private filesystem view", func(t *testing.T) {
		a, b := hosts[0], hosts[1]
		if _, err := a.Exec(ctx, "sh", "-c", "echo a > /var/run/wireguard/zl0.sock.test"); err != nil {
			t.Fatal(err)
		}
		if out, err := b.Exec(ctx, "ls", "-A", "/var/run/wireguard"); err != nil || strings.TrimSpace(string(out)) != "" {
			t.Errorf("h2 sees %q (%v) in /var/run/wireguard, want nothing", out, err)
		}
		if got, err := os.ReadFile(filepath.Join(a.WireGuardDir, "zl0.sock.test")); err != nil || string(got) != "a\n" {
			t.Errorf("h1's file in %s: %q %v", a.WireGuardDir, got, err)
		}
		if out, err := a.Exec(ctx, "ls", "/sys/class/net"); err != nil || strings.Join(strings.Fields(string(out)), " ") != "eth0 lo" {
			t.Errorf("/sys/class/net inside h1: %q %v, want eth0 lo", out, err)
		}
		if exists("/var/run/wireguard/zl0.sock.test") {
			t.Errorf("the file is visible on the machine's /var/run/wireguard")
		}
		for _, h := range []*Host{a, b} {
			out, err := h.Exec(ctx, "sh", "-c", "ls /run/zlmesh/resolv.conf && ls -d /var/lib/zlmesh && cat /etc/resolv.conf && cat /proc/sys/net/ipv4/ip_forward")
			if err != nil || !strings.Contains(string(out), "nameserver "+ResolverAddr.String()) || !strings.HasSuffix(string(out), "1\n") {
				t.Errorf("%s's view: %q %v", h.Name, out, err)
			}
		}
		if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); string(b) == "1\n" {
			t.Logf("note: the machine itself forwards (not set by the testbed)")
		}
	})
}

func TestCutRestorePartitionHeal(t *testing.T) {
	tb := New(t, Options{Hosts: 4, Command: sleeper})
	ctx := testCtx(t)
	h := tb.Hosts()
	h1, h2, h3, h4 := h[0], h[1], h[2], h[3]
	for _, x := range h[1:] {
		mustPing(t, ctx, h1, x.Underlay.String())
	}

	t.Run("cut", func(t *testing.T) {
		if err := tb.Cut(h2); err != nil {
			t.Fatal(err)
		}
		if !tb.IsCut(h2) {
			t.Error("IsCut(h2) = false after Cut")
		}
		mustNotPing(t, ctx, h1, h2.Underlay.String())
		mustNotPing(t, ctx, h2, h1.Underlay.String())
		mustNotPing(t, ctx, h2, OutsideAddr.String())
		mustPing(t, ctx, h1, h3.Underlay.String())
		if err := tb.Restore(h2); err != nil {
			t.Fatal(err)
		}
		mustPing(t, ctx, h1, h2.Underlay.String())
		mustPing(t, ctx, h2, h1.Underlay.String())
		mustPing(t, ctx, h2, OutsideAddr.String())
	})

	t.Run("partition", func(t *testing.T) {
		if err := tb.Partition([]*Host{h1, h2}, []*Host{h3}); err != nil {
			t.Fatal(err)
		}
		if got := tb.Partitioned(); fmt.Sprint(got) != "[[h1 h2] [h3]]" {
			t.Errorf("Partitioned() = %v", got)
		}
		for _, pair := range [][2]*Host{{h1, h3}, {h3, h1}, {h2, h3}, {h3, h2}} {
			mustNotPing(t, ctx, pair[0], pair[1].Underlay.String())
		}
		// Same group, no group, the outside: all still reachable.
		for _, pair := range [][2]*Host{{h1, h2}, {h2, h1}, {h4, h1}, {h4, h3}, {h3, h4}, {h1, h4}} {
			mustPing(t, ctx, pair[0], pair[1].Underlay.String())
		}
		for _, x := range h {
			mustPing(t, ctx, x, OutsideAddr.String())
		}
		// A new partition replaces the old one.
		if err := tb.Partition([]*Host{h1}, []*Host{h2, h3}); err != nil {
			t.Fatal(err)
		}
		mustPing(t, ctx, h1, h4.Underlay.String())
		mustNotPing(t, ctx, h1, h2.Underlay.String())
		mustPing(t, ctx, h2, h3.Underlay.String())
		if err := tb.Heal(); err != nil {
			t.Fatal(err)
		}
		if tb.Partitioned() != nil {
			t.Errorf("Partitioned() = %v after Heal", tb.Partitioned())
		}
		for _, pair := range [][2]*Host{{h1, h2}, {h1, h3}, {h3, h1}, {h2, h3}} {
			mustPing(t, ctx, pair[0], pair[1].Underlay.String())
		}
		if err := tb.Heal(); err != nil {
			t.Errorf("second Heal: %v", err)
		}
	})

	t.Run("bad groups", func(t *testing.T) {
		if err := tb.Partition([]*Host{h1, h2}, []*Host{h2}); err == nil {
			t.Error("a host in two groups: no error")
		}
		if err := tb.Partition([]*Host{h1}, []*Host{{Name: "h9"}}); err == nil {
			t.Error("a foreign host: no error")
		}
	})
}

func TestContainers(t *testing.T) {
	tb := New(t, Options{Hosts: 2, Command: sleeper, MeshDNS: "10.200.255.54", SearchDomain: "mesh"})
	ctx := testCtx(t)
	h1, h2 := tb.Hosts()[0], tb.Hosts()[1]

	c, err := tb.AddContainer(ctx, h1, "web1")
	if err != nil {
		t.Fatal(err)
	}
	if c.NetnsName != tb.Prefix+"-h1-web1" || c.Netns != "/run/netns/"+c.NetnsName || c.ID() != c.NetnsName {
		t.Errorf("names: %+v", c)
	}
	want := "nameserver 10.200.255.54\nsearch mesh\n"
	if b, err := os.ReadFile(c.ResolvConf); err != nil || !strings.HasSuffix(string(b), want) {
		t.Errorf("%s: %q %v, want it to end in %q", c.ResolvConf, b, err, want)
	}
	out, err := c.Exec(ctx, "sh", "-c", "cat /etc/resolv.conf; ip -o link show")
	if err != nil || !strings.Contains(string(out), want) {
		t.Errorf("resolv.conf inside: %q %v", out, err)
	}
	if links := strings.Count(string(out), ": <"); links != 1 || !strings.Contains(string(out), "lo: <LOOPBACK,UP") {
		t.Errorf("container links: want lo only, up:\n%s", out)
	}
	for _, lo := range []string{"127.0.0.1", "::1"} {
		if err := c.Ping(ctx, lo); err != nil {
			t.Errorf("ping %s in the container: %v", lo, err)
		}
	}
	if err := c.Ping(ctx, "web1"); err == nil {
		t.Error("ping of a name: no error")
	}
	// Made after the host's holder started, it is visible inside the host,
	// where zlmesh opens it.
	var st syscall.Stat_t
	if err := syscall.Stat(c.Netns, &st); err != nil {
		t.Fatal(err)
	}
	if out, err := h1.Exec(ctx, "stat", "-c", "%i", c.Netns); err != nil || strings.TrimSpace(string(out)) != fmt.Sprint(st.Ino) {
		t.Errorf("inside h1, %s is inode %q (%v), not the container's netns %d", c.Netns, out, err, st.Ino)
	}
	// Inside a host, /run/netns lists the testbed's namespaces only.
	if out, err := h1.Exec(ctx, "ls", "/run/netns"); err != nil || strings.Contains(string(out), "zlt-") {
		t.Errorf("/run/netns inside h1: %q %v", out, err)
	}
	if got := tb.Container("h1", "web1"); got != c {
		t.Errorf("Container(h1, web1) = %v", got)
	}

	t.Run("bad input", func(t *testing.T) {
		for _, name := range []string{"", "Web", "1web", "we-b", "we b", strings.Repeat("a", 21), "../x"} {
			if _, err := tb.AddContainer(ctx, h1, name); err == nil {
				t.Errorf("AddContainer(%q): no error", name)
			}
		}
		if _, err := tb.AddContainer(ctx, h1, "web1"); !errors.Is(err, ErrExists) {
			t.Errorf("duplicate: %v, want ErrExists", err)
		}
		if _, err := tb.AddContainer(ctx, &Host{Name: "h1"}, "x"); err == nil {
			t.Error("foreign host: no error")
		}
		if n := len(tb.Containers()); n != 1 {
			t.Errorf("%d containers after bad input, want 1", n)
		}
	})

	t.Run("same name on another host", func(t *testing.T) {
		c2, err := tb.AddContainer(ctx, h2, "web1")
		if err != nil {
			t.Fatal(err)
		}
		p, err := c2.StartProcess(ctx, "sleep", "1000")
		if err != nil {
			t.Fatal(err)
		}
		if err := c2.Remove(); err != nil {
			t.Fatal(err)
		}
		if p.Running() {
			t.Error("the container's process survived Remove")
		}
		if exists(c2.Netns) || exists(filepath.Dir(c2.ResolvConf)) {
			t.Errorf("Remove left %s or %s", c2.Netns, filepath.Dir(c2.ResolvConf))
		}
		if err := c2.Remove(); err != nil {
			t.Errorf("second Remove: %v", err)
		}
		if exists(c.Netns) == false {
			t.Error("removing h2/web1 removed h1/web1")
		}
	})
}

// procGone reports whether pid is gone (or a zombie).
func procGone(pid int) bool {
	_, zombie, err := procStartTime(pid)
	return err != nil || zombie
}

// assertGone checks that nothing of the testbed with this prefix and dir is
// left on the machine: namespaces, /etc/netns entries, the directory,
// processes (the given PIDs, and any whose command line names the
// directory), links named after the prefix.
func assertGone(t *testing.T, prefix, dir string, pids []int) {
	t.Helper()
	if names, err := listNetns(prefix); err != nil || len(names) > 0 {
		t.Errorf("namespaces left: %v %v", names, err)
	}
	if m, _ := filepath.Glob("/etc/netns/" + prefix + "-*"); len(m) > 0 {
		t.Errorf("/etc/netns entries left: %v", m)
	}
	if exists(dir) {
		t.Errorf("dir %s left", dir)
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, p := range parseMountPoints(string(mi)) {
			if p == dir || strings.HasPrefix(p, dir+"/") || strings.HasPrefix(p, "/run/netns/"+prefix+"-") {
				t.Errorf("mount %s left", p)
			}
		}
	}
	for _, pid := range pids {
		if !procGone(pid) {
			t.Errorf("process %d left", pid)
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(cl), dir+"/") && !procGone(pid) {
			t.Errorf("process %d left: %q", pid, strings.ReplaceAll(string(cl), "\x00", " "))
		}
	}
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if strings.HasPrefix(i.Name, prefix) {
			t.Errorf("link %s left in the machine's namespace", i.Name)
		}
	}
}

// allPIDs returns every process the testbed recorded.
func allPIDs(tb *Testbed) []int {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var pids []int
	add := func(p *procState) {
		if p != nil {
			pids = append(pids, p.PID)
		}
	}
	add(tb.st.Resolver)
	for _, p := range tb.st.Background {
		add(p)
	}
	for _, h := range tb.st.Hosts {
		add(h.Holder)
		add(h.Daemon)
	}
	return pids
}

func TestCloseRemovesEverything(t *testing.T) {
	ctx := testCtx(t)
	tb, err := Up(ctx, Options{Prefix: RandomPrefix(), Hosts: 2, Command: sleeper})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	c, err := tb.AddContainer(ctx, tb.Hosts()[0], "db")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.StartProcess(ctx, "sleep", "1000"); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.StartOutside(ctx, "sleep", "1000"); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Hosts()[1].StartProcess(ctx, "sleep", "1000"); err != nil {
		t.Fatal(err)
	}
	if err := tb.Partition([]*Host{tb.Hosts()[0]}, []*Host{tb.Hosts()[1]}); err != nil {
		t.Fatal(err)
	}
	pids := allPIDs(tb)
	if len(pids) != 8 { // resolver, 3 background, 2 holders, 2 daemons
		t.Fatalf("recorded %d processes, want 8: %v", len(pids), pids)
	}
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, tb.Prefix, tb.Dir, pids)
	if err := tb.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := tb.AddHost(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("AddHost after Close: %v, want ErrClosed", err)
	}
	if err := tb.Hosts()[0].Start(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v, want ErrClosed", err)
	}
}

func TestUpFailureLeavesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	// A context that ends while the resolver starts: after the switch and
	// the outside namespace exist.
	ctx, cancel := context.WithCancel(context.Background())
	prefix := RandomPrefix()
	o := Options{Prefix: prefix, Hosts: 2, Command: sleeper, Logf: t.Logf}
	go func() {
		for !netnsExists(prefix + "-out") {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	tb, err := Up(ctx, o)
	if err == nil {
		tb.Close()
		t.Fatal("Up with a cancelled context succeeded")
	}
	t.Logf("Up: %v", err)
	assertGone(t, prefix, "/run/"+prefix, nil)
}

func TestOptionErrors(t *testing.T) {
	long := "/tmp/" + strings.Repeat("d", 100)
	cases := []struct {
		name string
		o    Options
		want string
	}{
		{"bad prefix", Options{Prefix: "Zt", NoStart: true}, "prefix"},
		{"prefix with dash", Options{Prefix: "z-t", NoStart: true}, "prefix"},
		{"long prefix", Options{Prefix: "abcdefghijk", NoStart: true}, "prefix"},
		{"negative hosts", Options{Hosts: -1, NoStart: true}, "hosts"},
		{"too many hosts", Options{Hosts: MaxHosts + 1, NoStart: true}, "hosts"},
		{"seed out of range", Options{Hosts: 2, Seed: 3, NoStart: true}, "seed"},
		{"no binary", Options{}, "Binary"},
		{"long dir", Options{Dir: long, NoStart: true}, "too long"},
		{"bad mesh dns", Options{MeshDNS: "x", NoStart: true}, "mesh DNS"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tb, err := Up(context.Background(), c.o)
			if err == nil {
				tb.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
		})
	}
	if _, err := os.Stat(long); err == nil {
		t.Errorf("a failed Up made %s", long)
	}
}

func TestExistingTestbedIsRefused(t *testing.T) {
	tb := New(t, Options{Hosts: 1, NoStart: true})
	_, err := Up(context.Background(), Options{Prefix: tb.Prefix, Hosts: 1, NoStart: true, Dir: t.TempDir()})
	if !errors.Is(err, ErrExists) {
		t.Errorf("second Up with prefix %s: %v, want ErrExists", tb.Prefix, err)
	}
	_, err = Up(context.Background(), Options{Prefix: RandomPrefix(), Hosts: 1, NoStart: true, Dir: tb.Dir})
	if !errors.Is(err, ErrExists) {
		t.Errorf("second Up in dir %s: %v, want ErrExists", tb.Dir, err)
	}
	// The refused Ups touched nothing of the first.
	if err := tb.Hosts()[0].Ping(testCtx(t), SwitchAddr.String()); err != nil {
		t.Error(err)
	}
}

func TestTwoTestbedsAtOnce(t *testing.T) {
	var tbs [2]*Testbed
	var wg sync.WaitGroup
	for i := range tbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tb, err := Up(testCtx(t), Options{Prefix: RandomPrefix(), Hosts: 2, Command: sleeper, Logf: t.Logf})
			if err != nil {
				t.Error(err)
				return
			}
			tbs[i] = tb
			t.Cleanup(func() { tb.Close() })
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	ctx := testCtx(t)
	a, b := tbs[0], tbs[1]
	if a.Prefix == b.Prefix {
		t.Skip("random prefixes collided")
	}
	// Same addresses, separate networks: a file in a's h2 shows up in a's
	// h2 only; a cut in a leaves b alone.
	if _, err := a.Hosts()[1].Exec(ctx, "touch", "/var/run/wireguard/mark"); err != nil {
		t.Fatal(err)
	}
	if out, _ := b.Hosts()[1].Exec(ctx, "ls", "-A", "/var/run/wireguard"); strings.TrimSpace(string(out)) != "" {
		t.Errorf("b's h2 sees %q", out)
	}
	if err := a.Cut(a.Hosts()[1]); err != nil {
		t.Fatal(err)
	}
	mustNotPing(t, ctx, a.Hosts()[0], "192.0.2.12")
	mustPing(t, ctx, b.Hosts()[0], "192.0.2.12")
	pids := allPIDs(a)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, a.Prefix, a.Dir, pids)
	mustPing(t, ctx, b.Hosts()[1], "192.0.2.11")
}

func TestLoadAndDestroyAfterTheCreatorDied(t *testing.T) {
	ctx := testCtx(t)
	up := func(t *testing.T) (prefix, dir string, pids []int) {
		tb, err := Up(ctx, Options{Prefix: RandomPrefix(), Hosts: 2, Command: sleeper, Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tb.AddContainer(ctx, tb.Hosts()[1], "app"); err != nil {
			tb.Close()
			t.Fatal(err)
		}
		// The creator "dies": only the state on disk and the processes
		// remain.
		return tb.Prefix, tb.Dir, allPIDs(tb)
	}

	t.Run("load and drive", func(t *testing.T) {
		prefix, dir, pids := up(t)
		tb, err := Load(dir)
		if err != nil {
			Destroy(prefix, dir)
			t.Fatal(err)
		}
		defer tb.Close()
		if tb.Prefix != prefix || len(tb.Hosts()) != 2 || len(tb.Containers()) != 1 {
			t.Fatalf("loaded %s with %d hosts and %d containers", tb.Prefix, len(tb.Hosts()), len(tb.Containers()))
		}
		h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
		if !h1.Running() || !h2.Running() {
			t.Error("loaded hosts do not run")
		}
		mustPing(t, ctx, h1, h2.Underlay.String())
		if err := h1.Kill(); err != nil {
			t.Fatal(err)
		}
		if h1.Running() {
			t.Error("h1 runs after Kill")
		}
		if err := h1.Start(ctx); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, h1.PID())
		if err := tb.Close(); err != nil {
			t.Fatal(err)
		}
		assertGone(t, prefix, dir, pids)
	})

	t.Run("New sweeps stale test testbeds", func(t *testing.T) {
		tb, err := Up(ctx, Options{Prefix: RandomPrefix(), Hosts: 1, Command: sleeper, ephemeral: true})
		if err != nil {
			t.Fatal(err)
		}
		live, err := Up(ctx, Options{Prefix: RandomPrefix(), Hosts: 1, Command: sleeper, ephemeral: true})
		if err != nil {
			tb.Close()
			t.Fatal(err)
		}
		defer live.Close()
		pids := allPIDs(tb)
		// Its owner "died": a PID with a start time no process has.
		tb.mu.Lock()
		tb.st.Owner = &procState{PID: 1<<22 - 1, Start: 1}
		err = tb.saveLocked()
		tb.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		swept, err := sweepStale()
		if err != nil || !slices.Contains(swept, tb.Prefix) || slices.Contains(swept, live.Prefix) {
			t.Errorf("sweepStale = %v, %v; want %s swept and %s kept", swept, err, tb.Prefix, live.Prefix)
		}
		assertGone(t, tb.Prefix, tb.Dir, pids)
		if !live.Hosts()[0].Running() || !exists(live.Dir) {
			t.Error("the live testbed was touched")
		}
	})

	t.Run("destroy without a state file", func(t *testing.T) {
		prefix, dir, pids := up(t)
		if err := os.Remove(filepath.Join(dir, stateFile)); err != nil {
			t.Fatal(err)
		}
		if err := Destroy(prefix, ""); err != nil {
			t.Fatal(err)
		}
		assertGone(t, prefix, dir, pids)
		if err := Destroy(prefix, ""); err != nil {
			t.Errorf("second Destroy: %v", err)
		}
	})
}

func TestHostProcessLifecycle(t *testing.T) {
	tb := New(t, Options{Hosts: 2, Command: sleeper, StopTimeout: time.Second})
	ctx := testCtx(t)
	h := tb.Hosts()[0]
	if !h.Running() {
		t.Fatal("h1 does not run after Up")
	}
	first := h.PID()
	if err := h.Start(ctx); !errors.Is(err, ErrRunning) {
		t.Errorf("Start while running: %v, want ErrRunning", err)
	}
	if err := h.Kill(); err != nil {
		t.Fatal(err)
	}
	if h.Running() || !procGone(first) {
		t.Fatal("the daemon survived Kill")
	}
	if err := h.Kill(); err != nil {
		t.Errorf("Kill of a stopped host: %v", err)
	}
	if err := h.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	second := h.PID()
	if !h.Running() || second == first {
		t.Fatalf("after Restart: running %v, pid %d (was %d)", h.Running(), second, first)
	}
	// It runs inside the host (once nsenter has entered it and exec'd).
	var st syscall.Stat_t
	if err := syscall.Stat(h.Netns, &st); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	var inside string
	for range 100 {
		if inside, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/net", second)); inside == want {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if inside != want {
		t.Errorf("the daemon's netns is %s, want h1's %s", inside, want)
	}
	// Its own session: it does not die with a signal to ours.
	if pgid, _ := syscall.Getpgid(second); pgid != second {
		t.Errorf("daemon pgid %d, want its own %d", pgid, second)
	}
	// sleep ends at SIGTERM: Stop returns well before the SIGKILL timeout.
	if err := h.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if h.Running() {
		t.Error("runs after Stop")
	}
	if err := h.Start(ctx, "extra"); err == nil {
		// sleep 1000 extra: sleep rejects the extra argument and exits.
		for h.Running() && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if !strings.Contains(h.LogTail(5), "start: sleep 1000 extra") || !strings.Contains(h.LogTail(5), "sleep") {
		t.Errorf("log tail:\n%s", h.LogTail(5))
	}
}

func TestDaemonContract(t *testing.T) {
	// The daemon is the test binary itself acting as zlmesh (fake_test.go),
	// started with the default command: it checks the contract's flags,
	// binds its advertise address and reports to the seed over the
	// underlay.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tb := New(t, Options{Hosts: 3, Seed: 2, Binary: self, StopTimeout: 5 * time.Second,
		Args: func(h *Host) []string { return []string{"--tag", "v-" + h.Name} }})
	ctx := testCtx(t)
	if err := tb.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	hosts := tb.Hosts()
	for _, h := range hosts {
		var argv []string
		b, err := os.ReadFile(filepath.Join(h.StateDir, "argv.json"))
		if err != nil || json.Unmarshal(b, &argv) != nil {
			t.Fatalf("%s argv: %v", h.Name, err)
		}
		want := []string{"--name", h.Name, "--state-dir", h.StateDir, "--socket", h.Socket,
			"--advertise-addr", h.Underlay.String(), "--cluster-key-file", tb.KeyFile, "--dns-upstream", "198.51.100.53:53"}
		if h.Name != "h2" {
			want = append(want, "--join", "192.0.2.12:7946")
		}
		want = append(want, "--tag", "v-"+h.Name)
		if !slices.Equal(argv, want) {
			t.Errorf("%s ran up %q\nwant      %q", h.Name, argv, want)
		}
		st, err := h.Client().Status(ctx)
		if err != nil || st.Name != h.Name || st.Version != "v-"+h.Name {
			t.Errorf("%s status: %+v %v", h.Name, st, err)
		}
	}
	if fi, err := os.Stat(tb.KeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v %v", fi, err)
	}
	seed := hosts[1]
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := seed.Client().Status(ctx)
		if err == nil && st.Members == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the seed sees %d members (%v), want 3", st.Members, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Graceful stop: SIGTERM reaches the daemon, which says bye.
	h := hosts[0]
	if err := h.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h.LogTail(3), "fake zlmesh h1: bye") {
		t.Errorf("no clean exit in the log:\n%s", h.LogTail(10))
	}
	if err := h.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	// WaitReady fails fast, with the log, for a daemon that exits.
	h3 := hosts[2]
	if err := h3.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := h3.Start(ctx, "--bogus-flag"); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := h3.WaitReady(ctx); err == nil {
		t.Error("WaitReady of a daemon that exits: no error")
	} else if time.Since(begin) > 5*time.Second {
		t.Errorf("WaitReady took %s to notice", time.Since(begin))
	}
}

func TestAddHost(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tb := New(t, Options{Hosts: 1, Binary: self})
	ctx := testCtx(t)
	h, err := tb.AddHost(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.Name != "h2" || h.Underlay.String() != "192.0.2.12" || h.Running() {
		t.Errorf("added %s at %s, running %v", h.Name, h.Underlay, h.Running())
	}
	if !slices.Contains(h.Command(), "--join") {
		t.Errorf("h2's command does not join: %q", h.Command())
	}
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tb.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	mustPing(t, ctx, h, tb.Hosts()[0].Underlay.String())
	if got := tb.Host("h2"); got != h || tb.Host(tb.Prefix+"-h2") != h || tb.Host("h3") != nil {
		t.Errorf("Host lookups: %v %v %v", got, tb.Host(tb.Prefix+"-h2"), tb.Host("h3"))
	}
}

func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds zlmesh")
	}
	bin := BuildZlmesh(t)
	if again := BuildZlmesh(t); again != bin {
		t.Errorf("second build at %s, first at %s", again, bin)
	}
	out, err := exec.Command(bin, "testbed", "-h").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "zlmesh testbed") {
		t.Errorf("%s testbed -h: %v\n%s", bin, err, out)
	}
	RemoveBinary()
	if exists(bin) {
		t.Errorf("RemoveBinary left %s", bin)
	}
}

// panicEnv makes TestPanickingTest run (in a child test process).
const panicEnv = "ZLTB_PANIC_TEST"

func TestPanickingTest(t *testing.T) {
	if os.Getenv(panicEnv) == "" {
		t.Skip("run by TestCleanupAfterPanic in a child process")
	}
	tb := New(t, Options{Hosts: 2, Command: sleeper})
	fmt.Printf("testbed %s %s\n", tb.Prefix, tb.Dir)
	panic("boom")
}

func TestCleanupAfterPanic(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPanickingTest$", "-test.v")
	cmd.Env = append(os.Environ(), panicEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "panic: boom") {
		t.Fatalf("the child test did not panic (%v):\n%s", err, out)
	}
	var prefix, dir string
	for _, line := range strings.Split(string(out), "\n") {
		if _, err := fmt.Sscanf(line, "testbed %s %s", &prefix, &dir); err == nil && strings.HasPrefix(dir, "/") {
			break
		}
	}
	if prefix == "" || !strings.Contains(string(out), "testbed "+prefix+": removed") {
		t.Fatalf("no testbed made and removed in the child:\n%s", out)
	}
	assertGone(t, prefix, dir, nil)
}

//go:build linux

package e2e

// Podman with its CNI backend puts containers on the mesh through
// zlmesh-cni, on two testbed hosts.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/testbed"
)

// podmanImage is the test image: busybox-static imported from a directory.
const podmanImage = "localhost/zlmesh-busybox"

// Podman is a private Podman for one test: its own containers.conf (CNI
// backend, runc, low default ulimits, cgroupfs, events to a file), storage
// (vfs) and run dirs, and CNI configuration dir, all under Dir; nothing of
// the machine's Podman configuration or storage is used or changed. Every
// command runs inside a testbed host's network namespace (nsenter --net,
// which keeps the machine's mounts and cgroups), so the CNI plugins run
// there and a zlmesh network reaches that host's node.
type Podman struct {
	Dir    string
	NetDir string // CNI network configurations
	env    []string
}

// newPodman makes the private Podman with the busybox image imported, or
// skips the test when Podman is not installed.
func newPodman(t *testing.T, cniBin string) *Podman {
	t.Helper()
	for _, p := range []string{"podman", "runc", "busybox", "nsenter"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s is not installed (scripts/deps.sh installs podman, runc and busybox-static)", p)
		}
	}
	dir, err := os.MkdirTemp("", "zlpm-")
	if err != nil {
		t.Fatal(err)
	}
	// Machine paths Podman, runc and libcni write whatever their
	// configuration says (libcni's result cache, containers/image's blob
	// info cache, runc's state root): removed afterwards when this test
	// made them.
	var made []string
	for _, d := range []string{"/var/lib/cni", "/var/lib/containers", "/run/runc"} {
		if _, err := os.Stat(d); os.IsNotExist(err) {
			made = append(made, d)
		}
	}
	p := &Podman{Dir: dir, NetDir: filepath.Join(dir, "net.d")}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// Every container of this Podman, then its storage and files.
		p.cmd(ctx, "", "rm", "--all", "--force", "--time", "0").Run()
		p.cmd(ctx, "", "system", "reset", "--force").Run()
		exec.Command("umount", "-R", filepath.Join(dir, "root")).Run()
		os.RemoveAll(dir)
		for _, d := range made {
			os.RemoveAll(d)
		}
	})
	for _, d := range []string{p.NetDir, filepath.Join(dir, "tmp"), filepath.Join(dir, "rootfs", "bin"), filepath.Join(dir, "rootfs", "etc"), filepath.Join(dir, "rootfs", "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf(`[containers]
# No CAP_SYS_RESOURCE here, and conmon runs with a hard nproc of 32768: Podman's
# defaults (nofile 1048576, nproc 4194304) cannot be set, so runc fails.
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[network]
network_backend = "cni"
cni_plugin_dirs = [%q, "/usr/lib/cni"]
network_config_dir = %q
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = %q
`, cniBin, p.NetDir, filepath.Join(dir, "events.log"))
	storage := fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n", filepath.Join(dir, "root"), filepath.Join(dir, "runroot"))
	for name, body := range map[string]string{"containers.conf": conf, "storage.conf": storage,
		"rootfs/etc/passwd": "root:x:0:0:root:/root:/bin/sh\n", "rootfs/etc/group": "root:x:0:\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p.env = append(os.Environ(), "CONTAINERS_CONF="+filepath.Join(dir, "containers.conf"),
		"CONTAINERS_STORAGE_CONF="+filepath.Join(dir, "storage.conf"), "TMPDIR="+filepath.Join(dir, "tmp"))

	// The image: busybox and its applets as symlinks.
	bb, _ := exec.LookPath("busybox")
	out, err := exec.Command("cp", bb, filepath.Join(dir, "rootfs", "bin", "busybox")).CombinedOutput()
	if err != nil {
		t.Fatalf("copy busybox: %v: %s", err, out)
	}
	list, err := exec.Command(bb, "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range strings.Fields(string(list)) {
		if a != "busybox" {
			os.Symlink("busybox", filepath.Join(dir, "rootfs", "bin", a))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tarball := filepath.Join(dir, "rootfs.tar")
	if out, err := exec.Command("tar", "-C", filepath.Join(dir, "rootfs"), "-cf", tarball, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	out, err = p.cmd(ctx, "", "import", tarball, podmanImage).CombinedOutput()
	if err != nil {
		t.Fatalf("podman import: %v: %s", err, out)
	}
	return p
}

// cmd is `podman <args>` in netns ("" for the machine's own).
func (p *Podman) cmd(ctx context.Context, netns string, args ...string) *exec.Cmd {
	argv := append([]string{"podman", "--tmpdir", filepath.Join(p.Dir, "libpod")}, args...)
	if netns != "" {
		argv = append([]string{"nsenter", "--net=" + netns, "--"}, argv...)
	}
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	c.Env = p.env
	return c
}

// Run runs podman args inside host h and returns its output.
func (p *Podman) Run(ctx context.Context, h *testbed.Host, args ...string) (string, error) {
	out, err := p.cmd(ctx, h.Netns, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("podman %s in %s: %v: %s", strings.Join(args, " "), h.Name, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// AddNetwork writes a zlmesh network configuration for host h.
func (p *Podman) AddNetwork(t *testing.T, name, service string, h *testbed.Host) {
	t.Helper()
	c := fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[{"type":"zlmesh","socket":%q,"service":%q,"capabilities":{"aliases":true}}]}`,
		name, h.Socket, service)
	if err := os.WriteFile(filepath.Join(p.NetDir, name+".conflist"), []byte(c), 0o644); err != nil {
		t.Fatal(err)
	}
}

// hostClean fails unless h has no attachment, zlmesh veth or lease left
// (other than those of keep).
func hostClean(ctx context.Context, h *testbed.Host, keep ...string) error {
	list, err := h.Client().Attachments(ctx)
	if err != nil {
		return err
	}
	kept := map[string]bool{}
	for _, k := range keep {
		kept[k] = true
	}
	var left []string
	for _, a := range list {
		if !kept[a.Container] {
			left = append(left, "attachment "+a.Container)
		}
	}
	objs, err := hostObjects(ctx, h)
	if err != nil {
		return err
	}
	if len(objs.Veths) != len(list) {
		left = append(left, fmt.Sprintf("veths %v for %d attachments", objs.Veths, len(list)))
	}
	leases, _, err := stateOnDisk(h)
	if err != nil {
		return err
	}
	for id := range leases {
		if !kept[id] {
			left = append(left, "lease "+id)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("%s still has %s", h.Name, strings.Join(left, ", "))
	}
	return nil
}

// TestPodman runs Podman (CNI backend) on two hosts: web1 on h1 in service
// web, db1 on h2 in service db, both started with `podman run --network`.
// They ping each other across the hosts by mesh name, resolved through the
// resolv.conf Podman wrote from the ADD result; an HTTP server in web1
// answers db1; a name outside the mesh is forwarded upstream. The node lists
// them with their CNI origin. `podman stop` + `podman rm` leaves no
// attachment, veth or lease; neither does `podman run --rm`.
func TestPodman(t *testing.T) {
	bin := cniBinDir(t)
	start := time.Now()
	pm := newPodman(t, bin)
	t.Logf("podman ready with its image in %v", time.Since(start).Round(time.Millisecond))
	tb := cluster(t, 2)
	h1, h2 := tb.Host("h1"), tb.Host("h2")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	pm.AddNetwork(t, "zl-h1", "web", h1)
	pm.AddNetwork(t, "zl-h2", "db", h2)

	t0 := time.Now()
	web1, err := pm.Run(ctx, h1, "run", "-d", "--name", "web1", "--network", "zl-h1", podmanImage,
		"sh", "-c", "mkdir -p /www && echo hello-from-web1 > /www/index.html && exec httpd -f -p 8080 -h /www")
	if err != nil {
		t.Fatal(err, "\n", h1.LogTail(20))
	}
	if _, err := pm.Run(ctx, h2, "run", "-d", "--name", "db1", "--network", "zl-h2", podmanImage, "sleep", "3600"); err != nil {
		t.Fatal(err, "\n", h2.LogTail(20))
	}
	t.Logf("two containers started in %v", time.Since(t0).Round(time.Millisecond))

	// The node knows them under their Podman names, with their origin.
	a1, ok := cniAttachment(t, h1, "zl-h1", web1)
	if !ok || a1.Container != "web1" || a1.Service != "web" {
		t.Fatalf("h1's attachment for web1 (%s): %+v", web1, a1)
	}
	if _, err := pm.Run(ctx, h1, "exec", "web1", "ip", "addr", "show", "eth0"); err != nil {
		t.Fatal(err)
	}
	resolv, err := pm.Run(ctx, h1, "exec", "web1", "cat", "/etc/resolv.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(resolv, "nameserver "+wantDNS) || !strings.Contains(resolv, wantSearch) {
		t.Fatalf("web1's resolv.conf does not name the mesh DNS %s and search %s:\n%s", wantDNS, wantSearch, resolv)
	}

	// Across the hosts by mesh name, both ways; HTTP from db1 to web1; a
	// non-mesh name through the mesh DNS to the upstream resolver.
	eventually(t, 30*time.Second, func() error {
		if _, err := pm.Run(ctx, h1, "exec", "web1", "ping", "-c", "1", "-W", "2", "db1.db.zl"); err != nil {
			return err
		}
		_, err := pm.Run(ctx, h2, "exec", "db1", "ping", "-c", "1", "-W", "2", "web1.web.zl")
		return err
	})
	body, err := pm.Run(ctx, h2, "exec", "db1", "wget", "-q", "-O", "-", "http://web1.web.zl:8080/")
	if err != nil || body != "hello-from-web1" {
		t.Fatalf("HTTP from db1 to web1: %q, %v", body, err)
	}
	out, err := pm.Run(ctx, h2, "exec", "db1", "nslookup", "outside.test")
	if err != nil || !strings.Contains(out, testbed.OutsideAddr.String()) {
		t.Fatalf("nslookup outside.test in db1: %v\n%s", err, out)
	}

	// stop + rm detaches; run --rm leaves nothing.
	t0 = time.Now()
	if _, err := pm.Run(ctx, h1, "stop", "-t", "0", "web1"); err != nil {
		t.Fatal(err)
	}
	if _, err := pm.Run(ctx, h1, "rm", "web1"); err != nil {
		t.Fatal(err)
	}
	t.Logf("stop and rm in %v", time.Since(t0).Round(time.Millisecond))
	if err := hostClean(ctx, h1); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	out, err = pm.Run(ctx, h1, "run", "--rm", "--name", "once", "--network", "zl-h1", podmanImage, "ping", "-c", "1", "-W", "5", "db1.db.zl")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("run --rm with a ping across the mesh in %v", time.Since(t0).Round(time.Millisecond))
	if err := hostClean(ctx, h1); err != nil {
		t.Fatal(err)
	}
	if _, err := pm.Run(ctx, h2, "rm", "-f", "-t", "0", "db1"); err != nil {
		t.Fatal(err)
	}
	if err := hostClean(ctx, h2); err != nil {
		t.Fatal(err)
	}
}

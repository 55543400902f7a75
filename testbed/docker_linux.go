package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Container runtimes in testbed hosts: Docker here (and Podman in e2e)
// run inside a host's network namespace only (nsenter --net), never its
// mount namespace: a host's mount namespace remounts /sys and so loses the
// cgroup mounts runc needs. Their files live in directories of their own.

// BusyboxRootfs writes a minimal image tree under dir/rootfs (busybox from
// the machine's busybox-static, every applet as a symlink to it, /etc/passwd
// and /etc/group for root) and packs it as dir/rootfs.tar, which `docker
// import` or `podman import` turns into an image: no registry is needed.
// It returns the tarball's path.
func BusyboxRootfs(dir string) (string, error) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return "", fmt.Errorf("busybox rootfs: %w (scripts/deps.sh installs busybox-static)", err)
	}
	root := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return "", err
		}
	}
	if out, err := exec.Command("cp", bb, filepath.Join(root, "bin", "busybox")).CombinedOutput(); err != nil {
		return "", fmt.Errorf("copy busybox: %v: %s", err, out)
	}
	list, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return "", fmt.Errorf("busybox --list: %w", err)
	}
	for _, a := range strings.Fields(string(list)) {
		if a != "busybox" {
			if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil && !errors.Is(err, os.ErrExist) {
				return "", err
			}
		}
	}
	for name, body := range map[string]string{"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n", "etc/group": "root:x:0:\n"} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o644); err != nil {
			return "", err
		}
	}
	tarball := filepath.Join(dir, "rootfs.tar")
	if out, err := exec.Command("tar", "-C", root, "-cf", tarball, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("tar busybox rootfs: %v: %s", err, out)
	}
	return tarball, nil
}

// DockerBinary and DockerdBinary are Debian's docker.io (the client at
// /usr/bin, not whatever else is first on PATH).
const (
	DockerBinary  = "/usr/bin/docker"
	DockerdBinary = "/usr/sbin/dockerd"
)

// dockerPluginSpecDir is where dockerd looks for plugin spec files (besides
// sockets in /run/docker/plugins); both are machine-wide, so every testbed
// driver gets a name (and spec file) of its own.
const dockerPluginSpecDir = "/etc/docker/plugins"

// dockerTrustKey is the key dockerd 20.10 makes in the machine's /etc/docker.
const dockerTrustKey = "/etc/docker/key.json"

// Dockerd is one dockerd running in a testbed host's network namespace,
// with everything of its own under Dir: data root, exec root (containerd's
// state and socket too), pid file, API socket, log.
type Dockerd struct {
	Host   *Host
	Dir    string
	Socket string // the API socket: docker -H unix://<Socket>
	// Plugin is the name dockerd knows the host's zlmesh driver by, from
	// a spec file pointing at the node's plugin socket ("" when none).
	Plugin string

	argv     []string
	cmd      *exec.Cmd
	spec     string   // the spec file made, removed at Stop
	madeKey  bool     // /etc/docker/key.json was not there before: removed at Stop
	madeDirs []string // machine dirs made for the spec file, removed at Stop when empty
	exited   chan struct{}
}

// DockerdOptions configures StartDockerd.
type DockerdOptions struct {
	// Dir is dockerd's directory; it must be short (socket paths) and is
	// removed at Stop.
	Dir string
	// PluginSocket is the node's Docker driver socket (machine-visible);
	// "" registers no plugin.
	PluginSocket string
	// PluginName names the driver for this dockerd; it should carry the
	// testbed's prefix and the host name.
	PluginName string
	// DefaultBridge keeps Docker's default bridge network (docker0, in the
	// host's namespace, without iptables rules); false is --bridge=none.
	DefaultBridge bool
	// Args are more dockerd flags (--dns, ...).
	Args []string
}

// StartDockerd starts dockerd inside h's network namespace (nsenter --net)
// and waits until its API answers. Stop stops it by pid and removes what
// it and StartDockerd made.
func StartDockerd(ctx context.Context, h *Host, o DockerdOptions) (*Dockerd, error) {
	if _, err := os.Stat(DockerdBinary); err != nil {
		return nil, fmt.Errorf("dockerd: %w (scripts/deps.sh installs docker.io)", err)
	}
	d := &Dockerd{Host: h, Dir: o.Dir, Socket: filepath.Join(o.Dir, "docker.sock")}
	for _, sub := range []string{"data", "exec"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	// dockerd writes its trust key to /etc/docker/key.json, whatever its
	// other paths: removed at Stop when it was not there before.
	if _, err := os.Stat(dockerTrustKey); errors.Is(err, os.ErrNotExist) {
		d.madeKey = true
	}
	if o.PluginSocket != "" {
		if err := d.addSpec(o.PluginName, o.PluginSocket); err != nil {
			d.cleanup()
			return nil, err
		}
	}
	argv := []string{"nsenter", "--net=" + h.Netns, "--", DockerdBinary,
		"--data-root", filepath.Join(o.Dir, "data"),
		"--exec-root", filepath.Join(o.Dir, "exec"),
		"--pidfile", filepath.Join(o.Dir, "docker.pid"),
		"-H", "unix://" + d.Socket,
		"--iptables=false", "--ip6tables=false", "--ip-masq=false", "--userland-proxy=false",
		"--storage-driver=vfs", "--exec-opt", "native.cgroupdriver=cgroupfs", "--log-level=warn",
	}
	if !o.DefaultBridge {
		argv = append(argv, "--bridge=none")
	}
	d.argv = append(argv, o.Args...)
	if err := d.start(ctx); err != nil {
		d.Stop()
		return nil, err
	}
	return d, nil
}

// start starts dockerd and waits for its API.
func (d *Dockerd) start(ctx context.Context) error {
	h := d.Host
	log, err := os.OpenFile(filepath.Join(d.Dir, "dockerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	d.exited = make(chan struct{})
	d.cmd = exec.Command(d.argv[0], d.argv[1:]...)
	d.cmd.Stdout, d.cmd.Stderr = log, log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGTERM}
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("start dockerd in %s: %w", h.Name, err)
	}
	exited := d.exited
	go func() { d.cmd.Wait(); close(exited) }()
	for {
		if _, err := d.Run(ctx, "version", "--format", "{{.Server.Version}}"); err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("dockerd in %s exited; log:\n%s", h.Name, d.LogTail(20))
		case <-ctx.Done():
			return fmt.Errorf("dockerd in %s not ready: %w; log:\n%s", h.Name, ctx.Err(), d.LogTail(20))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Crash kills dockerd (SIGKILL, as a crash would end it) and waits until
// it and the containerd it started are gone; the containers' shims (and
// so the containers) stay. containerd dies of its parent-death signal, a
// moment after dockerd: a dockerd started again before that finds
// containerd's pid alive, waits for its socket, which is already gone,
// and gives up ("timeout waiting for containerd to start").
func (d *Dockerd) Crash() error {
	if d.PID() == 0 {
		return fmt.Errorf("dockerd in %s is not running", d.Host.Name)
	}
	containerd := readPID(filepath.Join(d.Dir, "exec", "containerd", "containerd.pid"))
	d.cmd.Process.Kill()
	<-d.exited
	if containerd > 0 {
		deadline := time.Now().Add(20 * time.Second)
		for syscall.Kill(containerd, 0) == nil {
			if time.Now().After(deadline) {
				return fmt.Errorf("dockerd in %s killed, but its containerd (pid %d) is still running after 20s", d.Host.Name, containerd)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// readPID reads a pid file (0 when missing or not a pid).
func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0
	}
	return pid
}

// Restart starts dockerd again with the same flags and waits for its API.
func (d *Dockerd) Restart(ctx context.Context) error {
	if d.PID() != 0 {
		return fmt.Errorf("dockerd in %s is running", d.Host.Name)
	}
	return d.start(ctx)
}

// addSpec writes /etc/docker/plugins/<name>.spec pointing at socket,
// making the directories it needs (and noting them for removal).
func (d *Dockerd) addSpec(name, socket string) error {
	if name == "" || strings.ContainsAny(name, "/ ") {
		return fmt.Errorf("docker plugin name %q", name)
	}
	for _, dir := range []string{filepath.Dir(dockerPluginSpecDir), dockerPluginSpecDir} {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
			d.madeDirs = append([]string{dir}, d.madeDirs...)
		}
	}
	d.spec = filepath.Join(dockerPluginSpecDir, name+".spec")
	if err := os.WriteFile(d.spec, []byte("unix://"+socket+"\n"), 0o644); err != nil {
		return err
	}
	d.Plugin = name
	return nil
}

// Run runs the docker client against this dockerd and returns its trimmed
// combined output; a failure carries the output.
func (d *Dockerd) Run(ctx context.Context, args ...string) (string, error) {
	argv := append([]string{"-H", "unix://" + d.Socket}, args...)
	out, err := exec.CommandContext(ctx, DockerBinary, argv...).CombinedOutput()
	if err != nil {
		return strings.TrimSpace(string(out)), fmt.Errorf("docker %s (%s): %v: %s", strings.Join(args, " "), d.Host.Name, err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// LogTail returns the last n lines of dockerd's log.
func (d *Dockerd) LogTail(n int) string { return tail(filepath.Join(d.Dir, "dockerd.log"), n) }

// PID is dockerd's process id (0 when not running).
func (d *Dockerd) PID() int {
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	select {
	case <-d.exited:
		return 0
	default:
		return d.cmd.Process.Pid
	}
}

// Stop removes every container (docker rm -f), stops dockerd by its pid
// (SIGTERM, then SIGKILL after 20 s), unmounts what is left under Dir, and
// removes Dir and the plugin spec file. It is idempotent.
func (d *Dockerd) Stop() error {
	var errs []error
	if d.PID() != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if ids, err := d.Run(ctx, "ps", "-aq"); err == nil && ids != "" {
			d.Run(ctx, append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
		}
		cancel()
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(20 * time.Second):
			d.cmd.Process.Kill()
			<-d.exited
		}
	}
	// containerd and the containers' shims outlive a killed dockerd: end
	// them by the pid files they wrote under Dir.
	for _, pid := range pidFiles(d.Dir) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	errs = append(errs, d.cleanup())
	return errors.Join(errs...)
}

// cleanup unmounts and removes Dir and the spec file.
func (d *Dockerd) cleanup() error {
	if d.Dir != "" {
		if mounts, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
			var under []string
			for _, line := range strings.Split(string(mounts), "\n") {
				f := strings.Fields(line)
				if len(f) > 4 && (f[4] == d.Dir || strings.HasPrefix(f[4], d.Dir+"/")) {
					under = append(under, f[4])
				}
			}
			for i := len(under) - 1; i >= 0; i-- { // deepest last mounted first
				syscall.Unmount(under[i], syscall.MNT_DETACH)
			}
		}
	}
	var errs []error
	if d.Dir != "" {
		if err := os.RemoveAll(d.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	if d.spec != "" {
		if err := os.Remove(d.spec); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		d.spec = ""
	}
	if d.madeKey {
		os.Remove(dockerTrustKey)
		d.madeKey = false
		if len(d.madeDirs) == 0 {
			os.Remove(filepath.Dir(dockerTrustKey)) // only when empty
		}
	}
	for _, dir := range d.madeDirs {
		os.Remove(dir) // only when empty: another testbed's spec may be there
	}
	d.madeDirs = nil
	return errors.Join(errs...)
}

// pidFiles reads the process ids in the *.pid files under dir (containerd's,
// its shims', the containers' init), dockerd's own docker.pid aside.
func pidFiles(dir string) []int {
	var out []int
	filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() || !strings.HasSuffix(path, ".pid") || path == filepath.Join(dir, "docker.pid") {
			return nil
		}
		if pid := readPID(path); pid > 0 {
			out = append(out, pid)
		}
		return nil
	})
	return out
}

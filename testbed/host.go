package testbed

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/zlmesh/zlmesh/api"
)

// Host is one emulated machine: a network namespace on the underlay plus a
// private mount namespace (see the package documentation), in which its
// daemon (zlmesh, or Options.Command) runs. Its exported fields are fixed
// when it is made. Methods are safe for concurrent use; after the testbed's
// Close they fail with ErrClosed (Running reports false).
type Host struct {
	Name      string // "h1"
	Index     int    // 1 for h1
	NetnsName string // "zt-h1"
	Netns     string // "/run/netns/zt-h1"
	// Underlay is the underlay address zlmesh advertises and other hosts
	// --join: 192.0.2.11 for h1, or 2001:db8:0:2::11 on an IPv6-only
	// underlay (Options.Underlay).
	Underlay netip.Addr
	// Underlay6 is the host's IPv6 underlay address (2001:db8:0:2::11 for
	// h1), the zero Addr when the underlay has no IPv6.
	Underlay6 netip.Addr
	// Dir is the host's machine-visible directory <dir>/<host>; inside the
	// host it is also /run/zlmesh.
	Dir string
	// StateDir (<Dir>/state) is --state-dir; inside the host it is also
	// /var/lib/zlmesh.
	StateDir string
	// Socket (<Dir>/zlmesh.sock) is --socket; the test process reaches it
	// directly (Client).
	Socket string
	// LogFile (<Dir>/zlmesh.log) receives the daemon's stdout and stderr,
	// appended across restarts.
	LogFile string
	// WireGuardDir (<Dir>/wireguard) is /var/run/wireguard inside the host.
	WireGuardDir string
	// ResolvConf (<Dir>/resolv.conf) is /etc/resolv.conf inside the host:
	// the outside resolver.
	ResolvConf string
	// Userspace: the daemon runs in userspace mode as UserspaceUser with
	// no capabilities, and the host has no /dev/net/tun.
	Userspace bool

	tb *Testbed
	st *hostState // guarded by tb.mu

	clientOnce sync.Once
	client     *api.Client
}

func (h *Host) String() string { return h.Name }

// GossipAddr is the address --join points at when h is the seed.
func (h *Host) GossipAddr() netip.AddrPort { return netip.AddrPortFrom(h.Underlay, GossipPort) }

// Command returns the daemon command chosen when the host was made (without
// Start's extras). The slice is the caller's.
func (h *Host) Command() []string {
	h.tb.mu.Lock()
	defer h.tb.mu.Unlock()
	return slices.Clone(h.st.Command)
}

// Start starts the host's daemon with extra arguments appended to its
// command, detached: it runs in its own session, inside the host, until
// Stop, Kill or Close, even after this process exits. It does not wait for
// readiness (WaitReady does), and ctx does not bound the daemon's life.
// Starting a running host fails with ErrRunning.
func (h *Host) Start(ctx context.Context, extra ...string) error {
	h.tb.mu.Lock()
	cmd := slices.Clone(h.st.Command)
	h.tb.mu.Unlock()
	if len(cmd) == 0 {
		return fmt.Errorf("start %s: no command (Options.Binary and Options.Command are empty)", h.Name)
	}
	return h.startArgv(append(cmd, extra...))
}

func (h *Host) startArgv(argv []string) error {
	h.tb.mu.Lock()
	defer h.tb.mu.Unlock()
	if h.tb.closed {
		return ErrClosed
	}
	if alive(h.st.Daemon) {
		return fmt.Errorf("start %s: %s: %w", h.Name, h.st.Daemon, ErrRunning)
	}
	if !alive(h.st.Holder) {
		return fmt.Errorf("start %s: the host's namespace holder is gone: %w", h.Name, ErrNotRunning)
	}
	log, err := openLog(h.LogFile)
	if err != nil {
		return fmt.Errorf("start %s: %w", h.Name, err)
	}
	defer log.Close()
	fmt.Fprintf(log, "=== testbed: %s start: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	execArgv := argv
	if h.st.Userspace {
		if execArgv, err = unprivilegedArgv(argv); err != nil {
			return fmt.Errorf("start %s: %w", h.Name, err)
		}
	}
	cmd := command(nil, hostArgv(h.st.Holder.PID, execArgv))
	cmd.Stdout, cmd.Stderr = log, log
	p, err := spawn(cmd, "", h.Name)
	if err != nil {
		return err
	}
	p.Argv, p.Log = argv, h.LogFile
	h.st.Daemon, h.st.LastArgv = p, argv
	h.tb.opts.Logf("testbed %s: %s started (pid %d)", h.tb.Prefix, h.Name, p.PID)
	return h.tb.saveLocked()
}

// Running reports whether the host's daemon runs.
func (h *Host) Running() bool {
	h.tb.mu.Lock()
	defer h.tb.mu.Unlock()
	return !h.tb.closed && alive(h.st.Daemon)
}

// PID returns the daemon's process ID, or 0 when it does not run.
func (h *Host) PID() int {
	h.tb.mu.Lock()
	defer h.tb.mu.Unlock()
	if h.tb.closed || !alive(h.st.Daemon) {
		return 0
	}
	return h.st.Daemon.PID
}

// Stop stops the daemon: SIGTERM to its process group, then SIGKILL after
// Options.StopTimeout (or when ctx ends), and waits until it is gone.
// Stopping a host that does not run succeeds.
func (h *Host) Stop(ctx context.Context) error {
	return h.end(func(p *procState) error { return stopProc(ctx, p, h.tb.opts.StopTimeout) }, "stopped")
}

// Kill SIGKILLs the daemon's process group (the daemon gets no chance to
// clean up, like a crash) and waits until it is gone. Killing a host that
// does not run succeeds.
func (h *Host) Kill() error {
	return h.end(killProc, "killed")
}

func (h *Host) end(how func(*procState) error, verb string) error {
	h.tb.mu.Lock()
	if h.tb.closed {
		h.tb.mu.Unlock()
		return ErrClosed
	}
	p := h.st.Daemon
	h.tb.mu.Unlock()
	if p == nil {
		return nil
	}
	if err := how(p); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	h.tb.mu.Lock()
	defer h.tb.mu.Unlock()
	if h.st.Daemon == p {
		h.st.Daemon = nil
		h.tb.opts.Logf("testbed %s: %s %s", h.tb.Prefix, h.Name, verb)
		return h.tb.saveLocked()
	}
	return nil
}

// Restart stops the daemon (like Stop) and starts it again with the argv of
// its last Start (the command plus the extras given then).
func (h *Host) Restart(ctx context.Context) error {
	if err := h.Stop(ctx); err != nil {
		return err
	}
	h.tb.mu.Lock()
	argv := slices.Clone(h.st.LastArgv)
	if len(argv) == 0 {
		argv = slices.Clone(h.st.Command)
	}
	h.tb.mu.Unlock()
	if len(argv) == 0 {
		return fmt.Errorf("restart %s: no command", h.Name)
	}
	return h.startArgv(argv)
}

// Client returns a control-socket client for the host's Socket (one per
// host, shared; do not Close it).
func (h *Host) Client() *api.Client {
	h.clientOnce.Do(func() { h.client = api.NewClient(h.Socket) })
	return h.client
}

// WaitReady waits until the host's control socket answers GET /v1/status.
// It fails early, with the tail of the log, when the daemon is not running.
func (h *Host) WaitReady(ctx context.Context) error {
	var last error
	for {
		if !h.Running() {
			return fmt.Errorf("%s is not running (last error: %v); log:\n%s", h.Name, last, h.LogTail(20))
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := h.Client().Status(sctx)
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last error: %v); log:\n%s", h.Name, ctx.Err(), last, h.LogTail(20))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// holderPID returns the PID of the host's holder, or an error when it is
// gone (then nothing can run inside the host).
func (h *Host) holderPID() (int, error) {
	h.tb.mu.Lock()
	defer h.tb.mu.Unlock()
	if h.tb.closed {
		return 0, ErrClosed
	}
	if !alive(h.st.Holder) {
		return 0, fmt.Errorf("host %s: the namespace holder is gone: %w", h.Name, ErrNotRunning)
	}
	return h.st.Holder.PID, nil
}

// Cmd returns a command that runs argv inside the host (its network and
// mount namespaces), for callers that wire its input and output themselves.
// Relative paths in argv resolve from /. A nil ctx ties it to no context.
func (h *Host) Cmd(ctx context.Context, argv ...string) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("exec in %s: empty command", h.Name)
	}
	pid, err := h.holderPID()
	if err != nil {
		return nil, err
	}
	return command(ctx, hostArgv(pid, argv)), nil
}

// Exec runs argv inside the host and returns its combined output; a non-zero
// exit is an error that carries the output.
func (h *Host) Exec(ctx context.Context, argv ...string) ([]byte, error) {
	cmd, err := h.Cmd(ctx, argv...)
	if err != nil {
		return nil, err
	}
	return run(cmd, h.Name, argv)
}

// Ping sends one ICMP echo request from the host to addr (an IPv4 or IPv6
// address) and waits for the reply up to PingTimeout or until ctx ends. It
// uses a raw socket opened inside the host's network namespace, no ping
// binary.
func (h *Host) Ping(ctx context.Context, addr string) error {
	_, err := ping(ctx, h.NetnsName, addr)
	return err
}

// PingRTT is Ping that also returns the round-trip time.
func (h *Host) PingRTT(ctx context.Context, addr string) (time.Duration, error) {
	return ping(ctx, h.NetnsName, addr)
}

// StartProcess starts argv in the background inside the host (a test server,
// say). It runs until Process.Stop or Close.
func (h *Host) StartProcess(ctx context.Context, argv ...string) (*Process, error) {
	pid, err := h.holderPID()
	if err != nil {
		return nil, err
	}
	return h.tb.startBackground(hostArgv(pid, argv), argv, h.Name)
}

// LogTail returns the last n lines of the daemon's log, for failure
// messages.
func (h *Host) LogTail(n int) string { return tail(h.LogFile, n) }

// ReadLog returns the whole daemon log.
func (h *Host) ReadLog() (string, error) {
	b, err := os.ReadFile(h.LogFile)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	return string(b), err
}

package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// children are the processes this process started, by PID. Their reaper
// goroutine closes done once Wait returned, so a process that exited is never
// mistaken for a running one, and none is left a zombie while this process
// lives. Processes started by another process (a testbed loaded from its
// state file) are watched through /proc instead.
var children sync.Map // int → *child

type child struct {
	start uint64
	done  chan struct{}
}

// spawn starts cmd in its own session, detached from this process's lifetime.
// If netns is not empty, cmd is forked from a thread inside that network
// namespace (see inNetns), so the child lives there. where names the place
// for the state file.
func spawn(cmd *exec.Cmd, netns, where string) (*procState, error) {
	cmd.SysProcAttr = detachedAttr()
	var err error
	if netns != "" {
		err = inNetns(netns, cmd.Start)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", strings.Join(cmd.Args, " "), where, err)
	}
	pid := cmd.Process.Pid
	// Until Wait below runs the process is at least a zombie, so its
	// /proc entry is still there.
	start, _, err := procStartTime(pid)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("start %s in %s: read its start time: %w", cmd.Args[0], where, err)
	}
	c := &child{start: start, done: make(chan struct{})}
	children.Store(pid, c)
	go func() {
		cmd.Wait()
		close(c.done)
		children.CompareAndDelete(pid, c)
	}()
	return &procState{PID: pid, Start: start, Argv: cmd.Args, Where: where}, nil
}

// alive reports whether p still runs (and is the process that was started,
// not a later one with a recycled PID).
func alive(p *procState) bool {
	if p == nil || p.PID <= 0 {
		return false
	}
	if v, ok := children.Load(p.PID); ok {
		if c := v.(*child); c.start == p.Start {
			select {
			case <-c.done:
				return false
			default:
				return true
			}
		}
	}
	start, zombie, err := procStartTime(p.PID)
	return err == nil && start == p.Start && !zombie
}

// signalProc sends sig to p's process group if p is alive.
func signalProc(p *procState, sig syscall.Signal) error {
	if !alive(p) {
		return nil
	}
	if err := killGroup(p.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v to %s: %w", sig, p, err)
	}
	return nil
}

// waitGone waits until p has exited or ctx ends.
func waitGone(ctx context.Context, p *procState) error {
	if v, ok := children.Load(p.PID); ok {
		if c := v.(*child); c.start == p.Start {
			select {
			case <-c.done:
				return nil
			case <-ctx.Done():
				return fmt.Errorf("wait for %s to exit: %w", p, ctx.Err())
			}
		}
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for alive(p) {
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("wait for %s to exit: %w", p, ctx.Err())
		}
	}
	return nil
}

// killWait is how long a SIGKILLed process may take to disappear.
const killWait = 5 * time.Second

// stopProc sends SIGTERM, waits up to grace (or until ctx ends), then sends
// SIGKILL and waits for the process to be gone.
func stopProc(ctx context.Context, p *procState, grace time.Duration) error {
	if !alive(p) {
		return nil
	}
	if err := signalProc(p, syscall.SIGTERM); err != nil {
		return err
	}
	gctx, cancel := context.WithTimeout(ctx, grace)
	err := waitGone(gctx, p)
	cancel()
	if err == nil {
		return nil
	}
	return killProc(p)
}

// killProc sends SIGKILL to p's process group and waits for p to be gone.
func killProc(p *procState) error {
	if err := signalProc(p, syscall.SIGKILL); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), killWait)
	defer cancel()
	return waitGone(ctx, p)
}

// hostArgv is argv run inside a host: in the network and mount namespaces of
// its holder process.
func hostArgv(holder int, argv []string) []string {
	return append([]string{"nsenter", "--target", fmt.Sprint(holder), "--net", "--mount", "--"}, argv...)
}

// netnsArgv is argv run in a network namespace, with the machine's mounts.
func netnsArgv(ns string, argv []string) []string {
	return append([]string{"nsenter", "--net=" + netnsPath(ns), "--"}, argv...)
}

// containerArgv is argv run in a container: `ip netns exec` also binds
// /etc/netns/<ns>/resolv.conf over /etc/resolv.conf for it.
func containerArgv(ns string, argv []string) []string {
	return append([]string{"ip", "netns", "exec", ns}, argv...)
}

// command builds an exec.Cmd for argv (the program first); with a nil ctx
// the command is not tied to any context.
func command(ctx context.Context, argv []string) *exec.Cmd {
	if ctx == nil {
		return exec.Command(argv[0], argv[1:]...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// A grandchild that keeps the output pipe open must not keep Wait
	// blocked once ctx ended.
	cmd.WaitDelay = time.Second
	return cmd
}

// run runs cmd and returns its combined output; a failure carries the
// command, the place and the output.
func run(cmd *exec.Cmd, where string, userArgv []string) ([]byte, error) {
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if len(msg) > 2000 {
			msg = "…" + msg[len(msg)-2000:]
		}
		if msg != "" {
			return out, fmt.Errorf("%s in %s: %w: %s", strings.Join(userArgv, " "), where, err, msg)
		}
		return out, fmt.Errorf("%s in %s: %w", strings.Join(userArgv, " "), where, err)
	}
	return out, nil
}

// openLog opens a log file for appending.
func openLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	return f, nil
}

// tail returns the last n lines of the file at path ("" if it cannot be
// read).
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil || n <= 0 {
		return ""
	}
	s := strings.TrimRight(string(b), "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Process is a background program the testbed started in a host, a
// container or the outside namespace (StartProcess, StartOutside). It runs in
// its own session until Stop or the testbed's Close; its stdout and stderr go
// to Log. Safe for concurrent use.
type Process struct {
	// Log is the file that receives the process's stdout and stderr.
	Log string
	tb  *Testbed
	p   *procState
}

// PID returns the process ID.
func (p *Process) PID() int { return p.p.PID }

// Running reports whether the process still runs.
func (p *Process) Running() bool { return alive(p.p) }

// Output returns what the process wrote so far.
func (p *Process) Output() string {
	b, _ := os.ReadFile(p.Log)
	return string(b)
}

// Stop ends the process (SIGTERM, SIGKILL after 2 s) and forgets it. Stopping
// a process that has exited succeeds.
func (p *Process) Stop() error {
	err := stopProc(context.Background(), p.p, 2*time.Second)
	p.tb.forget(p.p)
	return err
}

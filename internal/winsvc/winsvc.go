// Package winsvc runs `zlmesh up` as a Windows service and installs and
// removes that service, with the logic apart from the Windows calls: Serve
// is the service body's state machine over neutral types (the Windows file
// adapts golang.org/x/sys/windows/svc to it), and Install/Uninstall work
// through the Manager interface (the Windows one is the Service Control
// Manager through svc/mgr; tests use a fake). Both run on every platform.
package winsvc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Name is the service's name in the Service Control Manager.
const Name = "zlmesh"

// Sentinel errors, wrapped with the operation and the service name.
var (
	ErrUnsupported  = errors.New("Windows services are a Windows thing")
	ErrExists       = errors.New("service already installed")
	ErrNotInstalled = errors.New("service not installed")
)

// Request is what the Service Control Manager asks of a running service.
type Request int

const (
	RequestStop        Request = iota + 1 // `sc stop zlmesh`, services.msc
	RequestShutdown                       // the machine shuts down
	RequestInterrogate                    // report the current status again
)

// State is a service's state as reported to the Service Control Manager.
type State int

const (
	StartPending State = iota + 1
	Running
	StopPending
	Stopped
)

func (s State) String() string {
	switch s {
	case StartPending:
		return "start-pending"
	case Running:
		return "running"
	case StopPending:
		return "stop-pending"
	case Stopped:
		return "stopped"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Status is one status report.
type Status struct {
	State State
	// AcceptStop: the service takes stop and shutdown requests now (only
	// while Running).
	AcceptStop bool
	// ExitCode is the service-specific exit code with Stopped: 0 when the
	// body returned nil, 1 when it failed.
	ExitCode uint32
}

// Body is the service's work: it runs until ctx is cancelled (a stop or
// shutdown request) or it is done by itself (`zlmesh down`), calls ready
// once it serves (the service then shows as running), and returns nil on a
// clean end. A body that fails before ready fails the start.
type Body func(ctx context.Context, ready func()) error

// Serve runs body as a service: it reports StartPending, then Running
// (accepting stop and shutdown) when body calls ready, StopPending when a
// stop or shutdown request comes (and cancels body's context), and
// Stopped with the exit code when body has returned, which Serve waits for.
// Interrogate repeats the last report. requests is never closed by the
// Windows side; Serve returns after the Stopped report. report is called
// from Serve's goroutine only.
func Serve(body Body, requests <-chan Request, report func(Status)) Status {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	readyc := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	cur := Status{State: StartPending}
	report(cur)
	go func() {
		done <- body(ctx, func() { once.Do(func() { close(readyc) }) })
	}()
	for {
		select {
		case <-readyc:
			readyc = nil
			if cur.State == StartPending {
				cur = Status{State: Running, AcceptStop: true}
				report(cur)
			}
		case r := <-requests:
			switch r {
			case RequestInterrogate:
				report(cur)
			case RequestStop, RequestShutdown:
				if cur.State != StopPending {
					cur = Status{State: StopPending}
					report(cur)
					cancel()
				}
			}
		case err := <-done:
			cur = Status{State: Stopped}
			if err != nil {
				cur.ExitCode = 1
			}
			report(cur)
			return cur
		}
	}
}

// Config is what Install registers.
type Config struct {
	// Exe is the absolute path of zlmesh.exe.
	Exe string
	// Args follow Exe on the service's command line: "up" and its flags.
	Args []string
	// DisplayName and Description show in services.msc.
	DisplayName string
	Description string
	// AutoStart starts the service at boot.
	AutoStart bool
	// RestartDelays: restart after the first, second and later failures
	// after these delays (recovery actions); the failure count resets
	// after a day without one.
	RestartDelays []time.Duration
}

// Manager is the part of the Service Control Manager Install and
// Uninstall use. Implementations: SystemManager (Windows) and fakes.
type Manager interface {
	// Exists reports whether a service of that name is installed.
	Exists(name string) (bool, error)
	// Create installs the service (not started).
	Create(name string, c Config) error
	// Stop stops the service if it runs and waits up to timeout for it to
	// have stopped; a service that is not running is not an error.
	Stop(name string, timeout time.Duration) error
	// Delete removes the service (Windows removes it once every handle to
	// it is closed).
	Delete(name string) error
}

// DefaultConfig is the service config for zlmesh.exe at exe running `up`
// with upArgs: started at boot, restarted after 5 s, 30 s, then every
// minute on failure.
func DefaultConfig(exe string, upArgs []string) Config {
	return Config{
		Exe:           exe,
		Args:          append([]string{"up"}, upArgs...),
		DisplayName:   "zlmesh mesh node",
		Description:   "WireGuard mesh node for container hosts (zlmesh up)",
		AutoStart:     true,
		RestartDelays: []time.Duration{5 * time.Second, 30 * time.Second, time.Minute},
	}
}

// Install registers the service name with c. An installed service of that
// name is ErrExists and is left as it is; nothing is made on error.
func Install(m Manager, name string, c Config) error {
	if c.Exe == "" {
		return fmt.Errorf("install service %s: no executable path", name)
	}
	ok, err := m.Exists(name)
	if err != nil {
		return fmt.Errorf("install service %s: %w", name, err)
	}
	if ok {
		return fmt.Errorf("install service %s: %w (uninstall it first)", name, ErrExists)
	}
	if err := m.Create(name, c); err != nil {
		return fmt.Errorf("install service %s: %w", name, err)
	}
	return nil
}

// Uninstall stops the service (waiting up to stopTimeout) and removes it.
// A service that is not installed is ErrNotInstalled.
func Uninstall(m Manager, name string, stopTimeout time.Duration) error {
	ok, err := m.Exists(name)
	if err != nil {
		return fmt.Errorf("uninstall service %s: %w", name, err)
	}
	if !ok {
		return fmt.Errorf("uninstall service %s: %w", name, ErrNotInstalled)
	}
	if err := m.Stop(name, stopTimeout); err != nil {
		return fmt.Errorf("uninstall service %s: stop: %w", name, err)
	}
	if err := m.Delete(name); err != nil {
		return fmt.Errorf("uninstall service %s: %w", name, err)
	}
	return nil
}

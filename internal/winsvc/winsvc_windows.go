//go:build windows

package winsvc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/mgr"
)

// IsService reports whether the process was started by the Service Control
// Manager.
func IsService() (bool, error) { return svc.IsWindowsService() }

// Run runs body as the service name under the Service Control Manager
// (see Serve) and returns body's error, if any, once stopped.
func Run(name string, body Body) error {
	h := &handler{body: body}
	if err := svc.Run(name, h); err != nil {
		return fmt.Errorf("run service %s: %w", name, err)
	}
	return h.err
}

type handler struct {
	body Body
	err  error
}

// Execute adapts svc's channels to Serve.
func (h *handler) Execute(_ []string, r <-chan svc.ChangeRequest, s chan<- svc.Status) (bool, uint32) {
	reqs := make(chan Request)
	stop := make(chan struct{})
	defer close(stop)
	var last svc.Status
	go func() {
		for {
			select {
			case <-stop:
				return
			case c := <-r:
				var q Request
				switch c.Cmd {
				case svc.Stop:
					q = RequestStop
				case svc.Shutdown:
					q = RequestShutdown
				case svc.Interrogate:
					q = RequestInterrogate
				default:
					continue
				}
				select {
				case reqs <- q:
				case <-stop:
					return
				}
			}
		}
	}()
	body := func(ctx context.Context, ready func()) error {
		err := h.body(ctx, ready)
		h.err = err
		return err
	}
	st := Serve(body, reqs, func(st Status) {
		last = toSvc(st)
		s <- last
	})
	return st.ExitCode != 0, st.ExitCode
}

func toSvc(st Status) svc.Status {
	out := svc.Status{ServiceSpecificExitCode: st.ExitCode}
	switch st.State {
	case StartPending:
		out.State = svc.StartPending
	case Running:
		out.State = svc.Running
	case StopPending:
		out.State = svc.StopPending
		out.WaitHint = 30000
	case Stopped:
		out.State = svc.Stopped
	}
	if st.AcceptStop {
		out.Accepts = svc.AcceptStop | svc.AcceptShutdown
	}
	return out
}

// SystemManager returns the Service Control Manager of this machine.
func SystemManager() Manager { return sysManager{} }

type sysManager struct{}

func (sysManager) connect() (*mgr.Mgr, error) {
	m, err := mgr.Connect()
	if err != nil {
		return nil, fmt.Errorf("connect to the service control manager (needs Administrator rights): %w", err)
	}
	return m, nil
}

func (s sysManager) Exists(name string) (bool, error) {
	m, err := s.connect()
	if err != nil {
		return false, err
	}
	defer m.Disconnect()
	sv, err := m.OpenService(name)
	if err != nil {
		if errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST) {
			return false, nil
		}
		return false, err
	}
	sv.Close()
	return true, nil
}

func (s sysManager) Create(name string, c Config) error {
	m, err := s.connect()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	start := uint32(mgr.StartManual)
	if c.AutoStart {
		start = mgr.StartAutomatic
	}
	sv, err := m.CreateService(name, c.Exe, mgr.Config{
		DisplayName: c.DisplayName,
		Description: c.Description,
		StartType:   start,
	}, c.Args...)
	if err != nil {
		return err
	}
	defer sv.Close()
	if len(c.RestartDelays) > 0 {
		var acts []mgr.RecoveryAction
		for _, d := range c.RestartDelays {
			acts = append(acts, mgr.RecoveryAction{Type: mgr.ServiceRestart, Delay: d})
		}
		if err := sv.SetRecoveryActions(acts, uint32((24 * time.Hour).Seconds())); err != nil {
			sv.Delete()
			return fmt.Errorf("recovery actions: %w", err)
		}
	}
	return nil
}

func (s sysManager) Stop(name string, timeout time.Duration) error {
	m, err := s.connect()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	sv, err := m.OpenService(name)
	if err != nil {
		return err
	}
	defer sv.Close()
	st, err := sv.Control(svc.Stop)
	if err != nil {
		if errors.Is(err, windows.ERROR_SERVICE_NOT_ACTIVE) {
			return nil
		}
		return err
	}
	deadline := time.Now().Add(timeout)
	for st.State != svc.Stopped {
		if time.Now().After(deadline) {
			return fmt.Errorf("still %s after %v", stateName(st.State), timeout)
		}
		time.Sleep(200 * time.Millisecond)
		if st, err = sv.Query(); err != nil {
			return err
		}
	}
	return nil
}

func (s sysManager) Delete(name string) error {
	m, err := s.connect()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	sv, err := m.OpenService(name)
	if err != nil {
		return err
	}
	defer sv.Close()
	return sv.Delete()
}

func stateName(s svc.State) string {
	return strings.ToLower(map[svc.State]string{
		svc.Stopped: "stopped", svc.StartPending: "start-pending", svc.StopPending: "stop-pending",
		svc.Running: "running", svc.ContinuePending: "continue-pending", svc.PausePending: "pause-pending",
		svc.Paused: "paused",
	}[s])
}

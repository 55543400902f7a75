package winsvc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// serve runs Serve in the background and returns its requests channel,
// the reports as they come and the final status.
func serve(body Body) (chan<- Request, <-chan Status, <-chan Status) {
	reqs := make(chan Request)
	reports := make(chan Status, 16)
	final := make(chan Status, 1)
	go func() { final <- Serve(body, reqs, func(s Status) { reports <- s }) }()
	return reqs, reports, final
}

func next(t *testing.T, reports <-chan Status) Status {
	t.Helper()
	select {
	case s := <-reports:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no status report within 5 s")
	}
	return Status{}
}

func expect(t *testing.T, reports <-chan Status, want ...Status) {
	t.Helper()
	for _, w := range want {
		if got := next(t, reports); got != w {
			t.Fatalf("report %+v, want %+v", got, w)
		}
	}
}

var (
	startPending = Status{State: StartPending}
	running      = Status{State: Running, AcceptStop: true}
	stopPending  = Status{State: StopPending}
	stopped      = Status{State: Stopped}
	failed       = Status{State: Stopped, ExitCode: 1}
)

// untilCancelled is a body that serves until stopped and returns err then.
func untilCancelled(err error) Body {
	return func(ctx context.Context, ready func()) error {
		ready()
		<-ctx.Done()
		return err
	}
}

func TestServe(t *testing.T) {
	cases := []struct {
		name     string
		body     Body
		requests []Request
		want     []Status
	}{
		{"stop", untilCancelled(nil), []Request{RequestStop}, []Status{startPending, running, stopPending, stopped}},
		{"shutdown", untilCancelled(nil), []Request{RequestShutdown}, []Status{startPending, running, stopPending, stopped}},
		{"interrogate repeats", untilCancelled(nil),
			[]Request{RequestInterrogate, RequestStop},
			[]Status{startPending, running, running, stopPending, stopped}},
		{"fails on the way down", untilCancelled(errors.New("close: boom")), []Request{RequestStop},
			[]Status{startPending, running, stopPending, failed}},
		{"fails to start", func(context.Context, func()) error { return errors.New("no wintun") }, nil,
			[]Status{startPending, failed}},
		{"ends by itself (zlmesh down)", func(_ context.Context, ready func()) error {
			ready()
			ready() // twice is fine
			return nil
		}, nil, []Status{startPending, running, stopped}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reqs, reports, final := serve(tc.body)
			var got []Status
			got = append(got, next(t, reports)) // StartPending
			if len(tc.requests) > 0 {
				got = append(got, next(t, reports)) // Running
				for _, r := range tc.requests {
					select {
					case reqs <- r:
					case <-final:
						t.Fatal("Serve returned while requests were pending")
					}
				}
			}
			for len(got) < len(tc.want) {
				got = append(got, next(t, reports))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("reports %+v, want %+v", got, tc.want)
			}
			if f := <-final; f != tc.want[len(tc.want)-1] {
				t.Errorf("Serve returned %+v", f)
			}
		})
	}
}

// A stop request while starting is not taken: Windows does not send one
// before AcceptStop, but Serve must not lose it if it did.
func TestServeStopWhileStarting(t *testing.T) {
	release := make(chan struct{})
	body := func(ctx context.Context, ready func()) error {
		<-release
		ready()
		<-ctx.Done()
		return nil
	}
	reqs, reports, _ := serve(body)
	expect(t, reports, startPending)
	reqs <- RequestStop
	expect(t, reports, stopPending)
	reqs <- RequestStop // again while stopping: no new report
	reqs <- RequestInterrogate
	expect(t, reports, stopPending)
	close(release)
	expect(t, reports, stopped)
}

// fakeManager records calls; services maps names to their config.
type fakeManager struct {
	services map[string]Config
	calls    []string
	fail     map[string]error
}

func (f *fakeManager) call(op, name string) error {
	f.calls = append(f.calls, op+" "+name)
	return f.fail[op]
}

func (f *fakeManager) Exists(name string) (bool, error) {
	if err := f.call("exists", name); err != nil {
		return false, err
	}
	_, ok := f.services[name]
	return ok, nil
}

func (f *fakeManager) Create(name string, c Config) error {
	if err := f.call("create", name); err != nil {
		return err
	}
	f.services[name] = c
	return nil
}

func (f *fakeManager) Stop(name string, _ time.Duration) error { return f.call("stop", name) }

func (f *fakeManager) Delete(name string) error {
	if err := f.call("delete", name); err != nil {
		return err
	}
	delete(f.services, name)
	return nil
}

func TestInstallUninstall(t *testing.T) {
	boom := errors.New("access denied")
	c := DefaultConfig(`C:\Program Files\zlmesh\zlmesh.exe`, []string{"--config", `C:\ProgramData\zlmesh\zlmesh.conf`})
	if want := []string{"up", "--config", `C:\ProgramData\zlmesh\zlmesh.conf`}; !slices.Equal(c.Args, want) {
		t.Fatalf("args %q, want %q", c.Args, want)
	}
	cases := []struct {
		name      string
		installed bool
		fail      map[string]error
		op        func(m Manager) error
		wantErr   error
		calls     []string
		after     bool // installed afterwards
	}{
		{"install", false, nil, func(m Manager) error { return Install(m, Name, c) }, nil,
			[]string{"exists zlmesh", "create zlmesh"}, true},
		{"install over an installed one", true, nil, func(m Manager) error { return Install(m, Name, c) }, ErrExists,
			[]string{"exists zlmesh"}, true},
		{"install fails", false, map[string]error{"create": boom}, func(m Manager) error { return Install(m, Name, c) }, boom,
			[]string{"exists zlmesh", "create zlmesh"}, false},
		{"install without an exe", false, nil, func(m Manager) error { return Install(m, Name, Config{}) }, nil,
			nil, false},
		{"uninstall stops first", true, nil, func(m Manager) error { return Uninstall(m, Name, time.Second) }, nil,
			[]string{"exists zlmesh", "stop zlmesh", "delete zlmesh"}, false},
		{"uninstall of none", false, nil, func(m Manager) error { return Uninstall(m, Name, time.Second) }, ErrNotInstalled,
			[]string{"exists zlmesh"}, false},
		{"a service that does not stop is not deleted", true, map[string]error{"stop": boom},
			func(m Manager) error { return Uninstall(m, Name, time.Second) }, boom,
			[]string{"exists zlmesh", "stop zlmesh"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeManager{services: map[string]Config{}, fail: tc.fail}
			if tc.installed {
				f.services[Name] = Config{Exe: "old.exe"}
			}
			err := tc.op(f)
			switch {
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Errorf("error %v, want %v", err, tc.wantErr)
			case tc.wantErr == nil && tc.name == "install without an exe" && err == nil:
				t.Error("install without an exe succeeded")
			case tc.wantErr == nil && tc.name != "install without an exe" && err != nil:
				t.Errorf("error %v", err)
			}
			if !slices.Equal(f.calls, tc.calls) {
				t.Errorf("calls %q, want %q", f.calls, tc.calls)
			}
			if _, ok := f.services[Name]; ok != tc.after {
				t.Errorf("installed afterwards: %v, want %v", ok, tc.after)
			}
			if tc.name == "install" && fmt.Sprint(f.services[Name]) != fmt.Sprint(c) {
				t.Errorf("installed %+v, want %+v", f.services[Name], c)
			}
		})
	}
}

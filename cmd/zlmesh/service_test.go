package main

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/internal/winsvc"
)

type fakeSCM struct {
	installed map[string]winsvc.Config
	calls     []string
}

func (f *fakeSCM) Exists(name string) (bool, error) {
	f.calls = append(f.calls, "exists")
	_, ok := f.installed[name]
	return ok, nil
}
func (f *fakeSCM) Create(name string, c winsvc.Config) error {
	f.calls = append(f.calls, "create")
	f.installed[name] = c
	return nil
}
func (f *fakeSCM) Stop(string, time.Duration) error { f.calls = append(f.calls, "stop"); return nil }
func (f *fakeSCM) Delete(name string) error {
	f.calls = append(f.calls, "delete")
	delete(f.installed, name)
	return nil
}

func TestServiceCommand(t *testing.T) {
	exe := func() (string, error) { return "/opt/zlmesh/zlmesh.exe", nil }
	cases := []struct {
		name    string
		args    []string
		ok      bool
		calls   []string
		cmdLine []string // of the installed service
	}{
		{"install", []string{"install", "--join", "192.0.2.11:7946", "--log-file", "zlmesh.log"}, true,
			[]string{"exists", "create"}, []string{"up", "--join", "192.0.2.11:7946", "--log-file", "zlmesh.log"}},
		{"install with a bad flag makes nothing", []string{"install", "--no-such-flag"}, false, nil, nil},
		{"install with a stray argument makes nothing", []string{"install", "extra"}, false, nil, nil},
		{"uninstall of none", []string{"uninstall"}, false, []string{"exists"}, nil},
		{"no action", nil, false, nil, nil},
		{"unknown action", []string{"start"}, false, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := &fakeSCM{installed: map[string]winsvc.Config{}}
			err := serviceCommand(tc.args, m, exe)
			if (err == nil) != tc.ok {
				t.Fatalf("error %v, want ok=%v", err, tc.ok)
			}
			if !slices.Equal(m.calls, tc.calls) {
				t.Errorf("calls %q, want %q", m.calls, tc.calls)
			}
			if tc.cmdLine != nil {
				c := m.installed[winsvc.Name]
				wantExe, _ := filepath.Abs("/opt/zlmesh/zlmesh.exe") // Z:\opt\... on Windows
				if c.Exe != wantExe || !slices.Equal(c.Args, tc.cmdLine) {
					t.Errorf("installed %q %q, want %q", c.Exe, c.Args, tc.cmdLine)
				}
			}
		})
	}
	// Install, then uninstall: stopped before it is deleted.
	m := &fakeSCM{installed: map[string]winsvc.Config{}}
	if err := serviceCommand([]string{"install"}, m, exe); err != nil {
		t.Fatal(err)
	}
	if err := serviceCommand([]string{"install"}, m, exe); !errors.Is(err, winsvc.ErrExists) {
		t.Errorf("second install: %v, want ErrExists", err)
	}
	m.calls = nil
	if err := serviceCommand([]string{"uninstall"}, m, exe); err != nil {
		t.Fatal(err)
	}
	if want := []string{"exists", "stop", "delete"}; !slices.Equal(m.calls, want) {
		t.Errorf("uninstall calls %q, want %q", m.calls, want)
	}
}

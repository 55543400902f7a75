//go:build windows

package winsvc

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/internal/wintest"
)

func TestNotAService(t *testing.T) {
	is, err := IsService()
	if err != nil || is {
		t.Errorf("IsService() = %v, %v in a test binary", is, err)
	}
}

// Install and Uninstall against the real Service Control Manager (Wine's
// services.exe under scripts/test-windows.sh; needs Administrator rights
// on Windows): a test service pointing at this binary, never started.
func TestSystemInstallUninstall(t *testing.T) {
	m := SystemManager()
	name := fmt.Sprintf("zlmesh-test-%d", os.Getpid())
	if _, err := m.Exists(name); err != nil {
		t.Skipf("no access to the service control manager: %v", err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig(exe, []string{"--log-level", "debug"})
	c.AutoStart = false
	c.DisplayName = "zlmesh test " + name // display names are unique too
	if wintest.Wine() {
		// Wine 8.0's services.exe forgets a service whose failure
		// actions were set, in a fresh prefix (measured: OpenService
		// then says "does not exist"), so the restart settings are
		// only exercised on Windows.
		c.RestartDelays = nil
	}
	if err := Install(m, name, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Delete(name) })
	if ok, err := m.Exists(name); err != nil || !ok {
		if wintest.Wine() && err == nil {
			// Measured: in the fresh prefix scripts/test-windows.sh
			// makes, Wine 8.0's services.exe accepts CreateService and
			// then answers OpenService with "does not exist" (in a
			// long-lived prefix this test passes).
			t.Skip("under Wine: services.exe does not find the service it just created (fresh prefix); the logic is tested with a fake")
		}
		t.Fatalf("after install: exists %v, %v", ok, err)
	}
	if err := Install(m, name, c); !errors.Is(err, ErrExists) {
		t.Errorf("second install: %v, want ErrExists", err)
	}
	if err := Uninstall(m, name, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if ok, err := m.Exists(name); err != nil || ok {
		t.Errorf("after uninstall: exists %v, %v", ok, err)
	}
	if err := Uninstall(m, name, 5*time.Second); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("second uninstall: %v, want ErrNotInstalled", err)
	}
}

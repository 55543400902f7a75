//go:build windows

package wintest

import (
	"os"
	"testing"
)

// scripts/test-windows.sh sets ZLMESH_WINE=1: there Wine must be detected.
func TestWineDetected(t *testing.T) {
	if os.Getenv("ZLMESH_WINE") == "1" && !Wine() {
		t.Fatal("ZLMESH_WINE=1 but ntdll has no wine_get_version")
	}
	t.Logf("under Wine: %v", Wine())
}

//go:build windows

package tun

import (
	"errors"
	"strings"
	"testing"
)

// Without wintun.dll (as under Wine, or a bare install) Create says what
// is missing and where it must be, and wraps ErrNoTUN.
func TestCreateWithoutWintun(t *testing.T) {
	dev, err := Create("zltest0", 1420)
	if err == nil {
		dev.Close()
		t.Skip("wintun.dll is installed here")
	}
	t.Logf("error: %v", err)
	if !errors.Is(err, ErrNoTUN) || !strings.Contains(err.Error(), "wintun.dll") {
		t.Errorf("Create without wintun.dll: %v; want ErrNoTUN naming wintun.dll", err)
	}
}

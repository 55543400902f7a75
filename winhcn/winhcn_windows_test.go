//go:build windows

package winhcn_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/zlmesh/zlmesh/internal/wintest"
	"github.com/zlmesh/zlmesh/winhcn"
)

// Under Wine the HCN service does not exist: every call must fail with
// ErrUnavailable (a clear error, no panic), and the Manager must pass it
// on without retrying or leaving anything.
func TestSystemUnavailableUnderWine(t *testing.T) {
	if !wintest.Wine() {
		t.Skip("real Windows: HCN may exist; the fake-based tests cover the logic")
	}
	h := winhcn.System()
	if _, err := h.Networks(); !errors.Is(err, winhcn.ErrUnavailable) {
		t.Errorf("Networks: %v, want ErrUnavailable", err)
	}
	if _, err := h.CreateNamespace(); !errors.Is(err, winhcn.ErrUnavailable) {
		t.Errorf("CreateNamespace: %v, want ErrUnavailable", err)
	}
	m := winhcn.New(h, winhcn.Config{})
	if err := m.EnsureNetwork([]netip.Prefix{netip.MustParsePrefix("10.200.4.0/26")}); !errors.Is(err, winhcn.ErrUnavailable) {
		t.Errorf("EnsureNetwork: %v, want ErrUnavailable", err)
	}
	if _, err := m.Attach(context.Background(), winhcn.Spec{
		Container: "web1", Address: netip.MustParsePrefix("10.200.4.5/32"), Gateway: netip.MustParseAddr("169.254.1.1"),
	}); err == nil {
		t.Error("Attach without a network succeeded")
	}
}

// Creating networks and endpoints needs Windows with the Containers
// feature and Administrator rights; never under Wine.
func TestSystemAttach(t *testing.T) {
	wintest.SkipUnderWine(t, "hcn calls fail with Module not found (no computenetwork.dll); the logic is tested against winhcntest.Fake")
	t.Skip("needs Windows with the Containers feature and Administrator rights")
}

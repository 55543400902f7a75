//go:build !linux

package bridge

import (
	"context"
	"net/netip"
)

type system struct{}

func newSystem(Config) (*system, error) { return nil, ErrUnsupported }

func (m *Manager) close() error { return nil }

func (m *Manager) attach(context.Context, Spec) (Attached, error) { return Attached{}, ErrUnsupported }

func (m *Manager) detach(context.Context, Spec) error { return ErrUnsupported }

func (m *Manager) readdress(context.Context, Spec, netip.Prefix, netip.Prefix) error {
	return ErrUnsupported
}

func (m *Manager) alive(Spec, NetnsID) (bool, error) { return false, ErrUnsupported }

func (m *Manager) adopt(context.Context, Spec) (Attached, error) { return Attached{}, ErrUnsupported }

func (m *Manager) inventory() (Inventory, error) { return Inventory{}, ErrUnsupported }

func (m *Manager) removeLink(string) error { return ErrUnsupported }

func (m *Manager) removeBridgeIfEmpty(string) (bool, error) { return false, ErrUnsupported }

func (m *Manager) removeRoute(netip.Prefix) error { return ErrUnsupported }

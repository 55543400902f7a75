//go:build !windows

package winsvc

import (
	"fmt"
	"time"
)

// IsService: never off Windows.
func IsService() (bool, error) { return false, nil }

// Run: ErrUnsupported off Windows.
func Run(name string, _ Body) error {
	return fmt.Errorf("run service %s: %w", name, ErrUnsupported)
}

// SystemManager: off Windows every call fails with ErrUnsupported.
func SystemManager() Manager { return noManager{} }

type noManager struct{}

func (noManager) Exists(string) (bool, error)      { return false, ErrUnsupported }
func (noManager) Create(string, Config) error      { return ErrUnsupported }
func (noManager) Stop(string, time.Duration) error { return ErrUnsupported }
func (noManager) Delete(string) error              { return ErrUnsupported }

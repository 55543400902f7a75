//go:build !linux

package testbed

import (
	"context"
	"net/netip"
	"syscall"
	"time"
)

// Without Linux network namespaces every operation fails with ErrUnsupported.

func supported() error                                          { return ErrUnsupported }
func ensureNetnsDir() error                                     { return ErrUnsupported }
func inNetns(name string, fn func() error) error                { return ErrUnsupported }
func createNetns(name string) error                             { return ErrUnsupported }
func makeSharedDir(dir string) error                            { return ErrUnsupported }
func mirrorNetns(name, dir string) error                        { return ErrUnsupported }
func unmountFile(path string) error                             { return ErrUnsupported }
func unmountMirror(prefix, dir string) error                    { return ErrUnsupported }
func deleteNetns(name string) error                             { return ErrUnsupported }
func netnsExists(name string) bool                              { return false }
func listNetns(prefix string) ([]string, error)                 { return nil, ErrUnsupported }
func writeSysctl(ns, key, value string) error                   { return ErrUnsupported }
func pidsInNetns(name string) ([]int, error)                    { return nil, ErrUnsupported }
func procStartTime(pid int) (uint64, bool, error)               { return 0, false, ErrUnsupported }
func killGroup(pid int, sig syscall.Signal) error               { return ErrUnsupported }
func killPID(pid int, sig syscall.Signal) error                 { return ErrUnsupported }
func detachedAttr() *syscall.SysProcAttr                        { return nil }
func buildSwitch(sw, out string, f UnderlayFamily) error        { return ErrUnsupported }
func plugHost(sw, port, host string, addrs ...netip.Addr) error { return ErrUnsupported }
func linkAddrs(ns, link string) ([]LinkAddr, error)             { return nil, ErrUnsupported }
func setPortUp(sw, port string, up bool) error                  { return ErrUnsupported }

func pingIn(ctx context.Context, ns string, dst netip.Addr) (time.Duration, error) {
	return 0, ErrUnsupported
}

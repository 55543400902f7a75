//go:build !windows

package node

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// lockStateDir takes an exclusive lock on path so two nodes never share a
// state dir. The lock goes with the process, also on kill -9.
func lockStateDir(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock state dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("state dir is in use by another zlmesh (lock %s: %v)", path, err)
	}
	return func() { f.Close() }, nil
}

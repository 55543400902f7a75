package node

import (
	"fmt"
	"os"

	"golang.org/x/sys/windows"
)

// lockStateDir takes an exclusive lock on path so two nodes never share a
// state dir. The lock goes with the process.
func lockStateDir(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock state dir: %w", err)
	}
	ol := new(windows.Overlapped)
	if err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol); err != nil {
		f.Close()
		return nil, fmt.Errorf("state dir is in use by another zlmesh (lock %s: %v)", path, err)
	}
	return func() { f.Close() }, nil
}

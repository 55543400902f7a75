//go:build linux

package bridge

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nsGetNstype is NS_GET_NSTYPE (linux/nsfs.h, _IO(0xb7, 0x3)): asks an nsfs
// file which kind of namespace it is. x/sys does not define it.
const nsGetNstype = 0xb703

// openNetns opens path and checks that it refers to a network namespace. The
// returned fd pins the namespace until the caller closes it: the namespace
// stays alive (and keeps its veth) even if the process or bind mount that
// named it goes away meanwhile. A missing file, a dead PID or a file that is
// not a network namespace is ErrNoNamespace.
func openNetns(path string) (int, NetnsID, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOTDIR) {
			return -1, NetnsID{}, fmt.Errorf("open netns %s: %v: %w", path, err, ErrNoNamespace)
		}
		return -1, NetnsID{}, fmt.Errorf("open netns %s: %w", path, err)
	}
	id, err := checkNetnsFd(fd, path)
	if err != nil {
		unix.Close(fd)
		return -1, NetnsID{}, err
	}
	return fd, id, nil
}

// checkNetnsFd verifies that fd is an nsfs file of a network namespace and
// returns its identity.
func checkNetnsFd(fd int, path string) (NetnsID, error) {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return NetnsID{}, fmt.Errorf("statfs netns %s: %w", path, err)
	}
	if sfs.Type != unix.NSFS_MAGIC {
		return NetnsID{}, fmt.Errorf("%s is not a namespace file (filesystem magic %#x): %w", path, sfs.Type, ErrNoNamespace)
	}
	typ, err := unix.IoctlRetInt(fd, nsGetNstype)
	if err == nil && typ != unix.CLONE_NEWNET {
		return NetnsID{}, fmt.Errorf("%s is a namespace but not a network namespace (type %#x): %w", path, typ, ErrNoNamespace)
	}
	// err != nil: a kernel before 4.11 without NS_GET_NSTYPE; nsfs is as
	// far as we can check.
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return NetnsID{}, fmt.Errorf("stat netns %s: %w", path, err)
	}
	return NetnsID{Dev: uint64(st.Dev), Ino: st.Ino}, nil
}

// statNetns returns the identity of the namespace path refers to now, and
// false when the path (or process) is gone.
func statNetns(path string) (NetnsID, bool, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOTDIR) {
			return NetnsID{}, false, nil
		}
		return NetnsID{}, false, fmt.Errorf("stat netns %s: %w", path, err)
	}
	return NetnsID{Dev: uint64(st.Dev), Ino: st.Ino}, true, nil
}

// inNetns runs fn on a locked OS thread inside the namespace ns and moves
// the thread back afterwards. If it cannot move back, the thread stays
// locked, so the Go runtime retires it instead of reusing a thread that is
// in a foreign namespace. A closed ns (netns.None) runs fn where it is.
func inNetns(ns netns.NsHandle, fn func() error) error {
	if !ns.IsOpen() {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter host netns: %w", err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: it dies with this goroutine.
		return errors.Join(ferr, fmt.Errorf("return from host netns: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

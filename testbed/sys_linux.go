//go:build linux

package testbed

// The Linux side of the testbed: named network namespaces, code run on a
// thread inside one, the underlay wiring through netlink, and /proc.

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const netnsDir = "/run/netns"

func supported() error { return nil }

// netnsDirMu serializes ensureNetnsDir within the process (and an flock on
// the directory across processes), so that two testbeds coming up at once
// do not both turn /run/netns into a mount point.
var netnsDirMu sync.Mutex

// ensureNetnsDir makes /run/netns if it is missing and sets it up the way
// iproute2 does on its first `ip netns add`, before the testbed makes a
// namespace there: a bind mount of itself (recursive), marked shared. Had
// the testbed mounted its namespaces on the plain directory, a later `ip
// netns add` would bind the directory over them: each namespace would then
// be mounted twice, the lower mount hidden under iproute2's, and removing
// the file would fail with EBUSY and leave the namespace behind for good.
// Made first, the mount point is the one iproute2 then finds and keeps.
//
// When /run/netns is not a mount point but other programs already have
// namespaces mounted in it, it is left alone: converting it would hide
// theirs in the same way. The testbed's own namespaces are removed in either
// case (deleteNetns, removeShadowed).
func ensureNetnsDir() error {
	netnsDirMu.Lock()
	defer netnsDirMu.Unlock()
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("make %s: %w", netnsDir, err)
	}
	d, err := os.Open(netnsDir)
	if err != nil {
		return fmt.Errorf("open %s: %w", netnsDir, err)
	}
	defer d.Close()
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", netnsDir, err)
	}
	defer syscall.Flock(int(d.Fd()), syscall.LOCK_UN)

	// As iproute2's netns_add: make it shared; EINVAL means it is not a
	// mount point yet.
	err = syscall.Mount("", netnsDir, "none", syscall.MS_SHARED|syscall.MS_REC, "")
	if err == nil || !errors.Is(err, syscall.EINVAL) {
		if err != nil {
			return fmt.Errorf("make %s shared: %w", netnsDir, err)
		}
		return nil
	}
	ents, err := os.ReadDir(netnsDir)
	if err != nil {
		return fmt.Errorf("list %s: %w", netnsDir, err)
	}
	for _, e := range ents {
		if isMountRoot(filepath.Join(netnsDir, e.Name())) {
			return nil // others' namespaces are mounted on the plain directory: leave it
		}
	}
	if err := syscall.Mount(netnsDir, netnsDir, "none", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s onto itself: %w", netnsDir, err)
	}
	if err := syscall.Mount("", netnsDir, "none", syscall.MS_SHARED|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", netnsDir, err)
	}
	return nil
}

// isMountRoot reports whether path, as it resolves now, is the root of a
// mount (statx's STATX_ATTR_MOUNT_ROOT, Linux 5.8). Unlike a search of
// /proc/self/mountinfo it ignores mounts hidden under later ones. On an
// older kernel it answers from mountinfo.
func isMountRoot(path string) bool {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &st); err != nil {
		return false
	}
	if st.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return st.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	return slices.Contains(parseMountPoints(string(b)), path)
}

// removeShadowed removes path, a file under /run/netns that the machine's
// mount namespace still has a mount on although every visible one was
// detached: the mount sits under a later bind of /run/netns (iproute2's, made
// after the namespace). unlink fails with EBUSY only for mounts in the
// caller's own mount namespace, and a successful unlink detaches the mounts
// on the file in every namespace. So the removal runs in a private copy of
// the mount namespace (Go makes it private: nothing done there propagates
// back) that first detaches its copies of the binds of /run/netns and of the
// mounts on path, then removes the file, which detaches the hidden mounts of
// the machine's namespace too.
func removeShadowed(path string) error {
	const script = `while umount -l "$1" 2>/dev/null; do :; done
while umount -l "$2" 2>/dev/null; do :; done
rm -f "$2"`
	cmd := exec.Command("sh", "-c", script, "sh", netnsDir, path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("remove %s from a private mount namespace: %v: %s", path, err, strings.TrimSpace(string(out)))
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("remove %s: still there after removing it from a private mount namespace", path)
	}
	return nil
}

// makeSharedDir makes dir (a directory of the testbed's own) a shared mount
// point: dir is bind-mounted onto itself and marked shared. The hosts' slave
// mount namespaces bind their copy of it over /run/netns, so every namespace
// mirrored into dir later (mirrorNetns) appears there too (the machine's
// /run/netns: see ensureNetnsDir).
func makeSharedDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("make %s: %w", dir, err)
	}
	if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s onto itself: %w", dir, err)
	}
	if err := syscall.Mount("", dir, "", syscall.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}

// mirrorNetns bind-mounts the named namespace to dir/<name> (dir made by
// makeSharedDir), from where it propagates into every host.
func mirrorNetns(name, dir string) error {
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("mirror netns %s: %w", name, err)
	}
	f.Close()
	if err := syscall.Mount(netnsPath(name), path, "", syscall.MS_BIND, ""); err != nil {
		os.Remove(path)
		return fmt.Errorf("mirror netns %s to %s: %w", name, path, err)
	}
	return nil
}

// unmountFile detaches the mount on path and removes the file; either being
// gone already is fine.
func unmountFile(path string) error {
	err := syscall.Unmount(path, syscall.MNT_DETACH)
	if err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// unmountMirror detaches the testbed's namespace mirror dir: the namespaces
// mirrored there (mount points dir/<prefix>-*) and then dir itself. What is
// not mounted is skipped.
func unmountMirror(prefix, dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	self := false
	for _, p := range parseMountPoints(string(b)) {
		switch {
		case p == dir:
			self = true
		case filepath.Dir(p) == dir && strings.HasPrefix(filepath.Base(p), prefix+"-"):
			points = append(points, p)
		}
	}
	if self {
		points = append(points, dir)
	}
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// parseMountPoints returns the mount points (field 5) of /proc/<pid>/mountinfo
// text, with its octal escapes (\040 for a space, …) decoded. Lines that do
// not parse are skipped.
func parseMountPoints(mountinfo string) []string {
	var points []string
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		points = append(points, unescapeMountinfo(f[4]))
	}
	return points
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// onThread runs fn on a locked OS thread and puts the thread back into its
// original network namespace afterwards. A thread that cannot be put back is
// left locked, so the runtime retires it instead of reusing it.
func onThread(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	err = fn()
	if serr := netns.Set(orig); serr != nil {
		return errors.Join(err, fmt.Errorf("restore netns: %w", serr))
	}
	runtime.UnlockOSThread()
	return err
}

// inNetns runs fn on a locked OS thread inside the named network namespace.
// Sockets opened and children forked by fn belong to that namespace.
func inNetns(name string, fn func() error) error {
	h, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer h.Close()
	return onThread(func() error {
		if err := netns.Set(h); err != nil {
			return fmt.Errorf("enter netns %s: %w", name, err)
		}
		return fn()
	})
}

// createNetns makes the named network namespace with lo up. It fails with
// ErrExists when the name is taken.
func createNetns(name string) error {
	if err := ensureNetnsDir(); err != nil {
		return err
	}
	var h netns.NsHandle
	err := onThread(func() error {
		var err error
		h, err = netns.NewNamed(name) // moves this thread into the new namespace
		return err
	})
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create netns %s: %w", name, ErrExists)
		}
		return fmt.Errorf("create netns %s: %w", name, err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", name, err)
	}
	defer nl.Close()
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("set lo up in %s: %w", name, err)
	}
	return nil
}

// deleteNetns unmounts and removes the named namespace; one that is already
// gone is not an error. The namespace itself lives on while processes are in
// it: kill them first.
//
// A namespace mounted twice on its file (see ensureNetnsDir) is unmounted
// until no mount is left; a mount hidden under a later bind of /run/netns
// goes with removeShadowed.
func deleteNetns(name string) error {
	path := netnsPath(name)
	for {
		err := syscall.Unmount(path, syscall.MNT_DETACH)
		if err == nil {
			continue
		}
		if !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
		break
	}
	err := os.Remove(path)
	switch {
	case err == nil, errors.Is(err, fs.ErrNotExist):
		return nil
	case errors.Is(err, syscall.EBUSY):
		return removeShadowed(path)
	}
	return fmt.Errorf("remove %s: %w", path, err)
}

func netnsExists(name string) bool {
	_, err := os.Stat(netnsPath(name))
	return err == nil
}

// listNetns returns the names of the namespaces under /run/netns that start
// with prefix + "-".
func listNetns(prefix string) ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", netnsDir, err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// writeSysctl writes value to /proc/sys/<key> inside the named namespace: the
// file is opened by a thread in that namespace, so the namespace's own
// setting changes, never the machine's.
func writeSysctl(ns, key, value string) error {
	return inNetns(ns, func() error {
		p := filepath.Join("/proc/sys", key)
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s in %s: %w", key, value, ns, err)
		}
		return nil
	})
}

// pidsInNetns returns the processes (other than this one) whose network
// namespace is the named one.
func pidsInNetns(name string) ([]int, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(netnsPath(name), &st); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("stat %s: %w", netnsPath(name), err)
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && l == want {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// procStartTime returns a process's start time (clock ticks since boot) and
// whether it is a zombie. A missing process is an error wrapping
// fs.ErrNotExist.
func procStartTime(pid int) (start uint64, zombie bool, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false, err
	}
	return parseStat(string(b))
}

// parseStat reads the state and start time out of a /proc/<pid>/stat line.
// The command name (field 2) may hold spaces and parentheses, so the fields
// are counted from the last ')'.
func parseStat(s string) (start uint64, zombie bool, err error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false, fmt.Errorf("proc stat %q: no command name", s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, false, fmt.Errorf("proc stat: %d fields after the command name, want at least 20", len(f))
	}
	start, err = strconv.ParseUint(f[19], 10, 64) // field 22
	if err != nil {
		return 0, false, fmt.Errorf("proc stat start time %q: %w", f[19], err)
	}
	return start, f[0] == "Z" || f[0] == "X", nil
}

// killGroup sends sig to the process group pid leads (every process the
// testbed starts is a session leader), or to pid alone if it leads none.
func killGroup(pid int, sig syscall.Signal) error {
	err := syscall.Kill(-pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		err = syscall.Kill(pid, sig)
	}
	return err
}

// killPID sends sig to one process.
func killPID(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }

// detachedAttr puts a child in its own session, so it outlives the testbed
// process and no terminal signal (Ctrl-C) reaches it.
func detachedAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true}
}

// nsNetlink returns a netlink handle bound to the named namespace and an
// open handle on the namespace (for moving a veth peer into it); the caller
// closes both.
func nsNetlink(name string) (*netlink.Handle, netns.NsHandle, error) {
	h, err := netns.GetFromName(name)
	if err != nil {
		return nil, 0, fmt.Errorf("open netns %s: %w", name, err)
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		return nil, 0, fmt.Errorf("netlink in %s: %w", name, err)
	}
	return nl, h, nil
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// buildSwitch wires the switch namespace sw (bridge br0 with the underlay
// gateway address, uplink "out") to the outside namespace out (eth0 with the
// outside and resolver addresses and a route back to the underlay) and turns
// on forwarding in sw. The bridge has the underlay gateway address of each
// family f has (SwitchAddr, Switch6Addr); the outside network has IPv4
// always and IPv6 too when f has it. With IPv6 both namespaces take new
// addresses without DAD and ignore router advertisements.
func buildSwitch(sw, out string, f UnderlayFamily) error {
	if f.HasIPv6() {
		for _, ns := range []string{sw, out} {
			if err := quietIPv6(ns, "all", "default", "lo"); err != nil {
				return err
			}
		}
	}
	nsw, swH, err := nsNetlink(sw)
	if err != nil {
		return err
	}
	defer nsw.Close()
	defer swH.Close()
	nout, outH, err := nsNetlink(out)
	if err != nil {
		return err
	}
	defer nout.Close()
	defer outH.Close()

	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName}}
	if err := nsw.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge %s in %s: %w", bridgeName, sw, err)
	}
	var brAddrs []netip.Prefix
	if f.HasIPv4() {
		brAddrs = append(brAddrs, netip.PrefixFrom(SwitchAddr, UnderlayPrefix.Bits()))
	}
	if f.HasIPv6() {
		brAddrs = append(brAddrs, netip.PrefixFrom(Switch6Addr, Underlay6Prefix.Bits()))
	}
	if err := addAddrs(nsw, br, sw, brAddrs...); err != nil {
		return err
	}
	if err := nsw.LinkSetUp(br); err != nil {
		return fmt.Errorf("set %s up in %s: %w", bridgeName, sw, err)
	}

	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: uplinkName},
		PeerName:      hostIfname,
		PeerNamespace: netlink.NsFd(int(outH)),
	}
	if err := nsw.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s (%s) – %s (%s): %w", uplinkName, sw, hostIfname, out, err)
	}
	up, err := nsw.LinkByName(uplinkName)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", uplinkName, sw, err)
	}
	upAddrs := []netip.Prefix{netip.PrefixFrom(UplinkAddr, OutsidePrefix.Bits())}
	if f.HasIPv6() {
		upAddrs = append(upAddrs, netip.PrefixFrom(Uplink6Addr, Outside6Prefix.Bits()))
	}
	if err := addAddrs(nsw, up, sw, upAddrs...); err != nil {
		return err
	}
	if err := nsw.LinkSetUp(up); err != nil {
		return fmt.Errorf("set %s up in %s: %w", uplinkName, sw, err)
	}

	eth, err := nout.LinkByName(hostIfname)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", hostIfname, out, err)
	}
	outAddrs := []netip.Prefix{netip.PrefixFrom(OutsideAddr, OutsidePrefix.Bits()), netip.PrefixFrom(ResolverAddr, OutsidePrefix.Bits())}
	if f.HasIPv6() {
		outAddrs = append(outAddrs, netip.PrefixFrom(Outside6Addr, Outside6Prefix.Bits()), netip.PrefixFrom(Resolver6Addr, Outside6Prefix.Bits()))
	}
	if err := addAddrs(nout, eth, out, outAddrs...); err != nil {
		return err
	}
	if err := nout.LinkSetUp(eth); err != nil {
		return fmt.Errorf("set %s up in %s: %w", hostIfname, out, err)
	}
	back := &netlink.Route{LinkIndex: eth.Attrs().Index, Dst: ipnet(UnderlayPrefix), Gw: UplinkAddr.AsSlice()}
	if err := nout.RouteAdd(back); err != nil {
		return fmt.Errorf("route %s via %s in %s: %w", UnderlayPrefix, UplinkAddr, out, err)
	}
	if f.HasIPv6() {
		back6 := &netlink.Route{LinkIndex: eth.Attrs().Index, Dst: ipnet(Underlay6Prefix), Gw: Uplink6Addr.AsSlice()}
		if err := nout.RouteAdd(back6); err != nil {
			return fmt.Errorf("route %s via %s in %s: %w", Underlay6Prefix, Uplink6Addr, out, err)
		}
		if err := waitNoTentative(nout, out); err != nil {
			return err
		}
		if err := waitNoTentative(nsw, sw); err != nil {
			return err
		}
		if err := writeSysctl(sw, "net/ipv6/conf/all/forwarding", "1"); err != nil {
			return err
		}
	}
	return writeSysctl(sw, "net/ipv4/ip_forward", "1")
}

// plugHost connects the host namespace to the switch: a veth whose switch end
// is named port and enslaved to br0, and whose host end is eth0 with addrs
// (IPv4 and/or IPv6 ones of the underlay), a default route via the switch
// for each family it has an address of, and IPv4 forwarding on. With an
// IPv6 address, eth0 (and only eth0: zlmesh's own links keep the kernel's
// defaults) does no DAD and ignores router advertisements, and plugHost
// returns once no address of the host is tentative.
func plugHost(sw, port, host string, addrs ...netip.Addr) error {
	nsw, swH, err := nsNetlink(sw)
	if err != nil {
		return err
	}
	defer nsw.Close()
	defer swH.Close()
	nh, hostH, err := nsNetlink(host)
	if err != nil {
		return err
	}
	defer nh.Close()
	defer hostH.Close()

	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: port},
		PeerName:      hostIfname,
		PeerNamespace: netlink.NsFd(int(hostH)),
	}
	if err := nsw.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s (%s) – %s (%s): %w", port, sw, hostIfname, host, err)
	}
	p, err := nsw.LinkByName(port)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", port, sw, err)
	}
	br, err := nsw.LinkByName(bridgeName)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", bridgeName, sw, err)
	}
	if err := nsw.LinkSetMaster(p, br); err != nil {
		return fmt.Errorf("attach %s to %s in %s: %w", port, bridgeName, sw, err)
	}
	if err := nsw.LinkSetUp(p); err != nil {
		return fmt.Errorf("set %s up in %s: %w", port, sw, err)
	}

	eth, err := nh.LinkByName(hostIfname)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", hostIfname, host, err)
	}
	has6 := slices.ContainsFunc(addrs, netip.Addr.Is6)
	if has6 {
		if err := quietIPv6(host, hostIfname); err != nil {
			return err
		}
	}
	var prefixes []netip.Prefix
	for _, a := range addrs {
		bits := UnderlayPrefix.Bits()
		if a.Is6() {
			bits = Underlay6Prefix.Bits()
		}
		prefixes = append(prefixes, netip.PrefixFrom(a, bits))
	}
	if err := addAddrs(nh, eth, host, prefixes...); err != nil {
		return err
	}
	if err := nh.LinkSetUp(eth); err != nil {
		return fmt.Errorf("set %s up in %s: %w", hostIfname, host, err)
	}
	for _, a := range addrs {
		gw := SwitchAddr
		if a.Is6() {
			gw = Switch6Addr
		}
		def := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw.AsSlice()}
		if err := nh.RouteAdd(def); err != nil {
			return fmt.Errorf("default route via %s in %s: %w", gw, host, err)
		}
	}
	if has6 {
		if err := waitNoTentative(nh, host); err != nil {
			return err
		}
	}
	return writeSysctl(host, "net/ipv4/ip_forward", "1")
}

// addAddrs adds addresses to link (in namespace ns, for messages); IPv6
// ones without DAD (IFA_F_NODAD), so they are usable at once.
func addAddrs(nl *netlink.Handle, link netlink.Link, ns string, addrs ...netip.Prefix) error {
	for _, p := range addrs {
		a := &netlink.Addr{IPNet: ipnet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := nl.AddrAdd(link, a); err != nil {
			return fmt.Errorf("address %s on %s in %s: %w", p, link.Attrs().Name, ns, err)
		}
	}
	return nil
}

// quietIPv6 turns off DAD and router advertisements for the named
// interfaces of namespace ns ("all" and "default" name the namespace-wide
// settings; "default" is what links made later start with). Set before a
// link goes up, its link-local address is never tentative either.
func quietIPv6(ns string, ifnames ...string) error {
	for _, ifn := range ifnames {
		for _, key := range []string{"accept_dad", "accept_ra"} {
			if err := writeSysctl(ns, "net/ipv6/conf/"+ifn+"/"+key, "0"); err != nil {
				return err
			}
		}
	}
	return nil
}

// ipv6Wait bounds waitNoTentative.
const ipv6Wait = 5 * time.Second

// waitNoTentative waits until no IPv6 address in the namespace is
// tentative (DAD not finished); an address whose DAD failed is an error.
func waitNoTentative(nl *netlink.Handle, ns string) error {
	deadline := time.Now().Add(ipv6Wait)
	for {
		addrs, err := nl.AddrList(nil, netlink.FAMILY_V6)
		if err != nil {
			return fmt.Errorf("list IPv6 addresses in %s: %w", ns, err)
		}
		var tentative []string
		for _, a := range addrs {
			if a.Flags&unix.IFA_F_DADFAILED != 0 {
				return fmt.Errorf("IPv6 address %s in %s: duplicate address detection failed", a.IPNet, ns)
			}
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				tentative = append(tentative, a.IPNet.String())
			}
		}
		if len(tentative) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("IPv6 addresses %s in %s still tentative after %v", strings.Join(tentative, ", "), ns, ipv6Wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// setPortUp sets the switch port of a host up or down.
func setPortUp(sw, port string, up bool) error {
	nsw, swH, err := nsNetlink(sw)
	if err != nil {
		return err
	}
	defer nsw.Close()
	defer swH.Close()
	p, err := nsw.LinkByName(port)
	if err != nil {
		return fmt.Errorf("find port %s in %s: %w", port, sw, err)
	}
	if up {
		err = nsw.LinkSetUp(p)
	} else {
		err = nsw.LinkSetDown(p)
	}
	if err != nil {
		return fmt.Errorf("set port %s in %s up=%v: %w", port, sw, up, err)
	}
	return nil
}

// linkAddrs returns the addresses on the named link of namespace ns, with
// their flags (unix.IFA_F_*).
func linkAddrs(ns, link string) ([]LinkAddr, error) {
	nl, h, err := nsNetlink(ns)
	if err != nil {
		return nil, err
	}
	defer nl.Close()
	defer h.Close()
	l, err := nl.LinkByName(link)
	if err != nil {
		return nil, fmt.Errorf("find %s in %s: %w", link, ns, err)
	}
	addrs, err := nl.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("addresses of %s in %s: %w", link, ns, err)
	}
	var out []LinkAddr
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		bits, _ := a.Mask.Size()
		out = append(out, LinkAddr{Prefix: netip.PrefixFrom(ip.Unmap(), bits), Tentative: a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0})
	}
	return out, nil
}

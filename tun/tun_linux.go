//go:build linux

package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

const cloneDevicePath = "/dev/net/tun"

// create opens the clone device and attaches a TUN interface the way
// wireguard-go's tun.CreateTUN does (same flags: IFF_TUN|IFF_NO_PI|
// IFF_VNET_HDR, non-blocking), then hands the file to
// tun.CreateTUNFromFile, which sets up the offloads, the event listeners and
// the MTU. Doing the first half here gives clear errors and closes the fd
// on failure (CreateTUN leaks it when TUNSETIFF fails).
func create(name string, mtu int) (Device, error) {
	fd, err := unix.Open(cloneDevicePath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			return nil, fmt.Errorf("create tun %s: open %s: %v: %w (%s missing)", name, cloneDevicePath, err, ErrNoTUN, cloneDevicePath)
		}
		return nil, fmt.Errorf("create tun %s: open %s: %w", name, cloneDevicePath, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create tun %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create tun %s: %w", name, explainSetIff(name, err))
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create tun %s: %w", name, err)
	}
	// Opened in this thread's namespace, so it asks about the right link.
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create tun %s: netlink: %w", name, err)
	}
	link, err := nl.LinkByName(name)
	if err != nil {
		nl.Close()
		unix.Close(fd)
		return nil, fmt.Errorf("create tun %s: find the new link: %w", name, err)
	}
	file := os.NewFile(uintptr(fd), cloneDevicePath)
	dev, err := wgtun.CreateTUNFromFile(file, mtu)
	if err != nil {
		nl.Close()
		file.Close()
		return nil, fmt.Errorf("create tun %s: %w", name, err)
	}
	return &nativeTUN{Device: dev, nl: nl, index: link.Attrs().Index, file: file}, nil
}

// explainSetIff turns the errno of TUNSETIFF into an error that says what
// is wrong with the name.
func explainSetIff(name string, err error) error {
	switch {
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("TUN device %s is in use (opened by another device or process): %w", name, ErrNameInUse)
	case errors.Is(err, unix.EINVAL):
		// The kernel says EINVAL when the name belongs to an interface that
		// is not a TUN device (or to a TUN with other flags).
		if _, lerr := net.InterfaceByName(name); lerr == nil {
			return fmt.Errorf("%s is an interface that is not a TUN device: %w", name, ErrNameInUse)
		}
		return fmt.Errorf("TUNSETIFF: %w", err)
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("TUNSETIFF: %w (needs CAP_NET_ADMIN)", err)
	}
	return fmt.Errorf("TUNSETIFF: %w", err)
}

// nativeTUN is wireguard-go's kernel TUN with an MTU that is read in the
// namespace the device lives in. wireguard-go asks for the MTU through a
// socket ioctl by name in the calling thread's namespace, which is wrong (or
// fails) when the device was made in another namespace than the one of the
// goroutine asking; a netlink handle opened at creation stays bound to the
// device's namespace and finds the link by index, so a rename does not
// confuse it either.
//
// It also writes single packets (writeOne, for InjectInbound) straight to
// the device file, past wireguard-go's Write: that Write serializes every
// batch on one lock and runs its GRO bookkeeping (tables of flows, reset
// after each call) even for a batch of one, which on the DNS answer path
// costs more than the packet's own work in Go.
type nativeTUN struct {
	Device
	nl    *netlink.Handle
	index int
	file  *os.File // the TUN, opened with IFF_VNET_HDR, non-blocking
}

// virtioNetHdrLen is the size of the virtio-net header that precedes each
// packet on a TUN opened with IFF_VNET_HDR (struct virtio_net_hdr).
const virtioNetHdrLen = 10

// writeOne writes one whole IP packet, buf[offset:], with a zero virtio-net
// header (no checksum offload, no segmentation: the packet's checksums must
// be complete) in the offset bytes in front of it, which it overwrites;
// offset must be at least virtioNetHdrLen. It is what wireguard-go's Write
// does for a packet it does not coalesce, in one write(2), and is safe
// concurrently with Write (the kernel takes each write as one packet).
func (t *nativeTUN) writeOne(buf []byte, offset int) error {
	if offset < virtioNetHdrLen {
		return fmt.Errorf("write to tun: headroom %d, need %d", offset, virtioNetHdrLen)
	}
	b := buf[offset-virtioNetHdrLen:]
	clear(b[:virtioNetHdrLen])
	_, err := t.file.Write(b)
	if errors.Is(err, unix.EBADFD) {
		err = os.ErrClosed
	}
	return err
}

// MTU returns the interface's MTU as its namespace sees it.
func (t *nativeTUN) MTU() (int, error) {
	link, err := t.nl.LinkByIndex(t.index)
	if err != nil {
		return 0, fmt.Errorf("mtu of tun (index %d): %w", t.index, err)
	}
	return link.Attrs().MTU, nil
}

// Close closes the device (removing the interface) and the netlink handle.
func (t *nativeTUN) Close() error {
	err := t.Device.Close()
	t.nl.Close()
	return err
}

// setAddress runs setAddressAt with a netlink handle bound to the calling
// thread's namespace, so the whole operation happens in one namespace even
// if the goroutine changes threads.
func setAddress(ifname string, addr netip.Prefix) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("set address %s on %s: netlink: %w", addr, ifname, err)
	}
	defer h.Close()
	return setAddressAt(h, ifname, addr)
}

// setRoutes is setRoutesAt with a handle bound to the calling thread's
// namespace (see setAddress).
func setRoutes(ifname string, want []netip.Prefix) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("set routes on %s: netlink: %w", ifname, err)
	}
	defer h.Close()
	return setRoutesAt(h, ifname, want)
}

// linkByName finds a link, mapping "not found" to ErrLinkNotFound.
func linkByName(h *netlink.Handle, name string) (netlink.Link, error) {
	link, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil, ErrLinkNotFound
		}
		return nil, fmt.Errorf("find link: %w", err)
	}
	return link, nil
}

// dumpRetries bounds the retries of a netlink dump the kernel interrupted
// because the table changed under it.
const dumpRetries = 5

// setAddressAt is SetAddress through the namespace h is bound to. addr is
// already validated.
func setAddressAt(h *netlink.Handle, ifname string, addr netip.Prefix) error {
	fail := func(step string, err error) error {
		return fmt.Errorf("set address %s on %s: %s: %w", addr, ifname, step, err)
	}
	link, err := linkByName(h, ifname)
	if err != nil {
		return fail("", err)
	}
	family := netlink.FAMILY_V4
	if addr.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	var have []netlink.Addr
	for range dumpRetries {
		have, err = h.AddrList(link, family)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return fail("list addresses", err)
	}
	// Remove the others first: removing a primary IPv4 address also
	// removes the secondaries of its subnet, which may include the wanted
	// one, so the wanted address is (re)placed last.
	for i := range have {
		a := &have[i]
		if a.IPNet == nil || (family == netlink.FAMILY_V6 && a.IP.IsLinkLocalUnicast()) {
			continue
		}
		if ipNetToPrefix(a.IPNet) == addr {
			continue
		}
		if err := h.AddrDel(link, a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fail("remove "+a.IPNet.String(), err)
		}
	}
	// IPv6: no duplicate address detection. A TUN has no neighbours to
	// collide with, and DAD would leave the address "tentative" (unusable
	// for bind) for a second or more after every start.
	want := &netlink.Addr{IPNet: prefixToIPNet(addr)}
	if family == netlink.FAMILY_V6 {
		want.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrReplace(link, want); err != nil {
		return fail("add", err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return fail("set link up", err)
		}
	}
	return nil
}

// setRoutesAt is SetRoutes through the namespace h is bound to. want is
// already validated and free of duplicates.
func setRoutesAt(h *netlink.Handle, ifname string, want []netip.Prefix) error {
	fail := func(step string, err error) error {
		if step == "" {
			return fmt.Errorf("set routes on %s: %w", ifname, err)
		}
		return fmt.Errorf("set routes on %s: %s: %w", ifname, step, err)
	}
	link, err := linkByName(h, ifname)
	if err != nil {
		return fail("", err)
	}
	index := link.Attrs().Index

	// Read both tables first and check every wanted route for conflicts,
	// so that nothing changes when one is refused.
	type plan struct {
		add []netip.Prefix
		del []netlink.Route
	}
	var plans [2]plan
	for i, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		var table []netlink.Route
		for range dumpRetries {
			table, err = h.RouteListFiltered(family,
				&netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
			if !errors.Is(err, netlink.ErrDumpInterrupted) {
				break
			}
		}
		if err != nil {
			return fail("list routes", err)
		}
		wanted := make(map[netip.Prefix]bool)
		for _, p := range want {
			if p.Addr().Is4() == (family == netlink.FAMILY_V4) {
				wanted[p] = true
			}
		}
		have := make(map[netip.Prefix]bool)
		for _, r := range table {
			dst := routeDst(r, family)
			owned := r.Protocol == RouteProtocol && r.LinkIndex == index
			switch {
			case owned && r.Priority == RouteMetric && wanted[dst] && !have[dst]:
				have[dst] = true
			case owned:
				// Not wanted, a duplicate, or an old metric.
				plans[i].del = append(plans[i].del, r)
			case wanted[dst] && r.Priority == RouteMetric:
				return fail("", fmt.Errorf("route %s metric %d exists with protocol %d through link index %d: %w",
					dst, RouteMetric, r.Protocol, r.LinkIndex, ErrRouteConflict))
			}
		}
		for _, p := range want {
			if wanted[p] && !have[p] {
				plans[i].add = append(plans[i].add, p)
			}
		}
	}

	for _, pl := range plans {
		for _, p := range pl.add {
			r := &netlink.Route{
				LinkIndex: index,
				Dst:       prefixToIPNet(p),
				Protocol:  RouteProtocol,
				Priority:  RouteMetric,
				Table:     unix.RT_TABLE_MAIN,
				Type:      unix.RTN_UNICAST,
				Scope:     netlink.SCOPE_LINK,
			}
			if p.Addr().Is6() {
				r.Scope = netlink.SCOPE_UNIVERSE
			}
			if err := h.RouteReplace(r); err != nil {
				if errors.Is(err, unix.ENETDOWN) {
					err = fmt.Errorf("%w (the link must be up; SetAddress brings it up)", err)
				}
				return fail("add "+p.String(), err)
			}
		}
		for _, r := range pl.del {
			if err := h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				return fail("delete "+r.Dst.String(), err)
			}
		}
	}
	return nil
}

// routeDst is the destination of a listed route; netlink leaves Dst nil for
// a default route.
func routeDst(r netlink.Route, family int) netip.Prefix {
	if r.Dst == nil {
		if family == netlink.FAMILY_V4 {
			return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		}
		return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	return ipNetToPrefix(r.Dst)
}

// ipNetToPrefix converts from netlink's form, keeping host bits; an
// unusable value gives the zero Prefix.
func ipNetToPrefix(n *net.IPNet) netip.Prefix {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}
	}
	if bits == 32 {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, ones)
}

// prefixToIPNet converts to the net form netlink takes, keeping host bits
// (an interface address is 10.200.1.1/16, not 10.200.0.0/16).
func prefixToIPNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}

//go:build linux

package bridge

// The few rtnetlink requests vishvananda/netlink has no call for, built with
// its nl package and sent on the Manager's own route socket in the host
// namespace.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// rawSocket is one NETLINK_ROUTE socket; nl serializes requests on it.
type rawSocket struct {
	sockets map[int]*nl.SocketHandle
}

func (r *rawSocket) request(typ, flags int) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(typ, flags)
	req.Sockets = r.sockets
	return req
}

func (r *rawSocket) close() {
	for _, sh := range r.sockets {
		sh.Close()
	}
}

// moveRename moves link index of the host namespace into the namespace
// nsFd and renames it name, in one RTM_NEWLINK request carrying
// IFLA_NET_NS_FD and IFLA_IFNAME. The kernel does both under one rtnl lock:
// the link never appears in the target under its old name, and a name
// already taken there fails the whole request (EEXIST) with the link left
// where it was. vishvananda/netlink's LinkSetNsFd and LinkSetName would be
// two requests.
func (r *rawSocket) moveRename(index, nsFd int, name string) error {
	req := r.request(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(nsFd))))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// plugHostEnd makes link index a port of bridge master, sets its alias and
// brings it up, in one RTM_NEWLINK request (IFLA_MASTER, IFLA_IFALIAS and
// IFF_UP): the host side of an attach costs one round-trip instead of three.
// The kernel ignores IFLA_IFALIAS when it creates a veth, hence here.
func (r *rawSocket) plugHostEnd(index, master int, alias string) error {
	req := r.request(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	msg.Flags, msg.Change = unix.IFF_UP, unix.IFF_UP
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(uint32(master))))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFALIAS, []byte(alias)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// setSTP switches the Spanning Tree Protocol of bridge index on or off
// through IFLA_BR_STP_STATE (a bridge changelink). With STP on, a new port
// spends 2 x forward_delay (30 s by default) listening and learning before it
// forwards; a one-host service bridge has no loop to protect against.
func (r *rawSocket) setSTP(index int, on bool) error {
	req := r.request(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	state := uint32(0)
	if on {
		state = 1
	}
	data.AddRtAttr(unix.IFLA_BR_STP_STATE, nl.Uint32Attr(state))
	req.AddData(info)
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// stpState reads IFLA_BR_STP_STATE of bridge index (0 off, 1 kernel STP, 2
// user-space STP).
func (r *rawSocket) stpState(index int) (uint32, error) {
	req := r.request(unix.RTM_GETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		attrs, err := nl.ParseRouteAttr(m[unix.SizeofIfInfomsg:])
		if err != nil {
			return 0, fmt.Errorf("parse link message: %w", err)
		}
		info := findAttr(attrs, unix.IFLA_LINKINFO)
		if info == nil {
			continue
		}
		infoAttrs, err := nl.ParseRouteAttr(info)
		if err != nil {
			return 0, fmt.Errorf("parse linkinfo: %w", err)
		}
		data := findAttr(infoAttrs, nl.IFLA_INFO_DATA)
		if data == nil {
			continue
		}
		brAttrs, err := nl.ParseRouteAttr(data)
		if err != nil {
			return 0, fmt.Errorf("parse bridge data: %w", err)
		}
		if v := findAttr(brAttrs, unix.IFLA_BR_STP_STATE); len(v) >= 4 {
			return nl.NativeEndian().Uint32(v), nil
		}
	}
	return 0, fmt.Errorf("link %d reports no bridge stp state", index)
}

func findAttr(attrs []syscall.NetlinkRouteAttr, typ uint16) []byte {
	for _, a := range attrs {
		if a.Attr.Type&^unix.NLA_F_NESTED == typ {
			return a.Value
		}
	}
	return nil
}

// ports lists the names of the links enslaved to bridge index, from a link
// dump the kernel filters by IFLA_MASTER (so the cost does not grow with the
// other links of the host). The filter is checked again here, for kernels
// that ignore it.
func (r *rawSocket) ports(index int) ([]string, error) {
	var names []string
	for try := 0; ; try++ {
		names = names[:0]
		req := r.request(unix.RTM_GETLINK, unix.NLM_F_DUMP)
		req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
		req.AddData(nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(uint32(index))))
		msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
		if errors.Is(err, nl.ErrDumpInterrupted) && try < 5 {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			attrs, err := nl.ParseRouteAttr(m[unix.SizeofIfInfomsg:])
			if err != nil {
				return nil, fmt.Errorf("parse link message: %w", err)
			}
			master := findAttr(attrs, unix.IFLA_MASTER)
			if len(master) < 4 || int(nl.NativeEndian().Uint32(master)) != index {
				continue
			}
			names = append(names, unix.ByteSliceToString(findAttr(attrs, unix.IFLA_IFNAME)))
		}
		return names, nil
	}
}

// addrs lists the addresses of link index (family AF_UNSPEC for all), from
// an address dump the kernel filters by the index (IFA index with strict
// checking on the socket, see newSystem), so the cost does not grow with the
// veths of the host. The filter is applied again here, for kernels that
// ignore it. An interrupted dump (addresses changed meanwhile) is retried.
func (r *rawSocket) addrs(index, family int) ([]netip.Prefix, error) {
	return retryDump(func() ([]netip.Prefix, error) {
		req := r.request(unix.RTM_GETADDR, unix.NLM_F_DUMP)
		msg := nl.NewIfAddrmsg(family)
		msg.Index = uint32(index)
		req.AddData(msg)
		msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWADDR)
		if err != nil {
			return nil, err
		}
		var out []netip.Prefix
		for _, m := range msgs {
			if len(m) < unix.SizeofIfAddrmsg {
				return nil, fmt.Errorf("short address message")
			}
			ifa := nl.DeserializeIfAddrmsg(m)
			if int(ifa.Index) != index {
				continue
			}
			attrs, err := nl.ParseRouteAttr(m[unix.SizeofIfAddrmsg:])
			if err != nil {
				return nil, fmt.Errorf("parse address message: %w", err)
			}
			raw := findAttr(attrs, unix.IFA_LOCAL) // the address itself on IPv4
			if raw == nil {
				raw = findAttr(attrs, unix.IFA_ADDRESS)
			}
			a, ok := netip.AddrFromSlice(raw)
			if !ok {
				continue
			}
			if ifa.Family == unix.AF_INET {
				a = a.Unmap()
			}
			out = append(out, netip.PrefixFrom(a, int(ifa.Prefixlen)))
		}
		return out, nil
	})
}

// retryDump runs a dump request again while the kernel reports it
// interrupted (NLM_F_DUMP_INTR: the objects changed during the dump, so the
// result may be inconsistent), up to 10 times.
func retryDump[T any](dump func() (T, error)) (T, error) {
	for try := 0; ; try++ {
		v, err := dump()
		if (errors.Is(err, netlink.ErrDumpInterrupted) || errors.Is(err, nl.ErrDumpInterrupted)) && try < 10 {
			continue
		}
		return v, err
	}
}

// gone reports whether err means the object is not there (which is success
// for a delete).
func gone(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) ||
		errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EADDRNOTAVAIL)
}

// toNLAddr converts p for netlink. IPv6 addresses are added without
// duplicate address detection: the addresses are allocated, and a tentative
// address would not be usable for a second or more.
func toNLAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: prefixNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// fromNLAddr converts a netlink address back (IPv4 ones unmapped).
func fromNLAddr(a netlink.Addr) netip.Prefix {
	if a.IPNet == nil {
		return netip.Prefix{}
	}
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, bits := a.Mask.Size()
	if bits == 32 {
		ip = ip.Unmap()
	}
	return netip.PrefixFrom(ip, ones)
}

// family is the netlink address family of p.
func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// isDefault reports whether r is a default route (netlink reports its
// destination as nil or as a /0).
func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

// linkLocal reports whether p is an IPv6 link-local address.
func linkLocal(p netip.Prefix) bool { return p.Addr().Is6() && p.Addr().IsLinkLocalUnicast() }

// kernelLinkLocal reports whether p is an IPv6 link-local address other than
// the gateway: one the kernel manages on its own, which the package leaves
// alone.
func kernelLinkLocal(p netip.Prefix) bool { return linkLocal(p) && !isGateway(p) }

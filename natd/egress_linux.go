//go:build linux

package natd

import (
	"fmt"
	"net"

	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// HasIPv6Egress reports whether the network namespace ns (an open file
// descriptor; 0 means the namespace of the calling thread) has an IPv6
// default route in its main routing table that leads somewhere (a unicast
// route, not unreachable, blackhole or prohibit): the condition under which
// IPv6 egress masquerade can carry container traffic anywhere.
//
// natd never switches Masquerade6 on by itself: the node calls this when it
// builds the Config and sets Config.Masquerade6 when it returns true (and
// masquerade is wanted). It looks once; a default route learned from router
// advertisements may come later, so the node may ask again when it
// re-applies its NAT table. Policy routing (default routes in other tables)
// is not looked at.
func HasIPv6Egress(ns int) (bool, error) {
	var h *vnl.Handle
	var err error
	if ns != 0 {
		h, err = vnl.NewHandleAt(netns.NsHandle(ns), unix.NETLINK_ROUTE)
	} else {
		h, err = vnl.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		return false, fmt.Errorf("open route netlink socket: %w", err)
	}
	defer h.Close()
	routes, err := h.RouteListFiltered(vnl.FAMILY_V6, &vnl.Route{Table: unix.RT_TABLE_MAIN}, vnl.RT_FILTER_TABLE)
	if err != nil {
		return false, fmt.Errorf("list IPv6 routes: %w", err)
	}
	for _, r := range routes {
		if isDefault(r.Dst) && r.Type == unix.RTN_UNICAST {
			return true, nil
		}
	}
	return false, nil
}

// isDefault reports whether dst is the default destination (netlink lists
// it as nil or as ::/0 depending on the version).
func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0
}

//go:build linux

package nstest

import (
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestWaitLocal(t *testing.T) {
	ns := New(t, "zlt-nstest")
	// lo is up: its addresses are local at once.
	ns.WaitLocal(t, netip.MustParseAddr("127.0.0.1"))
	ns.WaitLocal(t, netip.IPv6Loopback())
	// A fresh IPv6 address on a fresh link becomes local.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "zlt-v0"}, PeerName: "zlt-v1"}
	if err := ns.NL.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	if err := ns.NL.LinkSetUp(veth); err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr("fd00:97::1/64")
	addr.Flags = 0x02 // IFA_F_NODAD
	if err := ns.NL.AddrAdd(veth, addr); err != nil {
		t.Fatal(err)
	}
	ns.WaitLocal(t, netip.MustParseAddr("fd00:97::1"))
}

//go:build linux

package natd

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/zlmesh/zlmesh/internal/nstest"
	"golang.org/x/sys/unix"
)

// topo is a one-node lab, every part in its own namespace:
//
//	outside 198.51.100.2 ──veth── 198.51.100.1 host 10.200.3.1/16 on "zl0" ──veth── remote 10.200.5.7/16
//	                                  │ zlb-t… 10.200.3.33/27      │ zlb-u… 10.200.3.65/27
//	                            c1 10.200.3.34   c2 10.200.3.35     c3 10.200.3.66
//
// and the same in IPv6 beside it (every address its twin, the host offset
// kept in the node's /64 of the cluster's ULA /48; the outside is in the
// documentation prefix):
//
//	outside 2001:db8:100::2 ── 2001:db8:100::1 host fd00:200:0:3::1/48 on "zl0" ── remote fd00:200:0:5::7/48
//	                                  │ zlb-t… fd00:200:0:3::21/123  │ zlb-u… fd00:200:0:3::41/123
//	                            c1 …::22   c2 …::23                    c3 …::42
//
// outside has no route to the cluster (it only sees the host's public
// address); remote stands for a container on another node: it reaches the
// whole cluster over the "overlay" veth and routes this node's subnet to
// the host (as WireGuard's AllowedIPs would), and knows nothing of
// 198.51.100.0/24.
type topo struct {
	host, c1, c2, c3, outside, remote *nstest.NS
	bridge, bridge2                   string
}

var (
	hostPublic  = netip.MustParseAddr("198.51.100.1")
	outsideAddr = netip.MustParseAddr("198.51.100.2")
	overlayAddr = netip.MustParseAddr("10.200.3.1")
	gatewayAddr = netip.MustParseAddr("10.200.3.33")
	gateway2    = netip.MustParseAddr("10.200.3.65")
	c1Addr      = netip.MustParseAddr("10.200.3.34")
	c2Addr      = netip.MustParseAddr("10.200.3.35")
	c3Addr      = netip.MustParseAddr("10.200.3.66")
	remoteAddr  = netip.MustParseAddr("10.200.5.7")

	hostPublic6  = netip.MustParseAddr("2001:db8:100::1")
	outsideAddr6 = netip.MustParseAddr("2001:db8:100::2")
	overlayAddr6 = netip.MustParseAddr("fd00:200:0:3::1")
	gatewayAddr6 = netip.MustParseAddr("fd00:200:0:3::21")
	c1Addr6      = netip.MustParseAddr("fd00:200:0:3::22")
	c2Addr6      = netip.MustParseAddr("fd00:200:0:3::23")
	c3Addr6      = netip.MustParseAddr("fd00:200:0:3::42")
	remoteAddr6  = netip.MustParseAddr("fd00:200:0:5::7")
)

func newTopo(t testing.TB) *topo {
	t.Helper()
	var b [2]byte
	rand.Read(b[:])
	sfx := hex.EncodeToString(b[:])
	tp := &topo{
		host:    nstest.New(t, "zlt-natd-h"),
		c1:      nstest.New(t, "zlt-natd-c"),
		c2:      nstest.New(t, "zlt-natd-c"),
		c3:      nstest.New(t, "zlt-natd-c"),
		outside: nstest.New(t, "zlt-natd-o"),
		remote:  nstest.New(t, "zlt-natd-r"),
		bridge:  "zlb-t" + sfx,
		bridge2: "zlb-u" + sfx,
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("topology: %s: %v", what, err)
		}
	}
	// No duplicate address detection: addresses are usable at once.
	for _, ns := range []*nstest.NS{tp.host, tp.c1, tp.c2, tp.c3, tp.outside, tp.remote} {
		must("accept_dad in "+ns.Name, ns.Do(func() error {
			for _, c := range []string{"all", "default"} {
				if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+c+"/accept_dad", []byte("0"), 0o644); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	h := tp.host.NL
	bridge := func(name, gw, gw6 string) *netlink.Bridge {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
		must("add bridge", h.LinkAdd(br))
		must("bridge address", h.AddrAdd(br, addr(gw)))
		must("bridge address", h.AddrAdd(br, addr(gw6)))
		must("bridge up", h.LinkSetUp(br))
		return br
	}
	br := bridge(tp.bridge, "10.200.3.33/27", "fd00:200:0:3::21/123")
	br2 := bridge(tp.bridge2, "10.200.3.65/27", "fd00:200:0:3::41/123")

	// veth adds a pair: local end in host (optionally on the bridge, with
	// an address), "eth0" in peer with peerAddr and a default route.
	veth := func(local string, peer *nstest.NS, localAddr, peerAddr, localAddr6, peerAddr6 string, master netlink.Link) {
		t.Helper()
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: local}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(peer.Handle))}
		must("add veth "+local, h.LinkAdd(v))
		l, err := h.LinkByName(local)
		must("find "+local, err)
		if master != nil {
			must("enslave "+local, h.LinkSetMaster(l, master))
			// As the bridge package does: a container reaching itself
			// through a published port is bridged back out of its own
			// port where br_netfilter is active.
			must("hairpin "+local, h.LinkSetHairpin(l, true))
		}
		if localAddr != "" {
			must("address "+local, h.AddrAdd(l, addr(localAddr)))
			must("address "+local, h.AddrAdd(l, addr(localAddr6)))
		}
		must("up "+local, h.LinkSetUp(l))
		p, err := peer.NL.LinkByName("eth0")
		must("find peer of "+local, err)
		must("peer address", peer.NL.AddrAdd(p, addr(peerAddr)))
		must("peer address", peer.NL.AddrAdd(p, addr(peerAddr6)))
		must("peer up", peer.NL.LinkSetUp(p))
	}
	veth("zlc1"+sfx, tp.c1, "", "10.200.3.34/27", "", "fd00:200:0:3::22/123", br)
	veth("zlc2"+sfx, tp.c2, "", "10.200.3.35/27", "", "fd00:200:0:3::23/123", br)
	veth("zlc3"+sfx, tp.c3, "", "10.200.3.66/27", "", "fd00:200:0:3::42/123", br2)
	veth("zlu"+sfx, tp.outside, "198.51.100.1/24", "198.51.100.2/24", "2001:db8:100::1/64", "2001:db8:100::2/64", nil)
	veth("zl0", tp.remote, "10.200.3.1/16", "10.200.5.7/16", "fd00:200:0:3::1/48", "fd00:200:0:5::7/48", nil)
	for c, gw := range map[*nstest.NS][2]string{tp.c1: {"10.200.3.33", "fd00:200:0:3::21"}, tp.c2: {"10.200.3.33", "fd00:200:0:3::21"},
		tp.c3: {"10.200.3.65", "fd00:200:0:3::41"}} {
		must("container default route", c.NL.RouteAdd(&netlink.Route{Gw: net.ParseIP(gw[0])}))
		must("container IPv6 default route", c.NL.RouteAdd(&netlink.Route{Gw: net.ParseIP(gw[1])}))
	}
	must("remote route to the node subnet", tp.remote.NL.RouteAdd(&netlink.Route{
		Dst: &net.IPNet{IP: net.IPv4(10, 200, 3, 0), Mask: net.CIDRMask(24, 32)}, Gw: net.ParseIP("10.200.3.1")}))
	must("remote route to the node's /64", tp.remote.NL.RouteAdd(&netlink.Route{
		Dst: &net.IPNet{IP: net.ParseIP("fd00:200:0:3::"), Mask: net.CIDRMask(64, 128)}, Gw: net.ParseIP("fd00:200:0:3::1")}))
	must("sysctls", tp.host.Do(ApplySysctls))
	must("IPv6 sysctls", tp.host.Do(func() error { _, err := ApplySysctls6(); return err }))
	return tp
}

// setBridgeNF sets net.bridge.bridge-nf-call-iptables in the host namespace
// and returns false when br_netfilter is not there at all.
func (tp *topo) setBridgeNF(t testing.TB, on bool) bool {
	t.Helper()
	return tp.setBridgeNFAt(t, "/proc/sys/net/bridge/bridge-nf-call-iptables", on)
}

// setBridgeNF6 is setBridgeNF for IPv6 (bridge-nf-call-ip6tables).
func (tp *topo) setBridgeNF6(t testing.TB, on bool) bool {
	t.Helper()
	return tp.setBridgeNFAt(t, "/proc/sys/net/bridge/bridge-nf-call-ip6tables", on)
}

func (tp *topo) setBridgeNFAt(t testing.TB, path string, on bool) bool {
	t.Helper()
	v := "0"
	if on {
		v = "1"
	}
	err := tp.host.Do(func() error { return os.WriteFile(path, []byte(v), 0o644) })
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err != nil {
		t.Fatalf("set %s=%s: %v", path, v, err)
	}
	return true
}

// addr parses an address with its prefix length; IPv6 ones skip duplicate
// address detection.
func addr(s string) *netlink.Addr {
	a, err := netlink.ParseAddr(s)
	if err != nil {
		panic(err)
	}
	if a.IP.To4() == nil {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// serveID runs a UDP server in ns on port that answers every datagram
// with id.
func serveID(t testing.TB, ns *nstest.NS, port uint16, id string) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatalf("listen udp :%d in %s: %v", port, ns.Name, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(id), from)
		}
	}()
}

// serve runs a server in ns on proto port (all addresses of both families)
// that answers every connection or datagram with the peer's address as it
// sees it.
func serve(t testing.TB, ns *nstest.NS, proto string, port uint16) {
	t.Helper()
	hostport := fmt.Sprintf(":%d", port)
	var ln net.Listener
	var pc net.PacketConn
	err := ns.Do(func() (err error) {
		if proto == "tcp" {
			ln, err = net.Listen("tcp", hostport)
		} else {
			pc, err = net.ListenPacket("udp", hostport)
		}
		return err
	})
	if err != nil {
		t.Fatalf("listen %s %s in %s: %v", proto, hostport, ns.Name, err)
	}
	if ln != nil {
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
				c.Close()
			}
		}()
		return
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(from.(*net.UDPAddr).AddrPort().Addr().Unmap().String()+"\n"), from)
		}
	}()
}

// ask connects from ns to dst over proto and returns the address the
// server saw this client as.
func ask(ns *nstest.NS, proto string, dst netip.AddrPort, timeout time.Duration) (string, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = net.DialTimeout(proto+netSuffix(dst.Addr()), dst.String(), timeout)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if proto == "udp" {
		if _, err := c.Write([]byte("who am i\n")); err != nil {
			return "", err
		}
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", errors.Join(errors.New("no answer"), err)
	}
	return strings.TrimSpace(line), nil
}

// netSuffix is the suffix of a Go network name for a: "4" or "6".
func netSuffix(a netip.Addr) string {
	if a.Is6() {
		return "6"
	}
	return "4"
}

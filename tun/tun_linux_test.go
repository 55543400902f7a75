//go:build linux

package tun

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/zlmesh/zlmesh/internal/nstest"
	"github.com/zlmesh/zlmesh/tun/tuntest"
	"golang.org/x/sys/unix"
)

// linkName returns a random interface name with zlmesh's prefix.
func linkName(t *testing.T) string {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	return "zlt" + hex.EncodeToString(b[:])
}

// createIn makes a TUN inside ns and registers its Close.
func createIn(t *testing.T, ns *nstest.NS, name string, mtu int) Device {
	t.Helper()
	var dev Device
	err := ns.Do(func() error {
		var err error
		dev, err = Create(name, mtu)
		return err
	})
	if err != nil {
		t.Fatalf("Create(%q) in %s: %v", name, ns.Name, err)
	}
	go func() {
		for range dev.Events() {
		}
	}()
	t.Cleanup(func() { dev.Close() })
	return dev
}

func linkNames(t *testing.T, h *netlink.Handle) []string {
	t.Helper()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	slices.Sort(names)
	return names
}

func TestCreateInNamespace(t *testing.T) {
	ns := nstest.New(t, "zlt-tun")
	name := linkName(t)
	dev := createIn(t, ns, name, 1400)

	link, err := ns.NL.LinkByName(name)
	if err != nil {
		t.Fatalf("the TUN is not in the namespace: %v", err)
	}
	if link.Type() != "tuntap" {
		t.Errorf("link type %q, want tuntap", link.Type())
	}
	if _, err := netlink.LinkByName(name); err == nil {
		t.Errorf("a link %s appeared in the test's own namespace", name)
	}
	if got, _ := dev.Name(); got != name {
		t.Errorf("Name() = %q, want %q", got, name)
	}
	// Asked from this goroutine, which is not in the namespace.
	if mtu, err := dev.MTU(); mtu != 1400 || err != nil {
		t.Errorf("MTU() = %d, %v; want 1400", mtu, err)
	}
	if link.Attrs().MTU != 1400 {
		t.Errorf("kernel MTU %d, want 1400", link.Attrs().MTU)
	}
	t.Logf("batch size %d (offloads %v)", dev.BatchSize(), dev.BatchSize() > 1)

	if err := dev.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, err := ns.NL.LinkByName(name); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("link %s still there after Close", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCreateErrors(t *testing.T) {
	ns := nstest.New(t, "zlt-tun")
	taken := linkName(t)
	createIn(t, ns, taken, 0)
	bridge := linkName(t)
	if err := ns.NL.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridge}}); err != nil {
		t.Fatalf("add bridge: %v", err)
	}
	before := linkNames(t, ns.NL)
	fds := openFDs(t)

	tests := []struct {
		name, ifname string
		mtu          int
		want         error
		mention      string
	}{
		{"too long", "zl" + strings.Repeat("x", 14), 0, ErrInvalidName, "longer than 15"},
		{"slash", "zl/0", 0, ErrInvalidName, "'/'"},
		{"format verb", "zl%d", 0, ErrInvalidName, "'%'"},
		{"mtu too small", linkName(t), 40, nil, "mtu 40"},
		{"held by another", taken, 0, ErrNameInUse, taken},
		{"not a tun", bridge, 0, ErrNameInUse, "not a TUN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ns.Do(func() error {
				dev, err := Create(tt.ifname, tt.mtu)
				if err == nil {
					dev.Close()
				}
				return err
			})
			if err == nil {
				t.Fatalf("Create(%q, %d) succeeded", tt.ifname, tt.mtu)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("error %q does not mention %q", err, tt.mention)
			}
			t.Logf("%v", err)
		})
	}
	if after := linkNames(t, ns.NL); !slices.Equal(before, after) {
		t.Errorf("links changed: %v -> %v", before, after)
	}
	if after := openFDs(t); after != fds {
		t.Errorf("failed creates leaked file descriptors: %d open before, %d after", fds, after)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// addrs lists the addresses of a family on a link, as prefixes, without
// IPv6 link-local ones.
func addrs(t *testing.T, h *netlink.Handle, name string, family int) []netip.Prefix {
	t.Helper()
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	list, err := h.AddrList(link, family)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Prefix
	for _, a := range list {
		p := ipNetToPrefix(a.IPNet)
		if p.Addr().Is6() && p.Addr().IsLinkLocalUnicast() {
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
	return out
}

func TestSetAddress(t *testing.T) {
	ns := nstest.New(t, "zlt-tun")
	name := linkName(t)
	createIn(t, ns, name, 0)
	pfx := netip.MustParsePrefix

	// A stray address of each family, as an earlier run might have left.
	link, _ := ns.NL.LinkByName(name)
	for _, s := range []string{"10.99.7.7/16", "fd00:99::7/64"} {
		if err := ns.NL.AddrAdd(link, &netlink.Addr{IPNet: prefixToIPNet(pfx(s))}); err != nil {
			t.Fatalf("add %s: %v", s, err)
		}
	}

	steps := []struct {
		name   string
		set    netip.Prefix
		public bool // through SetAddress inside the namespace
		v4, v6 []netip.Prefix
	}{
		{"replace stray", pfx("10.99.0.1/24"), false, []netip.Prefix{pfx("10.99.0.1/24")}, []netip.Prefix{pfx("fd00:99::7/64")}},
		{"again is a no-op", pfx("10.99.0.1/24"), true, []netip.Prefix{pfx("10.99.0.1/24")}, []netip.Prefix{pfx("fd00:99::7/64")}},
		{"same address, other length", pfx("10.99.0.1/16"), true, []netip.Prefix{pfx("10.99.0.1/16")}, []netip.Prefix{pfx("fd00:99::7/64")}},
		// 10.99.0.2/16 is added as a secondary of 10.99.0.1/16; deleting
		// that primary would take the secondary with it.
		{"secondary in the same subnet", pfx("10.99.0.2/16"), false, []netip.Prefix{pfx("10.99.0.2/16")}, []netip.Prefix{pfx("fd00:99::7/64")}},
		{"ipv6", pfx("fd00:99::1/64"), true, []netip.Prefix{pfx("10.99.0.2/16")}, []netip.Prefix{pfx("fd00:99::1/64")}},
		{"back", pfx("10.99.0.1/24"), true, []netip.Prefix{pfx("10.99.0.1/24")}, []netip.Prefix{pfx("fd00:99::1/64")}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			var err error
			if st.public {
				err = ns.Do(func() error { return SetAddress(name, st.set) })
			} else {
				err = setAddressAt(ns.NL, name, st.set)
			}
			if err != nil {
				t.Fatalf("set %s: %v", st.set, err)
			}
			if got := addrs(t, ns.NL, name, netlink.FAMILY_V4); !slices.Equal(got, st.v4) {
				t.Errorf("IPv4 addresses %v, want %v", got, st.v4)
			}
			if got := addrs(t, ns.NL, name, netlink.FAMILY_V6); !slices.Equal(got, st.v6) {
				t.Errorf("IPv6 addresses %v, want %v", got, st.v6)
			}
			link, _ := ns.NL.LinkByName(name)
			if link.Attrs().Flags&net.FlagUp == 0 {
				t.Errorf("link is not up")
			}
		})
	}

	t.Run("errors", func(t *testing.T) {
		err := ns.Do(func() error { return SetAddress("zltmissing", pfx("10.99.0.1/24")) })
		if !errors.Is(err, ErrLinkNotFound) || !strings.Contains(err.Error(), "zltmissing") {
			t.Errorf("missing link: %v", err)
		}
		for _, bad := range []netip.Prefix{{}, pfx("0.0.0.0/8"), pfx("224.0.0.1/4"), pfx("fe80::1/64"), pfx("::ffff:10.0.0.1/120")} {
			if err := SetAddress(name, bad); err == nil {
				t.Errorf("SetAddress accepted %v", bad)
			}
		}
		if got := addrs(t, ns.NL, name, netlink.FAMILY_V4); !slices.Equal(got, []netip.Prefix{pfx("10.99.0.1/24")}) {
			t.Errorf("bad input changed the addresses: %v", got)
		}
	})
}

// linkRoute is a route through the test link, as the kernel has it.
type linkRoute struct {
	dst    netip.Prefix
	proto  int
	metric int
}

func (r linkRoute) String() string {
	return fmt.Sprintf("%s proto %d metric %d", r.dst, r.proto, r.metric)
}

// routesVia dumps the main-table routes through the link.
func routesVia(t *testing.T, h *netlink.Handle, name string) []linkRoute {
	t.Helper()
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	var out []linkRoute
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := h.RouteListFiltered(family, &netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			dst := routeDst(r, family)
			if dst.Addr().Is6() && dst.Addr().IsLinkLocalUnicast() || dst.Addr().IsMulticast() {
				continue // the kernel's fe80::/64 and multicast routes
			}
			out = append(out, linkRoute{dst, int(r.Protocol), r.Priority})
		}
	}
	slices.SortFunc(out, func(a, b linkRoute) int { return strings.Compare(a.String(), b.String()) })
	return out
}

func owned(rs []linkRoute) []netip.Prefix {
	var out []netip.Prefix
	for _, r := range rs {
		if r.proto == RouteProtocol {
			if r.metric != RouteMetric {
				panic(fmt.Sprintf("owned route %v with metric %d", r.dst, r.metric))
			}
			out = append(out, r.dst)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
	return out
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
	return out
}

func TestSetRoutes(t *testing.T) {
	ns := nstest.New(t, "zlt-tun")
	name := linkName(t)
	createIn(t, ns, name, 0)
	if err := setAddressAt(ns.NL, name, netip.MustParsePrefix("10.99.0.1/24")); err != nil {
		t.Fatal(err)
	}
	link, _ := ns.NL.LinkByName(name)
	// A route someone else made through the link.
	foreign := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: prefixToIPNet(netip.MustParsePrefix("10.97.0.0/24")),
		Protocol: unix.RTPROT_STATIC, Scope: netlink.SCOPE_LINK}
	if err := ns.NL.RouteAdd(foreign); err != nil {
		t.Fatalf("add foreign route: %v", err)
	}
	others := []linkRoute{
		{netip.MustParsePrefix("10.97.0.0/24"), unix.RTPROT_STATIC, 0},
		{netip.MustParsePrefix("10.99.0.0/24"), unix.RTPROT_KERNEL, 0}, // connected
	}
	othersOf := func(rs []linkRoute) []linkRoute {
		var out []linkRoute
		for _, r := range rs {
			if r.proto != RouteProtocol {
				out = append(out, r)
			}
		}
		return out
	}

	steps := []struct {
		name   string
		routes []string
		public bool
		want   []netip.Prefix
	}{
		{"install", []string{"10.98.0.0/24", "10.96.0.0/16", "fd00:98::/64", "10.99.0.0/24", "10.98.0.0/24"}, false,
			prefixes("10.98.0.0/24", "10.96.0.0/16", "fd00:98::/64", "10.99.0.0/24")},
		{"again", []string{"10.98.0.0/24", "10.96.0.0/16", "fd00:98::/64", "10.99.0.0/24"}, true,
			prefixes("10.98.0.0/24", "10.96.0.0/16", "fd00:98::/64", "10.99.0.0/24")},
		{"shrink", []string{"10.98.0.0/24"}, true, prefixes("10.98.0.0/24")},
		{"default route", []string{"0.0.0.0/0", "::/0"}, false, prefixes("0.0.0.0/0", "::/0")},
		{"none", nil, true, nil},
		{"final", []string{"10.98.0.0/24", "fd00:98::/64"}, false, prefixes("10.98.0.0/24", "fd00:98::/64")},
	}
	var prev []linkRoute
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			var want []netip.Prefix
			for _, s := range st.routes {
				want = append(want, netip.MustParsePrefix(s))
			}
			var err error
			if st.public {
				err = ns.Do(func() error { return SetRoutes(name, want) })
			} else {
				err = setRoutesAt(ns.NL, name, want)
			}
			if err != nil {
				t.Fatalf("set routes: %v", err)
			}
			got := routesVia(t, ns.NL, name)
			if o := owned(got); !slices.Equal(o, st.want) {
				t.Errorf("owned routes %v, want %v", o, st.want)
			}
			if o := othersOf(got); !slices.Equal(o, others) {
				t.Errorf("other routes %v, want %v", o, others)
			}
			if st.name == "again" && !slices.Equal(got, prev) {
				t.Errorf("setting the same routes again changed %v to %v", prev, got)
			}
			prev = got
		})
	}

	t.Run("conflict changes nothing", func(t *testing.T) {
		clash := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: prefixToIPNet(netip.MustParsePrefix("10.95.0.0/24")),
			Protocol: unix.RTPROT_STATIC, Priority: RouteMetric, Scope: netlink.SCOPE_LINK}
		if err := ns.NL.RouteAdd(clash); err != nil {
			t.Fatal(err)
		}
		defer ns.NL.RouteDel(clash)
		before := routesVia(t, ns.NL, name)
		err := setRoutesAt(ns.NL, name, prefixes("10.94.0.0/24", "10.95.0.0/24"))
		if !errors.Is(err, ErrRouteConflict) || !strings.Contains(err.Error(), "10.95.0.0/24") {
			t.Fatalf("error %v, want ErrRouteConflict naming 10.95.0.0/24", err)
		}
		if after := routesVia(t, ns.NL, name); !slices.Equal(before, after) {
			t.Errorf("routes changed on conflict: %v -> %v", before, after)
		}
	})

	t.Run("bad input changes nothing", func(t *testing.T) {
		before := routesVia(t, ns.NL, name)
		for _, tt := range []struct {
			routes  []netip.Prefix
			mention string
		}{
			{prefixes("10.94.0.0/24", "10.93.1.2/16"), "host bits set (want 10.93.0.0/16)"},
			{[]netip.Prefix{netip.MustParsePrefix("10.94.0.0/24"), {}}, "invalid prefix"},
			{prefixes("10.94.0.0/24", "::ffff:10.0.0.0/104"), "IPv4-mapped"},
		} {
			err := ns.Do(func() error { return SetRoutes(name, tt.routes) })
			if err == nil || !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("SetRoutes(%v) = %v, want an error saying %q", tt.routes, err, tt.mention)
			}
		}
		if after := routesVia(t, ns.NL, name); !slices.Equal(before, after) {
			t.Errorf("routes changed: %v -> %v", before, after)
		}
		err := ns.Do(func() error { return SetRoutes("zltmissing", nil) })
		if !errors.Is(err, ErrLinkNotFound) || !strings.Contains(err.Error(), "zltmissing") {
			t.Errorf("missing link: %v", err)
		}
	})
}

// echoReply answers an ICMP or ICMPv6 echo request.
func echoReply(p *Packet) []byte {
	hl := len(p.Buf) - len(p.Transport)
	if p.Version == 4 {
		hl = int(p.Buf[0]&0x0f) * 4
	}
	out := bytes.Clone(p.Buf[:hl+len(p.Transport)])
	icmp := out[hl:]
	icmp[2], icmp[3] = 0, 0
	if p.Version == 4 {
		src, dst := p.Dst.As4(), p.Src.As4()
		copy(out[12:16], src[:])
		copy(out[16:20], dst[:])
		out[8] = 64
		IPv4HeaderChecksum(out)
		icmp[0] = 0
		binary.BigEndian.PutUint16(icmp[2:], Checksum(icmp, 0))
	} else {
		src, dst := p.Dst.As16(), p.Src.As16()
		copy(out[8:24], src[:])
		copy(out[24:40], dst[:])
		out[7] = 64
		icmp[0] = 129
		binary.BigEndian.PutUint16(icmp[2:], Checksum(icmp, PseudoHeaderSum(ProtoICMPv6, p.Dst, p.Src, len(icmp))))
	}
	return out
}

// TestEndToEnd sends real packets from programs in a namespace to
// addresses routed to a real TUN; an outbound hook of the Wrapper answers
// them with InjectInbound, and the programs must receive the answers.
func TestEndToEnd(t *testing.T) {
	ns := nstest.New(t, "zlt-tun")
	name := linkName(t)
	dev := createIn(t, ns, name, 0)
	w := NewWrapper(dev)
	for _, a := range []string{"10.99.0.1/24", "fd00:99::1/64"} {
		if err := setAddressAt(ns.NL, name, netip.MustParsePrefix(a)); err != nil {
			t.Fatal(err)
		}
	}
	if err := setRoutesAt(ns.NL, name, prefixes("10.98.0.0/24", "fd00:98::/64")); err != nil {
		t.Fatal(err)
	}

	seen := make(chan string, 16)
	w.AddHook(Outbound, 0, "responder", func(p *Packet) Verdict {
		switch {
		case p.Proto == ProtoUDP && p.DstPort == 5353 && p.Payload != nil:
			seen <- fmt.Sprintf("udp %v:%d", p.Dst, p.DstPort)
			if err := w.InjectInbound(UDPReply(p, append([]byte("pong:"), p.Payload...))); err != nil {
				t.Errorf("inject: %v", err)
			}
			return Consumed
		case (p.Proto == ProtoICMP && len(p.Transport) >= 8 && p.Transport[0] == 8) ||
			(p.Proto == ProtoICMPv6 && len(p.Transport) >= 8 && p.Transport[0] == 128):
			seen <- fmt.Sprintf("echo %v", p.Dst)
			if err := w.InjectInbound(echoReply(p)); err != nil {
				t.Errorf("inject: %v", err)
			}
			return Consumed
		}
		return Accept // router solicitations, MLD and the like
	})
	readErr := make(chan error, 1)
	go func() {
		bufs, sizes := makeBufs(w.BatchSize(), 16+65535)
		for {
			if _, err := w.Read(bufs, sizes, 16); err != nil {
				readErr <- err
				return
			}
		}
	}()

	for _, tc := range []struct {
		network    string
		local, dst string
	}{
		{"udp4", "10.99.0.1", "10.98.0.7"},
		{"udp6", "fd00:99::1", "fd00:98::7"},
	} {
		t.Run(tc.network, func(t *testing.T) {
			var conn *net.UDPConn
			if err := ns.Do(func() error {
				var err error
				conn, err = net.ListenUDP(tc.network, &net.UDPAddr{IP: net.ParseIP(tc.local)})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			dst := &net.UDPAddr{IP: net.ParseIP(tc.dst), Port: 5353}
			if _, err := conn.WriteTo([]byte("ping"), dst); err != nil {
				t.Fatalf("send: %v", err)
			}
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 1500)
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if string(buf[:n]) != "pong:ping" || !from.IP.Equal(dst.IP) || from.Port != 5353 {
				t.Fatalf("answer %q from %v", buf[:n], from)
			}
			if got := <-seen; got != fmt.Sprintf("udp %s:5353", tc.dst) {
				t.Errorf("hook saw %q", got)
			}
		})
	}

	for _, tc := range []struct {
		network, local, dst string
		request             byte
	}{
		{"ip4:icmp", "10.99.0.1", "10.98.0.9", 8},
		{"ip6:ipv6-icmp", "fd00:99::1", "fd00:98::9", 128},
	} {
		t.Run(tc.network, func(t *testing.T) {
			var conn net.PacketConn
			if err := ns.Do(func() error {
				var err error
				conn, err = net.ListenPacket(tc.network, tc.local)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			id := uint16(os.Getpid())
			req := []byte{tc.request, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 'z', 'l'}
			if tc.request == 8 {
				binary.BigEndian.PutUint16(req[2:], Checksum(req, 0))
			} // the kernel computes ICMPv6 checksums of raw sockets
			if _, err := conn.WriteTo(req, &net.IPAddr{IP: net.ParseIP(tc.dst)}); err != nil {
				t.Fatalf("send echo: %v", err)
			}
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 1500)
			for {
				n, from, err := conn.ReadFrom(buf)
				if err != nil {
					t.Fatalf("no echo reply: %v", err)
				}
				m := buf[:n]
				if len(m) >= 8 && (m[0] == 0 || m[0] == 129) && binary.BigEndian.Uint16(m[4:]) == id {
					if from.(*net.IPAddr).IP.String() != tc.dst || !bytes.Equal(m[8:], []byte("zl")) {
						t.Fatalf("echo reply %x from %v", m, from)
					}
					break
				}
			}
			if got := <-seen; got != "echo "+tc.dst {
				t.Errorf("hook saw %q", got)
			}
		})
	}

	// Packets from "WireGuard" through Write, past an inbound hook that
	// drops one, to a socket in the namespace.
	t.Run("write", func(t *testing.T) {
		var conn *net.UDPConn
		if err := ns.Do(func() error {
			var err error
			conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.99.0.1"), Port: 7000})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		remove := w.AddHook(Inbound, 0, "drop b", func(p *Packet) Verdict {
			if string(p.Payload) == "b" {
				return Drop
			}
			return Accept
		})
		defer remove()
		from := netip.MustParseAddrPort("10.98.0.5:9000")
		to := netip.MustParseAddrPort("10.99.0.1:7000")
		var bufs [][]byte
		for _, s := range []string{"a", "b", "c"} {
			bufs = append(bufs, append(make([]byte, 16), tuntest.UDP(from, to, []byte(s))...))
		}
		if n, err := w.Write(bufs, 16); n != 3 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		var got []string
		buf := make([]byte, 1500)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		for len(got) < 2 {
			n, src, err := conn.ReadFromUDP(buf)
			if err != nil {
				t.Fatalf("received %v, then: %v", got, err)
			}
			if src.AddrPort() != from {
				t.Fatalf("packet from %v", src)
			}
			got = append(got, string(buf[:n]))
		}
		conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, _, err := conn.ReadFromUDP(buf); err == nil {
			got = append(got, string(buf[:n]))
		}
		slices.Sort(got)
		if !slices.Equal(got, []string{"a", "c"}) {
			t.Fatalf("socket received %v, want [a c]", got)
		}
		if c := w.Counters(Inbound); c.Seen != 3 || c.Dropped != 1 {
			t.Errorf("inbound counters %+v", c)
		}
	})

	if c := w.Counters(Inbound); c.Injected != 4 {
		t.Errorf("inbound counters %+v, want 4 injected", c)
	}
	if c := w.Counters(Outbound); c.Consumed != 4 {
		t.Errorf("outbound counters %+v, want 4 consumed", c)
	}
	w.Close()
	select {
	case err := <-readErr:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("Read did not return after Close")
	}
}

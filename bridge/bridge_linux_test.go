//go:build linux

package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/zlmesh/zlmesh/internal/nstest"
	"golang.org/x/sys/unix"
)

// env is a "host" namespace with a Manager working in it.
type env struct {
	t    testing.TB
	host *nstest.NS
	m    *Manager
}

func newEnv(t testing.TB) *env {
	t.Helper()
	host := nstest.New(t, "zlt-bridge")
	e := &env{t: t, host: host}
	e.m = e.manager()
	return e
}

// manager makes a Manager over the env's host namespace, closed at cleanup.
func (e *env) manager() *Manager { return e.managerWith(Config{}) }

// managerWith is manager with cfg's other fields (a Guard).
func (e *env) managerWith(cfg Config) *Manager {
	e.t.Helper()
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cfg.HostNetns, cfg.Forwarding = e.host.Path, true
	m, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { m.Close() })
	return m
}

func (e *env) container() *nstest.NS {
	e.t.Helper()
	return nstest.New(e.t, "zlt-bridge")
}

// spec is an attachment of a container address (a full-length prefix) with
// its family's gateway.
func spec(service, container string, ns *nstest.NS, addr string) Spec {
	a := netip.MustParsePrefix(addr)
	return Spec{
		Service: service, Container: container, Netns: ns.Path, MTU: 1400,
		Address: a, Gateway: GatewayFor(a.Addr()),
	}
}

// snapshot describes every link (name, kind, up, master) and address of a
// namespace, for before/after comparisons.
func snapshot(t testing.TB, h *netlink.Handle) string {
	t.Helper()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var lines []string
	for _, l := range links {
		a := l.Attrs()
		lines = append(lines, fmt.Sprintf("link %s %s up=%v master=%s mtu=%d", a.Name, l.Type(), a.Flags&net.FlagUp != 0, names[a.MasterIndex], a.MTU))
	}
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	// IPv6 link-local addresses and their routes are the kernel's, come
	// and go with carrier, asynchronously, and die with their links: left out.
	for _, a := range addrs {
		if p := fromNLAddr(a); !kernelLinkLocal(p) {
			lines = append(lines, fmt.Sprintf("addr %s %s", names[a.LinkIndex], p))
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.RouteList(nil, fam)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range routes {
			if r.Dst != nil && r.Protocol == unix.RTPROT_KERNEL && r.Dst.IP.To4() == nil && r.Dst.IP.IsLinkLocalUnicast() {
				continue
			}
			lines = append(lines, fmt.Sprintf("route %s dev %s via %s proto %d", r.Dst, names[r.LinkIndex], r.Gw, r.Protocol))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// globalAddrs lists the addresses of link name in h, the kernel's IPv6
// link-local ones aside.
func globalAddrs(t testing.TB, h *netlink.Handle, name string) []netip.Prefix {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if p := fromNLAddr(a); !kernelLinkLocal(p) {
			out = append(out, p)
		}
	}
	return out
}

// ping sends ICMP echo requests from a raw socket made inside ns to the
// address of to and waits (up to 2 s) for a reply: real traffic through the
// veths and the bridge, no ping binary needed.
func ping(t testing.TB, ns *nstest.NS, to netip.Prefix) error {
	t.Helper()
	network, reqType, replyType := "ip4:icmp", byte(8), byte(0)
	if to.Addr().Is6() {
		network, reqType, replyType = "ip6:ipv6-icmp", 128, 129
	}
	var conn net.PacketConn
	if err := ns.Do(func() (err error) {
		conn, err = net.ListenPacket(network, "")
		return err
	}); err != nil {
		return fmt.Errorf("icmp socket in %s: %w", ns.Name, err)
	}
	defer conn.Close()
	id := uint16(os.Getpid()) ^ uint16(time.Now().UnixNano())
	deadline := time.Now().Add(2 * time.Second)
	conn.SetDeadline(deadline)
	dst := &net.IPAddr{IP: to.Addr().AsSlice()}
	buf := make([]byte, 1500)
	for seq := uint16(1); time.Now().Before(deadline); seq++ {
		msg := []byte{reqType, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq), 'z', 'l', 'm', 's'}
		if to.Addr().Is4() { // the kernel sums ICMPv6 itself
			var sum uint32
			for i := 0; i < len(msg); i += 2 {
				sum += uint32(msg[i])<<8 | uint32(msg[i+1])
			}
			sum = (sum >> 16) + (sum & 0xffff)
			sum += sum >> 16
			msg[2], msg[3] = byte(^sum>>8), byte(^sum)
		}
		if _, err := conn.WriteTo(msg, dst); err != nil {
			return fmt.Errorf("ping %s from %s: %w", to.Addr(), ns.Name, err)
		}
		conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				break // next request
			}
			if n >= 8 && buf[0] == replyType && uint16(buf[4])<<8|uint16(buf[5]) == id &&
				from.(*net.IPAddr).IP.Equal(dst.IP) {
				return nil
			}
		}
	}
	return fmt.Errorf("ping %s from %s: no echo reply in 2 s", to.Addr(), ns.Name)
}

func mustPing(t testing.TB, ns *nstest.NS, to netip.Prefix) {
	t.Helper()
	if err := ping(t, ns, to); err != nil {
		t.Error(err)
	}
}

// checkContainer verifies the container side of an attachment.
func checkContainer(t *testing.T, ns *nstest.NS, s Spec) {
	t.Helper()
	l, err := ns.NL.LinkByName(s.ifname())
	if err != nil {
		t.Fatalf("%s in %s: %v", s.ifname(), ns.Name, err)
	}
	if l.Type() != "veth" || l.Attrs().Flags&net.FlagUp == 0 || l.Attrs().MTU != s.MTU {
		t.Errorf("%s: type %s up %v mtu %d; want an up veth with mtu %d", s.ifname(), l.Type(), l.Attrs().Flags&net.FlagUp != 0, l.Attrs().MTU, s.MTU)
	}
	var wantAddrs []netip.Prefix
	for _, a := range s.addrs() {
		wantAddrs = append(wantAddrs, a.addr)
	}
	if got := globalAddrs(t, ns.NL, s.ifname()); !slices.Equal(got, wantAddrs) {
		t.Errorf("%s addresses %v, want %v", s.ifname(), got, wantAddrs)
	}
	lo, err := ns.NL.LinkByName("lo")
	if err != nil || lo.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("lo not up: %v", err)
	}
	// Per family exactly the route to the gateway and the default route
	// via it (the kernel's IPv6 routes of its own addresses aside): no
	// subnet route.
	for _, a := range s.addrs() {
		routes, err := ns.NL.RouteList(l, family(a.addr))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range routes {
			if p := prefixFromNet(r.Dst); r.Protocol == unix.RTPROT_KERNEL && (linkLocal(p) || p == a.addr) {
				continue
			}
			dst := "default"
			if !isDefault(r) {
				dst = prefixFromNet(r.Dst).String()
			}
			got = append(got, fmt.Sprintf("%s via %v scope %d", dst, r.Gw, r.Scope))
		}
		slices.Sort(got)
		want := []string{
			fmt.Sprintf("%s via <nil> scope %d", a.gw, netlink.SCOPE_LINK),
			fmt.Sprintf("default via %s scope %d", a.gw.Addr(), netlink.SCOPE_UNIVERSE),
		}
		if a.addr.Addr().Is6() { // IPv6 routes carry no scope
			want[0] = fmt.Sprintf("%s via <nil> scope %d", a.gw, netlink.SCOPE_UNIVERSE)
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("routes of %s in %s:\n got %q\nwant %q", s.ifname(), ns.Name, got, want)
		}
		if a.addr.Addr().Is6() {
			for _, key := range []string{"accept_ra", "accept_redirects"} {
				var v []byte
				ns.Do(func() (err error) {
					v, err = os.ReadFile("/proc/sys/net/ipv6/conf/" + s.ifname() + "/" + key)
					return err
				})
				if strings.TrimSpace(string(v)) != "0" {
					t.Errorf("%s in %s: %s = %q, want 0", s.ifname(), ns.Name, key, v)
				}
			}
		}
	}
}

// checkHostRoutes verifies that the host routes of this package going out
// of bridge are exactly to addrs.
func checkHostRoutes(t *testing.T, e *env, bridge string, addrs ...netip.Prefix) {
	t.Helper()
	inv, err := e.m.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	var got []netip.Prefix
	for _, r := range inv.Routes {
		if r.Bridge == bridge {
			got = append(got, r.Dst)
		}
	}
	slices.SortFunc(addrs, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	if !slices.Equal(got, addrs) {
		t.Errorf("host routes to %s: %v, want %v", bridge, got, addrs)
	}
}

// hostSysctl reads a /proc/sys key inside the env's host namespace.
func hostSysctl(t *testing.T, e *env, key string) string {
	t.Helper()
	var v string
	if err := e.host.Do(func() error {
		b, err := os.ReadFile("/proc/sys/" + key)
		v = strings.TrimSpace(string(b))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// checkBridge verifies a bridge: exactly the gateway, STP off, up, these ports.
func checkBridge(t *testing.T, e *env, name string, gw netip.Prefix, ports ...string) {
	t.Helper()
	br, err := e.host.NL.LinkByName(name)
	if err != nil {
		t.Fatalf("bridge %s: %v", name, err)
	}
	if br.Type() != "bridge" || br.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("%s: type %s up %v", name, br.Type(), br.Attrs().Flags&net.FlagUp != 0)
	}
	if got := globalAddrs(t, e.host.NL, name); !slices.Equal(got, []netip.Prefix{gw}) {
		t.Errorf("%s addresses %v, want exactly [%s]", name, got, gw)
	}
	if stp, err := e.m.sys.raw.stpState(br.Attrs().Index); err != nil || stp != 0 {
		t.Errorf("%s stp state %d (%v), want 0", name, stp, err)
	}
	if v := hostSysctl(t, e, "net/ipv4/conf/"+name+"/send_redirects"); v != "0" {
		t.Errorf("%s send_redirects = %s, want 0", name, v)
	}
	// And as iproute2 sees it.
	out, err := exec.Command("ip", "-n", e.host.Name, "-d", "link", "show", name).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "stp_state 0") {
		t.Errorf("ip -d link show %s: %v\n%s", name, err, out)
	}
	got, err := e.m.sys.raw.ports(br.Attrs().Index)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	slices.Sort(ports)
	if !slices.Equal(got, ports) {
		t.Errorf("%s ports %v, want %v", name, got, ports)
	}
}

func TestAttach(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c1, c2, c3 := e.container(), e.container(), e.container()
	s1 := spec("web", "c1", c1, "10.200.1.34/32")
	s2 := spec("web", "c2", c2, "10.200.1.35/32")
	s3 := spec("db", "c3", c3, "10.200.1.66/32")
	s3.Ifname = "zl-in"
	var as []Attached
	for _, s := range []Spec{s1, s2, s3} {
		a, err := e.m.Attach(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if a.Bridge != BridgeName(s.Service) || a.HostVeth != VethName(s.Container) || a.NetnsID.IsZero() || len(a.Repairs) != 0 {
			t.Errorf("Attach(%s) = %+v", s.Container, a)
		}
		as = append(as, a)
	}
	checkContainer(t, c1, s1)
	checkContainer(t, c2, s2)
	checkContainer(t, c3, s3)
	checkBridge(t, e, "zlb-web", s1.Gateway, VethName("c1"), VethName("c2"))
	checkBridge(t, e, "zlb-db", s3.Gateway, VethName("c3"))
	for _, c := range []string{"c1", "c2", "c3"} {
		l, err := e.host.NL.LinkByName(VethName(c))
		if err != nil || l.Attrs().Flags&net.FlagUp == 0 || l.Attrs().MTU != 1400 {
			t.Errorf("host veth of %s: %v %+v", c, err, l)
		}
		if pi, err := e.host.NL.LinkGetProtinfo(l); err != nil || !pi.Hairpin {
			t.Errorf("host veth of %s: hairpin mode off (%v); natd's self-hairpin needs it", c, err)
		}
	}

	checkHostRoutes(t, e, "zlb-web", s1.Address, s2.Address)
	checkHostRoutes(t, e, "zlb-db", s3.Address)

	// Traffic, all of it through the host's routing (forwarding is on):
	// neighbours on one bridge, their gateway, across services.
	mustPing(t, c1, s2.Address)
	mustPing(t, c2, s1.Address)
	mustPing(t, c1, s1.Gateway)
	mustPing(t, c3, s3.Gateway)
	mustPing(t, c1, s3.Address)
	mustPing(t, c3, s2.Address)
	mustPing(t, e.host, s1.Address)
	if fwd := hostSysctl(t, e, "net/ipv4/ip_forward"); fwd != "1" {
		t.Errorf("host ip_forward = %q, want 1", fwd)
	}
	if v := hostSysctl(t, e, "net/ipv4/conf/all/send_redirects"); v != "0" {
		t.Errorf("host conf.all.send_redirects = %q, want 0", v)
	}

	for i, s := range []Spec{s1, s2, s3} {
		if ok, err := e.m.Alive(s, as[i].NetnsID); !ok || err != nil {
			t.Errorf("Alive(%s) = %v, %v", s.Container, ok, err)
		}
	}
	// A PID reused by another process: that process's namespace differs.
	if ok, err := e.m.Alive(Spec{PID: os.Getpid()}, as[0].NetnsID); ok || err != nil {
		t.Errorf("Alive(other process) = %v, %v; want false", ok, err)
	}

	inv, err := e.m.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	want := Inventory{
		Bridges: []BridgeInfo{
			{Name: "zlb-db", Service: "db", Up: true, Ports: []string{VethName("c3")}},
			{Name: "zlb-web", Service: "web", Up: true, Ports: sorted(VethName("c1"), VethName("c2"))},
		},
		Routes: []RouteInfo{{s1.Address, "zlb-web"}, {s2.Address, "zlb-web"}, {s3.Address, "zlb-db"}},
	}
	for _, c := range []string{"c1", "c2", "c3"} {
		master := "zlb-web"
		if c == "c3" {
			master = "zlb-db"
		}
		want.Veths = append(want.Veths, VethInfo{Name: VethName(c), Container: c, Master: master, Up: true})
	}
	slices.SortFunc(want.Veths, func(a, b VethInfo) int { return strings.Compare(a.Name, b.Name) })
	for i := range inv.Bridges {
		var global []netip.Prefix
		for _, p := range inv.Bridges[i].Addrs {
			if !kernelLinkLocal(p) {
				global = append(global, p)
			}
		}
		wantAddr := []netip.Prefix{GatewayFor(s1.Address.Addr())}
		if !slices.Equal(global, wantAddr) {
			t.Errorf("inventory %s addrs %v, want %v", inv.Bridges[i].Name, global, wantAddr)
		}
		inv.Bridges[i].Addrs = nil
	}
	if fmt.Sprint(inv) != fmt.Sprint(want) {
		t.Errorf("inventory\n got %+v\nwant %+v", inv, want)
	}

	// Detach: the bridge stays while it has a member, goes with the last;
	// the container's host route goes with it, its neighbour's stays.
	if err := e.m.Detach(ctx, s1); err != nil {
		t.Fatal(err)
	}
	checkBridge(t, e, "zlb-web", s1.Gateway, VethName("c2"))
	checkHostRoutes(t, e, "zlb-web", s2.Address)
	mustPing(t, c3, s2.Address)
	if _, err := c1.NL.LinkByName("eth0"); err == nil {
		t.Error("eth0 still in c1 after detach")
	}
	if err := e.m.Detach(ctx, s1); err != nil {
		t.Errorf("second Detach: %v", err)
	}
	for _, s := range []Spec{s2, s3} {
		if err := e.m.Detach(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	inv, err = e.m.Inventory()
	if err != nil || len(inv.Bridges)+len(inv.Veths)+len(inv.Routes) != 0 {
		t.Errorf("inventory after detaching all: %+v, %v", inv, err)
	}
}

func sorted(s ...string) []string { slices.Sort(s); return s }

// startNetnsProcess starts `sleep 60` in a new network namespace of its own
// (clone with CLONE_NEWNET, so it never runs in ours) and returns it; it is
// killed at cleanup.
func startNetnsProcess(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// waitGone waits (up to 10 s) until link name is gone from h: namespaces
// are torn down asynchronously by the kernel.
func waitGone(t *testing.T, h *netlink.Handle, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := h.LinkByName(name)
		if gone(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still present 10 s after its namespace died (%v)", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAttachByPIDAndContainerExit(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cmd := startNetnsProcess(t)
	s := Spec{
		Service: "web", Container: "pid-c", PID: cmd.Process.Pid,
		Address: netip.MustParsePrefix("10.200.2.2/32"), Gateway: GatewayFor(netip.MustParseAddr("10.200.2.2")),
	}
	a, err := e.m.Attach(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	mustPing(t, e.host, s.Address) // the host reaches the container through the bridge
	if ok, err := e.m.Alive(s, a.NetnsID); !ok || err != nil {
		t.Fatalf("Alive = %v, %v", ok, err)
	}

	// The container exits without a detach: its namespace dies, the veth
	// with it, and Alive says so.
	cmd.Process.Kill()
	cmd.Wait()
	if ok, err := e.m.Alive(s, a.NetnsID); ok || err != nil {
		t.Errorf("Alive after exit = %v, %v; want false", ok, err)
	}
	waitGone(t, e.host.NL, a.HostVeth)
	if err := e.m.Detach(ctx, s); err != nil {
		t.Errorf("Detach after exit: %v", err)
	}
	if _, err := e.host.NL.LinkByName(a.Bridge); !gone(err) {
		t.Errorf("bridge %s left after detaching its last member: %v", a.Bridge, err)
	}
}

func TestNamespaceDeleted(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.container()
	// Refer to the namespace through a symlink we control, so the test can
	// make "the netns file" vanish and come back as another namespace.
	link := filepath.Join(t.TempDir(), "netns")
	if err := os.Symlink(c.Path, link); err != nil {
		t.Fatal(err)
	}
	s := Spec{Service: "web", Container: "gone", Netns: link,
		Address: netip.MustParsePrefix("10.200.3.2/32"), Gateway: netip.MustParsePrefix("169.254.1.1/32")}
	a, err := e.m.Attach(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := e.m.Alive(s, a.NetnsID); !ok {
		t.Fatal("Alive false right after attach")
	}

	// The file now names another namespace: a recreated netns.
	other := e.container()
	os.Remove(link)
	if err := os.Symlink(other.Path, link); err != nil {
		t.Fatal(err)
	}
	if ok, err := e.m.Alive(s, a.NetnsID); ok || err != nil {
		t.Errorf("Alive with a recreated netns file = %v, %v; want false", ok, err)
	}

	// Delete the namespace itself (drop every reference the test holds).
	c.NL.Close()
	c.Handle.Close()
	if err := exec.Command("ip", "netns", "delete", c.Name).Run(); err != nil {
		t.Fatal(err)
	}
	os.Remove(link)
	if ok, err := e.m.Alive(s, a.NetnsID); ok || err != nil {
		t.Errorf("Alive with the netns file gone = %v, %v; want false", ok, err)
	}
	waitGone(t, e.host.NL, a.HostVeth)
	if _, err := e.m.Attach(ctx, s); !errors.Is(err, ErrNoNamespace) {
		t.Errorf("Attach into a deleted netns: %v, want ErrNoNamespace", err)
	}
	if err := e.m.Detach(ctx, s); err != nil {
		t.Errorf("Detach: %v", err)
	}
	if _, err := e.host.NL.LinkByName(a.Bridge); !gone(err) {
		t.Errorf("bridge %s left: %v", a.Bridge, err)
	}
}

func TestAttachBadInput(t *testing.T) {
	e := newEnv(t)
	underlay := netip.MustParseAddr("192.0.2.10")
	e.m = e.managerWith(Config{Guard: Guard{Links: []string{"zl0"}, Addrs: []netip.Addr{underlay}}})
	ctx := context.Background()
	c := e.container()
	// Namespaces that look like the node's own: one holds a link named like
	// its TUN, one its underlay address (on a link of another name).
	tunNS, underNS := e.container(), e.container()
	if err := tunNS.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "zl0"}, PeerName: "zl0-peer"}); err != nil {
		t.Fatal(err)
	}
	up0 := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ens3"}, PeerName: "ens3-peer"}
	if err := underNS.NL.LinkAdd(up0); err != nil {
		t.Fatal(err)
	}
	if err := underNS.NL.AddrAdd(up0, toNLAddr(netip.PrefixFrom(underlay, 24))); err != nil {
		t.Fatal(err)
	}
	// A route to a container address that is not zlmesh's.
	other := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "zlt-other"}}
	if err := e.host.NL.LinkAdd(other); err != nil {
		t.Fatal(err)
	}
	if err := e.host.NL.LinkSetUp(other); err != nil {
		t.Fatal(err)
	}
	taken := netip.MustParsePrefix("10.200.1.99/32")
	if err := e.host.NL.RouteAdd(&netlink.Route{LinkIndex: other.Index, Dst: prefixNet(taken), Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_STATIC}); err != nil {
		t.Fatal(err)
	}
	// A neighbour already on the bridge, so failures also meet an existing bridge.
	nb := e.container()
	if _, err := e.m.Attach(ctx, spec("web", "nb", nb, "10.200.1.40/32")); err != nil {
		t.Fatal(err)
	}
	// An ifname already present in the container.
	busy := e.container()
	if err := busy.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0-peer"}); err != nil {
		t.Fatal(err)
	}
	regular := filepath.Join(t.TempDir(), "not-a-netns")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	// A link with a bridge's name that is not a bridge.
	if err := e.host.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: BridgeName("squat")}, PeerName: "squat-peer"}); err != nil {
		t.Fatal(err)
	}
	base := spec("web", "bad", c, "10.200.1.34/32")
	tests := []struct {
		name string
		edit func(*Spec)
		want error
	}{
		{"missing netns file", func(s *Spec) { s.Netns = "/run/netns/zlt-bridge-does-not-exist" }, ErrNoNamespace},
		{"regular file", func(s *Spec) { s.Netns = regular }, ErrNoNamespace},
		{"directory", func(s *Spec) { s.Netns = t.TempDir() }, ErrNoNamespace},
		{"mount namespace", func(s *Spec) { s.Netns = "/proc/self/ns/mnt" }, ErrNoNamespace},
		{"dead pid", func(s *Spec) { s.Netns, s.PID = "", dead.Process.Pid }, ErrNoNamespace},
		{"host's own netns", func(s *Spec) { s.Netns = e.host.Path }, ErrInvalid},
		{"ifname taken", func(s *Spec) { s.Netns = busy.Path }, ErrIfnameTaken},
		{"invalid service", func(s *Spec) { s.Service = "Web_1" }, ErrInvalid},
		{"invalid container", func(s *Spec) { s.Container = "a/b" }, ErrInvalid},
		{"both netns and pid", func(s *Spec) { s.PID = 1 }, ErrInvalid},
		{"address not full-length", func(s *Spec) { s.Address = netip.MustParsePrefix("10.200.1.34/27") }, ErrInvalid},
		{"gateway not link-local", func(s *Spec) { s.Gateway = netip.MustParsePrefix("10.200.1.33/32") }, ErrInvalid},
		{"host veth exists", func(s *Spec) { s.Container = "nb" }, ErrExists},
		{"bridge name taken by a non-bridge", func(s *Spec) { s.Service = "squat" }, ErrExists},
		{"host route not zlmesh's", func(s *Spec) { s.Address = taken }, ErrExists},
		{"netns with the node's tun", func(s *Spec) { s.Netns = tunNS.Path }, ErrInvalid},
		{"netns with the node's tun, other ifname", func(s *Spec) { s.Netns, s.Ifname = tunNS.Path, "zl-in" }, ErrInvalid},
		{"netns with the node's underlay address", func(s *Spec) { s.Netns = underNS.Path }, ErrInvalid},
	}
	all := []*netlink.Handle{e.host.NL, c.NL, busy.NL, tunNS.NL, underNS.NL}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := make([]string, len(all))
			for i, h := range all {
				before[i] = snapshot(t, h)
			}
			s := base
			tt.edit(&s)
			_, err := e.m.Attach(ctx, s)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Attach = %v, want %v", err, tt.want)
			}
			t.Logf("error: %v", err)
			for i, h := range all {
				if got := snapshot(t, h); got != before[i] {
					t.Errorf("namespace %d changed:\nbefore:\n%s\nafter:\n%s", i, before[i], got)
				}
			}
		})
	}
	// Adopt and Readdress refuse the node's namespace too.
	for _, ns := range []*nstest.NS{tunNS, underNS} {
		s := base
		s.Netns = ns.Path
		if _, err := e.m.Adopt(ctx, s); !errors.Is(err, ErrInvalid) {
			t.Errorf("Adopt(%s) = %v, want ErrInvalid", ns.Name, err)
		}
		if err := e.m.Readdress(ctx, s, netip.MustParsePrefix("10.200.1.77/32"), netip.Prefix{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Readdress(%s) = %v, want ErrInvalid", ns.Name, err)
		}
	}
	checkContainer(t, nb, spec("web", "nb", nb, "10.200.1.40/32"))
}

// TestAttachRollback fails every step of an attach in turn, on a new bridge
// and on an existing one, and checks that nothing is left in either
// namespace.
func TestAttachRollback(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.container()
	nb := e.container()
	injected := errors.New("injected failure")
	// A host route of ours for the address to another link (debris of a
	// detach that did not finish): the attach moves it, and a failure after
	// that must put it back.
	elsewhere := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "zlt-else"}}
	if err := e.host.NL.LinkAdd(elsewhere); err != nil {
		t.Fatal(err)
	}
	if err := e.host.NL.LinkSetUp(elsewhere); err != nil {
		t.Fatal(err)
	}
	if err := e.host.NL.RouteAdd(hostRoute(netip.MustParsePrefix("10.200.1.34/32"), elsewhere.Index)); err != nil {
		t.Fatal(err)
	}
	for _, existing := range []bool{false, true} {
		if existing {
			if _, err := e.m.Attach(ctx, spec("web", "nb", nb, "10.200.1.40/32")); err != nil {
				t.Fatal(err)
			}
		}
		for _, move := range []bool{false, true} {
			for _, step := range attachSteps {
				if step == stepMove && !move {
					continue // the in-place form has no move step
				}
				t.Run(fmt.Sprintf("existing=%v/move=%v/%s", existing, move, step), func(t *testing.T) {
					e.m.sys.movePeer = move
					defer func() { e.m.sys.movePeer = false }()
					beforeHost, beforeC := snapshot(t, e.host.NL), snapshot(t, c.NL)
					e.m.sys.hook = func(s string) error {
						if s == step {
							return injected
						}
						return nil
					}
					defer func() { e.m.sys.hook = nil }()
					if _, err := e.m.Attach(ctx, spec("web", "c", c, "10.200.1.34/32")); !errors.Is(err, injected) {
						t.Fatalf("Attach = %v, want the injected failure", err)
					}
					if got := snapshot(t, e.host.NL); got != beforeHost {
						t.Errorf("host namespace changed:\nbefore:\n%s\nafter:\n%s", beforeHost, got)
					}
					if got := snapshot(t, c.NL); got != beforeC {
						t.Errorf("container namespace changed:\nbefore:\n%s\nafter:\n%s", beforeC, got)
					}
				})
			}
		}
	}

	// A real failure at step 6: the container has a default route already
	// (through a link of its own that was there before).
	t.Run("existing default route", func(t *testing.T) {
		d := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "other0"}, PeerName: "other1"}
		if err := c.NL.LinkAdd(d); err != nil {
			t.Fatal(err)
		}
		if err := c.NL.LinkSetUp(d); err != nil {
			t.Fatal(err)
		}
		if err := c.NL.RouteAdd(&netlink.Route{LinkIndex: d.Attrs().Index, Dst: defaultRoute(0, netip.MustParsePrefix("10.0.0.1/8")).Dst}); err != nil {
			t.Fatal(err)
		}
		beforeHost, beforeC := snapshot(t, e.host.NL), snapshot(t, c.NL)
		_, err := e.m.Attach(ctx, spec("web", "c", c, "10.200.1.34/32"))
		if !errors.Is(err, ErrExists) {
			t.Fatalf("Attach = %v, want ErrExists", err)
		}
		t.Logf("error: %v", err)
		if got := snapshot(t, e.host.NL); got != beforeHost {
			t.Errorf("host namespace changed:\nbefore:\n%s\nafter:\n%s", beforeHost, got)
		}
		if got := snapshot(t, c.NL); got != beforeC {
			t.Errorf("container namespace changed:\nbefore:\n%s\nafter:\n%s", beforeC, got)
		}
	})

	// A cancelled context stops before the first step.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.m.Attach(cctx, spec("web", "c2", e.container(), "10.200.1.35/32")); !errors.Is(err, context.Canceled) {
		t.Errorf("Attach with a cancelled context = %v", err)
	}
}

// TestAttachOverStaleBridge attaches to a bridge left by an earlier life
// with stale gateways (the previous release's /27 one, the gateway itself
// with another prefix length, as in the reference daemon's /28 + /26 bug),
// STP on and down: the attach leaves exactly the gateway, STP off, up.
func TestAttachOverStaleBridge(t *testing.T) {
	e := newEnv(t)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "zlb-web"}}
	if err := e.host.NL.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"10.200.1.33/27", "169.254.1.1/16", "10.77.0.1/24"} {
		if err := e.host.NL.AddrAdd(br, toNLAddr(netip.MustParsePrefix(p))); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.m.sys.raw.setSTP(br.Index, true); err != nil {
		t.Fatal(err)
	}
	c1, c2 := e.container(), e.container()
	s1 := spec("web", "st1", c1, "10.200.1.34/32")
	s2 := spec("web", "st2", c2, "10.200.1.35/32")
	for _, s := range []Spec{s1, s2} {
		if _, err := e.m.Attach(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	checkBridge(t, e, "zlb-web", s1.Gateway, VethName("st1"), VethName("st2"))
	mustPing(t, c1, s2.Address)
	mustPing(t, c2, s1.Gateway)
}

// TestAttachMovePeer runs the alternative form of attach (peer created in
// the host, then moved and renamed in one request) end to end.
func TestAttachMovePeer(t *testing.T) {
	e := newEnv(t)
	e.m.sys.movePeer = true
	ctx := context.Background()
	c1, c2 := e.container(), e.container()
	s1 := spec("web", "m1", c1, "10.200.1.34/32")
	s2 := spec("web", "m2", c2, "10.200.1.35/32")
	for _, s := range []Spec{s1, s2} {
		if _, err := e.m.Attach(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	checkContainer(t, c1, s1)
	checkBridge(t, e, "zlb-web", s1.Gateway, VethName("m1"), VethName("m2"))
	mustPing(t, c1, s2.Address)
	inv, err := e.m.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(inv.Veths, func(v VethInfo) bool { return v.Stray }) {
		t.Errorf("a temporary peer was left in the host: %+v", inv.Veths)
	}
}

// TestConcurrent attaches and detaches containers of two services at once:
// per-bridge locking must keep each bridge consistent (created once, one
// gateway, removed only when really empty).
func TestConcurrent(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const n = 8
	specs := make([]Spec, n)
	cs := make([]*nstest.NS, n)
	for i := range n {
		cs[i] = e.container()
		svc, base := "web", 34
		if i%2 == 1 {
			svc, base = "db", 66
		}
		specs[i] = spec(svc, fmt.Sprintf("cc%d", i), cs[i], fmt.Sprintf("10.200.1.%d/32", base+i))
	}
	before := snapshot(t, e.host.NL)
	for round := range 3 {
		errs := make(chan error, n)
		for _, s := range specs {
			go func() { _, err := e.m.Attach(ctx, s); errs <- err }()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		var web, db []string
		for i, s := range specs {
			checkContainer(t, cs[i], s)
			if s.Service == "web" {
				web = append(web, VethName(s.Container))
			} else {
				db = append(db, VethName(s.Container))
			}
		}
		checkBridge(t, e, "zlb-web", specs[0].Gateway, web...)
		checkBridge(t, e, "zlb-db", specs[1].Gateway, db...)
		mustPing(t, cs[0], specs[2].Address)
		for _, s := range specs {
			go func() { errs <- e.m.Detach(ctx, s) }()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if got := snapshot(t, e.host.NL); got != before {
			t.Fatalf("round %d: host namespace changed:\nbefore:\n%s\nafter:\n%s", round, before, got)
		}
	}
}

// TestCycles attaches and detaches one container 200 times and checks that
// the namespaces end exactly as they began.
func TestCycles(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.container()
	s := spec("web", "cyc", c, "10.200.1.34/32")
	beforeHost, beforeC := snapshot(t, e.host.NL), snapshot(t, c.NL)
	// lo is already up in nstest namespaces, so a full cycle restores all.
	for i := range 200 {
		if _, err := e.m.Attach(ctx, s); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if err := e.m.Detach(ctx, s); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
	}
	if got := snapshot(t, e.host.NL); got != beforeHost {
		t.Errorf("host namespace changed:\nbefore:\n%s\nafter:\n%s", beforeHost, got)
	}
	if got := snapshot(t, c.NL); got != beforeC {
		t.Errorf("container namespace changed:\nbefore:\n%s\nafter:\n%s", beforeC, got)
	}
}

// TestAttachWhileAddressesChange attaches containers of one service from
// several goroutines while addresses in the host namespace keep changing.
// Every address dump the attach path makes can then come back interrupted
// (NLM_F_DUMP_INTR); it must be read again, not fail the attach.
func TestAttachWhileAddressesChange(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	churn := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "zlt-churn"}} // dummy links need a module this machine may lack
	if err := e.host.NL.LinkAdd(churn); err != nil {
		t.Fatal(err)
	}
	// Enough addresses that a dump of them takes several messages, so a
	// change can land in between (as the link-local addresses of hundreds
	// of veths do on a busy host).
	for i := range 1500 {
		a := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}), 32))}
		if err := e.host.NL.AddrAdd(churn, a); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			a := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 32))}
			e.host.NL.AddrAdd(churn, a)
			e.host.NL.AddrDel(churn, a)
		}
	}()
	defer func() { close(stop); <-done }()
	const n = 12
	errs := make(chan error, n)
	specs := make([]Spec, n)
	for i := range n {
		specs[i] = spec("web", fmt.Sprintf("chg%d", i), e.container(), fmt.Sprintf("10.200.1.%d/32", 2+i))
	}
	for round := range 3 {
		for _, s := range specs {
			go func() { _, err := e.m.Attach(ctx, s); errs <- err }()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		for _, s := range specs {
			go func() { errs <- e.m.Detach(ctx, s) }()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
}

// The bridge's addresses are read from a dump the kernel filters by link:
// exactly the bridge's, however many other links carry addresses.
func TestBridgeAddrsFiltered(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a, err := e.m.Attach(ctx, spec("web", "flt", e.container(), "10.200.1.34/32"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		d := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("zlt-d%d", i)}}
		if err := e.host.NL.LinkAdd(d); err != nil {
			t.Fatal(err)
		}
		if err := e.host.NL.AddrAdd(d, &netlink.Addr{IPNet: prefixNet(netip.MustParsePrefix(fmt.Sprintf("198.18.0.%d/24", i+1)))}); err != nil {
			t.Fatal(err)
		}
	}
	br, err := e.host.NL.LinkByName(a.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range []int{unix.AF_UNSPEC, unix.AF_INET} {
		got, err := e.m.sys.raw.addrs(br.Attrs().Index, fam)
		if err != nil {
			t.Fatal(err)
		}
		got = slices.DeleteFunc(got, linkLocal)
		if !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("169.254.1.1/32")}) {
			t.Errorf("family %d: bridge addresses %v, want [169.254.1.1/32]", fam, got)
		}
	}
}

func TestRetryDump(t *testing.T) {
	calls := 0
	v, err := retryDump(func() (int, error) {
		calls++
		if calls < 3 {
			return 0, netlink.ErrDumpInterrupted
		}
		return 7, nil
	})
	if v != 7 || err != nil || calls != 3 {
		t.Fatalf("retryDump = %d, %v after %d calls; want 7, nil after 3", v, err, calls)
	}
	calls = 0
	_, err = retryDump(func() (int, error) { calls++; return 0, netlink.ErrDumpInterrupted })
	if !errors.Is(err, netlink.ErrDumpInterrupted) || calls != 11 {
		t.Fatalf("always interrupted: %v after %d calls", err, calls)
	}
}

func TestRemoveLinkAndBridge(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.container()
	s := spec("web", "rm", c, "10.200.1.34/32")
	a, err := e.m.Attach(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"lo", "eth0", "zl0", "zlx-1"} {
		if err := e.m.RemoveLink(name); !errors.Is(err, ErrInvalid) {
			t.Errorf("RemoveLink(%q) = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := e.m.RemoveBridgeIfEmpty("lo"); !errors.Is(err, ErrInvalid) {
		t.Errorf("RemoveBridgeIfEmpty(lo) = %v, want ErrInvalid", err)
	}
	if removed, err := e.m.RemoveBridgeIfEmpty(a.Bridge); removed || err != nil {
		t.Errorf("RemoveBridgeIfEmpty on a bridge with a port = %v, %v", removed, err)
	}
	// A stray temporary peer, as a crash between creation and move leaves.
	stray := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "zlv-stray-test"}, PeerName: PeerPrefix + "deadbeef"}
	if err := e.host.NL.LinkAdd(stray); err != nil {
		t.Fatal(err)
	}
	inv, err := e.m.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(inv.Veths, func(v VethInfo) bool { return v.Name == PeerPrefix+"deadbeef" && v.Stray }) {
		t.Errorf("inventory misses the stray peer: %+v", inv.Veths)
	}
	for range 2 {
		if err := e.m.RemoveLink(PeerPrefix + "deadbeef"); err != nil {
			t.Errorf("RemoveLink(stray): %v", err)
		}
		if err := e.m.RemoveLink(a.HostVeth); err != nil {
			t.Errorf("RemoveLink(%s): %v", a.HostVeth, err)
		}
	}
	if _, err := e.host.NL.LinkByName("zlv-stray-test"); !gone(err) {
		t.Errorf("the stray's host end survived: %v", err)
	}
	if _, err := c.NL.LinkByName("eth0"); !gone(err) {
		t.Errorf("eth0 survived its host veth: %v", err)
	}
	for i, want := range []bool{true, false} {
		if removed, err := e.m.RemoveBridgeIfEmpty(a.Bridge); removed != want || err != nil {
			t.Errorf("RemoveBridgeIfEmpty #%d = %v, %v; want %v", i, removed, err, want)
		}
	}
}

func TestAdopt(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c1, c2, c3 := e.container(), e.container(), e.container()
	s1 := spec("web", "a1", c1, "10.200.1.34/32")
	s2 := spec("web", "a2", c2, "10.200.1.35/32")
	s3 := spec("api", "a3", c3, "10.200.1.66/32")
	for _, s := range []Spec{s1, s2, s3} {
		if _, err := e.m.Attach(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	// A restart: the old Manager goes away, the links stay.
	e.m.Close()
	if _, err := e.m.Inventory(); err == nil {
		t.Error("closed Manager still answers")
	}
	m2 := e.manager()
	e.m = m2

	// A clean attachment adopts with nothing to repair.
	a, err := m2.Adopt(ctx, s3)
	if err != nil || len(a.Repairs) != 0 || a.HostVeth != VethName("a3") || a.NetnsID.IsZero() {
		t.Errorf("Adopt(clean) = %+v, %v", a, err)
	}

	// Damage: host veth down, a stale extra address on the bridge, STP on,
	// redirects on, the container's address gone (its routes go with it),
	// the host route gone.
	br, _ := e.host.NL.LinkByName("zlb-web")
	hv, _ := e.host.NL.LinkByName(VethName("a1"))
	if err := e.host.NL.LinkSetDown(hv); err != nil {
		t.Fatal(err)
	}
	if err := e.host.NL.RouteDel(hostRoute(s1.Address, br.Attrs().Index)); err != nil {
		t.Fatal(err)
	}
	if err := e.host.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/conf/zlb-web/send_redirects", []byte("1"), 0)
	}); err != nil {
		t.Fatal(err)
	}
	stale := netip.MustParsePrefix("10.99.0.1/26")
	if err := e.host.NL.AddrAdd(br, toNLAddr(stale)); err != nil {
		t.Fatal(err)
	}
	if err := m2.sys.raw.setSTP(br.Attrs().Index, true); err != nil {
		t.Fatal(err)
	}
	in1, _ := c1.NL.LinkByName("eth0")
	if err := c1.NL.AddrDel(in1, toNLAddr(s1.Address)); err != nil {
		t.Fatal(err)
	}
	a, err = m2.Adopt(ctx, s1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("repairs: %q", a.Repairs)
	for _, want := range []string{"was down", "stale address " + stale.String(), "stp on", "redirects", "lacked address " + s1.Address.String(),
		"default route", "route to the gateway", "host route " + s1.Address.String()} {
		if !slices.ContainsFunc(a.Repairs, func(r string) bool { return strings.Contains(r, want) }) {
			t.Errorf("repairs %q do not mention %q", a.Repairs, want)
		}
	}
	checkBridge(t, e, "zlb-web", s1.Gateway, VethName("a1"), VethName("a2"))
	checkContainer(t, c1, s1)
	checkHostRoutes(t, e, "zlb-web", s1.Address, s2.Address)
	mustPing(t, c1, s2.Address)
	mustPing(t, c3, s1.Address)
	if a, err := m2.Adopt(ctx, s1); err != nil || len(a.Repairs) != 0 {
		t.Errorf("second Adopt = %+v, %v; want nothing to repair", a, err)
	}

	// A host veth deleted (its container end went with it): attached afresh.
	if err := e.host.NL.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: VethName("a2")}}); err != nil {
		t.Fatal(err)
	}
	a, err = m2.Adopt(ctx, s2)
	if err != nil || !slices.ContainsFunc(a.Repairs, func(r string) bool { return strings.Contains(r, "attached afresh") }) {
		t.Errorf("Adopt(missing veth) = %+v, %v", a, err)
	}
	checkContainer(t, c2, s2)
	mustPing(t, c2, s1.Address)

	// Unrepairable: the namespace's eth0 is not the veth's peer.
	foreign := e.container()
	if err := foreign.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0-peer"}); err != nil {
		t.Fatal(err)
	}
	s1f := s1
	s1f.Netns = foreign.Path
	beforeHost := snapshot(t, e.host.NL)
	if _, err := m2.Adopt(ctx, s1f); !errors.Is(err, ErrMismatch) {
		t.Errorf("Adopt(foreign eth0) = %v, want ErrMismatch", err)
	}
	if got := snapshot(t, e.host.NL); got != beforeHost {
		t.Errorf("unrepairable Adopt changed the host:\nbefore:\n%s\nafter:\n%s", beforeHost, got)
	}
	checkContainer(t, c1, s1) // undisturbed

	// The veth of a3 leads to its old namespace while the spec names a new,
	// empty one (the container was recreated): the stale pair goes, a fresh
	// one is made.
	moved := e.container()
	s3m := s3
	s3m.Netns = moved.Path
	a, err = m2.Adopt(ctx, s3m)
	if err != nil || !slices.ContainsFunc(a.Repairs, func(r string) bool { return strings.Contains(r, "another namespace") }) {
		t.Errorf("Adopt(recreated namespace) = %+v, %v", a, err)
	}
	checkContainer(t, moved, s3m)
	if _, err := c3.NL.LinkByName("eth0"); !gone(err) {
		t.Errorf("the old namespace kept its eth0: %v", err)
	}

	// A dead namespace.
	s1d := s1
	s1d.Netns = "/run/netns/zlt-bridge-gone"
	if _, err := m2.Adopt(ctx, s1d); !errors.Is(err, ErrNoNamespace) {
		t.Errorf("Adopt(dead netns) = %v, want ErrNoNamespace", err)
	}
}

func TestReaddress(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c1, c2, c3 := e.container(), e.container(), e.container()
	s1 := spec("web", "r1", c1, "10.200.1.34/32")
	s2 := spec("web", "r2", c2, "10.200.1.35/32")
	s3 := spec("db", "r3", c3, "10.200.1.66/32")
	for _, s := range []Spec{s1, s2, s3} {
		if _, err := e.m.Attach(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	// The node renumbers one container into another block: its neighbour
	// and the bridge's gateway do not change.
	n1 := netip.MustParsePrefix("10.201.7.10/32")
	if err := e.m.Readdress(ctx, s1, n1, netip.Prefix{}); err != nil {
		t.Fatal(err)
	}
	old := s1
	s1.Address = n1
	checkContainer(t, c1, s1)
	checkContainer(t, c2, s2)
	checkBridge(t, e, "zlb-web", s1.Gateway, VethName("r1"), VethName("r2"))
	checkHostRoutes(t, e, "zlb-web", n1, s2.Address)
	mustPing(t, c1, s2.Address)
	mustPing(t, c2, n1)
	mustPing(t, c3, n1)
	if err := ping(t, c2, old.Address); err == nil {
		t.Errorf("the old address %s still answers", old.Address)
	}
	// Idempotent, from the old spec (a retry) and from the new one.
	for _, from := range []Spec{old, s1} {
		if err := e.m.Readdress(ctx, from, n1, netip.Prefix{}); err != nil {
			t.Fatal(err)
		}
		checkContainer(t, c1, s1)
		checkHostRoutes(t, e, "zlb-web", n1, s2.Address)
	}

	for _, bad := range []string{"10.201.7.20/26", "fd00::2/128", "169.254.7.7/32", "224.0.0.1/32"} {
		if err := e.m.Readdress(ctx, s1, netip.MustParsePrefix(bad), netip.Prefix{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Readdress(%s) = %v, want ErrInvalid", bad, err)
		}
	}
	// Detach with the spec as readdressed: the route of the new address goes.
	if err := e.m.Detach(ctx, s1); err != nil {
		t.Fatal(err)
	}
	checkHostRoutes(t, e, "zlb-web", s2.Address)
}

// TestRouted puts two containers of one service and one of another on one
// host: each reaches every other through the host's routing (there is no
// subnet route anywhere; the bridge answers ARP for the gateway itself,
// proxy ARP stays off), also under a strict reverse-path filter, and the
// host sends no ICMP redirect for the neighbours' traffic, which goes in
// and out of one bridge.
func TestRouted(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.host.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/conf/all/rp_filter", []byte("1"), 0)
	}); err != nil {
		t.Fatal(err)
	}
	w1, w2, d1 := e.container(), e.container(), e.container()
	sw1 := spec("web", "w1", w1, "10.200.4.10/32")
	sw2 := spec("web", "w2", w2, "10.200.4.11/32")
	sd1 := spec("db", "d1", d1, "10.200.4.12/32")
	for _, s := range []Spec{sw1, sw2, sd1} {
		if _, err := e.m.Attach(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	redirects := func() int {
		var n int
		if err := e.host.Do(func() error {
			b, err := os.ReadFile("/proc/thread-self/net/snmp")
			if err != nil {
				return err
			}
			// "IcmpMsg: ... OutType5 ..." appears once a redirect was sent.
			lines := strings.Split(string(b), "\n")
			for i := 0; i+1 < len(lines); i += 2 {
				names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
				for j := range names {
					if names[0] == "IcmpMsg:" && names[j] == "OutType5" && j < len(values) {
						fmt.Sscan(values[j], &n)
					}
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := redirects()
	ns := map[string]*nstest.NS{"w1": w1, "w2": w2, "d1": d1}
	for _, from := range []string{"w1", "w2", "d1"} {
		for _, to := range []Spec{sw1, sw2, sd1} {
			if to.Container != from {
				for range 3 {
					mustPing(t, ns[from], to.Address)
				}
			}
		}
	}
	if n := redirects(); n != before {
		t.Errorf("the host sent %d ICMP redirects", n-before)
	}
	for _, br := range []string{"zlb-web", "zlb-db"} {
		if v := hostSysctl(t, e, "net/ipv4/conf/"+br+"/proxy_arp"); v != "0" {
			t.Errorf("%s proxy_arp = %s", br, v)
		}
	}
	// No redirect reached a container either: w1 still routes w2 via the
	// gateway.
	r, err := w1.NL.RouteGet(sw2.Address.Addr().AsSlice())
	if err != nil || len(r) != 1 || !r[0].Gw.Equal(Gateway4.AsSlice()) {
		t.Errorf("w1's route to w2: %+v, %v; want via %s", r, err, Gateway4)
	}
}

func TestIPv6(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c1, c2 := e.container(), e.container()
	s1 := spec("v6", "six1", c1, "fd5a::2/128")
	s2 := spec("v6", "six2", c2, "fd5a::3/128")
	if s1.Gateway != netip.MustParsePrefix("fe80::1/128") {
		t.Fatalf("gateway %s", s1.Gateway)
	}
	for _, s := range []Spec{s1, s2} {
		if _, err := e.m.Attach(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	checkContainer(t, c1, s1)
	checkBridge(t, e, "zlb-v6", s1.Gateway, VethName("six1"), VethName("six2"))
	checkHostRoutes(t, e, "zlb-v6", s1.Address, s2.Address)
	for range 3 {
		mustPing(t, c1, s2.Address)
		mustPing(t, c2, s1.Address)
	}
	// The host sends ICMPv6 redirects for that traffic (IPv6 has no switch
	// against it); the container must not follow them.
	if r, err := c1.NL.RouteGet(s2.Address.Addr().AsSlice()); err != nil || len(r) != 1 || !r[0].Gw.Equal(Gateway6.AsSlice()) {
		t.Errorf("c1's route to c2: %+v, %v; want via %s", r, err, Gateway6)
	}
	if a, err := e.m.Adopt(ctx, s1); err != nil || len(a.Repairs) != 0 {
		t.Errorf("Adopt = %+v, %v; want nothing to repair", a, err)
	}
	n1 := netip.MustParsePrefix("fd5a::7:1/128")
	if err := e.m.Readdress(ctx, s1, n1, netip.Prefix{}); err != nil {
		t.Fatal(err)
	}
	s1.Address = n1
	checkContainer(t, c1, s1)
	checkHostRoutes(t, e, "zlb-v6", s1.Address, s2.Address)
	mustPing(t, c2, n1)
	if err := e.m.Detach(ctx, s1); err != nil {
		t.Fatal(err)
	}
	checkHostRoutes(t, e, "zlb-v6", s2.Address)
}

// TestDualStack attaches containers with an IPv4 address and its IPv6 twin:
// both families reach each other across bridges, the bridge holds both
// gateways, the host both routes; readdress moves both, an adoption of a
// container attached IPv4-only gives it the IPv6 address (an upgrade), and
// detach leaves no route of either family.
func TestDualStack(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c1, c2, c3 := e.container(), e.container(), e.container()
	dual := func(s Spec, a6 string) Spec { s.Address6 = netip.MustParsePrefix(a6); return s }
	s1 := dual(spec("web", "d1", c1, "10.200.1.2/32"), "fd12:3456:789a::2/128")
	s2 := dual(spec("web", "d2", c2, "10.200.1.3/32"), "fd12:3456:789a::3/128")
	s3 := spec("db", "d3", c3, "10.200.1.4/32") // IPv4 only at first
	for _, s := range []Spec{s1, s2, s3} {
		if _, err := e.m.Attach(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	checkContainer(t, c1, s1)
	checkContainer(t, c3, s3)
	gws := []netip.Prefix{netip.MustParsePrefix("169.254.1.1/32"), netip.MustParsePrefix("fe80::1/128")}
	if got := globalAddrs(t, e.host.NL, "zlb-web"); !slices.Equal(got, gws) {
		t.Errorf("zlb-web addresses %v, want %v", got, gws)
	}
	checkHostRoutes(t, e, "zlb-web", s1.Address, s2.Address, s1.Address6, s2.Address6)
	mustPing(t, c1, s2.Address)
	mustPing(t, c1, s2.Address6)
	mustPing(t, c2, s1.Address6)

	// The IPv4-only container is adopted with its twin: an upgrade.
	s3 = dual(s3, "fd12:3456:789a::4/128")
	a, err := e.m.Adopt(ctx, s3)
	if err != nil || len(a.Repairs) == 0 {
		t.Fatalf("Adopt(with address6) = %+v, %v; want repairs", a, err)
	}
	checkContainer(t, c3, s3)
	checkHostRoutes(t, e, "zlb-db", s3.Address, s3.Address6)
	mustPing(t, c1, s3.Address6)
	mustPing(t, c3, s2.Address6)
	if a, err := e.m.Adopt(ctx, s1); err != nil || len(a.Repairs) != 0 {
		t.Errorf("Adopt(s1) = %+v, %v; want nothing to repair", a, err)
	}

	// Readdress moves both families.
	n1, n16 := netip.MustParsePrefix("10.200.9.2/32"), netip.MustParsePrefix("fd12:3456:789a:24::2/128")
	if err := e.m.Readdress(ctx, s1, n1, netip.Prefix{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Readdress without the IPv6 address = %v, want ErrInvalid", err)
	}
	if err := e.m.Readdress(ctx, s1, n1, n16); err != nil {
		t.Fatal(err)
	}
	s1.Address, s1.Address6 = n1, n16
	checkContainer(t, c1, s1)
	checkHostRoutes(t, e, "zlb-web", s1.Address, s2.Address, s1.Address6, s2.Address6)
	mustPing(t, c2, n16)
	mustPing(t, c3, n1)

	for _, bad := range []Spec{
		dual(spec("web", "x1", e.container(), "10.200.1.9/32"), "10.200.1.10/32"),
		dual(spec("web", "x2", e.container(), "fd12::9/128"), "fd12::10/128"),
		dual(spec("web", "x3", e.container(), "10.200.1.9/32"), "fd12::/64"),
		dual(spec("web", "x4", e.container(), "10.200.1.9/32"), "fe80::9/128"),
	} {
		if _, err := e.m.Attach(ctx, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Attach(%s, %s) = %v, want ErrInvalid", bad.Address, bad.Address6, err)
		}
	}

	for _, s := range []Spec{s1, s2, s3} {
		if err := e.m.Detach(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	inv, err := e.m.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Routes) != 0 || len(inv.Veths) != 0 || len(inv.Bridges) != 0 {
		t.Errorf("left after detach: %+v", inv)
	}
}

// BenchmarkAttachDetach measures one Attach plus one Detach through netlink.
// "first" creates and removes the bridge each time (a service's first and
// last container); "joining" attaches next to a resident container, so the
// bridge already exists (the common case); "joining-move" is "joining" with
// the container end created in the host and moved (sys.movePeer). ns/op is
// Attach plus Detach; attach-p50-ns and attach-p99-ns are the Attach alone.
func BenchmarkAttachDetach(b *testing.B) {
	for _, mode := range []string{"first", "joining", "joining-move"} {
		move := mode == "joining-move"
		b.Run(mode, func(b *testing.B) {
			e := newEnv(b)
			ctx := context.Background()
			c := e.container()
			if mode != "first" {
				if _, err := e.m.Attach(ctx, spec("web", "resident", e.container(), "10.200.1.40/32")); err != nil {
					b.Fatal(err)
				}
			}
			e.m.sys.movePeer = move
			s := spec("web", "bench", c, "10.200.1.34/32")
			var attach []time.Duration
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				if _, err := e.m.Attach(ctx, s); err != nil {
					b.Fatal(err)
				}
				attach = append(attach, time.Since(start))
				if err := e.m.Detach(ctx, s); err != nil {
					b.Fatal(err)
				}
			}
			slices.Sort(attach)
			b.ReportMetric(float64(attach[len(attach)/2].Nanoseconds()), "attach-p50-ns")
			b.ReportMetric(float64(attach[len(attach)*99/100].Nanoseconds()), "attach-p99-ns")
		})
	}
}

// BenchmarkDetachParallel detaches 32 containers of one service from 8
// goroutines (a resident container keeps the bridge); ns/op is one whole
// round of 32 detaches, detaches/s the rate. Deleting a veth waits for the
// kernel's RCU grace periods, so the rate shows whether detaches of one
// service overlap or queue behind each other.
func BenchmarkDetachParallel(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	if _, err := e.m.Attach(ctx, spec("web", "resident", e.container(), "10.200.1.2/32")); err != nil {
		b.Fatal(err)
	}
	const n, workers = 32, 8
	specs := make([]Spec, n)
	for i := range specs {
		specs[i] = spec("web", fmt.Sprintf("par%d", i), e.container(), fmt.Sprintf("10.200.1.%d/32", 10+i))
	}
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		for _, s := range specs {
			if _, err := e.m.Attach(ctx, s); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		start := time.Now()
		work := make(chan Spec, n)
		for _, s := range specs {
			work <- s
		}
		close(work)
		errs := make(chan error, workers)
		for range workers {
			go func() {
				var err error
				for s := range work {
					if e := e.m.Detach(ctx, s); e != nil && err == nil {
						err = e
					}
				}
				errs <- err
			}()
		}
		for range workers {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(b.N*n)/total.Seconds(), "detaches/s")
}

// Concurrent detaches are deleted in batches by link group: every veth
// goes, and so do the container ends; a batch never takes along a link it
// did not make: a group number some other link carries is not used.
func TestReapBatch(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	foreign := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "zlt-foreign"}}
	if err := e.host.NL.LinkAdd(foreign); err != nil {
		t.Fatal(err)
	}
	const n = 6
	cs := make([]*nstest.NS, n)
	specs := make([]Spec, n)
	for i := range specs {
		cs[i] = e.container()
		specs[i] = spec("web", fmt.Sprintf("reap%d", i), cs[i], fmt.Sprintf("10.200.1.%d/32", 10+i))
	}
	before := snapshot(t, e.host.NL)
	for _, taken := range []bool{false, true} {
		const group, other = reapGroupBase | 0x4242, reapGroupBase | 0x4343
		// The first candidate is group; when it is taken, other.
		calls := 0
		e.m.sys.reapGroup = func() uint32 {
			calls++
			if calls == 1 {
				return group
			}
			return other
		}
		e.m.sys.reapInUse, e.m.sys.reapVerified = 0, time.Time{}
		if taken {
			if err := e.host.NL.LinkSetGroup(foreign, group); err != nil {
				t.Fatal(err)
			}
		}
		for _, s := range specs {
			if _, err := e.m.Attach(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		// Straight to the reaper, as one batch.
		reqs := make([]*reapRequest, n)
		for i, s := range specs {
			reqs[i] = &reapRequest{name: VethName(s.Container), done: make(chan struct{})}
		}
		reqs = append(reqs, &reapRequest{name: "zlvnotthere", done: make(chan struct{})})
		e.m.sys.reapBatch(reqs)
		for _, r := range reqs {
			if r.err != nil {
				t.Errorf("taken=%v: delete %s: %v", taken, r.name, r.err)
			}
		}
		for i, s := range specs {
			if _, err := e.host.NL.LinkByName(VethName(s.Container)); !gone(err) {
				t.Errorf("taken=%v: host veth of %s survived: %v", taken, s.Container, err)
			}
			if _, err := cs[i].NL.LinkByName("eth0"); !gone(err) {
				t.Errorf("taken=%v: eth0 in %s survived: %v", taken, cs[i].Name, err)
			}
		}
		f, err := e.host.NL.LinkByName("zlt-foreign")
		if err != nil {
			t.Fatalf("taken=%v: the foreign link was deleted: %v", taken, err)
		}
		if taken && f.Attrs().Group != group {
			t.Errorf("the foreign link's group changed to %d", f.Attrs().Group)
		}
		if want := map[bool]uint32{false: group, true: other}[taken]; e.m.sys.reapInUse != want {
			t.Errorf("taken=%v: batch used group %#x, want %#x", taken, e.m.sys.reapInUse, want)
		}
		if _, err := e.m.RemoveBridgeIfEmpty("zlb-web"); err != nil {
			t.Fatal(err)
		}
	}
	e.host.NL.LinkSetGroup(foreign, 0)
	if got := snapshot(t, e.host.NL); got != before {
		t.Errorf("host namespace changed:\nbefore:\n%s\nafter:\n%s", before, got)
	}
}

// The bridge goes with its last port, decided by the kernel's list of
// ports: not while another container of the service is attached, nor while
// a port this Manager did not make is on it; a Manager made after a restart
// (which knows only what it adopted) removes it too.
func TestBridgeRemovedWithLastPort(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := spec("web", "lastA", e.container(), "10.200.1.34/32")
	b := spec("web", "lastB", e.container(), "10.200.1.35/32")
	bridgeThere := func() bool {
		_, err := e.host.NL.LinkByName("zlb-web")
		return err == nil
	}
	for _, s := range []Spec{a, b} {
		if _, err := e.m.Attach(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.m.Detach(ctx, a); err != nil || !bridgeThere() {
		t.Fatalf("after detaching one of two: %v, bridge there %v", err, bridgeThere())
	}
	// A port someone else put on the bridge keeps it.
	br, _ := e.host.NL.LinkByName("zlb-web")
	other := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "zlt-oth0", MasterIndex: br.Attrs().Index}, PeerName: "zlt-oth1"}
	if err := e.host.NL.LinkAdd(other); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Detach(ctx, b); err != nil || !bridgeThere() {
		t.Fatalf("detach with a foreign port left: %v, bridge there %v", err, bridgeThere())
	}
	if err := e.host.NL.LinkDel(other); err != nil {
		t.Fatal(err)
	}
	// Attached by one Manager, adopted by a new one (a restart), detached
	// by the new one: the bridge goes.
	if _, err := e.m.Attach(ctx, a); err != nil {
		t.Fatal(err)
	}
	m2 := e.manager()
	if _, err := m2.Adopt(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := m2.Detach(ctx, a); err != nil || bridgeThere() {
		t.Fatalf("detach of the last port after a restart: %v, bridge there %v", err, bridgeThere())
	}
	// Detaching what another Manager attached (known to neither) still
	// removes an empty bridge.
	if _, err := e.m.Attach(ctx, b); err != nil {
		t.Fatal(err)
	}
	m3 := e.manager()
	if err := m3.Detach(ctx, b); err != nil || bridgeThere() {
		t.Fatalf("detach by a Manager that never saw the container: %v, bridge there %v", err, bridgeThere())
	}
}

// TestAdoptPreviousRelease adopts attachments as the previous release left
// them (the subnet model: the bridge holds the slice's gateway
// 10.200.3.33/27, each container 10.200.3.x/27 with a default route via it,
// no host routes) with the specs the node migrates them to (the same
// addresses as /32, the link-local gateway): the old gateway is flushed,
// the containers keep their addresses, and traffic flows again.
func TestAdoptPreviousRelease(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c1, c2 := e.container(), e.container()
	s1 := spec("web", "p1", c1, "10.200.3.34/32")
	s2 := spec("web", "p2", c2, "10.200.3.35/32")
	oldGW := netip.MustParsePrefix("10.200.3.33/27")
	for _, s := range []Spec{s1, s2} {
		if _, err := e.m.Attach(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	// Turn the state into the previous release's.
	br, _ := e.host.NL.LinkByName("zlb-web")
	if err := e.host.NL.AddrAdd(br, toNLAddr(oldGW)); err != nil {
		t.Fatal(err)
	}
	if err := e.host.NL.AddrDel(br, toNLAddr(s1.Gateway)); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		ns *nstest.NS
		s  Spec
	}{{c1, s1}, {c2, s2}} {
		if err := e.host.NL.RouteDel(hostRoute(x.s.Address, br.Attrs().Index)); err != nil {
			t.Fatal(err)
		}
		in, _ := x.ns.NL.LinkByName("eth0")
		old := netip.PrefixFrom(x.s.Address.Addr(), 27)
		if err := x.ns.NL.AddrAdd(in, toNLAddr(old)); err != nil {
			t.Fatal(err)
		}
		if err := x.ns.NL.AddrDel(in, toNLAddr(x.s.Address)); err != nil {
			t.Fatal(err)
		}
		if err := x.ns.NL.RouteDel(gatewayRoute(in.Attrs().Index, x.s.Gateway)); err != nil && !gone(err) {
			t.Fatal(err)
		}
		if err := x.ns.NL.RouteReplace(&netlink.Route{LinkIndex: in.Attrs().Index, Dst: defaultRoute(0, oldGW).Dst, Gw: oldGW.Addr().AsSlice()}); err != nil {
			t.Fatal(err)
		}
	}
	mustPing(t, c1, s2.Address) // the old model works on its own
	m2 := e.manager()
	e.m = m2
	for i, x := range []struct {
		ns *nstest.NS
		s  Spec
	}{{c1, s1}, {c2, s2}} {
		a, err := m2.Adopt(ctx, x.s)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("repairs of %s: %q", x.s.Container, a.Repairs)
		want := []string{"lacked address " + x.s.Address.String(), "stale address " + netip.PrefixFrom(x.s.Address.Addr(), 27).String(),
			"default route", "route to the gateway", "host route " + x.s.Address.String()}
		if i == 0 {
			want = append(want, "stale address "+oldGW.String(), "lacked address "+x.s.Gateway.String())
		}
		for _, w := range want {
			if !slices.ContainsFunc(a.Repairs, func(r string) bool { return strings.Contains(r, w) }) {
				t.Errorf("repairs %q do not mention %q", a.Repairs, w)
			}
		}
		checkContainer(t, x.ns, x.s)
	}
	checkBridge(t, e, "zlb-web", s1.Gateway, VethName("p1"), VethName("p2"))
	checkHostRoutes(t, e, "zlb-web", s1.Address, s2.Address)
	mustPing(t, c1, s2.Address)
	mustPing(t, c2, s1.Address)
}

// RemoveRoute deletes debris routes of ours (as Inventory lists them),
// idempotently, and nothing else.
func TestRemoveRoute(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.container()
	s := spec("web", "rr", c, "10.200.5.5/32")
	if _, err := e.m.Attach(ctx, s); err != nil {
		t.Fatal(err)
	}
	// The container's veth vanishes without a Detach (a crash): its route
	// stays, debris.
	if err := e.m.RemoveLink(VethName("rr")); err != nil {
		t.Fatal(err)
	}
	foreign := netip.MustParsePrefix("10.200.5.6/32")
	br, _ := e.host.NL.LinkByName("zlb-web")
	if err := e.host.NL.RouteAdd(&netlink.Route{LinkIndex: br.Attrs().Index, Dst: prefixNet(foreign), Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_BOOT}); err != nil {
		t.Fatal(err)
	}
	inv, err := e.m.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	if want := []RouteInfo{{s.Address, "zlb-web"}}; !slices.Equal(inv.Routes, want) {
		t.Errorf("inventory routes %v, want %v (the foreign one left out)", inv.Routes, want)
	}
	for range 2 {
		if err := e.m.RemoveRoute(s.Address); err != nil {
			t.Errorf("RemoveRoute(%s) = %v", s.Address, err)
		}
	}
	checkHostRoutes(t, e, "zlb-web")
	for _, bad := range []netip.Prefix{foreign, netip.MustParsePrefix("10.200.5.0/24"), {}} {
		if err := e.m.RemoveRoute(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("RemoveRoute(%s) = %v, want ErrInvalid", bad, err)
		}
	}
	if r, err := e.host.NL.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: prefixNet(foreign)}, netlink.RT_FILTER_DST); err != nil || len(r) != 1 {
		t.Errorf("the foreign route: %v, %v", r, err)
	}

	// Debris of ours to one bridge does not stop an attach of the address
	// elsewhere: the route moves.
	reused := netip.MustParsePrefix("10.200.5.7/32")
	if err := e.host.NL.RouteAdd(hostRoute(reused, br.Attrs().Index)); err != nil {
		t.Fatal(err)
	}
	d := e.container()
	sd := spec("db", "rr2", d, reused.String())
	if _, err := e.m.Attach(ctx, sd); err != nil {
		t.Fatal(err)
	}
	checkHostRoutes(t, e, "zlb-web")
	checkHostRoutes(t, e, "zlb-db", reused)
	mustPing(t, d, sd.Gateway)
	mustPing(t, e.host, reused)
}

package testbed

// Guests: namespaces on the underlay that stand in for machines running no
// zlmesh (a VM, a laptop) and join the mesh as plain WireGuard clients.

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Guest is a namespace <prefix>-guest-<name> plugged into the underlay
// switch (port g<name>) with eth0 GuestAddr(i)/24 and a default route via
// the switch, like a host, but running no zlmesh. RunWireGuard brings a
// standalone WireGuard up in it from a wg-quick config.
type Guest struct {
	Name      string
	NetnsName string
	// Addr is its underlay address (IPv6 on an IPv6-only underlay).
	Addr netip.Addr
	// Addr6 is its IPv6 underlay address (zero without IPv6).
	Addr6 netip.Addr
	tb    *Testbed
}

var guestRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,7}$`)

// GuestAddr is the underlay address of the i-th guest (from 0): 192.0.2.200+i.
func GuestAddr(i int) netip.Addr {
	a := UnderlayPrefix.Addr().As4()
	a[3] = byte(200 + i)
	return netip.AddrFrom4(a)
}

// GuestAddr6 is the IPv6 underlay address of the i-th guest:
// 2001:db8:0:2::<200+i> in decimal digits.
func GuestAddr6(i int) netip.Addr { return decimalSuffix(Underlay6Prefix, 200+i) }

// AddGuest makes guest name (1-8 lowercase letters or digits, starting with
// a letter): its namespace on the underlay. Close removes it (with its
// processes); on error nothing is left behind but what Close removes.
func (tb *Testbed) AddGuest(ctx context.Context, name string) (*Guest, error) {
	if !guestRE.MatchString(name) {
		return nil, fmt.Errorf("add guest %q: want 1-8 lowercase letters or digits, starting with a letter", name)
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.closed {
		return nil, ErrClosed
	}
	ns := tb.Prefix + "-guest-" + name
	i := 0
	for _, n := range tb.st.Namespaces {
		if n == ns {
			return nil, fmt.Errorf("add guest %s: %w", name, ErrExists)
		}
		if strings.HasPrefix(n, tb.Prefix+"-guest-") {
			i++
		}
	}
	if i >= 50 {
		return nil, fmt.Errorf("add guest %s: at most 50 guests", name)
	}
	if err := tb.addNetnsLocked(ns); err != nil {
		return nil, fmt.Errorf("add guest %s: %w", name, err)
	}
	g := &Guest{Name: name, NetnsName: ns, Addr: GuestAddr(i), tb: tb}
	addrs := []netip.Addr{g.Addr}
	if tb.opts.Underlay.HasIPv6() {
		g.Addr6 = GuestAddr6(i)
		addrs = append(addrs, g.Addr6)
	}
	if !tb.opts.Underlay.HasIPv4() {
		g.Addr, addrs = g.Addr6, addrs[1:]
	}
	if err := plugHost(tb.switchNetns(), "g"+name, ns, addrs...); err != nil {
		return nil, fmt.Errorf("add guest %s: %w", name, err)
	}
	if err := writeSysctl(ns, "net/ipv4/ip_forward", "0"); err != nil {
		return nil, fmt.Errorf("add guest %s: %w", name, err)
	}
	tb.opts.Logf("testbed %s: guest %s (netns %s, %s)", tb.Prefix, name, ns, g.Addr)
	return g, nil
}

func (g *Guest) String() string { return "guest " + g.Name }

// Exec runs argv in the guest and returns its combined output; a non-zero
// exit is an error carrying the output.
func (g *Guest) Exec(ctx context.Context, argv ...string) ([]byte, error) {
	return run(command(ctx, containerArgv(g.NetnsName, argv)), g.NetnsName, argv)
}

// Ping sends one ICMP echo request from the guest to addr and waits up to a
// second for the answer.
func (g *Guest) Ping(ctx context.Context, addr string) error {
	_, err := g.Exec(ctx, "ping", "-c", "1", "-W", "1", "-n", addr)
	return err
}

// WireGuardIfname is the interface RunWireGuard makes in a guest.
const WireGuardIfname = "wg0"

// RunWireGuard runs, in the background, the standalone WireGuard binary
// (wireguard-go) in the guest, configured only from config, a wg-quick
// configuration, the way wg-quick would: `wg-quick strip` of it to `wg
// setconf`, its Address on the interface, its MTU (default 1420), a route
// for each AllowedIPs. DNS is not set (queries name the server). Its UAPI
// socket lives in a tmpfs private to the process (`ip netns exec` gives it
// a mount namespace of its own), so nothing is left on the machine when it
// is killed. It runs until Process.Stop or Close; setup errors are in its
// log.
func (g *Guest) RunWireGuard(ctx context.Context, binary, config string) (*Process, error) {
	addrs, routes, mtu, err := parseWGQuick(config)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", g, err)
	}
	dir := filepath.Join(g.tb.Dir, "guests", g.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, WireGuardIfname+".conf") // wg-quick names the interface after the file
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		return nil, err
	}
	if err := os.MkdirAll("/run/wireguard", 0o755); err != nil { // the mount point
		return nil, err
	}
	var s strings.Builder
	fmt.Fprintf(&s, "set -eu\nmount -t tmpfs %s-guest /run/wireguard\n", g.tb.Prefix)
	fmt.Fprintf(&s, "WG_PROCESS_FOREGROUND=1 %q -f %s &\nwgpid=$!\n", binary, WireGuardIfname)
	fmt.Fprintf(&s, "i=0; while [ ! -S /run/wireguard/%s.sock ]; do i=$((i+1)); [ $i -lt 100 ] || { echo no UAPI socket; exit 1; }; sleep 0.05; done\n", WireGuardIfname)
	fmt.Fprintf(&s, "wg-quick strip %q > %q\n", conf, conf+".stripped")
	fmt.Fprintf(&s, "wg setconf %s %q\n", WireGuardIfname, conf+".stripped")
	for _, a := range addrs {
		nodad := "" // an IPv6 address usable at once, as wg-quick's would become after DAD
		if a.Addr().Is6() {
			nodad = " nodad"
		}
		fmt.Fprintf(&s, "ip address add %s dev %s%s\n", a, WireGuardIfname, nodad)
	}
	fmt.Fprintf(&s, "ip link set mtu %d up dev %s\n", mtu, WireGuardIfname)
	for _, r := range routes {
		fmt.Fprintf(&s, "ip route add %s dev %s\n", r, WireGuardIfname)
	}
	fmt.Fprintf(&s, "echo guest %s: WireGuard up\nwg show %s\nwait $wgpid\n", g.Name, WireGuardIfname)
	return g.tb.startBackground(containerArgv(g.NetnsName, []string{"sh", "-c", s.String()}), []string{"wireguard-go"}, g.NetnsName)
}

// parseWGQuick reads what wg-quick itself applies from a config: the
// interface's addresses and MTU, and the peers' AllowedIPs (its routes).
func parseWGQuick(config string) (addrs, routes []netip.Prefix, mtu int, err error) {
	mtu = 1420
	sc := bufio.NewScanner(strings.NewReader(config))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		switch k {
		case "address", "allowedips":
			for _, f := range strings.Split(v, ",") {
				p, perr := netip.ParsePrefix(strings.TrimSpace(f))
				if perr != nil {
					return nil, nil, 0, fmt.Errorf("wg-quick config: %s %q: %w", k, f, perr)
				}
				if k == "address" {
					addrs = append(addrs, p)
				} else {
					routes = append(routes, p.Masked())
				}
			}
		case "mtu":
			if _, err := fmt.Sscan(v, &mtu); err != nil {
				return nil, nil, 0, fmt.Errorf("wg-quick config: MTU %q", v)
			}
		}
	}
	if len(addrs) == 0 {
		return nil, nil, 0, fmt.Errorf("wg-quick config: no Address")
	}
	return addrs, routes, mtu, nil
}

// BuildWireGuardGo builds the standalone wireguard-go (the main package of
// golang.zx2c4.com/wireguard, at the version the current module requires,
// with its dependencies) into dir and returns its path.
func BuildWireGuardGo(ctx context.Context, dir string) (string, error) {
	path := filepath.Join(dir, "wireguard-go")
	out, err := command(ctx, []string{"go", "build", "-o", path, "golang.zx2c4.com/wireguard"}).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build wireguard-go: %w: %s", err, out)
	}
	return path, nil
}

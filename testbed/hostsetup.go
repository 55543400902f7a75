package testbed

// Making a host: its directories, namespace, switch port and holder.

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Mount points bound over inside every host (made on the machine if missing).
const (
	wireguardRun = "/var/run/wireguard"
	zlmeshRun    = "/run/zlmesh"
	zlmeshLib    = "/var/lib/zlmesh"
	resolvConf   = "/etc/resolv.conf"
)

// holderScript runs as `sh -c holderScript zltb-holder <wireguard> <hostdir>
// <state> <resolv.conf> <mirror> <kind>` in the host's fresh (slave) mount
// namespace: it makes the host's private view, says ready, and becomes the
// sleeping holder. Its /run/netns is the testbed's mirror, a slave of a
// shared mount, so namespaces made later appear in it. Like `ip netns exec`,
// it mounts a fresh sysfs, so /sys/class/net shows the host's interfaces.
// For a userspace host (kind "userspace") an empty tmpfs covers /dev/net, so
// there is no /dev/net/tun inside it.
const holderScript = `set -e
mount --bind "$1" ` + wireguardRun + `
mount --bind "$2" ` + zlmeshRun + `
mount --bind "$3" ` + zlmeshLib + `
mount --bind "$5" /run/netns
umount -l /sys && mount -t sysfs sysfs /sys
if [ -e ` + resolvConf + ` ]; then mount --bind "$4" ` + resolvConf + `; fi
if [ "$6" = userspace ] && [ -d /dev/net ]; then mount -t tmpfs -o mode=0755,size=4k zltb-nodevnet /dev/net; fi
echo ready
exec sleep infinity >/dev/null`

// startHolderLocked starts h's holder and waits until its mounts are made.
// tb.mu is held.
func (tb *Testbed) startHolderLocked(ctx context.Context, h *Host) (*procState, error) {
	for _, d := range []string{wireguardRun, zlmeshRun, zlmeshLib, "/run/netns"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("mount point %s: %w", d, err)
		}
	}
	logPath := filepath.Join(h.Dir, "holder.log")
	log, err := openLog(logPath)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	kind := "kernel"
	if h.Userspace {
		kind = "userspace"
	}
	cmd := command(nil, []string{"unshare", "--mount", "--propagation", "slave",
		"sh", "-c", holderScript, "zltb-holder", h.WireGuardDir, h.Dir, h.StateDir, h.ResolvConf, tb.mirrorDir(), kind})
	cmd.Stdout, cmd.Stderr = w, log
	// The holder is forked from a thread inside the host's network
	// namespace, so it (and its mount namespace) lives there.
	p, err := spawn(cmd, h.NetnsName, h.NetnsName)
	w.Close()
	if err != nil {
		return nil, err
	}
	p.Log = logPath
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(r).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if s == "ready\n" {
			return p, nil
		}
		killProc(p)
		return nil, fmt.Errorf("holder of %s failed: %s", h.Name, tail(logPath, 10))
	case <-ctx.Done():
		killProc(p)
		r.Close()
		return nil, fmt.Errorf("holder of %s: %w", h.Name, ctx.Err())
	}
}

// newHost builds the Host value for number i from its record.
func (tb *Testbed) newHost(hs *hostState) *Host {
	dir := filepath.Join(tb.Dir, hs.Name)
	return &Host{
		Name:         hs.Name,
		Index:        hs.Index,
		NetnsName:    hs.Netns,
		Netns:        netnsPath(hs.Netns),
		Underlay:     hs.Underlay,
		Underlay6:    hs.Underlay6,
		Dir:          dir,
		StateDir:     filepath.Join(dir, "state"),
		Socket:       filepath.Join(dir, "zlmesh.sock"),
		LogFile:      filepath.Join(dir, "zlmesh.log"),
		WireGuardDir: filepath.Join(dir, "wireguard"),
		ResolvConf:   filepath.Join(dir, "resolv.conf"),
		Userspace:    hs.Userspace,
		tb:           tb,
		st:           hs,
	}
}

// addHostLocked makes host number i: its directories, namespace, switch
// port and holder. tb.mu is held.
func (tb *Testbed) addHostLocked(ctx context.Context, i int) (*Host, error) {
	if i > MaxHosts {
		return nil, fmt.Errorf("testbed %s: host h%d: at most %d hosts", tb.Prefix, i, MaxHosts)
	}
	hs := &hostState{Name: hostName(i), Index: i, Netns: tb.Prefix + "-" + hostName(i), Userspace: tb.opts.isUserspace(hostName(i))}
	hs.Underlay, hs.Underlay6 = hostAddrs(tb.opts.Underlay, i)
	h := tb.newHost(hs)
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{h.Dir, 0o755}, {h.StateDir, 0o700}, {h.WireGuardDir, 0o755}} {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("testbed %s: host %s: %w", tb.Prefix, h.Name, err)
		}
	}
	resolv := tb.hostResolvConf()
	if err := os.WriteFile(h.ResolvConf, []byte(resolv), 0o644); err != nil {
		return nil, fmt.Errorf("testbed %s: host %s: %w", tb.Prefix, h.Name, err)
	}
	if h.Userspace {
		if err := tb.prepareUserspaceHost(h); err != nil {
			return nil, fmt.Errorf("testbed %s: %w", tb.Prefix, err)
		}
	}
	if err := tb.addNetnsLocked(hs.Netns); err != nil {
		return nil, fmt.Errorf("testbed %s: host %s: %w", tb.Prefix, h.Name, err)
	}
	tb.st.Hosts = append(tb.st.Hosts, hs)
	tb.hosts = append(tb.hosts, h)
	if err := plugHost(tb.switchNetns(), h.Name, hs.Netns, h.addrs()...); err != nil {
		return nil, fmt.Errorf("testbed %s: host %s: %w", tb.Prefix, h.Name, err)
	}
	holder, err := tb.startHolderLocked(ctx, h)
	if err != nil {
		return nil, fmt.Errorf("testbed %s: host %s: %w", tb.Prefix, h.Name, err)
	}
	hs.Holder = holder
	hs.Command = tb.commandFor(h)
	if err := tb.saveLocked(); err != nil {
		return nil, err
	}
	tb.opts.Logf("testbed %s: host %s at %s (netns %s)", tb.Prefix, h.Name, hs.Underlay, hs.Netns)
	return h, nil
}

// commandFor returns the daemon command of h: Options.Command, or the zlmesh
// contract (see the package documentation) plus Options.Args; nil when there
// is no binary.
func (tb *Testbed) commandFor(h *Host) []string {
	if tb.opts.Command != nil {
		return tb.opts.Command(h)
	}
	if tb.st.Binary == "" {
		return nil
	}
	argv := []string{tb.st.Binary, "up",
		"--name", h.Name,
		"--state-dir", h.StateDir,
		"--socket", h.Socket,
		"--advertise-addr", h.Underlay.String(),
		"--cluster-key-file", tb.KeyFile,
		"--dns-upstream", tb.dnsUpstream(),
	}
	if h.Userspace {
		argv[slices.Index(argv, tb.KeyFile)] = h.userKeyFile()
		argv = append(argv, "--userspace")
	}
	if h.Index != tb.st.Seed {
		seed, _ := hostAddrs(tb.opts.Underlay, tb.st.Seed)
		argv = append(argv, "--join", netip.AddrPortFrom(seed, GossipPort).String())
	}
	if tb.opts.Args != nil {
		argv = append(argv, tb.opts.Args(h)...)
	}
	return argv
}

// addrs returns the host's underlay addresses, IPv4 first.
func (h *Host) addrs() []netip.Addr {
	var out []netip.Addr
	if h.Underlay.Is4() {
		out = append(out, h.Underlay)
	}
	if h.Underlay6.IsValid() {
		out = append(out, h.Underlay6)
	}
	return out
}

// dnsUpstream is the --dns-upstream every host's zlmesh gets: the outside
// resolver at an address the host can reach (IPv4 unless the underlay is
// IPv6-only).
func (tb *Testbed) dnsUpstream() string {
	if !tb.opts.Underlay.HasIPv4() {
		return DNSUpstream6
	}
	return DNSUpstream
}

// hostResolvConf is every host's /etc/resolv.conf: the outside resolver at
// each address the host can reach, IPv4 first.
func (tb *Testbed) hostResolvConf() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# testbed %s: the outside resolver\n", tb.Prefix)
	if tb.opts.Underlay.HasIPv4() {
		fmt.Fprintf(&b, "nameserver %s\n", ResolverAddr)
	}
	if tb.opts.Underlay.HasIPv6() {
		fmt.Fprintf(&b, "nameserver %s\n", Resolver6Addr)
	}
	return b.String()
}

// Package testbed is the network-namespace lab that emulates hosts,
// containers, an underlay switch and an outside network on one machine, with
// fault injection. The end-to-end tests of zlmesh and `zlmesh testbed` run on
// it; zlmesh itself runs inside the host namespaces, never in the machine's
// own.
//
// # Topology
//
// Every name carries the testbed prefix p (Options.Prefix, default "zt"), so
// testbeds with different prefixes are fully separate and can run at once:
//
//	p-out    eth0 198.51.100.2/24 and 198.51.100.53/24 (dnsmasq), route to 192.0.2.0/24 via 198.51.100.1
//	  │      "the internet": test servers run here (ExecOutside, StartOutside)
//	p-sw     br0 192.0.2.1/24 joining one port per host (named like the host: h1, h2, …),
//	  │      out 198.51.100.1/24, ip_forward=1: the underlay switch and its upstream router
//	p-h1 …   eth0 192.0.2.(10+i)/24, default route via 192.0.2.1, lo up, ip_forward=1
//	p-h1-web containers, made on request: lo only, /etc/netns/p-h1-web/resolv.conf
//
// Options.Underlay picks the underlay's family. UnderlayIPv4 (the default)
// is the above. UnderlayDual adds IPv6 beside it: br0 2001:db8:0:2::1/64,
// host i 2001:db8:0:2::<10+i>/64 (decimal digits: h1 is 2001:db8:0:2::11)
// with an IPv6 default route via the switch, the outside network
// 2001:db8:0:64::/64 (uplink ::1, outside ::2, resolver ::53, AAAA records
// of OutsideNames6) and IPv6 forwarding in the switch; zlmesh still
// advertises the IPv4 address. UnderlayIPv6 has the IPv6 addresses only on
// the underlay (no IPv4 address on br0 or any host's eth0, no IPv4 route in
// the hosts); zlmesh advertises 2001:db8:0:2::<10+i>, joins
// [2001:db8:0:2::<10+seed>]:7946 and forwards DNS to DNSUpstream6. The
// outside network keeps its IPv4 addresses in every mode. IPv6 addresses
// are added without DAD, eth0 of every host and every link of the switch
// and outside do no DAD and accept no router advertisement, and Up returns
// only when no address is tentative; links zlmesh makes inside a host keep
// the kernel's defaults.
//
// Nothing routes further than these namespaces: the switch has no default
// route, the outside namespace only knows the way back to the underlay, and
// the resolver (dnsmasq, --no-resolv --local=/#/) answers its few fixed names
// (see OutsideNames) and NXDOMAIN for everything else; it never forwards. No
// packet the testbed or a test sends through it can leave the machine's
// namespaces.
//
// Containers are not wired by the testbed: attaching is zlmesh's job, through
// the host's control socket (Container.Attach is a thin helper for
// Host.Client().Attach with the container's netns path).
//
// # Each host's private filesystem view
//
// Network namespaces do not separate the filesystem, and wireguard-go puts its
// UAPI socket at /var/run/wireguard/<ifname>.sock in every namespace. So each
// host also gets its own mount namespace, held by a long-lived holder process:
//
//	unshare --mount --propagation slave sh -c '<bind mounts>; exec sleep infinity'
//
// The holder is started from a goroutine that locked its OS thread and entered
// the host's network namespace with setns: a child forked from that thread
// (exec.Cmd.Start clones the calling thread) inherits the thread's network
// namespace, so the holder lives in the host's network namespace without any
// helper binary. Inside its new mount namespace it bind-mounts, from the
// host's directory <dir>/<host> and the testbed's <dir>/netns:
//
//	<dir>/<host>/wireguard    over /var/run/wireguard  (wireguard-go UAPI sockets; `wg show` works)
//	<dir>/<host>              over /run/zlmesh         (so the default socket /run/zlmesh/zlmesh.sock is this host's)
//	<dir>/<host>/state        over /var/lib/zlmesh     (the default state dir)
//	<dir>/<host>/resolv.conf  over /etc/resolv.conf    (nameserver 198.51.100.53, the outside resolver)
//	<dir>/netns               over /run/netns          (the testbed's namespaces, and only those)
//	a new sysfs               over /sys                (so /sys/class/net is the host's, as with `ip netns exec`)
//
// The mount points are created on the machine when missing (empty
// directories, never removed). Namespaces are made under the machine's
// /run/netns as usual, and each is also bind-mounted into <dir>/netns, a
// shared mount point of the testbed's own; the holder's copy of it is a
// slave, so a container made after the host started still appears inside
// the host as /run/netns/<ns>, where zlmesh opens it.
//
// The machine's /run/netns is set up as iproute2 sets it up on its first
// `ip netns add` (a shared bind mount of itself) before the testbed makes a
// namespace there, so that an `ip netns add` between `testbed up` and
// `testbed down` binds over nothing of the testbed's. It is left a plain
// directory when other programs already have namespaces mounted in it; then
// a namespace of the testbed that iproute2 later binds over is removed from
// a private mount namespace (see deleteNetns). Either way `down` removes
// everything, whichever came first.
//
// Everything run "in a host" (Host.Exec, Host.Cmd, the zlmesh daemon) is
// started as `nsenter --target <holder> --net --mount -- argv…`, so two hosts
// never see each other's sockets, and relative paths in argv resolve from /.
//
// # The daemon contract
//
// Host.Start runs, inside the host, detached from the caller's lifetime (its
// own session and process group; stdout and stderr appended to
// <dir>/<host>/zlmesh.log):
//
//	<binary> up --name h<i> --state-dir <dir>/h<i>/state --socket <dir>/h<i>/zlmesh.sock
//	    --advertise-addr 192.0.2.<10+i> --cluster-key-file <dir>/cluster.key
//	    --dns-upstream 198.51.100.53:53 [--join 192.0.2.<10+seed>:7946] <Options.Args> <Start's extra>
//
// (on an IPv6-only underlay: --advertise-addr 2001:db8:0:2::<10+i>,
// --dns-upstream [2001:db8:0:64::53]:53, --join [2001:db8:0:2::<10+seed>]:7946).
//
// --join is given to every host but the seed (Options.Seed, default h1).
// --dns-upstream is always given so that zlmesh never forwards to the
// machine's resolver. The cluster key file (32 random bytes, base64, mode
// 0600) is made by Up. Options.Command replaces the whole command (tests run
// plain programs with it).
//
// # Cleanup
//
// Everything made is recorded in <dir>/testbed.json (written atomically after
// every change), and Close removes it all, also after Up failed half-way.
// Destroy removes a testbed whose creating process died: it loads the state
// file if there is one and then sweeps by prefix — every process inside a
// p-* network namespace, the p-* namespaces, /etc/netns/p-* and the testbed
// directory.
//
// # Concurrency
//
// A *Testbed and its hosts and containers are safe for concurrent use by
// several goroutines. Only one process should drive a testbed at a time: two
// processes that change the same testbed (say two `zlmesh testbed` commands at
// once) may overwrite each other's state file.
package testbed

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Fixed addresses of every testbed.
var (
	// UnderlayPrefix is the hosts' network; host i has UnderlayPrefix.Addr()+10+i.
	UnderlayPrefix = netip.MustParsePrefix("192.0.2.0/24")
	// SwitchAddr is the switch's address on the underlay, the hosts' default gateway.
	SwitchAddr = netip.MustParseAddr("192.0.2.1")
	// OutsidePrefix is the outside network.
	OutsidePrefix = netip.MustParsePrefix("198.51.100.0/24")
	// UplinkAddr is the switch's (upstream router's) address on the outside network.
	UplinkAddr = netip.MustParseAddr("198.51.100.1")
	// OutsideAddr is the outside namespace's main address: test servers listen here.
	OutsideAddr = netip.MustParseAddr("198.51.100.2")
	// ResolverAddr is the outside DNS resolver (dnsmasq, port 53).
	ResolverAddr = netip.MustParseAddr("198.51.100.53")
)

// The IPv6 underlay and outside network (Options.Underlay UnderlayDual or
// UnderlayIPv6), documentation addresses that mirror the IPv4 ones: host i
// is Underlay6Prefix's ::<10+i> written in decimal digits (h1 is
// 2001:db8:0:2::11 as it is 192.0.2.11).
var (
	// Underlay6Prefix is the hosts' IPv6 network.
	Underlay6Prefix = netip.MustParsePrefix("2001:db8:0:2::/64")
	// Switch6Addr is the switch's IPv6 address on the underlay, the hosts'
	// IPv6 default gateway.
	Switch6Addr = netip.MustParseAddr("2001:db8:0:2::1")
	// Outside6Prefix is the outside network's IPv6 prefix.
	Outside6Prefix = netip.MustParsePrefix("2001:db8:0:64::/64")
	// Uplink6Addr is the switch's IPv6 address on the outside network.
	Uplink6Addr = netip.MustParseAddr("2001:db8:0:64::1")
	// Outside6Addr is the outside namespace's main IPv6 address.
	Outside6Addr = netip.MustParseAddr("2001:db8:0:64::2")
	// Resolver6Addr is the outside DNS resolver's IPv6 address.
	Resolver6Addr = netip.MustParseAddr("2001:db8:0:64::53")
)

// DNSUpstream is what every host's zlmesh is given as --dns-upstream
// (DNSUpstream6 on an IPv6-only underlay).
const (
	DNSUpstream  = "198.51.100.53:53"
	DNSUpstream6 = "[2001:db8:0:64::53]:53"
)

// UnderlayFamily is the address family (or families) of the underlay the
// hosts are on. The outside network always has IPv4, and IPv6 too when the
// underlay has it.
type UnderlayFamily string

// The underlay families. The zero value means UnderlayIPv4.
const (
	// UnderlayIPv4: hosts have UnderlayPrefix addresses only (the default).
	UnderlayIPv4 UnderlayFamily = "ipv4"
	// UnderlayDual: hosts have an IPv4 and an IPv6 address on eth0 and a
	// default route for each; zlmesh advertises the IPv4 one.
	UnderlayDual UnderlayFamily = "dual"
	// UnderlayIPv6: hosts have an IPv6 address only (no IPv4 address on
	// eth0 nor on the switch's bridge, no IPv4 route out); zlmesh
	// advertises it, joins [2001:db8:0:2::<seed>]:7946 and forwards DNS to
	// DNSUpstream6.
	UnderlayIPv6 UnderlayFamily = "ipv6"
)

// ParseUnderlayFamily reads "ipv4", "dual" or "ipv6" ("" is ipv4; "4",
// "6", "dual-stack" and "ipv4+ipv6" are accepted too).
func ParseUnderlayFamily(s string) (UnderlayFamily, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "ipv4", "4", "v4":
		return UnderlayIPv4, nil
	case "dual", "dual-stack", "dualstack", "ipv4+ipv6", "46":
		return UnderlayDual, nil
	case "ipv6", "6", "v6":
		return UnderlayIPv6, nil
	}
	return "", fmt.Errorf("underlay family %q: want ipv4, dual or ipv6", s)
}

// HasIPv4 reports whether hosts have an IPv4 underlay address.
func (f UnderlayFamily) HasIPv4() bool { return f != UnderlayIPv6 }

// HasIPv6 reports whether hosts have an IPv6 underlay address.
func (f UnderlayFamily) HasIPv6() bool { return f == UnderlayDual || f == UnderlayIPv6 }

// orDefault maps "" to UnderlayIPv4.
func (f UnderlayFamily) orDefault() UnderlayFamily {
	if f == "" {
		return UnderlayIPv4
	}
	return f
}

// GossipPort is the memberlist port --join points at.
const GossipPort = 7946

// OutsideNames are the names the outside resolver answers (A records);
// OutsideCNAMEs are its aliases. Every other name is NXDOMAIN.
var (
	OutsideNames = map[string]netip.Addr{
		"outside.test":  OutsideAddr,
		"resolver.test": ResolverAddr,
	}
	OutsideCNAMEs = map[string]string{
		"alias.test": "outside.test",
	}
	// OutsideNames6 are the AAAA records the outside resolver answers
	// too when the underlay has IPv6 (otherwise these names have no AAAA).
	OutsideNames6 = map[string]netip.Addr{
		"outside.test":  Outside6Addr,
		"resolver.test": Resolver6Addr,
	}
)

// Defaults of Options.
const (
	DefaultPrefix       = "zt"
	DefaultHosts        = 3
	DefaultMeshDNS      = "10.203.255.53"
	DefaultSearchDomain = "zl"
	DefaultStopTimeout  = 10 * time.Second
	// MaxHosts bounds Hosts and AddHost: host i gets 192.0.2.(10+i).
	MaxHosts = 200
)

// Sentinel errors callers branch on.
var (
	// ErrUnsupported is returned on platforms without network namespaces.
	ErrUnsupported = errors.New("testbed: needs Linux network namespaces")
	// ErrExists is returned by Up when a testbed with the prefix (or a state
	// file in the directory) already exists.
	ErrExists = errors.New("testbed already exists")
	// ErrClosed is returned by methods of a closed testbed.
	ErrClosed = errors.New("testbed is closed")
	// ErrRunning is returned by Host.Start when the host's process runs.
	ErrRunning = errors.New("already running")
	// ErrUnreachable is returned by Ping when a router answered that the
	// destination cannot be reached.
	ErrUnreachable = errors.New("destination unreachable")
	// ErrNotRunning is returned by Host.Stop and Host.Kill when it does not.
	ErrNotRunning = errors.New("not running")
)

// Options configure a testbed. The zero value (plus Binary) is a 3-host
// testbed named "zt" in /run/zt running zlmesh on every host.
type Options struct {
	// Hosts is the number of hosts, h1…hN (0 means DefaultHosts; at most
	// MaxHosts).
	Hosts int
	// Prefix names everything (namespaces p-sw, p-out, p-h1, …): 1 to 10
	// characters, a lowercase letter then lowercase letters or digits. ""
	// means DefaultPrefix (New picks a random one instead).
	Prefix string
	// Dir holds the state file, the cluster key and the host directories
	// (<Dir>/h1/…). It must not exist or be empty. "" means /run/<Prefix>.
	// Keep it short: Unix socket paths are limited to 107 bytes.
	Dir string
	// Binary is the zlmesh binary Host.Start runs. It is required unless
	// Command is set or NoStart is true (then Start needs Command or Binary).
	Binary string
	// Seed is the number of the host the others --join (0 means 1).
	Seed int
	// Args returns extra arguments appended to a host's daemon command
	// (e.g. --node-subnet, shorter gossip timers, another key file). nil
	// means none. Called once per host when the host is made; not used
	// when Command is set.
	Args func(h *Host) []string
	// Command, if set, replaces a host's whole daemon command (argv, the
	// program first). Called once per host when the host is made. Tests use
	// it to run plain programs (sleep, a fake daemon) instead of zlmesh.
	Command func(h *Host) []string
	// NoStart makes Up leave the hosts stopped; Host.Start starts them.
	NoStart bool
	// Logf receives one line per step that matters. nil means no logging.
	Logf func(format string, args ...any)
	// MeshDNS and SearchDomain go into every container's resolv.conf
	// ("" means DefaultMeshDNS and DefaultSearchDomain).
	MeshDNS      string
	SearchDomain string
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL
	// (0 means DefaultStopTimeout). Close waits at most 2 s.
	StopTimeout time.Duration
	// Userspace names the hosts ("h3") whose zlmesh runs in userspace
	// mode as an unprivileged user with no capabilities and no
	// /dev/net/tun (see userspace.go).
	Userspace []string
	// Underlay is the underlay's address family: "" or UnderlayIPv4 (the
	// default), UnderlayDual or UnderlayIPv6.
	Underlay UnderlayFamily

	// ephemeral is set by New: see state.Ephemeral.
	ephemeral bool
}

var prefixRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,9}$`)
var containerRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,19}$`)

// withDefaults validates o and fills its defaults. It touches nothing.
func (o Options) withDefaults() (Options, error) {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if !prefixRE.MatchString(o.Prefix) {
		return o, fmt.Errorf("testbed prefix %q: want 1-10 characters, a lowercase letter then lowercase letters or digits", o.Prefix)
	}
	if o.Hosts == 0 {
		o.Hosts = DefaultHosts
	}
	if o.Hosts < 1 || o.Hosts > MaxHosts {
		return o, fmt.Errorf("testbed %s: %d hosts: want 1 to %d", o.Prefix, o.Hosts, MaxHosts)
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Seed < 1 || o.Seed > o.Hosts {
		return o, fmt.Errorf("testbed %s: seed h%d is not one of h1…h%d", o.Prefix, o.Seed, o.Hosts)
	}
	if o.Dir == "" {
		o.Dir = "/run/" + o.Prefix
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return o, fmt.Errorf("testbed %s: dir %q: %w", o.Prefix, o.Dir, err)
	}
	o.Dir = dir
	// <dir>/h200/zlmesh.sock must fit in sun_path (108 bytes with the NUL).
	if n := len(filepath.Join(dir, "h200", "zlmesh.sock")); n > 107 {
		return o, fmt.Errorf("testbed %s: dir %q is too long for Unix socket paths (%d bytes)", o.Prefix, dir, n)
	}
	if o.Binary != "" {
		b, err := filepath.Abs(o.Binary)
		if err != nil {
			return o, fmt.Errorf("testbed %s: binary %q: %w", o.Prefix, o.Binary, err)
		}
		o.Binary = b
	}
	if o.Binary == "" && o.Command == nil && !o.NoStart {
		return o, fmt.Errorf("testbed %s: Options.Binary is empty: set it, or Command, or NoStart", o.Prefix)
	}
	if o.MeshDNS == "" {
		o.MeshDNS = DefaultMeshDNS
	}
	if _, err := netip.ParseAddr(o.MeshDNS); err != nil {
		return o, fmt.Errorf("testbed %s: mesh DNS address: %w", o.Prefix, err)
	}
	if o.SearchDomain == "" {
		o.SearchDomain = DefaultSearchDomain
	}
	if strings.ContainsAny(o.SearchDomain, " \t\n") {
		return o, fmt.Errorf("testbed %s: search domain %q contains white space", o.Prefix, o.SearchDomain)
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	o.Underlay = o.Underlay.orDefault()
	switch o.Underlay {
	case UnderlayIPv4, UnderlayDual, UnderlayIPv6:
	default:
		return o, fmt.Errorf("testbed %s: underlay family %q: want %q, %q or %q", o.Prefix, o.Underlay, UnderlayIPv4, UnderlayDual, UnderlayIPv6)
	}
	if err := o.checkUserspace(); err != nil {
		return o, err
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o, nil
}

// hostName is the short name of host i.
func hostName(i int) string { return fmt.Sprintf("h%d", i) }

// hostAddr is the underlay address of host i.
func hostAddr(i int) netip.Addr {
	a := UnderlayPrefix.Addr().As4()
	a[3] = byte(10 + i)
	return netip.AddrFrom4(a)
}

// hostAddr6 is the IPv6 underlay address of host i: ::<10+i> with the
// number's decimal digits as the last group (h1 is 2001:db8:0:2::11).
func hostAddr6(i int) netip.Addr { return decimalSuffix(Underlay6Prefix, 10+i) }

// decimalSuffix is p's address with n's decimal digits read as its last
// hex group (n < 10000), so IPv6 addresses read like their IPv4 twins.
func decimalSuffix(p netip.Prefix, n int) netip.Addr {
	a := p.Addr().As16()
	v, _ := strconv.ParseUint(strconv.Itoa(n), 16, 16)
	a[14], a[15] = byte(v>>8), byte(v)
	return netip.AddrFrom16(a)
}

// hostAddrs returns host i's underlay addresses for family f: the one
// zlmesh advertises (IPv4, or IPv6 on an IPv6-only underlay) and the IPv6
// one (invalid when the underlay has no IPv6).
func hostAddrs(f UnderlayFamily, i int) (main, v6 netip.Addr) {
	if f.HasIPv6() {
		v6 = hostAddr6(i)
	}
	if f.HasIPv4() {
		return hostAddr(i), v6
	}
	return v6, v6
}

// PingTimeout is how long Ping waits for the answer when ctx allows longer.
const PingTimeout = time.Second

// ping sends one ICMP echo from inside the named namespace to addr.
func ping(ctx context.Context, ns, addr string) (time.Duration, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return 0, fmt.Errorf("ping %q: not an IP address", addr)
	}
	ctx, cancel := context.WithTimeout(ctx, PingTimeout)
	defer cancel()
	return pingIn(ctx, ns, a)
}

// netnsPath is where a named network namespace is mounted.
func netnsPath(name string) string { return "/run/netns/" + name }

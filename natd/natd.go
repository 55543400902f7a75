// Package natd is egress masquerade and published ports: a rule model
// independent of the kernel (Config → Plan → []Rule), converged into one
// nftables table of zlmesh's own through netlink (natd_linux.go).
//
// # What it makes work
//
// Containers have overlay addresses in the cluster CIDR. A host holds its
// node subnet, its own overlay address on the WireGuard interface (OverlayIf,
// "zl0", with the cluster prefix length) and per-service bridges (names
// starting with BridgePrefix, "zlb-") holding slices of the node subnet.
//
//  1. Egress masquerade: a connection from the node subnet to a destination
//     outside the cluster CIDR, leaving through any interface but the
//     overlay, is source-NATed to the address of the interface it leaves by
//     (masquerade). Traffic inside the cluster CIDR is never masqueraded:
//     containers see each other's real addresses. Config.Masquerade turns
//     this off.
//  2. Published ports: a new connection to a local address of the host (any,
//     or Port.HostAddr) on Port.HostPort is destination-NATed to Port.Target,
//     a container anywhere in the mesh. Both packets from the network
//     (prerouting) and packets the host sends itself (output) are
//     translated. Loopback destinations (127.0.0.0/8) are not: that would
//     need net.ipv4.conf.*.route_localnet=1, which lets anything on a link
//     reach services bound to 127.0.0.1 (CVE-2020-8558); use one of the
//     host's addresses instead.
//
// # IPv6
//
// With Config.Cluster6 set, the same NAT is done for IPv6 with the IPv6
// twins of every address: Local6 for Local, Overlay6 for Overlay, Cluster6
// for Cluster, Port.Target6 for Port.Target, the bridges' IPv6 gateways for
// their IPv4 ones. Both families live in the one inet table and never mix:
// an IPv4 connection is only ever translated to an IPv4 address, an IPv6
// one to an IPv6 address (no NAT64). A port published on all addresses with
// a Target6 answers on every IPv6 address of the host (not ::1: the kernel
// never lets a loopback source leave the host; a link-local destination is
// translated too, but the kernel does not forward packets from a
// link-local source, so clients use a global address) and reaches the
// container's IPv6 twin. The source-NAT table below holds for IPv6 as it
// stands, read with the IPv6 fields (Overlay6 for Overlay, and so on).
// IPv6 egress masquerade is switched apart (Masquerade6): the node turns
// it on only where the host has IPv6 egress (HasIPv6Egress). IPv6
// forwarding has a side effect on router advertisements; see Sysctls6.
//
// # Which flows are source-NATed, and why
//
// After a destination NAT the reply must come back through this host, or
// conntrack cannot undo the translation and the client receives an answer
// from an address it never talked to. The source is rewritten exactly when
// the reply would otherwise bypass this host ("remote" is a container on
// another host, reached through the overlay):
//
//	client → published port → target        source address the target sees
//	outside → local container                the client's (kept)
//	outside → remote                         Overlay (SNAT)
//	remote → local container                 the client's (kept)
//	remote → remote                          Overlay (SNAT)
//	local container → remote                 the client's (kept: the node subnet routes back here)
//	local container → itself or a sibling    the bridge's gateway (masquerade, hairpin)
//	local container → other local bridge     that bridge's gateway (masquerade, see below)
//	host process → local container           the host address it used (kept)
//	host process → remote                    Overlay (SNAT; a no-op when it used Overlay)
//
// and without a published port:
//
//	local container → outside the cluster    the outgoing interface's address (masquerade, Config.Masquerade)
//	local container → any cluster address    the container's (kept)
//
// Targets on other hosts are reached through the overlay; their host routes
// replies for any address outside this node's subnet elsewhere (to its
// underlay, masqueraded), so every client outside the node subnet is
// SNATed to Overlay. A hairpin on one bridge would be answered directly
// across the bridge, around this host's conntrack, so it is masqueraded.
// The hairpin rule matches a translated connection from a node-subnet
// address that is not the host's own, leaving through a bridge: it cannot
// look at the input interface, because where br_netfilter is active
// (net.bridge.bridge-nf-call-iptables=1, as Docker and Kubernetes leave it)
// such a connection is bridged rather than routed and its postrouting pass
// has no input interface; and nftables cannot compare the input with the
// output interface anyway. So a connection between two different local
// bridges is masqueraded as well, where it would not be strictly needed.
//
// Bridge hairpin mode: with br_netfilter active, a container reaching
// itself through a published port is bridged back out of the port it came
// from, which the bridge only does when that port is in hairpin mode. The
// bridge plumbing must therefore set hairpin mode on every container port;
// without br_netfilter the host routes the packet and hairpin mode does not
// matter. (The data-path test runs the hairpin flows both ways.)
//
// # Forwarding and firewalls
//
// The data path needs net.ipv4.ip_forward=1 (Sysctls, ApplySysctls), and
// for IPv6 net.ipv6.conf.all.forwarding=1 (Sysctls6, ApplySysctls6). natd
// adds no filter chain: in nftables an accept in one table never overrides
// a drop in another (every base chain at a hook sees the packet and any drop
// is final), so no rule in zlmesh's table can open a host whose own firewall
// drops forwarded packets by default, and zlmesh never edits another table.
// On such a host (for example after Docker set the iptables FORWARD policy
// to DROP) the operator must accept forwarding from and to the overlay and
// bridge interfaces there (for example in DOCKER-USER:
// `-i zl0 -j ACCEPT`, `-o zl0 -j ACCEPT`, `-i zlb+ -j ACCEPT`,
// `-o zlb+ -j ACCEPT`, and the same in ip6tables for IPv6). New logs a
// warning naming every nftables base chain on the forward hook whose policy
// is drop (iptables-legacy chains are not visible through nftables).
package natd

import (
	"errors"
	"log/slog"
	"net/netip"
)

// Defaults.
const (
	DefaultTableName    = "zlmesh"
	DefaultOverlayIf    = "zl0"
	DefaultBridgePrefix = "zlb-"
	// MaxPorts bounds Config.Ports so that a full Set stays one netlink
	// batch the kernel accepts.
	MaxPorts = 16384
	// MaxLocal bounds Config.Local: three rules a prefix, and a node's
	// blocks coalesce into few prefixes.
	MaxLocal = 1024
)

// Errors callers branch on.
var (
	// ErrInvalid wraps every Validate error: the config names something
	// impossible or malformed. Nothing was changed.
	ErrInvalid = errors.New("invalid NAT config")
	// ErrConflict wraps (besides ErrInvalid) the Validate error for two
	// ports that claim the same host port, protocol and address. Nothing was
	// changed.
	ErrConflict = errors.New("host port published twice")
	// ErrUnsupported is returned by New and ApplySysctls where there is no
	// kernel NAT to program (every platform but Linux).
	ErrUnsupported = errors.New("kernel NAT not supported on this platform")
	// ErrClosed is returned by Table methods after Close.
	ErrClosed = errors.New("nat table closed")
)

// Port is one published port: a new Proto connection to HostAddr:HostPort on
// this host reaches Target (IPv4) or Target6 (IPv6).
//
// Which host addresses answer:
//
//	HostAddr        Target6   published on                        forwarded to
//	zero            zero      every IPv4 address of the host      Target
//	zero            set       every IPv4 and every IPv6 address   Target (IPv4), Target6 (IPv6)
//	IPv4 address    any       that address only                   Target
//	IPv6 address    any       that address only                   Target6
//
// With HostAddr set only the target of its family is used, and it must be
// set; the other may be set as well and is then unused (a caller may always
// fill both). With HostAddr zero, Target may be zero too: then the port is
// published on the IPv6 addresses only.
type Port struct {
	// Proto is "tcp" or "udp" (lower case).
	Proto string
	// HostAddr is the local address the port is published on, IPv4 or
	// IPv6 (see the table above). The zero Addr publishes on every local
	// address of the host (except loopback) of each family that has a
	// target.
	HostAddr netip.Addr
	// HostPort is the port on the host, never 0.
	HostPort uint16
	// Target is the overlay address and port IPv4 connections are
	// forwarded to: an IPv4 address inside Config.Cluster, port never 0.
	// Zero: no IPv4 (HostAddr zero or IPv6, Target6 set).
	Target netip.AddrPort
	// Target6 is the IPv6 twin of Target, where IPv6 connections are
	// forwarded to: an IPv6 address inside Config.Cluster6 (which must be
	// set), port never 0. Zero: the port is IPv4 only.
	Target6 netip.AddrPort
}

// Config is the whole NAT state of one host. Set converges the kernel to it.
//
// IPv4 is always on: Cluster, Local and Overlay are required. IPv6 is on
// when Cluster6 is set; then Local6 and Overlay6 are required too, and the
// IPv6 rules mirror the IPv4 ones (the source-NAT table in the package doc
// holds for each family with its own fields). With Cluster6 zero, every
// other IPv6 field (Local6, Overlay6, Masquerade6, Port.Target6, an IPv6
// Port.HostAddr) must be zero as well.
type Config struct {
	// Cluster is the cluster CIDR (e.g. 10.200.0.0/16), masked. Traffic
	// between two cluster addresses is never masqueraded, and every Target
	// must lie inside it.
	Cluster netip.Prefix
	// Local are the prefixes of this host's container addresses (its
	// blocks, adjacent ones merged), each masked and inside Cluster, at
	// least one and at most MaxLocal: the sources that egress masquerade
	// applies to, and the clients whose address is kept when a published
	// port leads to another host (the overlay routes replies to them back
	// here; any other client is source-NATed to Overlay).
	Local []netip.Prefix
	// Overlay is this host's own overlay address (e.g. 10.200.3.1), inside
	// Cluster: the source given to published-port connections forwarded to
	// other hosts.
	Overlay netip.Addr
	// OverlayIf is the name of the overlay (WireGuard) interface; "" means
	// DefaultOverlayIf. Egress masquerade never applies to packets leaving
	// through it.
	OverlayIf string
	// BridgePrefix is the name prefix of the per-service bridges; "" means
	// DefaultBridgePrefix. A translated connection from a local container
	// (inside Local or Local6, not one of the host's addresses) that leaves
	// through one of them is masqueraded (hairpin).
	BridgePrefix string
	// Masquerade turns IPv4 egress masquerade on. The zero value (false)
	// leaves egress traffic with the container's source address.
	Masquerade bool

	// Cluster6 is the cluster's IPv6 prefix (its ULA /48, e.g.
	// fd12:3456:789a::/48), masked; the zero Prefix switches IPv6 NAT off.
	// The IPv6 twin of Cluster: IPv6 traffic between two addresses inside
	// it is never masqueraded, and every Target6 must lie inside it.
	Cluster6 netip.Prefix
	// Local6 are the IPv6 twins of Local (the node's IPv6 blocks, the /64s,
	// adjacent ones merged), each masked and inside Cluster6; at least one
	// and at most MaxLocal when Cluster6 is set. They play Local's part for
	// IPv6: egress masquerade sources, kept clients, hairpin sources.
	Local6 []netip.Prefix
	// Overlay6 is this host's own IPv6 overlay address (the twin of
	// Overlay), inside Cluster6, required when Cluster6 is set: the source
	// given to IPv6 published-port connections forwarded to other hosts.
	Overlay6 netip.Addr
	// Masquerade6 turns IPv6 egress masquerade on: a connection from Local6
	// to a destination outside Cluster6, leaving through any interface but
	// the overlay, is source-NATed to the address of the interface it
	// leaves by. Container IPv6 addresses are ULAs that the world cannot
	// route back to, so it is what gives containers IPv6 egress. natd does
	// not decide it: the node sets it where the host has IPv6 egress
	// (HasIPv6Egress) and masquerade is wanted, and leaves it off
	// otherwise (a masqueraded packet would have nowhere to go). Requires
	// Cluster6.
	Masquerade6 bool

	// Ports are the published ports, in any order; at most MaxPorts. No two
	// may share protocol, host port and host address within one family, and
	// a port published on all addresses of a family may not also be
	// published on one address of that family.
	Ports []Port
}

// Options configure New.
type Options struct {
	// TableName is the name of zlmesh's nftables table (family inet); ""
	// means DefaultTableName. natd creates, changes and deletes this table
	// and nothing else.
	TableName string
	// NetNS is an open file descriptor of the network namespace to program
	// (tests); 0 means the namespace of the thread calling New. The
	// descriptor must stay open until Close.
	NetNS int
	// Logger receives one line per change applied and per warning; nil
	// means slog.Default().
	Logger *slog.Logger
}

// Table is zlmesh's nftables table. Implementations are safe for concurrent
// use; calls are serialized. Every method may block on netlink round trips
// (no more than a few per call).
type Table interface {
	// Set converges the kernel to cfg. It validates cfg first (an invalid
	// cfg changes nothing), then compares the desired state with what the
	// table holds and sends only the difference, as one atomic nftables
	// batch: on a kernel error nothing of it is applied. Calling it again
	// with the same cfg sends nothing. Publishing or unpublishing one port
	// is one set element added or removed, whatever the number of ports.
	// Changes made to the table by others since the last call are noticed
	// (the ruleset generation moved) and repaired.
	//
	// Established connections keep their translation (conntrack) when a
	// port is removed or sent to another target; only new ones follow.
	// For UDP, whose flows never end while the client keeps sending, Set
	// deletes the conntrack entries of a removed or retargeted port after
	// the batch is applied; that walks the conntrack table (shared by all
	// namespaces; ~10 ms with 262144 buckets) and happens only then.
	Set(cfg Config) error
	// Purge deletes zlmesh's table, with every rule and published port (and
	// the conntrack entries of its UDP ports, as Set). It succeeds when the
	// table does not exist. A later Set recreates it.
	Purge() error
	// Close releases the netlink sockets and leaves the table in the kernel:
	// published ports and masquerade keep working while zlmesh restarts.
	// After Close every method returns ErrClosed; Close itself is
	// idempotent.
	Close() error
}

// Sysctl is one kernel setting the data path needs.
type Sysctl struct {
	Name  string // dotted, e.g. "net.ipv4.ip_forward"
	Value string // what ApplySysctls writes
	Why   string // one line for logs and docs
}

// Sysctls returns the kernel settings the NAT data path needs, in the order
// ApplySysctls writes them. Deliberately absent: route_localnet (loopback
// destinations are not published, see the package doc) and
// net.bridge.bridge-nf-call-iptables (natd works with it on or off and
// leaves it alone; other software on the host depends on it). Not a sysctl
// but needed: hairpin mode on every container's bridge port (see "Bridge
// hairpin mode" in the package doc).
func Sysctls() []Sysctl {
	return []Sysctl{{
		Name:  "net.ipv4.ip_forward",
		Value: "1",
		Why:   "route between bridges, the overlay and the underlay: container egress, published ports, mesh traffic",
	}}
}

// Sysctls6 returns the kernel settings the IPv6 data path needs (Config
// with Cluster6 set), in the order ApplySysctls6 writes them, beside those
// of Sysctls.
//
// Switching IPv6 forwarding on makes the host a router: on every interface
// whose accept_ra is 1 (the default) the kernel then ignores router
// advertisements, so a default route and SLAAC addresses learned from them
// are not renewed and expire, and the host loses its IPv6 egress some
// minutes later. ApplySysctls6 prevents that where it matters, see there.
func Sysctls6() []Sysctl {
	return []Sysctl{{
		Name:  "net.ipv6.conf.all.forwarding",
		Value: "1",
		Why:   "route IPv6 between bridges, the overlay and the underlay: container egress, published ports, mesh traffic",
	}}
}

package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/dockerplugin"
	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/mesh"
	"github.com/zlmesh/zlmesh/tun"
	"golang.zx2c4.com/wireguard/conn"
)

// Defaults for Config fields left zero.
const (
	DefaultStateDir   = "/var/lib/zlmesh"
	DefaultListenPort = 51820
	DefaultGossipPort = 7946
	DefaultKeepalive  = 25 * time.Second
	DefaultDeadGrace  = 24 * time.Hour
	// DefaultBlockReleaseAfter is how long an empty block is kept.
	DefaultBlockReleaseAfter = 10 * time.Minute
	// DefaultDockerPluginSocket is where Docker looks for the "zlmesh" driver.
	DefaultDockerPluginSocket = "/run/docker/plugins/zlmesh.sock"
)

// Config is everything `zlmesh up` needs. The zero value of every field but
// ClusterKey is usable: Normalize fills defaults.
type Config struct {
	// Name is the node's unique name in the cluster; default: the hostname.
	Name string
	// StateDir holds the private key, the block claims, attachments and
	// known peers; default /var/lib/zlmesh. Created with mode 0700.
	StateDir string
	// Socket is the control socket path; default /run/zlmesh/zlmesh.sock,
	// on Windows the named pipe \\.\pipe\zlmesh.
	Socket string
	// ControlGroup (Windows) is a group, by name or SID, that may use the
	// control pipe besides SYSTEM and the Administrators; empty: nobody
	// else. Ignored for a Unix socket, whose group is its directory's.
	ControlGroup string
	// Interface is the TUN's name (at most 15 bytes); default zl0.
	Interface string
	// MTU of the TUN and of container interfaces; default 1420.
	MTU int
	// ListenPort is WireGuard's UDP port; default 51820.
	ListenPort int
	// GossipPort is memberlist's UDP and TCP port; default 7946.
	GossipPort int
	// BindAddr is the address gossip listens on, IPv4 or IPv6; default
	// all (0.0.0.0, which Go opens as one dual-stack socket, so an IPv6
	// underlay needs no :: here).
	BindAddr netip.Addr
	// AdvertiseAddr is this node's underlay address as peers dial it for
	// gossip and WireGuard, IPv4 or IPv6 (peers then dial [addr]:port);
	// default: the bind address if it is a specific one, else the first
	// private address (IPv4 first), else the first global IPv6 address
	// (see mesh.Config.AdvertiseAddr).
	AdvertiseAddr netip.Addr
	// Join lists the seeds (host:port) to join through; empty starts a new
	// cluster (or re-joins the peers remembered in StateDir).
	Join []string
	// ClusterKey seals gossip (16, 24 or 32 bytes). Required.
	ClusterKey []byte
	// ClusterCIDR is cut into blocks that nodes claim on demand; default
	// 10.200.0.0/14 (ipam.DefaultCluster). Its top /24 is reserved for
	// virtual addresses (the mesh DNS).
	ClusterCIDR netip.Prefix
	// BlockPrefix is the prefix length of a block; default 26.
	BlockPrefix int
	// NoIPv6 switches the overlay's IPv6 side off (--ipv6=false): the node,
	// its containers and its routes are then IPv4 only. By default every
	// IPv4 address of the overlay has an IPv6 twin (ipam.Twins).
	NoIPv6 bool
	// ClusterCIDR6 is the cluster's IPv6 prefix, a unique local (fc00::/7)
	// prefix of /48 or shorter with room for a /64 per block; zero: derived
	// from ClusterKey (ipam.ULAFor), so every node of a cluster computes the
	// same one. Every node gossips it; a peer with another one gets no
	// WireGuard peer, as for another address plan.
	ClusterCIDR6 netip.Prefix
	// MaxNodes, when not 0, is the number of nodes the cluster CIDR must
	// hold a block for: a plan with fewer claimable blocks is refused at
	// start.
	MaxNodes int
	// FirstBlock is the block this node would like as its first (its
	// overlay address is that block's second address); zero: pick a free
	// one. Blocks recorded in StateDir take precedence.
	FirstBlock netip.Prefix
	// BlockReleaseAfter is how long a block (other than the first) must
	// stay empty before the node gives it up; default 10m.
	BlockReleaseAfter time.Duration
	// DeadGrace is how long the blocks of a node declared dead stay
	// reserved for it; default 24h.
	DeadGrace time.Duration
	// Keepalive is WireGuard's persistent keepalive; default 25s.
	Keepalive time.Duration
	// NoMasquerade switches egress masquerade off: containers then reach
	// outside the cluster with their own source address.
	NoMasquerade bool
	// DNSUpstreams are where the mesh DNS forwards names outside the zone;
	// nil: the host's /etc/resolv.conf without loopback entries.
	DNSUpstreams []string
	// DNSZone is the mesh DNS zone; default "zl.".
	DNSZone string
	// DNSTTL is the TTL of mesh DNS answers; default 5s.
	DNSTTL time.Duration
	// DNSListen are extra socket listeners (ip:port, UDP and TCP) of the
	// mesh DNS, e.g. 127.0.0.1:53 for the host itself; the mesh DNS
	// address on the packet path is always served.
	DNSListen []string
	// DockerPlugin serves Docker's network and IPAM driver protocols (the
	// driver "zlmesh": docker network create -d zlmesh --ipam-driver zlmesh)
	// on DockerPluginSocket. Off by default.
	DockerPlugin bool
	// DockerPluginSocket is the driver's socket; Docker finds it by its
	// file name. Default /run/docker/plugins/zlmesh.sock.
	DockerPluginSocket string
	// DockerSocket is dockerd's engine API, read for network names and to
	// reconcile endpoints; default /run/docker.sock; "-" for none
	// (networks then need -o zlmesh.service=NAME).
	DockerSocket string
	// Gossip holds memberlist's timers; zero fields keep LAN defaults.
	Gossip mesh.Tuning
	// Logger; nil logs to stderr at Info.
	Logger *slog.Logger

	// Userspace, when set, runs the node in userspace mode (see
	// Userspace): NewTUN, Plumbing, Containers and NAT are then ignored.
	// nil: kernel mode.
	Userspace *Userspace

	// NewTUN creates the packet device; nil: a kernel TUN (tun.Create).
	// Tests pass a fake.
	NewTUN func(name string, mtu int) (tun.Device, error)
	// Bind is WireGuard's UDP transport; nil: conn.NewDefaultBind().
	Bind conn.Bind
	// Plumbing configures the OS side of the interface; nil: netlink on
	// Linux (tun.SetAddress, tun.SetRoutes).
	Plumbing Plumbing
	// Containers is the container plumbing; nil: package bridge on Linux,
	// none elsewhere (attach then answers "unsupported").
	Containers Containers
	// NAT is the kernel NAT table; nil: natd's nftables table on Linux,
	// none elsewhere (publish then answers "unsupported").
	NAT NAT
}

// Plumbing is the OS side of the TUN: its address and the routes zlmesh owns.
// Both calls are declarative and idempotent.
type Plumbing interface {
	SetAddress(ifname string, addr netip.Prefix) error
	SetRoutes(ifname string, routes []netip.Prefix) error
}

// LocalPlumbing is a Plumbing that can also make an address local to the
// host (HoldLocal puts it on the loopback interface): the mesh DNS address
// is then served by kernel sockets, and queries from the host's containers
// never cross the TUN. Kernel plumbing is one; a Plumbing that is not (the
// userspace mode's, tests' fakes) leaves the mesh DNS to the packet path.
// Both calls are idempotent.
type LocalPlumbing interface {
	Plumbing
	HoldLocal(addr netip.Addr) error
	ReleaseLocal(addr netip.Addr) error
}

var _ LocalPlumbing = kernelPlumbing{}

type kernelPlumbing struct{}

func (kernelPlumbing) HoldLocal(addr netip.Addr) error    { return tun.HoldLocal(addr) }
func (kernelPlumbing) ReleaseLocal(addr netip.Addr) error { return tun.ReleaseLocal(addr) }

func (kernelPlumbing) SetAddress(ifname string, addr netip.Prefix) error {
	return tun.SetAddress(ifname, addr)
}
func (kernelPlumbing) SetRoutes(ifname string, routes []netip.Prefix) error {
	return tun.SetRoutes(ifname, routes)
}

// Normalize fills defaults and checks the configuration. Every error is one
// line naming the problem.
func (c *Config) Normalize() error {
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("no --name given and no hostname: %w", err)
		}
		c.Name = h
	}
	if err := checkName(c.Name); err != nil {
		return err
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.Socket == "" {
		c.Socket = api.DefaultSocket
	}
	if c.Interface == "" {
		c.Interface = tun.DefaultName
	}
	if err := tun.ValidateName(c.Interface); err != nil {
		return fmt.Errorf("--interface: %w", err)
	}
	if c.MTU == 0 {
		c.MTU = tun.DefaultMTU
	}
	if c.MTU < 1280 || c.MTU > 65535 {
		return fmt.Errorf("--mtu %d: must be between 1280 and 65535", c.MTU)
	}
	if c.ListenPort == 0 {
		c.ListenPort = DefaultListenPort
	}
	if c.GossipPort == 0 {
		c.GossipPort = DefaultGossipPort
	}
	for name, p := range map[string]int{"--listen-port": c.ListenPort, "--gossip-port": c.GossipPort} {
		if p < 1 || p > 65535 {
			return fmt.Errorf("%s %d: must be between 1 and 65535", name, p)
		}
	}
	if !c.BindAddr.IsValid() {
		c.BindAddr = netip.IPv4Unspecified()
	}
	// An IPv4-mapped IPv6 address is its IPv4 address: wireguard-go's IPv6
	// socket is IPv6-only and cannot send to ::ffff:a.b.c.d.
	c.BindAddr, c.AdvertiseAddr = c.BindAddr.Unmap(), c.AdvertiseAddr.Unmap()
	if c.AdvertiseAddr.IsValid() && (c.AdvertiseAddr.IsUnspecified() || c.AdvertiseAddr.IsMulticast()) {
		return fmt.Errorf("--advertise-addr %s: want a unicast address peers can reach", c.AdvertiseAddr)
	}
	if z := c.AdvertiseAddr.Zone(); z != "" {
		return fmt.Errorf("--advertise-addr %s: a zone (%%%s) means nothing to other hosts", c.AdvertiseAddr, z)
	}
	for _, j := range c.Join {
		if err := checkHostPort(j); err != nil {
			return fmt.Errorf("--join %q: %w", j, err)
		}
	}
	if len(c.ClusterKey) == 0 {
		return errors.New("no cluster key: make one with `zlmesh genkey > cluster.key` and pass --cluster-key-file")
	}
	switch len(c.ClusterKey) {
	case 16, 24, 32:
	default:
		return fmt.Errorf("cluster key is %d bytes: must be 16, 24 or 32", len(c.ClusterKey))
	}
	if !c.ClusterCIDR.IsValid() {
		c.ClusterCIDR = netip.MustParsePrefix(ipam.DefaultCluster)
	}
	if c.BlockPrefix == 0 {
		c.BlockPrefix = ipam.DefaultBlockBits
	}
	pool, err := ipam.NewPool(c.ClusterCIDR, c.BlockPrefix)
	if err != nil {
		return fmt.Errorf("--cluster-cidr %s, --block-prefix %d: %w", c.ClusterCIDR, c.BlockPrefix, err)
	}
	if c.NoIPv6 && c.ClusterCIDR6.IsValid() {
		return fmt.Errorf("--cluster-cidr6 %s with --ipv6=false: give one or the other", c.ClusterCIDR6)
	}
	if !c.NoIPv6 {
		if !c.ClusterCIDR.Addr().Is4() {
			return fmt.Errorf("--cluster-cidr %s is IPv6 already: IPv6 twins need an IPv4 cluster CIDR; pass --ipv6=false", c.ClusterCIDR)
		}
		if !c.ClusterCIDR6.IsValid() {
			c.ClusterCIDR6 = ipam.ULAFor(c.ClusterKey)
		}
		if _, err := ipam.NewTwins(pool, c.ClusterCIDR6); err != nil {
			return fmt.Errorf("--cluster-cidr6: %w", err)
		}
	}
	if c.MaxNodes < 0 {
		return fmt.Errorf("--max-nodes %d: must not be negative", c.MaxNodes)
	}
	if c.MaxNodes > 0 && pool.Blocks() < uint64(c.MaxNodes) {
		return fmt.Errorf("--cluster-cidr %s holds %d blocks of /%d, fewer than the %d nodes of --max-nodes: use a shorter cluster prefix or a longer block prefix", c.ClusterCIDR, pool.Blocks(), c.BlockPrefix, c.MaxNodes)
	}
	if c.FirstBlock.IsValid() {
		if err := pool.CheckBlock(c.FirstBlock); err != nil {
			return fmt.Errorf("--first-block: %w", err)
		}
	}
	if c.DockerPluginSocket == "" {
		c.DockerPluginSocket = DefaultDockerPluginSocket
	}
	if c.DockerSocket == "" {
		c.DockerSocket = dockerplugin.DefaultDockerSocket
	}
	if c.BlockReleaseAfter == 0 {
		c.BlockReleaseAfter = DefaultBlockReleaseAfter
	}
	if c.BlockReleaseAfter < 0 {
		return fmt.Errorf("--block-release-after %v: must not be negative", c.BlockReleaseAfter)
	}
	if c.DeadGrace == 0 {
		c.DeadGrace = DefaultDeadGrace
	}
	if c.DeadGrace < 0 {
		return fmt.Errorf("--dead-grace %v: must not be negative", c.DeadGrace)
	}
	if c.Keepalive == 0 {
		c.Keepalive = DefaultKeepalive
	}
	for _, u := range c.DNSUpstreams {
		if err := checkHostPort(u); err != nil {
			return fmt.Errorf("--dns-upstream %q: %w", u, err)
		}
	}
	for _, l := range c.DNSListen {
		if _, err := netip.ParseAddrPort(l); err != nil {
			return fmt.Errorf("--dns-listen %q: want ip:port", l)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if c.NewTUN == nil {
		c.NewTUN = tun.Create
	}
	if c.Plumbing == nil {
		c.Plumbing = kernelPlumbing{}
	}
	return nil
}

// checkName accepts DNS-label-like node names, since they become
// <name>.node.<zone>.
func checkName(name string) error {
	if len(name) > 63 {
		return fmt.Errorf("node name %q: longer than 63 characters", name)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' && i > 0 && i < len(name)-1
		if !ok {
			return fmt.Errorf("node name %q: only letters, digits and inner '-' are allowed (it becomes a DNS name)", name)
		}
	}
	return nil
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("not host:port: %w", err)
	}
	if host == "" {
		return errors.New("empty host")
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q: must be a number between 1 and 65535", port)
	}
	return nil
}

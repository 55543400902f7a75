// Package bridge is the Linux container plumbing: per-service bridges, veth
// pairs made straight into container network namespaces, addresses and
// routes inside them, the host routes to them, detach, the orphan inventory
// and adoption after a restart. Everything goes through netlink (and
// /proc/sys for the forwarding and redirect switches); nothing runs `ip` or
// `sysctl`.
//
// # Routing model
//
// Containers are routed, not bridged, to each other (the model of Calico):
//
//   - a container holds its address as a full-length prefix (10.200.3.34/32,
//     or a /128) on Ifname, a link-scope route to the gateway out of Ifname
//     and a default route via the gateway (onlink);
//   - the gateway is one link-local address, the same on every bridge of
//     every host (GatewayFor: 169.254.1.1/32, fe80::1/128), so renumbering a
//     container never touches its gateway, and a bridge never owns a subnet;
//   - each service's bridge holds exactly that gateway, so it answers the
//     containers' ARP/ND for it itself (no proxy ARP);
//   - the host routes each container's address to its service's bridge
//     (`<addr> dev zlb-<service> scope link proto 0x7a`, RouteProtocol): two
//     containers of one service reach each other through the host's routing
//     like two of different services do. ICMP redirects are switched off
//     on the bridges (and host-wide with Config.Forwarding), or the host
//     would tell a container to send to its neighbour directly, a shortcut
//     it would keep for minutes after that neighbour's address moved. IPv6
//     has no switch against sending them, so an IPv6 container's Ifname
//     ignores them (net.ipv6.conf.<Ifname>.accept_redirects=0).
//
// The package does not allocate addresses (package ipam does), does not
// persist anything (package node does) and knows nothing of the mesh: the
// caller hands it a Spec with the addresses already chosen and records the
// Attached it gets back.
//
// The objects it makes, all in the Manager's host namespace except the
// container end of each veth:
//
//	zlb-<service>      one bridge per service, holding exactly the gateway
//	zlv<hash(container)> the host end of a container's veth, a port of the bridge
//	<Ifname> (eth0)    the container end, inside the container's namespace
//	<addr>/32 dev zlb-<service> proto 0x7a   one host route per container
//
// Interface aliases carry the full service name ("zlmesh service=<name>") and
// container id ("zlmesh container=<id>"), so Inventory can map kernel objects
// back to what they belong to even though the names are hashed.
//
// On platforms other than Linux every method returns ErrUnsupported.
package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
)

// Errors callers branch on (with errors.Is); every error returned by this
// package that has one of these meanings wraps it, together with the
// operation and the object concerned.
var (
	// ErrUnsupported: not available on this platform.
	ErrUnsupported = errors.New("container plumbing is not supported on this platform")
	// ErrNoNamespace: the container's network namespace does not exist (a
	// missing netns file, a dead PID) or the file given is not a network
	// namespace.
	ErrNoNamespace = errors.New("no such network namespace")
	// ErrIfnameTaken: the interface name asked for inside the container is
	// already used there by a link this package did not make for the
	// container.
	ErrIfnameTaken = errors.New("interface name already taken in the namespace")
	// ErrInvalid: the request itself is wrong (a bad name, a missing or
	// inconsistent field, a namespace that is the host's own or holds what
	// Config.Guard names, a route that is not this package's).
	ErrInvalid = errors.New("invalid request")
	// ErrExists: an object the request needs to create exists already and is
	// not what it should be (the container's host veth is already there, a
	// link with the bridge's name is not a bridge or belongs to another
	// service, the container already has a default route or a route to the
	// gateway, the host has a route to the container's address that is not
	// this package's).
	ErrExists = errors.New("already exists")
	// ErrMismatch: Adopt found state it cannot repair without disturbing the
	// container.
	ErrMismatch = errors.New("existing state does not match")
)

// Name prefixes of every link this package makes in the host namespace.
const (
	BridgePrefix = "zlb-" // service bridges
	VethPrefix   = "zlv"  // host ends of container veths
	// PeerPrefix names the container end of a veth when it is created in the
	// host and then moved (the alternative attach form, see Attach). A zlp
	// link in the host is debris of a crash in that window; Inventory lists
	// it and RemoveLink removes it.
	PeerPrefix = "zlp"
)

// DefaultIfname is the interface name inside the container when Spec.Ifname
// is empty.
const DefaultIfname = "eth0"

// RouteProtocol is the rtm_protocol value (see /etc/iproute2/rt_protos) of
// the host routes this package makes, one per container: Inventory lists
// the routes carrying it, RemoveRoute deletes only those, and
// `ip route show proto 122` shows them. 0x7a (122, "zlmesh bridge") is
// assigned to no routing daemon and differs from package tun's 0x5a.
const RouteProtocol = 0x7a

// The gateways containers route through: one link-local address per family,
// the same on every bridge of every host (as Calico's 169.254.1.1). A
// container reaches it on-link; the bridge of its service holds it.
var (
	Gateway4 = netip.MustParseAddr("169.254.1.1")
	Gateway6 = netip.MustParseAddr("fe80::1")
)

// GatewayFor returns the gateway of a container address as a full-length
// prefix: Gateway4/32 for an IPv4 address (an IPv4-mapped IPv6 one
// included), Gateway6/128 for IPv6, the zero Prefix for an invalid addr.
func GatewayFor(addr netip.Addr) netip.Prefix {
	switch {
	case !addr.IsValid():
		return netip.Prefix{}
	case addr.Unmap().Is4():
		return netip.PrefixFrom(Gateway4, Gateway4.BitLen())
	default:
		return netip.PrefixFrom(Gateway6, Gateway6.BitLen())
	}
}

// isGateway reports whether p is the gateway of its family.
func isGateway(p netip.Prefix) bool { return p.IsValid() && p == GatewayFor(p.Addr()) }

const ifnamsiz = 15 // the kernel's IFNAMSIZ-1: the longest interface name

// BridgeName is the bridge of a service: "zlb-" followed by the service name
// when it fits (names up to 11 bytes), else by its first 3 characters, '_'
// and 7 base32 characters of its SHA-256. '_' never appears in a valid
// service name, so the two forms never collide with each other; two long
// names collide only on a 35-bit hash collision, and even then Attach
// detects it (the bridge's alias names its service) and fails with ErrExists
// instead of sharing a bridge. The result is at most 15 bytes, deterministic
// and valid as an interface name for any input; callers validate the service
// with ValidateService first.
func BridgeName(service string) string {
	const room = ifnamsiz - len(BridgePrefix) // 11
	if len(service) <= room && ValidateService(service) == nil {
		return BridgePrefix + service
	}
	head := []byte(service)
	if len(head) > 3 {
		head = head[:3]
	}
	for i, c := range head {
		if !isLowerAlnum(c) && c != '-' {
			head[i] = 'x'
		}
	}
	h := hash32(service)
	return BridgePrefix + string(head) + "_" + h[:room-len(head)-1]
}

// VethName is the host end of a container's veth: "zlv" followed by 12
// base32 characters of the SHA-256 of the container id (60 bits), 15 bytes
// in all. It is deterministic, so a restarted node finds the veths of the
// containers it recorded.
func VethName(container string) string {
	return VethPrefix + hash32(container)[:ifnamsiz-len(VethPrefix)]
}

var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func hash32(s string) string {
	sum := sha256.Sum256([]byte(s))
	return lowerBase32.EncodeToString(sum[:])
}

func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// ValidateService checks a service name against the DNS label rules: 1 to 63
// characters of [a-z0-9-], not starting or ending with '-'. The error wraps
// ErrInvalid and names the problem.
func ValidateService(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("service name is empty: %w", ErrInvalid)
	case len(name) > 63:
		return fmt.Errorf("service name %.20q... is %d characters, more than 63: %w", name, len(name), ErrInvalid)
	case name[0] == '-' || name[len(name)-1] == '-':
		return fmt.Errorf("service name %q starts or ends with '-': %w", name, ErrInvalid)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !isLowerAlnum(c) && c != '-' {
			return fmt.Errorf("service name %q has %q at %d (only a-z, 0-9 and '-'): %w", name, c, i, ErrInvalid)
		}
	}
	return nil
}

// ValidateContainer checks a container id: 1 to 128 characters of
// [A-Za-z0-9_.-]. The error wraps ErrInvalid and names the problem.
func ValidateContainer(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("container id is empty: %w", ErrInvalid)
	case len(id) > 128:
		return fmt.Errorf("container id %.20q... is %d characters, more than 128: %w", id, len(id), ErrInvalid)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isLowerAlnum(c) && !(c >= 'A' && c <= 'Z') && c != '_' && c != '.' && c != '-' {
			return fmt.Errorf("container id %q has %q at %d (only A-Z, a-z, 0-9, '_', '.' and '-'): %w", id, c, i, ErrInvalid)
		}
	}
	return nil
}

// validateIfname checks an interface name the way the kernel does
// (dev_valid_name): 1 to 15 bytes, not "." or "..", no '/', ':' or
// whitespace.
func validateIfname(name string) error {
	if name == "" || len(name) > ifnamsiz || name == "." || name == ".." ||
		strings.ContainsAny(name, "/: \t\n\r\v\f") {
		return fmt.Errorf("interface name %q is not a valid interface name (1-15 bytes, no '/', ':' or spaces): %w", name, ErrInvalid)
	}
	return nil
}

// Spec describes one container attachment. The same Spec (the one recorded
// when the container was attached) is passed to every later call about that
// container.
type Spec struct {
	// Service names the service; its bridge is BridgeName(Service).
	Service string
	// Container is the container id; its host veth is VethName(Container).
	Container string
	// Netns is the path of a file that refers to the container's network
	// namespace (a bind mount such as /run/netns/x, or /proc/<pid>/ns/net).
	// Exactly one of Netns and PID is set.
	Netns string
	// PID is a process whose network namespace is the container's (its
	// /proc/<pid>/ns/net is used). Exactly one of Netns and PID is set.
	PID int
	// Ifname is the interface name inside the container; "" means
	// DefaultIfname ("eth0").
	Ifname string
	// Address is the container's address as a full-length prefix
	// (10.200.3.34/32, or a /128): it is not link-local, multicast,
	// loopback or unspecified.
	Address netip.Prefix
	// Gateway is the gateway the container routes through, as a
	// full-length link-local prefix of Address's family: normally
	// GatewayFor(Address.Addr()). The service's bridge holds it.
	Gateway netip.Prefix
	// Address6, when set, makes the container dual-stack: an IPv6 address
	// as a /128 beside an IPv4 Address, plumbed as Address is (the
	// address on Ifname without duplicate address detection, router
	// advertisements ignored, a route to Gateway6 and the IPv6 default
	// route via it, the host route to the bridge, which holds Gateway6 too).
	// The zero Prefix: Address's family only.
	Address6 netip.Prefix
	// MTU of both veth ends and the bridge; 0 leaves the kernel's default
	// (1500).
	MTU int
	// HostPeer selects the form for runtimes that move the container's
	// interface themselves (Docker's network drivers): when set, the
	// container end of the veth is made in the host namespace under this
	// name (normally HostPeerName(Container)) and left there, down and
	// without an address, for the runtime to move into the container,
	// rename, and give Address (and Address6, if set) and the routes to
	// the gateways. Netns and PID are
	// then unset and Ifname is not used. Attach does steps 3, 4 (the peer
	// in the host), 7, 8 and 9 of its list; Alive reports whether the host
	// veth still exists (it dies with the container's namespace); Adopt
	// repairs the host side only; Readdress is ErrUnsupported (the node
	// cannot reach into a namespace it was never given). See hostpeer_linux.go.
	HostPeer string
}

// HostPeerPrefix names the container end of a HostPeer veth while it is in
// the host (HostPeerName). Inventory does not list these links: each dies
// with its host veth.
const HostPeerPrefix = "zlc"

// HostPeerName is the HostPeer of a container: "zlc" and the same hash as
// VethName.
func HostPeerName(container string) string {
	return HostPeerPrefix + hash32(container)[:ifnamsiz-len(HostPeerPrefix)]
}

// ifname returns Ifname or the default.
func (s Spec) ifname() string {
	if s.Ifname == "" {
		return DefaultIfname
	}
	return s.Ifname
}

// nsPath returns the file naming the container's network namespace.
func (s Spec) nsPath() string {
	if s.Netns != "" {
		return s.Netns
	}
	return "/proc/" + strconv.Itoa(s.PID) + "/ns/net"
}

// validateNames checks the fields Detach needs.
func (s Spec) validateNames() error {
	if err := ValidateService(s.Service); err != nil {
		return err
	}
	return ValidateContainer(s.Container)
}

// validateNamespace checks that exactly one of Netns and PID is set.
func (s Spec) validateNamespace() error {
	switch {
	case s.Netns != "" && s.PID != 0:
		return fmt.Errorf("spec for container %s sets both netns %q and pid %d (set exactly one): %w", s.Container, s.Netns, s.PID, ErrInvalid)
	case s.Netns == "" && s.PID == 0:
		return fmt.Errorf("spec for container %s sets neither a netns path nor a pid: %w", s.Container, ErrInvalid)
	case s.PID < 0:
		return fmt.Errorf("spec for container %s has negative pid %d: %w", s.Container, s.PID, ErrInvalid)
	}
	return nil
}

// validateAddrs checks that addr and gw are a usable container address and
// gateway: full-length prefixes of one family, the gateway link-local, the
// address a routable unicast one.
func validateAddrs(container string, addr, gw netip.Prefix) error {
	a, g := addr.Addr(), gw.Addr()
	switch {
	case !addr.IsValid():
		return fmt.Errorf("container %s: address is not set: %w", container, ErrInvalid)
	case !gw.IsValid():
		return fmt.Errorf("container %s: gateway is not set: %w", container, ErrInvalid)
	case a.Is4In6() || g.Is4In6():
		return fmt.Errorf("container %s: address %s or gateway %s is an IPv4-mapped IPv6 address: %w", container, addr, gw, ErrInvalid)
	case a.Is4() != g.Is4():
		return fmt.Errorf("container %s: address %s and gateway %s are of different families: %w", container, addr, gw, ErrInvalid)
	case !addr.IsSingleIP():
		return fmt.Errorf("container %s: address %s is not a full-length prefix (/%d): %w", container, addr, a.BitLen(), ErrInvalid)
	case !gw.IsSingleIP():
		return fmt.Errorf("container %s: gateway %s is not a full-length prefix (/%d): %w", container, gw, g.BitLen(), ErrInvalid)
	case !g.IsLinkLocalUnicast():
		return fmt.Errorf("container %s: gateway %s is not a link-local address: %w", container, gw, ErrInvalid)
	case a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsLoopback() || a.IsUnspecified() || a.IsInterfaceLocalMulticast() ||
		(a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255})):
		return fmt.Errorf("container %s: address %s is not a routable unicast address: %w", container, addr, ErrInvalid)
	}
	return nil
}

// addrGW is one of a container's addresses and the gateway it routes
// through.
type addrGW struct{ addr, gw netip.Prefix }

// addrs lists the container's addresses with their gateways: Address, and
// Address6 when set.
func (s Spec) addrs() []addrGW {
	out := []addrGW{{s.Address, s.Gateway}}
	if s.Address6.IsValid() {
		out = append(out, addrGW{s.Address6, GatewayFor(s.Address6.Addr())})
	}
	return out
}

// gateways lists the gateways of the container's addresses, the bridge's
// addresses.
func (s Spec) gateways() []netip.Prefix {
	var out []netip.Prefix
	for _, a := range s.addrs() {
		out = append(out, a.gw)
	}
	return out
}

// validateAddress6 checks Address6 against Address.
func (s Spec) validateAddress6() error {
	if !s.Address6.IsValid() {
		return nil
	}
	if !s.Address.Addr().Is4() || !s.Address6.Addr().Is6() {
		return fmt.Errorf("container %s: address6 %s needs an IPv4 address beside it and must be IPv6 (address %s): %w", s.Container, s.Address6, s.Address, ErrInvalid)
	}
	return validateAddrs(s.Container, s.Address6, GatewayFor(s.Address6.Addr()))
}

// validate checks a Spec for Attach, Adopt and Readdress.
func (s Spec) validate() error {
	if err := s.validateNames(); err != nil {
		return err
	}
	if s.HostPeer != "" {
		return s.validateHostPeer()
	}
	if err := s.validateNamespace(); err != nil {
		return err
	}
	if err := validateIfname(s.ifname()); err != nil {
		return fmt.Errorf("container %s: %w", s.Container, err)
	}
	if s.MTU < 0 || (s.MTU > 0 && s.MTU < 68) || s.MTU > 65535 {
		return fmt.Errorf("container %s: mtu %d out of range (0, or 68 to 65535): %w", s.Container, s.MTU, ErrInvalid)
	}
	if err := validateAddrs(s.Container, s.Address, s.Gateway); err != nil {
		return err
	}
	return s.validateAddress6()
}

// validateHostPeer checks a Spec of the HostPeer form.
func (s Spec) validateHostPeer() error {
	switch {
	case s.Netns != "" || s.PID != 0:
		return fmt.Errorf("spec for container %s names a host peer %q and a namespace (netns %q, pid %d): %w", s.Container, s.HostPeer, s.Netns, s.PID, ErrInvalid)
	case !strings.HasPrefix(s.HostPeer, HostPeerPrefix):
		return fmt.Errorf("container %s: host peer %q does not start with %s: %w", s.Container, s.HostPeer, HostPeerPrefix, ErrInvalid)
	}
	if err := validateIfname(s.HostPeer); err != nil {
		return fmt.Errorf("container %s: host peer: %w", s.Container, err)
	}
	if s.MTU < 0 || (s.MTU > 0 && s.MTU < 68) || s.MTU > 65535 {
		return fmt.Errorf("container %s: mtu %d out of range (0, or 68 to 65535): %w", s.Container, s.MTU, ErrInvalid)
	}
	if err := validateAddrs(s.Container, s.Address, s.Gateway); err != nil {
		return err
	}
	return s.validateAddress6()
}

// NetnsID identifies a network namespace: the device and inode numbers of
// its nsfs file, the same for every file (bind mount, /proc/<pid>/ns/net)
// that refers to it and never shared by two namespaces alive at once. It
// tells a namespace from a later one at the same path or behind a reused PID.
// The zero value means unknown.
type NetnsID struct {
	Dev, Ino uint64
}

// IsZero reports whether id is unknown.
func (id NetnsID) IsZero() bool { return id == NetnsID{} }

func (id NetnsID) String() string { return fmt.Sprintf("netns:[%d:%d]", id.Dev, id.Ino) }

// Attached is what an attachment made; the caller records it beside the
// Spec (package node, in its own types and format).
type Attached struct {
	Bridge   string  // BridgeName(Service)
	HostVeth string  // VethName(Container)
	NetnsID  NetnsID // the container's namespace, for Alive
	// Repairs lists, after Adopt, what it found wrong and fixed (one short
	// sentence each); empty when everything matched, and always empty after
	// Attach.
	Repairs []string
}

// Inventory is what this package's objects look like in the host
// namespace: all zlb-* bridges, all zlv*/zlp* veth ends and all routes of
// protocol RouteProtocol, for garbage collection. It is a snapshot; it may
// be stale as soon as it is returned.
type Inventory struct {
	Bridges []BridgeInfo
	Veths   []VethInfo
	Routes  []RouteInfo // sorted by Dst
}

// RouteInfo is one host route of this package (protocol RouteProtocol, main
// table): a container's address routed to its service's bridge. A route
// whose Dst is no attached container's address is debris; RemoveRoute
// deletes it.
type RouteInfo struct {
	Dst    netip.Prefix // the container's address, full length
	Bridge string       // the link the route goes out of; "" when the dump named none
}

// BridgeInfo is one zlb-* bridge.
type BridgeInfo struct {
	Name    string
	Service string // from the bridge's alias; "" when it has none
	Up      bool
	Addrs   []netip.Prefix // every address, IPv6 link-local ones included
	Ports   []string       // names of the links enslaved to it
}

// VethInfo is one zlv* (or stray zlp*) link.
type VethInfo struct {
	Name      string
	Container string // from the link's alias; "" when it has none
	Master    string // the bridge it is enslaved to, "" for none
	Up        bool
	// Stray is true for a zlp* temporary peer left in the host namespace by
	// a crash during an attach; always debris.
	Stray bool
}

// Config configures a Manager. The zero value is usable.
type Config struct {
	// Logger receives one line per attach, detach, readdress, adoption and
	// removal; nil discards.
	Logger *slog.Logger
	// Forwarding makes the first attach of each address family switch IP
	// forwarding on in the host namespace (net.ipv4.ip_forward, or
	// net.ipv6.conf.all.forwarding for IPv6), through /proc/sys. Enabling
	// IPv6 forwarding stops the host from accepting router advertisements on
	// interfaces whose accept_ra is 1. For IPv4 it also switches ICMP
	// redirects off host-wide (net.ipv4.conf.all.send_redirects=0): the
	// kernel sends a redirect when either that switch or the interface's is
	// on, so the bridges' own 0 (always set) takes effect only with it.
	// Routing between two containers of one bridge goes in and out of the
	// bridge, which would otherwise earn the sender a redirect to its
	// neighbour that outlives the neighbour's address by minutes. False
	// leaves forwarding and redirects to the operator.
	Forwarding bool
	// HostNetns is the path of a network namespace file the Manager treats
	// as the host: bridges, host veths and host routes live there and the
	// forwarding switches are set there. "" (production) means the
	// namespace the calling thread is in when New runs. Tests and the
	// testbed point it at a namespace of their own.
	HostNetns string
	// Guard names what marks the node's own namespace besides its identity
	// (the host namespace itself is always refused). The zero value guards
	// nothing more.
	Guard Guard
}

// Guard names objects that only the node's own network namespace holds.
// Attach, Adopt and Readdress look for them in the pinned target namespace
// before making anything, and refuse (ErrInvalid) a namespace that holds
// any: configuring it would give the node's own namespace a default route
// into a bridge. The identity check knows only the Manager's host
// namespace; the guard also recognizes the node's namespace when that is
// another one (a TUN and underlay apart from the bridges, as a testbed may
// lay them out) and whatever path or pid names it. Each guarded link costs
// one netlink round-trip per call, the addresses one dump.
type Guard struct {
	// Links are interface names, e.g. the node's TUN ("zl0"). nil: none.
	Links []string
	// Addrs are addresses, e.g. the node's underlay and overlay
	// addresses; any prefix length matches. nil: none.
	Addrs []netip.Addr
}

// Manager does the plumbing in one host namespace. All methods are safe for
// concurrent use; calls about one service are serialized (an attach holds
// its bridge's lock from ensuring the bridge until its veth is a port), calls
// about different services run in parallel. Methods block on netlink
// round-trips only, each bounded by a socket timeout (10 s). A ctx is checked
// between steps; a cancelled attach undoes what it did. After Close every
// method fails.
type Manager struct {
	log  *slog.Logger
	cfg  Config
	sys  *system // platform state
	keep keepSet // bridges kept without ports (KeepBridges)
}

// New makes a Manager working in the caller's current network namespace, or
// in cfg.HostNetns when set. It opens its netlink socket there; Close
// releases it.
func New(cfg Config) (*Manager, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{log: log, cfg: cfg}
	sys, err := newSystem(cfg)
	if err != nil {
		return nil, err
	}
	m.sys = sys
	return m, nil
}

// Close releases the Manager's sockets and namespace handle. The kernel
// objects it made stay. Close is idempotent.
func (m *Manager) Close() error { return m.close() }

// Attach connects a container to its service's bridge, in this order, each
// step undone (in reverse) if a later one fails, so that a failed Attach
// leaves no veth, no bridge it created, no address and no route:
//
//  1. validate s; open the container's namespace and keep it open (pinned)
//     until Attach returns, so a racing container exit cannot swap it;
//     ErrNoNamespace for a missing file, a dead PID or a file that is not a
//     network namespace; ErrInvalid for the host's own namespace or one
//     holding a link or address that Config.Guard names;
//  2. check that Ifname is free inside it (ErrIfnameTaken);
//  3. ensure the bridge: create it (an existing one is reused when it is a
//     bridge of this service, else ErrExists), STP off, ICMP redirects off
//     (net.ipv4.conf.<bridge>.send_redirects=0), MTU, addresses made
//     exactly the gateway (stale ones flushed), up;
//  4. create the veth pair, MTU on both ends, in one request: the host end
//     VethName(Container) (ErrExists when it is already there: Detach or
//     Adopt it) and the container end created directly inside the pinned
//     namespace under its final name Ifname (IFLA_NET_NS_FD and IFLA_IFNAME
//     in the peer's attributes): it never exists in the host or under a
//     temporary name, and a name clash there fails the whole request;
//  5. (only in the alternative form kept for comparison: the peer is
//     created in the host as zlp*, then moved and renamed in one
//     RTM_NEWLINK carrying IFLA_NET_NS_FD + IFLA_IFNAME. It is not the
//     default because moving a link between namespaces costs an RCU grace
//     period under the rtnl lock, 15-25 ms, ten times the rest of Attach);
//  6. inside the namespace: the address, (IPv6) redirects ignored, lo up,
//     Ifname up, a link-scope route to the gateway and the default route
//     via it (onlink);
//     ErrExists when the namespace has another default route or route to
//     the gateway;
//  7. the host route `Address dev <bridge> scope link proto RouteProtocol`,
//     before the host end comes up so the container's first packet finds
//     it (a strict rp_filter would drop it, and the ARP for the gateway,
//     without). One of this package's to another bridge (debris of a
//     container whose Detach did not finish) is replaced; one that is not
//     this package's is ErrExists;
//  8. host side: enslave the host end to the bridge, up, hairpin on;
//  9. the forwarding switches, once per family, if Config.Forwarding.
//
// Attach may block for a few milliseconds of netlink round-trips.
func (m *Manager) Attach(ctx context.Context, s Spec) (Attached, error) {
	return m.attach(ctx, s)
}

// Detach disconnects a container: it deletes the host veth (the container
// end goes with it), the host routes of s.Address (and s.Address6) to the service's bridge,
// and then the bridge if that was its last port and KeepBridges does not
// keep it (its routes go with it).
// Only s.Service, s.Container and the addresses are used; an invalid Address
// skips the route (Inventory finds it, RemoveRoute removes it). It is
// idempotent: a veth or route already gone (detached before, or taken down
// with its namespace) is success. Deleting a link waits for the kernel's
// RCU grace periods (measured here: 10-25 ms for a veth, about 80 ms more
// for the bridge), and the kernel deletes one link at a time; so the veths
// of concurrent Detach calls (any services) are deleted together, in one
// request by link group (numbers 0x7a6cXXXX, used while a link dump less
// than 2 s old showed no link carrying the number), paying the grace
// periods once. The veth is deleted without the service's lock; the route's
// and the bridge's removal hold it, so an Attach to the same service waits
// for that.
func (m *Manager) Detach(ctx context.Context, s Spec) error {
	return m.detach(ctx, s)
}

// Readdress moves a live attachment from s.Address to newAddr (and from
// s.Address6 to newAddr6, which must be set exactly when s.Address6 is)
// without detaching it; the gateways stay, so nothing else on the bridge
// changes. In order, for each family:
//
//  1. the host route of newAddr to the service's bridge (replacing one of
//     this package's elsewhere; ErrExists for a foreign one);
//  2. the container: newAddr added, then every other address of the family
//     on Ifname removed (IPv6 link-local ones aside), then the routes to
//     the gateway and the default route made sure of (the container is
//     never without an address, which would make the kernel flush its
//     routes);
//  3. the host route of s.Address removed (when it differs).
//
// newAddr must pass the same checks as Spec.Address and be of the same
// family (ErrInvalid). A missing bridge or Ifname is ErrMismatch (Adopt
// first). On error the attachment may be half-moved; calling Readdress
// again with the same arguments finishes the job (every step is
// idempotent), and so does Adopt with the new address.
func (m *Manager) Readdress(ctx context.Context, s Spec, newAddr, newAddr6 netip.Prefix) error {
	return m.readdress(ctx, s, newAddr, newAddr6)
}

// Alive reports whether the container's namespace is still the one with id:
// for a PID, whether the process exists and its /proc/<pid>/ns/net is id
// (a reused PID gives another namespace); for a netns file, whether it
// exists and is id (a recreated file gives another). A vanished process or
// file is (false, nil); other errors (permission) are returned. A zero id is
// ErrInvalid. Alive does not touch the Manager's sockets.
func (m *Manager) Alive(s Spec, id NetnsID) (bool, error) {
	return m.alive(s, id)
}

// Adopt takes over an attachment made before a restart (by this or an
// earlier process, including the previous release's subnet model, whose
// /27 gateways and container prefixes it replaces): it checks everything
// against s and repairs what is wrong without disturbing a working
// container, listing each repair in Attached.Repairs. It runs the same
// ensure-steps as Attach, reading first and changing only what differs:
//
//   - the bridge: created if missing, exactly the gateway (stale
//     addresses, such as an old /27 gateway, flushed), STP off, redirects
//     off, MTU, up;
//   - the container end: MTU, up, lo up, exactly the address (others of
//     the family removed after it is added), (IPv6) redirects ignored, the
//     route to the gateway and the default route via it (replaced when they
//     differ);
//   - the host route of s.Address to the bridge;
//   - the host veth: alias, enslaved to the bridge, up, hairpin, MTU;
//   - a missing host veth (so no container end either) is attached afresh,
//     and so is one whose peer is not Ifname in the namespace when Ifname is
//     free there.
//
// The namespace is checked as Attach checks it (ErrInvalid for the host's
// or a guarded one). A dead namespace is ErrNoNamespace (the caller forgets
// the attachment and removes leftovers with RemoveLink, RemoveRoute and
// RemoveBridgeIfEmpty); an Ifname held by a link that is not the veth's
// peer is ErrMismatch.
func (m *Manager) Adopt(ctx context.Context, s Spec) (Attached, error) {
	return m.adopt(ctx, s)
}

// Inventory lists the zlb-* bridges (addresses and ports), the zlv*/zlp*
// veth ends and the routes of protocol RouteProtocol in the host namespace,
// from four netlink dumps (links, addresses, IPv4 and IPv6 routes).
func (m *Manager) Inventory() (Inventory, error) { return m.inventory() }

// RemoveLink deletes the host link name. It is idempotent (a missing link is
// success) and refuses (ErrInvalid) any name without one of this package's
// prefixes (zlb-, zlv, zlp), so it cannot delete what zlmesh did not make.
// Deleting a veth end deletes its peer, wherever that is. Removing a bridge
// this way releases its ports; prefer RemoveBridgeIfEmpty.
func (m *Manager) RemoveLink(name string) error { return m.removeLink(name) }

// RemoveBridgeIfEmpty deletes the zlb-* bridge name if no link is enslaved
// to it, and reports whether it did. A missing bridge is (false, nil); a
// name without the zlb- prefix or a link that is not a bridge is ErrInvalid.
func (m *Manager) RemoveBridgeIfEmpty(name string) (bool, error) {
	return m.removeBridgeIfEmpty(name)
}

// RemoveRoute deletes this package's host route to dst (protocol
// RouteProtocol, main table, whatever link it goes out of), as listed by
// Inventory. It is idempotent (no route to dst is success) and refuses
// (ErrInvalid) a dst that is not a full-length prefix, or whose only routes
// are not this package's: it never deletes a route zlmesh did not make.
func (m *Manager) RemoveRoute(dst netip.Prefix) error { return m.removeRoute(dst) }

// ownedName reports whether name has one of this package's prefixes.
func ownedName(name string) bool {
	return strings.HasPrefix(name, BridgePrefix) || strings.HasPrefix(name, VethPrefix) || strings.HasPrefix(name, PeerPrefix)
}

// Aliases written on the links, so Inventory can name their owners.
const (
	serviceAliasPrefix   = "zlmesh service="
	containerAliasPrefix = "zlmesh container="
)

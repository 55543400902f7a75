// Package api is the control-socket contract of zlmesh: the request, response
// and event types that travel as JSON over HTTP/1.1 on the node's Unix socket,
// the stable error codes, and a Go client (client.go) that the CLI uses.
//
// The socket (default DefaultSocket, mode 0660, owned by root and the group of
// the socket's directory) lets whoever may write to it attach containers and
// publish ports: treat membership of that group like membership of the docker
// group. `curl --unix-socket /run/zlmesh/zlmesh.sock http://zlmesh/v1/status`
// works.
//
// On Windows the same API is served on the named pipe \\.\pipe\zlmesh
// (DefaultSocket there), open to SYSTEM, the Administrators and one group
// the node is configured with (see internal/pipe); NewClient dials a pipe
// for a \\.\pipe\ name and a Unix socket otherwise.
//
// Endpoints:
//
//	GET    /v1/status        Status
//	GET    /v1/peers         []Peer
//	POST   /v1/down          DownRequest → 200, then the node leaves and exits
//	POST   /v1/attach        AttachRequest → Attachment
//	POST   /v1/detach        DetachRequest → 204 (also when not attached)
//	GET    /v1/attachments   []Attachment (this node)
//	GET    /v1/services      []ServiceEndpoint (cluster-wide)
//	POST   /v1/publish       PublishRequest → PortMapping
//	DELETE /v1/publish       UnpublishRequest → 204
//	GET    /v1/ports         []PortMapping (cluster-wide)
//	GET    /v1/forwards      []Forward (userspace mode)
//	POST   /v1/forwards      Forward → Forward
//	DELETE /v1/forwards      UnforwardRequest → 204
//	POST   /v1/guests        GuestRequest → Guest (with its config)
//	GET    /v1/guests        []Guest (this node)
//	DELETE /v1/guests/{name} 204; not_found when there is no such guest
//	GET    /v1/events        newline-delimited Event stream
//	GET    /metrics          Prometheus text format
//
// Errors are an Error body with one of the Code constants and a matching HTTP
// status.
//
// This package depends on the standard library only, and on Windows on
// internal/pipe (golang.org/x/sys/windows) for the pipe.
package api

import (
	"fmt"
	"time"
)

// Status is the node's view of itself (GET /v1/status).
type Status struct {
	Name      string `json:"name"`
	PublicKey string `json:"public_key"`
	OverlayIP string `json:"overlay_ip"`
	// FirstBlock is the node's first address block, which holds its
	// overlay address; Blocks every block it holds, FirstBlock first.
	FirstBlock  string   `json:"first_block"`
	Blocks      []string `json:"blocks"`
	Endpoint    string   `json:"endpoint"`     // underlay host:port WireGuard listens on
	GossipAddr  string   `json:"gossip_addr"`  // underlay host:port memberlist listens on
	ClusterCIDR string   `json:"cluster_cidr"` // e.g. 10.200.0.0/16
	// ClusterCIDR6 is the cluster's IPv6 prefix and OverlayIP6 the node's
	// IPv6 overlay address, MeshDNS6 the mesh DNS's; all "" when the node
	// runs IPv4 only (--ipv6=false).
	ClusterCIDR6 string `json:"cluster_cidr6,omitempty"`
	OverlayIP6   string `json:"overlay_ip6,omitempty"`
	MeshDNS6     string `json:"mesh_dns6,omitempty"`
	Interface    string `json:"interface"` // e.g. zl0
	MTU          int    `json:"mtu"`
	Version      string `json:"version"`
	// MeshDNS is the resolver address every container uses; SearchDomain
	// is the mesh zone without the trailing dot (e.g. "zl").
	MeshDNS      string `json:"mesh_dns"`
	SearchDomain string `json:"search_domain"`
	// Members counts alive cluster members including this node.
	Members int `json:"members"`
	// KnownPeers counts peers remembered in the state dir.
	KnownPeers int `json:"known_peers"`
	// Alone is true when this node is the only alive member although it
	// remembers peers: it is partitioned or they are all down, and it keeps
	// trying to re-join them.
	Alone bool `json:"alone"`
	// Attachments counts containers attached on this node.
	Attachments int       `json:"attachments"`
	StartedAt   time.Time `json:"started_at"`
	// Userspace is set when the node runs in userspace mode (no kernel
	// interface: a gVisor netstack).
	Userspace *UserspaceStatus `json:"userspace,omitempty"`
}

// UserspaceStatus describes a node in userspace mode.
type UserspaceStatus struct {
	// SOCKS5 and HTTPProxy are the proxies' listen addresses ("" when
	// off).
	SOCKS5    string `json:"socks5,omitempty"`
	HTTPProxy string `json:"http_proxy,omitempty"`
	// Forwards are the inbound forwards ("8080/tcp:127.0.0.1:80").
	Forwards []string `json:"forwards"`
}

// Forward makes the node's overlay address answer on Port by connecting to
// Target, a local ip:port (userspace mode only; POST /v1/forwards).
// Protocol is "tcp" (default) or "udp"; Target defaults to 127.0.0.1 on the
// same port. A forward already on that port and protocol to another target
// is CodeAlreadyExists; in kernel mode the answer is CodeUnsupported.
type Forward struct {
	Protocol string `json:"protocol,omitempty"`
	Port     int    `json:"port"`
	Target   string `json:"target,omitempty"`
}

// UnforwardRequest removes a forward (DELETE /v1/forwards); an unknown one
// is CodeNotFound.
type UnforwardRequest struct {
	Protocol string `json:"protocol,omitempty"`
	Port     int    `json:"port"`
}

// Peer states as reported in Peer.State.
const (
	PeerAlive   = "alive"
	PeerSuspect = "suspect"
	PeerDead    = "dead"
	PeerLeft    = "left"
)

// Peer is one other node as this node sees it: its gossip state joined with
// its WireGuard peer entry (GET /v1/peers).
type Peer struct {
	Name       string   `json:"name"`
	PublicKey  string   `json:"public_key"`
	Endpoint   string   `json:"endpoint"`
	AllowedIPs []string `json:"allowed_ips"`
	// FirstBlock is the peer's first block (from its meta), Blocks every
	// block this node sees it hold, sorted.
	FirstBlock string   `json:"first_block"`
	Blocks     []string `json:"blocks"`
	OverlayIP  string   `json:"overlay_ip"`
	// LastHandshake is the zero time when no handshake has completed.
	LastHandshake time.Time `json:"last_handshake"`
	State         string    `json:"state"`
	RxBytes       int64     `json:"rx_bytes"`
	TxBytes       int64     `json:"tx_bytes"`
	// Version is the zlmesh version the peer gossips (its `zlmesh
	// version`); peers of a cluster in a rolling upgrade differ.
	Version string `json:"version"`
}

// DownRequest asks the node to leave the cluster gracefully and exit.
// Purge also removes what a plain stop leaves in place on purpose (the NAT
// table with published ports).
type DownRequest struct {
	Purge bool `json:"purge,omitempty"`
}

// AttachRequest asks the node to attach a container's network namespace to a
// service. Exactly one of Netns (a path such as /run/netns/x or
// /proc/<pid>/ns/net) and PID must be set. Ifname defaults to "eth0".
//
// Netns may also be a file descriptor of the caller's, as
// /proc/<caller's pid>/fd/<fd>, kept open until the answer arrives: the way
// to hand over a namespace whose path the node cannot see (another mount
// namespace). Such a path is only good for the attach itself; Origin.Netns
// then says where the runtime keeps the namespace, and the node records
// that path when it refers to the same namespace from where the node runs.
// When it does not, the node knows the container by its veth: the
// attachment lives until the namespace is gone (which takes the veth with
// it) or it is detached, but the node cannot repair the container's side of
// it after a restart or move it to another address.
type AttachRequest struct {
	Service   string `json:"service"`
	Container string `json:"container"`
	Netns     string `json:"netns,omitempty"`
	PID       int    `json:"pid,omitempty"`
	Ifname    string `json:"ifname,omitempty"`
	// ContainerID is how a Windows node finds the container, instead of
	// Netns and PID: the runtime's container (HCS compute system) id. The
	// node gives the container an HCN endpoint with its address and puts
	// it into the container; an unknown id is CodeNotFound. Container
	// defaults to ContainerID. On Linux a request with ContainerID is
	// CodeUnsupported.
	ContainerID string `json:"container_id,omitempty"`
	// Origin, optional, says which way onto the mesh made the attachment;
	// it is recorded with it and returned in Attachment.Origin.
	Origin *Origin `json:"origin,omitempty"`
}

// Origin kinds.
const (
	// OriginCNI: made by the CNI plugin (zlmesh-cni) for a container
	// runtime. Network, ContainerID and Ifname are the CNI network name,
	// CNI_CONTAINERID and CNI_IFNAME; Netns is CNI_NETNS. The plugin finds
	// its attachments again (DEL, CHECK, GC) by these three fields.
	OriginCNI = "cni"
)

// Origin says which way onto the mesh made an attachment and how that way
// names it. Kind is required (1 to 32 characters of [a-z0-9-]); the other
// fields are the kind's, each at most 256 bytes without control
// characters.
type Origin struct {
	Kind        string `json:"kind"`
	Network     string `json:"network,omitempty"`
	ContainerID string `json:"container_id,omitempty"`
	Ifname      string `json:"ifname,omitempty"`
	Netns       string `json:"netns,omitempty"`
}

// Attachment is an attached container and everything it needs to know about
// its network.
type Attachment struct {
	Service   string `json:"service"`
	Container string `json:"container"`
	Netns     string `json:"netns,omitempty"`
	PID       int    `json:"pid,omitempty"`
	Ifname    string `json:"ifname"`
	// Address is the container's address, Prefix its prefix length on the
	// service bridge, Gateway the bridge's address.
	Address string `json:"address"`
	Prefix  int    `json:"prefix"`
	Gateway string `json:"gateway"`
	// Address6 is the container's IPv6 address (the twin of Address; its
	// prefix length is 128), Gateway6 the bridge's IPv6 address; both ""
	// when the node runs IPv4 only.
	Address6 string `json:"address6,omitempty"`
	Gateway6 string `json:"gateway6,omitempty"`
	MTU      int    `json:"mtu"`
	// DNS is the mesh DNS's address, DNS6 its IPv6 address ("" when the
	// node runs IPv4 only): a container's resolv.conf lists both.
	DNS          string    `json:"dns"`
	DNS6         string    `json:"dns6,omitempty"`
	SearchDomain string    `json:"search_domain"`
	Bridge       string    `json:"bridge"`
	HostVeth     string    `json:"host_veth"`
	Node         string    `json:"node"`
	CreatedAt    time.Time `json:"created_at"`
	// Origin is the request's Origin, nil when it had none.
	Origin *Origin `json:"origin,omitempty"`
	// ContainerID and Endpoint, on Windows: the request's container id
	// and the HCN endpoint's name (Bridge is then the HCN network).
	ContainerID string `json:"container_id,omitempty"`
	Endpoint    string `json:"endpoint,omitempty"`
}

// DetachRequest detaches a container by id. Detaching a container that is not
// attached succeeds.
type DetachRequest struct {
	Container string `json:"container"`
}

// ServiceEndpoint is one container of a service somewhere in the cluster, as
// replicated through the record store.
type ServiceEndpoint struct {
	Service   string `json:"service"`
	Container string `json:"container"`
	Address   string `json:"address"`
	// Address6 is the container's IPv6 address (the twin of Address);
	// empty when it has none (IPv6 off, runtimes that address the
	// interface themselves, records of older releases).
	Address6 string `json:"address6,omitempty"`
	Node     string `json:"node"`
}

// PublishRequest publishes a port: connections to HostPort on the node's
// address (or HostAddress, if set) reach ContainerPort of the container, or of
// one container of the service. Exactly one of Container and Service is set.
// Protocol is "tcp" or "udp".
type PublishRequest struct {
	Container     string `json:"container,omitempty"`
	Service       string `json:"service,omitempty"`
	Protocol      string `json:"protocol"`
	HostPort      int    `json:"host_port"`
	ContainerPort int    `json:"container_port"`
	HostAddress   string `json:"host_address,omitempty"`
}

// UnpublishRequest removes the mapping of a host port and protocol on this
// node (HostAddress as published, empty for all addresses).
type UnpublishRequest struct {
	Protocol    string `json:"protocol"`
	HostPort    int    `json:"host_port"`
	HostAddress string `json:"host_address,omitempty"`
}

// PortMapping is one published port, cluster-wide.
type PortMapping struct {
	Node          string `json:"node"`
	Container     string `json:"container,omitempty"`
	Service       string `json:"service,omitempty"`
	Protocol      string `json:"protocol"`
	HostAddress   string `json:"host_address,omitempty"`
	HostPort      int    `json:"host_port"`
	ContainerPort int    `json:"container_port"`
	// Target is the overlay address connections are forwarded to, Target6
	// its IPv6 address where connections to the host's IPv6 addresses go
	// ("" when the target has none or the node runs IPv4 only).
	Target  string `json:"target"`
	Target6 string `json:"target6,omitempty"`
}

// TargetName names what a port forwards to: "service S" or "container C".
func (p PortMapping) TargetName() string {
	if p.Service != "" {
		return "service " + p.Service
	}
	return "container " + p.Container
}

// GuestRequest adds a guest: a plain WireGuard client (a VM, a laptop, a
// phone) that becomes a member of the mesh through this node (POST
// /v1/guests). Name is a DNS label (the guest is NAME.guest.<zone>).
// PublicKey is the guest's WireGuard public key (base64); empty means this
// node makes a key pair and returns the private key in this answer only,
// never storing it. Endpoint overrides the Endpoint of the config
// ("host:port", for NAT or a DNS name); empty means this node's underlay
// address and WireGuard port.
type GuestRequest struct {
	Name      string `json:"name"`
	PublicKey string `json:"public_key,omitempty"`
	Endpoint  string `json:"endpoint,omitempty"`
}

// Guest is a guest of this node (GET /v1/guests, and the answer of POST
// /v1/guests).
type Guest struct {
	Name      string `json:"name"`
	PublicKey string `json:"public_key"`
	// Address is the guest's mesh address (a /32 from this node's blocks),
	// DNSName its mesh name.
	Address string `json:"address"`
	// Address6 is its IPv6 address, the twin of Address ("" when the node
	// runs IPv4 only).
	Address6 string `json:"address6,omitempty"`
	DNSName  string `json:"dns_name"`
	Node     string `json:"node"`
	// PrivateKey is set only in the answer of an add that made the key
	// pair; zlmesh keeps no copy.
	PrivateKey string `json:"private_key,omitempty"`
	// Config is the guest's wg-quick configuration. Its PrivateKey line is
	// there only in the answer of an add that made the key pair; otherwise
	// the guest puts in its own.
	Config string `json:"config"`
	// State is GuestConnected when a handshake completed within the last
	// GuestHandshakeWindow, else GuestWaiting.
	State string `json:"state"`
	// Endpoint is where the guest was last heard from ("" before its first
	// handshake); it changes when the guest roams.
	Endpoint      string    `json:"endpoint,omitempty"`
	LastHandshake time.Time `json:"last_handshake"`
	RxBytes       int64     `json:"rx_bytes"`
	TxBytes       int64     `json:"tx_bytes"`
	// Renumbered is set when the guest's address changed after its config
	// was handed out (its block moved): the guest needs the new Config.
	// OldAddress is the address it had.
	Renumbered bool      `json:"renumbered,omitempty"`
	OldAddress string    `json:"old_address,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// Guest states.
const (
	GuestConnected = "connected"
	GuestWaiting   = "waiting"
)

// GuestHandshakeWindow is how recent a guest's last handshake must be for
// it to count as connected (WireGuard rekeys every 2 minutes while traffic
// flows; a keepalive of 25 s keeps traffic flowing).
const GuestHandshakeWindow = 3 * time.Minute

// GuestRecord is a guest as the replicated store carries it (every node's
// DNS serves it as Name.guest.<zone>).
type GuestRecord struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Node    string `json:"node"`
}

// Event types on the /v1/events stream.
const (
	EventPeerUp   = "peer_up"
	EventPeerDown = "peer_down"
	EventAttach   = "attach"
	EventDetach   = "detach"
	EventRenumber = "renumber"        // this node moved a lost block's containers to another block (old_block, new_block)
	EventMove     = "container_moved" // an attached container got a new address
	EventConflict = "block_conflict"  // two nodes claimed one block (winner, loser, old_block)
	EventBlock    = "block"           // this node claimed (new_block) or released (old_block) a block
	EventPublish  = "publish"
	EventUnpub    = "unpublish"
	// Guests (guest, address; old_address for a move).
	EventGuestAdd    = "guest_add"
	EventGuestRemove = "guest_remove"
	EventGuestMove   = "guest_moved" // a guest got a new address: it needs its new config
	EventGuestUp     = "guest_up"    // a guest's first handshake, or one after a silence
	EventGuestDown   = "guest_down"  // no handshake within GuestHandshakeWindow
	// EventDropped tells a slow reader how many events it lost.
	EventDropped = "events_dropped"
)

// Event is one line of the /v1/events stream. Only the fields that matter for
// the Type are set.
type Event struct {
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Node    string    `json:"node,omitempty"`
	Peer    string    `json:"peer,omitempty"`
	Message string    `json:"message,omitempty"`
	// Block conflicts and renumbering.
	Winner   string `json:"winner,omitempty"`
	Loser    string `json:"loser,omitempty"`
	OldBlock string `json:"old_block,omitempty"`
	NewBlock string `json:"new_block,omitempty"`
	// Containers.
	Service    string `json:"service,omitempty"`
	Container  string `json:"container,omitempty"`
	Address    string `json:"address,omitempty"`
	OldAddress string `json:"old_address,omitempty"`
	// Ports.
	Port *PortMapping `json:"port,omitempty"`
	// Guests.
	Guest string `json:"guest,omitempty"`
}

// Stable error codes. Clients branch on these, never on messages.
const (
	CodeBadRequest     = "bad_request"        // 400: body is not valid JSON or a field is invalid
	CodeTooLarge       = "too_large"          // 413: body over the size limit
	CodeNotFound       = "not_found"          // 404: unknown container, service or port
	CodeAlreadyExists  = "already_exists"     // 409: container already attached, port taken
	CodeNoNamespace    = "no_namespace"       // 422: netns path missing, not a netns, or PID dead
	CodeIfnameTaken    = "ifname_taken"       // 409: interface name already in the namespace
	CodeExhausted      = "exhausted"          // 507: no free block left in the cluster CIDR
	CodeUnsupported    = "unsupported"        // 501: not possible on this platform or mode
	CodeNotReady       = "not_ready"          // 503: node is starting or stopping
	CodeInternal       = "internal"           // 500: anything else
	CodeMethodNotAllow = "method_not_allowed" // 405
)

// Error is the body of every non-2xx response, and the error the client
// returns for one.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Status is the HTTP status the error travelled with.
	Status int `json:"-"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Errorf builds an *Error with a code, its HTTP status and a message.
func Errorf(code string, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Status: StatusOf(code)}
}

// StatusOf returns the HTTP status for an error code.
func StatusOf(code string) int {
	switch code {
	case CodeBadRequest:
		return 400
	case CodeNotFound:
		return 404
	case CodeMethodNotAllow:
		return 405
	case CodeAlreadyExists, CodeIfnameTaken:
		return 409
	case CodeTooLarge:
		return 413
	case CodeNoNamespace:
		return 422
	case CodeUnsupported:
		return 501
	case CodeNotReady:
		return 503
	case CodeExhausted:
		return 507
	default:
		return 500
	}
}

// MaxBodyBytes is the largest request body the server reads.
const MaxBodyBytes = 64 << 10

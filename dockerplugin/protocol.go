package dockerplugin

// The wire types of Docker's plugin protocols, written after libnetwork's
// drivers/remote/api/api.go and ipams/remote/api/api.go (Docker 20.10,
// libnetwork commit 3797618f) and docs/remote.md, docs/ipam.md: the JSON
// field names are Go's default ones (exported field names, no tags), as
// libnetwork encodes them. Only what zlmesh reads or answers is here.
//
// Two error shapes: the network driver answers {"Err": "..."}, the IPAM
// driver {"Error": "..."}; both with HTTP 200. A request that does not
// decode gets an HTTP 400 with {"Err": "..."}, which Docker's plugin client
// reads for either protocol; an unknown method a 404 (libnetwork then treats
// optional methods as not implemented).

// ContentType is the media type of every answer.
const ContentType = "application/vnd.docker.plugins.v1.2+json"

// Docker labels (libnetwork's netlabel package) zlmesh reads or sets.
const (
	labelGeneric    = "com.docker.network.generic"             // CreateNetwork: the -o options
	labelEnableIPv6 = "com.docker.network.enable_ipv6"         // CreateNetwork: --ipv6
	labelPortMap    = "com.docker.network.portmap"             // ProgramExternalConnectivity: -p
	labelGateway    = "com.docker.network.gateway"             // RequestPool's Data: the pool's gateway
	labelMTU        = "com.docker.network.driver.mtu"          // -o com.docker.network.driver.mtu=N
	requestAddrType = "RequestAddressType"                     // RequestAddress option: what the address is for
	gatewayAddrType = "com.docker.network.gateway"             // ... the network's gateway (a --gateway)
	optService      = "zlmesh.service"                         // -o zlmesh.service=NAME
	macOption       = "com.docker.network.endpoint.macaddress" // endpoint option Docker adds for --mac-address
)

// Route types of StaticRoute (libnetwork types.NEXTHOP, types.CONNECTED).
const (
	routeNextHop   = 0
	routeConnected = 1
)

// Port protocols of PortBinding.Proto (libnetwork types.TCP, types.UDP).
const (
	protoTCP = 6
	protoUDP = 17
)

type activateResponse struct {
	Implements []string
}

// errResponse is the network driver's error answer (and every HTTP 400).
type errResponse struct {
	Err string
}

// ipamErrResponse is the IPAM driver's error answer.
type ipamErrResponse struct {
	Error string
}

type capabilitiesResponse struct {
	Scope             string
	ConnectivityScope string
}

// ipamData is driverapi.IPAMData as its MarshalJSON writes it.
type ipamData struct {
	AddressSpace string
	Pool         string
	Gateway      string
	AuxAddresses map[string]string
}

type createNetworkRequest struct {
	NetworkID string
	Options   map[string]any
	IPv4Data  []ipamData
	IPv6Data  []ipamData
}

type networkRequest struct { // DeleteNetwork
	NetworkID string
}

type endpointInterface struct {
	Address     string
	AddressIPv6 string
	MacAddress  string
}

type createEndpointRequest struct {
	NetworkID  string
	EndpointID string
	Interface  *endpointInterface
	Options    map[string]any
}

// createEndpointResponse: Interface is nil, or holds the IPv6 address
// only (endpointAnswer).
type createEndpointResponse struct {
	Interface *endpointInterface `json:",omitempty"`
}

type endpointRequest struct { // DeleteEndpoint, EndpointOperInfo, Leave, RevokeExternalConnectivity
	NetworkID  string
	EndpointID string
}

type endpointInfoResponse struct {
	Value map[string]any
}

type joinRequest struct {
	NetworkID  string
	EndpointID string
	SandboxKey string
	Options    map[string]any
}

type interfaceName struct {
	SrcName   string
	DstPrefix string
}

type staticRoute struct {
	Destination string
	RouteType   int
	NextHop     string
}

type joinResponse struct {
	InterfaceName         *interfaceName
	Gateway               string
	GatewayIPv6           string
	StaticRoutes          []staticRoute
	DisableGatewayService bool
}

type externalConnectivityRequest struct {
	NetworkID  string
	EndpointID string
	Options    map[string]any
}

// portBinding is libnetwork's types.PortBinding as encoding/json writes it
// (net.IP as a string, "" for none).
type portBinding struct {
	Proto       int
	IP          string
	Port        int
	HostIP      string
	HostPort    int
	HostPortEnd int
}

type discoveryNotification struct {
	DiscoveryType int
	DiscoveryData any
}

type ipamCapabilitiesResponse struct {
	RequiresMACAddress    bool
	RequiresRequestReplay bool
}

type addressSpacesResponse struct {
	LocalDefaultAddressSpace  string
	GlobalDefaultAddressSpace string
}

type requestPoolRequest struct {
	AddressSpace string
	Pool         string
	SubPool      string
	Options      map[string]string
	V6           bool
}

type requestPoolResponse struct {
	PoolID string
	Pool   string
	Data   map[string]string
}

type releasePoolRequest struct {
	PoolID string
}

type requestAddressRequest struct {
	PoolID  string
	Address string
	Options map[string]string
}

type requestAddressResponse struct {
	Address string
	Data    map[string]string
}

type releaseAddressRequest struct {
	PoolID  string
	Address string
}

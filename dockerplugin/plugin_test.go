package dockerplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeNode is a Node in memory: leases by key, attachments, ports.
type fakeNode struct {
	mu       sync.Mutex
	next     netip.Addr
	leases   map[string]netip.Addr // key → address
	attached map[string]Attachment
	ports    map[string][]Port
	failAt   string // "attach", "publish": that call fails
	clock    func() time.Time
	kept     [][]string // every KeepBridges call
	dual     bool       // attachments get an IPv6 twin (fd00::/64, host part kept)
}

var (
	testPool = netip.MustParsePrefix("10.200.0.0/16")
	testGW   = netip.MustParsePrefix("169.254.1.1/32")
	testGW6  = netip.MustParsePrefix("fe80::1/128")
)

func newFakeNode() *fakeNode {
	return &fakeNode{next: netip.MustParseAddr("10.200.0.10"), leases: map[string]netip.Addr{},
		attached: map[string]Attachment{}, ports: map[string][]Port{}, clock: time.Now}
}

func (f *fakeNode) Pool(v6 bool) (netip.Prefix, netip.Prefix, bool) {
	if v6 {
		return netip.Prefix{}, netip.Prefix{}, false
	}
	return testPool, testGW, true
}

func (f *fakeNode) Reserve(key string) (netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.leases[key]; ok {
		return netip.Addr{}, errors.New("exists")
	}
	a := f.next
	f.next = f.next.Next()
	f.leases[key] = a
	return a, nil
}

func (f *fakeNode) Unreserve(key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.attached[key]; ok {
		return nil
	}
	delete(f.leases, key)
	return nil
}

func (f *fakeNode) Attach(_ context.Context, ep Endpoint) (Attachment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.leases[ep.Reserved]
	if !ok {
		return Attachment{}, fmt.Errorf("no lease %s", ep.Reserved)
	}
	if f.failAt == "attach" {
		return Attachment{}, errors.New("plumbing failed")
	}
	delete(f.leases, ep.Reserved)
	f.leases[ep.Container] = a
	at := Attachment{Container: ep.Container, Service: ep.Service, Address: netip.PrefixFrom(a, 32), Gateway: testGW,
		Peer: "zlc" + ep.Container[len(ContainerPrefix):], HostVeth: "zlv" + ep.Container[len(ContainerPrefix):], Created: f.clock()}
	if f.dual {
		a16 := netip.MustParseAddr("fd00::").As16()
		a4 := a.As4()
		copy(a16[12:], a4[:])
		at.Address6, at.Gateway6 = netip.PrefixFrom(netip.AddrFrom16(a16), 128), testGW6
	}
	f.attached[ep.Container] = at
	return at, nil
}

func (f *fakeNode) Attachment(c string) (Attachment, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	at, ok := f.attached[c]
	return at, ok
}

func (f *fakeNode) Attachments() []Attachment {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Attachment
	for _, at := range f.attached {
		out = append(out, at)
	}
	return out
}

func (f *fakeNode) Detach(_ context.Context, c string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.attached, c)
	delete(f.leases, c)
	delete(f.ports, c)
	return nil
}

func (f *fakeNode) Publish(c string, p Port) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failAt == "publish" && len(f.ports[c]) > 0 {
		return errors.New("port taken")
	}
	f.ports[c] = append(f.ports[c], p)
	return nil
}

func (f *fakeNode) UnpublishAll(c string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ports, c)
	return nil
}

func (f *fakeNode) KeepBridges(services []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kept = append(f.kept, services)
}

// lastKept is the set of the last KeepBridges call, as text.
func (f *fakeNode) lastKept() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.kept) == 0 {
		return "never called"
	}
	return fmt.Sprint(f.kept[len(f.kept)-1])
}

// counts returns the numbers of leases, attachments and containers with ports.
func (f *fakeNode) counts() (leases, attached, ports int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.leases), len(f.attached), len(f.ports)
}

// fakeDocker answers network names and endpoints.
type fakeDocker struct {
	names map[string]string
	eps   map[string][]string
	err   error
}

func (d *fakeDocker) NetworkName(_ context.Context, id string) (string, error) {
	if d.err != nil {
		return "", d.err
	}
	n, ok := d.names[id]
	if !ok {
		return "", ErrNoNetwork
	}
	return n, nil
}

func (d *fakeDocker) NetworkEndpoints(_ context.Context, id string) ([]string, error) {
	if d.err != nil {
		return nil, d.err
	}
	if _, ok := d.names[id]; !ok {
		return nil, ErrNoNetwork
	}
	return d.eps[id], nil
}

type harness struct {
	t      *testing.T
	node   *fakeNode
	docker *fakeDocker
	plugin *Plugin
	h      http.Handler
	now    time.Time
	store  *MemStore
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, node: newFakeNode(), docker: &fakeDocker{names: map[string]string{}, eps: map[string][]string{}},
		now: time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC), store: &MemStore{}}
	h.node.clock = func() time.Time { return h.now }
	p, err := New(Config{Node: h.node, Docker: h.docker, Store: h.store, Now: func() time.Time { return h.now }})
	if err != nil {
		t.Fatal(err)
	}
	h.plugin = p
	h.h = p.Handler()
	return h
}

// post serves one request as Docker's plugin client sends it.
func (h *harness) post(method, body string) *http.Response {
	req := httptest.NewRequest(http.MethodPost, "/"+method, strings.NewReader(body))
	req.Header.Set("Accept", "application/vnd.docker.plugins.v1.2+json")
	rec := httptest.NewRecorder()
	h.h.ServeHTTP(rec, req)
	return rec.Result()
}

// call posts body (raw JSON as Docker sends it) to method and decodes the
// answer into a map; it returns the HTTP status too.
func (h *harness) call(method, body string) (int, map[string]any) {
	h.t.Helper()
	resp := h.post(method, body)
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed && ct != ContentType {
		h.t.Errorf("%s: Content-Type %q", method, ct)
	}
	var out map[string]any
	if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusBadRequest {
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			h.t.Fatalf("%s: answer does not decode: %v", method, err)
		}
	}
	return resp.StatusCode, out
}

// ok calls method and fails unless it succeeded.
func (h *harness) ok(method, body string) map[string]any {
	h.t.Helper()
	st, out := h.call(method, body)
	if st != http.StatusOK || out["Err"] != nil && out["Err"] != "" || out["Error"] != nil && out["Error"] != "" {
		h.t.Fatalf("%s(%s): status %d, answer %v", method, body, st, out)
	}
	return out
}

// fails calls method and returns its error text, failing unless it is a
// Docker-shaped error (Err for the network driver, Error for IPAM).
func (h *harness) fails(method, body string) string {
	h.t.Helper()
	st, out := h.call(method, body)
	field := "Err"
	if strings.HasPrefix(method, "IpamDriver.") && st == http.StatusOK {
		field = "Error"
	}
	msg, _ := out[field].(string)
	if msg == "" {
		h.t.Fatalf("%s(%s): status %d, answer %v: want an error in %q", method, body, st, out, field)
	}
	return msg
}

const (
	netID = "1f0c2a8e3b4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"
	epID  = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	epKey = "docker-a1b2c3d4e5f6"
)

func createNetworkBody(id string, opts string) string {
	return fmt.Sprintf(`{"NetworkID":%q,"Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{%s}},`+
		`"IPv4Data":[{"AddressSpace":"zlmesh-local","Gateway":"169.254.1.1/32","Pool":"0.0.0.0/0"}],"IPv6Data":[]}`, id, opts)
}

// endpoint runs RequestAddress and CreateEndpoint for epID on network id.
func (h *harness) endpoint(network, ep string) string {
	h.t.Helper()
	addr := h.ok("IpamDriver.RequestAddress", `{"PoolID":"zlmesh-v4","Address":"","Options":{"com.docker.network.endpoint.macaddress":""}}`)["Address"].(string)
	h.ok("NetworkDriver.CreateEndpoint", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q,"Interface":{"Address":%q,"AddressIPv6":"","MacAddress":""},"Options":{"com.docker.network.endpoint.exposedports":[],"com.docker.network.portmap":[]}}`, network, ep, addr))
	return addr
}

// TestDockerFlow drives the calls of `docker network create`, `docker run
// -p 8080:80 --network web`, `docker stop`, `docker rm` and `docker network
// rm`, in Docker's order and with its JSON, and checks each answer and what
// the node holds after each step.
func TestDockerFlow(t *testing.T) {
	h := newHarness(t)
	act := h.ok("Plugin.Activate", "")
	if fmt.Sprint(act["Implements"]) != "[NetworkDriver IpamDriver]" {
		t.Fatalf("Activate: %v", act)
	}
	if c := h.ok("NetworkDriver.GetCapabilities", "null"); c["Scope"] != "local" {
		t.Fatalf("capabilities: %v", c)
	}
	h.ok("IpamDriver.GetCapabilities", "")
	if sp := h.ok("IpamDriver.GetDefaultAddressSpaces", ""); sp["LocalDefaultAddressSpace"] == "" {
		t.Fatalf("address spaces: %v", sp)
	}
	pool := h.ok("IpamDriver.RequestPool", `{"AddressSpace":"zlmesh-local","Pool":"","SubPool":"","Options":{},"V6":false}`)
	if pool["PoolID"] != PoolID || pool["Pool"] != "0.0.0.0/0" || pool["Data"].(map[string]any)[labelGateway] != "169.254.1.1/32" {
		t.Fatalf("RequestPool: %v", pool)
	}
	// --subnet naming the cluster range gets it.
	if p := h.ok("IpamDriver.RequestPool", `{"AddressSpace":"zlmesh-local","Pool":"10.200.0.0/16"}`); p["Pool"] != "10.200.0.0/16" {
		t.Fatalf("RequestPool with --subnet: %v", p)
	}
	h.ok("NetworkDriver.CreateNetwork", createNetworkBody(netID, `"zlmesh.service":"web"`))

	addr := h.endpoint(netID, epID)
	if addr != "10.200.0.10/32" {
		t.Fatalf("RequestAddress: %s, want the node's address as a /32", addr)
	}
	at, ok := h.node.Attachment(epKey)
	if !ok || at.Service != "web" || at.Address.String() != addr {
		t.Fatalf("after CreateEndpoint the node has %+v %v", at, ok)
	}
	if leases, _, _ := h.node.counts(); leases != 1 || h.plugin.Pending() != 0 {
		t.Fatalf("after CreateEndpoint: %d leases, %d pending; want the one lease renamed", leases, h.plugin.Pending())
	}
	join := h.ok("NetworkDriver.Join", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q,"SandboxKey":"/var/run/docker/netns/0123456789ab","Options":{}}`, netID, epID))
	want := map[string]any{
		"InterfaceName":         map[string]any{"SrcName": at.Peer, "DstPrefix": "eth"},
		"Gateway":               "169.254.1.1",
		"GatewayIPv6":           "",
		"StaticRoutes":          []any{map[string]any{"Destination": "169.254.1.1/32", "RouteType": float64(1), "NextHop": ""}},
		"DisableGatewayService": false,
	}
	if fmt.Sprint(join) != fmt.Sprint(want) {
		t.Fatalf("Join:\n got %v\nwant %v", join, want)
	}
	h.ok("NetworkDriver.ProgramExternalConnectivity", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q,"Options":{"com.docker.network.endpoint.exposedports":[{"Proto":6,"Port":80}],"com.docker.network.portmap":[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]}}`, netID, epID))
	if got := fmt.Sprint(h.node.ports[epKey]); got != "[{tcp  8080 80}]" {
		t.Fatalf("published: %s", got)
	}
	info := h.ok("NetworkDriver.EndpointOperInfo", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q}`, netID, epID))
	if info["Value"].(map[string]any)["zlmesh.address"] != addr {
		t.Fatalf("EndpointOperInfo: %v", info)
	}
	h.ok("NetworkDriver.RevokeExternalConnectivity", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q}`, netID, epID))
	h.ok("NetworkDriver.Leave", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q}`, netID, epID))
	h.ok("NetworkDriver.DeleteEndpoint", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q}`, netID, epID))
	h.ok("IpamDriver.ReleaseAddress", fmt.Sprintf(`{"PoolID":"zlmesh-v4","Address":%q}`, strings.TrimSuffix(addr, "/32")))
	if l, a, p := h.node.counts(); l+a+p != 0 {
		t.Fatalf("after stop and rm: %d leases, %d attachments, %d port sets", l, a, p)
	}
	// Docker repeats deletes after a crash: they succeed.
	h.ok("NetworkDriver.DeleteEndpoint", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q}`, netID, epID))
	h.ok("NetworkDriver.DeleteNetwork", fmt.Sprintf(`{"NetworkID":%q}`, netID))
	h.ok("NetworkDriver.DeleteNetwork", fmt.Sprintf(`{"NetworkID":%q}`, netID))
	h.ok("IpamDriver.ReleasePool", `{"PoolID":"zlmesh-v4"}`)
	h.ok("NetworkDriver.DiscoverNew", `{"DiscoveryType":1,"DiscoveryData":{"Address":"192.0.2.2","self":false}}`)
	if st, _ := h.store.Load(); len(st.Networks) != 0 {
		t.Fatalf("networks saved after rm: %v", st.Networks)
	}
}

// TestDockerFlowIPv6: on a node serving IPv6 the network needs no --ipv6:
// CreateEndpoint (asked with no IPv6 address) answers the container's IPv6
// twin, which libnetwork's remote driver sets on the endpoint, the same on
// a repeated request; Join adds the connected route to the IPv6 gateway
// and names it GatewayIPv6; EndpointOperInfo shows the address; Docker's
// ReleaseAddress of the IPv6 address on delete (no pool id: it never came
// from IPAM) succeeds; an IPv6 address from elsewhere is refused.
func TestDockerFlowIPv6(t *testing.T) {
	h := newHarness(t)
	h.node.dual = true
	h.ok("NetworkDriver.CreateNetwork", createNetworkBody(netID, `"zlmesh.service":"web"`))
	addr := h.ok("IpamDriver.RequestAddress", `{"PoolID":"zlmesh-v4","Address":"","Options":{}}`)["Address"].(string)
	body := fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q,"Interface":{"Address":%q,"AddressIPv6":"","MacAddress":""},"Options":{}}`, netID, epID, addr)
	want := map[string]any{"Interface": map[string]any{"Address": "", "AddressIPv6": "fd00::ac8:a/128", "MacAddress": ""}}
	for _, name := range []string{"CreateEndpoint", "CreateEndpoint repeated"} {
		if got := h.ok("NetworkDriver.CreateEndpoint", body); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s:\n got %v\nwant %v", name, got, want)
		}
	}
	at, _ := h.node.Attachment(epKey)
	join := h.ok("NetworkDriver.Join", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q,"SandboxKey":"/var/run/docker/netns/0123456789ab","Options":{}}`, netID, epID))
	wantJoin := map[string]any{
		"InterfaceName": map[string]any{"SrcName": at.Peer, "DstPrefix": "eth"},
		"Gateway":       "169.254.1.1",
		"GatewayIPv6":   "fe80::1",
		"StaticRoutes": []any{
			map[string]any{"Destination": "169.254.1.1/32", "RouteType": float64(1), "NextHop": ""},
			map[string]any{"Destination": "fe80::1/128", "RouteType": float64(1), "NextHop": ""},
		},
		"DisableGatewayService": false,
	}
	if fmt.Sprint(join) != fmt.Sprint(wantJoin) {
		t.Fatalf("Join:\n got %v\nwant %v", join, wantJoin)
	}
	info := h.ok("NetworkDriver.EndpointOperInfo", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q}`, netID, epID))
	if info["Value"].(map[string]any)["zlmesh.address6"] != "fd00::ac8:a/128" {
		t.Fatalf("EndpointOperInfo: %v", info)
	}
	h.ok("NetworkDriver.Leave", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q}`, netID, epID))
	h.ok("NetworkDriver.DeleteEndpoint", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q}`, netID, epID))
	h.ok("IpamDriver.ReleaseAddress", fmt.Sprintf(`{"PoolID":"zlmesh-v4","Address":%q}`, strings.TrimSuffix(addr, "/32")))
	h.ok("IpamDriver.ReleaseAddress", `{"PoolID":"","Address":"fd00::ac8:a"}`)
	if l, a, p := h.node.counts(); l+a+p != 0 {
		t.Fatalf("after rm: %d leases, %d attachments, %d port sets", l, a, p)
	}

	addr = h.ok("IpamDriver.RequestAddress", `{"PoolID":"zlmesh-v4","Address":"","Options":{}}`)["Address"].(string)
	msg := h.fails("NetworkDriver.CreateEndpoint", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q,"Interface":{"Address":%q,"AddressIPv6":"fd99::5/64","MacAddress":""},"Options":{}}`, netID, epID, addr))
	if !strings.Contains(msg, "without --ipv6") {
		t.Errorf("CreateEndpoint with an IPv6 address of another IPAM: %q", msg)
	}
	if _, a, _ := h.node.counts(); a != 0 {
		t.Fatalf("an endpoint with a foreign IPv6 address got attached")
	}
}

// TestBadInput: each bad request gets a Docker-shaped error and leaves
// nothing made: no lease, attachment, port or saved network beyond what
// the setup made.
func TestBadInput(t *testing.T) {
	const other = "2f0c2a8e3b4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"
	cases := []struct {
		name    string
		setup   func(h *harness)
		method  string
		body    string
		wantMsg string
	}{
		{name: "unknown network option", method: "NetworkDriver.CreateNetwork",
			body: createNetworkBody(netID, `"zlmesh.servcie":"web"`), wantMsg: `unknown option "zlmesh.servcie"`},
		{name: "service not a DNS label", method: "NetworkDriver.CreateNetwork",
			body: createNetworkBody(netID, `"zlmesh.service":"Web_1"`), wantMsg: "service name"},
		{name: "bad mtu", method: "NetworkDriver.CreateNetwork",
			body: createNetworkBody(netID, `"com.docker.network.driver.mtu":"9"`), wantMsg: "MTU"},
		{name: "ipv6 network", method: "NetworkDriver.CreateNetwork",
			body: `{"NetworkID":"` + netID + `","Options":{"com.docker.network.enable_ipv6":true},"IPv4Data":[{"Pool":"10.200.0.0/16"}]}`, wantMsg: "IPv6"},
		{name: "docker's default ipam", method: "NetworkDriver.CreateNetwork",
			body: `{"NetworkID":"` + netID + `","Options":{},"IPv4Data":[{"AddressSpace":"LocalDefault","Pool":"172.18.0.0/16","Gateway":"172.18.0.1/16"}]}`, wantMsg: "--ipam-driver zlmesh"},
		{name: "second network of a service with other options",
			setup: func(h *harness) {
				h.ok("NetworkDriver.CreateNetwork", createNetworkBody(other, `"zlmesh.service":"web"`))
			},
			method: "NetworkDriver.CreateNetwork", body: createNetworkBody(netID, `"zlmesh.service":"web","com.docker.network.driver.mtu":"1300"`),
			wantMsg: "already maps to service web"},
		{name: "subnet other than the cluster", method: "IpamDriver.RequestPool",
			body: `{"AddressSpace":"zlmesh-local","Pool":"172.30.0.0/16","V6":false}`, wantMsg: "--subnet"},
		{name: "ip range", method: "IpamDriver.RequestPool",
			body: `{"AddressSpace":"zlmesh-local","Pool":"10.200.0.0/16","SubPool":"10.200.1.0/24"}`, wantMsg: "--ip-range"},
		{name: "ipv6 pool", method: "IpamDriver.RequestPool", body: `{"AddressSpace":"zlmesh-local","V6":true}`, wantMsg: "IPv6"},
		{name: "ipam option", method: "IpamDriver.RequestPool", body: `{"AddressSpace":"zlmesh-local","Options":{"x":"y"}}`, wantMsg: "--ipam-opt x"},
		{name: "specific address outside the node's blocks", method: "IpamDriver.RequestAddress",
			body: `{"PoolID":"zlmesh-v4","Address":"172.30.0.7"}`, wantMsg: "chosen address (172.30.0.7)"},
		{name: "specific address", method: "IpamDriver.RequestAddress",
			body: `{"PoolID":"zlmesh-v4","Address":"10.200.0.77"}`, wantMsg: "not supported"},
		{name: "gateway address", method: "IpamDriver.RequestAddress",
			body: `{"PoolID":"zlmesh-v4","Address":"10.200.0.1","Options":{"RequestAddressType":"com.docker.network.gateway"}}`, wantMsg: "--gateway"},
		{name: "foreign pool", method: "IpamDriver.RequestAddress", body: `{"PoolID":"LocalDefault/172.18.0.0/16"}`, wantMsg: "not zlmesh's"},
		{name: "endpoint on an unknown network", method: "NetworkDriver.CreateEndpoint",
			body: `{"NetworkID":"` + other + `","EndpointID":"` + epID + `","Interface":{"Address":"10.200.0.10/32"}}`, wantMsg: "not a zlmesh network"},
		{name: "endpoint with an address zlmesh did not hand out",
			setup: func(h *harness) {
				h.ok("NetworkDriver.CreateNetwork", createNetworkBody(netID, `"zlmesh.service":"web"`))
			},
			method: "NetworkDriver.CreateEndpoint",
			body:   `{"NetworkID":"` + netID + `","EndpointID":"` + epID + `","Interface":{"Address":"172.18.0.2/16"}}`, wantMsg: "not handed out"},
		{name: "endpoint without address",
			setup: func(h *harness) {
				h.ok("NetworkDriver.CreateNetwork", createNetworkBody(netID, `"zlmesh.service":"web"`))
			},
			method: "NetworkDriver.CreateEndpoint", body: `{"NetworkID":"` + netID + `","EndpointID":"` + epID + `","Interface":{}}`, wantMsg: "no address"},
		{name: "endpoint id not Docker's", method: "NetworkDriver.CreateEndpoint",
			body: `{"NetworkID":"` + netID + `","EndpointID":"../../etc","Interface":{"Address":"10.200.0.10/32"}}`, wantMsg: "not a Docker id"},
		{name: "join of an endpoint never created", method: "NetworkDriver.Join",
			body: `{"NetworkID":"` + netID + `","EndpointID":"` + epID + `","SandboxKey":"/var/run/docker/netns/x"}`, wantMsg: "never created"},
		{name: "ports of an endpoint never created", method: "NetworkDriver.ProgramExternalConnectivity",
			body: `{"NetworkID":"` + netID + `","EndpointID":"` + epID + `","Options":{}}`, wantMsg: "never created"},
		{name: "ephemeral host port",
			setup: func(h *harness) {
				h.ok("NetworkDriver.CreateNetwork", createNetworkBody(netID, `"zlmesh.service":"web"`))
				h.endpoint(netID, epID)
			},
			method: "NetworkDriver.ProgramExternalConnectivity",
			body:   `{"NetworkID":"` + netID + `","EndpointID":"` + epID + `","Options":{"com.docker.network.portmap":[{"Proto":6,"Port":80,"HostPort":0}]}}`, wantMsg: "fixed host ports"},
		{name: "second port fails: the first is withdrawn",
			setup: func(h *harness) {
				h.ok("NetworkDriver.CreateNetwork", createNetworkBody(netID, `"zlmesh.service":"web"`))
				h.endpoint(netID, epID)
				h.node.failAt = "publish"
			},
			method: "NetworkDriver.ProgramExternalConnectivity",
			body:   `{"NetworkID":"` + netID + `","EndpointID":"` + epID + `","Options":{"com.docker.network.portmap":[{"Proto":6,"Port":80,"HostPort":8080},{"Proto":17,"Port":53,"HostPort":5353}]}}`, wantMsg: "port taken"},
		{name: "plumbing fails: the lease goes",
			setup: func(h *harness) {
				h.ok("NetworkDriver.CreateNetwork", createNetworkBody(netID, `"zlmesh.service":"web"`))
				h.node.failAt = "attach"
				h.ok("IpamDriver.RequestAddress", `{"PoolID":"zlmesh-v4"}`)
			},
			method: "NetworkDriver.CreateEndpoint",
			body:   `{"NetworkID":"` + netID + `","EndpointID":"` + epID + `","Interface":{"Address":"10.200.0.10/32"}}`, wantMsg: "plumbing failed"},
		{name: "malformed JSON", method: "NetworkDriver.CreateNetwork", body: `{"NetworkID": 7`, wantMsg: "does not decode"},
		{name: "malformed JSON to IPAM", method: "IpamDriver.RequestAddress", body: `[1,2`, wantMsg: "does not decode"},
		{name: "wrong JSON types", method: "NetworkDriver.Join", body: `{"EndpointID": {"a": 1}}`, wantMsg: "does not decode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			if tc.setup != nil {
				tc.setup(h)
			}
			l0, a0, p0 := h.node.counts()
			if tc.name == "plumbing fails: the lease goes" {
				l0 = 0 // the setup's pending lease must go with the failure
			}
			st0, _ := h.store.Load()
			msg := h.fails(tc.method, tc.body)
			if !strings.Contains(msg, tc.wantMsg) {
				t.Fatalf("error %q does not say %q", msg, tc.wantMsg)
			}
			l, a, p := h.node.counts()
			if l != l0 || a != a0 || p != p0 {
				t.Fatalf("after the error: %d leases, %d attachments, %d port sets; want %d, %d, %d", l, a, p, l0, a0, p0)
			}
			if st, _ := h.store.Load(); len(st.Networks) != len(st0.Networks) {
				t.Fatalf("saved networks %v, want %v", st.Networks, st0.Networks)
			}
		})
	}
}

func TestUnknownMethod(t *testing.T) {
	h := newHarness(t)
	if st, _ := h.call("NetworkDriver.AllocateNetwork", `{}`); st != http.StatusNotFound {
		t.Fatalf("unknown method: status %d, want 404 (Docker treats it as not implemented)", st)
	}
}

// TestPendingExpires: an address no CreateEndpoint takes is released after
// the TTL, and one released by Docker at once.
func TestPendingExpires(t *testing.T) {
	h := newHarness(t)
	h.ok("IpamDriver.RequestAddress", `{"PoolID":"zlmesh-v4"}`)
	a2 := h.ok("IpamDriver.RequestAddress", `{"PoolID":"zlmesh-v4"}`)["Address"].(string)
	h.ok("IpamDriver.ReleaseAddress", fmt.Sprintf(`{"PoolID":"zlmesh-v4","Address":%q}`, strings.TrimSuffix(a2, "/32")))
	if l, _, _ := h.node.counts(); l != 1 || h.plugin.Pending() != 1 {
		t.Fatalf("after one release: %d leases, %d pending", l, h.plugin.Pending())
	}
	h.now = h.now.Add(DefaultPendingTTL - time.Second)
	h.plugin.ExpirePending()
	if l, _, _ := h.node.counts(); l != 1 {
		t.Fatalf("released before the TTL: %d leases", l)
	}
	h.now = h.now.Add(time.Second)
	h.plugin.ExpirePending()
	if l, _, _ := h.node.counts(); l != 0 || h.plugin.Pending() != 0 {
		t.Fatalf("after the TTL: %d leases, %d pending", l, h.plugin.Pending())
	}
}

// TestNamedNetwork: without -o zlmesh.service the service is the network's
// name, looked up in Docker at the first endpoint and saved; a name that is
// no DNS label is refused there.
func TestNamedNetwork(t *testing.T) {
	h := newHarness(t)
	h.ok("NetworkDriver.CreateNetwork", createNetworkBody(netID, ``))
	h.docker.names[netID] = "db"
	h.endpoint(netID, epID)
	if at, _ := h.node.Attachment(epKey); at.Service != "db" {
		t.Fatalf("service %q, want the network's name db", at.Service)
	}
	if st, _ := h.store.Load(); st.Networks[netID].Service != "db" {
		t.Fatalf("saved %v", st.Networks)
	}
	const bad = "3f0c2a8e3b4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"
	h.ok("NetworkDriver.CreateNetwork", createNetworkBody(bad, ``))
	h.docker.names[bad] = "My_Net"
	addr := h.ok("IpamDriver.RequestAddress", `{"PoolID":"zlmesh-v4"}`)["Address"].(string)
	msg := h.fails("NetworkDriver.CreateEndpoint", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":"b1b2c3d4e5f6aaaa","Interface":{"Address":%q}}`, bad, addr))
	if !strings.Contains(msg, "zlmesh.service=NAME") {
		t.Fatalf("error %q", msg)
	}
}

// TestRestart: a new Plugin over the same store knows the networks, and
// Join and DeleteEndpoint of endpoints made before work (the node keeps
// the attachments).
func TestRestart(t *testing.T) {
	h := newHarness(t)
	h.ok("NetworkDriver.CreateNetwork", createNetworkBody(netID, `"zlmesh.service":"web"`))
	h.endpoint(netID, epID)
	p2, err := New(Config{Node: h.node, Store: h.store})
	if err != nil {
		t.Fatal(err)
	}
	h.h = p2.Handler()
	h.ok("NetworkDriver.Join", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q,"SandboxKey":"/x"}`, netID, epID))
	addr := h.ok("IpamDriver.RequestAddress", `{"PoolID":"zlmesh-v4"}`)["Address"].(string)
	h.ok("NetworkDriver.CreateEndpoint", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":"c1b2c3d4e5f6aaaa","Interface":{"Address":%q}}`, netID, addr))
	h.ok("NetworkDriver.DeleteEndpoint", fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q}`, netID, epID))
}

// TestReconcile: attachments Docker no longer lists are detached (after
// the grace), listed ones and young ones stay; a network Docker lost is
// forgotten; a failing lookup detaches nothing.
func TestReconcile(t *testing.T) {
	h := newHarness(t)
	const gone = "4f0c2a8e3b4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"
	h.ok("NetworkDriver.CreateNetwork", createNetworkBody(netID, `"zlmesh.service":"web"`))
	h.ok("NetworkDriver.CreateNetwork", createNetworkBody(gone, `"zlmesh.service":"old"`))
	h.docker.names[netID] = "web"
	const kept, stale = "d1b2c3d4e5f6aaaa", "e1b2c3d4e5f6aaaa"
	h.endpoint(netID, kept)
	h.endpoint(netID, stale)
	h.docker.eps[netID] = []string{kept}
	h.now = h.now.Add(time.Minute)
	h.endpoint(netID, "f1b2c3d4e5f6aaaa") // young: between CreateEndpoint and Join

	h.docker.err = errors.New("dockerd is starting")
	if d, err := h.plugin.Reconcile(context.Background(), 30*time.Second); err == nil || len(d) != 0 {
		t.Fatalf("with a failing lookup: detached %v, err %v", d, err)
	}
	h.docker.err = nil
	d, err := h.plugin.Reconcile(context.Background(), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(d) != "[docker-e1b2c3d4e5f6]" {
		t.Fatalf("detached %v, want only the stale one", d)
	}
	var left []string
	for _, at := range h.node.Attachments() {
		left = append(left, at.Container)
	}
	sort.Strings(left)
	if fmt.Sprint(left) != "[docker-d1b2c3d4e5f6 docker-f1b2c3d4e5f6]" {
		t.Fatalf("left %v", left)
	}
	if st, _ := h.store.Load(); len(st.Networks) != 1 {
		t.Fatalf("networks after reconcile: %v", st.Networks)
	}
}

// TestKeepBridges: the node hears the services of the saved networks at
// start and after each change: a network with -o zlmesh.service at its
// create, a network named after itself at its first endpoint, one
// service for two networks once, nothing more after they are deleted or
// Docker lost them; a restarted plugin tells the saved set.
func TestKeepBridges(t *testing.T) {
	h := newHarness(t)
	step := func(what, want string) {
		t.Helper()
		if got := h.node.lastKept(); got != want {
			t.Fatalf("%s: kept %s, want %s", what, got, want)
		}
	}
	step("at start", "[]")
	const named, second, lost = "5f0c2a8e3b4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f",
		"6f0c2a8e3b4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f", "7f0c2a8e3b4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"
	h.ok("NetworkDriver.CreateNetwork", createNetworkBody(netID, `"zlmesh.service":"web"`))
	step("network web created", "[web]")
	h.ok("NetworkDriver.CreateNetwork", createNetworkBody(named, ``))
	step("network named after itself created", "[web]")
	h.docker.names[named] = "db"
	h.docker.eps[named] = nil
	h.endpoint(named, epID)
	step("its first endpoint", "[db web]")
	h.ok("NetworkDriver.CreateNetwork", createNetworkBody(second, `"zlmesh.service":"web"`))
	step("a second network of web", "[db web]")
	h.ok("NetworkDriver.DeleteNetwork", fmt.Sprintf(`{"NetworkID":%q}`, netID))
	step("one of web's networks deleted", "[db web]")
	h.ok("NetworkDriver.DeleteNetwork", fmt.Sprintf(`{"NetworkID":%q}`, second))
	step("the other deleted", "[db]")
	h.ok("NetworkDriver.CreateNetwork", createNetworkBody(lost, `"zlmesh.service":"old"`))
	step("network old created", "[db old]")
	p2, err := New(Config{Node: h.node, Docker: h.docker, Store: h.store})
	if err != nil {
		t.Fatal(err)
	}
	step("restarted", "[db old]")
	h.docker.eps[named] = []string{epID}
	if _, err := p2.Reconcile(context.Background(), time.Minute); err != nil {
		t.Fatal(err)
	}
	step("Docker lost network old", "[db]")
}

func TestContainerKey(t *testing.T) {
	cases := []struct {
		id   string
		want string
		ok   bool
	}{
		{epID, epKey, true},
		{"0123456789ab", "docker-0123456789ab", true},
		{"0123456789a", "", false},
		{"0123456789AB", "", false},
		{"../0123456789ab", "", false},
		{"", "", false},
	}
	for _, tc := range cases {
		got, ok := ContainerKey(tc.id)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ContainerKey(%q) = %q %v, want %q %v", tc.id, got, ok, tc.want, tc.ok)
		}
	}
}

func TestFileStore(t *testing.T) {
	fs := FileStore{Path: t.TempDir() + "/docker.json"}
	st, err := fs.Load()
	if err != nil || len(st.Networks) != 0 {
		t.Fatalf("empty load: %v %v", st, err)
	}
	st.Networks["n1"] = Network{Service: "web", MTU: 1400}
	if err := fs.Save(st); err != nil {
		t.Fatal(err)
	}
	got, err := fs.Load()
	if err != nil || got.Networks["n1"] != st.Networks["n1"] {
		t.Fatalf("load after save: %v %v", got, err)
	}
}

// FuzzHandler posts arbitrary bodies to every method: the plugin answers
// 200 or 400 with a JSON body, never panics, and whatever it accepted it
// can undo (a fresh harness per input keeps the cases apart).
func FuzzHandler(f *testing.F) {
	methods := []string{
		"NetworkDriver.CreateNetwork", "NetworkDriver.DeleteNetwork", "NetworkDriver.CreateEndpoint",
		"NetworkDriver.EndpointOperInfo", "NetworkDriver.DeleteEndpoint", "NetworkDriver.Join", "NetworkDriver.Leave",
		"NetworkDriver.ProgramExternalConnectivity", "NetworkDriver.RevokeExternalConnectivity", "NetworkDriver.DiscoverNew",
		"IpamDriver.RequestPool", "IpamDriver.ReleasePool", "IpamDriver.RequestAddress", "IpamDriver.ReleaseAddress",
	}
	f.Add(uint8(0), createNetworkBody(netID, `"zlmesh.service":"web"`))
	f.Add(uint8(2), `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`","Interface":{"Address":"10.200.0.10/32"}}`)
	f.Add(uint8(7), `{"NetworkID":"x","EndpointID":"`+epID+`","Options":{"com.docker.network.portmap":[{"Proto":6,"Port":80,"HostPort":8080}]}}`)
	f.Add(uint8(12), `{"PoolID":"zlmesh-v4","Address":"10.200.0.9"}`)
	f.Add(uint8(10), `{"Pool":"10.200.0.0/16","Options":{"a":"b"}}`)
	f.Add(uint8(5), `null`)
	f.Fuzz(func(t *testing.T, m uint8, body string) {
		h := newHarness(t)
		// Set up a network and an endpoint so later methods reach their logic.
		h.post("NetworkDriver.CreateNetwork", createNetworkBody(netID, `"zlmesh.service":"web"`))
		resp := h.post(methods[int(m)%len(methods)], body)
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d", resp.StatusCode)
		}
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("answer does not decode: %v", err)
		}
	})
}

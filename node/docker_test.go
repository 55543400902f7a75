package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/zlmesh/zlmesh/bridge"
	"github.com/zlmesh/zlmesh/dockerplugin"
	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/ipam/ipamtest"
)

// failingContainers is fakeContainers whose Attach fails when fail is set.
type failingContainers struct {
	*fakeContainers
	fail  bool
	specs []ContainerSpec
}

func (f *failingContainers) Attach(ctx context.Context, s ContainerSpec) (Plumbed, error) {
	f.specs = append(f.specs, s)
	if f.fail {
		return Plumbed{}, fmt.Errorf("create veth: %w", bridge.ErrExists)
	}
	a, err := f.fakeContainers.Attach(ctx, s)
	a.NetnsID = NamespaceID{}
	return a, err
}

// dockerTestNode is portsNode with an allocator over one block, journaled
// attachments and fake plumbing, and the plugin over it.
func dockerTestNode(t *testing.T) (*Node, *failingContainers, *fakeNAT, http.Handler) {
	t.Helper()
	n, nat := portsNode(t, false, nil, nil)
	alloc, err := ipam.NewAllocator(ipamtest.NewStore(), n.pool)
	if err != nil {
		t.Fatal(err)
	}
	if err := alloc.SetClaims(n.claims); err != nil {
		t.Fatal(err)
	}
	n.alloc = alloc
	if n.attach, err = loadAttachments(n.cfg.StateDir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.attach.close)
	fc := &failingContainers{fakeContainers: &fakeContainers{}}
	n.containers, n.metrics, n.cfg.MTU = fc, newMetrics(), 1420
	p, err := dockerplugin.New(dockerplugin.Config{Node: dockerNode{n}})
	if err != nil {
		t.Fatal(err)
	}
	return n, fc, nat, p.Handler()
}

func dockerCall(t *testing.T, h http.Handler, method, body string) map[string]any {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/"+method, strings.NewReader(body)))
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s: %v: %s", method, err, rec.Body.String())
	}
	return out
}

// TestDockerPipeline: Docker's calls end in the node's attach pipeline: the
// IPAM lease is renamed to the endpoint's container, the plumbing gets the
// HostPeer form with the lease's /32 and the link-local gateway, the
// attachment and its service record are made, -p becomes a published port
// in NAT, and DeleteEndpoint takes all of it away. A failing plumbing step
// leaves no lease.
func TestDockerPipeline(t *testing.T) {
	n, fc, nat, h := dockerTestNode(t)
	const net = "1f0c2a8e3b4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"
	const ep = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	const key = "docker-a1b2c3d4e5f6"
	pool := dockerCall(t, h, "IpamDriver.RequestPool", `{"AddressSpace":"zlmesh-local"}`)
	if pool["Pool"] != "0.0.0.0/0" || pool["Data"].(map[string]any)["com.docker.network.gateway"] != "169.254.1.1/32" {
		t.Fatalf("RequestPool: %v", pool)
	}
	if out := dockerCall(t, h, "NetworkDriver.CreateNetwork", `{"NetworkID":"`+net+`","Options":{"com.docker.network.generic":{"zlmesh.service":"web"}},"IPv4Data":[{"Pool":"10.200.0.0/16","Gateway":"169.254.1.1/32"}]}`); out["Err"] != nil {
		t.Fatalf("CreateNetwork: %v", out)
	}
	addr := dockerCall(t, h, "IpamDriver.RequestAddress", `{"PoolID":"zlmesh-v4"}`)["Address"].(string)
	if l := n.alloc.Leases(); len(l) != 1 || l[0].Service != pendingService || hostPrefix(l[0].Addr).String() != addr {
		t.Fatalf("after RequestAddress: leases %+v, answer %s", l, addr)
	}
	if out := dockerCall(t, h, "NetworkDriver.CreateEndpoint", `{"NetworkID":"`+net+`","EndpointID":"`+ep+`","Interface":{"Address":"`+addr+`"}}`); out["Err"] != nil {
		t.Fatalf("CreateEndpoint: %v", out)
	}
	if l, ok := n.alloc.Lease(key); !ok || l.Service != "web" || hostPrefix(l.Addr).String() != addr || len(n.alloc.Leases()) != 1 {
		t.Fatalf("lease after CreateEndpoint: %+v %v (all: %+v)", l, ok, n.alloc.Leases())
	}
	want := ContainerSpec{Service: "web", Container: key, Ifname: "eth0", Address: netip.MustParsePrefix(addr),
		Gateway: netip.MustParsePrefix("169.254.1.1/32"), MTU: 1420, HostPeer: bridge.HostPeerName(key)}
	if len(fc.specs) != 1 || fc.specs[0] != want {
		t.Fatalf("plumbing got %+v, want %+v", fc.specs, want)
	}
	if recs := n.mesh.Store().List(serviceKind); len(recs) != 1 {
		t.Fatalf("service records: %v", recs)
	}
	join := dockerCall(t, h, "NetworkDriver.Join", `{"NetworkID":"`+net+`","EndpointID":"`+ep+`","SandboxKey":"/var/run/docker/netns/x"}`)
	if join["InterfaceName"].(map[string]any)["SrcName"] != bridge.HostPeerName(key) || join["Gateway"] != "169.254.1.1" {
		t.Fatalf("Join: %v", join)
	}
	if out := dockerCall(t, h, "NetworkDriver.ProgramExternalConnectivity", `{"NetworkID":"`+net+`","EndpointID":"`+ep+`","Options":{"com.docker.network.portmap":[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]}}`); out["Err"] != nil {
		t.Fatalf("ProgramExternalConnectivity: %v", out)
	}
	target := strings.TrimSuffix(addr, "/32") + ":80"
	if got, _ := nat.last(); !slices.Equal(got, []string{"tcp *:8080 → " + target}) {
		t.Fatalf("NAT after -p 8080:80: %v", got)
	}
	if out := dockerCall(t, h, "NetworkDriver.DeleteEndpoint", `{"NetworkID":"`+net+`","EndpointID":"`+ep+`"}`); out["Err"] != nil {
		t.Fatalf("DeleteEndpoint: %v", out)
	}
	if len(n.alloc.Leases()) != 0 || len(n.attach.list()) != 0 || len(n.mesh.Store().List(serviceKind)) != 0 {
		t.Fatalf("after DeleteEndpoint: leases %v, attachments %v", n.alloc.Leases(), n.attach.list())
	}
	if got, _ := nat.last(); len(got) != 0 {
		t.Fatalf("NAT after DeleteEndpoint: %v", got)
	}

	fc.fail = true
	addr = dockerCall(t, h, "IpamDriver.RequestAddress", `{"PoolID":"zlmesh-v4"}`)["Address"].(string)
	out := dockerCall(t, h, "NetworkDriver.CreateEndpoint", `{"NetworkID":"`+net+`","EndpointID":"`+ep+`","Interface":{"Address":"`+addr+`"}}`)
	if msg, _ := out["Err"].(string); !strings.Contains(msg, "already exists") {
		t.Fatalf("CreateEndpoint with failing plumbing: %v", out)
	}
	if len(n.alloc.Leases()) != 0 || len(n.attach.list()) != 0 {
		t.Fatalf("after a failed CreateEndpoint: leases %v, attachments %v", n.alloc.Leases(), n.attach.list())
	}
}

// Unreserve never releases the lease of an attached container.
func TestDockerUnreserveKeepsAttached(t *testing.T) {
	n, _, _, _ := dockerTestNode(t)
	d := dockerNode{n}
	a, err := d.Reserve("docker-ipam-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Attach(context.Background(), dockerplugin.Endpoint{Container: "docker-0123456789ab", Service: "web", Reserved: "docker-ipam-1"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Unreserve("docker-0123456789ab"); err != nil {
		t.Fatal(err)
	}
	if l, ok := n.alloc.Lease("docker-0123456789ab"); !ok || l.Addr != a {
		t.Fatalf("lease %+v %v after Unreserve of an attached container", l, ok)
	}
	if err := d.Unreserve("docker-ipam-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Attach(context.Background(), dockerplugin.Endpoint{Container: "docker-0123456789ac", Service: "web", Reserved: "docker-ipam-none"}); err == nil {
		t.Fatal("attach with a lease that does not exist succeeded")
	}
}

// TestDockerPipelineIPv6: with IPv6 on, a Docker container gets its IPv6
// twin like any other: the plumbing's HostPeer spec carries it,
// CreateEndpoint answers it (Docker puts it on the interface), Join names
// the IPv6 gateway with its connected route, the service record has it
// (AAAA) and -p targets it too.
func TestDockerPipelineIPv6(t *testing.T) {
	n, fc, nat, h := dockerTestNode(t)
	twins, err := ipam.NewTwins(n.pool, netip.MustParsePrefix("fd12:3456:789a::/48"))
	if err != nil {
		t.Fatal(err)
	}
	n.twins = twins
	const net = "1f0c2a8e3b4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"
	const ep = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	const key = "docker-a1b2c3d4e5f6"
	if out := dockerCall(t, h, "NetworkDriver.CreateNetwork", `{"NetworkID":"`+net+`","Options":{"com.docker.network.generic":{"zlmesh.service":"web"}},"IPv4Data":[{"Pool":"0.0.0.0/0","Gateway":"169.254.1.1/32"}]}`); out["Err"] != nil {
		t.Fatalf("CreateNetwork: %v", out)
	}
	addr := dockerCall(t, h, "IpamDriver.RequestAddress", `{"PoolID":"zlmesh-v4"}`)["Address"].(string)
	a6, ok := twins.Addr(netip.MustParsePrefix(addr).Addr())
	if !ok {
		t.Fatalf("no twin of %s", addr)
	}
	out := dockerCall(t, h, "NetworkDriver.CreateEndpoint", `{"NetworkID":"`+net+`","EndpointID":"`+ep+`","Interface":{"Address":"`+addr+`","AddressIPv6":""}}`)
	if got := fmt.Sprint(out["Interface"]); got != "map[Address: AddressIPv6:"+a6.String()+"/128 MacAddress:]" {
		t.Fatalf("CreateEndpoint: %v, want the twin %s/128", out, a6)
	}
	if len(fc.specs) != 1 || fc.specs[0].Address6 != netip.PrefixFrom(a6, 128) || fc.specs[0].HostPeer != bridge.HostPeerName(key) {
		t.Fatalf("plumbing got %+v, want the HostPeer form with address6 %s/128", fc.specs, a6)
	}
	join := dockerCall(t, h, "NetworkDriver.Join", `{"NetworkID":"`+net+`","EndpointID":"`+ep+`","SandboxKey":"/var/run/docker/netns/x"}`)
	if join["GatewayIPv6"] != "fe80::1" || !strings.Contains(fmt.Sprint(join["StaticRoutes"]), "fe80::1/128") {
		t.Fatalf("Join: %v", join)
	}
	if svc := n.Services(); len(svc) != 1 || svc[0].Address6 != a6.String() {
		t.Fatalf("services: %+v, want %s", svc, a6)
	}
	if out := dockerCall(t, h, "NetworkDriver.ProgramExternalConnectivity", `{"NetworkID":"`+net+`","EndpointID":"`+ep+`","Options":{"com.docker.network.portmap":[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]}}`); out["Err"] != nil {
		t.Fatalf("ProgramExternalConnectivity: %v", out)
	}
	if got, _ := nat.last(); len(got) != 1 || !strings.Contains(got[0], "["+a6.String()+"]:80") {
		t.Fatalf("NAT after -p 8080:80: %v, want a target at [%s]:80", got, a6)
	}
	if out := dockerCall(t, h, "NetworkDriver.DeleteEndpoint", `{"NetworkID":"`+net+`","EndpointID":"`+ep+`"}`); out["Err"] != nil {
		t.Fatalf("DeleteEndpoint: %v", out)
	}
	if out := dockerCall(t, h, "IpamDriver.ReleaseAddress", `{"PoolID":"","Address":"`+a6.String()+`"}`); out["Error"] != nil && out["Error"] != "" {
		t.Fatalf("ReleaseAddress of the IPv6 address (libnetwork's releaseAddress): %v", out)
	}
	if len(n.alloc.Leases()) != 0 || len(n.attach.list()) != 0 {
		t.Fatalf("after DeleteEndpoint: leases %v, attachments %v", n.alloc.Leases(), n.attach.list())
	}
}

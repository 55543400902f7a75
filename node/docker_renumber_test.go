package node

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/ipam"
)

// TestDockerRenumber: a Docker container whose block is lost to another
// node cannot be readdressed (Docker moved its interface and keeps the
// address itself): it is detached, with its lease, service record and
// published ports, and a detach event says to restart it; it never keeps
// an address the block's winner gives out.
func TestDockerRenumber(t *testing.T) {
	n, _, nat, h := dockerTestNode(t)
	const net = "1f0c2a8e3b4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"
	const ep = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	const key = "docker-a1b2c3d4e5f6"
	dockerCall(t, h, "NetworkDriver.CreateNetwork", `{"NetworkID":"`+net+`","Options":{"com.docker.network.generic":{"zlmesh.service":"web"}},"IPv4Data":[{"Pool":"0.0.0.0/0"}]}`)
	addr := dockerCall(t, h, "IpamDriver.RequestAddress", `{"PoolID":"zlmesh-v4"}`)["Address"].(string)
	if out := dockerCall(t, h, "NetworkDriver.CreateEndpoint", `{"NetworkID":"`+net+`","EndpointID":"`+ep+`","Interface":{"Address":"`+addr+`"}}`); out["Err"] != nil {
		t.Fatal(out)
	}
	dockerCall(t, h, "NetworkDriver.ProgramExternalConnectivity", `{"NetworkID":"`+net+`","EndpointID":"`+ep+`","Options":{"com.docker.network.portmap":[{"Proto":6,"Port":80,"HostPort":8080}]}}`)
	evs, _, cancel := n.events.subscribe()
	defer cancel()
	old := netip.MustParsePrefix(addr).Addr()
	n.renumberMu.Lock()
	n.renumberContainers([]ipam.Move{{Old: ipam.Lease{Service: "web", Container: key, Addr: old},
		New: ipam.Lease{Service: "web", Container: key, Addr: netip.MustParseAddr("10.200.9.2")}}})
	n.renumberMu.Unlock()
	if _, ok := n.attach.get(key); ok {
		t.Fatal("the Docker container is still attached after losing its block")
	}
	if l := n.alloc.Leases(); len(l) != 0 {
		t.Fatalf("leases left: %+v", l)
	}
	if recs := n.mesh.Store().List(serviceKind); len(recs) != 0 {
		t.Fatalf("service records left: %v", recs)
	}
	if got, _ := nat.last(); len(got) != 0 {
		t.Fatalf("ports left: %v", got)
	}
	ev := <-evs
	for ev.Type == api.EventUnpub {
		ev = <-evs
	}
	if ev.Type != api.EventDetach || ev.Container != key || ev.Address != old.String() || !strings.Contains(ev.Message, "restart the container") {
		t.Fatalf("event %+v", ev)
	}
}

package node

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/zlmesh/zlmesh/dockerplugin"
)

// TestDockerBadInput sends the bad requests through a real node's
// pipeline (fake plumbing and NAT only): each gets a Docker-shaped error
// ({"Err": ...} from the network driver and for anything that does not
// decode, {"Error": ...} from IPAM) and leaves what the node holds as it
// was: leases, attachments, service records, plumbing calls, published
// ports and the saved networks.
func TestDockerBadInput(t *testing.T) {
	const (
		net   = "1f0c2a8e3b4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"
		net2  = "2f0c2a8e3b4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"
		ep    = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
		ep2   = "b1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
		ipv4  = `"IPv4Data":[{"AddressSpace":"zlmesh-local","Gateway":"169.254.1.1/32","Pool":"0.0.0.0/0"}]`
		webNW = `{"NetworkID":"` + net + `","Options":{"com.docker.network.generic":{"zlmesh.service":"web"}},` + ipv4 + `}`
	)
	type call struct{ method, body string }
	// endpoint is RequestAddress and CreateEndpoint of ep on net (the
	// address is filled in by the test).
	endpoint := []call{{"IpamDriver.RequestAddress", `{"PoolID":"zlmesh-v4"}`},
		{"NetworkDriver.CreateEndpoint", `{"NetworkID":"` + net + `","EndpointID":"` + ep + `","Interface":{"Address":"%s"}}`}}
	cases := []struct {
		name  string
		setup []call
		bad   call
		want  string
	}{
		{"unknown network option", nil,
			call{"NetworkDriver.CreateNetwork", `{"NetworkID":"` + net + `","Options":{"com.docker.network.generic":{"zlmesh.bogus":"1"}},` + ipv4 + `}`},
			`unknown option "zlmesh.bogus"`},
		{"second network of a service with another MTU", []call{{"NetworkDriver.CreateNetwork", webNW}},
			call{"NetworkDriver.CreateNetwork", `{"NetworkID":"` + net2 + `","Options":{"com.docker.network.generic":{"zlmesh.service":"web","com.docker.network.driver.mtu":"1300"}},` + ipv4 + `}`},
			"already maps to service web"},
		{"specific address outside the cluster", []call{{"NetworkDriver.CreateNetwork", webNW}},
			call{"IpamDriver.RequestAddress", `{"PoolID":"zlmesh-v4","Address":"172.30.0.7"}`}, "chosen address (172.30.0.7)"},
		{"specific address in another node's block", []call{{"NetworkDriver.CreateNetwork", webNW}},
			call{"IpamDriver.RequestAddress", `{"PoolID":"zlmesh-v4","Address":"10.200.9.9"}`}, "chosen address (10.200.9.9)"},
		{"specific address in the node's block", []call{{"NetworkDriver.CreateNetwork", webNW}},
			call{"IpamDriver.RequestAddress", `{"PoolID":"zlmesh-v4","Address":"10.200.1.5"}`}, "chosen address (10.200.1.5)"},
		{"join of an endpoint never created", []call{{"NetworkDriver.CreateNetwork", webNW}},
			call{"NetworkDriver.Join", `{"NetworkID":"` + net + `","EndpointID":"` + ep2 + `","SandboxKey":"/var/run/docker/netns/x"}`}, "never created"},
		{"join of an endpoint never created, another attached", append([]call{{"NetworkDriver.CreateNetwork", webNW}}, endpoint...),
			call{"NetworkDriver.Join", `{"NetworkID":"` + net + `","EndpointID":"` + ep2 + `","SandboxKey":"/var/run/docker/netns/x"}`}, "never created"},
		{"endpoint with an address zlmesh did not hand out", []call{{"NetworkDriver.CreateNetwork", webNW}},
			call{"NetworkDriver.CreateEndpoint", `{"NetworkID":"` + net + `","EndpointID":"` + ep + `","Interface":{"Address":"10.200.1.9/32"}}`}, "not handed out"},
		{"endpoint again with another address", append([]call{{"NetworkDriver.CreateNetwork", webNW}}, endpoint...),
			call{"NetworkDriver.CreateEndpoint", `{"NetworkID":"` + net + `","EndpointID":"` + ep + `","Interface":{"Address":"10.200.1.60/32"}}`}, "attached already"},
		{"malformed JSON to the network driver", []call{{"NetworkDriver.CreateNetwork", webNW}},
			call{"NetworkDriver.CreateEndpoint", `{"NetworkID":"` + net + `","EndpointID":`}, "does not decode"},
		{"malformed JSON to IPAM", nil, call{"IpamDriver.RequestAddress", `{"PoolID":`}, "does not decode"},
		{"JSON of the wrong shape", nil, call{"NetworkDriver.CreateNetwork", `["NetworkID"]`}, "does not decode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, fc, nat, _ := dockerTestNode(t)
			store := &dockerplugin.MemStore{}
			p, err := dockerplugin.New(dockerplugin.Config{Node: dockerNode{n}, Store: store})
			if err != nil {
				t.Fatal(err)
			}
			h := p.Handler()
			post := func(c call) (int, map[string]any) {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/"+c.method, strings.NewReader(c.body)))
				out := map[string]any{}
				dockerDecode(t, rec.Body.String(), &out)
				return rec.Code, out
			}
			var addr string
			for _, c := range tc.setup {
				if strings.Contains(c.body, "%s") {
					c.body = fmt.Sprintf(c.body, addr)
				}
				st, out := post(c)
				if st != http.StatusOK || out["Err"] != nil || out["Error"] != nil {
					t.Fatalf("setup %s: %d %v", c.method, st, out)
				}
				if a, ok := out["Address"].(string); ok {
					addr = a
				}
			}
			before := dockerNodeState(n, fc, nat, store)
			st, out := post(tc.bad)
			field := "Err"
			if strings.HasPrefix(tc.bad.method, "IpamDriver.") && st == http.StatusOK {
				field = "Error" // libnetwork's remote IPAM answer
			}
			msg, _ := out[field].(string)
			if !strings.Contains(msg, tc.want) || len(out) != 1 {
				t.Fatalf("%s: status %d, answer %v: want only %q saying %q", tc.bad.method, st, out, field, tc.want)
			}
			if after := dockerNodeState(n, fc, nat, store); !reflect.DeepEqual(after, before) {
				t.Fatalf("the bad request changed the node:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
}

func dockerDecode(t *testing.T, body string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("answer %q is not JSON: %v", body, err)
	}
}

// dockerNodeState is what a bad request must leave as it was.
func dockerNodeState(n *Node, fc *failingContainers, nat *fakeNAT, store *dockerplugin.MemStore) string {
	var b strings.Builder
	for _, l := range n.alloc.Leases() {
		fmt.Fprintf(&b, "lease %s %s %s; ", l.Container, l.Service, l.Addr)
	}
	for _, at := range n.attach.list() {
		fmt.Fprintf(&b, "attachment %s %s; ", at.Spec.Container, at.Spec.Address)
	}
	fmt.Fprintf(&b, "records %d; plumbed %d; ", len(n.mesh.Store().List(serviceKind)), len(fc.specs))
	ports, _ := nat.last()
	fmt.Fprintf(&b, "nat %v; ", ports)
	st, _ := store.Load()
	fmt.Fprintf(&b, "networks %v", st.Networks)
	return b.String()
}

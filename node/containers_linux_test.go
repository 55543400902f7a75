package node

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/zlmesh/zlmesh/bridge"
)

// bridgeSpec hands bridge every field it has: a field added to bridge.Spec
// and not filled from ContainerSpec fails here.
func TestBridgeSpecFillsEveryField(t *testing.T) {
	s := ContainerSpec{Service: "web", Container: "c1", Netns: "/run/netns/c1", PID: 42, Ifname: "eth1",
		Address: netip.MustParsePrefix("10.200.3.34/32"), Gateway: netip.MustParsePrefix("169.254.1.1/32"),
		Address6: netip.MustParsePrefix("fd7a:5c00:1:3::22/128"), MTU: 1420, HostPeer: "zlcx"}
	b := reflect.ValueOf(bridgeSpec(s))
	for i := range b.NumField() {
		if b.Field(i).IsZero() {
			t.Errorf("bridge.Spec.%s is not filled from ContainerSpec", b.Type().Field(i).Name)
		}
	}
	want := bridge.Spec{Service: s.Service, Container: s.Container, Netns: s.Netns, PID: s.PID, Ifname: s.Ifname,
		Address: s.Address, Gateway: s.Gateway, Address6: s.Address6, MTU: s.MTU, HostPeer: s.HostPeer}
	if got := bridgeSpec(s); got != want {
		t.Errorf("bridgeSpec = %+v, want %+v", got, want)
	}
}

// What bridge made and its inventory reach the node whole.
func TestBridgeConversions(t *testing.T) {
	a := bridge.Attached{Bridge: "zlb-web", HostVeth: "zlvx", NetnsID: bridge.NetnsID{Dev: 4, Ino: 9}, Repairs: []string{"r"}}
	if got, want := plumbed(a), (Plumbed{Bridge: "zlb-web", HostVeth: "zlvx", NetnsID: NamespaceID{Dev: 4, Ino: 9}, Repairs: []string{"r"}}); !reflect.DeepEqual(got, want) {
		t.Errorf("plumbed = %+v, want %+v", got, want)
	}
	dst := netip.MustParsePrefix("10.200.3.34/32")
	inv := bridge.Inventory{
		Bridges: []bridge.BridgeInfo{{Name: "zlb-web", Service: "web", Up: true}},
		Veths:   []bridge.VethInfo{{Name: "zlvx", Container: "c1", Master: "zlb-web"}, {Name: "zlpy", Stray: true}},
		Routes:  []bridge.RouteInfo{{Dst: dst, Bridge: "zlb-web"}},
	}
	want := ContainerInventory{
		Links:   []PlumbingLink{{Name: "zlvx", Container: "c1"}, {Name: "zlpy", Stray: true}},
		Routes:  []PlumbingRoute{{Dst: dst, Bridge: "zlb-web"}},
		Bridges: []string{"zlb-web"},
	}
	if got := containerInventory(inv); !reflect.DeepEqual(got, want) {
		t.Errorf("containerInventory = %+v, want %+v", got, want)
	}
}

//go:build linux

package bridge

import (
	"context"
	"net/netip"
	"slices"
	"testing"
)

// TestKeepBridges: a kept service's bridge stays when its last port
// detaches (without its host route), serves the next attach as it is, and
// goes with RemoveBridgeIfEmpty once no longer kept; a service not kept
// loses its bridge with its last port as before.
func TestKeepBridges(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	spec := func(service, id, addr string) Spec {
		a := netip.MustParsePrefix(addr)
		return Spec{Service: service, Container: id, HostPeer: HostPeerName(id), Address: a, Gateway: GatewayFor(a.Addr()), MTU: 1400}
	}
	if got := e.m.KeepBridges([]string{"web", "Not_A_Service"}); len(got) != 0 {
		t.Fatalf("KeepBridges on an empty set released %v", got)
	}
	exists := func(name string) bool {
		_, err := e.host.NL.LinkByName(name)
		return err == nil
	}
	web1, db1 := spec("web", "docker-a1b2c3d4e5f6", "10.200.1.40/32"), spec("db", "docker-b1b2c3d4e5f6", "10.200.1.41/32")
	for _, s := range []Spec{web1, db1} {
		if _, err := e.m.Attach(ctx, s); err != nil {
			t.Fatal(err)
		}
		if err := e.m.Detach(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if !exists("zlb-web") || exists("zlb-db") {
		t.Fatalf("after the last detach: zlb-web exists %v (kept, want true), zlb-db exists %v (want false)", exists("zlb-web"), exists("zlb-db"))
	}
	checkHostRoutes(t, e, "zlb-web")
	web2 := spec("web", "docker-c1b2c3d4e5f6", "10.200.1.42/32")
	made, err := e.m.Attach(ctx, web2)
	if err != nil {
		t.Fatal(err)
	}
	checkBridge(t, e, "zlb-web", web2.Gateway, made.HostVeth)
	checkHostRoutes(t, e, "zlb-web", web2.Address)
	if err := e.m.Detach(ctx, web2); err != nil {
		t.Fatal(err)
	}
	if got := e.m.KeepBridges(nil); !slices.Equal(got, []string{"zlb-web"}) {
		t.Fatalf("KeepBridges(nil) released %v, want [zlb-web]", got)
	}
	if ok, err := e.m.RemoveBridgeIfEmpty("zlb-web"); err != nil || !ok || exists("zlb-web") {
		t.Fatalf("RemoveBridgeIfEmpty(zlb-web) = %v, %v; exists after: %v", ok, err, exists("zlb-web"))
	}
}

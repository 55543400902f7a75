package node

import (
	"encoding/json"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/mesh"
	"github.com/zlmesh/zlmesh/mesh/meshtest"
)

// TestDNSSnapshotTwins: the mesh DNS gets an IPv6 address (AAAA) for a
// node that runs IPv6 with our prefix and for a container whose service
// record carries one; not for a node with IPv6 off or another prefix, nor
// for a container without (IPv6 off, Docker, older releases), nor for a
// guest of a node with IPv6 off. A record
// written before IPv6 is rewritten with the attachment's IPv6 address.
func TestDNSSnapshotTwins(t *testing.T) {
	pool, err := ipam.NewPool(netip.MustParsePrefix("10.200.0.0/16"), 26)
	if err != nil {
		t.Fatal(err)
	}
	twins, err := ipam.NewTwins(pool, netip.MustParsePrefix("fd12:3456:789a::/48"))
	if err != nil {
		t.Fatal(err)
	}
	mine6 := twins.Cluster6().String()
	network := meshtest.NewNetwork()
	start := func(name, overlay, cluster6 string, join []string) *mesh.Mesh {
		m, err := mesh.Start(mesh.Config{Name: name, Transport: network.NewTransport(name), Logger: slog.New(slog.DiscardHandler),
			Join: join, Meta: mesh.Meta{OverlayIP: overlay, Cluster6: cluster6}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Shutdown() })
		return m
	}
	h1 := start("h1", "10.200.1.1", mine6, nil)
	seed := []string{h1.Addr().String()}
	start("h2", "10.200.2.1", mine6, seed)
	start("h3", "10.200.3.1", "", seed)              // --ipv6=false
	start("h4", "10.200.4.1", "fd00:1:2::/48", seed) // another prefix
	for deadline := time.Now().Add(10 * time.Second); len(h1.Members()) < 4; {
		if time.Now().After(deadline) {
			t.Fatalf("h1 sees %d members, want 4", len(h1.Members()))
		}
		time.Sleep(10 * time.Millisecond)
	}

	dir := t.TempDir()
	n := &Node{
		cfg:    Config{Name: "h1", StateDir: dir},
		log:    slog.New(slog.DiscardHandler),
		pool:   pool,
		twins:  twins,
		mesh:   h1,
		attach: &attachments{path: filepath.Join(dir, attachFile), byID: map[string]attachment{}, busy: map[string]bool{}},
	}
	web1 := attachment{Spec: ContainerSpec{Container: "web1", Service: "web",
		Address: netip.MustParsePrefix("10.200.1.10/32"), Address6: netip.MustParsePrefix("fd12:3456:789a:4::a/128")}}
	n.attach.byID["web1"] = web1
	// web1's record as the release before IPv6 wrote it; a Docker endpoint
	// (no IPv6 address) beside it.
	old, _ := json.Marshal(api.ServiceEndpoint{Service: "web", Container: "web1", Address: "10.200.1.10", Node: "h1"})
	h1.Store().Put(serviceKind, n.serviceKey("web1"), old)
	n.attach.byID["docker-1"] = attachment{Spec: ContainerSpec{Container: "docker-1", Service: "web", HostPeer: "veth1",
		Address: netip.MustParsePrefix("10.200.1.11/32")}}

	// Guests of h1 (IPv6 on: its twin) and of h3 (off: none).
	for _, g := range []api.GuestRecord{{Name: "laptop", Address: "10.200.1.20", Node: "h1"}, {Name: "phone", Address: "10.200.3.20", Node: "h3"}} {
		v, _ := json.Marshal(g)
		h1.Store().Put(guestKind, g.Name, v)
	}

	n.syncServiceRecords()
	snap := n.dnsSnapshot()

	want6 := map[string]string{
		"h1": "fd12:3456:789a:4::1", "h2": "fd12:3456:789a:8::1", "h3": "invalid IP", "h4": "invalid IP",
		"web1": "fd12:3456:789a:4::a", "docker-1": "invalid IP",
		"laptop": "fd12:3456:789a:4::14", "phone": "invalid IP",
	}
	got6 := map[string]string{}
	for _, nr := range snap.Nodes {
		got6[nr.Name] = nr.Addr6.String()
	}
	for _, ep := range snap.Endpoints {
		got6[ep.Container] = ep.Addr6.String()
	}
	for _, g := range snap.Guests {
		got6[g.Name] = g.Addr6.String()
	}
	for name, want := range want6 {
		if got6[name] != want {
			t.Errorf("%s: IPv6 address %s, want %s", name, got6[name], want)
		}
	}
}

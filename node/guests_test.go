package node

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/ipam/disk"
	"github.com/zlmesh/zlmesh/mesh"
	"github.com/zlmesh/zlmesh/mesh/meshtest"
	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// guestsNode is the part of a Node that guests use, over dir: an in-memory
// mesh of one, a claimer over pool (cluster, blocks of blockBits), the
// allocator and the guests' state in dir, and a wireguard-go device on a
// channel TUN.
func guestsNode(t *testing.T, dir, cluster string, blockBits int) *Node {
	t.Helper()
	pool, err := ipam.NewPool(netip.MustParsePrefix(cluster), blockBits)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := loadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	store := disk.New(filepath.Join(dir, ipamFile), blockBits)
	t.Cleanup(func() { store.Close() })
	alloc, err := ipam.NewAllocator(store, pool)
	if err != nil {
		t.Fatal(err)
	}
	gs, err := loadGuests(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gs.close)
	m, err := mesh.Start(mesh.Config{Name: "h1", Transport: meshtest.NewNetwork().NewTransport("h1"), Logger: slog.New(slog.DiscardHandler),
		Meta: mesh.Meta{PublicKey: key.PublicKey().String()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	cl := mesh.NewClaimer(m, pool, mesh.ClaimerConfig{Node: key.PublicKey().String(), Name: "h1", Stored: alloc.Claims()})
	t.Cleanup(cl.Close)
	claims, _, err := cl.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := alloc.SetClaims(claims); err != nil {
		t.Fatal(err)
	}
	dev := device.NewDevice(tuntest.NewChannelTUN().TUN(), bindtest.NewChannelBinds()[0], device.NewLogger(device.LogLevelSilent, ""))
	t.Cleanup(dev.Close)
	if err := dev.IpcSet(fmt.Sprintf("private_key=%s\n", hex.EncodeToString(key[:]))); err != nil {
		t.Fatal(err)
	}
	return &Node{
		cfg:        Config{Name: "h1", StateDir: dir, AdvertiseAddr: netip.MustParseAddr("192.0.2.11"), ListenPort: 51820},
		log:        slog.New(slog.DiscardHandler),
		key:        key,
		pool:       pool,
		alloc:      alloc,
		guests:     gs,
		mesh:       m,
		claimer:    cl,
		events:     newEventHub(),
		metrics:    newMetrics(),
		dev:        dev,
		claims:     claims,
		emptySince: map[netip.Prefix]time.Time{},
		guestPeers: map[wgtypes.Key]netip.Addr{},
	}
}

// devPeers is the node's WireGuard peers: base64 key → AllowedIPs.
func devPeers(t *testing.T, n *Node) map[string]string {
	t.Helper()
	text, err := n.dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for k, p := range parseUAPIPeers(text) {
		out[k] = strings.Join(p.AllowedIPs, ",")
	}
	return out
}

// A guest added without a key gets a key pair whose private half is in the
// answer only (never in the state dir), an address from the node's block,
// a WireGuard peer with AllowedIPs its /32, a record, an event, and a
// complete wg-quick config; removing it undoes all of that.
func TestGuestAddRemove(t *testing.T) {
	dir := t.TempDir()
	n := guestsNode(t, dir, "10.200.0.0/16", 26)
	evs, _, cancel := n.events.subscribe()
	defer cancel()
	g, err := n.AddGuest(context.Background(), api.GuestRequest{Name: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	priv, err := wgtypes.ParseKey(g.PrivateKey)
	if err != nil || priv.PublicKey().String() != g.PublicKey {
		t.Fatalf("answer's private key %q does not match its public key %s (%v)", g.PrivateKey, g.PublicKey, err)
	}
	addr := netip.MustParseAddr(g.Address)
	if !n.claims[0].Block.Contains(addr) || addr == ipam.NodeAddr(n.claims[0].Block) {
		t.Fatalf("address %s is not a guest address of the node's block %s", addr, n.claims[0].Block)
	}
	if got := devPeers(t, n); got[g.PublicKey] != addr.String()+"/32" || len(got) != 1 {
		t.Fatalf("device peers %v, want only the guest with %s/32", got, addr)
	}
	wantConf := []string{
		"[Interface]", "PrivateKey = " + g.PrivateKey, "Address = " + addr.String() + "/32", "DNS = " + n.pool.MeshDNS().String() + ", zl",
		"[Peer]", "PublicKey = " + n.key.PublicKey().String(), "Endpoint = 192.0.2.11:51820",
		"AllowedIPs = 10.200.0.0/16", "PersistentKeepalive = 25",
	}
	for _, line := range wantConf {
		if !slices.Contains(strings.Split(g.Config, "\n"), line) {
			t.Errorf("config lacks %q:\n%s", line, g.Config)
		}
	}
	if g.DNSName != "laptop.guest.zl" {
		t.Errorf("dns name %q", g.DNSName)
	}
	if ev := <-evs; ev.Type != api.EventGuestAdd || ev.Guest != "laptop" || ev.Address != g.Address {
		t.Errorf("event %+v", ev)
	}
	if recs := records[api.GuestRecord](n, guestKind, nil); len(recs) != 1 || recs[0].Address != g.Address || recs[0].Name != "laptop" {
		t.Errorf("records %+v", recs)
	}
	assertNoSecret(t, dir, priv)

	// The list shows it without the private key.
	list, err := n.Guests()
	if err != nil || len(list) != 1 || list[0].PrivateKey != "" || strings.Contains(list[0].Config, g.PrivateKey) || list[0].State != api.GuestWaiting {
		t.Fatalf("list %+v, %v", list, err)
	}

	if err := n.RemoveGuest(context.Background(), "laptop"); err != nil {
		t.Fatal(err)
	}
	if got := devPeers(t, n); len(got) != 0 {
		t.Errorf("peers after rm: %v", got)
	}
	if _, ok := n.alloc.Lease(guestLease("laptop")); ok {
		t.Error("lease kept after rm")
	}
	if recs := records[api.GuestRecord](n, guestKind, nil); len(recs) != 0 {
		t.Errorf("records after rm: %+v", recs)
	}
	if code, _ := apiCode(n.RemoveGuest(context.Background(), "laptop")); code != api.CodeNotFound {
		t.Errorf("second rm: %s", code)
	}
}

// assertNoSecret fails when any file under dir holds priv (raw, hex or
// base64).
func assertNoSecret(t *testing.T, dir string, priv wgtypes.Key) {
	t.Helper()
	forms := [][]byte{priv[:], []byte(priv.String()), []byte(hex.EncodeToString(priv[:]))}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		for _, f := range forms {
			if bytes.Contains(b, f) {
				t.Errorf("%s holds the guest's private key", p)
			}
		}
		return nil
	})
}

// Bad input is refused with a code, and leaves no peer, lease or guest.
func TestGuestBadInput(t *testing.T) {
	n := guestsNode(t, t.TempDir(), "10.200.0.0/16", 26)
	other := mustKey(t).PublicKey()
	if _, err := n.AddGuest(context.Background(), api.GuestRequest{Name: "first", PublicKey: other.String()}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  api.GuestRequest
		code string
	}{
		{"duplicate name", api.GuestRequest{Name: "first"}, api.CodeAlreadyExists},
		{"duplicate key", api.GuestRequest{Name: "second", PublicKey: other.String()}, api.CodeAlreadyExists},
		{"node's own key", api.GuestRequest{Name: "second", PublicKey: n.key.PublicKey().String()}, api.CodeAlreadyExists},
		{"malformed key", api.GuestRequest{Name: "second", PublicKey: "not-a-key"}, api.CodeBadRequest},
		{"short key", api.GuestRequest{Name: "second", PublicKey: "AAAA"}, api.CodeBadRequest},
		{"zero key", api.GuestRequest{Name: "second", PublicKey: wgtypes.Key{}.String()}, api.CodeBadRequest},
		{"empty name", api.GuestRequest{}, api.CodeBadRequest},
		{"upper case", api.GuestRequest{Name: "Laptop"}, api.CodeBadRequest},
		{"dot", api.GuestRequest{Name: "a.b"}, api.CodeBadRequest},
		{"underscore", api.GuestRequest{Name: "a_b"}, api.CodeBadRequest},
		{"leading dash", api.GuestRequest{Name: "-a"}, api.CodeBadRequest},
		{"64 characters", api.GuestRequest{Name: strings.Repeat("a", 64)}, api.CodeBadRequest},
		{"endpoint without port", api.GuestRequest{Name: "second", Endpoint: "vpn.example.org"}, api.CodeBadRequest},
		{"endpoint port 0", api.GuestRequest{Name: "second", Endpoint: "vpn.example.org:0"}, api.CodeBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := n.AddGuest(context.Background(), tc.req)
			if code, _ := apiCode(err); code != tc.code {
				t.Fatalf("code %q (%v), want %q", code, err, tc.code)
			}
			if got := devPeers(t, n); len(got) != 1 {
				t.Errorf("peers %v, want only the first guest", got)
			}
			if len(n.alloc.Leases()) != 1 || n.guests.len() != 1 {
				t.Errorf("leases %v, guests %d", n.alloc.Leases(), n.guests.len())
			}
		})
	}
	if code, _ := apiCode(n.RemoveGuest(context.Background(), "Bad_Name")); code != api.CodeBadRequest {
		t.Errorf("rm of a bad name: %s", code)
	}
}

// When the node's blocks are full and no block is left to claim, an add
// is refused as exhausted and leaves nothing behind; guests fill a grown
// block first.
func TestGuestBlocksCannotGrow(t *testing.T) {
	// A /23 with its reserved top /24: two /25 blocks.
	n := guestsNode(t, t.TempDir(), "10.200.0.0/23", 25)
	var added int
	var err error
	for added = 0; added < 300; added++ {
		if _, err = n.AddGuest(context.Background(), api.GuestRequest{Name: fmt.Sprintf("g%d", added)}); err != nil {
			break
		}
	}
	if code, _ := apiCode(err); code != api.CodeExhausted {
		t.Fatalf("add %d: %v, want %s", added, err, api.CodeExhausted)
	}
	if len(n.claims) != 2 {
		t.Errorf("blocks %v, want both of the cluster", n.claims)
	}
	if got := devPeers(t, n); len(got) != added || n.guests.len() != added || len(n.alloc.Leases()) != added {
		t.Errorf("%d added; peers %d, guests %d, leases %d", added, len(got), n.guests.len(), len(n.alloc.Leases()))
	}
	if added < 200 {
		t.Errorf("only %d guests fit in two /25 blocks", added)
	}
}

// A restarted node gives its guests their peers back with the same key and
// address, releases a guest lease without a guest, and forgets a guest
// without a lease.
func TestGuestsRestore(t *testing.T) {
	dir := t.TempDir()
	n := guestsNode(t, dir, "10.200.0.0/16", 26)
	pub := mustKey(t).PublicKey()
	g, err := n.AddGuest(context.Background(), api.GuestRequest{Name: "vm1", PublicKey: pub.String()})
	if err != nil {
		t.Fatal(err)
	}
	// RoutineGuests saw it at an endpoint.
	gg, _ := n.guests.get("vm1")
	n.followGuest(gg, &devPeer{Endpoint: "192.0.2.200:40000"}, false)
	if gg, _ = n.guests.get("vm1"); gg.LastEndpoint != "192.0.2.200:40000" {
		t.Fatalf("last endpoint %q not recorded", gg.LastEndpoint)
	}
	if _, err := n.alloc.Allocate(guestService, guestLease("crashed")); err != nil { // a lease whose guest was never recorded
		t.Fatal(err)
	}
	if err := n.guests.put("ghost", guest{Name: "ghost", PublicKey: mustKey(t).PublicKey().String(), Address: netip.MustParseAddr("10.200.77.7")}); err != nil {
		t.Fatal(err)
	}
	n.dev.Close()
	n.guests.close()
	n.claimer.Close()
	n.mesh.Shutdown()

	// The restarted node gets a copy of the state dir: the first one's
	// ipam store is closed only at the test's end, and Windows refuses a
	// second opener of its journal.
	again := guestsNode(t, copyFiles(t, dir), "10.200.0.0/16", 26)
	again.restoreGuests()
	if got := devPeers(t, again); len(got) != 1 || got[pub.String()] != g.Address+"/32" {
		t.Fatalf("peers after restart %v, want %s with %s/32", got, pub, g.Address)
	}
	// The restored peer dials the guest's last endpoint with a keepalive
	// (a handshake at once), until the guest is connected.
	text, _ := again.dev.IpcGet()
	d := parseUAPIPeers(text)[pub.String()]
	if !strings.HasSuffix(d.Endpoint, ":40000") || d.Keepalive != guestKeepalive { // the channel bind shows 127.0.0.1
		t.Errorf("restored peer: endpoint %q keepalive %d", d.Endpoint, d.Keepalive)
	}
	gg, _ = again.guests.get("vm1")
	again.followGuest(gg, d, true)
	text, _ = again.dev.IpcGet()
	if d := parseUAPIPeers(text)[pub.String()]; d.Keepalive != 0 {
		t.Errorf("keepalive %d once connected, want 0", d.Keepalive)
	}
	if _, ok := again.alloc.Lease(guestLease("crashed")); ok {
		t.Error("lease without a guest kept")
	}
	if _, ok := again.guests.get("ghost"); ok {
		t.Error("guest without a lease kept")
	}
}

// A guest whose block moves follows it: new AllowedIPs, a guest_moved
// event, and the list flags it as renumbered with the new config.
func TestGuestsRenumber(t *testing.T) {
	n := guestsNode(t, t.TempDir(), "10.200.0.0/16", 26)
	pub := mustKey(t).PublicKey()
	g, err := n.AddGuest(context.Background(), api.GuestRequest{Name: "vm1", PublicKey: pub.String()})
	if err != nil {
		t.Fatal(err)
	}
	evs, _, cancel := n.events.subscribe()
	defer cancel()
	old := netip.MustParseAddr(g.Address)
	newAddr := netip.MustParseAddr("10.200.99.5")
	n.renumberGuests([]ipam.Move{{Old: ipam.Lease{Service: guestService, Container: guestLease("vm1"), Addr: old},
		New: ipam.Lease{Service: guestService, Container: guestLease("vm1"), Addr: newAddr}}})
	if got := devPeers(t, n); got[pub.String()] != "10.200.99.5/32" {
		t.Fatalf("peers %v", got)
	}
	if ev := <-evs; ev.Type != api.EventGuestMove || ev.OldAddress != old.String() || ev.Address != "10.200.99.5" {
		t.Errorf("event %+v", ev)
	}
	list, _ := n.Guests()
	if len(list) != 1 || !list[0].Renumbered || list[0].OldAddress != old.String() || !strings.Contains(list[0].Config, "Address = 10.200.99.5/32") {
		t.Fatalf("list %+v", list)
	}
	if recs := records[api.GuestRecord](n, guestKind, nil); len(recs) != 1 || recs[0].Address != "10.200.99.5" {
		t.Errorf("records %+v", recs)
	}
}

// The mesh peer diff leaves guests' peers alone: a peer the mesh does not
// know is removed, a guest's is not, and a mesh node that shows up with a
// guest's key gets no peer (it would take the guest's AllowedIPs).
func TestPeerDiffKeepsGuests(t *testing.T) {
	guestKey, stale, nodeKey := mustKey(t), mustKey(t), mustKey(t)
	n := &Node{log: slog.New(slog.DiscardHandler), guestPeers: map[wgtypes.Key]netip.Addr{guestKey: netip.MustParseAddr("10.200.1.9")}}
	dev := map[string]*devPeer{
		guestKey.String(): {AllowedIPs: []string{"10.200.1.9/32"}},
		stale.String():    {AllowedIPs: []string{"10.200.5.0/26"}},
	}
	want := []wgPeer{
		{Name: "h2", Key: nodeKey, Endpoint: netip.MustParseAddrPort("192.0.2.12:51820"), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.200.2.0/26")}},
		{Name: "thief", Key: guestKey, Endpoint: netip.MustParseAddrPort("192.0.2.13:51820"), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.200.3.0/26")}},
	}
	want = n.withoutGuestsLocked(dev, want)
	set := uapiPeerDiff(dev, want, nil)
	if strings.Contains(set, hexKey(guestKey)) {
		t.Errorf("diff touches the guest's peer:\n%s", set)
	}
	if !strings.Contains(set, "public_key="+hexKey(stale)+"\nremove=true") {
		t.Errorf("diff keeps the stale peer:\n%s", set)
	}
	if !strings.Contains(set, "public_key="+hexKey(nodeKey)) {
		t.Errorf("diff does not add the node:\n%s", set)
	}
}

// The guests' state file is journaled: changes append, a reload gives the
// same guests.
func TestGuestsJournal(t *testing.T) {
	dir := t.TempDir()
	gs, err := loadGuests(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 600 {
		name := fmt.Sprintf("g%d", i%40)
		if _, ok := gs.get(name); ok {
			if err := gs.remove(name); err != nil {
				t.Fatal(err)
			}
		} else if err := gs.put(name, guest{Name: name, PublicKey: "k" + name, Address: netip.AddrFrom4([4]byte{10, 200, 1, byte(i % 250)})}); err != nil {
			t.Fatal(err)
		}
	}
	want := gs.list()
	gs.close()
	again, err := loadGuests(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer again.close()
	if got := again.list(); !slices.Equal(got, want) {
		t.Fatalf("reloaded %d guests %v, want %d %v", len(got), got, len(want), want)
	}
	if _, err := os.Stat(filepath.Join(dir, guestsFile)); err != nil {
		t.Fatalf("600 changes never folded the journal: %v", err)
	}
}

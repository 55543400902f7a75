package node

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/bridge"
	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/ipam/disk"
)

func testAttachment(id, service, addr string) attachment {
	p := netip.MustParsePrefix(addr)
	return attachment{
		Spec: ContainerSpec{Service: service, Container: id, Netns: "/run/netns/" + id, Ifname: "eth0",
			Address: p, Gateway: gatewayFor(p.Addr()), MTU: 1420},
		Attached:  Plumbed{Bridge: bridge.BridgeName(service), HostVeth: bridge.VethName(id), NetnsID: NamespaceID{Dev: 4, Ino: 1000}},
		CreatedAt: time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC),
	}
}

func ids(a *attachments) []string {
	var out []string
	for _, at := range a.list() {
		out = append(out, at.Spec.Container+"="+at.Spec.Address.String())
	}
	return out
}

// Attachments are journaled: a put or remove appends one record (the
// snapshot is not rewritten); a reload gives the same set, also across
// folds of the journal into the snapshot; a picture of the files taken
// after any change loads to exactly the set at that change.
func TestAttachmentsJournal(t *testing.T) {
	dir := t.TempDir()
	a, err := loadAttachments(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	if err := a.put(testAttachment("c0", "web", "10.200.3.34/27")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, attachFile)); !os.IsNotExist(err) {
		t.Fatalf("a put wrote the snapshot (%v); it should only append", err)
	}
	type image struct {
		dir  string
		want []string
	}
	var images []image
	for i := range 700 {
		id := fmt.Sprintf("c%d", i%50)
		if _, ok := a.get(id); ok {
			if err := a.remove(id); err != nil {
				t.Fatal(err)
			}
		} else if err := a.put(testAttachment(id, "web", fmt.Sprintf("10.200.%d.%d/24", 3+i%4, 2+i%50))); err != nil {
			t.Fatal(err)
		}
		if i%61 == 0 {
			images = append(images, image{copyFiles(t, dir), ids(a)})
		}
	}
	b, err := loadAttachments(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	if !slices.Equal(ids(a), ids(b)) {
		t.Fatalf("reloaded %v, want %v", ids(b), ids(a))
	}
	for i, im := range images {
		c, err := loadAttachments(im.dir)
		if err != nil {
			t.Fatalf("image %d: %v", i, err)
		}
		if !slices.Equal(ids(c), im.want) {
			t.Fatalf("image %d loads to %v, want %v", i, ids(c), im.want)
		}
		c.close()
	}
	if _, err := os.Stat(filepath.Join(dir, attachFile)); err != nil {
		t.Fatalf("700 changes never folded the journal into a snapshot: %v", err)
	}
	// The whole attachment survives, not just its id.
	got, _ := b.get("c1")
	want, _ := a.get("c1")
	if !(got.Spec == want.Spec && got.CreatedAt.Equal(want.CreatedAt) && got.Attached.NetnsID == want.Attached.NetnsID) {
		t.Fatalf("reloaded c1 = %+v, want %+v", got, want)
	}
}

func copyFiles(t *testing.T, dir string) string {
	t.Helper()
	out := t.TempDir()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(out, e.Name()), b, 0o600)
	}
	return out
}

func TestAttachmentsCorrupt(t *testing.T) {
	for name, body := range map[string]string{
		"snapshot garbage":       "{not json",
		"snapshot unknown field": `{"attachments":{},"extra":1}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, attachFile), []byte(body), 0o600)
			if _, err := loadAttachments(dir); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, attachFile)) {
				t.Fatalf("loadAttachments = %v, want an error naming the file", err)
			}
		})
	}
}

// fakeContainers records calls and answers from its maps.
type fakeContainers struct {
	mu        sync.Mutex
	alive     map[string]bool // container → namespace alive
	inv       ContainerInventory
	calls     []string
	emptyBrs  map[string]bool
	adoptErrs map[string]error
}

func (f *fakeContainers) record(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func (f *fakeContainers) Attach(_ context.Context, s ContainerSpec) (Plumbed, error) {
	f.record("attach " + s.Container)
	return Plumbed{Bridge: bridge.BridgeName(s.Service), HostVeth: bridge.VethName(s.Container), NetnsID: NamespaceID{Dev: 4, Ino: 1000}}, nil
}
func (f *fakeContainers) Detach(_ context.Context, s ContainerSpec) error {
	f.record("detach " + s.Container)
	return nil
}
func (f *fakeContainers) Readdress(_ context.Context, s ContainerSpec, a, a6 netip.Prefix) error {
	if a6.IsValid() {
		f.record(fmt.Sprintf("readdress %s %s→%s %s→%s", s.Container, s.Address, a, s.Address6, a6))
		return nil
	}
	f.record(fmt.Sprintf("readdress %s %s→%s", s.Container, s.Address, a))
	return nil
}
func (f *fakeContainers) Alive(s ContainerSpec, _ NamespaceID) (bool, error) {
	return f.alive[s.Container], nil
}
func (f *fakeContainers) Adopt(_ context.Context, s ContainerSpec) (Plumbed, error) {
	f.record(fmt.Sprintf("adopt %s %s", s.Container, s.Address))
	if err := f.adoptErrs[s.Container]; err != nil {
		return Plumbed{}, err
	}
	return Plumbed{Bridge: bridge.BridgeName(s.Service), HostVeth: bridge.VethName(s.Container), NetnsID: NamespaceID{Dev: 4, Ino: 1000}}, nil
}
func (f *fakeContainers) Inventory() (ContainerInventory, error) { return f.inv, nil }
func (f *fakeContainers) RemoveLink(name string) error {
	f.record("remove-link " + name)
	return nil
}
func (f *fakeContainers) RemoveBridgeIfEmpty(name string) (bool, error) {
	f.record("remove-bridge " + name)
	return f.emptyBrs[name], nil
}
func (f *fakeContainers) RemoveRoute(dst netip.Prefix) error {
	f.record("remove-route " + dst.String())
	return nil
}
func (f *fakeContainers) Close() error { return nil }

// adoptAttachments at start: a live attachment whose lease matches is
// adopted without a write; one whose lease moved (a renumbering cut short)
// is readdressed to the lease and recorded; one without a lease, or whose
// namespace is gone, is detached and forgotten with its lease; a lease
// without an attachment is released; links and bridges of nobody are
// removed.
func TestAdoptAttachments(t *testing.T) {
	dir := t.TempDir()
	pool := ipam.DefaultPool()
	store := disk.New(filepath.Join(dir, ipamFile), pool.BlockBits())
	t.Cleanup(func() { store.Close() }) // before t.TempDir's removal (Windows)
	alloc, err := ipam.NewAllocator(store, pool)
	if err != nil {
		t.Fatal(err)
	}
	if err := alloc.SetClaims([]ipam.Claim{{Node: "k", Name: "n1", Block: netip.MustParsePrefix("10.200.3.0/26")}}); err != nil {
		t.Fatal(err)
	}
	att, err := loadAttachments(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer att.close()
	lease := func(svc, id string) ipam.Lease {
		l, err := alloc.Allocate(svc, id)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	record := func(svc, id string, addr netip.Prefix) {
		if err := att.put(testAttachment(id, svc, addr.String())); err != nil {
			t.Fatal(err)
		}
	}
	ok := lease("web", "ok")
	record("web", "ok", hostPrefix(ok.Addr))
	moved := lease("web", "moved")
	record("web", "moved", netip.MustParsePrefix("10.200.9.35/32")) // still the old block's address
	record("web", "unleased", netip.MustParsePrefix("10.200.3.40/32"))
	dead := lease("db", "dead")
	record("db", "dead", hostPrefix(dead.Addr))
	lease("db", "orphan-lease")

	fc := &fakeContainers{
		alive: map[string]bool{"ok": true, "moved": true, "unleased": true},
		inv: ContainerInventory{
			Bridges: []string{"zlb-web", "zlb-stale"},
			Links:   []PlumbingLink{{Name: bridge.VethName("ok")}, {Name: bridge.VethName("moved")}, {Name: "zlvstray"}},
			Routes:  []PlumbingRoute{{Dst: hostPrefix(ok.Addr), Bridge: "zlb-web"}, {Dst: netip.MustParsePrefix("10.200.3.60/32"), Bridge: "zlb-web"}},
		},
		emptyBrs: map[string]bool{"zlb-stale": true},
	}
	n := &Node{log: slog.New(slog.DiscardHandler), alloc: alloc, attach: att, containers: fc}
	recordsBefore := att.log.Records()
	n.adoptAttachments(context.Background())

	if got := ids(att); !slices.Equal(got, []string{"moved=" + hostPrefix(moved.Addr).String(), "ok=" + hostPrefix(ok.Addr).String()}) {
		t.Errorf("attachments after adoption: %v", got)
	}
	var leases []string
	for _, l := range alloc.Leases() {
		leases = append(leases, l.Container)
	}
	if !slices.Equal(leases, []string{"ok", "moved"}) {
		t.Errorf("leases after adoption: %v, want ok and moved", leases)
	}
	want := []string{
		"adopt ok " + hostPrefix(ok.Addr).String(),
		"readdress moved 10.200.9.35/32→" + hostPrefix(moved.Addr).String(),
		"adopt moved " + hostPrefix(moved.Addr).String(),
		"detach unleased",
		"detach dead",
		"remove-link zlvstray",
		"remove-route 10.200.3.60/32",
		"remove-bridge zlb-stale",
	}
	slices.Sort(want)
	got := slices.Clone(fc.calls)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("plumbing calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// ok was adopted as it was: no record for it. moved was recorded once;
	// unleased and dead were forgotten: one record each.
	if n := att.log.Records() - recordsBefore; n != 3 {
		t.Errorf("adoption appended %d records, want 3 (moved, unleased, dead)", n)
	}
	// What adoption decided survives a restart (read from a copy: att is
	// still open, which Windows holds against a second opener).
	again, err := loadAttachments(copyFiles(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	defer again.close()
	if !slices.Equal(ids(again), ids(att)) {
		t.Errorf("reloaded %v, want %v", ids(again), ids(att))
	}
}

// unplug (Detach's steps) forgets the attachment before it releases the
// lease, so a crash in between leaves a lease without an attachment
// (released at the next start), never an attachment whose address is free.
func TestUnplugOrder(t *testing.T) {
	dir := t.TempDir()
	var att *attachments
	var seen []string
	ds := disk.New(filepath.Join(dir, ipamFile), ipam.DefaultBlockBits)
	t.Cleanup(func() { ds.Close() }) // before t.TempDir's removal (Windows)
	store := &watchStore{LeaseStore: ds, onRelease: func(id string) {
		_, attached := att.get(id)
		seen = append(seen, fmt.Sprintf("release %s: still attached %v", id, attached))
	}}
	alloc, err := ipam.NewAllocator(store, ipam.DefaultPool())
	if err != nil {
		t.Fatal(err)
	}
	if err := alloc.SetClaims([]ipam.Claim{{Node: "k", Name: "n1", Block: netip.MustParsePrefix("10.200.3.0/26")}}); err != nil {
		t.Fatal(err)
	}
	if att, err = loadAttachments(dir); err != nil {
		t.Fatal(err)
	}
	defer att.close()
	l, err := alloc.Allocate("web", "c1")
	if err != nil {
		t.Fatal(err)
	}
	att.put(testAttachment("c1", "web", hostPrefix(l.Addr).String()))
	fc := &fakeContainers{}
	n := &Node{log: slog.New(slog.DiscardHandler), alloc: alloc, attach: att, containers: fc}
	at, _ := att.get("c1")
	if err := n.unplug(context.Background(), at); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, []string{"release c1: still attached false"}) || !slices.Equal(fc.calls, []string{"detach c1"}) {
		t.Fatalf("unplug: %v, plumbing %v", seen, fc.calls)
	}
	if _, ok := alloc.Lease("c1"); ok {
		t.Fatal("lease kept")
	}
}

// watchStore calls onRelease when a lease's release is saved.
type watchStore struct {
	ipam.LeaseStore
	onRelease func(container string)
}

func (w *watchStore) SaveLease(st ipam.State, id string, l ipam.Lease, held bool) error {
	if !held {
		w.onRelease(id)
	}
	return w.LeaseStore.SaveLease(st, id, l, held)
}

// Adoption of Docker attachments (HostPeer) with IPv6 on: Docker gave the
// container its IPv6 address and the node cannot change it, so an
// attachment keeps its IPv6 address while it is the twin of its lease and
// loses it (no host route, no AAAA) when it is not (another cluster IPv6
// prefix); none is given to one that had none.
func TestAdoptDockerIPv6(t *testing.T) {
	dir := t.TempDir()
	pool := ipam.DefaultPool()
	store := disk.New(filepath.Join(dir, ipamFile), pool.BlockBits())
	t.Cleanup(func() { store.Close() })
	alloc, err := ipam.NewAllocator(store, pool)
	if err != nil {
		t.Fatal(err)
	}
	if err := alloc.SetClaims([]ipam.Claim{{Node: "k", Name: "n1", Block: netip.MustParsePrefix("10.200.3.0/26")}}); err != nil {
		t.Fatal(err)
	}
	twins, err := ipam.NewTwins(pool, netip.MustParsePrefix("fd12:3456:789a::/48"))
	if err != nil {
		t.Fatal(err)
	}
	att, err := loadAttachments(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer att.close()
	want := map[string]netip.Prefix{}
	alive := map[string]bool{}
	for _, c := range []struct {
		id   string
		addr func(netip.Addr) netip.Prefix // the recorded Address6 for the lease
		kept bool
	}{
		{"docker-000000000001", func(a netip.Addr) netip.Prefix { t6, _ := twins.Addr(a); return hostPrefix(t6) }, true},
		{"docker-000000000002", func(netip.Addr) netip.Prefix { return netip.MustParsePrefix("fd99::2/128") }, false},
		{"docker-000000000003", func(netip.Addr) netip.Prefix { return netip.Prefix{} }, false},
	} {
		l, err := alloc.Allocate("web", c.id)
		if err != nil {
			t.Fatal(err)
		}
		at := testAttachment(c.id, "web", hostPrefix(l.Addr).String())
		at.Spec.Netns, at.Spec.Ifname, at.Spec.HostPeer = "", "", bridge.HostPeerName(c.id)
		at.Attached.NetnsID = NamespaceID{}
		at.Spec.Address6 = c.addr(l.Addr)
		if err := att.put(at); err != nil {
			t.Fatal(err)
		}
		alive[c.id] = true
		if c.kept {
			want[c.id] = at.Spec.Address6
		} else {
			want[c.id] = netip.Prefix{}
		}
	}
	fc := &fakeContainers{alive: alive}
	n := &Node{log: slog.New(slog.DiscardHandler), alloc: alloc, attach: att, containers: fc, twins: twins}
	n.adoptAttachments(context.Background())
	for id, w := range want {
		at, ok := att.get(id)
		if !ok || at.Spec.Address6 != w {
			t.Errorf("%s after adoption: %v %+v, want address6 %v", id, ok, at.Spec, w)
		}
	}
	for _, c := range fc.calls {
		if strings.HasPrefix(c, "readdress") || strings.HasPrefix(c, "detach") {
			t.Errorf("adoption of Docker attachments called %q", c)
		}
	}
}

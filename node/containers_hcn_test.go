package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
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
	"github.com/zlmesh/zlmesh/winhcn"
	"github.com/zlmesh/zlmesh/winhcn/winhcntest"
)

// The node's Windows code paths (attach by container id, detach, adoption,
// the sweep, renumbering, the network following the blocks) run here on
// every platform: the node over hcnContainers over winhcntest.Fake.

var hcnCluster = netip.MustParsePrefix("10.200.0.0/16")

// hcnNode is the part of a Node that attaches containers, over state dir
// dir and the HCN fake f: an in-memory mesh of its own, a claimer whose
// first block is 10.200.7.0/blockBits, the allocator and attachments on
// disk, and the HCN plumbing, adopted as at start. stop closes what it
// opened (a restart opens another hcnNode on the same dir and fake).
func hcnNode(t *testing.T, dir string, f *winhcntest.Fake, blockBits int) (n *Node, stop func()) {
	t.Helper()
	m, err := mesh.Start(mesh.Config{Name: "h1", Transport: meshtest.NewNetwork().NewTransport("h1"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	pool, err := ipam.NewPool(hcnCluster, blockBits)
	if err != nil {
		t.Fatal(err)
	}
	twins, err := ipam.NewTwins(pool, netip.MustParsePrefix("fd7a:5c00:1::/48")) // IPv6 on: HCN endpoints stay IPv4 only
	if err != nil {
		t.Fatal(err)
	}
	store := disk.New(filepath.Join(dir, ipamFile), blockBits)
	var closers []func()
	stop = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		closers = nil
	}
	t.Cleanup(stop) // before t.TempDir's removal (Windows keeps open files)
	closers = append(closers, func() { m.Shutdown() }, func() { store.Close() })
	alloc, err := ipam.NewAllocator(store, pool)
	if err != nil {
		t.Fatal(err)
	}
	att, err := loadAttachments(dir)
	if err != nil {
		t.Fatal(err)
	}
	closers = append(closers, att.close)
	log := slog.New(slog.DiscardHandler)
	hm := winhcn.New(f, winhcn.Config{
		Cluster:        []netip.Prefix{hcnCluster},
		DNSServers:     []netip.Addr{pool.MeshDNS()},
		DNSSearch:      []string{"zl"},
		SettleTimeout:  5 * time.Second,
		SettleInterval: time.Millisecond,
	})
	n = &Node{
		cfg:        Config{Name: "h1", StateDir: dir, BlockReleaseAfter: time.Minute},
		log:        log,
		pool:       pool,
		twins:      twins,
		mesh:       m,
		alloc:      alloc,
		attach:     att,
		events:     newEventHub(),
		metrics:    newMetrics(),
		emptySince: map[netip.Prefix]time.Time{},
		containers: newHCNContainers(hm, log),
	}
	n.claimer = mesh.NewClaimer(m, pool, mesh.ClaimerConfig{Node: "pk-h1", Name: "h1", Stored: alloc.Claims(),
		Preferred: netip.PrefixFrom(netip.MustParseAddr("10.200.7.0"), blockBits)})
	closers = append(closers, n.claimer.Close)
	claims, _, err := n.claimer.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := alloc.SetClaims(claims); err != nil {
		t.Fatal(err)
	}
	n.claims = claims
	n.adoptAttachments(context.Background())
	return n, stop
}

// endpointOf returns the fake's endpoint of container c.
func endpointOf(f *winhcntest.Fake, c string) (winhcn.Endpoint, bool) {
	_, eps, _ := f.State()
	i := slices.IndexFunc(eps, func(e winhcn.Endpoint) bool { return e.Name == winhcn.EndpointPrefix+c })
	if i < 0 {
		return winhcn.Endpoint{}, false
	}
	return eps[i], true
}

// nothingOf fails t if anything of container c is left: endpoint,
// attachment, lease, service record.
func nothingOf(t *testing.T, n *Node, f *winhcntest.Fake, c string) {
	t.Helper()
	if e, ok := endpointOf(f, c); ok {
		t.Errorf("endpoint of %s left: %+v", c, e)
	}
	if _, ok := n.attach.get(c); ok {
		t.Errorf("attachment of %s left", c)
	}
	if l, ok := n.alloc.Lease(c); ok {
		t.Errorf("lease of %s left: %s", c, l.Addr)
	}
	if _, ok := n.mesh.Store().Get(serviceKind, n.serviceKey(c)); ok {
		t.Errorf("service record of %s left", c)
	}
}

// Attach by container id: the container gets an endpoint on the node's
// HCN network (made over the node's block on the first attach, endpoints
// retried while it settles) with its static address from the node's block,
// the cluster routed to the link-local gateway, outbound NAT excepting the
// cluster, an ACL letting the cluster in and the mesh DNS, put into the
// container; the answer, the journal and the service record say so.
// Detach deletes the endpoint and its namespace and releases the lease.
func TestHCNAttachDetach(t *testing.T) {
	f := winhcntest.New()
	f.SettleFailures = 3 // HNS's settle time after the network is made
	f.AddContainer("c0ffee01")
	n, _ := hcnNode(t, t.TempDir(), f, 26)
	ctx := context.Background()

	a, err := n.Attach(ctx, api.AttachRequest{Service: "web", ContainerID: "c0ffee01"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Container != "c0ffee01" || a.ContainerID != "c0ffee01" || a.Endpoint != "zlmesh-c0ffee01" || a.Bridge != "zlmesh" || a.Prefix != 32 || a.Address6 != "" {
		t.Errorf("answer %+v", a)
	}
	addr := netip.MustParseAddr(a.Address)
	if !netip.MustParsePrefix("10.200.7.0/26").Contains(addr) || a.Gateway != gatewayFor(addr).Addr().String() {
		t.Errorf("address %s gateway %s, want one of 10.200.7.0/26 and the link-local gateway", a.Address, a.Gateway)
	}
	nets, _, nss := f.State()
	if len(nets) != 1 || nets[0].Name != "zlmesh" || !slices.Equal(nets[0].Subnets, []netip.Prefix{netip.MustParsePrefix("10.200.7.0/26")}) {
		t.Fatalf("networks %+v, want zlmesh over the node's block", nets)
	}
	if got := f.Calls["create-endpoint"]; got != 4 {
		t.Errorf("%d endpoint creations, want 4 (3 while the network settles)", got)
	}
	e, ok := endpointOf(f, "c0ffee01")
	if !ok {
		t.Fatal("no endpoint")
	}
	gw := gatewayFor(addr).Addr()
	wantRoutes := []winhcn.Route{{Dst: netip.MustParsePrefix("0.0.0.0/0"), NextHop: gw}, {Dst: hcnCluster, NextHop: gw}}
	if e.Address != hostPrefix(addr) || !slices.Equal(e.Routes, wantRoutes) ||
		!slices.Equal(e.NATExceptions, []netip.Prefix{hcnCluster}) || !slices.Equal(e.AllowIn, []netip.Prefix{hcnCluster}) ||
		!slices.Equal(e.DNSServers, []netip.Addr{n.pool.MeshDNS()}) || e.NamespaceID == "" || !slices.Contains(nss, e.NamespaceID) {
		t.Errorf("endpoint %+v", e)
	}
	if f.Container(e.ID) != "c0ffee01" {
		t.Errorf("endpoint not put into the container")
	}
	if at, ok := n.attach.get("c0ffee01"); !ok || at.Spec.ContainerID != "c0ffee01" || at.Attached.Endpoint != "zlmesh-c0ffee01" {
		t.Errorf("journal: %+v %v", at, ok)
	}
	if _, ok := n.mesh.Store().Get(serviceKind, n.serviceKey("c0ffee01")); !ok {
		t.Error("no service record")
	}
	// Attached already: refused, nothing changes.
	if _, err := n.Attach(ctx, api.AttachRequest{Service: "web", ContainerID: "c0ffee01"}); codeOf(err) != api.CodeAlreadyExists {
		t.Errorf("second attach: %v", err)
	}

	if err := n.Detach(ctx, "c0ffee01", ""); err != nil {
		t.Fatal(err)
	}
	nothingOf(t, n, f, "c0ffee01")
	if _, _, nss := f.State(); len(nss) != 0 {
		t.Errorf("namespaces left after detach: %v", nss)
	}
}

// Bad attach requests on a Windows node, and failures at each HCN step:
// a clear error with the API code a client branches on, and nothing left
// behind (no endpoint, namespace, lease, attachment or record).
func TestHCNAttachFailures(t *testing.T) {
	failAt := func(op string) func(*winhcntest.Fake) {
		return func(f *winhcntest.Fake) {
			f.Fail = func(o string) error {
				if o == op {
					return fmt.Errorf("%s: injected failure", op)
				}
				return nil
			}
		}
	}
	cases := []struct {
		name    string
		req     api.AttachRequest
		setup   func(*winhcntest.Fake)
		code    string
		wantErr string
	}{
		{name: "unknown container id", req: api.AttachRequest{Service: "web", ContainerID: "nosuch"},
			code: api.CodeNotFound, wantErr: "no such container"},
		{name: "no container id", req: api.AttachRequest{Service: "web", Container: "c1"},
			code: api.CodeBadRequest, wantErr: "container_id"},
		{name: "netns on Windows", req: api.AttachRequest{Service: "web", Container: "c1", ContainerID: "c1", Netns: "/run/netns/c1"},
			code: api.CodeBadRequest, wantErr: "netns and pid are Linux's"},
		{name: "bad container id", req: api.AttachRequest{Service: "web", Container: "c1", ContainerID: "c1/../x"},
			code: api.CodeBadRequest, wantErr: "container_id"},
		{name: "hcn unavailable", req: api.AttachRequest{Service: "web", ContainerID: "c1"},
			setup: func(f *winhcntest.Fake) { f.Unavailable = true }, code: api.CodeUnsupported, wantErr: "unavailable"},
		{name: "our network in a bad state", req: api.AttachRequest{Service: "web", ContainerID: "c1"},
			setup: func(f *winhcntest.Fake) {
				id := f.AddNetwork(winhcn.Network{Name: "zlmesh", Type: "Transparent", Subnets: []netip.Prefix{netip.MustParsePrefix("10.200.7.0/26")}})
				f.AddEndpoint(winhcn.Endpoint{Name: "someone-else", NetworkID: id, Address: netip.MustParsePrefix("10.200.7.9/32")})
			},
			code: api.CodeInternal, wantErr: "bad state"},
		{name: "namespace creation fails", req: api.AttachRequest{Service: "web", ContainerID: "c1"},
			setup: failAt("create-namespace"), code: api.CodeInternal, wantErr: "create namespace"},
		{name: "endpoint into namespace fails", req: api.AttachRequest{Service: "web", ContainerID: "c1"},
			setup: failAt("attach-namespace"), code: api.CodeInternal, wantErr: "injected"},
		{name: "hot add into container fails", req: api.AttachRequest{Service: "web", ContainerID: "c1"},
			setup: failAt("attach-container"), code: api.CodeInternal, wantErr: "into container c1"},
		{name: "network never settles", req: api.AttachRequest{Service: "web", ContainerID: "c1"},
			setup: func(f *winhcntest.Fake) { f.SettleFailures = 1 << 20 }, code: api.CodeInternal, wantErr: "attempts"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := winhcntest.New()
			f.AddContainer("c1")
			if tc.setup != nil { // before the node starts, as a host would be
				tc.setup(f)
			}
			n, _ := hcnNode(t, t.TempDir(), f, 26)
			if tc.name == "network never settles" {
				n.containers.(*hcnContainers).m = winhcn.New(f, winhcn.Config{SettleTimeout: 20 * time.Millisecond, SettleInterval: time.Millisecond})
			}
			_, err := n.Attach(context.Background(), tc.req)
			if err == nil || codeOf(err) != tc.code || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Attach = %v (code %s), want code %s and %q", err, codeOf(err), tc.code, tc.wantErr)
			}
			f.Unavailable, f.Fail = false, nil
			for _, c := range []string{tc.req.Container, tc.req.ContainerID, "c1"} {
				if c != "" {
					nothingOf(t, n, f, c)
				}
			}
			if _, eps, nss := f.State(); slices.ContainsFunc(eps, func(e winhcn.Endpoint) bool { return strings.HasPrefix(e.Name, winhcn.EndpointPrefix) }) || len(nss) != 0 {
				t.Errorf("left behind: endpoints %+v namespaces %v", eps, nss)
			}
			if len(n.alloc.Leases()) != 0 {
				t.Errorf("leases left: %+v", n.alloc.Leases())
			}
		})
	}
}

// On a Linux node (bridge plumbing), container_id is refused as
// unsupported, saying what to give instead.
func TestContainerIDOnLinuxNode(t *testing.T) {
	err := validateAttach(api.AttachRequest{Service: "web", Container: "c1", ContainerID: "c1"}, false, false)
	if codeOf(err) != api.CodeUnsupported || !strings.Contains(err.Error(), "netns or pid") {
		t.Fatalf("validateAttach = %v", err)
	}
	n := &Node{containers: &fakeContainers{}}
	if attachesByContainerID(n.containers) {
		t.Fatal("the bridge plumbing attaches by container id")
	}
}

// After a restart the node adopts its HCN endpoints: one as recorded is
// kept as it is; one whose container went while the node was down is
// deleted with its namespace and its lease released; one deleted behind
// the node's back while its container lives is made again; an endpoint of
// ours that no attachment owns is removed, one not ours is left alone.
// Later, the sweep detaches a container that goes away.
func TestHCNAdoptAndSweep(t *testing.T) {
	dir := t.TempDir()
	f := winhcntest.New()
	for _, c := range []string{"keep", "gone", "lost-ep", "later"} {
		f.AddContainer(c)
	}
	n, stop := hcnNode(t, dir, f, 26)
	ctx := context.Background()
	addrs := map[string]string{}
	for _, c := range []string{"keep", "gone", "lost-ep", "later"} {
		a, err := n.Attach(ctx, api.AttachRequest{Service: "web", ContainerID: c})
		if err != nil {
			t.Fatal(err)
		}
		addrs[c] = a.Address
	}
	keepEP, _ := endpointOf(f, "keep")
	stop()

	// While the node is down.
	f.RemoveContainer("gone")
	goneEP, _ := endpointOf(f, "gone")
	lost, _ := endpointOf(f, "lost-ep")
	if err := f.DeleteEndpoint(lost.ID); err != nil {
		t.Fatal(err)
	}
	nets, _, _ := f.State()
	f.AddEndpoint(winhcn.Endpoint{Name: winhcn.EndpointPrefix + "ghost", NetworkID: nets[0].ID, NamespaceID: "ns-ghost", Address: netip.MustParsePrefix("10.200.7.60/32")})
	f.AddEndpoint(winhcn.Endpoint{Name: "not-ours", NetworkID: nets[0].ID, Address: netip.MustParsePrefix("10.200.7.61/32")})

	n, _ = hcnNode(t, dir, f, 26) // adopts
	if e, ok := endpointOf(f, "keep"); !ok || e.ID != keepEP.ID {
		t.Errorf("keep: endpoint %+v, want %s kept as it was", e, keepEP.ID)
	}
	nothingOf(t, n, f, "gone")
	_, _, nss := f.State()
	if slices.Contains(nss, goneEP.NamespaceID) {
		t.Errorf("namespace %s of the gone container left", goneEP.NamespaceID)
	}
	if e, ok := endpointOf(f, "lost-ep"); !ok || e.Address.Addr().String() != addrs["lost-ep"] || f.Container(e.ID) != "lost-ep" {
		t.Errorf("lost-ep: endpoint %+v %v, want one made again at %s in the container", e, ok, addrs["lost-ep"])
	}
	if _, ok := endpointOf(f, "ghost"); ok || slices.Contains(nss, "ns-ghost") {
		t.Error("orphan endpoint (or its namespace) of no attachment left")
	}
	if _, eps, _ := f.State(); !slices.ContainsFunc(eps, func(e winhcn.Endpoint) bool { return e.Name == "not-ours" }) {
		t.Error("an endpoint not ours was removed")
	}
	for _, c := range []string{"keep", "lost-ep", "later"} {
		if l, ok := n.alloc.Lease(c); !ok || l.Addr.String() != addrs[c] {
			t.Errorf("lease of %s: %v %v, want %s", c, l.Addr, ok, addrs[c])
		}
		if at, _ := n.attach.get(c); at.Spec.Address6.IsValid() {
			t.Errorf("adoption gave %s an IPv6 twin %s its HCN endpoint does not have", c, at.Spec.Address6)
		}
	}

	f.RemoveContainer("later")
	n.sweepOnce()
	nothingOf(t, n, f, "later")
	if _, ok := n.attach.get("keep"); !ok {
		t.Error("sweep detached a live container")
	}
}

// A block lost in a conflict moves: every container in it gets an endpoint
// at the same position in the new block (HCN cannot change an endpoint's
// address), still in its container, and the network then spans the new
// block only; the journal, the records and the events follow.
func TestHCNRenumber(t *testing.T) {
	f := winhcntest.New()
	f.AddContainer("r1")
	f.AddContainer("r2")
	n, _ := hcnNode(t, t.TempDir(), f, 26)
	ctx := context.Background()
	old := map[string]netip.Addr{}
	for _, c := range []string{"r1", "r2"} {
		a, err := n.Attach(ctx, api.AttachRequest{Service: "web", ContainerID: c})
		if err != nil {
			t.Fatal(err)
		}
		old[c] = netip.MustParseAddr(a.Address)
	}
	evs, _, cancel := n.events.subscribe()
	defer cancel()
	oldClaim := n.alloc.Claims()[0]
	newBlock := netip.MustParsePrefix("10.200.42.0/26")
	n.moveBlock(mesh.ClaimChange{Old: oldClaim, New: ipam.Claim{Node: oldClaim.Node, Name: oldClaim.Name, Block: newBlock}})

	for _, c := range []string{"r1", "r2"} {
		want := netip.AddrFrom4([4]byte{10, 200, 42, old[c].As4()[3]})
		e, ok := endpointOf(f, c)
		if !ok || e.Address != hostPrefix(want) || f.Container(e.ID) != c {
			t.Errorf("%s: endpoint %+v, want one at %s in the container", c, e, want)
		}
		if at, _ := n.attach.get(c); at.Spec.Address != hostPrefix(want) || at.Spec.Gateway != gatewayFor(want) {
			t.Errorf("%s: journal says %s via %s", c, at.Spec.Address, at.Spec.Gateway)
		}
		if ev := <-evs; ev.Type != api.EventMove || ev.Address != want.String() {
			t.Errorf("event %+v", ev)
		}
	}
	nets, _, nss := f.State()
	if len(nets) != 1 || !slices.Equal(nets[0].Subnets, []netip.Prefix{newBlock}) {
		t.Errorf("network after the move: %+v, want it over %s only", nets, newBlock)
	}
	if len(nss) != 2 {
		t.Errorf("namespaces after the move: %v, want 2", nss)
	}
}

// The HCN network follows the node's blocks: a block claimed because the
// first is full is added before the attach that needed it; a block given
// back after it stayed empty is dropped.
func TestHCNNetworkFollowsBlocks(t *testing.T) {
	f := winhcntest.New()
	n, _ := hcnNode(t, t.TempDir(), f, 28)
	ctx := context.Background()
	subnets := func() []string {
		nets, _, _ := f.State()
		if len(nets) != 1 {
			t.Fatalf("networks %+v", nets)
		}
		var out []string
		for _, s := range nets[0].Subnets {
			out = append(out, s.String())
		}
		return out
	}
	var ids []string
	for i := range 16 { // past the first /28's 13 addresses
		c := fmt.Sprintf("g%02d", i)
		f.AddContainer(c)
		if _, err := n.Attach(ctx, api.AttachRequest{Service: "web", ContainerID: c}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, c)
	}
	if got := subnets(); !slices.Equal(got, blockList(n.alloc.Claims())) || len(got) != 2 {
		t.Fatalf("subnets %v, want the node's two blocks %v", got, blockList(n.alloc.Claims()))
	}
	second := n.alloc.Claims()[1].Block
	for _, c := range ids {
		if l, _ := n.alloc.Lease(c); second.Contains(l.Addr) {
			if err := n.Detach(ctx, c, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	now := time.Now()
	n.releaseEmptyBlocks(now)
	n.releaseEmptyBlocks(now.Add(2 * time.Minute))
	if got := subnets(); !slices.Equal(got, []string{n.alloc.Claims()[0].Block.String()}) {
		t.Fatalf("subnets after the release %v, want the first block only", got)
	}
}

// hcnError keeps winhcn's sentinel and adds bridge's for adoption.
func TestHCNErrorWraps(t *testing.T) {
	err := hcnError(fmt.Errorf("attach: %w", winhcn.ErrNoContainer))
	if !errors.Is(err, winhcn.ErrNoContainer) || codeOf(attachError(api.AttachRequest{Container: "c", Service: "s"}, err)) != api.CodeNotFound {
		t.Fatalf("%v", err)
	}
}

// codeOf is the API code of err ("" when it is no *api.Error).
func codeOf(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// A failure after the plumbing (the journal cannot be written) undoes the
// HCN endpoint through the same pipeline: no endpoint, namespace or lease.
func TestHCNAttachJournalFails(t *testing.T) {
	f := winhcntest.New()
	f.AddContainer("j1")
	n, _ := hcnNode(t, t.TempDir(), f, 26)
	n.attach.close() // every journal write now fails
	_, err := n.Attach(context.Background(), api.AttachRequest{Service: "web", ContainerID: "j1"})
	if err == nil || !strings.Contains(err.Error(), "record attachment of j1") {
		t.Fatalf("Attach = %v, want the journal's error", err)
	}
	nothingOf(t, n, f, "j1")
	if _, eps, nss := f.State(); len(eps) != 0 || len(nss) != 0 || f.Calls["create-endpoint"] != 1 {
		t.Errorf("left behind: endpoints %+v namespaces %v (endpoints made: %d)", eps, nss, f.Calls["create-endpoint"])
	}
}

package winhcn_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/winhcn"
	"github.com/zlmesh/zlmesh/winhcn/winhcntest"
)

var (
	pfx     = netip.MustParsePrefix
	addr    = netip.MustParseAddr
	cluster = []netip.Prefix{pfx("10.200.0.0/16")}
	blockA  = pfx("10.200.4.0/26")
	blockB  = pfx("10.200.9.64/26")
	gw      = addr("169.254.1.1")
)

func newManager(f *winhcntest.Fake) *winhcn.Manager {
	return winhcn.New(f, winhcn.Config{
		Cluster:        cluster,
		DNSServers:     []netip.Addr{addr("10.200.255.53")},
		DNSSearch:      []string{"zl"},
		SettleTimeout:  2 * time.Second,
		SettleInterval: time.Millisecond,
	})
}

func spec(c, a string) winhcn.Spec {
	return winhcn.Spec{Container: c, Address: pfx(a), Gateway: gw}
}

func TestEnsureNetwork(t *testing.T) {
	f := winhcntest.New()
	m := newManager(f)
	if err := m.EnsureNetwork([]netip.Prefix{blockA}); err != nil {
		t.Fatal(err)
	}
	nets, _, _ := f.State()
	if len(nets) != 1 || nets[0].Name != "zlmesh" || nets[0].Type != "Internal" || !slices.Equal(nets[0].Subnets, []netip.Prefix{blockA}) {
		t.Fatalf("networks %+v", nets)
	}
	// Same blocks again: nothing changes (after a restart too).
	m2 := newManager(f)
	if err := m2.EnsureNetwork([]netip.Prefix{blockA, blockA}); err != nil {
		t.Fatal(err)
	}
	if f.Calls["create-network"] != 1 || f.Calls["set-subnets"] != 0 {
		t.Errorf("re-ensure made calls: %v", f.Calls)
	}
	// A block comes, then the first one goes.
	if err := m2.EnsureNetwork([]netip.Prefix{blockB, blockA}); err != nil {
		t.Fatal(err)
	}
	if err := m2.EnsureNetwork([]netip.Prefix{blockB}); err != nil {
		t.Fatal(err)
	}
	nets, _, _ = f.State()
	if !slices.Equal(nets[0].Subnets, []netip.Prefix{blockB}) || f.Calls["set-subnets"] != 2 {
		t.Errorf("subnets %v after %d updates", nets[0].Subnets, f.Calls["set-subnets"])
	}
	if err := m2.EnsureNetwork(nil); !errors.Is(err, winhcn.ErrNoNetwork) {
		t.Errorf("no blocks: %v", err)
	}
}

// A network of our name in a bad state (another type): replaced when it
// is empty, refused with nothing changed when it has endpoints.
func TestEnsureNetworkBadState(t *testing.T) {
	f := winhcntest.New()
	old := f.AddNetwork(winhcn.Network{Name: "zlmesh", Type: "NAT", Subnets: []netip.Prefix{blockA}})
	if err := newManager(f).EnsureNetwork([]netip.Prefix{blockA}); err != nil {
		t.Fatal(err)
	}
	nets, _, _ := f.State()
	if len(nets) != 1 || nets[0].ID == old || nets[0].Type != "Internal" {
		t.Fatalf("bad network not replaced: %+v", nets)
	}

	f = winhcntest.New()
	old = f.AddNetwork(winhcn.Network{Name: "zlmesh", Type: "NAT", Subnets: []netip.Prefix{blockA}})
	f.AddEndpoint(winhcn.Endpoint{Name: "someone-else", NetworkID: old, Address: pfx("10.200.4.9/26")})
	err := newManager(f).EnsureNetwork([]netip.Prefix{blockA})
	if !errors.Is(err, winhcn.ErrBadNetwork) {
		t.Fatalf("bad network with endpoints: %v, want ErrBadNetwork", err)
	}
	nets, eps, _ := f.State()
	if len(nets) != 1 || nets[0].ID != old || len(eps) != 1 {
		t.Errorf("changed anyway: %+v %+v", nets, eps)
	}
}

func TestAttachDetach(t *testing.T) {
	f := winhcntest.New()
	f.SettleFailures = 3 // a fresh network refuses endpoints for a while
	m := newManager(f)
	if err := m.EnsureNetwork([]netip.Prefix{blockA}); err != nil {
		t.Fatal(err)
	}
	a, err := m.Attach(context.Background(), spec("web1", "10.200.4.5/32"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Calls["create-endpoint"] != 4 {
		t.Errorf("create-endpoint called %d times, want 3 failures + 1", f.Calls["create-endpoint"])
	}
	_, eps, nss := f.State()
	if len(eps) != 1 || len(nss) != 1 {
		t.Fatalf("endpoints %+v namespaces %v", eps, nss)
	}
	e := eps[0]
	want := winhcn.Endpoint{
		ID: a.EndpointID, Name: "zlmesh-web1", NetworkID: e.NetworkID, NamespaceID: a.NamespaceID,
		Address: pfx("10.200.4.5/32"),
		Routes: []winhcn.Route{
			{Dst: pfx("0.0.0.0/0"), NextHop: gw},
			{Dst: pfx("10.200.0.0/16"), NextHop: gw},
		},
		DNSServers:    []netip.Addr{addr("10.200.255.53")},
		DNSSearch:     []string{"zl"},
		NATExceptions: cluster,
		AllowIn:       cluster,
	}
	if !equalEndpoint(e, want) {
		t.Errorf("endpoint\n%+v\nwant\n%+v", e, want)
	}
	if nss[0] != a.NamespaceID {
		t.Errorf("namespace %s, attached says %s", nss[0], a.NamespaceID)
	}

	// Again (a retried request, or adoption): the same endpoint.
	b, err := m.Attach(context.Background(), spec("web1", "10.200.4.5/32"))
	if err != nil || b != a {
		t.Errorf("second attach: %+v %v, want %+v", b, err, a)
	}
	// Renumbered: replaced, the old namespace gone with the old endpoint.
	c, err := m.Attach(context.Background(), spec("web1", "10.200.4.6/32"))
	if err != nil || c.EndpointID == a.EndpointID {
		t.Fatalf("readdress: %+v %v", c, err)
	}
	_, eps, nss = f.State()
	if len(eps) != 1 || eps[0].Address != pfx("10.200.4.6/32") || !slices.Equal(nss, []string{c.NamespaceID}) {
		t.Errorf("after readdress: %+v %v", eps, nss)
	}

	// Detach deletes the endpoint and its namespace; again is fine.
	for range 2 {
		if err := m.Detach("web1"); err != nil {
			t.Fatal(err)
		}
	}
	_, eps, nss = f.State()
	if len(eps) != 0 || len(nss) != 0 {
		t.Errorf("detach left %+v %v", eps, nss)
	}
}

func TestAttachErrors(t *testing.T) {
	boom := errors.New("boom")
	cases := []struct {
		name   string
		setup  func(f *winhcntest.Fake)
		ensure bool
		spec   winhcn.Spec
		want   error
	}{
		{"before the network", nil, false, spec("web1", "10.200.4.5/32"), winhcn.ErrNoNetwork},
		{"outside the blocks", nil, true, spec("web1", "10.200.5.5/32"), winhcn.ErrNotInBlocks},
		{"bad container id", nil, true, spec("web 1", "10.200.4.5/32"), nil},
		{"no gateway", nil, true, winhcn.Spec{Container: "web1", Address: pfx("10.200.4.5/32")}, nil},
		{"never settles", func(f *winhcntest.Fake) { f.SettleFailures = 1 << 20 }, true, spec("web1", "10.200.4.5/32"), nil},
		{"namespace fails", func(f *winhcntest.Fake) {
			f.Fail = func(op string) error {
				if op == "create-namespace" {
					return boom
				}
				return nil
			}
		}, true, spec("web1", "10.200.4.5/32"), boom},
		{"attach to namespace fails", func(f *winhcntest.Fake) {
			f.Fail = func(op string) error {
				if op == "attach-namespace" {
					return boom
				}
				return nil
			}
		}, true, spec("web1", "10.200.4.5/32"), boom},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := winhcntest.New()
			m := winhcn.New(f, winhcn.Config{Cluster: cluster, SettleTimeout: 50 * time.Millisecond, SettleInterval: 5 * time.Millisecond})
			if tc.setup != nil {
				tc.setup(f)
			}
			if tc.ensure {
				if err := m.EnsureNetwork([]netip.Prefix{blockA}); err != nil {
					t.Fatal(err)
				}
			}
			_, err := m.Attach(context.Background(), tc.spec)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			// Nothing half made.
			_, eps, nss := f.State()
			if len(eps) != 0 || len(nss) != 0 {
				t.Errorf("left behind: %+v %v", eps, nss)
			}
		})
	}
	// Unavailable (Wine, no HNS): not retried.
	f := winhcntest.New()
	m := newManager(f)
	m.EnsureNetwork([]netip.Prefix{blockA})
	f.Unavailable = true
	if _, err := m.Attach(context.Background(), spec("web1", "10.200.4.5/32")); !errors.Is(err, winhcn.ErrUnavailable) {
		t.Errorf("unavailable: %v", err)
	}
	// A cancelled context stops the settle wait.
	f = winhcntest.New()
	f.SettleFailures = 1 << 20
	m = winhcn.New(f, winhcn.Config{SettleTimeout: time.Hour, SettleInterval: time.Millisecond})
	m.EnsureNetwork([]netip.Prefix{blockA})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := m.Attach(ctx, spec("web1", "10.200.4.5/32")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled settle: %v", err)
	}
}

// After a restart: Inventory finds our endpoints (not others'), Alive
// tells which containers are still there, Sweep removes the rest with
// their namespaces, RemoveNetwork purges.
func TestAdoptSweepPurge(t *testing.T) {
	f := winhcntest.New()
	m := newManager(f)
	if err := m.EnsureNetwork([]netip.Prefix{blockA, blockB}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	web, _ := m.Attach(ctx, spec("web1", "10.200.4.5/32"))
	db, _ := m.Attach(ctx, spec("db1", "10.200.9.70/32"))
	if _, err := m.Attach(ctx, spec("gone1", "10.200.4.6/32")); err != nil {
		t.Fatal(err)
	}
	nets, _, _ := f.State()
	f.AddEndpoint(winhcn.Endpoint{Name: "not-ours", NetworkID: nets[0].ID, Address: pfx("10.200.4.7/32")})
	f.RemoveNamespace(db.NamespaceID) // db1's container went while we were down

	m2 := newManager(f) // the restarted node
	if err := m2.EnsureNetwork([]netip.Prefix{blockA, blockB}); err != nil {
		t.Fatal(err)
	}
	inv, err := m2.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range inv {
		names = append(names, a.Container)
	}
	if !slices.Equal(names, []string{"db1", "gone1", "web1"}) {
		t.Fatalf("inventory %v", names)
	}
	if inv[2] != web {
		t.Errorf("web1 inventory %+v, attached %+v", inv[2], web)
	}
	if ok, _ := m2.Alive(inv[0]); ok {
		t.Error("db1 alive without its namespace")
	}
	if ok, _ := m2.Alive(inv[2]); !ok {
		t.Error("web1 not alive")
	}
	// Adoption: attaching web1 again with its address keeps it.
	if a, err := m2.Attach(ctx, spec("web1", "10.200.4.5/32")); err != nil || a != web {
		t.Errorf("adopt web1: %+v %v", a, err)
	}
	// db1 (namespace gone) re-attached gets a fresh endpoint; nothing leaks.
	if a, err := m2.Attach(ctx, spec("db1", "10.200.9.70/32")); err != nil || a.EndpointID == db.EndpointID {
		t.Errorf("re-attach db1: %+v %v", a, err)
	}
	swept, err := m2.Sweep(func(c string) bool { return c != "gone1" })
	if err != nil || !slices.Equal(swept, []string{"gone1"}) {
		t.Errorf("sweep: %v %v", swept, err)
	}
	_, eps, nss := f.State()
	if len(eps) != 3 || len(nss) != 2 {
		t.Errorf("after sweep: %d endpoints %d namespaces, want 3 (web1, db1, not-ours) and 2", len(eps), len(nss))
	}
	// Purge: ours go; someone else's endpoint keeps the network.
	if err := m2.RemoveNetwork(); err == nil {
		t.Error("network with someone else's endpoint removed")
	}
	_, eps, nss = f.State()
	if len(eps) != 1 || eps[0].Name != "not-ours" || len(nss) != 0 {
		t.Errorf("purge left %+v %v", eps, nss)
	}
}

// Blocks can go while endpoints use them: HNS refuses, the error says so.
func TestBlockInUseCannotGo(t *testing.T) {
	f := winhcntest.New()
	m := newManager(f)
	m.EnsureNetwork([]netip.Prefix{blockA, blockB})
	if _, err := m.Attach(context.Background(), spec("web1", "10.200.4.5/32")); err != nil {
		t.Fatal(err)
	}
	if err := m.EnsureNetwork([]netip.Prefix{blockB}); err == nil {
		t.Error("dropping a block in use succeeded")
	}
	if err := m.Detach("web1"); err != nil {
		t.Fatal(err)
	}
	if err := m.EnsureNetwork([]netip.Prefix{blockB}); err != nil {
		t.Errorf("dropping a free block: %v", err)
	}
}

func equalEndpoint(a, b winhcn.Endpoint) bool {
	return a.ID == b.ID && a.Name == b.Name && a.NetworkID == b.NetworkID && a.NamespaceID == b.NamespaceID &&
		a.Address == b.Address && slices.Equal(a.Routes, b.Routes) && slices.Equal(a.DNSServers, b.DNSServers) &&
		slices.Equal(a.DNSSearch, b.DNSSearch) && slices.Equal(a.NATExceptions, b.NATExceptions) && slices.Equal(a.AllowIn, b.AllowIn)
}

// Attach by container id: an unknown id is ErrNoContainer before anything
// is made; a known one gets its endpoint put into the container; a failure
// to put it there leaves no endpoint and no namespace.
func TestAttachByContainerID(t *testing.T) {
	cases := []struct {
		name     string
		known    bool
		failHot  bool
		wantErr  error
		wantEps  int
		inserted bool
	}{
		{name: "known container", known: true, wantEps: 1, inserted: true},
		{name: "unknown container", wantErr: winhcn.ErrNoContainer},
		{name: "hot add fails", known: true, failHot: true, wantErr: winhcn.ErrUnavailable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := winhcntest.New()
			if tc.known {
				f.AddContainer("3f1c0a")
			}
			if tc.failHot {
				f.Fail = func(op string) error {
					if op == "attach-container" {
						return winhcn.ErrUnavailable
					}
					return nil
				}
			}
			m := newManager(f)
			if err := m.EnsureNetwork([]netip.Prefix{blockA}); err != nil {
				t.Fatal(err)
			}
			s := spec("web-1", "10.200.4.7/32")
			s.ContainerID = "3f1c0a"
			a, err := m.Attach(context.Background(), s)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Attach = %v, want %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "web-1") {
				t.Errorf("error %q does not name the container", err)
			}
			_, eps, nss := f.State()
			if len(eps) != tc.wantEps || len(nss) != tc.wantEps {
				t.Fatalf("endpoints %v namespaces %v, want %d of each", eps, nss, tc.wantEps)
			}
			if tc.inserted && f.Container(a.EndpointID) != "3f1c0a" {
				t.Errorf("endpoint %s not put into the container", a.EndpointID)
			}
			if tc.known {
				if ok, err := m.ContainerAlive("3f1c0a"); !ok || err != nil {
					t.Errorf("ContainerAlive = %v, %v", ok, err)
				}
				f.RemoveContainer("3f1c0a")
				if ok, err := m.ContainerAlive("3f1c0a"); ok || err != nil {
					t.Errorf("ContainerAlive after removal = %v, %v", ok, err)
				}
			}
		})
	}
}

package node

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/internal/statefile"
	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/mesh"
	"github.com/zlmesh/zlmesh/mesh/meshtest"
	"github.com/zlmesh/zlmesh/natd"
)

func TestTargetIndex(t *testing.T) {
	local := func(container, service, addr string) attachment {
		return attachment{Spec: ContainerSpec{Container: container, Service: service, Address: netip.MustParsePrefix(addr)}}
	}
	ep := func(node, container, service, addr string) api.ServiceEndpoint {
		return api.ServiceEndpoint{Node: node, Container: container, Service: service, Address: addr}
	}
	alive := func(node string) bool { return node != "h9" }
	tests := []struct {
		name  string
		local []attachment
		eps   []api.ServiceEndpoint
		pm    api.PortMapping
		want  string // "" for unresolved
	}{
		{
			// A restarted node whose store has not synced yet: the
			// local attachment alone resolves it.
			name:  "local attachment, no record yet",
			local: []attachment{local("web", "web", "10.200.1.34/27")},
			pm:    api.PortMapping{Container: "web"},
			want:  "10.200.1.34",
		},
		{
			// The record still carries the address from before a
			// renumbering; the attachment is the truth.
			name:  "local attachment over its stale record",
			local: []attachment{local("web", "web", "10.200.7.34/27")},
			eps:   []api.ServiceEndpoint{ep("h1", "web", "web", "10.200.1.34")},
			pm:    api.PortMapping{Container: "web"},
			want:  "10.200.7.34",
		},
		{
			name: "remote container from its record",
			eps:  []api.ServiceEndpoint{ep("h2", "api", "api", "10.200.2.34"), ep("h2", "db", "db", "10.200.2.66")},
			pm:   api.PortMapping{Container: "api"},
			want: "10.200.2.34",
		},
		{
			name: "remote container on a node that is down",
			eps:  []api.ServiceEndpoint{ep("h9", "api", "api", "10.200.9.34")},
			pm:   api.PortMapping{Container: "api"},
			want: "10.200.9.34",
		},
		{
			name: "unknown container",
			eps:  []api.ServiceEndpoint{ep("h2", "api", "api", "10.200.2.34")},
			pm:   api.PortMapping{Container: "nosuch"},
		},
		{
			name: "a container is not a service",
			eps:  []api.ServiceEndpoint{ep("h2", "api", "api-svc", "10.200.2.34")},
			pm:   api.PortMapping{Container: "api-svc"},
		},
		{
			name:  "service: the local endpoint first",
			local: []attachment{local("api3", "api", "10.200.1.40/27")},
			eps:   []api.ServiceEndpoint{ep("h2", "api1", "api", "10.200.0.34"), ep("h1", "api3", "api", "10.200.1.40")},
			pm:    api.PortMapping{Service: "api"},
			want:  "10.200.1.40",
		},
		{
			name: "service: alive before down, then the lowest address",
			eps: []api.ServiceEndpoint{ep("h9", "a0", "api", "10.200.0.34"), ep("h3", "a3", "api", "10.200.3.34"),
				ep("h2", "a2", "api", "10.200.2.34")},
			pm:   api.PortMapping{Service: "api"},
			want: "10.200.2.34",
		},
		{
			name: "bad address in a record is skipped",
			eps:  []api.ServiceEndpoint{ep("h2", "api", "api", "garbage")},
			pm:   api.PortMapping{Container: "api"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := newTargetIndex("h1", tt.local, tt.eps, alive).resolve(tt.pm)
			if tt.want == "" {
				if ok {
					t.Fatalf("resolved to %s, want nothing", got)
				}
				return
			}
			if !ok || got.String() != tt.want {
				t.Fatalf("resolved to %v (%v), want %s", got, ok, tt.want)
			}
		})
	}
}

func TestPortTarget(t *testing.T) {
	x := newTargetIndex("h1", nil, []api.ServiceEndpoint{{Node: "h2", Container: "api", Service: "api", Address: "10.200.2.40"}},
		func(string) bool { return true })
	tests := []struct {
		name   string
		pm     api.PortMapping
		synced bool
		want   string // "" for nowhere
	}{
		{"resolved: the current address", api.PortMapping{Container: "api", ContainerPort: 80, Target: "10.200.2.34:80"}, true, "10.200.2.40:80"},
		{"resolved before sync too", api.PortMapping{Container: "api", ContainerPort: 80, Target: "10.200.2.34:80"}, false, "10.200.2.40:80"},
		// A restarted node that has not heard from the cluster yet keeps
		// what the kernel kept.
		{"unresolved before sync: the last target", api.PortMapping{Container: "gone", ContainerPort: 80, Target: "10.200.3.34:80"}, false, "10.200.3.34:80"},
		{"unresolved after sync: nowhere", api.PortMapping{Container: "gone", ContainerPort: 80, Target: "10.200.3.34:80"}, true, ""},
		{"unresolved, no last target", api.PortMapping{Container: "gone", ContainerPort: 80}, false, ""},
	}
	// The IPv6 target: the endpoint's IPv6 address, or the last one kept.
	x6 := newTargetIndex("h1", nil, []api.ServiceEndpoint{{Node: "h2", Container: "api", Service: "api", Address: "10.200.2.40", Address6: "fd12::40"}},
		func(string) bool { return true })
	if _, t6, ok := portTarget(api.PortMapping{Container: "api", ContainerPort: 80}, x6, true); !ok || t6.String() != "[fd12::40]:80" {
		t.Errorf("IPv6 target %v (%v), want [fd12::40]:80", t6, ok)
	}
	if _, t6, ok := portTarget(api.PortMapping{Container: "gone", ContainerPort: 80, Target: "10.200.3.34:80", Target6: "[fd12::34]:80"}, x6, false); !ok || t6.String() != "[fd12::34]:80" {
		t.Errorf("kept IPv6 target %v (%v), want [fd12::34]:80", t6, ok)
	}
	if _, t6, _ := portTarget(api.PortMapping{Container: "api", ContainerPort: 80}, x, true); t6.IsValid() {
		t.Errorf("IPv6 target %v for an endpoint without IPv6", t6)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, ok := portTarget(tt.pm, x, tt.synced)
			if tt.want == "" {
				if ok {
					t.Fatalf("forwards to %s, want nowhere", got)
				}
				return
			}
			if !ok || got.String() != tt.want {
				t.Fatalf("forwards to %v (%v), want %s", got, ok, tt.want)
			}
		})
	}
}

// fakeNAT records what the node asks of its NAT table.
type fakeNAT struct {
	mu     sync.Mutex
	sets   []natd.Config
	purges int
}

func (f *fakeNAT) Set(cfg natd.Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := cfg.Validate(); err != nil {
		return err
	}
	f.sets = append(f.sets, cfg)
	return nil
}

func (f *fakeNAT) Purge() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.purges++
	return nil
}

func (f *fakeNAT) Close() error { return nil }

// last returns the ports of the last Set and how many Sets there were.
func (f *fakeNAT) last() ([]string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.sets) == 0 {
		return nil, 0
	}
	var s []string
	for _, p := range f.sets[len(f.sets)-1].Ports {
		s = append(s, p.String())
	}
	slices.Sort(s) // the node gives them in map order
	return s, len(f.sets)
}

// portsNode is the part of a Node that published ports use: an in-memory
// mesh (with a seed that never answers when join is set: the node expects
// peers and never syncs), the state dir, a fake NAT. local are its
// attachments, ports what its state dir says it published.
func portsNode(t testing.TB, join bool, local []attachment, ports map[string]api.PortMapping) (*Node, *fakeNAT) {
	t.Helper()
	dir := t.TempDir()
	if len(ports) > 0 {
		if err := statefile.WriteJSON(filepath.Join(dir, portsFile), portsState{Ports: ports}); err != nil {
			t.Fatal(err)
		}
	}
	mc := mesh.Config{Name: "h1", Transport: meshtest.NewNetwork().NewTransport("h1"), Logger: slog.New(slog.DiscardHandler)}
	if join {
		mc.Join = []string{"127.77.0.99:7946"}
	}
	m, err := mesh.Start(mc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	pool, err := ipam.NewPool(netip.MustParsePrefix("10.200.0.0/16"), 26)
	if err != nil {
		t.Fatal(err)
	}
	p, err := loadPorts(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	nat := &fakeNAT{}
	n := &Node{
		cfg:    Config{Name: "h1", Interface: "zl0", StateDir: dir},
		log:    slog.New(slog.DiscardHandler),
		pool:   pool,
		mesh:   m,
		nat:    nat,
		ports:  p,
		events: newEventHub(),
		attach: &attachments{path: filepath.Join(dir, attachFile), byID: map[string]attachment{}, busy: map[string]bool{}},
		claims: []ipam.Claim{{Block: netip.MustParsePrefix("10.200.1.0/26")}},
	}
	for _, at := range local {
		n.attach.byID[at.Spec.Container] = at
	}
	return n, nat
}

// A node restarted alone (its seed does not answer, its record store is
// empty): the port to its local container resolves from the attachment,
// and the port to a remote container keeps its last target, also long
// past portGrace, instead of being dropped from the kernel and forgotten.
func TestPortsRestartedAlone(t *testing.T) {
	web := attachment{Spec: ContainerSpec{Container: "web", Service: "web", Address: netip.MustParsePrefix("10.200.1.34/27")}}
	ports := map[string]api.PortMapping{
		portKey("h1", "tcp", "", 8080): {Node: "h1", Container: "web", Protocol: "tcp", HostPort: 8080, ContainerPort: 80, Target: "10.200.1.34:80"},
		portKey("h1", "tcp", "", 8081): {Node: "h1", Container: "api", Protocol: "tcp", HostPort: 8081, ContainerPort: 80, Target: "10.200.2.34:80"},
	}
	n, nat := portsNode(t, true, []attachment{web}, ports)
	want := []string{"tcp *:8080 → 10.200.1.34:80", "tcp *:8081 → 10.200.2.34:80"}
	n.reconcilePorts()
	if got, _ := nat.last(); !slices.Equal(got, want) {
		t.Fatalf("after a restart alone the NAT table gets %v, want %v", got, want)
	}
	// Long past the grace: still not synced, so nothing is removed.
	for k := range n.ports.missingSince {
		n.ports.missingSince[k] = time.Now().Add(-2 * portGrace)
	}
	n.reconcilePorts()
	if got, _ := nat.last(); !slices.Equal(got, want) {
		t.Fatalf("past the grace, alone, the NAT table gets %v, want %v", got, want)
	}
	if len(n.ports.byKey) != 2 {
		t.Fatalf("ports forgotten while alone: %v", n.ports.byKey)
	}
}

// In a cluster of one (no peer expected) the store is complete at once: a
// port whose container is gone forwards nowhere, and goes after the grace;
// a port to a local container forwards to the attachment's address before
// any service record is written (and after renumbering, not to the
// address it had).
func TestPortsVanishedContainerAlone(t *testing.T) {
	web := attachment{Spec: ContainerSpec{Container: "web", Service: "web", Address: netip.MustParsePrefix("10.200.1.66/27")}}
	ports := map[string]api.PortMapping{
		portKey("h1", "udp", "", 53):   {Node: "h1", Container: "gone", Protocol: "udp", HostPort: 53, ContainerPort: 53, Target: "10.200.1.40:53"},
		portKey("h1", "tcp", "", 8080): {Node: "h1", Container: "web", Protocol: "tcp", HostPort: 8080, ContainerPort: 80, Target: "10.200.1.34:80"},
	}
	n, nat := portsNode(t, false, []attachment{web}, ports)
	n.reconcilePorts()
	want := []string{"tcp *:8080 → 10.200.1.66:80"}
	if got, _ := nat.last(); !slices.Equal(got, want) {
		t.Fatalf("the NAT table gets %v, want %v", got, want)
	}
	if len(n.ports.byKey) != 2 {
		t.Fatalf("removed before the grace: %v", n.ports.byKey)
	}
	if pm := n.ports.byKey[portKey("h1", "tcp", "", 8080)]; pm.Target != "10.200.1.66:80" {
		t.Errorf("the state keeps target %s for web, want its current 10.200.1.66:80", pm.Target)
	}
	for k := range n.ports.missingSince {
		n.ports.missingSince[k] = time.Now().Add(-2 * portGrace)
	}
	n.reconcilePorts()
	if _, ok := n.ports.byKey[portKey("h1", "udp", "", 53)]; ok || len(n.ports.byKey) != 1 {
		t.Fatalf("past the grace the ports are %v, want only web's", n.ports.byKey)
	}
	if got, _ := nat.last(); !slices.Equal(got, want) {
		t.Fatalf("past the grace the NAT table gets %v, want %v", got, want)
	}
}

// After purgeNAT (zlmesh down --purge) nothing makes the table again: not
// the sweep's reconcile, not a publish or an unpublish.
func TestPortsPurgeIsFinal(t *testing.T) {
	web := attachment{Spec: ContainerSpec{Container: "web", Service: "web", Address: netip.MustParsePrefix("10.200.1.34/27")}}
	n, nat := portsNode(t, false, []attachment{web}, nil)
	if _, err := n.Publish(api.PublishRequest{Container: "web", Protocol: "tcp", HostPort: 8080, ContainerPort: 80}); err != nil {
		t.Fatal(err)
	}
	if err := n.purgeNAT(); err != nil {
		t.Fatal(err)
	}
	_, sets := nat.last()
	n.reconcilePorts()
	_, err := n.Publish(api.PublishRequest{Container: "web", Protocol: "tcp", HostPort: 8081, ContainerPort: 80})
	if code, _ := apiCode(err); code != api.CodeNotReady {
		t.Errorf("publish after purge: %v, want %s", err, api.CodeNotReady)
	}
	err = n.Unpublish(api.UnpublishRequest{Protocol: "tcp", HostPort: 8080})
	if code, _ := apiCode(err); code != api.CodeNotReady {
		t.Errorf("unpublish after purge: %v, want %s", err, api.CodeNotReady)
	}
	n.unpublishContainer("web")
	if _, after := nat.last(); after != sets || nat.purges != 1 {
		t.Errorf("after the purge the NAT table was set %d more times (purges %d)", after-sets, nat.purges)
	}
	// The purge forgets the ports: the next life of the node starts without.
	again, err := loadPorts(n.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer again.close() // an open journal cannot be deleted on Windows
	if len(again.byKey) != 0 {
		t.Errorf("after the purge the state file still has ports: %v", again.byKey)
	}
	if recs := n.mesh.Store().List(portKind); len(recs) != 0 {
		t.Errorf("after the purge the store still has port records: %v", recs)
	}
}

// Published ports are journaled: every publish, unpublish and change of
// target is in the state dir when the call returns, a reload sees exactly
// the ports of the moment, also once the journal was folded into a
// snapshot, and a garbled record in the middle of the journal is an error,
// never an empty table.
func TestPortsJournal(t *testing.T) {
	web := attachment{Spec: ContainerSpec{Container: "web", Service: "web", Address: netip.MustParsePrefix("10.200.1.34/27")}}
	n, _ := portsNode(t, false, []attachment{web}, nil)
	reload := func() map[string]api.PortMapping {
		t.Helper()
		p, err := loadPorts(n.cfg.StateDir)
		if err != nil {
			t.Fatal(err)
		}
		defer p.close()
		return p.byKey
	}
	// Past minCompact changes, so that at least one fold happens.
	for i := range minCompact + 10 {
		port := 20000 + i
		if _, err := n.Publish(api.PublishRequest{Container: "web", Protocol: "tcp", HostPort: port, ContainerPort: 80}); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			if err := n.Unpublish(api.UnpublishRequest{Protocol: "tcp", HostPort: port}); err != nil {
				t.Fatal(err)
			}
		}
	}
	n.ports.mu.Lock()
	want := maps.Clone(n.ports.byKey)
	n.ports.mu.Unlock()
	if got := reload(); !maps.Equal(got, want) {
		t.Fatalf("reloaded %d ports, want %d", len(got), len(want))
	}
	// The container moves: reconcile records the new target.
	moved := web
	moved.Spec.Address = netip.MustParsePrefix("10.200.7.34/27")
	n.attach.mu.Lock()
	n.attach.byID["web"] = moved
	n.attach.mu.Unlock()
	n.reconcilePorts()
	for k, pm := range reload() {
		if pm.Target != "10.200.7.34:80" {
			t.Fatalf("after the move %s leads to %s on reload, want 10.200.7.34:80", k, pm.Target)
		}
	}

	// A bad record followed by good ones.
	logPath := filepath.Join(n.cfg.StateDir, portsFile) + ".log"
	if _, err := n.Publish(api.PublishRequest{Container: "web", Protocol: "udp", HostPort: 53, ContainerPort: 53}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Publish(api.PublishRequest{Container: "web", Protocol: "udp", HostPort: 54, ContainerPort: 53}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
	if len(lines) < 3 {
		t.Fatalf("journal has %d lines, want a header and two records", len(lines))
	}
	lines[len(lines)-2][12] ^= 0x01
	if err := os.WriteFile(logPath, append(bytes.Join(lines, []byte("\n")), '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	if p, err := loadPorts(n.cfg.StateDir); err == nil {
		p.close()
		t.Fatalf("a journal with a garbled record in the middle loaded (%d ports)", len(p.byKey))
	} else if !strings.Contains(err.Error(), portsFile) {
		t.Errorf("error does not name the file: %v", err)
	}
}

func apiCode(err error) (string, int) {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Code, ae.Status
	}
	return "", 0
}

// BenchmarkPublish is one publish and its unpublish on a node that already
// publishes N other ports: the node's share (validation, target lookup, the
// journal's synced appends, the record store; the NAT is a fake, natd's
// share is natd's BenchmarkSet). It must not grow with N.
func BenchmarkPublish(b *testing.B) {
	web := attachment{Spec: ContainerSpec{Container: "web", Service: "web", Address: netip.MustParsePrefix("10.200.1.34/27")}}
	for _, size := range []int{0, 1000} {
		b.Run(fmt.Sprintf("ports=%d", size), func(b *testing.B) {
			n, _ := portsNode(b, false, []attachment{web}, nil)
			for i := range size {
				if _, err := n.Publish(api.PublishRequest{Container: "web", Protocol: "tcp", HostPort: 20000 + i, ContainerPort: 80}); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for b.Loop() {
				if _, err := n.Publish(api.PublishRequest{Container: "web", Protocol: "udp", HostPort: 9, ContainerPort: 9}); err != nil {
					b.Fatal(err)
				}
				if err := n.Unpublish(api.UnpublishRequest{Protocol: "udp", HostPort: 9}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

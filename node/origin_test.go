package node

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/bridge"
)

func TestValidateOrigin(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    *api.Origin
		ok   bool
	}{
		{"none", nil, true},
		{"cni", &api.Origin{Kind: api.OriginCNI, Network: "zl", ContainerID: "abc", Ifname: "eth0", Netns: "/run/netns/x"}, true},
		{"empty kind", &api.Origin{Network: "zl"}, false},
		{"upper kind", &api.Origin{Kind: "CNI"}, false},
		{"long kind", &api.Origin{Kind: strings.Repeat("a", 33)}, false},
		{"long field", &api.Origin{Kind: "cni", Network: strings.Repeat("a", 257)}, false},
		{"control char", &api.Origin{Kind: "cni", ContainerID: "a\nb"}, false},
		{"not utf-8", &api.Origin{Kind: "cni", Netns: "\xff"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validateOrigin(tc.o)
			if (err == nil) != tc.ok {
				t.Fatalf("validateOrigin = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

func TestIsHandlePath(t *testing.T) {
	for path, want := range map[string]bool{
		"/proc/123/fd/7":          true,
		"/proc/self/fd/3":         true,
		"/proc/1/task/2/fd/3":     true,
		"/dev/fd/4":               true,
		"/proc/123/ns/net":        false,
		"/run/netns/web1":         false,
		"/proc/123/fd/7/../../x":  false,
		"/var/run/netns/cni-1234": false,
	} {
		if got := isHandlePath(path); got != want {
			t.Errorf("isHandlePath(%q) = %v, want %v", path, got, want)
		}
	}
}

// pathContainers answers Alive by path: alive when the spec's path is in
// paths.
type pathContainers struct {
	fakeContainers
	paths map[string]bool
}

func (p *pathContainers) Alive(s ContainerSpec, _ NamespaceID) (bool, error) {
	return p.paths[s.Netns], nil
}

// An attach through a handle path records the runtime's path when the node
// sees the same namespace there, else keeps the handle; an attachment kept
// by its handle is alive while its veth exists, whatever the handle path
// says now, and a reachable one is asked of Containers.Alive.
func TestHandleAttachments(t *testing.T) {
	id := NamespaceID{Dev: 4, Ino: 1000}
	fc := &pathContainers{paths: map[string]bool{"/run/netns/visible": true, "/proc/42/fd/5": true}}
	n := &Node{log: slog.New(slog.DiscardHandler), containers: fc}
	spec := ContainerSpec{Service: "web", Container: "c1", Netns: "/proc/42/fd/5"}

	got := n.durableSpec(spec, &api.Origin{Kind: "cni", Netns: "/run/netns/visible"}, id)
	if got.Netns != "/run/netns/visible" {
		t.Errorf("visible runtime path: recorded %q", got.Netns)
	}
	got = n.durableSpec(spec, &api.Origin{Kind: "cni", Netns: "/run/netns/elsewhere"}, id)
	if got.Netns != spec.Netns {
		t.Errorf("invisible runtime path: recorded %q, want the handle", got.Netns)
	}
	if got := n.durableSpec(spec, nil, id); got.Netns != spec.Netns {
		t.Errorf("no origin: recorded %q", got.Netns)
	}
	plain := ContainerSpec{Service: "web", Container: "c2", Netns: "/run/netns/c2"}
	if got := n.durableSpec(plain, &api.Origin{Kind: "cni", Netns: "/run/netns/visible"}, id); got != plain {
		t.Errorf("a plain path was replaced: %+v", got)
	}

	fc.inv = ContainerInventory{Links: []PlumbingLink{{Name: bridge.VethName("handle-up")}, {Name: bridge.VethName("stray"), Stray: true}}}
	check := n.newAliveCheck()
	for _, tc := range []struct {
		name string
		at   attachment
		want bool
	}{
		{"handle, veth present", attachment{Spec: ContainerSpec{Container: "handle-up", Netns: "/proc/42/fd/5"}, Attached: Plumbed{HostVeth: bridge.VethName("handle-up")}}, true},
		{"handle, veth gone", attachment{Spec: ContainerSpec{Container: "handle-gone", Netns: "/proc/42/fd/5"}, Attached: Plumbed{HostVeth: bridge.VethName("handle-gone")}}, false},
		{"handle, stray veth", attachment{Spec: ContainerSpec{Container: "stray", Netns: "/proc/42/fd/6"}, Attached: Plumbed{HostVeth: bridge.VethName("stray")}}, false},
		{"path alive", attachment{Spec: ContainerSpec{Container: "v", Netns: "/run/netns/visible"}}, true},
		{"path gone", attachment{Spec: ContainerSpec{Container: "g", Netns: "/run/netns/gone"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := check.alive(tc.at)
			if err != nil || got != tc.want {
				t.Fatalf("alive = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// The origin is journaled with its attachment.
func TestOriginJournaled(t *testing.T) {
	dir := t.TempDir()
	a, err := loadAttachments(dir)
	if err != nil {
		t.Fatal(err)
	}
	at := testAttachment("c1", "web", "10.200.3.34/27")
	at.Origin = &api.Origin{Kind: api.OriginCNI, Network: "zl", ContainerID: "abc", Ifname: "eth0", Netns: "/run/netns/x"}
	if err := a.put(at); err != nil {
		t.Fatal(err)
	}
	a.close()
	b, err := loadAttachments(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	got, ok := b.get("c1")
	if !ok || got.Origin == nil || *got.Origin != *at.Origin {
		t.Fatalf("reloaded origin %+v, want %+v", got.Origin, at.Origin)
	}
}

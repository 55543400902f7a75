package node

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/bridge"
)

// testdata/attachments-v1 is a state dir's attachments.json and its
// journal as written by the node before it had its own attachment types
// (bridge.Spec and bridge.Attached, json keys the Go field names), from
// writeStateV1's changes: a snapshot of the four stateV1Attachments, then
// a journal deleting pid-7 and adding "late". The node must keep loading
// and writing exactly that format.
const stateV1Dir = "testdata/attachments-v1"

// writeStateV1 makes the changes testdata/attachments-v1 was made with.
func writeStateV1(t *testing.T, a *attachments) {
	t.Helper()
	for _, at := range stateV1Attachments() {
		if err := a.put(at); err != nil {
			t.Fatal(err)
		}
	}
	if err := rewriteJournaled(a.log, attachState{Attachments: a.byID}); err != nil {
		t.Fatal(err)
	}
	if err := a.remove("pid-7"); err != nil {
		t.Fatal(err)
	}
	if err := a.put(stateV1Late()); err != nil {
		t.Fatal(err)
	}
}

// stateV1Late is the attachment the journal of testdata/attachments-v1 adds.
func stateV1Late() attachment {
	late := stateV1Attachments()[0]
	late.Spec.Container, late.Attached.HostVeth = "late", bridge.VethName("late")
	return late
}

// stateV1Want is what testdata/attachments-v1 holds, by container.
func stateV1Want() map[string]attachment {
	want := map[string]attachment{}
	for _, at := range append(stateV1Attachments(), stateV1Late()) {
		want[at.Spec.Container] = at
	}
	delete(want, "pid-7")
	return want
}

// copyStateV1 copies testdata/attachments-v1 into a new state dir.
func copyStateV1(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{attachFile, attachFile + ".log"} {
		b, err := os.ReadFile(filepath.Join(stateV1Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A state dir written in the format of before (testdata/attachments-v1)
// loads unchanged: every field of every kind of attachment (a netns path
// with IPv6 and an origin, a pid, Docker's host peer, a Windows container
// by id with its HCN endpoint), the journal's delete and put applied.
func TestAttachmentsLoadV1(t *testing.T) {
	a, err := loadAttachments(copyStateV1(t))
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	want := stateV1Want()
	if got := a.byID; !reflect.DeepEqual(got, want) {
		t.Fatalf("loaded\n%+v\nwant\n%+v", got, want)
	}
	// The fields a type change would lose first, spelled out.
	if w := a.byID["win-1"]; w.Spec.ContainerID != "0123456789abcdef" || w.Attached.Endpoint != "zlmesh-win-1" {
		t.Errorf("windows attachment: container id %q, endpoint %q", w.Spec.ContainerID, w.Attached.Endpoint)
	}
	if w := a.byID["web-1"]; w.Spec.Address6 != netip.MustParsePrefix("fd7a:5c00:1:3::22/128") || w.Attached.NetnsID != (NamespaceID{Dev: 4, Ino: 4026532301}) || w.Origin == nil {
		t.Errorf("web-1: address6 %v, netns id %v, origin %v", w.Spec.Address6, w.Attached.NetnsID, w.Origin)
	}
	if d := a.byID["docker-ep1"]; d.Spec.HostPeer != bridge.HostPeerName("docker-ep1") {
		t.Errorf("docker-ep1: host peer %q", d.Spec.HostPeer)
	}
}

// The node writes the format of before byte for byte: the same changes
// give the same snapshot and journal as testdata/attachments-v1.
func TestAttachmentsWriteV1(t *testing.T) {
	dir := t.TempDir()
	a, err := loadAttachments(dir)
	if err != nil {
		t.Fatal(err)
	}
	writeStateV1(t, a)
	a.close()
	for _, f := range []string{attachFile, attachFile + ".log"} {
		got, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(stateV1Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s's:\n%s\nwant\n%s", f, stateV1Dir, got, want)
		}
	}
}

// Attachments round-trip: loaded from the format of before, folded into a
// new snapshot and changed again, they load back the same.
func TestAttachmentsRoundTrip(t *testing.T) {
	dir := copyStateV1(t)
	a, err := loadAttachments(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := rewriteJournaled(a.log, attachState{Attachments: a.byID}); err != nil {
		t.Fatal(err)
	}
	for _, at := range a.list() {
		if err := a.put(at); err != nil {
			t.Fatal(err)
		}
	}
	a.close()
	b, err := loadAttachments(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	if want := stateV1Want(); !reflect.DeepEqual(b.byID, want) {
		t.Fatalf("round trip gave\n%+v\nwant\n%+v", b.byID, want)
	}
}

// stateV1Attachments are the snapshot of testdata/attachments-v1: one of
// each way a container is attached.
func stateV1Attachments() []attachment {
	at := time.Date(2026, 12, 1, 10, 30, 0, 123456789, time.UTC)
	return []attachment{
		{ // a netns path, dual-stack, with its origin
			Spec: ContainerSpec{Service: "web", Container: "web-1", Netns: "/run/netns/web-1", Ifname: "eth0",
				Address: netip.MustParsePrefix("10.200.3.34/32"), Gateway: netip.MustParsePrefix("169.254.1.1/32"),
				Address6: netip.MustParsePrefix("fd7a:5c00:1:3::22/128"), MTU: 1420},
			Attached:  Plumbed{Bridge: "zlb-web", HostVeth: bridge.VethName("web-1"), NetnsID: NamespaceID{Dev: 4, Ino: 4026532301}},
			CreatedAt: at,
			Origin:    &api.Origin{Kind: "cni", ContainerID: "abc123", Ifname: "eth0", Netns: "/var/run/netns/cni-1234"},
		},
		{ // a pid, IPv4 only
			Spec: ContainerSpec{Service: "db", Container: "pid-7", PID: 4242, Ifname: "mesh0",
				Address: netip.MustParsePrefix("10.200.3.35/32"), Gateway: netip.MustParsePrefix("169.254.1.1/32"), MTU: 1420},
			Attached:  Plumbed{Bridge: "zlb-db", HostVeth: bridge.VethName("pid-7"), NetnsID: NamespaceID{Dev: 4, Ino: 4026532400}},
			CreatedAt: at,
		},
		{ // Docker's: the host peer, no namespace
			Spec: ContainerSpec{Service: "api", Container: "docker-ep1", Ifname: "eth0",
				Address: netip.MustParsePrefix("10.200.3.36/32"), Gateway: netip.MustParsePrefix("169.254.1.1/32"),
				Address6: netip.MustParsePrefix("fd7a:5c00:1:3::24/128"), MTU: 1400, HostPeer: bridge.HostPeerName("docker-ep1")},
			Attached:  Plumbed{Bridge: "zlb-api", HostVeth: bridge.VethName("docker-ep1")},
			CreatedAt: at,
		},
		{ // Windows: by container id, an HCN endpoint
			Spec: ContainerSpec{Service: "iis", Container: "win-1", Ifname: "eth0",
				Address: netip.MustParsePrefix("10.200.3.37/32"), Gateway: netip.MustParsePrefix("169.254.1.1/32"), MTU: 1420,
				ContainerID: "0123456789abcdef"},
			Attached:  Plumbed{Bridge: "zlmesh", Endpoint: "zlmesh-win-1"},
			CreatedAt: at,
		},
	}
}

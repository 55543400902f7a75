//go:build linux

package e2e

// The CNI plugin driven the way runtimes drive it: through libcni (this
// file) and by Podman (podman_test.go).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/internal/nstest"
	"github.com/zlmesh/zlmesh/testbed"
)

var cniPlugin struct {
	once sync.Once
	dir  string
	err  error
}

// cniBinDir builds zlmesh-cni once per test binary into a CNI bin dir, as
// <dir>/zlmesh (the name "type": "zlmesh" runs), and returns the dir.
func cniBinDir(t *testing.T) string {
	t.Helper()
	cniPlugin.once.Do(func() {
		dir, err := os.MkdirTemp("", "zlmesh-cni-bin-")
		if err != nil {
			cniPlugin.err = err
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "zlmesh"), "../cmd/zlmesh-cni").CombinedOutput()
		if err != nil {
			os.RemoveAll(dir)
			cniPlugin.err = fmt.Errorf("build zlmesh-cni: %v: %s", err, out)
			return
		}
		cniPlugin.dir = dir
	})
	if cniPlugin.err != nil {
		t.Fatal(cniPlugin.err)
	}
	return cniPlugin.dir
}

// removeCNIBin removes the plugin built for the run (TestMain).
func removeCNIBin() {
	if cniPlugin.dir != "" {
		os.RemoveAll(cniPlugin.dir)
	}
}

// cniConfList is a network configuration for the plugin on host h.
func cniConfList(t *testing.T, version, network, service string, h *testbed.Host) *libcni.NetworkConfigList {
	t.Helper()
	b := fmt.Sprintf(`{"cniVersion":%q,"name":%q,"plugins":[{"type":"zlmesh","socket":%q,"service":%q,"capabilities":{"aliases":true}}]}`,
		version, network, h.Socket, service)
	l, err := libcni.ConfListFromBytes([]byte(b))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// cniAttachment returns h's attachment made through CNI for (network,
// containerID), if any.
func cniAttachment(t *testing.T, h *testbed.Host, network, containerID string) (api.Attachment, bool) {
	t.Helper()
	list, err := h.Client().Attachments(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range list {
		if o := a.Origin; o != nil && o.Kind == api.OriginCNI && o.Network == network && o.ContainerID == containerID {
			return a, true
		}
	}
	return api.Attachment{}, false
}

// nsPing pings addr once from the namespace file path.
func nsPing(ctx context.Context, nsPath, addr string) error {
	out, err := exec.CommandContext(ctx, "nsenter", "--net="+nsPath, "ping", "-c", "1", "-W", "2", addr).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v: %s", addr, nsPath, err, out)
	}
	return nil
}

// hostLinkGone reports an error while h still has link name.
func hostLinkGone(ctx context.Context, h *testbed.Host, name string) error {
	if out, err := h.Exec(ctx, "ip", "link", "show", name); err == nil {
		return fmt.Errorf("%s still has %s: %s", h.Name, name, out)
	}
	return nil
}

// TestCNILibrary drives zlmesh-cni through libcni, as runtimes do, in spec
// versions 0.4.0, 1.0.0 and 1.1.0 against a real node:
//   - ADD: the container is attached under its runtime name with the CNI
//     origin, the result holds the node's address, gateway and DNS, and the
//     container pings a container on the other host;
//   - CHECK passes, and fails once the address is removed by hand; DEL twice
//     succeeds and leaves no attachment and no veth;
//   - a namespace the node cannot see (made outside the testbed host's mount
//     namespace) is attached through the plugin's fd, one it can see is
//     recorded by its path; both survive the sweep and a node restart (and
//     still pass CHECK and ping after it);
//   - GC with a valid list detaches exactly this network's other CNI
//     attachments (not the valid one, not one made through the API);
//   - STATUS answers;
//   - a namespace removed without DEL is swept: attachment and veth go.
func TestCNILibrary(t *testing.T) {
	tb := cluster(t, 2)
	h1, h2 := tb.Host("h1"), tb.Host("h2")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin := cniBinDir(t)
	cni := libcni.NewCNIConfigWithCacheDir([]string{bin}, t.TempDir(), nil)

	peer := addContainer(t, tb, h2, "peer")
	pa := mustAttach(t, peer, "db")
	manual := addContainer(t, tb, h1, "manual")
	mustAttach(t, manual, "web")

	type added struct {
		ns   *nstest.NS
		rt   *libcni.RuntimeConf
		list *libcni.NetworkConfigList
		a    api.Attachment
	}
	add := func(t *testing.T, version, nsPath, name string) (*libcni.RuntimeConf, api.Attachment, *current.Result) {
		t.Helper()
		list := cniConfList(t, version, "zlcni", "web", h1)
		rt := &libcni.RuntimeConf{ContainerID: "cid-" + name, NetNS: nsPath, IfName: "eth0",
			Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", name}}}
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			t.Fatalf("ADD %s (%s): %v\n%s", name, version, err, h1.LogTail(20))
		}
		r, err := current.NewResultFromResult(res)
		if err != nil {
			t.Fatal(err)
		}
		a, ok := cniAttachment(t, h1, "zlcni", rt.ContainerID)
		switch {
		case !ok:
			t.Fatalf("no attachment with origin cni/zlcni/%s", rt.ContainerID)
		case a.Container != name || a.Service != "web" || a.Origin.Ifname != "eth0" || a.Origin.Netns != nsPath:
			t.Fatalf("attachment %+v origin %+v", a, a.Origin)
		case a.Address6 == "" || len(r.IPs) != 2 || r.IPs[0].Address.IP.String() != a.Address || r.IPs[0].Gateway.String() != a.Gateway ||
			r.IPs[1].Address.IP.String() != a.Address6 || r.IPs[1].Gateway.String() != a.Gateway6:
			t.Fatalf("result %s, attachment %s/%d via %s and %s via %s", r.IPs, a.Address, a.Prefix, a.Gateway, a.Address6, a.Gateway6)
		case len(r.Routes) != 2 || r.Routes[0].GW.String() != a.Gateway || r.Routes[1].GW.String() != a.Gateway6 ||
			len(r.DNS.Nameservers) != 2 || r.DNS.Nameservers[0] != wantDNS || r.DNS.Nameservers[1] != a.DNS6:
			t.Fatalf("result routes %v dns %+v", r.Routes, r.DNS)
		case len(r.Interfaces) != 1 || r.Interfaces[0].Mac == "" || r.Interfaces[0].Sandbox != nsPath:
			t.Fatalf("result interfaces %+v", r.Interfaces)
		}
		return rt, a, r
	}

	for _, version := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		t.Run(version, func(t *testing.T) {
			ns := nstest.New(t, "zlt-cni")
			name := "pod-" + strings.ReplaceAll(version, ".", "")
			rt, a, _ := add(t, version, ns.Path, name)
			list := cniConfList(t, version, "zlcni", "web", h1)
			if !strings.HasPrefix(a.Netns, "/proc/") {
				t.Errorf("a namespace the node cannot see is recorded as %q, want the plugin's handle", a.Netns)
			}
			eventually(t, 20*time.Second, func() error { return nsPing(ctx, ns.Path, pa.Address) })
			if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			if err := cni.GetStatusNetworkList(ctx, list); err != nil {
				t.Fatalf("STATUS: %v", err)
			}
			l, err := ns.NL.LinkByName("eth0")
			if err != nil {
				t.Fatal(err)
			}
			addr, _ := netlink.ParseAddr(fmt.Sprintf("%s/%d", a.Address, a.Prefix))
			if err := ns.NL.AddrDel(l, addr); err != nil {
				t.Fatal(err)
			}
			if err := cni.CheckNetworkList(ctx, list, rt); err == nil {
				t.Fatal("CHECK passed after the address was removed")
			}
			for i := range 2 {
				if err := cni.DelNetworkList(ctx, list, rt); err != nil {
					t.Fatalf("DEL #%d: %v", i+1, err)
				}
			}
			if _, ok := cniAttachment(t, h1, "zlcni", rt.ContainerID); ok {
				t.Fatal("attached after DEL")
			}
			if err := hostLinkGone(ctx, h1, a.HostVeth); err != nil {
				t.Fatal(err)
			}
		})
	}

	// One namespace the node cannot see, one it can; both outlive sweeps
	// and a restart.
	keep := nstest.New(t, "zlt-cni")
	keepRT, keepA, _ := add(t, "1.1.0", keep.Path, "keep")
	vis := addContainer(t, tb, h1, "vis")
	visRT, visA, _ := add(t, "1.1.0", vis.Netns, "vis")
	if visA.Netns != vis.Netns {
		t.Errorf("a namespace the node sees is recorded as %q, want %s", visA.Netns, vis.Netns)
	}
	time.Sleep(5 * time.Second) // two sweeps
	if err := h1.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second) // adoption, then two sweeps
	list11 := cniConfList(t, "1.1.0", "zlcni", "web", h1)
	for _, c := range []struct {
		rt *libcni.RuntimeConf
		a  api.Attachment
	}{{keepRT, keepA}, {visRT, visA}} {
		a, ok := cniAttachment(t, h1, "zlcni", c.rt.ContainerID)
		if !ok || a.Address != c.a.Address {
			t.Fatalf("%s after sweeps and a restart: %+v (attached %v)\n%s", c.rt.ContainerID, a, ok, h1.LogTail(30))
		}
		eventually(t, 30*time.Second, func() error { return nsPing(ctx, c.rt.NetNS, pa.Address) })
		if err := cni.CheckNetworkList(ctx, list11, c.rt); err != nil {
			t.Fatalf("CHECK %s after the restart: %v", c.rt.ContainerID, err)
		}
	}

	// GC from a runtime without a cache (so libcni issues no DEL itself):
	// only the plugin's GC can remove vis.
	bare := libcni.NewCNIConfigWithCacheDir([]string{bin}, t.TempDir(), nil)
	if err := bare.GCNetworkList(ctx, list11, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: keepRT.ContainerID, IfName: "eth0"}}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if _, ok := cniAttachment(t, h1, "zlcni", visRT.ContainerID); ok {
		t.Error("GC kept an attachment not in the valid list")
	}
	if _, ok := cniAttachment(t, h1, "zlcni", keepRT.ContainerID); !ok {
		t.Error("GC removed a valid attachment")
	}
	list, _ := h1.Client().Attachments(ctx)
	found := false
	for _, a := range list {
		found = found || a.Container == manual.ID()
	}
	if !found {
		t.Error("GC removed an attachment made through the API")
	}

	// The runtime removes keep's namespace without DEL: the sweep detaches.
	keep.NL.Close()
	keep.NL = nil
	keep.Handle.Close()
	if out, err := exec.Command("ip", "netns", "del", keep.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", keep.Name, err, out)
	}
	eventually(t, 30*time.Second, func() error {
		if _, ok := cniAttachment(t, h1, "zlcni", keepRT.ContainerID); ok {
			return errors.New("keep is still attached after its namespace was removed")
		}
		return hostLinkGone(ctx, h1, keepA.HostVeth)
	})
	if err := h1.Client().Detach(ctx, manual.ID()); err != nil {
		t.Fatal(err)
	}
}

//go:build linux

package e2e

// Docker (Debian's docker.io) puts containers on the mesh through zlmesh's
// network and IPAM driver, one dockerd in each of two testbed hosts.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/dockerplugin"
	"github.com/zlmesh/zlmesh/testbed"
)

// dockerImage is the test image: busybox-static imported from a directory.
const dockerImage = "zlmesh-busybox:e2e"

// dockerCluster starts a testbed of n hosts whose nodes serve the Docker
// driver on <host dir>/docker-plugin.sock, and one dockerd per host with
// the driver registered under a name of its own ("zlt-<prefix>-<host>"),
// the mesh DNS as its --dns and the busybox image imported. It skips when
// Docker is not installed.
func dockerCluster(t *testing.T, n int) (*testbed.Testbed, []*testbed.Dockerd) {
	t.Helper()
	for _, p := range []string{testbed.DockerdBinary, testbed.DockerBinary, "/usr/bin/busybox", "/usr/bin/nsenter"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s is not installed (scripts/deps.sh installs docker.io and busybox-static)", p)
		}
	}
	dir, err := os.MkdirTemp("", "zlt-dk-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := testbed.BuildZlmesh(t)
	tb := testbed.New(t, testbed.Options{
		Hosts:  n,
		Binary: bin,
		Args: func(h *testbed.Host) []string {
			a := slices.Clone(fastGossip)
			if os.Getenv("ZLMESH_E2E_DOCKER_DEBUG") != "" {
				a = append(a, "--log-level", "debug")
			}
			return append(a, "--docker-plugin",
				"--docker-plugin-socket", filepath.Join(h.Dir, "docker-plugin.sock"),
				"--docker-socket", filepath.Join(dir, h.Name, "docker.sock"))
		},
	})
	tarball, err := testbed.BusyboxRootfs(filepath.Join(dir, "image"))
	if err != nil {
		t.Fatal(err)
	}
	var ds []*testbed.Dockerd
	for _, h := range tb.Hosts() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		d, err := testbed.StartDockerd(ctx, h, testbed.DockerdOptions{
			Dir:          filepath.Join(dir, h.Name),
			PluginSocket: filepath.Join(h.Dir, "docker-plugin.sock"),
			PluginName:   "zlt-" + tb.Prefix + "-" + h.Name,
			Args:         dockerdArgs(),
		})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("dockerd %s log:\n%s", h.Name, d.LogTail(30))
			}
			if err := d.Stop(); err != nil {
				t.Errorf("stop dockerd in %s: %v", h.Name, err)
			}
		})
		ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
		_, err = d.Run(ctx, "import", tarball, dockerImage)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	return tb, ds
}

func dockerdArgs() []string {
	a := []string{"--dns", wantDNS, "--dns-search", wantSearch}
	if os.Getenv("ZLMESH_E2E_DOCKER_DEBUG") != "" {
		a = append(a, "--debug")
	}
	return a
}

func dockerTestTimeout() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("ZLMESH_E2E_DOCKER_TIMEOUT")); err == nil {
		return d
	}
	return 6 * time.Minute
}

// dockerHostClean fails unless h has no attachment, zlmesh veth (host end
// or unmoved peer), host route of either family to a service bridge or
// lease left.
func dockerHostClean(ctx context.Context, h *testbed.Host) error {
	list, err := h.Client().Attachments(ctx)
	if err != nil {
		return err
	}
	var left []string
	for _, a := range list {
		left = append(left, "attachment "+a.Container)
	}
	out, err := h.Exec(ctx, "ip", "-o", "link", "show")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 && (strings.HasPrefix(f[1], "zlv") || strings.HasPrefix(f[1], "zlc")) {
			left = append(left, "link "+strings.TrimSuffix(f[1], ":"))
		}
	}
	// Host routes of the bridge package (proto 122) to a service bridge,
	// of either family: a container's /32 or its IPv6 twin's /128.
	for _, fam := range []string{"-4", "-6"} {
		out, err := h.Exec(ctx, "ip", "-o", fam, "route", "show", "proto", "122")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, " dev zlb-") {
				left = append(left, "host route "+strings.Join(strings.Fields(line)[:3], " "))
			}
		}
	}
	leases, _, err := stateOnDisk(h)
	if err != nil {
		return err
	}
	for id := range leases {
		left = append(left, "lease "+id)
	}
	if len(left) > 0 {
		return fmt.Errorf("%s still has %s", h.Name, strings.Join(left, ", "))
	}
	return nil
}

func dockerAttachment(ctx context.Context, h *testbed.Host, service string) (api.Attachment, error) {
	list, err := h.Client().Attachments(ctx)
	if err != nil {
		return api.Attachment{}, err
	}
	for _, a := range list {
		if a.Service == service && strings.HasPrefix(a.Container, "docker-") {
			return a, nil
		}
	}
	return api.Attachment{}, fmt.Errorf("%s has no docker attachment in %s: %+v", h.Name, service, list)
}

// TestDocker: `docker network create -d <zlmesh driver> --ipam-driver
// <same>` on two hosts (service web from the network's name on h1, db from
// -o zlmesh.service on h2), web1 on h1 with -p 8080:80 and db1 on h2:
// their addresses are /32s of the hosts' blocks with the link-local
// gateway, and beside them their IPv6 twins (/128, default route via
// fe80::1) though the networks have no --ipv6; they ping each other across
// the hosts by mesh name (Docker's embedded resolver forwarding to the mesh
// DNS) and by Docker's own name on one host; ping over IPv6 between them
// and to a container attached through the control API, AAAA of the mesh
// name and of Docker's own name, -p targeting the IPv6 address too; HTTP
// from db1 to web1 and from the outside network to h1's port 8080. Bad
// input (unknown options, a second network of a service with another MTU,
// --subnet, docker run --ip, malformed JSON and a Join of an endpoint
// never created on the plugin's socket) gets Docker-shaped errors and
// leaves no attachment, veth, lease or saved network. A restart of zlmesh
// keeps a running container's addresses, and db1 reaches it again (HTTP,
// ping of both families); docker stop + rm, and run --rm, leave no
// attachment, veth, host route of either family, lease or port, and the
// bridge stays (across a zlmesh restart too) until docker network rm;
// after dockerd is killed (SIGKILL) and started again nothing stays
// attached and a new container on the same network works.
func TestDocker(t *testing.T) {
	start := time.Now()
	tb, ds := dockerCluster(t, 2)
	h1, h2 := tb.Host("h1"), tb.Host("h2")
	d1, d2 := ds[0], ds[1]
	t.Logf("testbed and two dockerds ready in %v", time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), dockerTestTimeout())
	defer cancel()
	must := func(d *testbed.Dockerd, args ...string) string {
		t.Helper()
		out, err := d.Run(ctx, args...)
		if err != nil {
			t.Fatal(err, "\n", d.Host.LogTail(20))
		}
		return out
	}

	must(d1, "network", "create", "-d", d1.Plugin, "--ipam-driver", d1.Plugin, "web")
	must(d2, "network", "create", "-d", d2.Plugin, "--ipam-driver", d2.Plugin, "-o", "zlmesh.service=db", "dbnet")

	// Bad input: Docker-shaped errors, nothing made.
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"network", "create", "-d", d1.Plugin, "--ipam-driver", d1.Plugin, "-o", "zlmesh.bogus=1", "bad1"}, `unknown option "zlmesh.bogus"`},
		{[]string{"network", "create", "-d", d1.Plugin, "bad2"}, "--ipam-driver zlmesh"},
		{[]string{"network", "create", "-d", d1.Plugin, "--ipam-driver", d1.Plugin, "-o", "zlmesh.service=web", "-o", "com.docker.network.driver.mtu=1300", "bad3"}, "already maps to service web"},
		{[]string{"network", "create", "-d", d1.Plugin, "--ipam-driver", d1.Plugin, "--subnet", "172.30.0.0/16", "bad4"}, "--subnet"},
	} {
		// bad3 needs web's service fixed first: the network named web is
		// resolved at its first endpoint, so name it by option here.
		out, err := d1.Run(ctx, bad.args...)
		if err == nil || !strings.Contains(out, bad.want) {
			if bad.want == "already maps to service web" && err == nil {
				d1.Run(ctx, "network", "rm", "bad3")
				continue // checked again below once web is named
			}
			t.Errorf("docker %s: %v\n%s\nwant an error saying %q", strings.Join(bad.args, " "), err, out, bad.want)
		}
	}

	// A chosen address (docker run --ip, which needs --subnet: the cluster
	// range) is refused, with nothing made on either side; requests
	// Docker would not send (malformed JSON, Join of an endpoint never
	// created) get {"Err": ...} from the socket.
	cluster := status(t, h1).ClusterCIDR
	must(d1, "network", "create", "-d", d1.Plugin, "--ipam-driver", d1.Plugin, "--subnet", cluster, "-o", "zlmesh.service=fixed", "fixed")
	cidr, err := netip.ParsePrefix(cluster)
	if err != nil {
		t.Fatal(err)
	}
	a4 := cidr.Addr().As4()
	a4[3] = 77
	chosen := netip.AddrFrom4(a4).String()
	if out, err := d1.Run(ctx, "run", "--name", "fixed1", "--network", "fixed", "--ip", chosen, dockerImage, "true"); err == nil || !strings.Contains(out, "chosen address") {
		t.Errorf("docker run --ip %s: %v\n%s\nwant an error saying \"chosen address\"", chosen, err, out)
	}
	d1.Run(ctx, "rm", "-f", "fixed1")
	must(d1, "network", "rm", "fixed")
	for _, bad := range []struct{ method, body, want string }{
		{"NetworkDriver.CreateEndpoint", `{"NetworkID": 7`, "does not decode"},
		{"IpamDriver.RequestAddress", `[1,2`, "does not decode"},
		{"NetworkDriver.Join", `{"NetworkID":"1f0c2a8e3b4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f","EndpointID":"a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90","SandboxKey":"/var/run/docker/netns/x"}`, "never created"},
	} {
		if err := dockerRawError(ctx, filepath.Join(h1.Dir, "docker-plugin.sock"), bad.method, bad.body, bad.want); err != nil {
			t.Error(err)
		}
	}
	if err := dockerHostClean(ctx, h1); err != nil {
		t.Errorf("after the bad requests: %v", err)
	}
	if st, err := (dockerplugin.FileStore{Path: filepath.Join(h1.StateDir, "docker.json")}).Load(); err != nil || len(st.Networks) != 1 {
		t.Errorf("h1's saved docker networks after the bad requests: %+v %v; want web's only", st.Networks, err)
	}

	t0 := time.Now()
	must(d1, "run", "-d", "--name", "web1", "--network", "web", "-p", "8080:80", dockerImage,
		"sh", "-c", "mkdir -p /www && echo hello-from-web1 > /www/index.html && exec httpd -f -p 80 -h /www")
	must(d2, "run", "-d", "--name", "db1", "--network", "dbnet", dockerImage, "sleep", "3600")
	t.Logf("two containers started in %v", time.Since(t0).Round(time.Millisecond))

	a1, err := dockerAttachment(ctx, h1, "web")
	if err != nil {
		t.Fatal(err)
	}
	b1, err := dockerAttachment(ctx, h2, "db")
	if err != nil {
		t.Fatal(err)
	}
	// Inside web1: the /32 of h1's attachment on eth0, the default route
	// via the link-local gateway.
	addrs := must(d1, "exec", "web1", "ip", "-o", "addr", "show", "eth0")
	if !strings.Contains(addrs, a1.Address+"/32") {
		t.Fatalf("web1's eth0 does not hold %s/32:\n%s", a1.Address, addrs)
	}
	routes := must(d1, "exec", "web1", "ip", "route")
	if !strings.Contains(routes, "default via 169.254.1.1 dev eth0") {
		t.Fatalf("web1's routes:\n%s", routes)
	}
	// The IPv6 twin too, on a network without --ipv6: the /128 (Docker
	// puts what CreateEndpoint answered on the interface), the default
	// route via the link-local gateway (Join's GatewayIPv6).
	if a1.Address6 == "" || b1.Address6 == "" {
		t.Fatalf("Docker attachments without an IPv6 address: web1 %+v, db1 %+v", a1, b1)
	}
	addrs6 := must(d1, "exec", "web1", "ip", "-o", "-6", "addr", "show", "dev", "eth0", "scope", "global")
	if !strings.Contains(addrs6, a1.Address6+"/128") {
		t.Fatalf("web1's eth0 does not hold %s/128:\n%s", a1.Address6, addrs6)
	}
	if routes6 := must(d1, "exec", "web1", "ip", "-6", "route"); !strings.Contains(routes6, "default via fe80::1 dev eth0") {
		t.Fatalf("web1's IPv6 routes:\n%s", routes6)
	}
	if got := strings.TrimSpace(must(d1, "inspect", "-f", "{{.NetworkSettings.Networks.web.GlobalIPv6Address}} {{.NetworkSettings.Networks.web.IPv6Gateway}}", "web1")); got != a1.Address6+" fe80::1" {
		t.Errorf("docker inspect web1: IPv6 address and gateway %q, want %q", got, a1.Address6+" fe80::1")
	}
	if out, err := d1.Run(ctx, "network", "create", "-d", d1.Plugin, "--ipam-driver", d1.Plugin, "-o", "zlmesh.service=web", "-o", "com.docker.network.driver.mtu=1300", "bad3"); err == nil || !strings.Contains(out, "already maps to service web") {
		t.Errorf("a second network of service web with another MTU: %v\n%s", err, out)
	}

	// Across the hosts by mesh name, both ways (the embedded resolver
	// forwards to the mesh DNS); HTTP from db1 to web1; Docker's own
	// names still resolve on one host.
	eventually(t, 30*time.Second, func() error {
		if _, err := d1.Run(ctx, "exec", "web1", "ping", "-c", "1", "-W", "2", "db.zl"); err != nil {
			return err
		}
		_, err := d2.Run(ctx, "exec", "db1", "ping", "-c", "1", "-W", "2", "web.zl")
		return err
	})
	if out := must(d2, "exec", "db1", "nslookup", "web.zl"); !strings.Contains(out, a1.Address) {
		t.Errorf("nslookup web.zl in db1 does not give %s:\n%s", a1.Address, out)
	}
	// IPv6 across the hosts: Docker to Docker both ways, Docker to a
	// container attached through the control API and back; AAAA of the
	// mesh name.
	plain := addContainer(t, tb, h2, "plain1")
	p1 := mustAttach(t, plain, "plain")
	eventually(t, 30*time.Second, func() error {
		for _, p := range []struct {
			d        *testbed.Dockerd
			from, to string
		}{{d2, "db1", a1.Address6}, {d1, "web1", b1.Address6}, {d1, "web1", p1.Address6}} {
			if out, err := p.d.Run(ctx, "exec", p.from, "ping", "-c", "1", "-W", "2", p.to); err != nil {
				return fmt.Errorf("ping %s from %s: %w\n%s", p.to, p.from, err, out)
			}
		}
		return plain.Ping(ctx, a1.Address6)
	})
	if out := must(d2, "exec", "db1", "nslookup", "-type=AAAA", "web.zl"); !strings.Contains(out, a1.Address6) {
		t.Errorf("nslookup -type=AAAA web.zl in db1 does not give %s:\n%s", a1.Address6, out)
	}
	if ports, err := h1.Client().Ports(ctx); err != nil || len(ports) != 1 || ports[0].Target6 != "["+a1.Address6+"]:80" {
		t.Errorf("h1's ports: %+v %v; want -p 8080:80 targeting [%s]:80 too", ports, err, a1.Address6)
	}
	if err := h2.Client().Detach(ctx, plain.ID()); err != nil {
		t.Fatal(err)
	}
	if err := dockerHTTP(ctx, d2, "db1", "web.zl", "hello-from-web1"); err != nil {
		t.Error(err)
	}
	if _, err := d2.Run(ctx, "exec", "db1", "ping", "-c", "1", "-W", "2", a1.Address); err != nil {
		t.Error(err)
	}
	must(d1, "run", "-d", "--name", "web2", "--network", "web", dockerImage, "sleep", "3600")
	if _, err := d1.Run(ctx, "exec", "web2", "ping", "-c", "1", "-W", "2", "web1"); err != nil {
		t.Errorf("Docker's own name web1 from web2: %v", err)
	}
	// Docker's embedded resolver knows web1's IPv6 address too (asked
	// as "web1.": busybox's nslookup asks a name without a dot only with
	// the search domains appended).
	if out, err := d1.Run(ctx, "exec", "web2", "nslookup", "-type=AAAA", "web1."); err != nil || !strings.Contains(out, a1.Address6) {
		t.Errorf("nslookup -type=AAAA web1. in web2: %v\n%s\nwant %s", err, out, a1.Address6)
	}
	// -p 8080:80 on h1 from the outside network.
	eventually(t, 20*time.Second, func() error {
		// nc, not busybox: static busybox crashes in the machine's
		// mount namespace (glibc NSS).
		out, err := tb.ExecOutside(ctx, "sh", "-c", fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 %s 8080`, h1.Underlay))
		if err != nil {
			return err
		}
		if !strings.Contains(string(out), "hello-from-web1") {
			return fmt.Errorf("outside → h1:8080 answered %q", out)
		}
		return nil
	})

	// A restart of zlmesh: web1 keeps its address and its path.
	if err := h1.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	// web2 is on the network too now: find web1's endpoint by its id.
	list, err := h1.Client().Attachments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kept := false
	for _, a := range list {
		kept = kept || (a.Container == a1.Container && a.Address == a1.Address && a.Address6 == a1.Address6)
	}
	if !kept {
		t.Fatalf("after a restart of zlmesh web1 (%s at %s) is not attached as before: %+v", a1.Container, a1.Address, list)
	}
	// web1 by its address (web.zl now also names web2, which serves
	// nothing), over TCP and ICMP.
	reach := func() error {
		if err := dockerHTTP(ctx, d2, "db1", a1.Address, "hello-from-web1"); err != nil {
			return err
		}
		if _, err := d2.Run(ctx, "exec", "db1", "ping", "-c", "1", "-W", "2", a1.Address); err != nil {
			return err
		}
		_, err := d2.Run(ctx, "exec", "db1", "ping", "-c", "1", "-W", "2", a1.Address6)
		return err
	}
	if err := dockerEventually(30*time.Second, reach); err != nil {
		dockerDiag(ctx, t, []*testbed.Host{h1, h2}, map[*testbed.Dockerd][]string{d1: {"web1", "web2"}, d2: {"db1"}})
		t.Fatalf("db1 → web1 after zlmesh's restart: %v", err)
	}

	// stop + rm, run --rm: nothing left.
	t0 = time.Now()
	must(d1, "stop", "-t", "0", "web1")
	must(d1, "rm", "web1")
	must(d1, "rm", "-f", "web2")
	t.Logf("stop and rm in %v", time.Since(t0).Round(time.Millisecond))
	if err := dockerHostClean(ctx, h1); err != nil {
		t.Fatal(err)
	}
	if ports, err := h1.Client().Ports(ctx); err != nil || len(ports) != 0 {
		t.Fatalf("ports after rm: %+v %v", ports, err)
	}
	t0 = time.Now()
	must(d1, "run", "--rm", "--network", "web", dockerImage, "ping", "-c", "1", "-W", "5", "db.zl")
	t.Logf("run --rm with a ping across the mesh in %v", time.Since(t0).Round(time.Millisecond))
	if err := dockerHostClean(ctx, h1); err != nil {
		t.Fatal(err)
	}
	// Network web exists with no container: its bridge stays, until the
	// network is removed.
	if _, err := h1.Exec(ctx, "ip", "link", "show", "zlb-web"); err != nil {
		t.Errorf("the bridge of network web, which exists, is gone: %v", err)
	}
	// It stays across a restart of zlmesh too (adoption removes empty
	// bridges of no attachment, not those of Docker's networks).
	if err := h1.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h1.Exec(ctx, "ip", "link", "show", "zlb-web"); err != nil {
		t.Errorf("the bridge of network web is gone after a restart of zlmesh: %v", err)
	}
	must(d1, "network", "rm", "web")
	eventually(t, 10*time.Second, func() error {
		if _, err := h1.Exec(ctx, "ip", "link", "show", "zlb-web"); err == nil {
			return errors.New("zlb-web stays after docker network rm web")
		}
		return nil
	})

	// dockerd crashes (SIGKILL) with db1 running, and comes back: without
	// live-restore it ends db1 and deletes its endpoint, or the node's
	// reconciliation with Docker's API detaches it: nothing stays attached.
	if err := d2.Crash(); err != nil {
		t.Fatal(err)
	}
	if err := d2.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, func() error { return dockerHostClean(ctx, h2) })
	if out := must(d2, "ps", "-q"); out != "" {
		t.Errorf("containers running after dockerd's restart: %s", out)
	}
	// Docker's network and ours still agree: a new container on dbnet
	// takes an address and reaches h1's overlay address across the mesh.
	must(d2, "run", "--rm", "--network", "dbnet", dockerImage, "ping", "-c", "1", "-W", "5", status(t, h1).OverlayIP)
	if err := dockerHostClean(ctx, h2); err != nil {
		t.Fatal(err)
	}
	t.Logf("TestDocker took %v", time.Since(start).Round(time.Millisecond))
}

// dockerHTTP fetches / from host (a name or address) port 80 inside
// container and fails unless the answer holds want. It speaks HTTP through
// busybox nc: busybox-static 1.35's wget -T (any timeout) dies of SIGSEGV
// (exit 139) even against a listening server, and without -T it may hang.
func dockerHTTP(ctx context.Context, d *testbed.Dockerd, container, host, want string) error {
	out, err := d.Run(ctx, "exec", container, "sh", "-c",
		fmt.Sprintf(`printf 'GET / HTTP/1.0\r\nHost: %s\r\n\r\n' | nc -w 3 %s 80`, host, host))
	if err != nil {
		return fmt.Errorf("HTTP from %s to %s: %w", container, host, err)
	}
	if !strings.Contains(out, want) {
		return fmt.Errorf("HTTP from %s to %s answered %q, want %q in it", container, host, out, want)
	}
	return nil
}

// dockerRawError posts body to method on a plugin socket, as Docker's
// plugin client does, and fails unless the answer is a Docker-shaped
// error ({"Err": ...}) saying want.
func dockerRawError(ctx context.Context, socket, method, body, want string) error {
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://plugin/"+method, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/vnd.docker.plugins.v1.2+json")
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return fmt.Errorf("%s: status %d, answer not JSON: %w", method, resp.StatusCode, err)
	}
	if msg, _ := out["Err"].(string); len(out) != 1 || !strings.Contains(msg, want) {
		return fmt.Errorf("%s(%s): status %d, answer %v; want only Err saying %q", method, body, resp.StatusCode, out, want)
	}
	return nil
}

// dockerEventually retries fn every 250 ms until it succeeds or timeout
// passed, and returns its last error.
func dockerEventually(timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// dockerDiag logs the hosts' and containers' network state, for a failure.
func dockerDiag(ctx context.Context, t *testing.T, hosts []*testbed.Host, cs map[*testbed.Dockerd][]string) {
	t.Helper()
	for _, h := range hosts {
		for _, c := range [][]string{
			{"ip", "-br", "addr"}, {"ip", "route"}, {"ip", "neigh"}, {"bridge", "link"},
			{"wg", "show", "all", "allowed-ips"}, {"wg", "show", "all", "endpoints"}, {"nft", "list", "ruleset"},
			{"sysctl", "net.ipv4.conf.all.forwarding", "net.ipv4.conf.all.rp_filter"},
		} {
			out, err := h.Exec(ctx, c...)
			t.Logf("%s: %s: %v\n%s", h.Name, strings.Join(c, " "), err, out)
		}
	}
	for d, names := range cs {
		for _, n := range names {
			for _, c := range [][]string{{"ip", "addr"}, {"ip", "route"}, {"ip", "neigh"}} {
				out, err := d.Run(ctx, append([]string{"exec", n}, c...)...)
				t.Logf("%s/%s: %s: %v\n%s", d.Host.Name, n, strings.Join(c, " "), err, out)
			}
		}
	}
}

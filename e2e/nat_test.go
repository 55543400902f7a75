//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/testbed"
)

// The NAT tests: real zlmesh processes in the testbed, checked by what the
// echo servers saw (the source address of every connection and datagram)
// and by zlmesh's nftables table as `nft -j` prints it inside a host.
//
// Every message sent has a length no other message of the test binary has,
// so a server's line "tcp from IP:PORT: N bytes" names the flow that made
// it.

// portGrace mirrors node/ports.go: how long a port whose container vanished
// from the cluster is kept before it is removed.
const portGrace = 30 * time.Second

// natPeer is a place a client runs: a host, a container or the outside.
type natPeer struct {
	name string
	exec func(ctx context.Context, argv ...string) ([]byte, error)
}

func hostPeer(h *testbed.Host) natPeer { return natPeer{h.Name + " (host)", h.Exec} }

func ctrPeer(c *testbed.Container) natPeer { return natPeer{c.String(), c.Exec} }

func outsidePeer(tb *testbed.Testbed) natPeer { return natPeer{"outside", tb.ExecOutside} }

// echoServer is a helper tcp-echo or udp-echo.
type echoServer struct {
	name string
	p    *testbed.Process
}

// startEcho starts a helper echo server with start (Host.StartProcess,
// Container.StartProcess or Testbed.StartOutside) and waits until it
// listens.
func startEcho(t *testing.T, name string, start func(context.Context, ...string) (*testbed.Process, error), proto, addr string) *echoServer {
	t.Helper()
	p, err := start(context.Background(), testbed.HelperArgv(proto+"-echo", addr)...)
	if err != nil {
		t.Fatalf("start %s echo server %s: %v", proto, name, err)
	}
	eventually(t, 15*time.Second, func() error {
		if strings.Contains(p.Output(), "listening") {
			return nil
		}
		if !p.Running() {
			return fmt.Errorf("echo server %s exited: %s", name, p.Output())
		}
		return fmt.Errorf("echo server %s does not listen yet", name)
	})
	return &echoServer{name: name, p: p}
}

// from returns the source address of the connection or datagram of n bytes
// the server saw, or "".
func (s *echoServer) from(n int) string {
	for line := range strings.Lines(s.p.Output()) {
		f := strings.Fields(line) // "tcp from 192.0.2.11:40000: 17 bytes"
		if len(f) != 5 || f[1] != "from" || f[3] != strconv.Itoa(n) || f[4] != "bytes" {
			continue
		}
		if ap, err := netip.ParseAddrPort(strings.TrimSuffix(f[2], ":")); err == nil {
			return ap.Addr().String()
		}
	}
	return ""
}

// msgLen makes every message length unique in the test binary.
var msgLen atomic.Int64

func init() { msgLen.Store(20) }

// natSend sends one message of a fresh length from p to addr with the
// helper client (tcp-send or udp-send), which fails unless the same bytes
// come back. It returns the length.
func natSend(ctx context.Context, p natPeer, proto, addr string) (int, error) {
	n := int(msgLen.Add(1))
	return n, natSendLen(ctx, p, proto, addr, n)
}

// natSendLen is natSend with a length of the caller's (below msgLen's start
// when the servers' logs do not matter).
func natSendLen(ctx context.Context, p natPeer, proto, addr string, n int) error {
	_, err := p.exec(ctx, testbed.HelperArgv(proto+"-send", addr, strings.Repeat("z", n))...)
	return err
}

// reach sends from p to addr until an answer comes back (a few tries over a
// bounded time: the first packets of a new path can be lost on a loaded
// machine) and returns the source address srv saw.
func reach(t *testing.T, p natPeer, proto, addr string, srv *echoServer) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		n, err := natSend(ctx, p, proto, addr)
		cancel()
		if err == nil {
			var src string
			// A UDP server logs after it answered.
			eventually(t, 5*time.Second, func() error {
				if src = srv.from(n); src == "" {
					return fmt.Errorf("%s → %s %s: answered, but %s did not log the %d bytes (log:\n%s)", p.name, proto, addr, srv.name, n, srv.p.Output())
				}
				return nil
			})
			return src
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s → %s %s: %v", p.name, proto, addr, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// expectFrom checks that p reaches srv through addr and that srv sees the
// source address want.
func expectFrom(t *testing.T, p natPeer, proto, addr string, srv *echoServer, want string) {
	t.Helper()
	if got := reach(t, p, proto, addr, srv); got != want {
		t.Errorf("%s → %s %s: %s saw source %s, want %s", p.name, proto, addr, srv.name, got, want)
	}
}

// expectClosed checks that nothing answers on addr from p: a TCP connection
// is refused (the host has nothing on the port), a UDP datagram gets no
// echo; and none of servers saw it.
func expectClosed(t *testing.T, p natPeer, proto, addr string, servers ...*echoServer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := natSend(ctx, p, proto, addr)
	switch {
	case err == nil:
		t.Errorf("%s → %s %s: answered; want the port closed", p.name, proto, addr)
	case proto == "tcp" && !strings.Contains(err.Error(), "refused"):
		t.Errorf("%s → %s %s: %v; want the connection refused", p.name, proto, addr, err)
	}
	for _, s := range servers {
		if src := s.from(n); src != "" {
			t.Errorf("%s → %s %s: %s still got it (from %s)", p.name, proto, addr, s.name, src)
		}
	}
}

// natAttach makes container name on h and attaches it to service.
func natAttach(t *testing.T, tb *testbed.Testbed, h *testbed.Host, name, service string) (*testbed.Container, api.Attachment) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := tb.AddContainer(ctx, h, name)
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Attach(ctx, service)
	if err != nil {
		t.Fatalf("attach %s to %s: %v\n%s", c, service, err, h.LogTail(20))
	}
	return c, a
}

// natTable returns zlmesh's table in h as `nft -j list table inet zlmesh`
// prints it, normalized for comparison: no metainfo, the elements of every
// map sorted (a hash map lists them in no fixed order). Handles stay: the
// same handles mean the same chains, rules and maps, not copies made again.
func natTable(ctx context.Context, h *testbed.Host) (string, error) {
	out, err := h.Exec(ctx, "nft", "-j", "list", "table", "inet", "zlmesh")
	if err != nil {
		return "", err
	}
	var doc struct {
		Nftables []map[string]map[string]any `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return "", fmt.Errorf("nft -j in %s: %v: %s", h.Name, err, out)
	}
	var lines []string
	for _, obj := range doc.Nftables {
		if _, ok := obj["metainfo"]; ok {
			continue
		}
		for _, kind := range []string{"map", "set"} {
			m, ok := obj[kind]
			if !ok {
				continue
			}
			if elems, ok := m["elem"].([]any); ok {
				sort.Slice(elems, func(i, j int) bool { return jsonText(elems[i]) < jsonText(elems[j]) })
			}
		}
		lines = append(lines, jsonText(obj))
	}
	return strings.Join(lines, "\n"), nil
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// natCount counts the rules and the map elements of a natTable dump.
func natCount(dump string) (rules, elems int) {
	for line := range strings.Lines(dump) {
		var obj map[string]map[string]any
		json.Unmarshal([]byte(line), &obj)
		if _, ok := obj["rule"]; ok {
			rules++
		}
		if m, ok := obj["map"]; ok {
			e, _ := m["elem"].([]any)
			elems += len(e)
		}
	}
	return rules, elems
}

func mustNATTable(t *testing.T, h *testbed.Host) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := natTable(ctx, h)
	if err != nil {
		t.Fatalf("read the NAT table of %s: %v", h.Name, err)
	}
	return d
}

// sameTable fails the test when the table of h differs from want.
func sameTable(t *testing.T, h *testbed.Host, want, what string) {
	t.Helper()
	if got := mustNATTable(t, h); got != want {
		t.Errorf("%s: the NAT table of %s changed:\n--- before\n%s\n--- after\n%s", what, h.Name, want, got)
	}
}

// cliPorts runs `zlmesh ports -o json` inside h.
func cliPorts(ctx context.Context, bin string, h *testbed.Host) ([]api.PortMapping, error) {
	out, err := h.Exec(ctx, bin, "ports", "-o", "json")
	if err != nil {
		return nil, err
	}
	var pms []api.PortMapping
	if err := json.Unmarshal(out, &pms); err != nil {
		return nil, fmt.Errorf("zlmesh ports -o json in %s: %v: %s", h.Name, err, out)
	}
	return pms, nil
}

// portSet renders port mappings for comparison: node proto addr:port → target (container/service).
func portSet(pms []api.PortMapping) []string {
	var s []string
	for _, p := range pms {
		addr := p.HostAddress
		if addr == "" {
			addr = "*"
		}
		s = append(s, fmt.Sprintf("%s %s %s:%d → %s (%s%s)", p.Node, p.Protocol, addr, p.HostPort, p.Target, p.Container, p.Service))
	}
	sort.Strings(s)
	return s
}

// waitPorts waits until `zlmesh ports` on every host of hosts lists exactly
// want.
func waitPorts(t *testing.T, bin string, hosts []*testbed.Host, want []api.PortMapping, timeout time.Duration) {
	t.Helper()
	w := portSet(want)
	eventually(t, timeout, func() error {
		for _, h := range hosts {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			got, err := cliPorts(ctx, bin, h)
			cancel()
			if err != nil {
				return err
			}
			if g := portSet(got); !slices.Equal(g, w) {
				return fmt.Errorf("zlmesh ports on %s lists\n%s\nwant\n%s", h.Name, strings.Join(g, "\n"), strings.Join(w, "\n"))
			}
		}
		return nil
	})
}

// apiCode returns the code and HTTP status of an *api.Error.
func apiCode(err error) (string, int) {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Code, ae.Status
	}
	return "", 0
}

// natCluster brings up n hosts with the NAT tests' gossip timers; args adds
// arguments per host.
func natCluster(t *testing.T, n int, args func(h *testbed.Host) []string) (*testbed.Testbed, string) {
	t.Helper()
	bin := testbed.BuildZlmesh(t)
	tb := testbed.New(t, testbed.Options{
		Hosts:  n,
		Binary: bin,
		Args: func(h *testbed.Host) []string {
			a := slices.Clone(fastGossip)
			if args != nil {
				a = append(a, args(h)...)
			}
			return a
		},
	})
	t.Cleanup(func() {
		if !t.Failed() {
			checkInvariants(t, tb)
		}
	})
	waitWhole(t, tb, tb.Hosts(), 60*time.Second)
	return tb, bin
}

// Egress masquerade, published ports from everywhere (TCP and UDP, to a
// local and to a remote container), refused publishes, unpublish, 1000
// publish/unpublish cycles, `zlmesh ports` everywhere, and ports removed
// with their container. h2 runs with --masquerade=false.
func TestNATEgressAndPublishedPorts(t *testing.T) {
	t.Parallel()
	tb, bin := natCluster(t, 3, func(h *testbed.Host) []string {
		if h.Name == "h2" {
			return []string{"--masquerade=false"}
		}
		return nil
	})
	h1, h2, h3 := tb.Host("h1"), tb.Host("h2"), tb.Host("h3")
	hosts := tb.Hosts()
	st1 := status(t, h1)
	overlay1 := st1.OverlayIP

	web, webAt := natAttach(t, tb, h1, "web", "web")  // the local target
	cli, cliAt := natAttach(t, tb, h1, "cli", "cli")  // a local client on another bridge
	apiC, apiAt := natAttach(t, tb, h2, "api", "api") // the remote target
	far, farAt := natAttach(t, tb, h3, "far", "far")  // a client on a third host

	servers := map[string]*echoServer{}
	for _, proto := range []string{"tcp", "udp"} {
		servers["web/"+proto] = startEcho(t, "web "+proto, web.StartProcess, proto, "0.0.0.0:80")
		servers["api/"+proto] = startEcho(t, "api "+proto, apiC.StartProcess, proto, "0.0.0.0:80")
		servers["far/"+proto] = startEcho(t, "far "+proto, far.StartProcess, proto, "0.0.0.0:80")
		servers["out/"+proto] = startEcho(t, "outside "+proto, tb.StartOutside, proto, testbed.OutsideAddr.String()+":7000")
	}
	out := testbed.OutsideAddr.String() + ":7000"
	pub := func(port int) string { return fmt.Sprintf("%s:%d", h1.Underlay, port) }

	t.Run("egress", func(t *testing.T) {
		for _, proto := range []string{"tcp", "udp"} {
			// Masqueraded to the host's underlay address.
			expectFrom(t, ctrPeer(cli), proto, out, servers["out/"+proto], h1.Underlay.String())
			expectFrom(t, ctrPeer(far), proto, out, servers["out/"+proto], h3.Underlay.String())
			// Inside the cluster the container's own address, across hosts.
			expectFrom(t, ctrPeer(cli), proto, apiAt.Address+":80", servers["api/"+proto], cliAt.Address)
			expectFrom(t, ctrPeer(far), proto, apiAt.Address+":80", servers["api/"+proto], farAt.Address)
			expectFrom(t, ctrPeer(apiC), proto, farAt.Address+":80", servers["far/"+proto], apiAt.Address)
		}
	})

	t.Run("no masquerade", func(t *testing.T) {
		// h2 runs --masquerade=false: its container's datagram reaches the
		// outside with the container's source, which the outside cannot
		// route back to; a TCP connection never completes.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n, err := natSend(ctx, ctrPeer(apiC), "udp", out)
		if err == nil {
			t.Errorf("api on h2 (no masquerade) got an answer from the outside")
		}
		eventually(t, 5*time.Second, func() error {
			if src := servers["out/udp"].from(n); src != apiAt.Address {
				return fmt.Errorf("the outside saw api's datagram from %q, want %s", src, apiAt.Address)
			}
			return nil
		})
		n, err = natSend(ctx, ctrPeer(apiC), "tcp", out)
		if err == nil {
			t.Errorf("api on h2 (no masquerade) connected to the outside")
		}
		if src := servers["out/tcp"].from(n); src != "" {
			t.Errorf("the outside accepted api's connection from %s", src)
		}
		// The masquerade rule is on h1 and not on h2.
		if d := mustNATTable(t, h1); !strings.Contains(d, "zlmesh egress") {
			t.Errorf("h1 has no egress masquerade rule:\n%s", d)
		}
		if d := mustNATTable(t, h2); strings.Contains(d, "zlmesh egress") {
			t.Errorf("h2 (--masquerade=false) has an egress masquerade rule:\n%s", d)
		}
	})

	empty := mustNATTable(t, h1)
	emptyRules, emptyElems := natCount(empty)
	if emptyElems != 0 {
		t.Fatalf("h1's NAT table has %d port elements before any publish:\n%s", emptyElems, empty)
	}

	// The published ports: 8080 on h1 to web on h1, 8081 on h1 to api on
	// h2, each TCP and UDP.
	ctx := context.Background()
	reqs := []api.PublishRequest{
		{Container: web.ID(), Protocol: "tcp", HostPort: 8080, ContainerPort: 80},
		{Container: web.ID(), Protocol: "udp", HostPort: 8080, ContainerPort: 80},
		{Container: apiC.ID(), Protocol: "tcp", HostPort: 8081, ContainerPort: 80},
		{Container: apiC.ID(), Protocol: "udp", HostPort: 8081, ContainerPort: 80},
	}
	var published []api.PortMapping
	publishAll := func(t *testing.T) {
		t.Helper()
		published = nil
		for _, r := range reqs {
			pm, err := h1.Client().Publish(ctx, r)
			if err != nil {
				t.Fatalf("publish %+v: %v", r, err)
			}
			want := webAt.Address + ":80"
			if r.Container == apiC.ID() {
				want = apiAt.Address + ":80"
			}
			if pm.Target != want || pm.Node != "h1" {
				t.Errorf("publish %+v: %+v, want target %s on h1", r, pm, want)
			}
			published = append(published, pm)
		}
	}

	t.Run("publish", func(t *testing.T) {
		publishAll(t)
		withPorts := mustNATTable(t, h1)
		// One element per port and family: the targets are dual-stack.
		if r, e := natCount(withPorts); r != emptyRules || e != 8 {
			t.Errorf("after 4 publishes h1's table has %d rules and %d elements, want %d and 8:\n%s", r, e, emptyRules, withPorts)
		}
		// Who sees what (see the table in natd's package doc).
		for _, proto := range []string{"tcp", "udp"} {
			w, a := servers["web/"+proto], servers["api/"+proto]
			// From the outside.
			expectFrom(t, outsidePeer(tb), proto, pub(8080), w, testbed.OutsideAddr.String())
			expectFrom(t, outsidePeer(tb), proto, pub(8081), a, overlay1)
			// From a container on h3 (masqueraded by h3 on its way out).
			expectFrom(t, ctrPeer(far), proto, pub(8080), w, h3.Underlay.String())
			expectFrom(t, ctrPeer(far), proto, pub(8081), a, overlay1)
			// From another host itself.
			expectFrom(t, hostPeer(h2), proto, pub(8080), w, h2.Underlay.String())
			// From a local container on another bridge: hairpin through
			// web's bridge gateway; to the remote target its own address.
			expectFrom(t, ctrPeer(cli), proto, pub(8080), w, webAt.Gateway)
			expectFrom(t, ctrPeer(cli), proto, pub(8081), a, cliAt.Address)
			// The target reaching itself through its published port.
			expectFrom(t, ctrPeer(web), proto, pub(8080), w, webAt.Gateway)
			expectFrom(t, ctrPeer(web), proto, pub(8081), a, webAt.Address)
			// A process on h1 itself.
			expectFrom(t, hostPeer(h1), proto, pub(8080), w, h1.Underlay.String())
			expectFrom(t, hostPeer(h1), proto, pub(8081), a, overlay1)
		}
		waitPorts(t, bin, hosts, published, 30*time.Second)
	})

	t.Run("service and host address", func(t *testing.T) {
		before := mustNATTable(t, h1)
		// A service (its one container is on h2) and a port on one
		// host address only.
		svc, err := h1.Client().Publish(ctx, api.PublishRequest{Service: "api", Protocol: "tcp", HostPort: 8082, ContainerPort: 80})
		if err != nil || svc.Target != apiAt.Address+":80" {
			t.Fatalf("publish service api: %+v, %v", svc, err)
		}
		one, err := h1.Client().Publish(ctx, api.PublishRequest{Container: web.ID(), Protocol: "tcp", HostPort: 8083, ContainerPort: 80, HostAddress: h1.Underlay.String()})
		if err != nil || one.HostAddress != h1.Underlay.String() {
			t.Fatalf("publish on %s: %+v, %v", h1.Underlay, one, err)
		}
		w, a := servers["web/tcp"], servers["api/tcp"]
		expectFrom(t, outsidePeer(tb), "tcp", pub(8082), a, overlay1)
		expectFrom(t, outsidePeer(tb), "tcp", pub(8083), w, testbed.OutsideAddr.String())
		// h1's overlay address is one of its addresses too: a port on
		// all addresses answers there (over WireGuard, the client's
		// address kept), a port on the underlay address does not.
		expectFrom(t, ctrPeer(far), "tcp", overlay1+":8080", w, farAt.Address)
		expectClosed(t, ctrPeer(far), "tcp", overlay1+":8083", w)
		if err := h1.Client().Unpublish(ctx, api.UnpublishRequest{Protocol: "tcp", HostPort: 8082}); err != nil {
			t.Fatal(err)
		}
		// Unpublishing needs the address it was published on.
		err = h1.Client().Unpublish(ctx, api.UnpublishRequest{Protocol: "tcp", HostPort: 8083})
		if code, _ := apiCode(err); code != api.CodeNotFound {
			t.Errorf("unpublish 8083/tcp without its host address: %v, want %s", err, api.CodeNotFound)
		}
		if err := h1.Client().Unpublish(ctx, api.UnpublishRequest{Protocol: "tcp", HostPort: 8083, HostAddress: h1.Underlay.String()}); err != nil {
			t.Fatal(err)
		}
		sameTable(t, h1, before, "publish and unpublish of a service and of a host address")
		expectClosed(t, outsidePeer(tb), "tcp", pub(8083), w)
	})

	t.Run("refused", func(t *testing.T) {
		before := mustNATTable(t, h1)
		ports0, err := h1.Client().Ports(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name   string
			req    api.PublishRequest
			code   string
			status int
			want   string // in the message
		}{
			{"host port taken", reqs[0], api.CodeAlreadyExists, 409, "8080/tcp is already published"},
			{"taken on all addresses", api.PublishRequest{Container: apiC.ID(), Protocol: "tcp", HostPort: 8080, ContainerPort: 81, HostAddress: h1.Underlay.String()}, api.CodeAlreadyExists, 409, "already published"},
			{"bad protocol", api.PublishRequest{Container: web.ID(), Protocol: "sctp", HostPort: 9000, ContainerPort: 80}, api.CodeBadRequest, 400, "sctp"},
			{"host port 0", api.PublishRequest{Container: web.ID(), Protocol: "tcp", HostPort: 0, ContainerPort: 80}, api.CodeBadRequest, 400, "host port 0"},
			{"host port 65536", api.PublishRequest{Container: web.ID(), Protocol: "tcp", HostPort: 65536, ContainerPort: 80}, api.CodeBadRequest, 400, "host port 65536"},
			{"container port 0", api.PublishRequest{Container: web.ID(), Protocol: "tcp", HostPort: 9000, ContainerPort: 0}, api.CodeBadRequest, 400, "container port 0"},
			{"unknown container", api.PublishRequest{Container: "nosuch", Protocol: "tcp", HostPort: 9000, ContainerPort: 80}, api.CodeNotFound, 404, "nosuch"},
			{"container and service", api.PublishRequest{Container: web.ID(), Service: "web", Protocol: "tcp", HostPort: 9000, ContainerPort: 80}, api.CodeBadRequest, 400, "not both"},
			{"neither container nor service", api.PublishRequest{Protocol: "tcp", HostPort: 9000, ContainerPort: 80}, api.CodeBadRequest, 400, "container or a service"},
			{"bad host address", api.PublishRequest{Container: web.ID(), Protocol: "tcp", HostPort: 9000, ContainerPort: 80, HostAddress: "not-an-ip"}, api.CodeBadRequest, 400, "not-an-ip"},
			{"loopback host address", api.PublishRequest{Container: web.ID(), Protocol: "tcp", HostPort: 9000, ContainerPort: 80, HostAddress: "::1"}, api.CodeBadRequest, 400, "loopback"},
			{"link-local host address", api.PublishRequest{Container: web.ID(), Protocol: "tcp", HostPort: 9000, ContainerPort: 80, HostAddress: "fe80::1"}, api.CodeBadRequest, 400, "link-local"},
			{"zoned host address", api.PublishRequest{Container: web.ID(), Protocol: "tcp", HostPort: 9000, ContainerPort: 80, HostAddress: "fe80::1%eth0"}, api.CodeBadRequest, 400, "fe80::1%eth0"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := h1.Client().Publish(ctx, tt.req)
				code, st := apiCode(err)
				if code != tt.code || st != tt.status || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("publish %+v: %v (code %q, status %d); want %s (%d) naming %q", tt.req, err, code, st, tt.code, tt.status, tt.want)
				}
			})
		}
		// The same through the CLI: a one-line error, non-zero exit.
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		o, err := h1.Exec(cctx, bin, "publish", "--container", web.ID(), "--port", "8080:80/tcp")
		if err == nil || !strings.Contains(string(o), "already published") {
			t.Errorf("zlmesh publish of a taken port: %v: %s", err, o)
		}
		o, err = h1.Exec(cctx, bin, "publish", "--container", web.ID(), "--port", "9000:80/sctp")
		if err == nil || !strings.Contains(string(o), "sctp") {
			t.Errorf("zlmesh publish /sctp: %v: %s", err, o)
		}
		// Nothing changed.
		sameTable(t, h1, before, "refused publishes")
		ports1, err := h1.Client().Ports(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(portSet(ports0), portSet(ports1)) {
			t.Errorf("refused publishes changed the ports:\n%v\nthen\n%v", portSet(ports0), portSet(ports1))
		}
		// Unpublishing what is not published: 404.
		err = h1.Client().Unpublish(ctx, api.UnpublishRequest{Protocol: "tcp", HostPort: 9999})
		if code, st := apiCode(err); code != api.CodeNotFound || st != 404 {
			t.Errorf("unpublish of a port never published: %v", err)
		}
	})

	t.Run("unpublish", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if o, err := h1.Exec(cctx, bin, "unpublish", "--port", "8080/tcp"); err != nil {
			t.Fatalf("zlmesh unpublish --port 8080/tcp: %v: %s", err, o)
		}
		for _, r := range reqs[1:] {
			if err := h1.Client().Unpublish(ctx, api.UnpublishRequest{Protocol: r.Protocol, HostPort: r.HostPort}); err != nil {
				t.Fatalf("unpublish %d/%s: %v", r.HostPort, r.Protocol, err)
			}
		}
		sameTable(t, h1, empty, "unpublishing every port")
		if r, e := natCount(mustNATTable(t, h1)); r != emptyRules || e != emptyElems {
			t.Errorf("after unpublishing, h1's table has %d rules and %d elements, want %d and %d", r, e, emptyRules, emptyElems)
		}
		for _, proto := range []string{"tcp", "udp"} {
			w, a := servers["web/"+proto], servers["api/"+proto]
			for _, p := range []natPeer{outsidePeer(tb), ctrPeer(far), hostPeer(h2), ctrPeer(cli), ctrPeer(web), hostPeer(h1)} {
				expectClosed(t, p, proto, pub(8080), w, a)
				expectClosed(t, p, proto, pub(8081), w, a)
			}
		}
		waitPorts(t, bin, hosts, nil, 30*time.Second)
	})

	t.Run("1000 cycles", func(t *testing.T) {
		publishAll(t)
		before := mustNATTable(t, h1)
		start := time.Now()
		// One cycle in ten is UDP, to the remote container: unpublishing a
		// UDP port also walks the conntrack table (natd's forgetUDP),
		// tens of milliseconds on a loaded machine.
		for i := range 1000 {
			r := api.PublishRequest{Container: web.ID(), Protocol: "tcp", HostPort: 9000 + i%100, ContainerPort: 80 + i%7}
			if i%10 == 9 {
				r.Container, r.Protocol = apiC.ID(), "udp"
			}
			if _, err := h1.Client().Publish(ctx, r); err != nil {
				t.Fatalf("cycle %d: publish %+v: %v", i, r, err)
			}
			if err := h1.Client().Unpublish(ctx, api.UnpublishRequest{Protocol: r.Protocol, HostPort: r.HostPort}); err != nil {
				t.Fatalf("cycle %d: unpublish %d/%s: %v", i, r.HostPort, r.Protocol, err)
			}
		}
		t.Logf("1000 publish/unpublish cycles through the control socket: %v", time.Since(start).Round(time.Millisecond))
		sameTable(t, h1, before, "1000 publish/unpublish cycles")
		waitPorts(t, bin, hosts, published, 30*time.Second)
		// Still working.
		expectFrom(t, outsidePeer(tb), "tcp", pub(8080), servers["web/tcp"], testbed.OutsideAddr.String())
	})

	t.Run("removed with the container", func(t *testing.T) {
		// web is detached on h1 itself: its ports go at once.
		if err := h1.Client().Detach(ctx, web.ID()); err != nil {
			t.Fatal(err)
		}
		got, err := h1.Client().Ports(ctx)
		if err != nil {
			t.Fatal(err)
		}
		remaining := published[2:]
		if !slices.Equal(portSet(got), portSet(remaining)) {
			t.Errorf("right after detaching web, h1 lists\n%v\nwant\n%v", portSet(got), portSet(remaining))
		}
		if _, e := natCount(mustNATTable(t, h1)); e != 4 {
			t.Errorf("right after detaching web, h1's table has %d port elements, want 4 (2 ports, 2 families)", e)
		}
		expectClosed(t, outsidePeer(tb), "tcp", pub(8080))
		waitPorts(t, bin, hosts, remaining, 30*time.Second)

		// api is detached on h2: h1 learns it by gossip and keeps the
		// port for portGrace (the container may come back), then
		// removes it.
		detached := time.Now()
		if err := h2.Client().Detach(ctx, apiC.ID()); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, func() error {
			svcs, err := h1.Client().Services(ctx)
			if err != nil {
				return err
			}
			for _, s := range svcs {
				if s.Container == apiC.ID() {
					return fmt.Errorf("h1 still has api's service record")
				}
			}
			return nil
		})
		if got, _ := h1.Client().Ports(ctx); !slices.Equal(portSet(got), portSet(remaining)) {
			t.Errorf("h1 dropped api's ports as soon as it learned api is gone (want them kept for the grace): %v", portSet(got))
		}
		waitPorts(t, bin, hosts, nil, portGrace+30*time.Second)
		t.Logf("the ports of api (detached on h2) left h1 after %v (grace %v)", time.Since(detached).Round(100*time.Millisecond), portGrace)
		sameTable(t, h1, empty, "every port removed with its container")
	})
}

// prober sends from the outside to published ports until stopped, and
// records every failure.
type prober struct {
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	ok    int
	fails []string
}

func startProber(tb *testbed.Testbed, targets map[string]string) *prober {
	pr := &prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(pr.done)
		for {
			for proto, addr := range targets {
				select {
				case <-pr.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := natSendLen(ctx, outsidePeer(tb), proto, addr, 8)
				cancel()
				pr.mu.Lock()
				if err != nil {
					pr.fails = append(pr.fails, fmt.Sprintf("%s %s %s: %v", time.Now().Format("15:04:05.000"), proto, addr, err))
				} else {
					pr.ok++
				}
				pr.mu.Unlock()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return pr
}

func (pr *prober) successes() int {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.ok
}

// waitMore waits until n more probes succeeded.
func (pr *prober) waitMore(t *testing.T, n int) {
	t.Helper()
	want := pr.successes() + n
	eventually(t, 30*time.Second, func() error {
		if got := pr.successes(); got < want {
			return fmt.Errorf("%d probes succeeded, waiting for %d", got, want)
		}
		return nil
	})
}

func (pr *prober) finish() (ok int, fails []string) {
	close(pr.stop)
	<-pr.done
	return pr.ok, pr.fails
}

// Published ports across restarts: the kernel keeps the table while zlmesh
// is killed, a node restarted alone (its peer down, nothing to sync with)
// neither drops the port to its local container nor forgets the one to the
// container on the peer, a plain stop leaves the table, `zlmesh down
// --purge` removes it.
func TestNATRestart(t *testing.T) {
	t.Parallel()
	tb, bin := natCluster(t, 2, nil)
	h1, h2 := tb.Host("h1"), tb.Host("h2")
	ctx := context.Background()
	web, webAt := natAttach(t, tb, h1, "web", "web")
	apiC, _ := natAttach(t, tb, h2, "api", "api")
	webTCP := startEcho(t, "web tcp", web.StartProcess, "tcp", "0.0.0.0:80")
	startEcho(t, "web udp", web.StartProcess, "udp", "0.0.0.0:80")
	apiTCP := startEcho(t, "api tcp", apiC.StartProcess, "tcp", "0.0.0.0:80")
	pub := func(port int) string { return fmt.Sprintf("%s:%d", h1.Underlay, port) }
	overlay1 := status(t, h1).OverlayIP
	for _, r := range []api.PublishRequest{
		{Container: web.ID(), Protocol: "tcp", HostPort: 8080, ContainerPort: 80},
		{Container: web.ID(), Protocol: "udp", HostPort: 8080, ContainerPort: 80},
		{Container: apiC.ID(), Protocol: "tcp", HostPort: 8081, ContainerPort: 80},
	} {
		if _, err := h1.Client().Publish(ctx, r); err != nil {
			t.Fatalf("publish %+v: %v", r, err)
		}
	}
	expectFrom(t, outsidePeer(tb), "tcp", pub(8080), webTCP, testbed.OutsideAddr.String())
	expectFrom(t, outsidePeer(tb), "tcp", pub(8081), apiTCP, overlay1)
	table := mustNATTable(t, h1)

	pr := startProber(tb, map[string]string{"tcp": pub(8080), "udp": pub(8080)})
	defer func() {
		if pr != nil {
			pr.finish()
		}
	}()
	pr.waitMore(t, 4)

	// Each step gets its own bound.
	step := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		t.Cleanup(cancel)
		return c
	}
	// h2 stops; h1 is killed and comes back alone.
	if err := h2.Stop(step()); err != nil {
		t.Fatal(err)
	}
	if err := h1.Kill(); err != nil {
		t.Fatal(err)
	}
	pr.waitMore(t, 4) // zlmesh is not running: the kernel translates
	sameTable(t, h1, table, "zlmesh killed")
	// Someone turns hairpin mode off on web's bridge port while zlmesh is
	// down: web no longer reaches itself through its published port
	// (bridge-nf-call-iptables is on in the testbed hosts), until the
	// restarted zlmesh adopts the attachment and repairs it.
	if o, err := h1.Exec(step(), "ip", "link", "set", webAt.HostVeth, "type", "bridge_slave", "hairpin", "off"); err != nil {
		t.Fatalf("hairpin off: %v: %s", err, o)
	}
	if _, err := natSend(step(), ctrPeer(web), "tcp", pub(8080)); err == nil {
		t.Errorf("web reached itself through its published port without hairpin mode")
	}
	restarted := time.Now()
	if err := h1.Start(step()); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(step()); err != nil {
		t.Fatal(err)
	}
	// Past the grace after which a port whose container is missing would
	// be removed: h1 cannot tell, alone, so it keeps api's port.
	for time.Since(restarted) < portGrace+5*time.Second {
		pr.waitMore(t, 1)
	}
	expectFrom(t, ctrPeer(web), "tcp", pub(8080), webTCP, webAt.Gateway)
	ok, fails := pr.finish()
	pr = nil
	if len(fails) > 0 {
		t.Errorf("%d of %d probes of the port to the local container failed around the restart:\n%s", len(fails), ok+len(fails), strings.Join(fails, "\n"))
	}
	t.Logf("%d probes through the restart", ok)
	sameTable(t, h1, table, "h1 restarted alone")
	got, err := h1.Client().Ports(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Errorf("h1 restarted alone lists %v, want its 3 ports", portSet(got))
	}

	// h2 comes back: the port to api works again.
	if err := h2.Start(step()); err != nil {
		t.Fatal(err)
	}
	waitWhole(t, tb, tb.Hosts(), 60*time.Second)
	expectFrom(t, outsidePeer(tb), "tcp", pub(8081), apiTCP, overlay1)
	sameTable(t, h1, table, "h2 back")

	// A plain stop leaves the table, and the port to web works.
	if err := h1.Stop(step()); err != nil {
		t.Fatal(err)
	}
	sameTable(t, h1, table, "zlmesh stopped")
	expectFrom(t, outsidePeer(tb), "tcp", pub(8080), webTCP, testbed.OutsideAddr.String())

	// `zlmesh down --purge` removes it.
	if err := h1.Start(step()); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(step()); err != nil {
		t.Fatal(err)
	}
	if o, err := h1.Exec(step(), bin, "down", "--purge"); err != nil {
		t.Fatalf("zlmesh down --purge: %v: %s", err, o)
	}
	eventually(t, 20*time.Second, func() error {
		if h1.Running() {
			return errors.New("h1's zlmesh still runs after down")
		}
		return nil
	})
	if o, err := h1.Exec(step(), "nft", "list", "table", "inet", "zlmesh"); err == nil {
		t.Errorf("the NAT table is still there after zlmesh down --purge:\n%s", o)
	}
	expectClosed(t, outsidePeer(tb), "tcp", pub(8080), webTCP)
}

//go:build linux

package e2e

// Containers: attach through the control socket, traffic between containers
// across hosts, the sweep of vanished namespaces, restarts (kill -9 and
// clean), bad input, metrics and events. Every test checks what crossed the
// network (pings, TCP bytes with the sender's address as the server saw it)
// and what the kernel holds (links, bridge ports, addresses, read with `ip -j`
// inside the hosts and containers), not only what the API answers.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/internal/journal"
	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/ipam/disk"
	"github.com/zlmesh/zlmesh/testbed"
)

// The mesh DNS address and search domain every attachment is told to use.
const (
	wantDNS    = testbed.DefaultMeshDNS
	wantSearch = testbed.DefaultSearchDomain
)

// addContainer makes container name on h or fails the test.
func addContainer(t *testing.T, tb *testbed.Testbed, h *testbed.Host, name string) *testbed.Container {
	t.Helper()
	c, err := tb.AddContainer(context.Background(), h, name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// mustAttach attaches c to service and checks the answer against the node's
// status: an address in the node's subnet, the slice's gateway, the overlay
// MTU, the mesh DNS and search domain.
func mustAttach(t *testing.T, c *testbed.Container, service string) api.Attachment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := c.Attach(ctx, service)
	if err != nil {
		t.Fatalf("attach %s to %s: %v\n%s", c, service, err, c.Host.LogTail(20))
	}
	checkAttachment(t, c.Host, a, service, c.ID())
	return a
}

func checkAttachment(t *testing.T, h *testbed.Host, a api.Attachment, service, id string) {
	t.Helper()
	st := status(t, h)
	addr, err1 := netip.ParseAddr(a.Address)
	gw, err2 := netip.ParseAddr(a.Gateway)
	if err1 != nil || err2 != nil {
		t.Fatalf("attachment %+v: bad address or gateway", a)
	}
	inBlock := false
	for _, b := range st.Blocks {
		inBlock = inBlock || mustPrefix(t, b).Contains(addr)
	}
	switch {
	case a.Service != service || a.Container != id || a.Node != h.Name:
		t.Errorf("attachment %+v: want service %s, container %s, node %s", a, service, id, h.Name)
	case !inBlock || a.Prefix != 32:
		t.Errorf("attachment %s: address %s/%d is not a /32 in one of %s's blocks %v", id, a.Address, a.Prefix, h.Name, st.Blocks)
	case gw != netip.MustParseAddr("169.254.1.1"):
		t.Errorf("attachment %s: gateway %s, want the link-local 169.254.1.1", id, gw)
	case a.MTU != st.MTU || a.MTU == 0:
		t.Errorf("attachment %s: MTU %d, want the overlay's %d", id, a.MTU, st.MTU)
	case a.DNS != st.MeshDNS || a.SearchDomain != wantSearch:
		t.Errorf("attachment %s: DNS %q search %q, want %s and %s", id, a.DNS, a.SearchDomain, st.MeshDNS, wantSearch)
	case a.Ifname != "eth0" || !strings.HasPrefix(a.Bridge, "zlb-") || !strings.HasPrefix(a.HostVeth, "zlv"):
		t.Errorf("attachment %s: ifname %q bridge %q host veth %q", id, a.Ifname, a.Bridge, a.HostVeth)
	}
}

// pingPairs pings every destination from every source (not itself) once,
// all pairs at once, and returns the failures.
func pingPairs(ctx context.Context, from []*testbed.Container, to map[*testbed.Container]string) []string {
	var mu sync.Mutex
	var fails []string
	var wg sync.WaitGroup
	for _, src := range from {
		for dst, addr := range to {
			if dst == src {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := src.Ping(ctx, addr); err != nil {
					mu.Lock()
					fails = append(fails, fmt.Sprintf("%s→%s(%s): %v", src, dst, addr, err))
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	slices.Sort(fails)
	return fails
}

// pingContainers waits until every container pings every other one.
func pingContainers(t *testing.T, tb *testbed.Testbed, addrs map[*testbed.Container]string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	cs := slices.Collect(maps.Keys(addrs))
	deadline := time.Now().Add(timeout)
	for {
		fails := pingPairs(ctx, cs, addrs)
		if len(fails) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %d ping failures: %s\n%s", timeout, len(fails), strings.Join(fails, "; "), diagnose(tb.Hosts()))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// tcpEcho starts the tcp-echo helper in c on addr:port and waits until it
// listens.
func tcpEcho(t *testing.T, c *testbed.Container, addr string, port int) *testbed.Process {
	t.Helper()
	ctx := context.Background()
	p, err := c.StartProcess(ctx, testbed.HelperArgv("tcp-echo", net.JoinHostPort(addr, strconv.Itoa(port)))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	eventually(t, 10*time.Second, func() error {
		if !strings.Contains(p.Output(), "listening") {
			return fmt.Errorf("tcp-echo in %s does not listen: %q", c, p.Output())
		}
		return nil
	})
	return p
}

// tcpSend sends msg from c to addr:port with the tcp-send helper and checks
// that it comes back.
func tcpSend(ctx context.Context, c *testbed.Container, addr string, port int, msg string) error {
	out, err := c.Exec(ctx, testbed.HelperArgv("tcp-send", net.JoinHostPort(addr, strconv.Itoa(port)), msg)...)
	if err != nil {
		return err
	}
	if string(out) != msg {
		return fmt.Errorf("tcp-send from %s to %s:%d: got %q back, want %q", c, addr, port, out, msg)
	}
	return nil
}

// services returns GET /v1/services of h as container → "service address node".
func services(ctx context.Context, h *testbed.Host) (map[string]string, error) {
	list, err := h.Client().Services(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h.Name, err)
	}
	out := map[string]string{}
	for _, s := range list {
		if _, dup := out[s.Container]; dup {
			return nil, fmt.Errorf("%s lists %s twice: %+v", h.Name, s.Container, list)
		}
		out[s.Container] = s.Service + " " + s.Address + " " + s.Node
	}
	return out, nil
}

// waitServices waits until every host lists exactly want.
func waitServices(t *testing.T, hosts []*testbed.Host, want map[string]string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() error {
		for _, h := range hosts {
			got, err := services(context.Background(), h)
			if err != nil {
				return err
			}
			if !maps.Equal(got, want) {
				return fmt.Errorf("%s: /v1/services = %v, want %v", h.Name, got, want)
			}
		}
		return nil
	})
}

// endpoint renders an attachment the way services does.
func endpoint(a api.Attachment) string { return a.Service + " " + a.Address + " " + a.Node }

// ipLink is the part of `ip -j -d link` the tests read.
type ipLink struct {
	Ifname   string `json:"ifname"`
	Master   string `json:"master"`
	LinkInfo struct {
		Kind string `json:"info_kind"`
	} `json:"linkinfo"`
	AddrInfo []ipAddr `json:"addr_info"`
}

type ipAddr struct {
	Local  string `json:"local"`
	Prefix int    `json:"prefixlen"`
	Scope  string `json:"scope"`
}

// ipJSON runs `ip -j <args>` through run and decodes it.
func ipJSON(run func(argv ...string) ([]byte, error), args ...string) ([]ipLink, error) {
	out, err := run(append([]string{"ip", "-j"}, args...)...)
	if err != nil {
		return nil, err
	}
	var links []ipLink
	if err := json.Unmarshal(out, &links); err != nil {
		return nil, fmt.Errorf("ip -j %v: %v: %s", args, err, out)
	}
	return links, nil
}

// kernelObjects is what zlmesh made in a host's kernel, as sorted lists so
// that a leaked or doubled object shows: zlv* links, zlb-* bridges, ports of
// zlb-* bridges and every non-link-local address on a zl link.
type kernelObjects struct {
	Veths, Bridges, Ports, Addrs []string
	Routes                       []string // the containers' host routes (bridge's protocol 122)
}

func hostObjects(ctx context.Context, h *testbed.Host) (kernelObjects, error) {
	run := func(argv ...string) ([]byte, error) { return h.Exec(ctx, argv...) }
	links, err := ipJSON(run, "-d", "link", "show")
	if err != nil {
		return kernelObjects{}, err
	}
	addrs, err := ipJSON(run, "addr", "show")
	if err != nil {
		return kernelObjects{}, err
	}
	var o kernelObjects
	for _, l := range links {
		switch {
		case strings.HasPrefix(l.Ifname, "zlv"):
			o.Veths = append(o.Veths, l.Ifname+"/"+l.LinkInfo.Kind)
		case strings.HasPrefix(l.Ifname, "zlb-"):
			o.Bridges = append(o.Bridges, l.Ifname+"/"+l.LinkInfo.Kind)
		}
		if strings.HasPrefix(l.Master, "zlb-") {
			o.Ports = append(o.Ports, l.Ifname+"@"+l.Master)
		}
	}
	for _, l := range addrs {
		if !strings.HasPrefix(l.Ifname, "zlv") && !strings.HasPrefix(l.Ifname, "zlb-") {
			continue
		}
		for _, a := range l.AddrInfo {
			if a.Scope != "link" {
				o.Addrs = append(o.Addrs, fmt.Sprintf("%s/%d@%s", a.Local, a.Prefix, l.Ifname))
			}
		}
	}
	for _, s := range [][]string{o.Veths, o.Bridges, o.Ports, o.Addrs} {
		slices.Sort(s)
	}
	if o.Routes, err = hostRoutes(ctx, h); err != nil {
		return kernelObjects{}, err
	}
	return o, nil
}

// containerAddrs lists the non-link-local addresses of c's eth0 ("" when c
// has no eth0) and its default route's gateway.
func containerAddrs(ctx context.Context, c *testbed.Container) (string, error) {
	run := func(argv ...string) ([]byte, error) { return c.Exec(ctx, argv...) }
	links, err := ipJSON(run, "addr", "show")
	if err != nil {
		return "", err
	}
	var out []string
	for _, l := range links {
		if l.Ifname == "lo" {
			continue
		}
		for _, a := range l.AddrInfo {
			if a.Scope != "link" {
				out = append(out, fmt.Sprintf("%s/%d@%s", a.Local, a.Prefix, l.Ifname))
			}
		}
		if len(l.AddrInfo) == 0 {
			out = append(out, "no-address@"+l.Ifname)
		}
	}
	route, err := c.Exec(ctx, "ip", "route", "show", "default")
	if err != nil {
		return "", err
	}
	slices.Sort(out)
	return strings.Join(out, " ") + " | " + strings.TrimSpace(string(route)), nil
}

// stateOnDisk reads a node's state dir the way a restarted node would (from
// a copy, so the running daemon's journals are never touched): container →
// leased address, and container → attached address.
func stateOnDisk(h *testbed.Host) (leases, attached map[string]string, err error) {
	dir, err := os.MkdirTemp("", "zlt-e2e-state-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	for _, name := range []string{"ipam.json", "ipam.json.log", "attachments.json", "attachments.json.log"} {
		b, err := os.ReadFile(filepath.Join(h.StateDir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, nil, err
		}
	}
	st, err := disk.New(filepath.Join(dir, "ipam.json"), 0).Load()
	if err != nil {
		return nil, nil, err
	}
	leases = map[string]string{}
	for id, l := range st.Leases {
		leases[id] = l.Addr.String()
	}
	// attachments.json is node's; read it generically: a snapshot
	// {"attachments": {id: {"spec": {...}}}} and records {"put": ...} or
	// {"del": id}.
	type spec struct {
		Container string `json:"Container"`
		Address   string `json:"Address"`
	}
	type att struct {
		Spec spec `json:"spec"`
	}
	log, snap, recs, err := journal.Open(filepath.Join(dir, "attachments.json"))
	if err != nil {
		return nil, nil, err
	}
	log.Close()
	attached = map[string]string{}
	if snap != nil {
		var s struct {
			Attachments map[string]att `json:"attachments"`
		}
		if err := json.Unmarshal(snap, &s); err != nil {
			return nil, nil, err
		}
		for id, a := range s.Attachments {
			attached[id] = strings.Split(a.Spec.Address, "/")[0]
		}
	}
	for _, raw := range recs {
		var r struct {
			Put *att   `json:"put"`
			Del string `json:"del"`
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, nil, err
		}
		if r.Put != nil {
			attached[r.Put.Spec.Container] = strings.Split(r.Put.Spec.Address, "/")[0]
		} else {
			delete(attached, r.Del)
		}
	}
	return leases, attached, nil
}

// nodeView is everything a host holds about its containers: the kernel's
// objects, the state on disk, /v1/attachments and the leases /metrics
// counts, and what each of the given containers has inside.
type nodeView struct {
	Kernel     kernelObjects
	Leases     map[string]string // on disk
	Attached   map[string]string // on disk
	API        map[string]string // GET /v1/attachments: container → address
	Metrics    float64           // zlmesh_leases
	Containers map[string]string // container → its addresses and default route
}

func viewOf(ctx context.Context, h *testbed.Host, cs []*testbed.Container) (nodeView, error) {
	var v nodeView
	var err error
	if v.Kernel, err = hostObjects(ctx, h); err != nil {
		return v, err
	}
	if v.Leases, v.Attached, err = stateOnDisk(h); err != nil {
		return v, err
	}
	list, err := h.Client().Attachments(ctx)
	if err != nil {
		return v, err
	}
	v.API = map[string]string{}
	for _, a := range list {
		v.API[a.Container] = a.Address
	}
	m, err := scrape(ctx, h)
	if err != nil {
		return v, err
	}
	v.Metrics = m["zlmesh_leases"]
	v.Containers = map[string]string{}
	for _, c := range cs {
		if v.Containers[c.ID()], err = containerAddrs(ctx, c); err != nil {
			return v, err
		}
	}
	return v, nil
}

// consistent checks a view against itself: every attachment has its lease
// and its host veth as a port, and the API, the disk and /metrics agree.
func (v nodeView) consistent() error {
	switch {
	case !maps.Equal(v.Leases, v.Attached):
		return fmt.Errorf("leases on disk %v differ from attachments on disk %v", v.Leases, v.Attached)
	case !maps.Equal(v.API, v.Attached):
		return fmt.Errorf("/v1/attachments %v differs from the disk %v", v.API, v.Attached)
	case int(v.Metrics) != len(v.Leases):
		return fmt.Errorf("/metrics counts %v leases, the disk %d", v.Metrics, len(v.Leases))
	case len(v.Kernel.Veths) != len(v.API) || len(v.Kernel.Ports) != len(v.API) || len(v.Kernel.Routes) != len(v.API):
		return fmt.Errorf("%d attachments but host veths %v, bridge ports %v and routes %v", len(v.API), v.Kernel.Veths, v.Kernel.Ports, v.Kernel.Routes)
	case len(v.Kernel.Addrs) != len(v.Kernel.Bridges):
		return fmt.Errorf("bridges %v do not hold one address each: %v", v.Kernel.Bridges, v.Kernel.Addrs)
	}
	return nil
}

func (v nodeView) diff(w nodeView) string {
	var b strings.Builder
	a, c := reflect.ValueOf(v), reflect.ValueOf(w)
	for i := range a.NumField() {
		if !reflect.DeepEqual(a.Field(i).Interface(), c.Field(i).Interface()) {
			fmt.Fprintf(&b, "%s:\n  before %v\n  after  %v\n", a.Type().Field(i).Name, a.Field(i).Interface(), c.Field(i).Interface())
		}
	}
	return b.String()
}

// socketHTTP is a plain net/http client on h's control socket, for requests
// api.Client would not send (bad bodies, wrong methods) and for /metrics.
func socketHTTP(h *testbed.Host) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", h.Socket)
		},
	}, Timeout: 30 * time.Second}
}

// rawRequest sends one request and returns the status and body.
func rawRequest(ctx context.Context, h *testbed.Host, method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://zlmesh"+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c := socketHTTP(h)
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// scrape reads /metrics into series → value ("name{labels}" as written).
func scrape(ctx context.Context, h *testbed.Host) (map[string]float64, error) {
	code, body, err := rawRequest(ctx, h, http.MethodGet, "/metrics", nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics on %s: HTTP %d: %s", h.Name, code, body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			return nil, fmt.Errorf("/metrics on %s: bad line %q", h.Name, line)
		}
		out[line[:i]] = v
	}
	return out, nil
}

// TestContainersAcrossHosts: three hosts, service web with two containers on
// h1 and one on h2, service db with one on h3. Every container pings every
// other; TCP connects across hosts and the server sees the client's own
// container address; every host's /v1/services lists the four endpoints;
// the CLI's attachments and services parse with -o json.
func TestContainersAcrossHosts(t *testing.T) {
	tb := cluster(t, 3)
	h1, h2, h3 := tb.Host("h1"), tb.Host("h2"), tb.Host("h3")
	web1, web2 := addContainer(t, tb, h1, "web1"), addContainer(t, tb, h1, "web2")
	web3, db1 := addContainer(t, tb, h2, "web3"), addContainer(t, tb, h3, "db1")
	att := map[*testbed.Container]api.Attachment{
		web1: mustAttach(t, web1, "web"), web2: mustAttach(t, web2, "web"),
		web3: mustAttach(t, web3, "web"), db1: mustAttach(t, db1, "db"),
	}
	addrs := map[*testbed.Container]string{}
	want := map[string]string{}
	for c, a := range att {
		addrs[c] = a.Address
		want[c.ID()] = endpoint(a)
	}
	if att[web1].Bridge != att[web2].Bridge || att[web1].Gateway != att[web2].Gateway || att[web1].Address == att[web2].Address {
		t.Errorf("web1 and web2 on one host: %+v and %+v, want one bridge and gateway, two addresses", att[web1], att[web2])
	}

	pingContainers(t, tb, addrs, 30*time.Second)

	// TCP across hosts, both directions of the cluster: the echo server
	// in db1 (h3) hears web1 (h1) and web3 (h2) from their own addresses.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := tcpEcho(t, db1, addrs[db1], 7000)
	web := tcpEcho(t, web3, addrs[web3], 7001)
	eventually(t, 20*time.Second, func() error {
		for _, c := range []*testbed.Container{web1, web3} {
			if err := tcpSend(ctx, c, addrs[db1], 7000, "hello db from "+c.Name); err != nil {
				return err
			}
		}
		return tcpSend(ctx, db1, addrs[web3], 7001, "hello web3")
	})
	for _, c := range []*testbed.Container{web1, web3} {
		if !strings.Contains(srv.Output(), "tcp from "+addrs[c]+":") {
			t.Errorf("db1's echo server did not see %s's address %s:\n%s", c, addrs[c], srv.Output())
		}
	}
	if !strings.Contains(web.Output(), "tcp from "+addrs[db1]+":") {
		t.Errorf("web3's echo server did not see db1's address %s:\n%s", addrs[db1], web.Output())
	}

	waitServices(t, tb.Hosts(), want, 30*time.Second)

	// The CLI, -o json, against h1's socket from the machine's namespace.
	bin := testbed.BuildZlmesh(t)
	cli := func(args ...string) []byte {
		out, err := exec.CommandContext(ctx, bin, append(args, "--socket", h1.Socket, "-o", "json")...).Output()
		if err != nil {
			t.Fatalf("zlmesh %v: %v (%s)", args, err, exitText(err))
		}
		return out
	}
	var list []api.Attachment
	if err := json.Unmarshal(cli("attachments"), &list); err != nil {
		t.Fatalf("zlmesh attachments -o json: %v", err)
	}
	gotIDs := []string{}
	for _, a := range list {
		gotIDs = append(gotIDs, a.Container+"="+a.Address)
	}
	slices.Sort(gotIDs)
	wantIDs := []string{web1.ID() + "=" + addrs[web1], web2.ID() + "=" + addrs[web2]}
	slices.Sort(wantIDs)
	if !slices.Equal(gotIDs, wantIDs) {
		t.Errorf("zlmesh attachments on h1: %v, want %v", gotIDs, wantIDs)
	}
	var eps []api.ServiceEndpoint
	if err := json.Unmarshal(cli("services"), &eps); err != nil {
		t.Fatalf("zlmesh services -o json: %v", err)
	}
	got := map[string]string{}
	for _, e := range eps {
		got[e.Container] = e.Service + " " + e.Address + " " + e.Node
	}
	if !maps.Equal(got, want) {
		t.Errorf("zlmesh services: %v, want %v", got, want)
	}
	// The table form names every container too.
	out, err := exec.CommandContext(ctx, bin, "services", "--socket", h2.Socket).Output()
	if err != nil {
		t.Fatal(err)
	}
	for c := range att {
		if !strings.Contains(string(out), c.ID()) {
			t.Errorf("zlmesh services (table) on h2 lacks %s:\n%s", c.ID(), out)
		}
	}
}

// TestAttachByPIDAndNetns attaches a process's namespace by PID (a sleep in
// a fresh network namespace made by unshare inside the host) beside a
// container attached by netns path: both get a full answer, the PID's
// namespace really holds the address, the two ping each other across hosts,
// and when the process dies the sweep detaches it.
func TestAttachByPIDAndNetns(t *testing.T) {
	tb := cluster(t, 2)
	h1, h2 := tb.Host("h1"), tb.Host("h2")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	byPath := addContainer(t, tb, h2, "bypath")
	pa := mustAttach(t, byPath, "api")

	p, err := h1.StartProcess(ctx, "unshare", "--net", "sleep", "600")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	pid := p.PID()
	// Wait until the process is sleep in a namespace of its own, neither the
	// machine's nor the host's: attaching it any earlier would configure
	// one of those.
	self, _ := os.Readlink("/proc/self/ns/net")
	hostNS, _ := os.Stat(h1.Netns)
	eventually(t, 10*time.Second, func() error {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			return err
		}
		fi, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(comm)) != "sleep" || ns == self || os.SameFile(fi, hostNS) {
			return fmt.Errorf("pid %d (%s) is not yet in a fresh netns (%s)", pid, comm, ns)
		}
		return nil
	})
	a, err := h1.Client().Attach(ctx, api.AttachRequest{Service: "api", Container: "sleeper", PID: pid})
	if err != nil {
		t.Fatalf("attach by pid: %v\n%s", err, h1.LogTail(20))
	}
	checkAttachment(t, h1, a, "api", "sleeper")
	if a.PID != pid || a.Netns != "" {
		t.Errorf("attachment by pid: pid %d netns %q, want pid %d", a.PID, a.Netns, pid)
	}
	// The address is in the process's namespace.
	nsenter := func(argv ...string) ([]byte, error) {
		return exec.CommandContext(ctx, "nsenter", append([]string{"--net=/proc/" + strconv.Itoa(pid) + "/ns/net", "--"}, argv...)...).CombinedOutput()
	}
	links, err := ipJSON(nsenter, "addr", "show", "dev", "eth0")
	if err != nil || len(links) != 1 || !slices.Contains(links[0].AddrInfo, ipAddr{Local: a.Address, Prefix: a.Prefix, Scope: "global"}) {
		t.Fatalf("eth0 in pid %d's namespace: %+v, %v; want %s/%d", pid, links, err, a.Address, a.Prefix)
	}
	// Across hosts, both ways: from the path-attached container, and from
	// the pid's namespace (ping through nsenter; the testbed pings from
	// named namespaces only).
	eventually(t, 30*time.Second, func() error {
		if err := byPath.Ping(ctx, a.Address); err != nil {
			return err
		}
		if out, err := nsenter("ping", "-c", "1", "-W", "1", pa.Address); err != nil {
			return fmt.Errorf("ping %s from pid %d: %v: %s", pa.Address, pid, err, out)
		}
		return nil
	})
	waitServices(t, tb.Hosts(), map[string]string{byPath.ID(): endpoint(pa), "sleeper": endpoint(a)}, 30*time.Second)

	// The process dies: within the sweep interval (2 s; allow for load) the
	// attachment, its veth and its lease are gone, and so is its record.
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() error {
		v, err := viewOf(ctx, h1, nil)
		if err != nil {
			return err
		}
		if len(v.API) != 0 || len(v.Leases) != 0 || len(v.Kernel.Veths) != 0 || len(v.Kernel.Bridges) != 0 {
			return fmt.Errorf("after the process died: %+v", v)
		}
		return nil
	})
	waitServices(t, tb.Hosts(), map[string]string{byPath.ID(): endpoint(pa)}, 30*time.Second)
}

// TestContainersNamespaceDeleted deletes a container's namespace without
// detaching it: within the sweep interval its attachment, host veth and
// lease are gone, its record disappears on every host, and its address goes
// to the next container attached.
func TestContainersNamespaceDeleted(t *testing.T) {
	tb := cluster(t, 2)
	h1, h2 := tb.Host("h1"), tb.Host("h2")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stay, gone := addContainer(t, tb, h1, "stay"), addContainer(t, tb, h1, "gone")
	far := addContainer(t, tb, h2, "far")
	sa, ga, fa := mustAttach(t, stay, "web"), mustAttach(t, gone, "web"), mustAttach(t, far, "web")
	pingContainers(t, tb, map[*testbed.Container]string{stay: sa.Address, gone: ga.Address, far: fa.Address}, 30*time.Second)
	waitServices(t, tb.Hosts(), map[string]string{stay.ID(): endpoint(sa), gone.ID(): endpoint(ga), far.ID(): endpoint(fa)}, 30*time.Second)
	before, err := viewOf(ctx, h1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(before.API) != 2 || !slices.Contains(before.Kernel.Veths, ga.HostVeth+"/veth") {
		t.Fatalf("before: %+v", before)
	}

	removed := time.Now()
	if err := gone.Remove(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() error {
		v, err := viewOf(ctx, h1, nil)
		if err != nil {
			return err
		}
		if _, ok := v.API[gone.ID()]; ok {
			return fmt.Errorf("attachment of %s still listed", gone.ID())
		}
		if _, ok := v.Leases[gone.ID()]; ok {
			return fmt.Errorf("lease of %s still on disk", gone.ID())
		}
		if slices.ContainsFunc(v.Kernel.Veths, func(s string) bool { return strings.HasPrefix(s, ga.HostVeth) }) {
			return fmt.Errorf("host veth %s still there: %v", ga.HostVeth, v.Kernel.Veths)
		}
		return v.consistent()
	})
	t.Logf("namespace removal cleaned up after %v", time.Since(removed).Round(10*time.Millisecond))
	waitServices(t, tb.Hosts(), map[string]string{stay.ID(): endpoint(sa), far.ID(): endpoint(fa)}, 30*time.Second)

	// The address is free again: the next container gets it, and it works.
	next := addContainer(t, tb, h1, "next")
	na := mustAttach(t, next, "web")
	if na.Address != ga.Address {
		t.Errorf("next container got %s, want the freed %s", na.Address, ga.Address)
	}
	pingContainers(t, tb, map[*testbed.Container]string{stay: sa.Address, next: na.Address, far: fa.Address}, 30*time.Second)
}

// TestContainersKillRestart: kill -9 zlmesh on a host with five attached
// containers in two services. While it is down they keep pinging each
// other over the host's bridges; after the restart the same addresses work
// across hosts, and nothing is leaked or doubled: the host's links, bridge
// ports, addresses, leases and attachments (on disk and through the API)
// and every host's /v1/services are what they were. Then a clean stop,
// one container removed while zlmesh is down: the restart cleans it up.
func TestContainersKillRestart(t *testing.T) {
	tb := cluster(t, 2)
	h1, h2 := tb.Host("h1"), tb.Host("h2")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var local []*testbed.Container
	addrs := map[*testbed.Container]string{}
	want := map[string]string{}
	for i, svc := range []string{"web", "web", "web", "db", "db"} {
		c := addContainer(t, tb, h1, fmt.Sprintf("c%d", i))
		a := mustAttach(t, c, svc)
		local = append(local, c)
		addrs[c], want[c.ID()] = a.Address, endpoint(a)
	}
	remote := addContainer(t, tb, h2, "remote")
	ra := mustAttach(t, remote, "web")
	addrs[remote], want[remote.ID()] = ra.Address, endpoint(ra)
	pingContainers(t, tb, addrs, 30*time.Second)
	waitServices(t, tb.Hosts(), want, 30*time.Second)
	before, err := viewOf(ctx, h1, local)
	if err != nil {
		t.Fatal(err)
	}
	if err := before.consistent(); err != nil {
		t.Fatal(err)
	}
	if len(before.API) != 5 || len(before.Kernel.Bridges) != 2 {
		t.Fatalf("before the kill: %+v", before)
	}

	if err := h1.Kill(); err != nil {
		t.Fatal(err)
	}
	// While zlmesh is down: three rounds, every pair of the five, over the
	// bridges (web↔db through the host's routing between them). A ping
	// gets three tries, for a loaded machine; a pair that never answers
	// fails the test.
	localAddrs := map[*testbed.Container]string{}
	for _, c := range local {
		localAddrs[c] = addrs[c]
	}
	for round := range 3 {
		fails := pingPairs(ctx, local, localAddrs)
		for try := 0; len(fails) > 0 && try < 2; try++ {
			fails = pingPairs(ctx, local, localAddrs)
		}
		if len(fails) > 0 {
			t.Fatalf("round %d while zlmesh is down: %s", round, strings.Join(fails, "; "))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if h1.Running() {
		t.Fatal("h1's zlmesh is running after kill -9")
	}

	if err := h1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	waitWhole(t, tb, tb.Hosts(), 60*time.Second)
	pingContainers(t, tb, addrs, 30*time.Second)
	waitServices(t, tb.Hosts(), want, 30*time.Second)
	eventually(t, 20*time.Second, func() error {
		after, err := viewOf(ctx, h1, local)
		if err != nil {
			return err
		}
		if d := before.diff(after); d != "" {
			return fmt.Errorf("after kill -9 and restart:\n%s", d)
		}
		return nil
	})

	// A clean stop; a container goes while zlmesh is down.
	if err := h1.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	goneC := local[4]
	if err := goneC.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := h1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	// Right after start, without waiting for a sweep: adoption at start
	// removed it.
	v, err := viewOf(ctx, h1, local[:4])
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := v.API[goneC.ID()]; ok {
		t.Errorf("%s, removed while zlmesh was down, is still attached after start", goneC.ID())
	}
	if err := v.consistent(); err != nil {
		t.Error(err)
	}
	delete(want, goneC.ID())
	delete(addrs, goneC)
	waitWhole(t, tb, tb.Hosts(), 60*time.Second)
	pingContainers(t, tb, addrs, 30*time.Second)
	waitServices(t, tb.Hosts(), want, 30*time.Second)
	expect := before
	expect.Containers = maps.Clone(before.Containers)
	delete(expect.Containers, goneC.ID())
	eventually(t, 20*time.Second, func() error {
		after, err := viewOf(ctx, h1, local[:4])
		if err != nil {
			return err
		}
		if err := after.consistent(); err != nil {
			return err
		}
		// Exactly one veth, one port and one lease less; the rest as before.
		gv := before.Kernel
		if len(after.Kernel.Veths) != len(gv.Veths)-1 || len(after.Kernel.Ports) != len(gv.Ports)-1 ||
			!slices.Equal(after.Kernel.Bridges, gv.Bridges) || !slices.Equal(after.Kernel.Addrs, gv.Addrs) {
			return fmt.Errorf("kernel after a removal while down:\n  before %+v\n  after  %+v", gv, after.Kernel)
		}
		wantLeases := maps.Clone(before.Leases)
		delete(wantLeases, goneC.ID())
		if !maps.Equal(after.Leases, wantLeases) || !maps.Equal(after.Containers, expect.Containers) {
			return fmt.Errorf("after a removal while down:\n%s", expect.diff(after))
		}
		return nil
	})
}

// TestAttachDetachCycles runs 1000 attach/detach cycles on one host from 8
// concurrent clients (two services, each with a resident container so the
// bridges stay), each cycle under a new container id, and checks that the
// host ends as it began: links, bridge ports, addresses, leases and
// attachments (disk, API, /metrics), and its service records.
func TestAttachDetachCycles(t *testing.T) {
	tb := cluster(t, 1)
	h := tb.Host("h1")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	residents := []*testbed.Container{addContainer(t, tb, h, "res0"), addContainer(t, tb, h, "res1")}
	want := map[string]string{}
	for i, c := range residents {
		want[c.ID()] = endpoint(mustAttach(t, c, fmt.Sprintf("cyc%d", i)))
	}
	const workers, cycles = 8, 1000
	ws := make([]*testbed.Container, workers)
	for i := range ws {
		ws[i] = addContainer(t, tb, h, fmt.Sprintf("w%d", i))
	}
	all := append(slices.Clone(residents), ws...)
	waitServices(t, tb.Hosts(), want, 30*time.Second)
	before, err := viewOf(ctx, h, all)
	if err != nil {
		t.Fatal(err)
	}
	if err := before.consistent(); err != nil {
		t.Fatal(err)
	}
	m0, err := scrape(ctx, h)
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	cl := h.Client()
	for w, c := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svc := fmt.Sprintf("cyc%d", w%2)
			for {
				i := next.Add(1)
				if i > cycles || ctx.Err() != nil {
					return
				}
				id := fmt.Sprintf("%s-%d", c.ID(), i)
				a, err := cl.Attach(ctx, api.AttachRequest{Service: svc, Container: id, Netns: c.Netns})
				if err != nil {
					errs <- fmt.Errorf("cycle %d: attach %s: %w", i, id, err)
					return
				}
				if a.Container != id || a.Service != svc {
					errs <- fmt.Errorf("cycle %d: attach answered %+v", i, a)
					return
				}
				if err := cl.Detach(ctx, id); err != nil {
					errs <- fmt.Errorf("cycle %d: detach %s: %w", i, id, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("%v\n%s", err, h.LogTail(20))
	}
	t.Logf("%d attach/detach cycles with %d clients in %v", cycles, workers, time.Since(start).Round(time.Millisecond))

	after, err := viewOf(ctx, h, all)
	if err != nil {
		t.Fatal(err)
	}
	if d := before.diff(after); d != "" {
		t.Errorf("after %d cycles:\n%s", cycles, d)
	}
	waitServices(t, tb.Hosts(), want, 30*time.Second)
	m1, err := scrape(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if n := m1["zlmesh_attach_duration_seconds_count"] - m0["zlmesh_attach_duration_seconds_count"]; n != cycles {
		t.Errorf("attach histogram counted %v attaches, want %d", n, cycles)
	}
	// The residents still talk across their bridges.
	ra := map[*testbed.Container]string{}
	for _, c := range residents {
		ra[c] = strings.Fields(want[c.ID()])[1]
	}
	pingContainers(t, tb, ra, 20*time.Second)
}

// TestAttachBadInput sends bad requests through the control socket: each
// gets its stable error code and HTTP status, and leaves nothing behind (no
// link, address, route, bridge port, lease, attachment or record). The host
// runs in a tiny cluster (a /23 of /30 blocks: 64 claimable blocks of two
// addresses, 127 containers in all), so the cluster runs full.
func TestAttachBadInput(t *testing.T) {
	tb := cluster(t, 1, "--cluster-cidr", "10.200.0.0/23", "--block-prefix", "30", "--block-release-after", "1s")
	h := tb.Host("h1")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// A resident container, so a bad attach to its service meets a live
	// bridge whose state must survive untouched.
	res := addContainer(t, tb, h, "resident")
	resA := mustAttach(t, res, "web")
	fresh := addContainer(t, tb, h, "fresh")
	// A container that already has an eth0 (a bridge named so: dummy links
	// need a module the machine may lack).
	taken := addContainer(t, tb, h, "taken")
	if out, err := exec.CommandContext(ctx, "ip", "-n", taken.NetnsName, "link", "add", "eth0", "type", "bridge").CombinedOutput(); err != nil {
		t.Fatalf("eth0 in %s: %v: %s", taken, err, out)
	}
	dead, err := h.StartProcess(ctx, "sleep", "600")
	if err != nil {
		t.Fatal(err)
	}
	deadPID := dead.PID()
	if err := dead.Stop(); err != nil {
		t.Fatal(err)
	}
	regular := filepath.Join(h.Dir, "not-a-netns") // /run/zlmesh/not-a-netns inside the host
	if err := os.WriteFile(regular, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	inHost := "/run/zlmesh/not-a-netns"
	// Namespaces that look like the node's own: one holding a link named
	// like its TUN, one holding its underlay address.
	tunLike := addContainer(t, tb, h, "tunlike")
	underlayLike := addContainer(t, tb, h, "underlaylike")
	for _, argv := range [][]string{
		{"ip", "-n", tunLike.NetnsName, "link", "add", "zl0", "type", "bridge"},
		{"ip", "-n", underlayLike.NetnsName, "link", "add", "ul0", "type", "bridge"},
		{"ip", "-n", underlayLike.NetnsName, "addr", "add", h.Underlay.String() + "/24", "dev", "ul0"},
	} {
		if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", argv, err, out)
		}
	}

	cs := []*testbed.Container{res, fresh, taken}
	baseline, err := viewOf(ctx, h, cs)
	if err != nil {
		t.Fatal(err)
	}
	if err := baseline.consistent(); err != nil {
		t.Fatal(err)
	}

	body := func(v any) []byte { b, _ := json.Marshal(v); return b }
	req := func(svc, ctr, netns string, pid int, ifname string) []byte {
		return body(api.AttachRequest{Service: svc, Container: ctr, Netns: netns, PID: pid, Ifname: ifname})
	}
	huge := []byte(`{"service":"web","container":"big","netns":"` + strings.Repeat("a", api.MaxBodyBytes) + `"}`)
	cases := []struct {
		name         string
		method, path string
		body         []byte
		code         string
		status       int
	}{
		{"missing netns file", "POST", "/v1/attach", req("web", "x1", "/run/netns/zlt-does-not-exist", 0, ""), api.CodeNoNamespace, 422},
		{"regular file", "POST", "/v1/attach", req("web", "x2", inHost, 0, ""), api.CodeNoNamespace, 422},
		{"mount namespace", "POST", "/v1/attach", req("web", "x3", "/proc/self/ns/mnt", 0, ""), api.CodeNoNamespace, 422},
		{"directory", "POST", "/v1/attach", req("web", "x4", "/run/netns", 0, ""), api.CodeNoNamespace, 422},
		{"the host's own namespace", "POST", "/v1/attach", req("web", "x5", "/proc/self/ns/net", 0, ""), api.CodeBadRequest, 400},
		{"dead pid", "POST", "/v1/attach", req("web", "x6", "", deadPID, ""), api.CodeNoNamespace, 422},
		{"pid 1, the machine's namespace", "POST", "/v1/attach", req("web", "x30", "", 1, "zz9"), api.CodeBadRequest, 400},
		{"a namespace holding the node's TUN name", "POST", "/v1/attach", req("web", "x31", tunLike.Netns, 0, "eth5"), api.CodeBadRequest, 400},
		{"a namespace holding the node's underlay address", "POST", "/v1/attach", req("web", "x32", underlayLike.Netns, 0, ""), api.CodeBadRequest, 400},
		{"negative pid", "POST", "/v1/attach", req("web", "x7", "", -5, ""), api.CodeBadRequest, 400},
		{"netns and pid", "POST", "/v1/attach", req("web", "x8", fresh.Netns, 1, ""), api.CodeBadRequest, 400},
		{"neither netns nor pid", "POST", "/v1/attach", req("web", "x9", "", 0, ""), api.CodeBadRequest, 400},
		{"already attached", "POST", "/v1/attach", req("web", res.ID(), fresh.Netns, 0, ""), api.CodeAlreadyExists, 409},
		{"already attached elsewhere", "POST", "/v1/attach", req("db", res.ID(), fresh.Netns, 0, ""), api.CodeAlreadyExists, 409},
		{"invalid service", "POST", "/v1/attach", req("Web!", "x10", fresh.Netns, 0, ""), api.CodeBadRequest, 400},
		{"over-long service", "POST", "/v1/attach", req(strings.Repeat("s", 64), "x11", fresh.Netns, 0, ""), api.CodeBadRequest, 400},
		{"empty service", "POST", "/v1/attach", req("", "x12", fresh.Netns, 0, ""), api.CodeBadRequest, 400},
		{"service with a trailing dash", "POST", "/v1/attach", req("web-", "x13", fresh.Netns, 0, ""), api.CodeBadRequest, 400},
		{"invalid container id", "POST", "/v1/attach", req("web", "a/b", fresh.Netns, 0, ""), api.CodeBadRequest, 400},
		{"over-long container id", "POST", "/v1/attach", req("web", strings.Repeat("c", 129), fresh.Netns, 0, ""), api.CodeBadRequest, 400},
		{"eth0 taken in the namespace", "POST", "/v1/attach", req("web", "x14", taken.Netns, 0, ""), api.CodeIfnameTaken, 409},
		{"eth0 taken, new service", "POST", "/v1/attach", req("other", "x15", taken.Netns, 0, ""), api.CodeIfnameTaken, 409},
		{"ifname lo", "POST", "/v1/attach", req("web", "x16", fresh.Netns, 0, "lo"), api.CodeIfnameTaken, 409},
		{"invalid ifname", "POST", "/v1/attach", req("web", "x17", fresh.Netns, 0, "a/b"), api.CodeBadRequest, 400},
		{"over-long ifname", "POST", "/v1/attach", req("web", "x18", fresh.Netns, 0, "abcdefghijklmnop"), api.CodeBadRequest, 400},
		{"not json", "POST", "/v1/attach", []byte("service=web&container=x"), api.CodeBadRequest, 400},
		{"truncated json", "POST", "/v1/attach", []byte(`{"service":"web","container":"x19","netns":"` + fresh.Netns), api.CodeBadRequest, 400},
		{"empty body", "POST", "/v1/attach", []byte{}, api.CodeBadRequest, 400},
		{"two values", "POST", "/v1/attach", append(req("web", "x20", fresh.Netns, 0, ""), req("web", "x21", fresh.Netns, 0, "")...), api.CodeBadRequest, 400},
		{"wrong type", "POST", "/v1/attach", []byte(`{"service":"web","container":"x22","pid":"1"}`), api.CodeBadRequest, 400},
		{"unknown field", "POST", "/v1/attach", []byte(`{"service":"web","container":"x23","netns":"` + fresh.Netns + `","mtu":9000}`), api.CodeBadRequest, 400},
		{"over the size limit", "POST", "/v1/attach", huge, api.CodeTooLarge, 413},
		{"GET /v1/attach", "GET", "/v1/attach", nil, api.CodeMethodNotAllow, 405},
		{"PUT /v1/attach", "PUT", "/v1/attach", req("web", "x24", fresh.Netns, 0, ""), api.CodeMethodNotAllow, 405},
		{"DELETE /v1/attachments", "DELETE", "/v1/attachments", nil, api.CodeMethodNotAllow, 405},
		{"GET /v1/detach", "GET", "/v1/detach", nil, api.CodeMethodNotAllow, 405},
		{"POST /v1/events", "POST", "/v1/events", nil, api.CodeMethodNotAllow, 405},
		{"unknown endpoint", "POST", "/v1/attach-now", req("web", "x25", fresh.Netns, 0, ""), api.CodeNotFound, 404},
		{"detach: invalid id", "POST", "/v1/detach", body(api.DetachRequest{Container: "a b"}), api.CodeBadRequest, 400},
		{"detach: unknown field", "POST", "/v1/detach", []byte(`{"container":"x","force":true}`), api.CodeBadRequest, 400},
		{"detach: not json", "POST", "/v1/detach", []byte(`x`), api.CodeBadRequest, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, b, err := rawRequest(ctx, h, tc.method, tc.path, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			var e api.Error
			if jerr := json.Unmarshal(b, &e); jerr != nil || status != tc.status || e.Code != tc.code || e.Message == "" {
				t.Fatalf("%s %s: HTTP %d %s; want HTTP %d with code %s and a message", tc.method, tc.path, status, b, tc.status, tc.code)
			}
			t.Logf("HTTP %d %s: %s", status, e.Code, e.Message)
		})
	}
	// Detaching what is not attached succeeds (204) and changes nothing.
	if status, b, err := rawRequest(ctx, h, "POST", "/v1/detach", body(api.DetachRequest{Container: "never-attached"})); err != nil || status != http.StatusNoContent {
		t.Errorf("detach of an unknown container: HTTP %d %s %v; want 204", status, b, err)
	}
	// Nothing left behind by any of them.
	after, err := viewOf(ctx, h, cs)
	if err != nil {
		t.Fatal(err)
	}
	if d := baseline.diff(after); d != "" {
		t.Errorf("bad requests left state behind:\n%s", d)
	}

	// A full cluster: 64 blocks of /30 give out 127 addresses, the resident
	// has one. The node claims block after block; the attach after the last
	// is refused with exhausted, naming the cluster CIDR, and leaves the
	// running containers alone.
	var names, svcs []string
	for i := range 126 {
		names = append(names, fmt.Sprintf("f%d", i))
		svcs = append(svcs, []string{"web", "db", "cache"}[i%3])
	}
	attachAll(t, ctx, tb, h, names, svcs)
	var full []*testbed.Container
	for _, name := range names {
		full = append(full, tb.Container(h.Name, name))
	}
	if got := len(status(t, h).Blocks); got != 64 {
		t.Errorf("h1 holds %d blocks, want all 64", got)
	}
	extra := addContainer(t, tb, h, "extra")
	cs = append(cs, full...)
	cs = append(cs, extra)
	filled, err := viewOf(ctx, h, cs)
	if err != nil {
		t.Fatal(err)
	}
	_, err = extra.Attach(ctx, "other")
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeExhausted || ae.Status != 507 || !strings.Contains(ae.Message, "10.200.0.0/23") {
		t.Fatalf("attach in a full cluster: %v, want %s (HTTP 507) naming the cluster CIDR", err, api.CodeExhausted)
	}
	t.Logf("full cluster: %v", err)
	again, err := viewOf(ctx, h, cs)
	if err != nil {
		t.Fatal(err)
	}
	if d := filled.diff(again); d != "" {
		t.Errorf("an attach in a full cluster left state behind:\n%s", d)
	}
	// Detach the fillers: their addresses and blocks come back, and the
	// extra container gets one; then detach it too: back to the baseline,
	// with the node's first block only.
	for _, c := range full {
		if err := h.Client().Detach(ctx, c.ID()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := extra.Attach(ctx, "other"); err != nil {
		t.Fatalf("attach after the cluster emptied: %v", err)
	}
	if err := h.Client().Detach(ctx, extra.ID()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		if got := status(t, h).Blocks; len(got) != 1 {
			return fmt.Errorf("h1 still holds %d blocks", len(got))
		}
		final, err := viewOf(ctx, h, cs[:3])
		if err != nil {
			return err
		}
		if d := baseline.diff(final); d != "" {
			return fmt.Errorf("after detaching everything:\n%s", d)
		}
		return nil
	})
	if got, err := services(ctx, h); err != nil || !maps.Equal(got, map[string]string{res.ID(): endpoint(resA)}) {
		t.Errorf("/v1/services = %v, %v; want only the resident", got, err)
	}
}

// TestContainersMetricsAndEvents scrapes /metrics before and after two
// attachments and traffic between them across hosts: the documented series
// exist and move (attachments, leases, the attach histogram, members by
// state, each peer's last handshake and bytes). The /v1/events stream, read
// with api.Client.Events, carries an attach and a detach event with the
// service, container, address and node.
func TestContainersMetricsAndEvents(t *testing.T) {
	tb := cluster(t, 2)
	h1, h2 := tb.Host("h1"), tb.Host("h2")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m0, err := scrape(ctx, h1)
	if err != nil {
		t.Fatal(err)
	}
	for _, series := range []string{
		"zlmesh_attachments", "zlmesh_leases",
		`zlmesh_members{state="alive"}`, `zlmesh_members{state="suspect"}`, `zlmesh_members{state="dead"}`, `zlmesh_members{state="left"}`,
		`zlmesh_peer_last_handshake_seconds{peer="h2"}`, `zlmesh_peer_receive_bytes_total{peer="h2"}`, `zlmesh_peer_transmit_bytes_total{peer="h2"}`,
		"zlmesh_attach_duration_seconds_count", "zlmesh_attach_duration_seconds_sum", `zlmesh_attach_duration_seconds_bucket{le="+Inf"}`,
	} {
		if _, ok := m0[series]; !ok {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	if m0[`zlmesh_members{state="alive"}`] != 2 || m0["zlmesh_attachments"] != 0 || m0["zlmesh_leases"] != 0 {
		t.Errorf("/metrics before: alive %v attachments %v leases %v", m0[`zlmesh_members{state="alive"}`], m0["zlmesh_attachments"], m0["zlmesh_leases"])
	}

	// Events: the stream must be subscribed before the attach, and
	// Events gives no sign of that; so attach, and if no event comes, the
	// stream was late: detach and try again.
	evs := make(chan api.Event, 64)
	ectx, ecancel := context.WithCancel(ctx)
	defer ecancel()
	go h1.Client().Events(ectx, func(ev api.Event) error { evs <- ev; return nil })
	wait := func(typ, id string, d time.Duration) (api.Event, bool) {
		timer := time.After(d)
		for {
			select {
			case ev := <-evs:
				if ev.Type == typ && ev.Container == id {
					return ev, true
				}
			case <-timer:
				return api.Event{}, false
			}
		}
	}
	a := addContainer(t, tb, h1, "ma")
	var aa api.Attachment
	var ev api.Event
	for try := 0; ; try++ {
		aa = mustAttach(t, a, "web")
		var ok bool
		if ev, ok = wait(api.EventAttach, a.ID(), 3*time.Second); ok {
			break
		}
		if try == 4 {
			t.Fatal("no attach event on /v1/events")
		}
		if err := h1.Client().Detach(ctx, a.ID()); err != nil {
			t.Fatal(err)
		}
	}
	if ev.Service != "web" || ev.Address != aa.Address || ev.Node != "h1" || ev.Time.IsZero() {
		t.Errorf("attach event %+v, want service web, address %s, node h1, a time", ev, aa.Address)
	}
	b := addContainer(t, tb, h2, "mb")
	ba := mustAttach(t, b, "web")
	pingContainers(t, tb, map[*testbed.Container]string{a: aa.Address, b: ba.Address}, 30*time.Second)
	// Some bytes through the tunnel, so the byte counters move visibly.
	srv := tcpEcho(t, b, ba.Address, 7002)
	msg := strings.Repeat("z", 100000)
	eventually(t, 20*time.Second, func() error { return tcpSend(ctx, a, ba.Address, 7002, msg) })
	if !strings.Contains(srv.Output(), "100000 bytes") {
		t.Errorf("echo server output: %s", srv.Output())
	}

	m1, err := scrape(ctx, h1)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		series string
		ok     bool
	}{
		{"zlmesh_attachments", m1["zlmesh_attachments"] == 1},
		{"zlmesh_leases", m1["zlmesh_leases"] == 1},
		{"zlmesh_attach_duration_seconds_count", m1["zlmesh_attach_duration_seconds_count"] >= m0["zlmesh_attach_duration_seconds_count"]+1},
		{"zlmesh_attach_duration_seconds_sum", m1["zlmesh_attach_duration_seconds_sum"] > m0["zlmesh_attach_duration_seconds_sum"]},
		{`zlmesh_attach_duration_seconds_bucket{le="+Inf"}`, m1[`zlmesh_attach_duration_seconds_bucket{le="+Inf"}`] == m1["zlmesh_attach_duration_seconds_count"]},
		{`zlmesh_members{state="alive"}`, m1[`zlmesh_members{state="alive"}`] == 2},
		{`zlmesh_peer_last_handshake_seconds{peer="h2"}`, m1[`zlmesh_peer_last_handshake_seconds{peer="h2"}`] > float64(time.Now().Add(-5*time.Minute).Unix())},
		{`zlmesh_peer_receive_bytes_total{peer="h2"}`, m1[`zlmesh_peer_receive_bytes_total{peer="h2"}`] >= m0[`zlmesh_peer_receive_bytes_total{peer="h2"}`]+100000},
		{`zlmesh_peer_transmit_bytes_total{peer="h2"}`, m1[`zlmesh_peer_transmit_bytes_total{peer="h2"}`] >= m0[`zlmesh_peer_transmit_bytes_total{peer="h2"}`]+100000},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("/metrics %s: %v before, %v after", c.series, m0[c.series], m1[c.series])
		}
	}
	// Cumulative buckets never decrease.
	prev := -1.0
	for _, le := range []string{"0.001", "0.002", "0.005", "0.01", "0.02", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"} {
		v, ok := m1[`zlmesh_attach_duration_seconds_bucket{le="`+le+`"}`]
		if !ok || v < prev {
			t.Errorf("attach histogram bucket le=%s: %v (previous %v)", le, v, prev)
		}
		prev = v
	}

	if err := h1.Client().Detach(ctx, a.ID()); err != nil {
		t.Fatal(err)
	}
	ev, ok := wait(api.EventDetach, a.ID(), 10*time.Second)
	if !ok {
		t.Fatal("no detach event on /v1/events")
	}
	if ev.Service != "web" || ev.Address != aa.Address || ev.Node != "h1" {
		t.Errorf("detach event %+v, want service web, address %s, node h1", ev, aa.Address)
	}
	m2, err := scrape(ctx, h1)
	if err != nil {
		t.Fatal(err)
	}
	if m2["zlmesh_attachments"] != 0 || m2["zlmesh_leases"] != 0 {
		t.Errorf("/metrics after the detach: attachments %v leases %v", m2["zlmesh_attachments"], m2["zlmesh_leases"])
	}
}

// TestContainersRenumbered forces a conflict over a first block with
// containers attached on both sides (two new hosts, one on each side of a
// partition, ask for the same first block): after the heal the newer
// claim's node renumbers and its containers move with it without being
// detached: an event says which container moved from which address to
// which, each keeps its place in its block, its namespace holds exactly the
// new address with a default route via the link-local gateway, the state on disk and /v1/services on every
// host follow, and every container reaches every other at the new
// addresses.
func TestContainersRenumbered(t *testing.T) {
	tb := cluster(t, 2, forgetFast...)
	h1, h2 := tb.Host("h1"), tb.Host("h2")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	contested := "10.200.78.0/26"
	a, b := contestSubnet(t, ctx, tb, contested, []*testbed.Host{h1}, []*testbed.Host{h2})
	ca := addContainer(t, tb, a, "ca")
	aa := mustAttach(t, ca, "web")
	cb1, cb2 := addContainer(t, tb, b, "cb1"), addContainer(t, tb, b, "cb2")
	ab1, ab2 := mustAttach(t, cb1, "web"), mustAttach(t, cb2, "db")
	ch := addContainer(t, tb, h2, "ch")
	ah := mustAttach(t, ch, "web")

	events := watchEvents(t, ctx, b)
	if err := tb.Heal(); err != nil {
		t.Fatal(err)
	}
	waitWhole(t, tb, tb.Hosts(), 90*time.Second)
	var moved string
	eventually(t, 30*time.Second, func() error {
		if moved = status(t, b).FirstBlock; moved == contested {
			return fmt.Errorf("%s still holds %s", b.Name, contested)
		}
		return nil
	})
	newBlock := mustPrefix(t, moved)
	tw := testbed.Twins(status(t, b))
	// Each container keeps its offset in the block; the gateway is the
	// link-local one and does not move.
	relocate := func(old string) string {
		off := netip.MustParseAddr(old).As4()[3] - mustPrefix(t, contested).Addr().As4()[3]
		n := newBlock.Addr().As4()
		n[3] += off
		return netip.AddrFrom4(n).String()
	}
	want := map[*testbed.Container]api.Attachment{cb1: ab1, cb2: ab2}
	for c, old := range want {
		old.Address = relocate(old.Address)
		want[c] = old
	}
	eventually(t, 20*time.Second, func() error {
		seen := map[string]api.Event{}
		for _, ev := range events() {
			if ev.Type == api.EventMove {
				seen[ev.Container] = ev
			}
		}
		for c, old := range map[*testbed.Container]api.Attachment{cb1: ab1, cb2: ab2} {
			ev, ok := seen[c.ID()]
			if !ok || ev.OldAddress != old.Address || ev.Address != want[c].Address || ev.Service != old.Service || ev.Node != b.Name {
				return fmt.Errorf("no %s event for %s from %s to %s; got %+v", api.EventMove, c.ID(), old.Address, want[c].Address, ev)
			}
		}
		return nil
	})
	eventually(t, 20*time.Second, func() error {
		v, err := viewOf(ctx, b, []*testbed.Container{cb1, cb2})
		if err != nil {
			return err
		}
		if err := v.consistent(); err != nil {
			return err
		}
		for c, w := range want {
			if v.API[c.ID()] != w.Address || v.Leases[c.ID()] != w.Address {
				return fmt.Errorf("%s: attachment %s, lease %s on disk; want %s", c.ID(), v.API[c.ID()], v.Leases[c.ID()], w.Address)
			}
			// The IPv6 address moved with the IPv4 one: the twin of the new one.
			if got, exp := v.Containers[c.ID()], fmt.Sprintf("%s/%d@eth0 %s/128@eth0 | default via %s dev eth0 onlink", w.Address, w.Prefix, twin(tw, w.Address), w.Gateway); got != exp {
				return fmt.Errorf("%s inside: %q, want %q", c.ID(), got, exp)
			}
		}
		for _, addr := range v.Kernel.Addrs {
			if strings.HasPrefix(addr, "10.200.78.") {
				return fmt.Errorf("a bridge of %s kept an address of the old block: %v", b.Name, v.Kernel.Addrs)
			}
		}
		return nil
	})
	waitServices(t, tb.Hosts(), map[string]string{
		ca.ID(): endpoint(aa), ch.ID(): endpoint(ah), cb1.ID(): endpoint(want[cb1]), cb2.ID(): endpoint(want[cb2]),
	}, 30*time.Second)
	pingContainers(t, tb, map[*testbed.Container]string{
		ca: aa.Address, ch: ah.Address, cb1: want[cb1].Address, cb2: want[cb2].Address,
	}, 30*time.Second)
	pingContainers(t, tb, map[*testbed.Container]string{
		ca: twin(tw, aa.Address), ch: twin(tw, ah.Address), cb1: twin(tw, want[cb1].Address), cb2: twin(tw, want[cb2].Address),
	}, 30*time.Second)
}

// twin is the IPv6 twin of the IPv4 address a under tw ("" for none).
func twin(tw *ipam.Twins, a string) string {
	if tw == nil {
		return ""
	}
	a6, ok := tw.Addr(netip.MustParseAddr(a))
	if !ok {
		return ""
	}
	return a6.String()
}

// TestContainersKillDuringChurn kills zlmesh with -9 while 8 clients attach
// and detach as fast as they can, so the kill lands between the steps of
// some attach or detach (lease, plumbing, record). After the restart
// everything converges: every attachment has its lease, its host veth as a
// bridge port and its address inside the container; a container the node
// does not list has no interface left; no stray link, address, lease or
// record.
func TestContainersKillDuringChurn(t *testing.T) {
	tb := cluster(t, 1)
	h := tb.Host("h1")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const workers = 8
	ws := make([]*testbed.Container, workers)
	for i := range ws {
		ws[i] = addContainer(t, tb, h, fmt.Sprintf("k%d", i))
	}
	cl := h.Client()
	var ops atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w, c := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svc := fmt.Sprintf("churn%d", w%3)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				// Errors are expected once the daemon is killed.
				if _, err := cl.Attach(ctx, api.AttachRequest{Service: svc, Container: c.ID(), Netns: c.Netns}); err != nil {
					continue
				}
				ops.Add(1)
				cl.Detach(ctx, c.ID())
				ops.Add(1)
			}
		}()
	}
	// Kill once the churn is well under way.
	eventually(t, 30*time.Second, func() error {
		if n := ops.Load(); n < 150 {
			return fmt.Errorf("only %d operations so far", n)
		}
		return nil
	})
	if err := h.Kill(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	t.Logf("killed after %d attach/detach operations", ops.Load())

	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	tw := testbed.Twins(status(t, h))
	eventually(t, 30*time.Second, func() error {
		v, err := viewOf(ctx, h, ws)
		if err != nil {
			return err
		}
		if err := v.consistent(); err != nil {
			return err
		}
		for _, c := range ws {
			inside := v.Containers[c.ID()]
			addr, attached := v.API[c.ID()]
			switch {
			case attached && !strings.HasPrefix(inside, addr+"/") || attached && strings.Count(inside, "@") != 2 ||
				attached && !strings.Contains(inside, " "+twin(tw, addr)+"/128@"):
				return fmt.Errorf("%s is attached with %s and its twin %s but holds %q", c.ID(), addr, twin(tw, addr), inside)
			case !attached && inside != " | ":
				return fmt.Errorf("%s is not attached but holds %q", c.ID(), inside)
			}
		}
		want := map[string]string{}
		for id, addr := range v.API {
			want[id] = addr
		}
		got, err := services(ctx, h)
		if err != nil {
			return err
		}
		if len(got) != len(want) {
			return fmt.Errorf("/v1/services %v, attachments %v", got, want)
		}
		for id, ep := range got {
			if f := strings.Fields(ep); want[id] != f[1] {
				return fmt.Errorf("/v1/services has %s at %q, attachments at %q", id, ep, want[id])
			}
		}
		return nil
	})
	// What the restart found to clean up or repair, for the record.
	if log, err := h.ReadLog(); err == nil {
		restart := log[strings.LastIndex(log, "=== testbed:"):]
		for _, line := range strings.Split(restart, "\n") {
			for _, what := range []string{"stray", "releasing address", "afresh", "gone while", "repaired", "without its lease"} {
				if strings.Contains(line, what) {
					t.Logf("after the restart: %s", line)
					break
				}
			}
		}
	}
	// And it keeps working: detach what is left, attach everything again.
	for _, c := range ws {
		if err := cl.Detach(ctx, c.ID()); err != nil {
			t.Fatal(err)
		}
	}
	addrs := map[*testbed.Container]string{}
	for _, c := range ws {
		addrs[c] = mustAttach(t, c, "again").Address
	}
	pingContainers(t, tb, addrs, 20*time.Second)
	v, err := viewOf(ctx, h, ws)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.consistent(); err != nil {
		t.Fatal(err)
	}
	if len(v.Kernel.Bridges) != 1 {
		t.Errorf("bridges after re-attaching all to one service: %v", v.Kernel.Bridges)
	}
}

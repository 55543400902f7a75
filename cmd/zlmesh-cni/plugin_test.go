//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/internal/nstest"
)

// pluginEnv makes the test binary run the plugin's main.
const pluginEnv = "ZLMESH_CNI_TEST_PLUGIN"

func TestMain(m *testing.M) {
	if os.Getenv(pluginEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeNode is a control socket that keeps attachments in memory and answers
// every attach with a /32 and the link-local gateway.
type fakeNode struct {
	socket string
	mu     sync.Mutex
	calls  []string
	byName map[string]api.Attachment
}

func newFakeNode(t *testing.T) *fakeNode {
	f := &fakeNode{socket: filepath.Join(t.TempDir(), "zlmesh.sock"), byName: map[string]api.Attachment{}}
	l, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any) { json.NewEncoder(w).Encode(v) }
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { reply(w, api.Status{Name: "fake"}) })
	mux.HandleFunc("POST /v1/attach", func(w http.ResponseWriter, r *http.Request) {
		var req api.AttachRequest
		json.NewDecoder(r.Body).Decode(&req)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.calls = append(f.calls, "attach "+req.Container)
		if !strings.HasPrefix(req.Netns, "/proc/") || !strings.Contains(req.Netns, "/fd/") {
			w.WriteHeader(400)
			reply(w, api.Error{Code: api.CodeBadRequest, Message: "want a handle path, got " + req.Netns})
			return
		}
		a := api.Attachment{Service: req.Service, Container: req.Container, Ifname: req.Ifname, Address: "10.200.0.7", Prefix: 32,
			Gateway: "169.254.1.1", DNS: "10.200.255.253", SearchDomain: "zl", Origin: req.Origin}
		f.byName[req.Container] = a
		reply(w, a)
	})
	mux.HandleFunc("GET /v1/attachments", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		list := []api.Attachment{}
		for _, a := range f.byName {
			list = append(list, a)
		}
		reply(w, list)
	})
	mux.HandleFunc("POST /v1/detach", func(w http.ResponseWriter, r *http.Request) {
		var req api.DetachRequest
		json.NewDecoder(r.Body).Decode(&req)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.calls = append(f.calls, "detach "+req.Container)
		delete(f.byName, req.Container)
		w.WriteHeader(204)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return f
}

func (f *fakeNode) put(a api.Attachment) {
	f.mu.Lock()
	f.byName[a.Container] = a
	f.mu.Unlock()
}

func (f *fakeNode) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.byName {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func (f *fakeNode) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

// run runs the plugin with env (CNI_* variables) and stdin; it returns
// stdout and whether it exited 0.
func run(t *testing.T, env map[string]string, stdin string) ([]byte, bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{pluginEnv + "=1", "CNI_PATH=/nonexistent"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatal(err)
		}
	}
	if errb.Len() > 0 {
		t.Logf("stderr: %s", errb.String())
	}
	return out.Bytes(), err == nil
}

func conf(version, socket, extra string) string {
	return `{"cniVersion":"` + version + `","name":"zlnet","type":"zlmesh","socket":"` + socket + `"` + extra + `}`
}

// Bad input: every case answers a spec-shaped JSON error on stdout (code and
// msg), exits non-zero, and leaves nothing attached.
func TestBadInput(t *testing.T) {
	ns := nstest.New(t, "zlt-cni")
	node := newFakeNode(t)
	missing := filepath.Join(t.TempDir(), "nobody.sock")
	add := func(netns string) map[string]string {
		env := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee", "CNI_IFNAME": "eth0", "CNI_ARGS": "K8S_POD_NAME=web1"}
		if netns != "" {
			env["CNI_NETNS"] = netns
		}
		return env
	}
	for _, tc := range []struct {
		name     string
		env      map[string]string
		stdin    string
		code     int
		msgHas   string
		attached bool // whether the request reaches the node
	}{
		{"no node", add(ns.Path), conf("1.0.0", missing, ""), 11, missing, false},
		{"invalid service", add(ns.Path), conf("1.0.0", node.socket, `,"service":"Web_1"`), 7, "Web_1", false},
		{"invalid network name as service", add(ns.Path), `{"cniVersion":"1.0.0","name":"My Net","type":"zlmesh","socket":"` + node.socket + `"}`, 7, "My Net", false},
		{"unknown spec version", add(ns.Path), conf("9.9.9", node.socket, ""), 1, "9.9.9", false},
		{"old spec version", add(ns.Path), conf("0.3.1", node.socket, ""), 1, "0.3.1", false},
		{"missing CNI_NETNS", add(""), conf("1.0.0", node.socket, ""), 4, "CNI_NETNS", false},
		{"netns does not exist", add("/run/netns/zlt-cni-nonexistent"), conf("1.0.0", node.socket, ""), 8, "zlt-cni-nonexistent", false},
		{"garbage stdin", add(ns.Path), "\x00{not json", 6, "", false},
		{"empty stdin", add(ns.Path), "", 6, "", false},
		{"plugin's own namespace", add("/proc/self/ns/net"), conf("1.0.0", node.socket, ""), 8, "own", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, ok := run(t, tc.env, tc.stdin)
			if ok {
				t.Fatalf("exit 0, stdout %s", out)
			}
			var e struct {
				CNIVersion string `json:"cniVersion"`
				Code       int    `json:"code"`
				Msg        string `json:"msg"`
			}
			if err := json.Unmarshal(out, &e); err != nil {
				t.Fatalf("stdout is not a JSON error: %v: %q", err, out)
			}
			if e.Code != tc.code || e.Msg == "" || !strings.Contains(string(out), tc.msgHas) {
				t.Fatalf("error %s, want code %d naming %q", out, tc.code, tc.msgHas)
			}
			if calls := node.takeCalls(); len(calls) != 0 || len(node.names()) != 0 {
				t.Fatalf("node saw %v, holds %v", calls, node.names())
			}
		})
	}
}

// The container's mesh name: K8S_POD_NAME, else the network's first alias,
// else the runtime's id; an invalid name falls back to the id.
func TestMeshName(t *testing.T) {
	c := &netConf{}
	c.Name = "zlnet"
	c.RuntimeConfig.Aliases = map[string][]string{"zlnet": {"db1", "db"}, "other": {"x"}}
	none := &netConf{}
	none.Name = "zlnet"
	for _, tc := range []struct {
		name, args string
		conf       *netConf
		want       string
		note       bool
	}{
		{"pod name", "IgnoreUnknown=1;K8S_POD_NAME=web1", c, "web1", false},
		{"alias", "IgnoreUnknown=1", c, "db1", false},
		{"id", "", none, "0123abcd", false},
		{"invalid name", "K8S_POD_NAME=web 1", c, "0123abcd", true},
		{"too long", "K8S_POD_NAME=" + strings.Repeat("a", 129), c, "0123abcd", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, note := meshName(tc.conf, tc.args, "0123abcd")
			if got != tc.want || (note != "") != tc.note {
				t.Fatalf("meshName = %q, %q; want %q, note %v", got, note, tc.want, tc.note)
			}
		})
	}
}

// ADD against a node answering a /32 with a link-local gateway, in every
// supported spec version: the result carries that address, gateway, default
// route and DNS; the request carries the mesh name and the origin. DEL and
// GC touch only this network's CNI attachments.
func TestAddDelGC(t *testing.T) {
	ns := nstest.New(t, "zlt-cni")
	node := newFakeNode(t)
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			env := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee" + strings.ReplaceAll(v, ".", ""), "CNI_IFNAME": "eth0",
				"CNI_NETNS": ns.Path, "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web" + strings.ReplaceAll(v, ".", "")}
			out, ok := run(t, env, conf(v, node.socket, ""))
			if !ok {
				t.Fatalf("ADD failed: %s", out)
			}
			var r struct {
				CNIVersion string `json:"cniVersion"`
				IPs        []struct {
					Address string `json:"address"`
					Gateway string `json:"gateway"`
				} `json:"ips"`
				Routes []struct{ Dst, GW string } `json:"routes"`
				DNS    struct {
					Nameservers []string `json:"nameservers"`
					Search      []string `json:"search"`
				} `json:"dns"`
			}
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatal(err)
			}
			if r.CNIVersion != v || len(r.IPs) != 1 || r.IPs[0].Address != "10.200.0.7/32" || r.IPs[0].Gateway != "169.254.1.1" ||
				len(r.Routes) != 1 || r.Routes[0].Dst != "0.0.0.0/0" || r.Routes[0].GW != "169.254.1.1" ||
				!slices.Equal(r.DNS.Nameservers, []string{"10.200.255.253"}) || !slices.Equal(r.DNS.Search, []string{"zl"}) {
				t.Fatalf("result %s", out)
			}
		})
	}
	if got := node.names(); !slices.Equal(got, []string{"web040", "web100", "web110"}) {
		t.Fatalf("attached %v", got)
	}
	node.takeCalls()
	node.put(api.Attachment{Container: "manual", Service: "web"})
	node.put(api.Attachment{Container: "othernet", Service: "web", Origin: &api.Origin{Kind: api.OriginCNI, Network: "other", ContainerID: "c0ffee100", Ifname: "eth0"}})

	del := map[string]string{"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c0ffee100", "CNI_IFNAME": "eth0", "CNI_NETNS": ns.Path}
	for range 2 { // DEL twice: the second finds nothing and succeeds
		if out, ok := run(t, del, conf("1.0.0", node.socket, "")); !ok {
			t.Fatalf("DEL: %s", out)
		}
	}
	if calls := node.takeCalls(); !slices.Equal(calls, []string{"detach web100"}) {
		t.Fatalf("DEL twice: %v", calls)
	}
	gc := map[string]string{"CNI_COMMAND": "GC"}
	if out, ok := run(t, gc, conf("1.1.0", node.socket, `,"cni.dev/valid-attachments":[{"containerID":"c0ffee110","ifname":"eth0"}]`)); !ok {
		t.Fatalf("GC: %s", out)
	}
	if got := node.names(); !slices.Equal(got, []string{"manual", "othernet", "web110"}) {
		t.Fatalf("after GC: %v", got)
	}
	// A DEL with the node gone is success.
	if out, ok := run(t, del, conf("1.0.0", filepath.Join(t.TempDir(), "gone.sock"), "")); !ok {
		t.Fatalf("DEL without a node: %s", out)
	}
	st := map[string]string{"CNI_COMMAND": "STATUS"}
	if out, ok := run(t, st, conf("1.1.0", node.socket, "")); !ok {
		t.Fatalf("STATUS: %s", out)
	}
	out, ok := run(t, st, conf("1.1.0", filepath.Join(t.TempDir(), "gone.sock"), ""))
	if ok || !strings.Contains(string(out), `"code": 50`) {
		t.Fatalf("STATUS without a node: %s", out)
	}
}

// A dual-stack attachment gives a result with both addresses, both default
// routes and both mesh DNS addresses; a malformed IPv6 answer is an error.
func TestBuildResultDualStack(t *testing.T) {
	a := api.Attachment{Address: "10.200.0.7", Prefix: 32, Gateway: "169.254.1.1", Address6: "fd12:3456:789a::7", Gateway6: "fe80::1",
		DNS: "10.203.255.53", DNS6: "fd12:3456:789a:ffc::35", SearchDomain: "zl"}
	r, err := buildResult(a, "eth0", "/run/netns/x", "02:00:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	var ips, routes []string
	for _, ip := range r.IPs {
		ips = append(ips, ip.Address.String()+" via "+ip.Gateway.String())
	}
	for _, rt := range r.Routes {
		routes = append(routes, rt.Dst.String()+" via "+rt.GW.String())
	}
	if !slices.Equal(ips, []string{"10.200.0.7/32 via 169.254.1.1", "fd12:3456:789a::7/128 via fe80::1"}) ||
		!slices.Equal(routes, []string{"0.0.0.0/0 via 169.254.1.1", "::/0 via fe80::1"}) ||
		!slices.Equal(r.DNS.Nameservers, []string{"10.203.255.53", "fd12:3456:789a:ffc::35"}) {
		t.Fatalf("ips %v routes %v dns %v", ips, routes, r.DNS.Nameservers)
	}
	a.Gateway6 = "169.254.1.1"
	if _, err := buildResult(a, "eth0", "/run/netns/x", "02:00:00:00:00:01"); err == nil {
		t.Error("an IPv4 gateway6 was accepted")
	}
}

//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/testbed"
)

// fakeNodeEnv makes this test binary act as a fake `zlmesh up` when the
// testbed starts it on a host (the variable reaches it through nsenter).
const fakeNodeEnv = "ZLMESH_TESTBED_FAKE_NODE"

func init() {
	if os.Getenv(fakeNodeEnv) == "1" && len(os.Args) > 1 && os.Args[1] == "up" {
		os.Exit(fakeNode(os.Args[2:]))
	}
}

// fakeNode is just enough of a node for the CLI: it gossips a member list
// over the underlay (to --join and back), serves status and peers (its
// "overlay address" is its underlay address), and answers attach with
// "unsupported", like a node without container support.
func fakeNode(args []string) int {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	name := fs.String("name", "", "")
	fs.String("state-dir", "", "")
	socket := fs.String("socket", "", "")
	advertise := fs.String("advertise-addr", "", "")
	fs.String("cluster-key-file", "", "")
	fs.String("dns-upstream", "", "")
	join := fs.String("join", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	conn, err := net.ListenPacket("udp4", net.JoinHostPort(*advertise, "7946"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var mu sync.Mutex
	members := map[string]string{*name: *advertise} // name → address
	encode := func() []byte {
		mu.Lock()
		defer mu.Unlock()
		var kv []string
		for n, a := range members {
			kv = append(kv, n+"="+a)
		}
		return []byte(strings.Join(kv, ","))
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			for _, kv := range strings.Split(string(buf[:n]), ",") {
				if k, v, ok := strings.Cut(kv, "="); ok {
					members[k] = v
				}
			}
			mu.Unlock()
			if *join == "" { // the seed answers with what it knows
				conn.WriteTo(encode(), from)
			}
		}
	}()
	if *join != "" {
		dst, _ := net.ResolveUDPAddr("udp4", *join)
		go func() {
			for {
				conn.WriteTo(encode(), dst)
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	os.Remove(*socket)
	ln, err := net.Listen("unix", *socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n := len(members)
		mu.Unlock()
		json.NewEncoder(w).Encode(api.Status{Name: *name, OverlayIP: *advertise, FirstBlock: *advertise + "/32", Blocks: []string{*advertise + "/32"}, Members: n})
	})
	mux.HandleFunc("GET /v1/peers", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		var peers []api.Peer
		for n, a := range members {
			if n != *name {
				peers = append(peers, api.Peer{Name: n, State: api.PeerAlive, Endpoint: a + ":51820", OverlayIP: a, AllowedIPs: []string{a + "/32"}})
			}
		}
		mu.Unlock()
		json.NewEncoder(w).Encode(peers)
	})
	mux.HandleFunc("GET /v1/attachments", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("[]"))
	})
	mux.HandleFunc("POST /v1/attach", func(w http.ResponseWriter, r *http.Request) {
		e := api.Errorf(api.CodeUnsupported, "the fake node attaches nothing")
		w.WriteHeader(e.Status)
		json.NewEncoder(w).Encode(e)
	})
	go http.Serve(ln, mux)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	return 0
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces (CI runs as root)")
	}
}

func TestDemoSteps(t *testing.T) {
	t.Setenv(fakeNodeEnv, "1")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tb := testbed.New(t, testbed.Options{Hosts: 3, Binary: self})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tb.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = demo(ctx, tb, &out)
	t.Logf("demo output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), " alive "); n != 6 {
		t.Errorf("%d alive peers in the tables, want 6", n)
	}
	for _, want := range []string{"h1 (192.0.2.11", "from \\ to", "attach is not available", "all good"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if strings.Contains(out.String(), "FAIL") {
		t.Error("a ping failed")
	}
}

func TestTestbedCommands(t *testing.T) {
	needRoot(t)
	t.Setenv(fakeNodeEnv, "1")
	prefix := testbed.RandomPrefix()
	p := []string{"--prefix", prefix}
	run := func(args ...string) error { return runTestbed(append(args, p...)) }
	if err := run("up", "--hosts", "2", "--wait", "20s"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testbed.Destroy(prefix, "") })
	load := func() *testbed.Testbed {
		tb, err := testbed.Load("/run/" + prefix)
		if err != nil {
			t.Fatal(err)
		}
		return tb
	}
	if err := run("status", "-o", "json"); err != nil {
		t.Error(err)
	}
	if err := run("up", "--hosts", "1"); !errors.Is(err, testbed.ErrExists) {
		t.Errorf("second up: %v, want ErrExists", err)
	}
	if err := run("kill", "h1"); err != nil {
		t.Fatal(err)
	}
	if load().Host("h1").Running() {
		t.Error("h1 runs after kill")
	}
	if err := run("kill", "h1"); err == nil {
		t.Error("kill of a stopped host: no error")
	}
	if err := run("start", "h1", "--wait", "10s"); err != nil {
		t.Fatal(err)
	}
	if !load().Host("h1").Running() {
		t.Error("h1 does not run after start")
	}
	if err := run("partition", "h1", "h2"); err != nil {
		t.Fatal(err)
	}
	if g := load().Partitioned(); !slices.EqualFunc(g, [][]string{{"h1"}, {"h2"}}, slices.Equal) {
		t.Errorf("partition: %v", g)
	}
	if err := run("heal"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]string{
		{"partition", "h1"},
		{"partition", "h1", "h7"},
		{"exec", "h7", "--", "true"},
		{"exec", "h1"},
		{"stop"},
		{"status", "-o", "yaml"},
		{"frobnicate"},
		{"up", "--containers", "h1:web"},
	} {
		if err := run(bad...); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if err := run("down"); err != nil {
		t.Fatal(err)
	}
	if _, err := testbed.Load("/run/" + prefix); err == nil {
		t.Error("the testbed is still there after down")
	}
	if m, _ := os.ReadDir("/run/netns"); slices.ContainsFunc(m, func(e os.DirEntry) bool { return strings.HasPrefix(e.Name(), prefix+"-") }) {
		t.Error("namespaces left after down")
	}
}

func TestParseContainerSpecs(t *testing.T) {
	cases := []struct {
		in   string
		want []containerSpec
		ok   bool
	}{
		{"", nil, true},
		{"h1:web:web1", []containerSpec{{"h1", "web", "web1"}}, true},
		{"h1:web:web1, h2:db:db1", []containerSpec{{"h1", "web", "web1"}, {"h2", "db", "db1"}}, true},
		{"h1:web", nil, false},
		{"h1::x", nil, false},
		{"h1:web:web1,", nil, false},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := parseContainerSpecs(c.in)
			if (err == nil) != c.ok || !slices.Equal(got, c.want) {
				t.Errorf("parseContainerSpecs(%q) = %v, %v", c.in, got, err)
			}
		})
	}
}

func TestNotImplemented(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"unsupported", api.Errorf(api.CodeUnsupported, "x"), true},
		{"no such endpoint", &api.Error{Code: api.CodeInternal, Status: 404}, true},
		{"method not allowed", &api.Error{Code: api.CodeMethodNotAllow, Status: 405}, true},
		{"unknown container", api.Errorf(api.CodeNotFound, "x"), false},
		{"bad request", api.Errorf(api.CodeBadRequest, "x"), false},
		{"other", errors.New("boom"), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := notImplemented(c.err); got != c.want {
				t.Errorf("notImplemented = %v, want %v", got, c.want)
			}
		})
	}
}

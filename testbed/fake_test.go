//go:build linux

package testbed

// A fake zlmesh for the daemon-contract tests: the test binary itself, run
// as `<test binary> up --name … --socket … …` by Host.Start. It checks the
// flags of the contract, proves it runs inside its host (it binds the
// advertise address, which exists only there), reports to the seed over the
// underlay, and serves GET /v1/status on the control socket.

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/api"
)

func TestMain(m *testing.M) {
	RunHelper()
	if len(os.Args) > 1 && os.Args[1] == "up" {
		os.Exit(fakeZlmesh(os.Args[2:]))
	}
	os.Exit(m.Run())
}

func fakeZlmesh(args []string) int {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	name := fs.String("name", "", "")
	stateDir := fs.String("state-dir", "", "")
	socket := fs.String("socket", "", "")
	advertise := fs.String("advertise-addr", "", "")
	keyFile := fs.String("cluster-key-file", "", "")
	upstream := fs.String("dns-upstream", "", "")
	join := fs.String("join", "", "")
	tag := fs.String("tag", "", "an extra argument the tests pass")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "fake zlmesh: "+format+"\n", a...)
		return 1
	}
	if *name == "" || *stateDir == "" || *socket == "" || *advertise == "" || *keyFile == "" {
		return fail("missing flag in %q", args)
	}
	if *upstream != DNSUpstream {
		return fail("--dns-upstream %q, want %q", *upstream, DNSUpstream)
	}
	key, err := os.ReadFile(*keyFile)
	if err != nil {
		return fail("%v", err)
	}
	if raw, err := base64.StdEncoding.DecodeString(string(key)); err != nil || len(raw) != 32 {
		return fail("cluster key is not 32 bytes of base64 (%v)", err)
	}
	if err := os.WriteFile(filepath.Join(*stateDir, "argv.json"), must(json.Marshal(args)), 0o600); err != nil {
		return fail("%v", err)
	}
	// Only inside its host does the advertise address exist.
	gossip, err := net.ListenPacket("udp4", net.JoinHostPort(*advertise, fmt.Sprint(GossipPort)))
	if err != nil {
		return fail("gossip socket: %v", err)
	}
	var mu sync.Mutex
	members := map[string]bool{*name: true}
	go func() {
		buf := make([]byte, 512)
		for {
			n, _, err := gossip.ReadFrom(buf)
			if err != nil {
				return
			}
			if from, ok := strings.CutPrefix(string(buf[:n]), "hello "); ok {
				mu.Lock()
				members[from] = true
				mu.Unlock()
			}
		}
	}()
	if *join != "" {
		dst, err := net.ResolveUDPAddr("udp4", *join)
		if err != nil {
			return fail("--join: %v", err)
		}
		go func() {
			for {
				gossip.WriteTo([]byte("hello "+*name), dst)
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	os.Remove(*socket)
	ln, err := net.Listen("unix", *socket)
	if err != nil {
		return fail("%v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n := len(members)
		mu.Unlock()
		json.NewEncoder(w).Encode(api.Status{Name: *name, GossipAddr: gossip.LocalAddr().String(), Members: n, Version: *tag})
	})
	go http.Serve(ln, mux)
	fmt.Printf("fake zlmesh %s: up\n", *name)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	ln.Close()
	fmt.Printf("fake zlmesh %s: bye\n", *name)
	return 0
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

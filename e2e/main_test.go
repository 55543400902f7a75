//go:build linux

// Package e2e holds zlmesh's end-to-end tests: real zlmesh processes in the
// network-namespace testbed, checked by what crosses the network (pings,
// bytes, DNS answers, WireGuard state read through wgctrl inside the hosts).
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/ipam"
	"github.com/zlmesh/zlmesh/testbed"
	"golang.zx2c4.com/wireguard/wgctrl"
)

// wgDumpEnv makes the test binary, started inside a testbed host, print the
// WireGuard device named by the variable as JSON (read through wgctrl, from
// that host's private /var/run/wireguard) and exit.
const wgDumpEnv = "ZLMESH_E2E_WGDUMP"

func TestMain(m *testing.M) {
	testbed.RunHelper()
	if iface := os.Getenv(wgDumpEnv); iface != "" {
		os.Exit(dumpWG(iface))
	}
	if url := os.Getenv(scrapeEnv); url != "" {
		os.Exit(scrapeMain(url))
	}
	if spec := os.Getenv(socksUDPEnv); spec != "" {
		os.Exit(socksUDPMain(spec))
	}
	code := m.Run()
	testbed.RemoveBinary()
	removeCNIBin()
	os.Exit(code)
}

// wgPeer is one WireGuard peer as wgctrl reads it.
type wgPeer struct {
	PublicKey  string   `json:"public_key"`
	Endpoint   string   `json:"endpoint"`
	AllowedIPs []string `json:"allowed_ips"`
}

type wgDevice struct {
	Name       string   `json:"name"`
	PublicKey  string   `json:"public_key"`
	ListenPort int      `json:"listen_port"`
	Peers      []wgPeer `json:"peers"`
}

func dumpWG(iface string) int {
	c, err := wgctrl.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "wgctrl:", err)
		return 1
	}
	defer c.Close()
	d, err := c.Device(iface)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wgctrl device:", err)
		return 1
	}
	out := wgDevice{Name: d.Name, PublicKey: d.PublicKey.String(), ListenPort: d.ListenPort}
	for _, p := range d.Peers {
		wp := wgPeer{PublicKey: p.PublicKey.String()}
		if p.Endpoint != nil {
			wp.Endpoint = p.Endpoint.String()
		}
		for _, a := range p.AllowedIPs {
			wp.AllowedIPs = append(wp.AllowedIPs, a.String())
		}
		sort.Strings(wp.AllowedIPs)
		out.Peers = append(out.Peers, wp)
	}
	json.NewEncoder(os.Stdout).Encode(out)
	return 0
}

// readWG reads a host's WireGuard device through wgctrl, running inside the
// host so it sees that host's UAPI socket.
func readWG(ctx context.Context, h *testbed.Host) (wgDevice, error) {
	self, err := os.Executable()
	if err != nil {
		return wgDevice{}, err
	}
	cmd, err := h.Cmd(ctx, self)
	if err != nil {
		return wgDevice{}, err
	}
	cmd.Env = append(os.Environ(), wgDumpEnv+"=zl0")
	out, err := cmd.Output()
	if err != nil {
		return wgDevice{}, fmt.Errorf("wgctrl in %s: %v (%s)", h.Name, err, exitText(err))
	}
	var d wgDevice
	if err := json.Unmarshal(out, &d); err != nil {
		return wgDevice{}, fmt.Errorf("wgctrl in %s: %v: %s", h.Name, err, out)
	}
	return d, nil
}

func exitText(err error) string {
	if ee, ok := err.(interface{ Stderr() []byte }); ok {
		return string(ee.Stderr())
	}
	return ""
}

// fastGossip shortens memberlist's timers so failure detection takes a few
// seconds in tests; the code path is the production one.
// They stay loose enough that a loaded 2-core CI machine does not declare
// live nodes dead.
var fastGossip = []string{
	"--gossip-probe-interval=500ms", "--gossip-probe-timeout=300ms",
	"--gossip-suspicion-mult=3", "--gossip-interval=100ms",
	"--gossip-push-pull-interval=2s", "--rejoin-max=2s",
}

// cluster brings up n hosts running zlmesh and waits until every host sees
// all n as alive members.
func cluster(t *testing.T, n int, args ...string) *testbed.Testbed {
	t.Helper()
	bin := testbed.BuildZlmesh(t)
	tb := testbed.New(t, testbed.Options{
		Hosts:  n,
		Binary: bin,
		Args:   func(*testbed.Host) []string { return append(slices.Clone(fastGossip), args...) },
	})
	t.Cleanup(func() {
		if !t.Failed() {
			checkInvariants(t, tb)
		}
	})
	waitWhole(t, tb, tb.Hosts(), 60*time.Second)
	return tb
}

// waitWhole waits until every host of hosts sees exactly those hosts as
// alive members and has a WireGuard peer with a handshake-able config for
// each other one.
func waitWhole(t *testing.T, tb *testbed.Testbed, hosts []*testbed.Host, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() error {
		for _, h := range hosts {
			peers, err := h.Client().Peers(context.Background())
			if err != nil {
				return fmt.Errorf("%s: %v", h.Name, err)
			}
			alive := map[string]bool{}
			for _, p := range peers {
				if p.State == api.PeerAlive && len(p.AllowedIPs) > 0 {
					alive[p.Name] = true
				}
			}
			for _, o := range hosts {
				if o != h && !alive[o.Name] {
					return fmt.Errorf("%s does not see %s alive with a WireGuard peer (peers: %v)", h.Name, o.Name, peerStates(peers))
				}
			}
		}
		return nil
	})
}

func peerStates(peers []api.Peer) string {
	var s []string
	for _, p := range peers {
		s = append(s, fmt.Sprintf("%s=%s%v", p.Name, p.State, p.AllowedIPs))
	}
	return strings.Join(s, " ")
}

// eventually retries fn until it succeeds or timeout passes, then fails the
// test with fn's last error.
func eventually(t *testing.T, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func status(t *testing.T, h *testbed.Host) api.Status {
	t.Helper()
	st, err := h.Client().Status(context.Background())
	if err != nil {
		t.Fatalf("status of %s: %v\n%s", h.Name, err, h.LogTail(30))
	}
	return st
}

// pingMatrix pings every host's overlay address from every other host and
// returns the failures.
func pingMatrix(ctx context.Context, hosts []*testbed.Host) error {
	overlay := map[string]string{}
	for _, h := range hosts {
		st, err := h.Client().Status(ctx)
		if err != nil {
			return err
		}
		overlay[h.Name] = st.OverlayIP
	}
	var mu sync.Mutex
	var fails []string
	var wg sync.WaitGroup
	for _, from := range hosts {
		for _, to := range hosts {
			if from == to {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := from.Ping(ctx, overlay[to.Name]); err != nil {
					mu.Lock()
					fails = append(fails, fmt.Sprintf("%s→%s(%s): %v", from.Name, to.Name, overlay[to.Name], err))
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(fails) > 0 {
		sort.Strings(fails)
		return fmt.Errorf("ping failures: %s", strings.Join(fails, "; "))
	}
	return nil
}

// diagnose returns what a failed connectivity check needs: each host's
// WireGuard state and routes.
func diagnose(hosts []*testbed.Host) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b strings.Builder
	for _, h := range hosts {
		wg, _ := h.Exec(ctx, "wg", "show", "zl0")
		rt, _ := h.Exec(ctx, "ip", "route")
		fmt.Fprintf(&b, "--- %s: wg show zl0\n%s--- %s: ip route\n%s", h.Name, wg, h.Name, rt)
	}
	return b.String()
}

// pingAll waits until every host pings every other over the overlay, and
// fails with the hosts' WireGuard state when they do not.
func pingAll(t *testing.T, hosts []*testbed.Host, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	deadline := time.Now().Add(timeout)
	for {
		err := pingMatrix(ctx, hosts)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v\n%s", timeout, err, diagnose(hosts))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// checkInvariants runs after every mesh test: no two live nodes share a
// subnet, and every running node's WireGuard peers are exactly the other
// running nodes, each with its node subnet and overlay address.
func checkInvariants(t *testing.T, tb *testbed.Testbed) {
	t.Helper()
	var running []*testbed.Host
	for _, h := range tb.Hosts() {
		if h.Running() {
			running = append(running, h)
		}
	}
	eventually(t, 30*time.Second, func() error { return invariants(running) })
}

func invariants(hosts []*testbed.Host) error {
	ctx := context.Background()
	nodes := map[string]api.Status{}
	byBlock := map[string]string{}
	for _, h := range hosts {
		st, err := h.Client().Status(ctx)
		if err != nil {
			return fmt.Errorf("%s: %v", h.Name, err)
		}
		if len(st.Blocks) == 0 || st.Blocks[0] != st.FirstBlock {
			return fmt.Errorf("%s: blocks %v, first block %s", h.Name, st.Blocks, st.FirstBlock)
		}
		for _, b := range st.Blocks {
			if other, dup := byBlock[b]; dup {
				return fmt.Errorf("%s and %s both hold %s", other, h.Name, b)
			}
			byBlock[b] = h.Name
		}
		nodes[h.Name] = st
	}
	for _, h := range hosts {
		dev, err := readWG(ctx, h)
		if err != nil {
			return err
		}
		want := map[string][]string{}
		for name, st := range nodes {
			if name == h.Name {
				continue
			}
			want[st.PublicKey] = wantAllowedIPs(st)
		}
		// Guests (plain WireGuard clients) are peers of their node only,
		// with their /32.
		guests, err := h.Client().Guests(ctx)
		if err != nil {
			return fmt.Errorf("%s: guests: %v", h.Name, err)
		}
		for _, g := range guests {
			want[g.PublicKey] = []string{g.Address + "/32"}
			if g.Address6 != "" {
				want[g.PublicKey] = append(want[g.PublicKey], g.Address6+"/128")
			}
		}
		if len(dev.Peers) != len(want) {
			return fmt.Errorf("%s has %d WireGuard peers, want %d: %+v", h.Name, len(dev.Peers), len(want), dev.Peers)
		}
		for _, p := range dev.Peers {
			w, ok := want[p.PublicKey]
			if !ok {
				return fmt.Errorf("%s has a WireGuard peer %s that is no running node", h.Name, p.PublicKey)
			}
			if !slices.Equal(w, p.AllowedIPs) {
				return fmt.Errorf("%s: peer %s has AllowedIPs %v, want %v", h.Name, p.PublicKey, p.AllowedIPs, w)
			}
		}
	}
	return nil
}

// mustPrefix parses a prefix or fails the test.
func mustPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatalf("prefix %q: %v", s, err)
	}
	return p
}

// wantAllowedIPs is what every other node's WireGuard peer entry for the
// node of st must hold: its blocks, adjacent ones merged (its overlay
// address is in its first block), and with IPv6 on their IPv6 twins, sorted
// as readWG sorts.
func wantAllowedIPs(st api.Status) []string {
	var ps []netip.Prefix
	for _, b := range st.Blocks {
		if p, err := netip.ParsePrefix(b); err == nil {
			ps = append(ps, p)
		}
	}
	ps = ipam.Coalesce(ps)
	if tw := testbed.Twins(st); tw != nil {
		ps = append(ps, tw.Prefixes(ps)...)
	}
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	sort.Strings(out)
	return out
}

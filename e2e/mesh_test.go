//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/mesh"
	"github.com/zlmesh/zlmesh/testbed"
)

// Three hosts join through one seed; every host pings every other host's
// overlay address; each host's WireGuard config, read through wgctrl, lists
// exactly the other hosts with their node subnets and overlay addresses
// (checkInvariants); `wg show zl0` works inside a host.
func TestMeshJoinThroughSeed(t *testing.T) {
	tb := cluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pingAll(t, tb.Hosts(), 30*time.Second)
	if err := invariants(tb.Hosts()); err != nil {
		t.Fatal(err)
	}
	h1 := tb.Host("h1")
	out, err := h1.Exec(ctx, "wg", "show", "zl0")
	if err != nil {
		t.Fatalf("wg show zl0 in h1: %v\n%s", err, out)
	}
	for _, h := range tb.Hosts()[1:] {
		if !strings.Contains(string(out), status(t, h).PublicKey) {
			t.Errorf("wg show zl0 on h1 does not list %s:\n%s", h.Name, out)
		}
	}
	st := status(t, h1)
	if st.Name != "h1" || st.FirstBlock == "" || st.OverlayIP == "" || st.Endpoint != "192.0.2.11:51820" {
		t.Errorf("status of h1: %+v", st)
	}
	// The private key file is 0600.
	fi, err := os.Stat(filepath.Join(h1.StateDir, "private.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("private key: %v %v", fi, err)
	}
}

// kill -9 one of four hosts: the others drop it from their WireGuard peers
// after failure detection; restarted with the same state dir it comes back
// with the same key and subnet, and pings work again.
func TestMeshKillAndRestart(t *testing.T) {
	tb := cluster(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h4 := tb.Host("h4")
	before := status(t, h4)
	if err := h4.Kill(); err != nil {
		t.Fatal(err)
	}
	rest := tb.Hosts()[:3]
	eventually(t, 30*time.Second, func() error {
		for _, h := range rest {
			dev, err := readWG(ctx, h)
			if err != nil {
				return err
			}
			for _, p := range dev.Peers {
				if p.PublicKey == before.PublicKey {
					return fmt.Errorf("%s still has killed h4 as a WireGuard peer", h.Name)
				}
			}
		}
		return invariants(rest)
	})
	if err := h4.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h4.WaitReady(ctx); err != nil {
		t.Fatalf("%v\n%s", err, h4.LogTail(30))
	}
	after := status(t, h4)
	if after.PublicKey != before.PublicKey || after.FirstBlock != before.FirstBlock {
		t.Fatalf("restarted h4: key %s subnet %s, want %s %s", after.PublicKey, after.FirstBlock, before.PublicKey, before.FirstBlock)
	}
	waitWhole(t, tb, tb.Hosts(), 30*time.Second)
	pingAll(t, tb.Hosts(), 30*time.Second)
}

// A node started with a wrong cluster key does not join; the mesh is
// unchanged, and both sides log why.
func TestMeshWrongClusterKeyRefused(t *testing.T) {
	tb := cluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h4, err := tb.AddHost(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wrong := filepath.Join(h4.Dir, "wrong.key")
	k, _ := mesh.GenerateKey()
	if err := os.WriteFile(wrong, []byte(mesh.EncodeKey(k)), 0o600); err != nil {
		t.Fatal(err)
	}
	// A later --cluster-key-file wins over the testbed's.
	if err := h4.Start(ctx, "--cluster-key-file", wrong); err != nil {
		t.Fatal(err)
	}
	if err := h4.WaitReady(ctx); err != nil {
		t.Fatalf("%v\n%s", err, h4.LogTail(30))
	}
	time.Sleep(5 * time.Second) // join attempts, gossip rounds
	if st := status(t, h4); st.Members != 1 {
		t.Errorf("h4 with a wrong key sees %d members", st.Members)
	}
	for _, h := range tb.Hosts()[:3] {
		if st := status(t, h); st.Members != 3 {
			t.Errorf("%s sees %d members, want 3", h.Name, st.Members)
		}
	}
	if err := invariants(tb.Hosts()[:3]); err != nil {
		t.Error(err)
	}
	joinerLog, _ := h4.ReadLog()
	if !strings.Contains(strings.ToLower(joinerLog), "cluster key") {
		t.Errorf("the joiner's log does not say the cluster key is likely wrong:\n%s", h4.LogTail(30))
	}
	seedLog, _ := tb.Host("h1").ReadLog()
	if !strings.Contains(strings.ToLower(seedLog), "decrypt") && !strings.Contains(strings.ToLower(seedLog), "key") {
		t.Errorf("the seed's log does not say why it refused:\n%s", tb.Host("h1").LogTail(30))
	}
	h4.Stop(ctx)
}

// Bad input to `zlmesh up`: a one-line error naming the problem, and nothing
// left half made (no TUN, no socket, no key in a fresh state dir).
func TestUpBadInput(t *testing.T) {
	bin := testbed.BuildZlmesh(t)
	tb := testbed.New(t, testbed.Options{Hosts: 1, Binary: bin, NoStart: true})
	h := tb.Host("h1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key := tb.KeyFile
	badState := filepath.Join(h.Dir, "badstate")
	os.MkdirAll(badState, 0o700)
	os.WriteFile(filepath.Join(badState, "private.key"), []byte("garbage\n"), 0o600)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"malformed join", []string{"--join", "192.0.2.11"}, "--join"},
		{"join port out of range", []string{"--join", "192.0.2.11:99999"}, "port"},
		{"cidr leaves no room for the reserved range", []string{"--cluster-cidr", "10.200.0.0/24"}, "reserved"},
		{"block prefix does not fit the cidr", []string{"--cluster-cidr", "10.200.0.0/16", "--block-prefix", "16"}, "block prefix /16"},
		{"cidr cannot hold the nodes asked for", []string{"--cluster-cidr", "10.200.0.0/20", "--max-nodes", "1000"}, "--max-nodes"},
		{"first block not a block", []string{"--first-block", "10.200.0.0/24"}, "--first-block"},
		{"cidr with host bits", []string{"--cluster-cidr", "10.200.0.1/16"}, "host bits"},
		{"state file does not parse", []string{"--state-dir", badState}, "does not parse"},
		{"missing key file", []string{"--cluster-key-file", "/nonexistent/cluster.key"}, "/nonexistent/cluster.key"},
		{"TUN name too long", []string{"--interface", "zl-name-too-long0"}, "interface"},
		{"unknown flag", []string{"--bogus"}, "bogus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := filepath.Join(h.Dir, "st-"+strings.ReplaceAll(tt.name, " ", "-"))
			args := append([]string{bin, "up", "--name", "h1", "--state-dir", state, "--cluster-key-file", key,
				"--socket", filepath.Join(h.Dir, "bad.sock"), "--advertise-addr", "192.0.2.11", "--dns-upstream", "198.51.100.53:53"}, tt.args...)
			out, err := h.Exec(ctx, args...)
			if err == nil {
				t.Fatalf("zlmesh up %v succeeded:\n%s", tt.args, out)
			}
			msg := strings.TrimSpace(lastLine(string(out)))
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not name %q (output:\n%s)", msg, tt.want, out)
			}
			links, _ := h.Exec(ctx, "ip", "-o", "link", "show")
			if strings.Contains(string(links), "zl") {
				t.Errorf("links left behind:\n%s", links)
			}
			if _, err := os.Stat(filepath.Join(h.Dir, "bad.sock")); err == nil {
				t.Errorf("control socket left behind")
			}
		})
	}
	// A port already in use.
	t.Run("listen port in use", func(t *testing.T) {
		p, err := h.StartProcess(ctx, testbed.HelperArgv("udp-echo", "0.0.0.0:51820")...)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Stop()
		time.Sleep(200 * time.Millisecond)
		out, err := h.Exec(ctx, bin, "up", "--name", "h1", "--state-dir", filepath.Join(h.Dir, "st-port"), "--cluster-key-file", key,
			"--socket", filepath.Join(h.Dir, "bad.sock"), "--advertise-addr", "192.0.2.11")
		if err == nil || !strings.Contains(string(out), "51820") {
			t.Fatalf("want an error naming port 51820, got %v:\n%s", err, out)
		}
		links, _ := h.Exec(ctx, "ip", "-o", "link", "show")
		if strings.Contains(string(links), "zl0") {
			t.Errorf("TUN left behind:\n%s", links)
		}
	})
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// `zlmesh down` leaves gracefully: the node exits, the others see it "left"
// and drop its WireGuard peer without waiting for failure detection, and its
// subnet is free at once (a new node asking for it gets it).
func TestMeshDownLeavesGracefully(t *testing.T) {
	tb := cluster(t, 3, "--gossip-suspicion-mult=8") // failure detection would take long
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bin := testbed.BuildZlmesh(t)
	h3 := tb.Host("h3")
	gone := status(t, h3)
	out, err := exec.CommandContext(ctx, bin, "down", "--socket", h3.Socket).CombinedOutput()
	if err != nil {
		t.Fatalf("zlmesh down: %v\n%s", err, out)
	}
	eventually(t, 10*time.Second, func() error {
		if h3.Running() {
			return fmt.Errorf("h3 still running after zlmesh down")
		}
		return nil
	})
	eventually(t, 5*time.Second, func() error {
		for _, h := range tb.Hosts()[:2] {
			peers, err := h.Client().Peers(ctx)
			if err != nil {
				return err
			}
			for _, p := range peers {
				if p.Name == "h3" && p.State != "left" {
					return fmt.Errorf("%s sees h3 %s, want left", h.Name, p.State)
				}
			}
			dev, err := readWG(ctx, h)
			if err != nil {
				return err
			}
			for _, p := range dev.Peers {
				if p.PublicKey == gone.PublicKey {
					return fmt.Errorf("%s still has h3 as a WireGuard peer", h.Name)
				}
			}
		}
		return nil
	})
	h4, err := tb.AddHost(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := h4.Start(ctx, "--first-block", gone.FirstBlock); err != nil {
		t.Fatal(err)
	}
	if err := h4.WaitReady(ctx); err != nil {
		t.Fatalf("%v\n%s", err, h4.LogTail(30))
	}
	if got := status(t, h4).FirstBlock; got != gone.FirstBlock {
		t.Errorf("new node asking for the left node's %s got %s", gone.FirstBlock, got)
	}
}

// The client subcommands print the documented JSON fields.
func TestCLIJSON(t *testing.T) {
	tb := cluster(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bin := testbed.BuildZlmesh(t)
	h1 := tb.Host("h1")
	run := func(args ...string) []byte {
		out, err := exec.CommandContext(ctx, bin, append(args, "--socket", h1.Socket, "-o", "json")...).Output()
		if err != nil {
			t.Fatalf("zlmesh %v: %v", args, err)
		}
		return out
	}
	var st map[string]any
	if err := json.Unmarshal(run("status"), &st); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"name", "public_key", "overlay_ip", "first_block", "endpoint"} {
		if v, ok := st[k].(string); !ok || v == "" {
			t.Errorf("status -o json: %q is %v", k, st[k])
		}
	}
	if bs, ok := st["blocks"].([]any); !ok || len(bs) == 0 || bs[0] != st["first_block"] {
		t.Errorf("status -o json: blocks %v, first block %v", st["blocks"], st["first_block"])
	}
	var peers []map[string]any
	if err := json.Unmarshal(run("peers"), &peers); err != nil {
		t.Fatal(err)
	}
	if len(peers) != 1 {
		t.Fatalf("peers -o json: %d peers, want 1", len(peers))
	}
	for _, k := range []string{"name", "public_key", "endpoint", "allowed_ips", "last_handshake", "state"} {
		if _, ok := peers[0][k]; !ok {
			t.Errorf("peers -o json: no %q in %v", k, peers[0])
		}
	}
	// The table forms print without error too.
	for _, sub := range []string{"status", "peers"} {
		if out, err := exec.CommandContext(ctx, bin, sub, "--socket", h1.Socket).CombinedOutput(); err != nil || len(out) == 0 {
			t.Errorf("zlmesh %s: %v\n%s", sub, err, out)
		}
	}
}

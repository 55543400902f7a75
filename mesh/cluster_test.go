package mesh

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/zlmesh/zlmesh/internal/statefile"
)

// These tests run many nodes in one process over meshtest's memory
// transport.

// startAll starts names, every one but the first joining the first.
func (c *cluster) startAll(names ...string) {
	c.t.Helper()
	first := c.start(names[0], nil)
	for _, n := range names[1:] {
		c.start(n, nil, first.Addr().String())
	}
	eventually(c.t, 10*time.Second, "cluster "+strings.Join(names, ",")+" converged", func() bool { return c.converged(names...) })
}

func TestPartitionHealsByRejoin(t *testing.T) {
	c := newCluster(t)
	all := []string{"a", "b", "c", "d", "e"}
	c.startAll(all...)

	c.net.Partition([]string{"a", "b"}, []string{"c", "d", "e"})
	// Both sides find the others dead, and memberlist forgets them
	// (GossipToTheDeadTime), so only the mesh's re-join can heal.
	eventually(t, 10*time.Second, "each side forgot the other", func() bool {
		for _, side := range [][]string{{"a", "b"}, {"c", "d", "e"}} {
			for _, n := range side {
				if len(c.node(n).Members()) != len(side) {
					return false
				}
			}
		}
		return true
	})
	for _, n := range []string{"a", "c"} {
		if len(c.node(n).KnownPeers()) != 4 {
			t.Errorf("%s remembers %v", n, c.node(n).KnownPeers())
		}
	}
	// Writes on both sides during the partition.
	c.node("a").Store().Put("svc", "left-side", []byte("1"))
	c.node("e").Store().Put("svc", "right-side", []byte("2"))
	time.Sleep(c.tun.DeadNodeReclaimTime + c.tun.RejoinMax) // re-join backs off meanwhile

	c.net.Heal()
	eventually(t, 15*time.Second, "one cluster again", func() bool { return c.converged(all...) })
	eventually(t, 5*time.Second, "both sides' writes everywhere", func() bool {
		for _, n := range all {
			s := c.node(n).Store()
			if _, ok := s.Get("svc", "left-side"); !ok {
				return false
			}
			if _, ok := s.Get("svc", "right-side"); !ok {
				return false
			}
		}
		return true
	})
}

func TestRestartSameName(t *testing.T) {
	tests := []struct {
		name string
		// sameAddr restarts at the old address; wait waits for the others
		// to find the old process dead first.
		sameAddr, wait bool
	}{
		{"same address after death", true, true},
		{"same address at once", true, false},
		{"new address after death", false, true},
		{"new address at once", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t)
			c.startAll("a", "b", "c")
			old := c.node("c")
			oldAddr := old.Addr()
			old.Shutdown()
			if tt.wait {
				eventually(t, 10*time.Second, "c dead on a and b", func() bool {
					return !c.node("a").Alive("c") && !c.node("b").Alive("c")
				})
			}
			tr := c.net.NewTransport("c")
			if tt.sameAddr {
				var err error
				if tr, err = c.net.NewTransportAt("c", oldAddr); err != nil {
					t.Fatal(err)
				}
			}
			// No seeds: the known-peers file alone brings it back.
			n := c.start("c", tr)
			eventually(t, 15*time.Second, "c back everywhere", func() bool {
				if !c.converged("a", "b", "c") {
					return false
				}
				for _, name := range []string{"a", "b"} {
					if mem, _ := c.node(name).Member("c"); mem.Addr != n.Addr() {
						return false
					}
				}
				return true
			})
		})
	}
}

func TestWholeClusterRestart(t *testing.T) {
	c := newCluster(t)
	names := []string{"a", "b", "c", "d"}
	c.startAll(names...)
	addrs := make(map[string]string)
	for _, n := range names {
		addrs[n] = c.node(n).Addr().String()
	}
	// Every node stops, then each comes back at its address with only its
	// known-peers file, one after another with gaps.
	for _, n := range names {
		c.node(n).Shutdown()
	}
	for _, n := range names {
		tr, err := c.net.NewTransportAt(n, mustAddrPort(t, addrs[n]))
		if err != nil {
			t.Fatal(err)
		}
		c.start(n, tr)
		time.Sleep(100 * time.Millisecond)
	}
	eventually(t, 15*time.Second, "one cluster after everyone restarted", func() bool { return c.converged(names...) })
}

func TestKnownPeersFile(t *testing.T) {
	c := newCluster(t)
	c.startAll("a", "b", "c")
	path := filepath.Join(c.dir, "a.peers.json")
	var f knownPeersFile
	eventually(t, 5*time.Second, "a's peers file lists b and c", func() bool {
		f = knownPeersFile{}
		if err := statefile.ReadJSON(path, &f); err != nil {
			return false
		}
		return len(f.Peers) == 2 && f.Peers[0].Name == "b" && f.Peers[1].Name == "c"
	})
	if f.Peers[0].Addr != c.node("b").Addr().String() || f.Peers[0].LastSeen.IsZero() {
		t.Errorf("peer entry %+v", f.Peers[0])
	}
	// Gossip goes on; the file is not rewritten while the set is the same.
	st1, _ := os.Stat(path)
	time.Sleep(10 * c.tun.RejoinMin)
	st2, _ := os.Stat(path)
	if !st1.ModTime().Equal(st2.ModTime()) {
		t.Errorf("peers file rewritten without a change")
	}
	// A corrupt file is an error naming it, not an empty set.
	bad := filepath.Join(c.dir, "bad.json")
	os.WriteFile(bad, []byte("{"), 0o600)
	_, err := Start(Config{Name: "x", KnownPeersFile: bad, Transport: c.net.NewTransport("x")})
	if err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("start with a corrupt peers file: %v", err)
	}
}

// A peer gone for ForgetPeersAfter is forgotten with its records, but for
// its claim; when it comes back it writes them again.
func TestForgetOldPeers(t *testing.T) {
	c := newCluster(t)
	c.tun.ForgetPeersAfter = 500 * time.Millisecond
	c.startAll("a", "b")
	b := c.node("b")
	b.Store().Put("svc", "b/web1", []byte("10.200.1.34"))
	b.Store().Put(KindClaim, "pk-b", []byte(`{}`))
	a := c.node("a")
	eventually(t, 5*time.Second, "b's records on a", func() bool {
		_, svc := a.Store().Get("svc", "b/web1")
		_, cl := a.Store().Get(KindClaim, "pk-b")
		return svc && cl
	})
	b.Shutdown()
	eventually(t, 10*time.Second, "a forgot b", func() bool { return len(a.KnownPeers()) == 0 })
	eventually(t, time.Second, "b's records deleted on a", func() bool {
		_, svc := a.Store().Get("svc", "b/web1")
		_, marker := a.Store().Get(kindMember, "b")
		return !svc && !marker
	})
	if _, ok := a.Store().Get(KindClaim, "pk-b"); !ok {
		t.Error("b's claim was deleted with its other records; the Claimer holds it for its grace")
	}
	// The records go before the line is logged: wait for it.
	eventually(t, 2*time.Second, "a log line saying b and its 2 records were forgotten", func() bool {
		return len(c.logs.find(slog.LevelInfo, "forget peer not seen for long", `peer="b"`, `records_deleted="2"`)) > 0
	})
	if len(c.logs.find(slog.LevelInfo, "re-joined the cluster", `node="a"`)) != 0 {
		t.Error("a says it re-joined the cluster when it only forgot its last peer")
	}
	var f knownPeersFile
	eventually(t, time.Second, "b gone from the file", func() bool {
		f = knownPeersFile{}
		return statefile.ReadJSON(filepath.Join(c.dir, "a.peers.json"), &f) == nil && len(f.Peers) == 0
	})
	if c.node("a").HasPeers() || c.node("a").Alone() {
		t.Errorf("a without peers: HasPeers=%v Alone=%v", c.node("a").HasPeers(), c.node("a").Alone())
	}
	// b comes back: its marker, written at start with a later clock, wins
	// over a's tombstone.
	tr, err := c.net.NewTransportAt("b", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c.start("b", tr, a.Addr().String())
	eventually(t, 10*time.Second, "b back on a with its marker", func() bool {
		_, marker := a.Store().Get(kindMember, "b")
		return a.Alive("b") && marker
	})
}

func TestSlowSubscriberDoesNotBlock(t *testing.T) {
	c := newCluster(t)
	c.tun.EventBuffer = 4
	c.startAll("a", "b")
	events, cancel := c.node("b").Subscribe()
	defer cancel()
	for i := range 50 {
		c.node("a").Store().Put("svc", fmt.Sprint(i), []byte("x"))
	}
	eventually(t, 5*time.Second, "all 50 records on b despite the stuck subscriber", func() bool {
		return len(c.node("b").Store().List("svc")) == 50
	})
	if c.node("b").DroppedEvents() == 0 {
		t.Error("no event counted as dropped")
	}
	if len(c.logs.find(slog.LevelWarn, "events dropped", "node=\"b\"")) == 0 {
		t.Error("no warning about dropped events")
	}
	if n := len(events); n != 4 {
		t.Errorf("subscriber channel holds %d events, want its 4 slots full", n)
	}
}

func TestEventsDistinguishDeadAndLeft(t *testing.T) {
	c := newCluster(t)
	c.startAll("a", "b", "c")
	events, cancel := c.node("a").Subscribe()
	defer cancel()
	got := map[string]EventType{}
	timeout := time.After(10 * time.Second)
	waitFor := func(name string) {
		for got[name] == 0 {
			select {
			case ev := <-events:
				if ev.Type == EventMemberDead || ev.Type == EventMemberLeft {
					got[ev.Member.Name] = ev.Type
				}
			case <-timeout:
				t.Fatalf("events so far %v", got)
			}
		}
	}
	// One at a time: c must still be there to relay b's leave, or on a
	// loaded machine a may detect b's silence before the leave reaches it.
	c.node("b").Leave(time.Second)
	waitFor("b")
	c.node("c").Shutdown()
	waitFor("c")
	if got["b"] != EventMemberLeft || got["c"] != EventMemberDead {
		t.Errorf("events %v, want b left and c dead", got)
	}
}

func TestUndecodableMetaAndMalformedMessages(t *testing.T) {
	c := newCluster(t)
	a := c.start("a", nil)
	// A bare memberlist node with meta that is not JSON, which sends
	// garbage user messages.
	conf := memberlist.DefaultLANConfig()
	conf.Name = "rogue"
	conf.Transport = c.net.NewTransport("rogue")
	conf.Keyring, _ = memberlist.NewKeyring(nil, c.key)
	conf.Delegate = rawDelegate{meta: []byte("not json")}
	conf.LogOutput = discardWriter{}
	rogue, err := memberlist.Create(conf)
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Shutdown()
	if _, err := rogue.Join([]string{a.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "a lists the rogue", func() bool { return a.Alive("rogue") })
	if mem, _ := a.Member("rogue"); mem.Meta != (Meta{}) {
		t.Errorf("rogue meta %+v, want empty", mem.Meta)
	}
	if len(c.logs.find(slog.LevelWarn, "member meta does not decode", "rogue")) == 0 {
		t.Error("no log line about the undecodable meta")
	}
	node, _ := a.Member("a")
	target := &memberlist.Node{Name: "a", Addr: node.Addr.Addr().AsSlice(), Port: node.Addr.Port()}
	// A header naming its sender, then garbage.
	bad := append(encodeMessage(msgRecords, "rogue-sender", nil)[:len("rogue-sender")+3], 0xff, 0xff)
	if err := rogue.SendReliable(target, bad); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "malformed message logged with its sender", func() bool {
		return len(c.logs.find(slog.LevelWarn, "drop malformed gossip message", "rogue-sender")) > 0
	})
}

type rawDelegate struct{ meta []byte }

func (d rawDelegate) NodeMeta(int) []byte                 { return d.meta }
func (d rawDelegate) NotifyMsg([]byte)                    {}
func (d rawDelegate) GetBroadcasts(int, int) [][]byte     { return nil }
func (d rawDelegate) LocalState(bool) []byte              { return nil }
func (d rawDelegate) MergeRemoteState(buf []byte, _ bool) {}

type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }

func TestConfigErrors(t *testing.T) {
	big := Meta{Version: strings.Repeat("v", 600)}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no name", Config{}, "Name is empty"},
		{"short key", Config{Name: "x", ClusterKey: make([]byte, 10)}, "10 bytes"},
		{"meta too large", Config{Name: "x", Meta: big}, "too large"},
		{"bad seed", Config{Name: "x", Join: []string{"10.0.0.1"}}, `"10.0.0.1"`},
		{"bad seed port", Config{Name: "x", Join: []string{"h:99999"}}, `"h:99999"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Start(tt.cfg)
			if err == nil {
				m.Shutdown()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestJoinRejectsBadAddresses(t *testing.T) {
	c := newCluster(t)
	a := c.start("a", nil)
	for _, addr := range []string{"", "host", ":7946", "host:", "host:0", "host:x", "ho st:1", "[::1", "-bad-:1"} {
		t.Run(addr, func(t *testing.T) {
			n, err := a.Join([]string{a.Addr().String(), addr})
			if n != 0 || !errors.Is(err, ErrBadAddress) || !strings.Contains(err.Error(), fmt.Sprintf("%q", addr)) {
				t.Errorf("Join(%q) = %d, %v", addr, n, err)
			}
		})
	}
	for _, addr := range []string{"127.0.0.1:7946", "[::1]:7946", "node-1.example:7946"} {
		if err := checkAddr(addr); err != nil {
			t.Errorf("checkAddr(%q) = %v", addr, err)
		}
	}
}

func TestUpdateMetaTooLarge(t *testing.T) {
	c := newCluster(t)
	a := c.start("a", nil)
	err := a.UpdateMeta(Meta{Version: strings.Repeat("v", 600)})
	if !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("UpdateMeta = %v, want ErrMetaTooLarge", err)
	}
	if a.LocalMeta().PublicKey != "pk-a" {
		t.Errorf("meta changed by a refused update: %+v", a.LocalMeta())
	}
}

func TestLoadKeyFile(t *testing.T) {
	dir := t.TempDir()
	key, _ := GenerateKey()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, path, want string
	}{
		{"good with whitespace", write("good", "\n  "+EncodeKey(key)+"  \n"), ""},
		{"16 bytes", write("k16", EncodeKey(make([]byte, 16))), ""},
		{"missing", filepath.Join(dir, "nope"), "does not exist"},
		{"unreadable", dir, "cannot be read"},
		{"not base64", write("junk", "not base64!"), "not base64"},
		{"wrong length", write("short", EncodeKey([]byte("short"))), "5 bytes"},
		{"empty", write("empty", "\n"), "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LoadKeyFile(tt.path)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tt.name == "good with whitespace" && !slices.Equal(got, key) {
					t.Errorf("key %x, want %x", got, key)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.path) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q, want one line with %q and the path", err, tt.want)
			}
		})
	}
}

func TestParseMemberlistLine(t *testing.T) {
	tests := []struct {
		in    string
		level slog.Level
		msg   string
	}{
		{"[ERR] memberlist: failed to receive: x\n", slog.LevelError, "failed to receive: x"},
		{"[WARN] memberlist: Refuting\n", slog.LevelWarn, "Refuting"},
		{"[INFO] memberlist: Suspect a\n", slog.LevelInfo, "Suspect a"},
		{"[DEBUG] memberlist: Stream connection\n", slog.LevelDebug, "Stream connection"},
		{"Err: Could not set the deadline\n", slog.LevelInfo, "Err: Could not set the deadline"},
	}
	for _, tt := range tests {
		level, msg := parseMemberlistLine(tt.in)
		if level != tt.level || msg != tt.msg {
			t.Errorf("parse(%q) = %v %q, want %v %q", tt.in, level, msg, tt.level, tt.msg)
		}
	}
}

func mustAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	a, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

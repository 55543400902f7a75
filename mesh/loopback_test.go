package mesh

import (
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"
)

// These tests run memberlist over real UDP and TCP sockets on 127.0.0.1,
// on ports the kernel picks.

// startLoopback starts a node on 127.0.0.1 with a free port.
func startLoopback(t *testing.T, name string, key []byte, logs *logSink, seeds ...string) *Mesh {
	t.Helper()
	tun := fastTuning()
	tun.GossipToTheDeadTime = time.Minute // keep dead and left members listed
	m, err := Start(Config{
		Name:       name,
		BindAddr:   "127.0.0.1",
		BindPort:   -1,
		ClusterKey: key,
		Join:       seeds,
		Meta:       Meta{PublicKey: "pk-" + name, Endpoint: "127.0.0.1:51820", Version: "test"},
		Tuning:     tun,
		Logger:     logs.logger(),
	})
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { m.Shutdown() })
	return m
}

func TestLoopbackCluster(t *testing.T) {
	logs := newLogSink(t)
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	a := startLoopback(t, "a", key, logs)
	seed := a.Addr().String()
	b := startLoopback(t, "b", key, logs, seed)
	c := startLoopback(t, "c", key, logs, seed)
	nodes := []*Mesh{a, b, c}

	eventually(t, 10*time.Second, "3 nodes alive everywhere", func() bool {
		for _, m := range nodes {
			if aliveSet(m) != "a,b,c" {
				return false
			}
		}
		return true
	})
	t.Run("meta visible everywhere", func(t *testing.T) {
		for _, m := range nodes {
			for _, name := range []string{"a", "b", "c"} {
				mem, ok := m.Member(name)
				if !ok || mem.Meta.PublicKey != "pk-"+name || mem.Meta.Version != "test" {
					t.Errorf("%s sees %s as %+v, %v", m.LocalName(), name, mem, ok)
				}
				if mem.Self != (name == m.LocalName()) {
					t.Errorf("%s sees %s with Self=%v", m.LocalName(), name, mem.Self)
				}
				if !mem.Addr.Addr().IsLoopback() || mem.Addr.Port() == 0 {
					t.Errorf("%s sees %s at %v", m.LocalName(), name, mem.Addr)
				}
			}
		}
	})
	t.Run("meta update", func(t *testing.T) {
		if err := c.UpdateMeta(Meta{PublicKey: "pk-c", FirstBlock: "10.200.7.0/24"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "c's new meta on a and b", func() bool {
			for _, m := range nodes {
				if mem, _ := m.Member("c"); mem.Meta.FirstBlock != "10.200.7.0/24" {
					return false
				}
			}
			return true
		})
	})
	t.Run("put and delete propagate", func(t *testing.T) {
		put := b.Store().Put("svc", "web", []byte("10.200.1.2"))
		if put.Owner != "b" || put.Clock == 0 {
			t.Fatalf("put returned %+v", put)
		}
		eventually(t, 5*time.Second, "record on every node", func() bool {
			for _, m := range nodes {
				r, ok := m.Store().Get("svc", "web")
				if !ok || string(r.Value) != "10.200.1.2" || r.Owner != "b" || r.Clock != put.Clock {
					return false
				}
			}
			return true
		})
		tomb, ok := a.Store().Delete("svc", "web")
		if !ok || !tomb.Deleted || tomb.Clock <= put.Clock {
			t.Fatalf("delete returned %+v, %v", tomb, ok)
		}
		eventually(t, 5*time.Second, "tombstone on every node", func() bool {
			for _, m := range nodes {
				if _, ok := m.Store().Get("svc", "web"); ok {
					return false
				}
				r, ok := m.Store().lookup("svc", "web")
				if !ok || !r.Deleted || r.Clock != tomb.Clock {
					return false
				}
			}
			return true
		})
		if got := b.Store().List("svc"); len(got) != 0 {
			t.Errorf("List after delete = %+v", got)
		}
	})
	t.Run("leave is seen as left", func(t *testing.T) {
		events, cancel := a.Subscribe()
		defer cancel()
		if err := c.Leave(2 * time.Second); err != nil {
			t.Errorf("leave: %v", err)
		}
		if err := c.Leave(time.Second); err != nil { // idempotent
			t.Errorf("second leave: %v", err)
		}
		waitMemberEvent(t, events, "c", EventMemberLeft, 3*time.Second)
		for _, m := range []*Mesh{a, b} {
			eventually(t, 3*time.Second, m.LocalName()+" sees c left", func() bool {
				mem, ok := m.Member("c")
				return ok && mem.State == StateLeft
			})
		}
	})
	t.Run("shutdown is seen as dead", func(t *testing.T) {
		events, cancel := a.Subscribe()
		defer cancel()
		if err := b.Shutdown(); err != nil {
			t.Fatal(err)
		}
		waitMemberEvent(t, events, "b", EventMemberDead, 10*time.Second)
		if mem, _ := a.Member("b"); mem.State != StateDead {
			t.Errorf("a sees b as %s, want dead", mem.State)
		}
		if !a.Alone() {
			t.Errorf("a is not Alone with b dead and c left")
		}
	})
}

// waitMemberEvent reads events until one of typ about name.
func waitMemberEvent(t *testing.T, events <-chan Event, name string, typ EventType, timeout time.Duration) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("event channel closed waiting for %s %s", name, typ)
			}
			if ev.Type == typ && ev.Member.Name == name {
				return
			}
			if ev.Member.Name == name && (ev.Type == EventMemberDead || ev.Type == EventMemberLeft) {
				t.Fatalf("got %s for %s, want %s", ev.Type, name, typ)
			}
		case <-timer.C:
			t.Fatalf("no %s event for %s within %v", typ, name, timeout)
		}
	}
}

func TestLoopbackKeyMismatch(t *testing.T) {
	key, _ := GenerateKey()
	other, _ := GenerateKey()
	tests := []struct {
		name            string
		seedKey, newKey []byte
	}{
		{"other key", key, other},
		{"no key", key, nil},
		{"key against keyless cluster", nil, key},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seedLogs, newLogs := newLogSink(t), newLogSink(t)
			seed := startLoopback(t, "seed", tt.seedKey, seedLogs)
			// The joiner tries the seed at start, as `zlmesh up --join`
			// does, and then through Join.
			n := startLoopback(t, "intruder", tt.newKey, newLogs, seed.Addr().String())
			joined, err := n.Join([]string{seed.Addr().String()})
			if joined != 0 || err == nil {
				t.Fatalf("Join = %d, %v; want refused", joined, err)
			}
			if !errors.Is(err, ErrKeyMismatch) || !strings.Contains(err.Error(), "cluster key") {
				t.Errorf("join error %q does not blame the cluster key", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("join error spans lines: %q", err)
			}
			eventually(t, 5*time.Second, "both sides log the key problem", func() bool {
				return len(seedLogs.find(slog.LevelError, keyHintText)) > 0 &&
					len(newLogs.find(slog.LevelWarn, "join refused", keyHintText)) > 0
			})
			if _, ok := seed.Member("intruder"); ok {
				t.Errorf("seed lists the intruder")
			}
			if _, ok := n.Member("seed"); ok {
				t.Errorf("intruder lists the seed")
			}
		})
	}
}

func TestLeaveShutdownStopEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	logs := newLogSink(t)
	key, _ := GenerateKey()
	a := startLoopback(t, "a", key, logs)
	b := startLoopback(t, "b", key, logs, a.Addr().String())
	events, _ := a.Subscribe()
	eventually(t, 5*time.Second, "joined", func() bool { return aliveSet(a) == "a,b" && aliveSet(b) == "a,b" })

	if err := b.Leave(time.Second); err != nil {
		t.Errorf("leave: %v", err)
	}
	if err := b.Shutdown(); err != nil { // after Leave: no-op
		t.Errorf("shutdown after leave: %v", err)
	}
	if err := a.Shutdown(); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if err := a.Shutdown(); err != nil {
		t.Errorf("second shutdown: %v", err)
	}
	if err := a.Leave(time.Second); err != nil { // after Shutdown: no-op
		t.Errorf("leave after shutdown: %v", err)
	}
	if _, err := a.Join([]string{b.Addr().String()}); !errors.Is(err, ErrClosed) {
		t.Errorf("join after shutdown: %v, want ErrClosed", err)
	}
	if err := a.UpdateMeta(Meta{}); !errors.Is(err, ErrClosed) {
		t.Errorf("update meta after shutdown: %v, want ErrClosed", err)
	}
	for range events { // closed by Shutdown
	}
	// memberlist's goroutines notice the shutdown asynchronously.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after stop, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

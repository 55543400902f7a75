package mesh

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/mesh/meshtest"
)

// logLine is one captured log record.
type logLine struct {
	time  time.Time
	level slog.Level
	msg   string
	attrs map[string]string
}

func (l logLine) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s", l.time.Format("15:04:05.000"), l.level, l.msg)
	for k, v := range l.attrs {
		fmt.Fprintf(&b, " %s=%q", k, v)
	}
	return b.String()
}

// logSink collects log records of every logger made from it.
type logSink struct {
	mu    sync.Mutex
	lines []logLine
}

// newLogSink returns a sink whose lines are printed when the test fails
// (or always with MESH_TEST_LOG=1).
func newLogSink(t testing.TB) *logSink {
	s := &logSink{}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("MESH_TEST_LOG") != "" {
			s.mu.Lock()
			defer s.mu.Unlock()
			for _, l := range s.lines {
				if l.level >= slog.LevelInfo || os.Getenv("MESH_TEST_LOG") == "debug" {
					t.Log(l.String())
				}
			}
		}
	})
	return s
}

func (s *logSink) logger() *slog.Logger { return slog.New(&sinkHandler{sink: s}) }

// find returns the lines of at least level whose message and attributes
// contain every one of words.
func (s *logSink) find(level slog.Level, words ...string) []logLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []logLine
	for _, l := range s.lines {
		if l.level < level {
			continue
		}
		text := l.String()
		ok := true
		for _, w := range words {
			if !strings.Contains(text, w) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

type sinkHandler struct {
	sink  *logSink
	attrs []slog.Attr
}

func (h *sinkHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *sinkHandler) Handle(_ context.Context, r slog.Record) error {
	l := logLine{time: r.Time, level: r.Level, msg: r.Message, attrs: make(map[string]string)}
	for _, a := range h.attrs {
		l.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		l.attrs[a.Key] = a.Value.String()
		return true
	})
	h.sink.mu.Lock()
	h.sink.lines = append(h.sink.lines, l)
	h.sink.mu.Unlock()
	return nil
}

func (h *sinkHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &sinkHandler{sink: h.sink, attrs: append(append([]slog.Attr{}, h.attrs...), attrs...)}
}

func (h *sinkHandler) WithGroup(string) slog.Handler { return h }

// fastTuning returns short timers for tests.
func fastTuning() Tuning {
	return Tuning{
		ProbeInterval:       200 * time.Millisecond,
		ProbeTimeout:        100 * time.Millisecond,
		GossipInterval:      20 * time.Millisecond,
		PushPullInterval:    500 * time.Millisecond,
		SuspicionMult:       2,
		GossipToTheDeadTime: time.Second,
		DeadNodeReclaimTime: 200 * time.Millisecond,
		TCPTimeout:          time.Second,
		RejoinMin:           50 * time.Millisecond,
		RejoinMax:           300 * time.Millisecond,
	}
}

// eventually polls cond every 10ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cluster is a set of meshes over one memory network.
type cluster struct {
	t     testing.TB
	net   *meshtest.Network
	logs  *logSink
	key   []byte
	dir   string
	tun   Tuning
	nodes map[string]*Mesh
	mu    sync.Mutex
}

func newCluster(t testing.TB) *cluster {
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, net: meshtest.NewNetwork(), logs: newLogSink(t), key: key, dir: t.TempDir(),
		tun: fastTuning(), nodes: make(map[string]*Mesh)}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		var wg sync.WaitGroup
		for _, m := range c.nodes {
			wg.Go(func() { m.Shutdown() })
		}
		wg.Wait()
	})
	return c
}

// start starts node name with the given transport (nil: a fresh one), the
// cluster key, a known-peers file in the test dir, and seeds.
func (c *cluster) start(name string, tr *meshtest.Transport, seeds ...string) *Mesh {
	c.t.Helper()
	if tr == nil {
		tr = c.net.NewTransport(name)
	}
	m, err := Start(Config{
		Name:           name,
		ClusterKey:     c.key,
		Join:           seeds,
		KnownPeersFile: c.dir + "/" + name + ".peers.json",
		Meta:           Meta{PublicKey: "pk-" + name},
		Tuning:         c.tun,
		Transport:      tr,
		Logger:         c.logs.logger(),
	})
	if err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	c.mu.Lock()
	c.nodes[name] = m
	c.mu.Unlock()
	return m
}

func (c *cluster) node(name string) *Mesh {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[name]
}

// aliveSet returns the names m sees alive, sorted, joined by commas.
func aliveSet(m *Mesh) string {
	var names []string
	for _, mem := range m.Members() {
		if mem.State == StateAlive {
			names = append(names, mem.Name)
		}
	}
	return strings.Join(names, ",")
}

// converged reports whether every node in names sees exactly names alive.
func (c *cluster) converged(names ...string) bool {
	want := strings.Join(sortedCopy(names), ",")
	for _, n := range names {
		if aliveSet(c.node(n)) != want {
			return false
		}
	}
	return true
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

package node

import (
	"errors"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/zlmesh/zlmesh/api"
	"github.com/zlmesh/zlmesh/natd"
)

// TestMetricsMove drives every event method and checks the metric it
// moves, then lints the whole registry (promlint: names, units, HELP).
func TestMetricsMove(t *testing.T) {
	m := newMetrics()
	m.observeAttach(3 * time.Millisecond)
	m.attachFailed(api.Errorf(api.CodeExhausted, "full"))
	m.attachFailed(errors.New("plain"))
	m.detachFailed(api.Errorf(api.CodeNotFound, "gone"))
	m.setBlocksHeld(2)
	m.conflictWon()
	m.conflictLost()
	m.conflictLost()
	m.renumbered(3)
	m.observeDNS(200*time.Microsecond, false)
	m.observeDNS(20*time.Millisecond, true)
	cfg := natd.Config{
		Cluster:    netip.MustParsePrefix("10.200.0.0/16"),
		Local:      []netip.Prefix{netip.MustParsePrefix("10.200.1.0/24")},
		Overlay:    netip.MustParseAddr("10.200.1.1"),
		Masquerade: true,
		Ports: []natd.Port{
			{Proto: "tcp", HostPort: 8080, Target: netip.MustParseAddrPort("10.200.1.5:80")},
			{Proto: "udp", HostPort: 53, Target: netip.MustParseAddrPort("10.200.1.6:53")},
		},
	}
	m.natApplied(&cfg)

	for _, tc := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"attach count", m.attach, 1},
		{"attach exhausted", m.attachErrors.WithLabelValues(api.CodeExhausted), 1},
		{"attach internal", m.attachErrors.WithLabelValues(api.CodeInternal), 1},
		{"detach not found", m.detachErrors.WithLabelValues(api.CodeNotFound), 1},
		{"blocks held", m.blocksHeld, 2},
		{"conflicts won", m.conflicts.WithLabelValues("won"), 1},
		{"conflicts lost", m.conflicts.WithLabelValues("lost"), 2},
		{"renumbered", m.renumberedC, 3},
		{"nat publish", m.natRules.WithLabelValues("publish"), 2},
		{"nat masquerade", m.natRules.WithLabelValues("masquerade"), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got float64
			if h, ok := tc.c.(prometheus.Histogram); ok {
				got = float64(testutil.CollectAndCount(h))
				if n := histogramCount(t, m.reg, "zlmesh_attach_duration_seconds"); n != 1 {
					t.Errorf("histogram count %d", n)
				}
			} else {
				got = testutil.ToFloat64(tc.c)
			}
			if got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	if n := histogramCount(t, m.reg, "zlmesh_dns_answer_duration_seconds"); n != 2 {
		t.Errorf("dns answers observed %d, want 2", n)
	}
	m.natApplied(nil)
	if n := testutil.CollectAndCount(m.natRules); n != 0 {
		t.Errorf("after a purge %d NAT series, want none", n)
	}

	problems, err := testutil.GatherAndLint(m.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func histogramCount(t *testing.T, g prometheus.Gatherer, name string) uint64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, s := range mf.GetMetric() {
				n += s.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}

// TestMetricsDocumented checks that every zlmesh_ metric, registered or
// collected at scrape, has HELP text and a row in the README's metrics
// table, and that the table names no metric that does not exist.
func TestMetricsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(zlmesh_[a-z_]+)`").FindAllStringSubmatch(string(readme), -1) {
		documented[m[1]] = true
	}
	ch := make(chan *prometheus.Desc, 256)
	newMetrics().reg.Describe(ch)
	(*nodeCollector)(nil).Describe(ch)
	close(ch)
	names := map[string]bool{}
	descRe := regexp.MustCompile(`fqName: "([^"]+)", help: "([^"]*)"`)
	for d := range ch {
		m := descRe.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read %s", d)
		}
		name, help := m[1], m[2]
		if !strings.HasPrefix(name, "zlmesh_") {
			continue // Go and process collectors
		}
		names[name] = true
		if strings.TrimSpace(help) == "" {
			t.Errorf("%s has no HELP", name)
		}
		if !documented[name] {
			t.Errorf("%s is not in the README's metrics table", name)
		}
	}
	for name := range documented {
		if !names[name] {
			t.Errorf("README documents %s, which does not exist", name)
		}
	}
}

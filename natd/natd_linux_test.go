//go:build linux

package natd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/zlmesh/zlmesh/internal/nstest"
)

// withPorts returns baseConfig with n ports published on all addresses
// (tcp 10000+i → 10.200.3.34:80+i).
func withPorts(n int) Config {
	cfg := baseConfig()
	for i := range n {
		cfg.Ports = append(cfg.Ports, Port{Proto: "tcp", HostPort: uint16(10000 + i),
			Target: netip.AddrPortFrom(netip.MustParseAddr("10.200.3.34"), uint16(80+i))})
	}
	return cfg
}

func mustSet(t testing.TB, tb Table, cfg Config) {
	t.Helper()
	if err := tb.Set(cfg); err != nil {
		t.Fatalf("Set: %v", err)
	}
}

func TestSetTwiceSendsNothing(t *testing.T) {
	ns := nstest.New(t, "zlt-natd")
	tb := openTable(t, ns, "")
	cfg := withPorts(20)
	cfg.Ports = append(cfg.Ports, Port{Proto: "udp", HostAddr: netip.MustParseAddr("192.0.2.10"), HostPort: 53,
		Target: netip.MustParseAddrPort("10.200.5.7:53")})
	mustSet(t, tb, cfg)
	before, stats := dump(t, ns, "zlmesh"), tb.stats
	if stats.Batches != 1 {
		t.Fatalf("creating the table took %d batches, want 1", stats.Batches)
	}
	mustSet(t, tb, cfg)
	if tb.stats.Batches != stats.Batches {
		t.Errorf("second Set sent a batch: %+v → %+v", stats, tb.stats)
	}
	// Without the cache: the table is read back and still nothing is sent,
	// so what natd reads is exactly what it wrote.
	tb.mu.Lock()
	tb.cache = nil
	tb.mu.Unlock()
	mustSet(t, tb, cfg)
	if tb.stats.Batches != stats.Batches || tb.stats.Reads != stats.Reads+1 {
		t.Errorf("Set after a read back: %+v → %+v, want one read and no batch", stats, tb.stats)
	}
	// Ports in another order are the same config.
	slices.Reverse(cfg.Ports)
	mustSet(t, tb, cfg)
	if after := dump(t, ns, "zlmesh"); after != before || tb.stats.Batches != stats.Batches {
		t.Errorf("Set with the same config changed the table:\n%s\n→\n%s", before, after)
	}
}

func TestPublishIsOneElement(t *testing.T) {
	ns := nstest.New(t, "zlt-natd")
	tb := openTable(t, ns, "")
	base := withPorts(100)
	mustSet(t, tb, base)
	before := dump(t, ns, "zlmesh")
	cases := []Port{
		{Proto: "tcp", HostPort: 8080, Target: netip.MustParseAddrPort("10.200.3.35:80")},
		{Proto: "udp", HostAddr: netip.MustParseAddr("192.0.2.10"), HostPort: 8080, Target: netip.MustParseAddrPort("10.200.7.9:8080")},
	}
	for _, p := range cases {
		t.Run(p.String(), func(t *testing.T) {
			cfg := base
			cfg.Ports = append(slices.Clone(base.Ports), p)
			s0 := tb.stats
			mustSet(t, tb, cfg)
			if d := tb.stats.Messages - s0.Messages; d != 1 || tb.stats.Batches-s0.Batches != 1 {
				t.Errorf("publish sent %d messages in %d batches, want 1 in 1", d, tb.stats.Batches-s0.Batches)
			}
			if l := listing(t, ns, "zlmesh"); !strings.Contains(l, p.Target.Addr().String()+" . "+fmt.Sprint(p.Target.Port())) {
				t.Errorf("published %s not in the table:\n%s", p, l)
			}
			s1 := tb.stats
			mustSet(t, tb, base)
			if d := tb.stats.Messages - s1.Messages; d != 1 {
				t.Errorf("unpublish sent %d messages, want 1", d)
			}
			if after := dump(t, ns, "zlmesh"); after != before {
				t.Errorf("publish+unpublish left the table different:\n%s\n→\n%s", before, after)
			}
		})
	}
	t.Run("retarget", func(t *testing.T) {
		cfg := base
		cfg.Ports = slices.Clone(base.Ports)
		cfg.Ports[7].Target = netip.MustParseAddrPort("10.200.9.9:99")
		s0 := tb.stats
		mustSet(t, tb, cfg)
		if d := tb.stats.Messages - s0.Messages; d != 2 {
			t.Errorf("retarget sent %d messages, want 2 (delete and add the element)", d)
		}
		if l := listing(t, ns, "zlmesh"); !strings.Contains(l, "tcp . 10007 : 10.200.9.9 . 99") {
			t.Errorf("retargeted port not in the table:\n%s", l)
		}
		mustSet(t, tb, base)
		if after := dump(t, ns, "zlmesh"); after != before {
			t.Errorf("retarget and back left the table different")
		}
	})
}

// TestThousandCycles uses TCP ports: unpublishing a UDP port also walks the
// conntrack table (see forgetUDP), ~10 ms each on a big host table.
func TestThousandCycles(t *testing.T) {
	ns := nstest.New(t, "zlt-natd")
	tb := openTable(t, ns, "")
	base := withPorts(50)
	mustSet(t, tb, base)
	before := dump(t, ns, "zlmesh")
	s0 := tb.stats
	for i := range 1000 {
		cfg := base
		cfg.Ports = append(slices.Clone(base.Ports), Port{Proto: "tcp",
			HostPort: uint16(20000 + i), Target: netip.AddrPortFrom(netip.MustParseAddr("10.200.3.40"), uint16(1+i))})
		mustSet(t, tb, cfg)
		mustSet(t, tb, base)
	}
	if after := dump(t, ns, "zlmesh"); after != before {
		t.Errorf("1000 publish/unpublish cycles changed the table:\n%s\n→\n%s", before, after)
	}
	if b, m, r := tb.stats.Batches-s0.Batches, tb.stats.Messages-s0.Messages, tb.stats.Reads-s0.Reads; b != 2000 || m != 2000 || r != 0 {
		t.Errorf("1000 cycles: %d batches, %d messages, %d reads; want 2000, 2000, 0", b, m, r)
	}
}

// nftConn is a plain nftables connection in ns, standing for someone else
// (an operator, another program) changing the ruleset.
func nftConn(t testing.TB, ns *nstest.NS) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Handle)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sortedElems is normalized with every set's elements sorted (hash sets
// list in a per-set random order).
func sortedElems(t testing.TB, d string) string {
	t.Helper()
	if d == "" {
		return ""
	}
	var v struct {
		Nftables []map[string]map[string]any `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(normalized(t, d)), &v); err != nil {
		t.Fatal(err)
	}
	for _, o := range v.Nftables {
		if m, ok := o["map"]; ok {
			if el, ok := m["elem"].([]any); ok {
				slices.SortFunc(el, func(a, b any) int {
					x, _ := json.Marshal(a)
					y, _ := json.Marshal(b)
					return bytes.Compare(x, y)
				})
			}
		}
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func TestAdoptAndReconcile(t *testing.T) {
	cfg := withPorts(10)
	cfg.Ports = append(cfg.Ports, Port{Proto: "udp", HostAddr: netip.MustParseAddr("192.0.2.10"), HostPort: 5353,
		Target: netip.MustParseAddrPort("10.200.3.35:53")})

	// The reference: a fresh table of cfg in another namespace.
	refNS := nstest.New(t, "zlt-natd")
	mustSet(t, openTable(t, refNS, ""), cfg)
	ref := sortedElems(t, dump(t, refNS, "zlmesh"))

	ns := nstest.New(t, "zlt-natd")
	old := openTable(t, ns, "")
	mustSet(t, old, cfg)
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	if d := dump(t, ns, "zlmesh"); sortedElems(t, d) != ref {
		t.Fatalf("Close did not leave the table in place:\n%s", d)
	}

	// While natd is down, someone changes the table: an element goes, a
	// stale one appears, a foreign rule lands in a chain of ours, and the
	// egress rule is replaced by one without zlmesh's comment.
	c := nftConn(t, ns)
	tbl := &nftables.Table{Name: "zlmesh", Family: nftables.TableFamilyINet}
	anySet := nftSet(tbl, setPortsAny)
	k0, _ := hexElem(0)
	if err := c.SetDeleteElements(anySet, []nftables.SetElement{{Key: k0}}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetAddElements(anySet, []nftables.SetElement{{Key: []byte{17, 0, 0, 0, 0x30, 0x39, 0, 0}, Val: []byte{10, 200, 3, 99, 0, 80, 0, 0}}}); err != nil {
		t.Fatal(err)
	}
	post := &nftables.Chain{Name: chainPost, Table: tbl}
	c.AddRule(&nftables.Rule{Table: tbl, Chain: post, Exprs: []expr.Any{&expr.Counter{}}})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	handleOf := func(d, chain string) float64 {
		var v struct {
			Nftables []map[string]map[string]any `json:"nftables"`
		}
		json.Unmarshal([]byte(d), &v)
		for _, o := range v.Nftables {
			if r, ok := o["rule"]; ok && r["chain"] == chain {
				return r["handle"].(float64)
			}
		}
		return -1
	}
	tampered := dump(t, ns, "zlmesh")

	tb := openTable(t, ns, "")
	if d := dump(t, ns, "zlmesh"); d != tampered {
		t.Fatalf("New changed the table before Set")
	}
	if tb.cache == nil || !tb.cache.Exists || tb.cache.ports() != 11 {
		t.Fatalf("New did not adopt the table: %+v", tb.cache)
	}
	mustSet(t, tb, cfg)
	got := dump(t, ns, "zlmesh")
	if sortedElems(t, got) != ref {
		t.Errorf("reconciled table differs from a fresh one:\n got %s\nwant %s", sortedElems(t, got), ref)
	}
	if tb.stats.Batches != 1 {
		t.Errorf("reconcile took %d batches, want 1", tb.stats.Batches)
	}
	// Reconciling is a diff, not a rebuild: the untouched prerouting rule
	// kept its handle.
	if h0, h1 := handleOf(tampered, chainPre), handleOf(got, chainPre); h0 != h1 || h0 < 0 {
		t.Errorf("prerouting rule handle %v → %v: the table was rebuilt", h0, h1)
	}
}

// hexElem is the ports_any key and value of withPorts' port i.
func hexElem(i int) ([]byte, []byte) {
	port := 10000 + i
	return []byte{6, 0, 0, 0, byte(port >> 8), byte(port), 0, 0}, []byte{10, 200, 3, 34, 0, byte(80 + i), 0, 0}
}

func TestRebuildForeignShape(t *testing.T) {
	cfg := withPorts(3)
	refNS := nstest.New(t, "zlt-natd")
	mustSet(t, openTable(t, refNS, ""), cfg)
	ref := sortedElems(t, dump(t, refNS, "zlmesh"))

	tests := []struct {
		name   string
		tamper func(c *nftables.Conn, tbl *nftables.Table)
	}{
		{"extra chain", func(c *nftables.Conn, tbl *nftables.Table) {
			c.AddChain(&nftables.Chain{Name: "intruder", Table: tbl})
		}},
		{"set with another key type", func(c *nftables.Conn, tbl *nftables.Table) {
			c.FlushChain(&nftables.Chain{Name: chainPublish, Table: tbl})
			c.DelSet(&nftables.Set{Table: tbl, Name: setPortsAny})
			c.AddSet(&nftables.Set{Table: tbl, Name: setPortsAny, KeyType: nftables.TypeInetService}, nil)
		}},
		{"base chain with another priority", func(c *nftables.Conn, tbl *nftables.Table) {
			ch := &nftables.Chain{Name: chainPost, Table: tbl}
			c.FlushChain(ch)
			c.DelChain(ch)
			c.AddChain(&nftables.Chain{Name: chainPost, Table: tbl, Type: nftables.ChainTypeNAT,
				Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(50)})
		}},
		{"empty table", func(c *nftables.Conn, tbl *nftables.Table) {
			c.DelTable(tbl)
			c.AddTable(tbl)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := nstest.New(t, "zlt-natd")
			mustSet(t, openTable(t, ns, ""), cfg)
			c := nftConn(t, ns)
			tt.tamper(c, &nftables.Table{Name: "zlmesh", Family: nftables.TableFamilyINet})
			if err := c.Flush(); err != nil {
				t.Fatalf("tamper: %v", err)
			}
			tb := openTable(t, ns, "")
			mustSet(t, tb, cfg)
			if got := sortedElems(t, dump(t, ns, "zlmesh")); got != ref {
				t.Errorf("rebuilt table differs from a fresh one:\n got %s\nwant %s", got, ref)
			}
			if tb.stats.Batches != 1 {
				t.Errorf("rebuild took %d batches, want 1", tb.stats.Batches)
			}
		})
	}
}

func TestDriftWhileRunning(t *testing.T) {
	ns := nstest.New(t, "zlt-natd")
	tb := openTable(t, ns, "")
	cfg := withPorts(5)
	mustSet(t, tb, cfg)
	before := sortedElems(t, dump(t, ns, "zlmesh"))

	c := nftConn(t, ns)
	k, _ := hexElem(2)
	if err := c.SetDeleteElements(nftSet(&nftables.Table{Name: "zlmesh", Family: nftables.TableFamilyINet}, setPortsAny),
		[]nftables.SetElement{{Key: k}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	s0 := tb.stats
	mustSet(t, tb, cfg)
	if tb.stats.Reads != s0.Reads+1 || tb.stats.Messages != s0.Messages+1 {
		t.Errorf("after a foreign change: %+v → %+v, want one read and one message", s0, tb.stats)
	}
	if got := sortedElems(t, dump(t, ns, "zlmesh")); got != before {
		t.Errorf("the deleted element was not restored:\n got %s\nwant %s", got, before)
	}
}

func TestPurgeAndClose(t *testing.T) {
	ns := nstest.New(t, "zlt-natd")
	tb := openTable(t, ns, "zlt-custom")
	if err := tb.Purge(); err != nil {
		t.Fatalf("Purge of a missing table: %v", err)
	}
	mustSet(t, tb, withPorts(3))
	if dump(t, ns, "zlt-custom") == "" {
		t.Fatal("Set did not create the table under its custom name")
	}
	if dump(t, ns, "zlmesh") != "" {
		t.Fatal("a table named zlmesh appeared")
	}
	if err := tb.Purge(); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	if d := dump(t, ns, "zlt-custom"); d != "" {
		t.Fatalf("Purge left the table:\n%s", d)
	}
	if err := tb.Purge(); err != nil {
		t.Fatalf("second Purge: %v", err)
	}
	mustSet(t, tb, withPorts(3))
	kept := dump(t, ns, "zlt-custom")
	if kept == "" {
		t.Fatal("Set after Purge did not recreate the table")
	}
	if err := tb.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := tb.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if d := dump(t, ns, "zlt-custom"); d != kept {
		t.Errorf("Close changed the table")
	}
	if err := tb.Set(withPorts(1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Set after Close: %v, want ErrClosed", err)
	}
	if err := tb.Purge(); !errors.Is(err, ErrClosed) {
		t.Errorf("Purge after Close: %v, want ErrClosed", err)
	}
}

func TestBadConfigChangesNothing(t *testing.T) {
	ns := nstest.New(t, "zlt-natd")
	tb := openTable(t, ns, "")
	base := withPorts(5)
	mustSet(t, tb, base)
	before, s0 := dump(t, ns, "zlmesh"), tb.stats
	dup := base
	dup.Ports = append(slices.Clone(base.Ports), Port{Proto: "tcp", HostPort: 10001, Target: netip.MustParseAddrPort("10.200.3.50:1")})
	outside := base
	outside.Ports = append(slices.Clone(base.Ports), Port{Proto: "tcp", HostPort: 9999, Target: netip.MustParseAddrPort("192.168.0.1:80")})
	noOverlay := base
	noOverlay.Overlay = netip.Addr{}
	for name, c := range map[string]Config{"duplicate host port": dup, "target outside cluster": outside, "no overlay": noOverlay} {
		err := tb.Set(c)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Set = %v, want ErrInvalid", name, err)
		}
		if name == "duplicate host port" && !errors.Is(err, ErrConflict) {
			t.Errorf("%s: Set = %v, want ErrConflict", name, err)
		}
	}
	if after := dump(t, ns, "zlmesh"); after != before || tb.stats != s0 {
		t.Errorf("rejected configs changed the table or sent messages: %+v → %+v", s0, tb.stats)
	}
}

func TestKernelErrorLeavesNothing(t *testing.T) {
	ns := nstest.New(t, "zlt-natd")
	tb := openTable(t, ns, "")
	base := withPorts(5)
	mustSet(t, tb, base)
	before := dump(t, ns, "zlmesh")

	next := withPorts(8)
	next.Masquerade = false
	next.Ports[1].Target = netip.MustParseAddrPort("10.200.8.8:8")
	tb.mu.Lock()
	tb.failNext = true // the batch ends with a message the kernel refuses
	tb.mu.Unlock()
	err := tb.Set(next)
	if err == nil {
		t.Fatal("Set with an injected kernel failure succeeded")
	}
	t.Logf("injected failure: %v", err)
	if after := dump(t, ns, "zlmesh"); after != before {
		t.Errorf("a failed batch left changes behind:\n%s\n→\n%s", before, after)
	}
	mustSet(t, tb, next)
	if l := listing(t, ns, "zlmesh"); strings.Contains(l, "oifname != \"zl0\" masquerade") || !strings.Contains(l, "10.200.8.8 . 8") {
		t.Errorf("Set after the failure did not converge:\n%s", l)
	}

	t.Run("failed create", func(t *testing.T) {
		ns := nstest.New(t, "zlt-natd")
		tb := openTable(t, ns, "")
		tb.failNext = true
		if err := tb.Set(base); err == nil {
			t.Fatal("Set with an injected kernel failure succeeded")
		}
		if d := dump(t, ns, "zlmesh"); d != "" {
			t.Errorf("a failed create left a table:\n%s", d)
		}
	})
}

func TestOtherTablesUntouched(t *testing.T) {
	ns := nstest.New(t, "zlt-natd")
	c := nftConn(t, ns)
	other := c.AddTable(&nftables.Table{Name: "zlt-other", Family: nftables.TableFamilyIPv4})
	drop := nftables.ChainPolicyDrop
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: other, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	c.AddRule(&nftables.Rule{Table: other, Chain: fwd, Exprs: []expr.Any{&expr.Counter{}}})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	listOther := func() string {
		t.Helper()
		out, err := runIn(ns, "nft", "-j", "list", "table", "ip", "zlt-other")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	before := listOther()

	var logs bytes.Buffer
	var mu sync.Mutex
	tb, err := New(Options{NetNS: int(ns.Handle), Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	mu.Lock()
	if l := logs.String(); !strings.Contains(l, "drops forwarded packets") || !strings.Contains(l, "other_table=zlt-other") {
		t.Errorf("no warning about the foreign forward drop policy:\n%s", l)
	}
	mu.Unlock()
	mustSet(t, tb, withPorts(3))
	mustSet(t, tb, withPorts(1))
	if err := tb.Purge(); err != nil {
		t.Fatal(err)
	}
	if after := listOther(); after != before {
		t.Errorf("natd changed another table:\n%s\n→\n%s", before, after)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func TestConcurrentSets(t *testing.T) {
	ns := nstest.New(t, "zlt-natd")
	tb := openTable(t, ns, "")
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				if err := tb.Set(withPorts(g*25 + i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	mustSet(t, tb, withPorts(7))
	tb.mu.Lock()
	tb.cache = nil
	tb.mu.Unlock()
	s0 := tb.stats
	mustSet(t, tb, withPorts(7))
	if tb.stats.Batches != s0.Batches {
		t.Errorf("table not converged after concurrent Sets")
	}
}

// TestOthersCommitMeanwhile keeps another program committing to its own
// table while natd publishes and unpublishes: natd must notice that the
// generation moved (and re-read rather than trust its cache), and end with
// exactly its table.
func TestOthersCommitMeanwhile(t *testing.T) {
	ns := nstest.New(t, "zlt-natd")
	tb := openTable(t, ns, "")
	refNS := nstest.New(t, "zlt-natd")
	mustSet(t, openTable(t, refNS, ""), withPorts(10))
	ref := sortedElems(t, dump(t, refNS, "zlmesh"))

	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Handle)), nftables.AsLasting())
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseLasting()
	other := &nftables.Table{Name: "zlt-busy", Family: nftables.TableFamilyIPv4}
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				done <- n
				return
			default:
			}
			// A real change every time (a no-op batch does not move the
			// generation): the chain comes and goes.
			c.AddTable(other)
			if ch := (&nftables.Chain{Name: "c", Table: other}); n%2 == 0 {
				c.AddChain(ch)
			} else {
				c.DelChain(ch)
			}
			if err := c.Flush(); err != nil {
				t.Error(err)
			}
			n++
		}
	}()
	for i := range 200 {
		mustSet(t, tb, withPorts(i%20))
	}
	mustSet(t, tb, withPorts(10))
	close(stop)
	n := <-done
	if got := sortedElems(t, dump(t, ns, "zlmesh")); got != ref {
		t.Errorf("after %d foreign commits the table differs from a fresh one:\n got %s\nwant %s", n, got, ref)
	}
	if tb.stats.Reads < 2 {
		t.Errorf("natd never re-read its table while %d foreign commits happened", n)
	}
	t.Logf("%d foreign commits; natd: %+v", n, tb.stats)
}

// TestMaxPortsInOneBatch: the largest config is one batch, all of it
// reaches the kernel (a nested attribute over 64 KiB would be cut short
// without an error) and reads back whole.
func TestMaxPortsInOneBatch(t *testing.T) {
	ns := nstest.New(t, "zlt-natd")
	tb := openTable(t, ns, "")
	cfg := withPorts(MaxPorts)
	for i := range cfg.Ports[:MaxPorts/2] { // both maps get thousands
		cfg.Ports[i].HostAddr = netip.MustParseAddr("192.0.2.10")
	}
	mustSet(t, tb, cfg)
	if n := strings.Count(listing(t, ns, "zlmesh"), " : 10.200.3.34 . "); n != MaxPorts {
		t.Errorf("the kernel holds %d ports, want %d", n, MaxPorts)
	}
	if tb.stats.Batches != 1 {
		t.Errorf("%d ports took %d batches", MaxPorts, tb.stats.Batches)
	}
	tb.mu.Lock()
	tb.cache = nil
	tb.mu.Unlock()
	mustSet(t, tb, cfg)
	if tb.stats.Batches != 1 || tb.cache.ports() != MaxPorts {
		t.Errorf("read back %d ports, %d batches", tb.cache.ports(), tb.stats.Batches)
	}
	if err := tb.Set(withPorts(MaxPorts + 1)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Set with MaxPorts+1: %v", err)
	}
}

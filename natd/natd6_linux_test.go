//go:build linux

package natd

import (
	"bytes"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/nftables"
	"github.com/zlmesh/zlmesh/internal/nstest"
)

// withPorts6 returns baseConfig6 with n ports published on all addresses
// of both families (tcp 10000+i → 10.200.3.34:80+i and
// [fd00:200:0:3::22]:80+i).
func withPorts6(n int) Config {
	cfg := baseConfig6()
	for i := range n {
		cfg.Ports = append(cfg.Ports, Port{Proto: "tcp", HostPort: uint16(10000 + i),
			Target:  netip.AddrPortFrom(c1Addr, uint16(80+i)),
			Target6: netip.AddrPortFrom(c1Addr6, uint16(80+i))})
	}
	return cfg
}

func TestSetTwiceSendsNothing6(t *testing.T) {
	ns := nstest.New(t, "zlt-natd")
	tb := openTable(t, ns, "")
	cfg := withPorts6(20)
	cfg.Ports = append(cfg.Ports,
		Port{Proto: "udp", HostAddr: netip.MustParseAddr("2001:db8::10"), HostPort: 53, Target6: netip.MustParseAddrPort("[fd00:200:0:5::7]:53")},
		Port{Proto: "udp", HostPort: 54, Target6: netip.MustParseAddrPort("[fd00:200:0:5::7]:53")})
	mustSet(t, tb, cfg)
	before, stats := dump(t, ns, "zlmesh"), tb.stats
	if stats.Batches != 1 {
		t.Fatalf("creating the table took %d batches, want 1", stats.Batches)
	}
	if n := tb.cache.ports(); n != 42 {
		t.Fatalf("%d elements, want 42 (20 ports in two families, two IPv6 ones)", n)
	}
	mustSet(t, tb, cfg)
	if tb.stats != stats {
		t.Errorf("second Set sent something: %+v → %+v", stats, tb.stats)
	}
	// Read back: what natd reads of the IPv6 maps is exactly what it wrote.
	tb.mu.Lock()
	tb.cache = nil
	tb.mu.Unlock()
	mustSet(t, tb, cfg)
	if tb.stats.Batches != stats.Batches || tb.stats.Reads != stats.Reads+1 {
		t.Errorf("Set after a read back: %+v → %+v, want one read and no batch", stats, tb.stats)
	}
	slices.Reverse(cfg.Ports)
	mustSet(t, tb, cfg)
	if after := dump(t, ns, "zlmesh"); after != before || tb.stats.Batches != stats.Batches {
		t.Errorf("Set with the same config changed the table:\n%s\n→\n%s", before, after)
	}

	// Someone deletes an IPv6 element: one read, one message restores it.
	c := nftConn(t, ns)
	set := nftSet(&nftables.Table{Name: "zlmesh", Family: nftables.TableFamilyINet}, setPorts6Any)
	if err := c.SetDeleteElements(set, []nftables.SetElement{{Key: []byte{6, 0, 0, 0, 0x27, 0x12, 0, 0}}}); err != nil { // tcp 10002
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
	if got, want := sortedElems(t, dump(t, ns, "zlmesh")), sortedElems(t, before); got != want {
		t.Errorf("the deleted element was not restored:\n got %s\nwant %s", got, want)
	}
}

func TestPublishIsOneElement6(t *testing.T) {
	ns := nstest.New(t, "zlt-natd")
	tb := openTable(t, ns, "")
	base := withPorts6(100)
	mustSet(t, tb, base)
	before := dump(t, ns, "zlmesh")
	cases := []struct {
		port     Port
		messages int // one per map it lands in
		shows    []string
	}{
		{Port{Proto: "tcp", HostPort: 8080, Target6: netip.MustParseAddrPort("[fd00:200:0:3::23]:80")}, 1,
			[]string{"tcp . 8080 : fd00:200:0:3::23 . 80"}},
		{Port{Proto: "udp", HostAddr: netip.MustParseAddr("2001:db8::10"), HostPort: 8080, Target6: netip.MustParseAddrPort("[fd00:200:0:7::9]:8080")}, 1,
			[]string{"2001:db8::10 . udp . 8080 : fd00:200:0:7::9 . 8080"}},
		{Port{Proto: "tcp", HostPort: 8081, Target: netip.MustParseAddrPort("10.200.3.35:80"), Target6: netip.MustParseAddrPort("[fd00:200:0:3::23]:80")}, 2,
			[]string{"tcp . 8081 : 10.200.3.35 . 80", "tcp . 8081 : fd00:200:0:3::23 . 80"}},
	}
	for _, tt := range cases {
		t.Run(tt.port.String(), func(t *testing.T) {
			cfg := base
			cfg.Ports = append(slices.Clone(base.Ports), tt.port)
			s0 := tb.stats
			mustSet(t, tb, cfg)
			if d := tb.stats.Messages - s0.Messages; d != tt.messages || tb.stats.Batches-s0.Batches != 1 {
				t.Errorf("publish sent %d messages in %d batches, want %d in 1", d, tb.stats.Batches-s0.Batches, tt.messages)
			}
			l := listing(t, ns, "zlmesh")
			for _, s := range tt.shows {
				if !strings.Contains(l, s) {
					t.Errorf("%q not in the table:\n%s", s, l)
				}
			}
			s1 := tb.stats
			mustSet(t, tb, base)
			if d := tb.stats.Messages - s1.Messages; d != tt.messages {
				t.Errorf("unpublish sent %d messages, want %d", d, tt.messages)
			}
			if after := dump(t, ns, "zlmesh"); after != before {
				t.Errorf("publish+unpublish left the table different:\n%s\n→\n%s", before, after)
			}
		})
	}
	t.Run("retarget6", func(t *testing.T) {
		cfg := base
		cfg.Ports = slices.Clone(base.Ports)
		cfg.Ports[7].Target6 = netip.MustParseAddrPort("[fd00:200:0:9::9]:99")
		s0 := tb.stats
		mustSet(t, tb, cfg)
		if d := tb.stats.Messages - s0.Messages; d != 2 {
			t.Errorf("retarget sent %d messages, want 2 (delete and add the element)", d)
		}
		if l := listing(t, ns, "zlmesh"); !strings.Contains(l, "tcp . 10007 : fd00:200:0:9::9 . 99") || !strings.Contains(l, "tcp . 10007 : 10.200.3.34 . 87") {
			t.Errorf("retargeted port not in the table, or its IPv4 side changed:\n%s", l)
		}
		mustSet(t, tb, base)
		if after := dump(t, ns, "zlmesh"); after != before {
			t.Errorf("retarget and back left the table different")
		}
	})
	t.Run("ipv6 on and off", func(t *testing.T) {
		v4 := withPorts(100)
		s0 := tb.stats
		mustSet(t, tb, v4)
		if l := listing(t, ns, "zlmesh"); strings.Contains(l, "fd00:") {
			t.Errorf("IPv6 left in the table with IPv6 off:\n%s", l)
		}
		if tb.stats.Batches-s0.Batches != 1 {
			t.Errorf("switching IPv6 off took %d batches", tb.stats.Batches-s0.Batches)
		}
		mustSet(t, tb, base)
		if after := dump(t, ns, "zlmesh"); sortedElems(t, after) != sortedElems(t, before) {
			t.Errorf("IPv6 off and on left the table different")
		}
	})
}

// TestMaxPortsInOneBatch6: the largest config with both families is one
// batch, reaches the kernel whole (IPv6 elements are larger: the chunking
// per message must keep every nested attribute under 64 KiB) and reads back
// whole.
func TestMaxPortsInOneBatch6(t *testing.T) {
	ns := nstest.New(t, "zlt-natd")
	tb := openTable(t, ns, "")
	cfg := withPorts6(MaxPorts)
	for i := range cfg.Ports[:MaxPorts/2] { // on one IPv6 address: ports6_addr gets thousands
		cfg.Ports[i].HostAddr = netip.MustParseAddr("2001:db8::10")
	}
	mustSet(t, tb, cfg)
	l := listing(t, ns, "zlmesh")
	if n6, n4 := strings.Count(l, " : fd00:200:0:3::22 . "), strings.Count(l, " : 10.200.3.34 . "); n6 != MaxPorts || n4 != MaxPorts/2 {
		t.Errorf("the kernel holds %d IPv6 and %d IPv4 ports, want %d and %d", n6, n4, MaxPorts, MaxPorts/2)
	}
	if tb.stats.Batches != 1 {
		t.Errorf("%d ports took %d batches", MaxPorts, tb.stats.Batches)
	}
	tb.mu.Lock()
	tb.cache = nil
	tb.mu.Unlock()
	mustSet(t, tb, cfg)
	if want := MaxPorts + MaxPorts/2; tb.stats.Batches != 1 || tb.cache.ports() != want {
		t.Errorf("read back %d elements in %d batches, want %d in 1", tb.cache.ports(), tb.stats.Batches, want)
	}
	for name, p := range portSets {
		if per, size := p.perMessage(), 20+int(p.key.Bytes)+int(p.data.Bytes); per*size > 65535-4 {
			t.Errorf("%s: %d elements of %d bytes overflow a netlink attribute", name, per, size)
		}
	}
}

// TestWarnForwardDrop6: an ip6 table whose forward chain drops by default
// is named in New's warning, as ip and inet ones are.
func TestWarnForwardDrop6(t *testing.T) {
	ns := nstest.New(t, "zlt-natd")
	c := nftConn(t, ns)
	other := c.AddTable(&nftables.Table{Name: "zlt-other6", Family: nftables.TableFamilyIPv6})
	drop := nftables.ChainPolicyDrop
	c.AddChain(&nftables.Chain{Name: "forward", Table: other, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var mu sync.Mutex
	tb, err := New(Options{NetNS: int(ns.Handle), Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	mu.Lock()
	defer mu.Unlock()
	if l := logs.String(); !strings.Contains(l, "other_table=zlt-other6 family=ip6") {
		t.Errorf("no warning about the ip6 forward drop policy:\n%s", l)
	}
}

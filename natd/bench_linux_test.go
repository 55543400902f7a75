//go:build linux

package natd

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/zlmesh/zlmesh/internal/nstest"
)

// BenchmarkApply1000 creates the table with 1000 published ports from
// nothing (one Set on an empty namespace), then purges it (not timed).
func BenchmarkApply1000(b *testing.B) {
	ns := nstest.New(b, "zlt-natd-b")
	tb := openTable(b, ns, "")
	cfg := withPorts(1000)
	for b.Loop() {
		mustSet(b, tb, cfg)
		b.StopTimer()
		if err := tb.Purge(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkPublish measures one publish (a Set that adds one port) on a
// table holding 0 ports and on one holding 1000, interleaved in the same
// run, and reports both and their ratio (ideally ~1: the kernel work is one
// element either way; what grows is natd's in-memory diff of the full
// config). Each publish is followed by an unpublish, timed apart. The ports
// are TCP: unpublishing a UDP port also walks the conntrack table
// (forgetUDP), a cost that depends on the host, not on natd's table.
func BenchmarkPublish(b *testing.B) {
	type side struct {
		tb        *nftTable
		base      Config
		with      []Config // base plus one port, one config per step
		publish   time.Duration
		unpublish time.Duration
	}
	const steps = 64
	mk := func(n int) *side {
		ns := nstest.New(b, "zlt-natd-b")
		s := &side{tb: openTable(b, ns, ""), base: withPorts(n)}
		mustSet(b, s.tb, s.base)
		for i := range steps {
			c := s.base
			c.Ports = append(slices.Clone(s.base.Ports), Port{Proto: "tcp", HostPort: uint16(30000 + i),
				Target: netip.AddrPortFrom(netip.MustParseAddr("10.200.3.40"), uint16(1+i))})
			s.with = append(s.with, c)
		}
		return s
	}
	empty, full := mk(0), mk(1000)
	n := 0
	for b.Loop() {
		for _, s := range []*side{empty, full} {
			t0 := time.Now()
			mustSet(b, s.tb, s.with[n%steps])
			t1 := time.Now()
			mustSet(b, s.tb, s.base)
			s.publish += t1.Sub(t0)
			s.unpublish += time.Since(t1)
		}
		n++
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(n) }
	b.ReportMetric(per(empty.publish), "ns/publish@0")
	b.ReportMetric(per(full.publish), "ns/publish@1000")
	b.ReportMetric(per(full.publish)/per(empty.publish), "ratio-publish")
	b.ReportMetric(per(full.unpublish)/per(empty.unpublish), "ratio-unpublish")
}

// BenchmarkPublishCPU is the in-memory part of one publish (validate, plan,
// render, diff against the cached table), without netlink, for 0 and 1000
// ports already published: the part of a Set that grows with the config.
// dualstack=1000 is 1000 ports published in both families (2000 elements)
// and one more port in both.
func BenchmarkPublishCPU(b *testing.B) {
	for _, tt := range []struct {
		name string
		base Config
	}{{"ports=0", withPorts(0)}, {"ports=1000", withPorts(1000)}, {"dualstack=1000", withPorts6(1000)}} {
		b.Run(tt.name, func(b *testing.B) {
			base := tt.base
			n6 := 0
			p := Port{Proto: "udp", HostPort: 30000, Target: netip.MustParseAddrPort("10.200.3.40:1")}
			if base.Cluster6.IsValid() {
				n6 = len(base.Ports) + 1
				p.Target6 = netip.MustParseAddrPort("[fd00:200:0:3::40]:1")
			}
			have := render(rulesOf(base), len(base.Ports), n6)
			cfg := base
			cfg.Ports = append(slices.Clone(base.Ports), p)
			t := &nftTable{table: &nftables.Table{Name: "zlmesh", Family: family}}
			msgs := 1
			if n6 > 0 {
				msgs = 2
			}
			for b.Loop() {
				if err := cfg.Validate(); err != nil {
					b.Fatal(err)
				}
				if ops, _, _ := t.diff(have, render(rulesOf(cfg), len(cfg.Ports), n6)); len(ops) != msgs {
					b.Fatalf("%d ops, want %d", len(ops), msgs)
				}
			}
		})
	}
}

package dnsd

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
	"github.com/zlmesh/zlmesh/tun"
)

// benchServer has 100 services of 3 endpoints and an upstream for the
// cache case.
func benchServer(b *testing.B) *Server {
	up := startUpstream(b)
	s := newTestServer(b, Config{Upstreams: []string{up.addr}})
	var snap Snapshot
	for i := range 100 {
		for j := range 3 {
			snap.Endpoints = append(snap.Endpoints, Endpoint{
				Service: fmt.Sprintf("svc%d", i), Container: fmt.Sprintf("c%d", j),
				Addr: netip.AddrFrom4([4]byte{10, 200, byte(i), byte(10 + j)}),
			})
		}
	}
	if err := s.SetSnapshot(snap); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkQuery measures the core on the three common outcomes, both
// through Query (which returns a new slice) and through the buffer-reusing
// path the socket and packet-path servers use.
func BenchmarkQuery(b *testing.B) {
	s := benchServer(b)
	cases := []struct {
		name  string
		qname string
		rcode int
	}{
		{"zone-hit", "svc42.zl.", dns.RcodeSuccess},
		{"zone-nxdomain", "nope.zl.", dns.RcodeNameError},
		{"forwarded-cached", "ext.example.", dns.RcodeSuccess},
	}
	for _, tc := range cases {
		wire, _ := query(tc.qname, dns.TypeA, 1232, false).Pack()
		// Warm the cache, and check the answer once.
		out, err := s.Query(context.Background(), wire, false)
		if err != nil {
			b.Fatal(err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(out); err != nil || m.Rcode != tc.rcode {
			b.Fatalf("%s: %v %v", tc.name, m, err)
		}
		b.Run(tc.name+"/Query", func(b *testing.B) {
			b.ReportAllocs()
			ctx := context.Background()
			for b.Loop() {
				if _, err := s.Query(ctx, wire, false); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/reuse", func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 2048)
			for b.Loop() {
				out, fwd, err := s.answer(buf[:0], wire, false)
				if err != nil || fwd || len(out) == 0 {
					b.Fatal("not answered inline")
				}
			}
		})
	}
}

// nopPath is a packet path that discards injected packets.
type nopPath struct{ hook tun.HookFunc }

func (n *nopPath) AddHook(dir tun.Direction, order int, name string, fn tun.HookFunc) func() {
	n.hook = fn
	return func() {}
}
func (n *nopPath) InjectInbound(pkt []byte) error { return nil }

// BenchmarkHook measures the hook on a packet to another address (the cost
// every outbound packet pays) and on a DNS query it answers inline.
func BenchmarkHook(b *testing.B) {
	s := benchServer(b)
	path := &nopPath{}
	remove, err := s.hook(path, DefaultAddr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(remove)
	wire, _ := query("svc42.zl.", dns.TypeA, 0, false).Pack()
	// tun.UDPReply of a packet from X to Y builds one from Y to X.
	packet := func(dst netip.Addr) tun.Packet {
		from := tun.Packet{Version: 4, Proto: tun.ProtoUDP, Src: dst, Dst: netip.MustParseAddr("10.200.1.1"), SrcPort: 53, DstPort: 40000}
		var p tun.Packet
		p.Decode(tun.UDPReply(&from, wire))
		return p
	}
	for _, tc := range []struct {
		name string
		dst  netip.Addr
		want tun.Verdict
	}{
		{"other-address", netip.MustParseAddr("10.200.7.7"), tun.Accept},
		{"dns-query", DefaultAddr, tun.Consumed},
	} {
		p := packet(tc.dst)
		if v := path.hook(&p); v != tc.want {
			b.Fatalf("%s: verdict %v, want %v", tc.name, v, tc.want)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				path.hook(&p)
			}
		})
	}
}

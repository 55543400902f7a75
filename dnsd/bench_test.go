package dnsd

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
	"github.com/zlmesh/zlmesh/tun"
)

// benchServer has 100 services of 3 dual-stack endpoints and an upstream
// for the cache case.
func benchServer(b *testing.B) *Server {
	up := startUpstream(b)
	s := newTestServer(b, Config{Upstreams: []string{up.addr}})
	var snap Snapshot
	for i := range 100 {
		for j := range 3 {
			snap.Endpoints = append(snap.Endpoints, Endpoint{
				Service: fmt.Sprintf("svc%d", i), Container: fmt.Sprintf("c%d", j),
				Addr:  netip.AddrFrom4([4]byte{10, 200, byte(i), byte(10 + j)}),
				Addr6: netip.AddrFrom16([16]byte{0xfd, 0x5a, 0, 1, 0, 0, 0, byte(i), 15: byte(10 + j)}),
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
		qtype uint16
		rcode int
	}{
		{"zone-hit", "svc42.zl.", dns.TypeA, dns.RcodeSuccess},
		{"zone-hit-aaaa", "svc42.zl.", dns.TypeAAAA, dns.RcodeSuccess},
		{"zone-nxdomain", "nope.zl.", dns.TypeA, dns.RcodeNameError},
		{"forwarded-cached", "ext.example.", dns.TypeA, dns.RcodeSuccess},
	}
	for _, tc := range cases {
		wire, _ := query(tc.qname, tc.qtype, 1232, false).Pack()
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
// every outbound packet pays) and on a DNS query it answers inline, at the
// IPv4 DNS address (A) and at the IPv6 one (AAAA).
func BenchmarkHook(b *testing.B) {
	s := benchServer(b)
	for _, fam := range []struct {
		name       string
		dns, other netip.Addr
		client     netip.Addr
		qtype      uint16
	}{
		{"ipv4", DefaultAddr, netip.MustParseAddr("10.200.7.7"), netip.MustParseAddr("10.200.1.1"), dns.TypeA},
		{"ipv6", testDNS6, netip.MustParseAddr("fd5a:1:0:7::7"), netip.MustParseAddr("fd5a:1:0:1::1"), dns.TypeAAAA},
	} {
		path := &nopPath{}
		remove, err := s.hook(path, fam.dns)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(remove)
		wire, _ := query("svc42.zl.", fam.qtype, 0, false).Pack()
		// tun.UDPReply of a packet from X to Y builds one from Y to X.
		packet := func(dst netip.Addr) tun.Packet {
			version := 4
			if dst.Is6() {
				version = 6
			}
			from := tun.Packet{Version: version, Proto: tun.ProtoUDP, Src: dst, Dst: fam.client, SrcPort: 53, DstPort: 40000}
			var p tun.Packet
			p.Decode(tun.UDPReply(&from, wire))
			return p
		}
		for _, tc := range []struct {
			name string
			dst  netip.Addr
			want tun.Verdict
		}{
			{"other-address", fam.other, tun.Accept},
			{"dns-query", fam.dns, tun.Consumed},
		} {
			p := packet(tc.dst)
			if v := path.hook(&p); v != tc.want {
				b.Fatalf("%s %s: verdict %v, want %v", fam.name, tc.name, v, tc.want)
			}
			b.Run(fam.name+"/"+tc.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					path.hook(&p)
				}
			})
		}
	}
}
